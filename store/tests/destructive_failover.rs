//! DESTRUCTIVE: stops and promotes PostgreSQL nodes of the testenv. Its own test binary (cargo runs
//! test binaries one after another); it restores a fresh primary + standby (`testenv pg-reset`)
//! and re-applies the migrations when it ends, pass or fail.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::StoreError;
use jiff::Timestamp;

/// Restores the pair even if the test panics.
struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        testenv(&["pg-reset"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the testenv: run through the README test command"]
async fn writer_pool_follows_failover_without_reconfiguration() {
    let store = local_store().await;
    let guard = ResetOnDrop;
    let now = Timestamp::now();
    let before = format!("store-test/{}", unique("before"));
    store.create_secret(manual_spec(&before), Some(SecretBytes::copy_from(b"v-before")), now).await.unwrap();
    // Let the standby replay the write before the primary goes away.
    let deadline = Instant::now() + Duration::from_secs(15);
    let standby = superuser("PG_STANDBY_PORT", &env("PG_DATABASE")).await;
    while standby
        .query_opt("SELECT 1 FROM vault.secrets WHERE name = $1", &[&before])
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "standby did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(standby);

    testenv(&["pg-stop", "primary"]);
    // With only a standby left, writes are unavailable (typed), never misrouted.
    let err = store
        .create_secret(
            manual_spec(&format!("store-test/{}", unique("nowhere"))),
            Some(SecretBytes::copy_from(b"x")),
            now,
        )
        .await;
    assert!(matches!(err, Err(StoreError::DatabaseUnavailable { .. })), "{err:?}");

    testenv(&["pg-promote"]);
    let after = format!("store-test/{}", unique("after"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store
            .create_secret(manual_spec(&after), Some(SecretBytes::copy_from(b"v-after")), Timestamp::now())
            .await
        {
            Ok(meta) => {
                assert_eq!(meta.current_version, 1);
                break;
            }
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the writer pool did not follow the promotion: {e:?}"),
        }
    }
    let node = store.reader_node().await.unwrap();
    assert!(!node.in_recovery);
    assert_eq!(node.server_port.map(|p| p.to_string()), Some(env("PG_STANDBY_PORT")));
    assert_eq!(store.read_current(&name(&before)).await.unwrap().unwrap().value().expose(), b"v-before");
    assert_eq!(store.read_current(&name(&after)).await.unwrap().unwrap().value().expose(), b"v-after");
    assert_eq!(
        store
            .put_value(&name(&after), SecretBytes::copy_from(b"v2"), Timestamp::now())
            .await
            .unwrap()
            .version,
        2
    );

    drop(store);
    drop(guard);
    // Leave a migrated database behind for whoever runs next.
    local_store().await;
}
