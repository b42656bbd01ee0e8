//! Router tests over the in-memory backend twin: every endpoint and documented error, no socket,
//! no database. The same scenarios run against the real store in `router_store.rs`.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{Harness, Options, assert_error, scenarios};
use hyperion_vault_api::backend::LockoutPolicy;
use hyperion_vault_api::memory::MemoryBackend;
use serde_json::json;

async fn harness() -> Harness {
    Harness::new(Arc::new(MemoryBackend::new()), Options::default()).await
}

#[tokio::test]
async fn ops_endpoints() {
    scenarios::ops_endpoints(&harness().await).await;
}

#[tokio::test]
async fn create_read_verify_batch() {
    scenarios::create_read_verify_batch(&harness().await).await;
}

#[tokio::test]
async fn rotate_grace_and_versions() {
    scenarios::rotate_grace_and_versions(&harness().await).await;
}

#[tokio::test]
async fn update_delete_and_conflicts() {
    scenarios::update_delete_and_conflicts(&harness().await).await;
}

#[tokio::test]
async fn list_paginates() {
    scenarios::list_paginates(&harness().await).await;
}

#[tokio::test]
async fn framework_rejections_are_json() {
    scenarios::framework_rejections_are_json(&harness().await).await;
}

#[tokio::test]
async fn allowlist_and_proxy_spoofing() {
    scenarios::allowlist_and_proxy_spoofing(&harness().await).await;
}

#[tokio::test]
async fn trusted_proxy() {
    let h = Harness::new(Arc::new(MemoryBackend::new()), Options { trust_proxy: true, ..Options::default() })
        .await;
    scenarios::trusted_proxy(&h).await;
}

#[tokio::test]
async fn tokens_and_rbac() {
    scenarios::tokens_and_rbac(&harness().await).await;
}

#[tokio::test]
async fn expired_token() {
    scenarios::expired_token(&harness().await).await;
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
async fn lockout_and_release() {
    let h = Harness::new(Arc::new(MemoryBackend::new()), strict()).await;
    scenarios::lockout_and_release(&h, &common::fresh_peer(10)).await;
}

#[tokio::test]
async fn denials_count_mismatches_do_not() {
    let h = Harness::new(Arc::new(MemoryBackend::new()), strict()).await;
    scenarios::denials_count_mismatches_do_not(&h).await;
}

#[tokio::test]
async fn audit_records_calls() {
    scenarios::audit_records_calls(&harness().await).await;
}

#[tokio::test]
async fn nul_and_control_bytes_never_reach_storage() {
    scenarios::nul_and_control_bytes_never_reach_storage(&harness().await).await;
}

#[tokio::test]
async fn owned_secret_accepts_value_and_rotate_but_not_metadata_or_delete() {
    let backend = Arc::new(MemoryBackend::new());
    let h = Harness::new(backend.clone(), Options::default()).await;
    h.manual("team-a/db", "v1").await;
    backend.set_owner("team-a/db", "team-a", "db");
    let r = h.admin(Method::PUT, "/v1/secrets/team-a/db", Some(json!({"value": "v2"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["owner"], "vaultsecret:team-a/db");
    let r = h.admin(Method::PUT, "/v1/secrets/team-a/db", Some(json!({"description": "x"}))).await;
    assert_error(&r, StatusCode::CONFLICT);
    assert!(r.body["error"].as_str().unwrap().contains("VaultSecret team-a/db"), "{:?}", r.body);
    let r = h.admin(Method::DELETE, "/v1/secrets/team-a/db", None).await;
    assert_error(&r, StatusCode::CONFLICT);
}

#[tokio::test]
async fn unavailable_backend_is_503_with_retry_after() {
    let backend = Arc::new(MemoryBackend::new());
    let h = Harness::new(backend.clone(), Options::default()).await;
    h.manual("kms/x", "v").await;
    backend.kms_down.store(true, Ordering::SeqCst);
    let r = h.call(Method::GET, "/v1/secrets/kms/x", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    backend.kms_down.store(false, Ordering::SeqCst);
    backend.db_down.store(true, Ordering::SeqCst);
    assert_error(&h.call(Method::GET, "/readyz", None, None).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&h.admin(Method::GET, "/v1/tokens", None).await, StatusCode::SERVICE_UNAVAILABLE);
    backend.db_down.store(false, Ordering::SeqCst);
    assert_eq!(h.call(Method::GET, "/readyz", None, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bootstrap_token_is_admin() {
    use hyperion_vault_core::token::Fingerprint;
    let h = harness().await;
    h.backend.ensure_bootstrap_admin(Fingerprint::of(common::ADMIN_TOKEN)).await.unwrap();
    let r = h.call(Method::GET, "/v1/tokens", Some(common::ADMIN_TOKEN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["items"].as_array().unwrap().iter().any(|t| t["name"] == "bootstrap-admin"));
}

#[tokio::test]
async fn full_audit_queue_fails_closed() {
    let h = Harness::new(
        Arc::new(MemoryBackend::new()),
        Options { audit_capacity: 16, run_flusher: false, ..Options::default() },
    )
    .await;
    let mut last = StatusCode::OK;
    for i in 0..20 {
        last = h.admin(Method::GET, "/v1/tokens", None).await.status;
        if last == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(i, 16, "the 17th call finds the queue full");
            break;
        }
    }
    assert_eq!(last, StatusCode::SERVICE_UNAVAILABLE);
    let r = h.call(Method::GET, "/v1/secrets/any", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    // unaudited endpoints still answer
    assert_eq!(h.call(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
}
