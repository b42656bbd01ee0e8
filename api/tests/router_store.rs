//! The router scenarios against the real store: PostgreSQL primary + standby and moto KMS from the
//! testenv. Run with `source ${HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}/env` and
//! `cargo test -p hyperion-vault-api --test router_store -- --ignored`. A missing testenv fails.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, Options, scenarios};
use hyperion_vault_api::backend::{Backend, LockoutPolicy};
use hyperion_vault_api::store_backend::{CountingKeys, StoreBackend};
use hyperion_vault_store::Store;
use hyperion_vault_store::config::StoreArgs;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::kms::{AwsKms, RetryPolicy};

const NEEDS: &str = "needs the testenv: run through the README test command";

fn env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: these tests need the real testenv. Run `e2e/testenv/testenv up`, then \
             `source ${{HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}}/env` and run the tests again"
        ),
    }
}

pub async fn store_backend() -> Arc<dyn Backend> {
    store_and_backend().await.1
}

pub async fn store_and_backend() -> (Store, Arc<dyn Backend>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    env("AWS_ACCESS_KEY_ID");
    let policy =
        RetryPolicy { max_retries: 2, attempt_timeout: Duration::from_secs(2), ..RetryPolicy::default() };
    let kms = AwsKms::from_env(env("VAULT_KMS_KEY_ID"), Some(&env("VAULT_KMS_ENDPOINT")), policy).await;
    let keys = CountingKeys::new(Arc::new(kms));
    let mut args = StoreArgs::from_url(&env("TESTENV_PG_DSN_RW"));
    args.pg_pool_size = 4;
    args.pg_connect_timeout_secs = 3;
    let store =
        Store::connect(&args, keys.clone(), DekCache::new(Duration::from_secs(300), 1000)).await.unwrap();
    store.migrate().await.expect("migrations apply");
    (store.clone(), Arc::new(StoreBackend::new(store, keys)))
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
    let (store, backend) = store_and_backend().await;
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
