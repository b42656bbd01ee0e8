//! Only ciphertext reaches PostgreSQL: after writing values that contain a unique marker and
//! forcing a checkpoint on both nodes, the marker appears nowhere in either data directory
//! (heap files, WAL, everything), scanned as raw bytes. A positive control proves the scan works.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::model::{AuditEvent, AuditOutcome, NewSecret, Owner, SecretKind};
use jiff::Timestamp;

/// Directories (data dirs) in which `needle` occurs in some file, per `grep -r -a -F -l`.
fn files_containing(dir: &str, needle: &str) -> Vec<String> {
    let out = std::process::Command::new("grep")
        .args(["-r", "-a", "-F", "-l", "--", needle, dir])
        .output()
        .expect("run grep over the data directory");
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 1), "grep failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Waits until the standby replayed everything the primary wrote, then checkpoints both.
async fn replicate_and_checkpoint() {
    let primary = superuser("PG_PRIMARY_PORT", "postgres").await;
    let standby = superuser("PG_STANDBY_PORT", "postgres").await;
    let lsn: String = primary.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught_up: bool = standby
            .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn])
            .await
            .unwrap()
            .get(0);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not replay up to {lsn}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    primary.batch_execute("CHECKPOINT").await.unwrap();
    standby.batch_execute("CHECKPOINT").await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn marker_values_never_reach_data_files_or_wal() {
    let store = local_store().await;
    let marker = format!("HVMARKER{}", uuid::Uuid::new_v4().simple());
    let now = Timestamp::now();
    let mut names = Vec::new();
    for i in 0..5 {
        let n = format!("store-test/{}", unique(&format!("marker{i}")));
        let spec = NewSecret {
            name: name(&n),
            kind: if i % 2 == 0 { SecretKind::Manual } else { SecretKind::Automatic },
            owner: Owner::Api,
            description: Some("plaintext scan".into()),
            rotation_interval: (i % 2 == 1).then_some(Duration::from_secs(3600)),
            grace_period: Duration::from_secs(3600),
            generator: None,
        };
        store
            .create_secret(spec, Some(SecretBytes::new(format!("{marker}-v1-{i}").into_bytes())), now)
            .await
            .unwrap();
        store
            .put_value(&name(&n), SecretBytes::new(format!("{marker}-v2-{i}").into_bytes()), now)
            .await
            .unwrap();
        // Reads and verifies must not leak either (e.g. through audit detail or temp files).
        let v = store.read_current(&name(&n)).await.unwrap().unwrap();
        assert!(v.value().expose().starts_with(marker.as_bytes()));
        store.verify(&name(&n), format!("{marker}-v1-{i}").as_bytes(), now).await.unwrap();
        store
            .append_audit(AuditEvent {
                secret: Some(n.clone()),
                ..AuditEvent::new(now, "test", "secret.read", AuditOutcome::Success)
            })
            .await
            .unwrap();
        names.push(n);
    }

    // Positive control: the same marker family written as plain text in a scratch database is found.
    let control = format!("HVCONTROL{}", uuid::Uuid::new_v4().simple());
    let (db, _) = fresh_database().await;
    let scratch = superuser("PG_PRIMARY_PORT", &db).await;
    scratch
        .batch_execute(&format!("CREATE TABLE t (v text); INSERT INTO t VALUES ('{control}')"))
        .await
        .unwrap();

    replicate_and_checkpoint().await;
    for dir in [env("PG_PRIMARY_DATA"), env("PG_STANDBY_DATA")] {
        assert!(!files_containing(&dir, &control).is_empty(), "the scan cannot find plain text in {dir}");
        let leaks = files_containing(&dir, &marker);
        assert!(leaks.is_empty(), "secret values leaked into {leaks:?}");
    }
    drop(scratch);
    drop_database(&db).await;
    for n in names {
        store.delete(&name(&n), &Owner::Api, now).await.unwrap();
    }
}
