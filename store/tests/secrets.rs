//! Secret lifecycle against the real PostgreSQL primary + standby and the moto KMS.
//! Non-destructive: safe to run next to other suites on the shared testenv.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_core::generator::{Charset, GeneratorSpec};
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::model::{
    DueFilter, ListQuery, MetadataUpdate, NewSecret, Owner, RotateOutcome, SecretKind, VersionState,
};
use hyperion_vault_store::{Store, StoreError};
use jiff::{SignedDuration, Timestamp};

const IGNORE: &str = "needs the testenv: run through the README test command";

fn manual(n: &str) -> NewSecret {
    NewSecret {
        name: name(n),
        kind: SecretKind::Manual,
        owner: Owner::Api,
        description: Some("test".into()),
        rotation_interval: None,
        grace_period: Duration::from_secs(3600),
        generator: None,
    }
}

fn automatic(n: &str, grace: Duration) -> NewSecret {
    NewSecret {
        name: name(n),
        kind: SecretKind::Automatic,
        owner: Owner::Api,
        description: None,
        rotation_interval: Some(Duration::from_secs(3600)),
        grace_period: grace,
        generator: Some(GeneratorSpec::new(24, Charset::Hex).unwrap()),
    }
}

fn value(s: &str) -> SecretBytes {
    SecretBytes::copy_from(s.as_bytes())
}

