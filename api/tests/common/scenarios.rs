//! Router scenarios, backend-agnostic: run against the in-memory twin (`router_memory.rs`) and
//! against the real store on the testenv (`router_store.rs`).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use super::*;

pub async fn ops_endpoints(h: &Harness) {
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.headers["cache-control"], "no-store");
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = h.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["paths"]["/v1/secrets/{name}/verify"].is_object());
    let r = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.body.as_str().unwrap().to_owned();
    assert!(text.contains("hyperion_vault_api_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert!(text.contains("hyperion_vault_api_dek_cache_hits_total"), "{text}");
}

pub async fn create_read_verify_batch(h: &Harness) {
    let name = format!("{}/api-key", unique("payments"));
    let created = h.manual(&name, "s3cr3t-value").await;
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["kind"], "manual");
    assert_eq!(created.body["value"], "s3cr3t-value");
    let ts = created.body["created_at"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");

    // raw and percent-encoded names
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["value"], "s3cr3t-value");
    assert_eq!(r.headers["cache-control"], "no-store");
    let encoded = name.replace('/', "%2F");
    let r = h.call(Method::GET, &format!("/v1/secrets/{encoded}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["name"], name.as_str());

    let verify = |v: &'static str, n: String| async move {
        h.call(Method::POST, &format!("/v1/secrets/{n}/verify"), None, Some(json!({"value": v}))).await
    };
    let r = verify("s3cr3t-value", name.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"valid": true, "version": 1}));
    let r = verify("s3cr3t-valuE", encoded.clone()).await;
    assert_eq!(r.body, json!({"valid": false, "version": null}));
    let r = verify("whatever", format!("{}/missing", unique("nope"))).await;
    assert_eq!(r.status, StatusCode::OK, "unknown names answer like a mismatch");
    assert_eq!(r.body, json!({"valid": false, "version": null}));

    let missing = unique("missing");
    let other = unique("other");
    h.manual(&other, "v2").await;
    let r =
        h.call(Method::POST, "/v1/batch/secrets", None, Some(json!({"names": [other, missing, name]}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let arr = r.body.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["name"], other.as_str());
    assert_eq!(arr[1]["value"], "s3cr3t-value");

    let r = h.call(Method::GET, &format!("/v1/secrets/{}", unique("absent")), None, None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = h.call(Method::GET, "/v1/secrets/a//b", None, None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let r = h.call(Method::GET, "/v1/secrets/a/%2e%2e/b", None, None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
}

pub async fn rotate_grace_and_versions(h: &Harness) {
    let name = unique("svc/auto");
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": name, "kind": "automatic", "rotation_interval_secs": 86400, "grace_period_secs": 3600,
                "generator": {"length": 24, "charset": "hex"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let v1 = r.body["value"].as_str().unwrap().to_owned();
    assert_eq!(v1.len(), 24);
    assert!(r.body["next_rotation_at"].is_string());

    let r = h.admin(Method::POST, &format!("/v1/secrets/{name}/rotate"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let v2 = r.body["value"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);

    let r = h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    assert_eq!(r.body["version"], 2);
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}?version=1"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["value"], v1.as_str());
    assert!(r.body["expires_at"].is_string());
    let r =
        h.call(Method::POST, &format!("/v1/secrets/{name}/verify"), None, Some(json!({"value": v1}))).await;
    assert_eq!(r.body, json!({"valid": true, "version": 1}));
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}?version=9"), None, None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}?version=x"), None, None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);

    let r = h.admin(Method::GET, &format!("/v1/secrets/{name}/versions"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let versions = r.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let states: Vec<_> = versions.iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert!(states.contains(&"current") && states.contains(&"grace"), "{states:?}");

    // manual secrets are not rotated
    let manual = unique("manual");
    h.manual(&manual, "x").await;
    let r = h.admin(Method::POST, &format!("/v1/secrets/{manual}/rotate"), None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
}

pub async fn update_delete_and_conflicts(h: &Harness) {
    let name = unique("team/db");
    h.manual(&name, "one").await;
    let r = h
        .admin(Method::POST, "/v1/secrets", Some(json!({"name": name, "kind": "manual", "value": "x"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT);
    let r = h
        .admin(
            Method::PUT,
            &format!("/v1/secrets/{name}"),
            Some(json!({"value": "two", "description": "db pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["owner"], "api");
    assert_eq!(r.body["description"], "db pw");
    for field in ["name", "kind", "owner", "version", "grace_period_secs", "created_at", "updated_at"] {
        assert!(!r.body[field].is_null(), "{field} in {:?}", r.body);
    }
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    assert_eq!(r.body["value"], "two");
    let r = h.admin(Method::PUT, &format!("/v1/secrets/{name}"), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "an empty update changes nothing: {:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let r = h.admin(Method::DELETE, &format!("/v1/secrets/{name}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    let r = h.admin(Method::DELETE, &format!("/v1/secrets/{name}"), None).await;
    assert_error(&r, StatusCode::NOT_FOUND);
    // the name is free again and starts at version 1
    let r = h.manual(&name, "three").await;
    assert_eq!(r.body["version"], 1);
}

pub async fn list_paginates(h: &Harness) {
    let prefix = unique("list");
    for i in 0..3 {
        h.manual(&format!("{prefix}/s{i}"), "v").await;
    }
    let token = h
        .token_with(
            &unique("lister"),
            json!([{"action": "read-metadata", "path": format!("{prefix}/*")}]),
            None,
        )
        .await;
    let mut seen = Vec::new();
    let mut uri = format!("/v1/secrets?limit=2&prefix={prefix}/");
    for _ in 0..1000 {
        let r = h.call(Method::GET, &uri, Some(&token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for item in r.body["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/secrets?limit=2&prefix={prefix}/&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![format!("{prefix}/s0"), format!("{prefix}/s1"), format!("{prefix}/s2")]);
    let r = h.call(Method::GET, "/v1/secrets?limit=0", Some(&token), None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let r = h.call(Method::GET, "/v1/secrets?cursor=!!", Some(&token), None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
}

pub async fn framework_rejections_are_json(h: &Harness) {
    let big = "x".repeat(1024 * 1024 + 10);
    let req = Request::post("/v1/secrets/x/verify")
        .header("content-type", "application/json")
        .body(Body::from(format!("{{\"value\":\"{big}\"}}")))
        .unwrap();
    assert_error(&h.raw(ALLOWED_PEER, req).await, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::post("/v1/secrets/x/verify")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    assert_error(&h.raw(ALLOWED_PEER, req).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::post("/v1/secrets/x/verify")
        .header("content-type", "application/json")
        .body(Body::from("{\"value\":"))
        .unwrap();
    assert_error(&h.raw(ALLOWED_PEER, req).await, StatusCode::BAD_REQUEST);
    let req = Request::post("/v1/secrets/x/verify")
        .header("content-type", "application/json")
        .body(Body::from("{\"value\": 5}"))
        .unwrap();
    let r = h.raw(ALLOWED_PEER, req).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    assert!(r.body["error"].as_str().unwrap().contains("value"), "{:?}", r.body);
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "a", "kind": "manual", "value": "v", "bogus": 1})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let r = h
        .admin(Method::POST, "/v1/secrets", Some(json!({"name": "a/verify", "kind": "manual", "value": "v"})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    assert!(r.body["error"].as_str().unwrap().starts_with("name:"), "{:?}", r.body);
    let big_value = "v".repeat(64 * 1024 + 1);
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": unique("big"), "kind": "manual", "value": big_value})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);

    let r = h.admin(Method::PUT, "/v1/roles/x", Some(json!([null, null]))).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let req = Request::post("/v1/secrets/x/verify")
        .header("content-type", "application/merge-patch+json")
        .body(Body::from("{\"value\": \"v\"}"))
        .unwrap();
    assert_eq!(h.raw(ALLOWED_PEER, req).await.status, StatusCode::OK);
    let r = h.call(Method::OPTIONS, "/v1/secrets/a/b/rotate", None, None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    assert_error(&h.call(Method::GET, "/nope", None, None).await, StatusCode::NOT_FOUND);
    assert_error(&h.call(Method::GET, "/v1/secrets/", None, None).await, StatusCode::NOT_FOUND);
    assert_error(&h.call(Method::PATCH, "/v1/secrets", None, None).await, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(
        &h.call(Method::GET, "/v1/secrets/x/verify", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
    );
    let r = h.call(Method::POST, "/v1/secrets/x", None, None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, PUT, DELETE");
    let r = h.call(Method::PATCH, "/v1/secrets", None, None).await;
    assert!(r.headers.contains_key("allow"), "{:?}", r.headers);
    // reserved last segments cannot name a secret: not found, and verify answers a mismatch
    assert_error(
        &h.call(Method::GET, "/v1/secrets/a/b/rotate/versions", Some(&h.admin_token), None).await,
        StatusCode::NOT_FOUND,
    );
    let r = h.call(Method::POST, "/v1/secrets/a/verify/verify", None, Some(json!({"value": "x"}))).await;
    assert_eq!(r.body, json!({"valid": false, "version": null}));
    assert_error(&h.call(Method::DELETE, "/v1/audit", None, None).await, StatusCode::METHOD_NOT_ALLOWED);
}

pub async fn allowlist_and_proxy_spoofing(h: &Harness) {
    let name = unique("guarded");
    h.manual(&name, "v").await;
    let uri = format!("/v1/secrets/{name}");
    assert_error(&h.call_from(DENIED_PEER, Method::GET, &uri, None, None).await, StatusCode::FORBIDDEN);
    let r = h
        .call_from(DENIED_PEER, Method::POST, &format!("{uri}/verify"), None, Some(json!({"value": "v"})))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN);
    // A client cannot talk its way in with X-Forwarded-For when proxy trust is off.
    let req = Request::get(&uri).header("x-forwarded-for", "10.1.2.3").body(Body::empty()).unwrap();
    assert_error(&h.raw(DENIED_PEER, req).await, StatusCode::FORBIDDEN);
    let req = Request::get(&uri).header("x-forwarded-for", "10.1.2.3").body(Body::empty()).unwrap();
    assert_error(&h.raw(PROXY_PEER, req).await, StatusCode::FORBIDDEN);
    // ...and a garbage header from an untrusted peer is ignored, not a crash.
    let req = Request::get(&uri).header("x-forwarded-for", "garbage, ,").body(Body::empty()).unwrap();
    assert_eq!(h.raw(ALLOWED_PEER, req).await.status, StatusCode::OK);
}

/// Needs a harness with `trust_proxy: true` (trusted proxies 192.168.0.0/16).
pub async fn trusted_proxy(h: &Harness) {
    let name = unique("proxied");
    h.manual(&name, "v").await;
    let uri = format!("/v1/secrets/{name}");
    let req =
        Request::get(&uri).header("x-forwarded-for", "203.0.113.1, 10.9.9.9").body(Body::empty()).unwrap();
    assert_eq!(h.raw(PROXY_PEER, req).await.status, StatusCode::OK);
    // the client's own (left) entry is never believed
    let req =
        Request::get(&uri).header("x-forwarded-for", "10.9.9.9, 203.0.113.1").body(Body::empty()).unwrap();
    assert_error(&h.raw(PROXY_PEER, req).await, StatusCode::FORBIDDEN);
    let req = Request::get(&uri).header("x-forwarded-for", "not-an-ip").body(Body::empty()).unwrap();
    assert_error(&h.raw(PROXY_PEER, req).await, StatusCode::BAD_REQUEST);
}

pub async fn tokens_and_rbac(h: &Harness) {
    let prefix = unique("rbac");
    let name = format!("{prefix}/key");
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": name, "kind": "automatic", "rotation_interval_secs": 3600})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    assert_error(&h.call(Method::GET, "/v1/secrets", None, None).await, StatusCode::UNAUTHORIZED);
    let r = h.call(Method::GET, "/v1/secrets", Some("hvt_not-a-real-token"), None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer");

    let role = unique("rotator");
    let token = h.token_with(&role, json!([{"action": "rotate", "path": format!("{prefix}/*")}]), None).await;
    let r = h.call(Method::POST, &format!("/v1/secrets/{name}/rotate"), Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = h
        .call(
            Method::POST,
            "/v1/secrets",
            Some(&token),
            Some(json!({"name": format!("{prefix}/new"), "kind": "manual", "value": "v"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN);
    assert_error(
        &h.call(Method::DELETE, &format!("/v1/secrets/{name}"), Some(&token), None).await,
        StatusCode::FORBIDDEN,
    );
    assert_error(&h.call(Method::GET, "/v1/tokens", Some(&token), None).await, StatusCode::FORBIDDEN);
    assert_error(&h.call(Method::GET, "/v1/audit", Some(&token), None).await, StatusCode::FORBIDDEN);

    // roles CRUD
    let r = h.admin(Method::GET, &format!("/v1/roles/{role}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["permissions"][0]["action"], "rotate");
    let r = h
        .admin(
            Method::PUT,
            &format!("/v1/roles/{role}"),
            Some(json!({"permissions": [{"action": "*", "path": format!("{prefix}/*")}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        h.call(Method::DELETE, &format!("/v1/secrets/{name}"), Some(&token), None).await.status,
        StatusCode::NO_CONTENT
    );
    let r = h.admin(Method::GET, "/v1/roles", None).await;
    assert!(r.body["items"].as_array().unwrap().iter().any(|x| x["name"] == role.as_str()));
    assert_error(&h.admin(Method::GET, "/v1/roles/no-such-role", None).await, StatusCode::NOT_FOUND);
    let r = h.admin(Method::PUT, "/v1/roles/admin", Some(json!({"is_admin": false}))).await;
    assert_error(&r, StatusCode::CONFLICT);
    assert_error(&h.admin(Method::DELETE, "/v1/roles/admin", None).await, StatusCode::CONFLICT);
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": unique("f"), "kind": "automatic", "rotation_interval_secs": 60.0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "whole-number floats are integers: {:?}", r.body);
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": unique("f"), "kind": "automatic", "rotation_interval_secs": 60.5})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    assert_error(
        &h.admin(Method::POST, "/v1/roles", Some(json!({"name": role}))).await,
        StatusCode::CONFLICT,
    );
    let r =
        h.admin(Method::POST, "/v1/tokens", Some(json!({"name": unique("t"), "role": "no-such-role"}))).await;
    assert_error(&r, StatusCode::NOT_FOUND);

    // revoke; the name can be reused
    let tok_name = format!("{role}-tok");
    let r = h.admin(Method::GET, "/v1/tokens", None).await;
    assert!(r.body["items"].as_array().unwrap().iter().any(|x| x["name"] == tok_name.as_str()));
    assert!(!r.body.to_string().contains(&token), "raw token never listed");
    assert_eq!(
        h.admin(Method::DELETE, &format!("/v1/tokens/{tok_name}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_error(&h.call(Method::GET, "/v1/secrets", Some(&token), None).await, StatusCode::UNAUTHORIZED);
    assert_error(
        &h.admin(Method::DELETE, &format!("/v1/tokens/{tok_name}"), None).await,
        StatusCode::NOT_FOUND,
    );
    let r = h.admin(Method::POST, "/v1/tokens", Some(json!({"name": tok_name, "role": role}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // a role in use cannot be deleted; an unused one can
    assert_error(&h.admin(Method::DELETE, &format!("/v1/roles/{role}"), None).await, StatusCode::CONFLICT);
    let spare = unique("spare");
    h.admin(Method::POST, "/v1/roles", Some(json!({"name": spare}))).await;
    assert_eq!(
        h.admin(Method::DELETE, &format!("/v1/roles/{spare}"), None).await.status,
        StatusCode::NO_CONTENT
    );
}

pub async fn expired_token(h: &Harness) {
    let token =
        h.token_with(&unique("short"), json!([{"action": "read-metadata", "path": "*"}]), Some(1)).await;
    assert_eq!(h.call(Method::GET, "/v1/secrets?limit=1", Some(&token), None).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_error(
        &h.call(Method::GET, "/v1/secrets?limit=1", Some(&token), None).await,
        StatusCode::UNAUTHORIZED,
    );
}

/// Needs a harness with max_failures = 3 and a 2 s lockout; uses its own client address.
pub async fn lockout_and_release(h: &Harness, peer: &str) {
    for _ in 0..2 {
        let r = h.call_from(peer, Method::GET, "/v1/tokens", Some("wrong"), None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED);
    }
    let r = h.call_from(peer, Method::GET, "/v1/tokens", Some("wrong"), None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));
    // even the right token is refused while locked out
    let r = h.call_from(peer, Method::GET, "/v1/tokens", Some(&h.admin_token), None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
    // other clients are unaffected
    assert_eq!(h.admin(Method::GET, "/v1/tokens", None).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = h.call_from(peer, Method::GET, "/v1/tokens", Some(&h.admin_token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// Allowlist denials count towards the lockout too; a verify mismatch does not.
pub async fn denials_count_mismatches_do_not(h: &Harness) {
    let name = unique("mm");
    h.manual(&name, "right").await;
    for _ in 0..10 {
        let r = h
            .call(Method::POST, &format!("/v1/secrets/{name}/verify"), None, Some(json!({"value": "wrong"})))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let peer = &fresh_peer(198);
    for _ in 0..2 {
        assert_error(
            &h.call_from(peer, Method::GET, &format!("/v1/secrets/{name}"), None, None).await,
            StatusCode::FORBIDDEN,
        );
    }
    let r = h.call_from(peer, Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS);
}

pub async fn audit_records_calls(h: &Harness) {
    let name = unique("audited");
    h.manual(&name, "audit-me-value").await;
    h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    h.call(Method::POST, &format!("/v1/secrets/{name}/verify"), None, Some(json!({"value": "nope"}))).await;
    h.call_from(DENIED_PEER, Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
    let mut found = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found.clear();
        let mut uri = "/v1/audit?limit=1000".to_owned();
        loop {
            let r = h.admin(Method::GET, &uri, None).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            assert!(!r.body.to_string().contains("audit-me-value"), "no values in the audit trail");
            for e in r.body["items"].as_array().unwrap() {
                if e["secret"] == name.as_str() {
                    let detail = e["detail"].as_str().unwrap_or("").to_owned();
                    found.push((
                        e["action"].as_str().unwrap().to_owned(),
                        format!("{} {detail}", e["outcome"].as_str().unwrap()),
                    ));
                }
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => uri = format!("/v1/audit?limit=1000&cursor={c}"),
                None => break,
            }
        }
        if found.len() >= 4 {
            break;
        }
    }
    let has = |a: &str, o: &str| found.iter().any(|(x, y)| x == a && y.starts_with(o));
    assert!(has("create", "success"), "{found:?}");
    assert!(has("read", "success"), "{found:?}");
    assert!(has("verify", "success mismatch"), "{found:?}");
    assert!(has("read", "denied"), "{found:?}");
}

/// Text PostgreSQL cannot store (NUL) never reaches it: the listing's parameters are parsed (400
/// naming the field), and a path name with control bytes is audited escaped, so the audit batch
/// stays writable and later events keep flowing.
pub async fn nul_and_control_bytes_never_reach_storage(h: &Harness) {
    let r = h.admin(Method::GET, "/v1/secrets?prefix=a%00", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    assert!(r.body["error"].as_str().unwrap().starts_with("prefix:"), "{:?}", r.body);
    let r = h.admin(Method::GET, "/v1/secrets?prefix=%F0%9F%98%80", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let forged = hyperion_vault_api::cursor::encode("secrets", "a\0b");
    let r = h.admin(Method::GET, &format!("/v1/secrets?cursor={forged}"), None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    assert!(r.body["error"].as_str().unwrap().starts_with("cursor:"), "{:?}", r.body);

    let tag = unique("nul");
    let r = h.call(Method::GET, &format!("/v1/secrets/{tag}%00x%01"), None, None).await;
    assert_error(&r, StatusCode::BAD_REQUEST);
    let after = unique("after-nul");
    h.manual(&after, "after-nul-value").await;
    let escaped = format!("{tag}\\0x\\u{{1}}");
    let (mut saw_escaped, mut saw_after) = (false, false);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = h.admin(Method::GET, "/v1/audit?limit=1000", None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let items = r.body["items"].as_array().unwrap();
        saw_escaped = items.iter().any(|e| e["secret"] == escaped.as_str() && e["action"] == "read");
        saw_after = items.iter().any(|e| e["secret"] == after.as_str() && e["action"] == "create");
        if saw_escaped && saw_after {
            break;
        }
    }
    assert!(saw_escaped, "the read of a name with NUL was not audited (as {escaped})");
    assert!(saw_after, "audit events after it were not written");
    assert_eq!(h.state.metrics.audit_write_failures.get(), 0, "an audit batch failed to write");
}
