//! The router scenarios against the real store: PostgreSQL primary + standby and moto KMS from the
//! testenv. Run with `source ${HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}/env` and
//! `cargo test -p hyperion-vault-api --test router_store -- --ignored`. A missing testenv fails.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::store::StoreOptions;
use common::{Harness, Options, scenarios};
use hyperion_vault_api::backend::{Backend, LockoutPolicy};

const NEEDS: &str = "needs the testenv: run through the README test command";

pub async fn store_backend() -> Arc<dyn Backend> {
    common::store::store_and_backend(StoreOptions::default()).await.1
}

async fn harness(opts: Options) -> Harness {
    Harness::new(store_backend().await, opts).await
}

fn strict() -> Options {
    Options {
        lockout: LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(2),
        },
        ..Options::default()
    }
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn ops_endpoints() {
    let _ = NEEDS;
    scenarios::ops_endpoints(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn create_read_verify_batch() {
    scenarios::create_read_verify_batch(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn rotate_grace_and_versions() {
    scenarios::rotate_grace_and_versions(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn update_delete_and_conflicts() {
    scenarios::update_delete_and_conflicts(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn list_paginates() {
    scenarios::list_paginates(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn framework_rejections_are_json() {
    scenarios::framework_rejections_are_json(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn allowlist_and_proxy_spoofing() {
    scenarios::allowlist_and_proxy_spoofing(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn trusted_proxy() {
    scenarios::trusted_proxy(&harness(Options { trust_proxy: true, ..Options::default() }).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn tokens_and_rbac() {
    scenarios::tokens_and_rbac(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn expired_token() {
    scenarios::expired_token(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn lockout_and_release() {
    scenarios::lockout_and_release(&harness(strict()).await, &common::fresh_peer(10)).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn denials_count_mismatches_do_not() {
    scenarios::denials_count_mismatches_do_not(&harness(strict()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn audit_records_calls() {
    scenarios::audit_records_calls(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn nul_and_control_bytes_never_reach_storage() {
    scenarios::nul_and_control_bytes_never_reach_storage(&harness(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn grace_window_ends() {
    use axum::http::{Method, StatusCode};
    use serde_json::json;
    let h = harness(Options::default()).await;
    let name = common::unique("grace/short");
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": name, "kind": "automatic", "rotation_interval_secs": 3600, "grace_period_secs": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let old = r.body["value"].as_str().unwrap().to_owned();
    let r = h.admin(Method::POST, &format!("/v1/secrets/{name}/rotate"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let verify_uri = format!("/v1/secrets/{name}/verify");
    let verify = || h.call(Method::POST, &verify_uri, None, Some(json!({"value": old})));
    assert_eq!(verify().await.body, json!({"valid": true, "version": 1}));
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}?version=1"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["value"], old.as_str());
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(verify().await.body, json!({"valid": false, "version": null}));
    let r = h.call(Method::GET, &format!("/v1/secrets/{name}?version=1"), None, None).await;
    common::assert_error(&r, StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn owned_secret_accepts_value_and_rotate_but_not_metadata_or_delete() {
    use axum::http::{Method, StatusCode};
    use hyperion_vault_core::name::SecretName;
    use hyperion_vault_core::secret::SecretBytes;
    use hyperion_vault_store::model as sm;
    use serde_json::json;
    let (store, backend) = common::store::store_and_backend(StoreOptions::default()).await;
    let h = Harness::new(backend, Options::default()).await;
    let ns = common::unique("team");
    let name = format!("{ns}/db");
    let spec = sm::NewSecret {
        name: SecretName::parse(&name).unwrap(),
        kind: sm::SecretKind::Automatic,
        owner: sm::Owner::Resource { uid: common::unique("uid"), namespace: ns.clone(), name: "db".into() },
        description: None,
        rotation_interval: Some(Duration::from_secs(3600)),
        grace_period: Duration::ZERO,
        generator: None,
    };
    store.create_secret(spec, Some(SecretBytes::copy_from(b"v1")), jiff::Timestamp::now()).await.unwrap();
    let r = h.admin(Method::PUT, &format!("/v1/secrets/{name}"), Some(json!({"value": "v2"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let r = h.admin(Method::POST, &format!("/v1/secrets/{name}/rotate"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = h.admin(Method::PUT, &format!("/v1/secrets/{name}"), Some(json!({"description": "x"}))).await;
    common::assert_error(&r, StatusCode::CONFLICT);
    assert!(r.body["error"].as_str().unwrap().contains(&format!("VaultSecret {ns}/db")), "{:?}", r.body);
    let r = h.admin(Method::DELETE, &format!("/v1/secrets/{name}"), None).await;
    common::assert_error(&r, StatusCode::CONFLICT);
}

/// DESIGN.md §6: sealed rows may be cached in the API provided a version committed elsewhere is
/// served within the replication lag plus one second. A write through another handle (what the
/// controller or another replica does) must show within that bound; a write through this replica
/// drops the entry at once; a cached grace version stops verifying exactly at its expiry.
#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn row_cache_serves_new_versions_within_a_second() {
    use hyperion_vault_api::backend::{NewSecret, SecretKind};
    use hyperion_vault_core::name::SecretName;
    use hyperion_vault_core::secret::SecretBytes;
    use std::time::Instant;
    let ttl = Duration::from_millis(500);
    let (store, backend) =
        common::store::store_and_backend(StoreOptions { row_cache_ttl: ttl, ..StoreOptions::default() })
            .await;
    let name = SecretName::parse(&format!("{}/cached", common::unique("rc"))).unwrap();
    let new = |kind, value: &[u8], grace| NewSecret {
        name: name.clone(),
        kind,
        value: SecretBytes::copy_from(value),
        description: None,
        rotation_interval: (kind == SecretKind::Automatic).then_some(Duration::from_secs(3600)),
        grace_period: grace,
        generator: None,
    };
    backend.create_secret(new(SecretKind::Manual, b"one", Duration::ZERO)).await.unwrap();
    let read = || async { backend.read_current(&name).await.unwrap().version };
    let until = |want: u32| async move {
        let started = Instant::now();
        while read().await != want {
            assert!(started.elapsed() < Duration::from_secs(10), "version {want} never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    };
    until(1).await;
    let hits = backend.stats().row_cache_hits;
    assert_eq!(read().await, 1);
    assert!(backend.stats().row_cache_hits > hits, "a repeated read is served from the cache");

    // Written elsewhere: this replica serves it within the TTL plus the standby's lag.
    store.put_value(&name, SecretBytes::copy_from(b"two"), jiff::Timestamp::now()).await.unwrap();
    let seen = until(2).await;
    eprintln!("a version written elsewhere was served after {seen:?} (TTL {ttl:?})");
    assert!(seen < Duration::from_millis(1000), "served after {seen:?}: over lag + 1 s");

    // Written here: the entry goes at once (the next read asks the database, not the cache).
    let misses = backend.stats().row_cache_misses;
    backend.put_value(&name, SecretBytes::copy_from(b"three")).await.unwrap();
    until(3).await;
    assert!(backend.stats().row_cache_misses > misses, "a local write invalidates the entry");
    backend.delete(&name).await.unwrap();

    // A grace version cached moments before its expiry does not verify after it.
    backend.create_secret(new(SecretKind::Automatic, b"old", Duration::from_secs(2))).await.unwrap();
    backend.rotate(&name).await.unwrap();
    let expires = loop {
        let h = backend.history(&name).await.unwrap();
        if let Some(e) = h.iter().find(|v| v.version == 1).and_then(|v| v.expires_at) {
            break e;
        }
    };
    let wait =
        |t: jiff::Timestamp| Duration::try_from(t.duration_since(jiff::Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(wait(expires - jiff::SignedDuration::from_millis(250))).await;
    assert_eq!(backend.verify(&name, b"old").await.unwrap(), Some(1), "inside grace");
    tokio::time::sleep(wait(expires + jiff::SignedDuration::from_millis(50))).await;
    let hits = backend.stats().row_cache_hits;
    assert_eq!(backend.verify(&name, b"old").await.unwrap(), None, "after grace, even from the cache");
    assert!(backend.stats().row_cache_hits > hits, "that answer came from a cached entry");
    backend.delete(&name).await.unwrap();
}