async fn round_trip(store: &Store) {
    let n = format!("store-test/{}", unique("rt"));
    let now = Timestamp::now();
    let spec = NewSecret { grace_period: Duration::from_secs(2), ..manual(&n) };
    let meta = store.create_secret(spec, Some(value("first")), now).await.unwrap();
    assert_eq!(meta.current_version, 1);
    let v = store.read_current(&name(&n)).await.unwrap().expect("current value");
    assert_eq!((v.version, v.value().expose()), (1, &b"first"[..]));

    let v2 = store.put_value(&name(&n), value("second"), now).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.read_current(&name(&n)).await.unwrap().unwrap().value().expose(), b"second");
    let old = store.read_version(&name(&n), 1, now).await.unwrap().expect("grace version");
    assert_eq!(old.value().expose(), b"first");
    assert!(old.expires_at.is_some());
    assert_eq!(store.verify(&name(&n), b"first", now).await.unwrap(), Some(1));
    assert_eq!(store.verify(&name(&n), b"second", now).await.unwrap(), Some(2));
    assert_eq!(store.verify(&name(&n), b"other", now).await.unwrap(), None);

    let history = store.history(&name(&n)).await.unwrap().unwrap();
    assert_eq!(history.iter().map(|h| h.version).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(history[1].state(now), VersionState::Grace);

    // After the grace period the old version is gone: unreadable, unverifiable, shredded. (Only
    // real time is used here: expiring "in the future" would shred other suites' grace versions.)
    let expires = history[1].expires_at.unwrap();
    let wait = expires.duration_since(Timestamp::now()).as_millis().max(0) as u64 + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let later = Timestamp::now();
    assert!(store.read_version(&name(&n), 1, later).await.unwrap().is_none());
    store.expire_grace_versions(later).await.unwrap();
    let history = store.history(&name(&n)).await.unwrap().unwrap();
    assert_eq!(history[1].state(later), VersionState::Shredded);
    assert_eq!(store.verify(&name(&n), b"first", later).await.unwrap(), None);

    assert!(store.delete(&name(&n), &Owner::Api, now).await.unwrap());
    assert!(store.read_current(&name(&n)).await.unwrap().is_none());
    assert!(!store.delete(&name(&n), &Owner::Api, now).await.unwrap());
    // The name is free again and starts over at version 1.
    let again = store.create_secret(manual(&n), Some(value("third")), now).await.unwrap();
    assert_eq!(again.current_version, 1);
    assert_eq!(store.read_current(&name(&n)).await.unwrap().unwrap().value().expose(), b"third");
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn round_trip_with_local_keyring() {
    let _ = IGNORE;
    round_trip(&local_store().await).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn round_trip_with_aws_kms_on_moto() {
    let store = store_with(aws_keys().await).await;
    round_trip(&store).await;

    // A second store with an empty DEK cache must go to KMS to read.
    let n = format!("store-test/{}", unique("aws"));
    let now = Timestamp::now();
    store.create_secret(automatic(&n, Duration::ZERO), None, now).await.unwrap();
    let fresh = Store::connect(&args_for(&env("TESTENV_PG_DSN_RW")), aws_keys().await, DekCache::disabled())
        .await
        .unwrap();
    let v = fresh.read_current(&name(&n)).await.unwrap().unwrap();
    assert_eq!(v.value().len(), 24);
    assert!(v.value().expose().iter().all(u8::is_ascii_hexdigit));
    let meta = store.metadata(&name(&n)).await.unwrap().unwrap();
    assert!(store.history(&name(&n)).await.unwrap().unwrap()[0].kms_key_id.starts_with("arn:aws:kms:"));
    assert!(meta.next_rotation_at.is_some());
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn manual_secret_awaits_its_value() {
    let store = local_store().await;
    let n = format!("store-test/{}", unique("await"));
    let now = Timestamp::now();
    let meta = store.create_secret(manual(&n), None, now).await.unwrap();
    assert_eq!(meta.current_version, 0);
    assert!(store.read_current(&name(&n)).await.unwrap().is_none());
    assert!(store.history(&name(&n)).await.unwrap().unwrap().is_empty());
    assert_eq!(store.put_value(&name(&n), value("v"), now).await.unwrap().version, 1);
    assert!(matches!(
        store.create_secret(manual(&n), None, now).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.rotate(&name(&n), 1, None, now).await,
        Err(StoreError::Invalid { field: "kind", .. })
    ));
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn a_rotate_now_request_is_recorded_with_the_version_that_answers_it() {
    let store = local_store().await;
    let n = format!("store-test/{}", unique("req"));
    let sn = name(&n);
    let now = Timestamp::now();
    store.create_secret(automatic(&n, Duration::from_secs(60)), None, now).await.unwrap();
    assert!(!store.served_rotate_request(&sn, "first").await.unwrap());
    // A rotation that loses its version race records nothing.
    assert_eq!(
        store.rotate_on_request(&sn, 7, "first", now).await.unwrap(),
        RotateOutcome::Conflict { current_version: 1 }
    );
    assert!(!store.served_rotate_request(&sn, "first").await.unwrap());
    let rotated = store.rotate_on_request(&sn, 1, "first", now).await.unwrap();
    assert!(matches!(rotated, RotateOutcome::Rotated { ref version, .. } if version.version == 2));
    assert!(store.served_rotate_request(&sn, "first").await.unwrap());
    assert!(!store.served_rotate_request(&sn, "second").await.unwrap());
    // Other rotations and new values keep the record; the next request replaces it, any length.
    assert!(matches!(store.rotate(&sn, 2, None, now).await.unwrap(), RotateOutcome::Rotated { .. }));
    assert_eq!(store.put_value(&sn, value("x"), now).await.unwrap().version, 4);
    assert!(store.served_rotate_request(&sn, "first").await.unwrap());
    let long = "n".repeat(10_000);
    assert!(matches!(
        store.rotate_on_request(&sn, 4, &long, now).await.unwrap(),
        RotateOutcome::Rotated { .. }
    ));
    assert!(store.served_rotate_request(&sn, &long).await.unwrap());
    assert!(!store.served_rotate_request(&sn, "first").await.unwrap());
    store.delete(&sn, &Owner::Api, now).await.unwrap();
    assert!(!store.served_rotate_request(&sn, &long).await.unwrap(), "a deleted secret answers nothing");
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn rotation_is_anchored_and_zero_grace_shreds_at_once() {
    let store = local_store().await;
    let n = format!("store-test/{}", unique("rot"));
    let created = Timestamp::now();
    let meta = store.create_secret(automatic(&n, Duration::ZERO), None, created).await.unwrap();
    let slot = meta.next_rotation_at.unwrap();
    // Three and a half periods late: rotate once, next slot is the next future one on the grid.
    let now = slot + SignedDuration::from_secs(3600 * 3 + 1800);
    let due = store.due_rotations(now, DueFilter::All, 1000).await.unwrap();
    assert!(due.iter().any(|d| d.name.as_str() == n && d.current_version == 1));
    let RotateOutcome::Rotated { version, next_rotation_at } =
        store.rotate(&name(&n), 1, None, now).await.unwrap()
    else {
        panic!("expected a rotation");
    };
    assert_eq!(version.version, 2);
    assert_eq!(next_rotation_at, Some(slot + SignedDuration::from_secs(3600 * 4)));
    // Retrying the same rotation is a no-op.
    assert_eq!(
        store.rotate(&name(&n), 1, None, now).await.unwrap(),
        RotateOutcome::Conflict { current_version: 2 }
    );
    let history = store.history(&name(&n)).await.unwrap().unwrap();
    assert_eq!(history[1].state(now), VersionState::Shredded);
    assert!(store.read_version(&name(&n), 1, now).await.unwrap().is_none());
    assert_eq!(store.next_wakeup(&name(&n)).await.unwrap(), next_rotation_at);

    // Owner rules: a resource-owned secret refuses API metadata changes and deletes.
    let owned = format!("{}/{}", "store-test", unique("owned"));
    let (ns, res) = owned.split_once('/').unwrap();
    let owner = Owner::Resource { uid: unique("uid"), namespace: ns.into(), name: res.into() };
    let mut spec = automatic(&owned, Duration::from_secs(60));
    spec.owner = owner.clone();
    store.create_secret(spec, None, created).await.unwrap();
    assert!(matches!(
        store.delete(&name(&owned), &Owner::Api, created).await,
        Err(StoreError::OwnedByResource { .. })
    ));
    let update = MetadataUpdate { rotation_interval: Some(Duration::from_secs(120)), ..Default::default() };
    let updated = store.update_metadata(&name(&owned), &owner, update, created).await.unwrap();
    assert_eq!(updated.rotation_interval, Some(Duration::from_secs(120)));
    let found = store.find_by_owner_uid(owner.resource_uid().unwrap()).await.unwrap().unwrap();
    assert_eq!(found.name.as_str(), owned);
    assert!(store.delete(&name(&owned), &owner, created).await.unwrap());
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn api_owned_due_rotations_are_not_starved_by_resource_owned_ones() {
    // A scratch database: the assertions count every due row.
    let (db, dsn) = fresh_database().await;
    let store = store_at(&dsn, local_keys()).await;
    let created = Timestamp::now();
    const LIMIT: u32 = 5;
    for i in 0..=LIMIT {
        let n = format!("team/stuck-{i}");
        let owner =
            Owner::Resource { uid: unique("uid"), namespace: "team".into(), name: format!("stuck-{i}") };
        let spec = NewSecret { owner, ..automatic(&n, Duration::ZERO) };
        store.create_secret(spec, None, created).await.unwrap();
    }
    // Created a day later: its slot comes after every resource-owned one.
    let later = created + SignedDuration::from_hours(24);
    let api = format!("store-test/{}", unique("api-due"));
    store.create_secret(automatic(&api, Duration::ZERO), None, later).await.unwrap();
    let now = later + SignedDuration::from_hours(2);

    let all = store.due_rotations(now, DueFilter::All, LIMIT).await.unwrap();
    assert_eq!(all.len(), LIMIT as usize);
    assert!(all.iter().all(|d| d.owner != Owner::Api), "the resource-owned rows fill the batch: {all:?}");
    let api_due = store.due_rotations(now, DueFilter::ApiOwned, LIMIT).await.unwrap();
    assert_eq!(api_due.len(), 1, "{api_due:?}");
    assert_eq!(
        (api_due[0].name.as_str(), &api_due[0].owner, api_due[0].current_version),
        (&*api, &Owner::Api, 1)
    );
    assert!(store.due_rotations(later, DueFilter::ApiOwned, LIMIT).await.unwrap().is_empty());
    drop(store);
    drop_database(&db).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn verify_on_primary_sees_a_just_written_version() {
    let store = local_store().await;
    let n = format!("store-test/{}", unique("vprim"));
    let now = Timestamp::now();
    store.create_secret(manual(&n), Some(value("one")), now).await.unwrap();
    assert_eq!(store.verify_on_primary(&name(&n), b"one", now).await.unwrap(), Some(1));
    store.put_value(&name(&n), value("two"), now).await.unwrap();
    // No waiting for replication: the primary has the version as soon as the write returns.
    assert_eq!(store.verify_on_primary(&name(&n), b"two", now).await.unwrap(), Some(2));
    assert_eq!(store.verify_on_primary(&name(&n), b"one", now).await.unwrap(), Some(1));
    assert_eq!(store.verify_on_primary(&name(&n), b"other", now).await.unwrap(), None);
    let later = now + SignedDuration::from_hours(2);
    assert_eq!(store.verify_on_primary(&name(&n), b"one", later).await.unwrap(), None);
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
    assert_eq!(store.verify_on_primary(&name(&n), b"two", now).await.unwrap(), None);
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn concurrent_rotations_from_two_connections_yield_one_version() {
    // Two stores = two independent pools, as two controller replicas would have.
    let a = local_store().await;
    let b = local_store().await;
    let now = Timestamp::now();
    for round in 0..10 {
        let n = format!("store-test/{}", unique(&format!("race{round}")));
        a.create_secret(automatic(&n, Duration::from_secs(60)), None, now).await.unwrap();
        let sn = name(&n);
        let (ra, rb) = tokio::join!(a.rotate(&sn, 1, None, now), b.rotate(&sn, 1, None, now));
        let outcomes = [ra.unwrap(), rb.unwrap()];
        let rotated = outcomes.iter().filter(|o| matches!(o, RotateOutcome::Rotated { .. })).count();
        assert_eq!(rotated, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&RotateOutcome::Conflict { current_version: 2 }), "{outcomes:?}");
        let history = a.history(&name(&n)).await.unwrap().unwrap();
        assert_eq!(history.len(), 2);
        a.delete(&name(&n), &Owner::Api, now).await.unwrap();
    }
}

/// A writer whose clock was read before the current version was written (the controller takes
/// `now`, an API rotate lands, then the controller reads the row) loses like any other racer,
/// instead of failing on the versions_timestamps CHECK.
#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn a_rotation_stamped_before_the_current_version_is_a_conflict() {
    let store = local_store().await;
    let n = format!("store-test/{}", unique("early-clock"));
    let now = Timestamp::now();
    let created = now - jiff::SignedDuration::from_secs(60);
    store.create_secret(automatic(&n, Duration::from_secs(60)), None, created).await.unwrap();
    // Version 2 written at `now` by someone else; this writer read its clock 5 s before that.
    assert!(matches!(store.rotate(&name(&n), 1, None, now).await.unwrap(), RotateOutcome::Rotated { .. }));
    let early = now - jiff::SignedDuration::from_secs(5);
    let outcome = store.rotate(&name(&n), 2, None, early).await.expect("a conflict, not an error");
    assert_eq!(outcome, RotateOutcome::Conflict { current_version: 2 });
    assert_eq!(store.history(&name(&n)).await.unwrap().unwrap().len(), 2, "nothing was written");
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn reads_are_served_by_the_standby() {
    let store = standby_reader_store().await;
    let n = format!("store-test/{}", unique("standby"));
    let now = Timestamp::now();
    store.create_secret(manual(&n), Some(value("replicated")), now).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let v = loop {
        if let Some(v) = store.read_current(&name(&n)).await.unwrap() {
            break v;
        }
        assert!(Instant::now() < deadline, "the standby never replayed the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v.value().expose(), b"replicated");
    assert!(store.reader_node().await.unwrap().in_recovery);
    store.delete(&name(&n), &Owner::Api, now).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn list_batch_and_validation() {
    let store = local_store().await;
    let prefix = format!("store-test/{}/", unique("list"));
    let now = Timestamp::now();
    for i in 0..5 {
        store
            .create_secret(manual(&format!("{prefix}s{i}")), Some(value(&format!("v{i}"))), now)
            .await
            .unwrap();
    }
    let page = store.list(&ListQuery { prefix: Some(prefix.clone()), cursor: None, limit: 2 }).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let mut all: Vec<String> = page.items.iter().map(|m| m.name.to_string()).collect();
    let mut cursor = page.next_cursor;
    while let Some(c) = cursor {
        let page =
            store.list(&ListQuery { prefix: Some(prefix.clone()), cursor: Some(c), limit: 2 }).await.unwrap();
        all.extend(page.items.iter().map(|m| m.name.to_string()));
        cursor = page.next_cursor;
    }
    assert_eq!(all, (0..5).map(|i| format!("{prefix}s{i}")).collect::<Vec<_>>());

    let names =
        [name(&format!("{prefix}s3")), name(&format!("{prefix}missing")), name(&format!("{prefix}s1"))];
    let batch = store.read_current_many(&names).await.unwrap();
    let got: Vec<&[u8]> = batch.iter().map(|v| v.value().expose()).collect();
    assert_eq!(got, vec![&b"v3"[..], &b"v1"[..]]);

    let mut bad = automatic(&format!("{prefix}bad"), Duration::ZERO);
    bad.rotation_interval = None;
    assert!(matches!(
        store.create_secret(bad, None, now).await,
        Err(StoreError::Invalid { field: "rotation_interval", .. })
    ));
    for i in 0..5 {
        store.delete(&name(&format!("{prefix}s{i}")), &Owner::Api, now).await.unwrap();
    }
}
