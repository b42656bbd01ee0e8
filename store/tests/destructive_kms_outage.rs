//! DESTRUCTIVE: closes the KMS endpoint (`testenv kms-stop`). Its own test binary; reopens it
//! (`testenv kms-start`) when it ends, pass or fail.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::model::{NewSecret, Owner, SecretKind};
use hyperion_vault_store::{Store, StoreError};
use jiff::Timestamp;

struct KmsStartOnDrop;

impl Drop for KmsStartOnDrop {
    fn drop(&mut self) {
        testenv(&["kms-start"]);
    }
}

fn spec(n: &str, kind: SecretKind) -> NewSecret {
    NewSecret {
        name: name(n),
        kind,
        owner: Owner::Api,
        description: None,
        rotation_interval: (kind == SecretKind::Automatic).then_some(Duration::from_secs(3600)),
        grace_period: Duration::from_secs(60),
        generator: None,
    }
}

fn assert_kms_unavailable<T>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::KmsUnavailable { .. }) => {}
        Err(e) => panic!("{what}: expected KmsUnavailable, got {e:?}"),
        Ok(_) => panic!("{what}: expected KmsUnavailable, got success"),
    }
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn kms_outage_keeps_cached_reads_and_fails_cleanly_otherwise() {
    let store = store_with(aws_keys().await).await;
    let uncached =
        Store::connect(&args_for(&env("TESTENV_PG_DSN_RW")), aws_keys().await, DekCache::disabled())
            .await
            .unwrap();
    let now = Timestamp::now();
    let n = format!("store-test/{}", unique("kms"));
    store
        .create_secret(spec(&n, SecretKind::Automatic), Some(SecretBytes::copy_from(b"cached")), now)
        .await
        .unwrap();
    assert_eq!(store.read_current(&name(&n)).await.unwrap().unwrap().value().expose(), b"cached");

    let guard = KmsStartOnDrop;
    testenv(&["kms-stop"]);

    // The DEK cache carries reads through the outage.
    assert_eq!(store.read_current(&name(&n)).await.unwrap().unwrap().value().expose(), b"cached");
    assert_eq!(store.verify(&name(&n), b"cached", now).await.unwrap(), Some(1));

    // Without a cached DEK the read fails, typed, within the retry budget.
    let budget = kms_policy().worst_case() + Duration::from_secs(2);
    let t0 = Instant::now();
    assert_kms_unavailable(uncached.read_current(&name(&n)).await, "uncached read");
    assert!(t0.elapsed() <= budget, "took {:?}, budget {budget:?}", t0.elapsed());

    // Writes fail before touching the database: nothing half-written.
    let t0 = Instant::now();
    let created = format!("store-test/{}", unique("kms-new"));
    assert_kms_unavailable(
        store
            .create_secret(spec(&created, SecretKind::Manual), Some(SecretBytes::copy_from(b"x")), now)
            .await,
        "create",
    );
    assert!(t0.elapsed() <= budget, "took {:?}, budget {budget:?}", t0.elapsed());
    assert!(store.metadata(&name(&created)).await.unwrap().is_none());
    assert_kms_unavailable(store.rotate(&name(&n), 1, None, now).await, "rotate");
    assert_kms_unavailable(store.put_value(&name(&n), SecretBytes::copy_from(b"y"), now).await, "put");
    let meta = store.metadata(&name(&n)).await.unwrap().unwrap();
    assert_eq!(meta.current_version, 1);
    assert_eq!(store.history(&name(&n)).await.unwrap().unwrap().len(), 1);

    drop(guard);
    // Back to normal once KMS returns.
    assert_eq!(uncached.read_current(&name(&n)).await.unwrap().unwrap().value().expose(), b"cached");
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}
