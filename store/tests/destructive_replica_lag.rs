//! DESTRUCTIVE: pauses WAL replay on the testenv standby to make it lag for real. Its own test
//! binary (cargo runs test binaries one after another); replay is resumed when the test ends, pass
//! or fail.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::model::{NewSecret, Owner, SecretKind};
use jiff::Timestamp;

async fn set_replay(paused: bool) {
    let standby = superuser("PG_STANDBY_PORT", "postgres").await;
    let call = if paused { "SELECT pg_wal_replay_pause()" } else { "SELECT pg_wal_replay_resume()" };
    standby.batch_execute(call).await.expect("toggle WAL replay on the standby");
}

/// Resumes replay even if the test panics.
struct ResumeOnDrop;

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(set_replay(false));
        })
        .join()
        .unwrap();
    }
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn verify_on_primary_is_not_fooled_by_a_lagging_standby() {
    let store = standby_reader_store().await;

    let n = format!("store-test/{}", unique("lag"));
    let sn = name(&n);
    let now = Timestamp::now();
    let spec = NewSecret {
        name: sn.clone(),
        kind: SecretKind::Manual,
        owner: Owner::Api,
        description: None,
        rotation_interval: None,
        grace_period: Duration::from_secs(3600),
        generator: None,
    };
    store.create_secret(spec, Some(SecretBytes::copy_from(b"one")), now).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.verify(&sn, b"one", now).await.unwrap() != Some(1) {
        assert!(Instant::now() < deadline, "the standby never replayed the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let guard = ResumeOnDrop;
    set_replay(true).await;
    // Let a replay already in flight finish before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.put_value(&sn, SecretBytes::copy_from(b"two"), now).await.unwrap();
    let on_replica = store.verify(&sn, b"two", now).await.unwrap();
    let on_primary = store.verify_on_primary(&sn, b"two", now).await.unwrap();
    drop(guard);

    assert_eq!(on_replica, None, "the paused standby must not see version 2 yet");
    assert_eq!(on_primary, Some(2), "the primary sees the version just written");
    store.delete(&sn, &Owner::Api, now).await.unwrap();
}
