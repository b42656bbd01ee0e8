//! Destructive tests: stop the PostgreSQL primary, stop KMS. Run serially (one test function) and
//! restore the environment afterwards, even on failure. Same prerequisites as `router_store.rs`.
//! Use your own testenv while developing: `HV_TESTENV_DIR=/tmp/hv-api e2e/testenv/testenv up`.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::store::{StoreOptions, env};
use common::{Harness, Options, assert_error, unique};
use hyperion_vault_api::backend::Backend;
use serde_json::json;

fn testenv(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/testenv/testenv");
    let status = std::process::Command::new(&script)
        .args(args)
        .env("HV_TESTENV_DIR", env("HV_TESTENV_DIR"))
        .status()
        .expect("run the testenv script");
    assert!(status.success(), "testenv {args:?} failed: {status}");
}

/// Runs the restoring command when dropped, so a failed assertion does not leave a part stopped.
struct Restore(&'static [&'static str]);

impl Drop for Restore {
    fn drop(&mut self) {
        testenv(self.0);
    }
}

/// Fast-failing dependencies, and no sealed-row cache: every read here must really reach a node
/// (the standby while the primary is down; KMS or the DEK cache while KMS is down).
async fn backend() -> Arc<dyn Backend> {
    let opts = StoreOptions {
        kms_retries: 1,
        kms_attempt_timeout: Duration::from_secs(1),
        pg_connect_timeout_secs: 2,
        row_cache_ttl: Duration::ZERO,
    };
    common::store::store_and_backend(opts).await.1
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn faults_kms_down_then_primary_down() {
    // The store's warnings explain a failure here (which node a read went to, and why).
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    kms_down_cached_reads_work_writes_fail().await;
    eprintln!("KMS outage scenario passed");
    primary_down_reads_continue_and_audit_catches_up().await;
}

async fn primary_down_reads_continue_and_audit_catches_up() {
    let h = Harness::new(backend().await, Options::default()).await;
    let name = unique("outage/primary");
    h.manual(&name, "still-readable").await;
    assert_eq!(h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await.status, StatusCode::OK);

    testenv(&["pg-stop", "primary"]);
    let restore = Restore(&["pg-start", "primary"]);
    let started = Instant::now();
    for _ in 0..3 {
        let r = h.call(Method::GET, &format!("/v1/secrets/{name}"), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "read from the standby: {:?}", r.body);
        assert_eq!(r.body["value"], "still-readable");
        let r = h
            .call(
                Method::POST,
                &format!("/v1/secrets/{name}/verify"),
                None,
                Some(json!({"value": "still-readable"})),
            )
            .await;
        assert_eq!(r.body, json!({"valid": true, "version": 1}));
    }
    eprintln!("6 reads/verifies during the primary outage took {:?}", started.elapsed());
    assert_eq!(h.call(Method::GET, "/readyz", None, None).await.status, StatusCode::OK);
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": unique("x"), "kind": "manual", "value": "v"})),
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.state.audit.backlog() >= 6, "reads are audited into the queue: {}", h.state.audit.backlog());
    drop(restore);

    // The flusher retries the held batch until the primary is back; nothing is lost.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.admin(Method::GET, "/v1/audit?limit=1000", None).await;
        let reads = if r.status == StatusCode::OK {
            // Reads queued together are stored as one row with `count=N` in its detail.
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["secret"] == name.as_str())
                .map(|e| {
                    let detail = e["detail"].as_str().unwrap_or("");
                    detail
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("count="))
                        .map_or(1, |n| n.parse::<usize>().unwrap())
                })
                .sum::<usize>()
        } else {
            0
        };
        // create + 1 read before, 3 reads + 3 verifies during the outage
        if reads >= 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit did not catch up: {reads} rows, backlog {}",
            h.state.audit.backlog()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn kms_down_cached_reads_work_writes_fail() {
    let h = Harness::new(backend().await, Options::default()).await;
    let cached = unique("outage/kms-cached");
    let uncached = unique("outage/kms-uncached");
    h.manual(&cached, "cached").await;
    h.manual(&uncached, "uncached").await;
    assert_eq!(
        h.call(Method::GET, &format!("/v1/secrets/{cached}"), None, None).await.status,
        StatusCode::OK
    );
    // A second replica with an empty DEK cache.
    let cold = Harness::new(backend().await, Options::default()).await;

    testenv(&["kms-stop"]);
    let restore = Restore(&["kms-start"]);
    let r = h.call(Method::GET, &format!("/v1/secrets/{cached}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "cached DEK survives a KMS outage: {:?}", r.body);
    let r = cold.call(Method::GET, &format!("/v1/secrets/{uncached}"), None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    let r = h
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": unique("x"), "kind": "manual", "value": "v"})),
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    let r = h.admin(Method::PUT, &format!("/v1/secrets/{cached}"), Some(json!({"value": "new"}))).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE);
    drop(restore);
    let r = cold.call(Method::GET, &format!("/v1/secrets/{uncached}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "recovers by itself: {:?}", r.body);
}
