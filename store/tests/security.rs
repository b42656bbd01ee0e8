//! Database-level security: least-privilege service role, RLS, append-only hash-chained audit
//! log, migration checksums, tokens and lockouts. Tampering happens in throwaway databases, never
//! in the shared `vault` database.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use hyperion_vault_core::rbac::{self, Action, Rule};
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_core::token::Fingerprint;
use hyperion_vault_store::StoreError;
use hyperion_vault_store::migrate::{MIGRATIONS, Migration, MigrationError};
use hyperion_vault_store::model::{AuditEvent, AuditOutcome, LockoutPolicy, NewRole};
use jiff::{SignedDuration, Timestamp};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

async fn connect_as(db: &str, user: &str, password: &str) -> tokio_postgres::Client {
    let dsn = format!(
        "host={} port={} user={user} password={password} dbname={db}",
        env("PG_HOST"),
        env("PG_PRIMARY_PORT")
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await.expect("role connects");
    tokio::spawn(conn);
    client
}

fn event(action: &str, outcome: AuditOutcome) -> AuditEvent {
    AuditEvent {
        at: Timestamp::now(),
        actor: "token:ci".into(),
        client_ip: Some("10.1.2.3".parse::<IpAddr>().unwrap()),
        action: action.into(),
        secret: Some("team/db".into()),
        outcome,
        detail: Some("no value here".into()),
    }
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn service_role_is_least_privilege_and_audit_is_tamper_evident() {
    let (db, dsn) = fresh_database().await;
    let store = store_at(&dsn, local_keys()).await;
    let now = Timestamp::now();
    store.create_secret(manual_spec("team/db"), Some(SecretBytes::copy_from(b"pw")), now).await.unwrap();
    store
        .append_audit_batch((0..5).map(|_| event("secret.read", AuditOutcome::Success)).collect())
        .await
        .unwrap();

    let admin = superuser("PG_PRIMARY_PORT", &db).await;
    let svc = unique("svc").replace('-', "_");
    let other = unique("other").replace('-', "_");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {svc} LOGIN PASSWORD 'svc-pw'; SELECT vault.grant_service_role('{svc}');
             CREATE ROLE {other} LOGIN PASSWORD 'other-pw';
             GRANT USAGE ON SCHEMA vault TO {other}; GRANT SELECT ON vault.secrets, vault.audit_log TO {other};"
        ))
        .await
        .unwrap();

    // The service role works through the store: reads, writes, audit appends.
    let svc_dsn = format!("postgresql://{svc}:svc-pw@{}:{}/{db}", env("PG_HOST"), env("PG_PRIMARY_PORT"));
    let svc_store = store_at(&svc_dsn, local_keys()).await;
    assert_eq!(svc_store.read_current(&name("team/db")).await.unwrap().unwrap().value().expose(), b"pw");
    svc_store.append_audit(event("secret.verify", AuditOutcome::Denied)).await.unwrap();
    assert_eq!(svc_store.read_audit(None, 100).await.unwrap().items.len(), 6);
    assert_eq!(svc_store.verify_audit_chain().await.unwrap(), None);

    // ...but cannot rewrite or remove audit rows.
    let svc_client = connect_as(&db, &svc, "svc-pw").await;
    for sql in [
        "UPDATE vault.audit_log SET actor = 'x' WHERE id = 1",
        "DELETE FROM vault.audit_log WHERE id = 1",
        "TRUNCATE vault.audit_log",
        "UPDATE vault.audit_chain_head SET last_id = 0",
        "DELETE FROM vault.secrets",
    ] {
        let err = svc_client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {err:?}");
    }

    // A role with a table grant but no policy sees nothing (RLS is forced).
    let other_client = connect_as(&db, &other, "other-pw").await;
    for table in ["vault.secrets", "vault.audit_log"] {
        let n: i64 =
            other_client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} leaked rows to a role without the grant");
    }
    let err = other_client.batch_execute("SELECT count(*) FROM vault.secret_versions").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // Tampering by a superuser (bypassing the immutability trigger) is caught by the chain check.
    assert_eq!(store.verify_audit_chain().await.unwrap(), None);
    admin
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE vault.audit_log SET detail = 'forged' WHERE id = 3;
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    assert_eq!(store.verify_audit_chain().await.unwrap(), Some(3));
    // Even the superuser is stopped by the trigger unless it disables it.
    let err = admin.batch_execute("UPDATE vault.audit_log SET detail = 'x' WHERE id = 4").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    drop((svc_store, store, svc_client, other_client));
    drop_database(&db).await;
    admin.batch_execute(&format!("DROP ROLE IF EXISTS {other}")).await.ok();
    let cleanup = superuser("PG_PRIMARY_PORT", "postgres").await;
    cleanup.batch_execute(&format!("DROP ROLE IF EXISTS {svc}; DROP ROLE IF EXISTS {other}")).await.ok();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn concurrent_audit_appends_chain_correctly() {
    let (db, dsn) = fresh_database().await;
    let a = store_at(&dsn, local_keys()).await;
    let b = store_at(&dsn, local_keys()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.append_audit_batch(vec![event("secret.read", AuditOutcome::Success); 3]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.verify_audit_chain().await.unwrap(), None);
    let page = a.read_audit(None, 1000).await.unwrap();
    assert_eq!(page.items.len(), 240);
    assert!(page.items.windows(2).all(|w| w[0].id > w[1].id));
    let first = a.read_audit(None, 100).await.unwrap();
    let second = a.read_audit(first.next_cursor.as_deref(), 100).await.unwrap();
    assert_eq!(second.items[0].id, first.items[99].id - 1);

    // Removing the newest rows is detected against the chain head.
    let admin = superuser("PG_PRIMARY_PORT", &db).await;
    admin
        .batch_execute(
            "SET session_replication_role = replica;
             DELETE FROM vault.audit_log WHERE id = (SELECT max(id) FROM vault.audit_log);",
        )
        .await
        .unwrap();
    assert!(a.verify_audit_chain().await.unwrap().is_some());
    drop((a, b, admin));
    drop_database(&db).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn migration_runner_refuses_a_changed_file() {
    let (db, dsn) = fresh_database().await;
    let store = store_at(&dsn, local_keys()).await;
    let report = store.migrate().await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(report.already_applied, MIGRATIONS.len());

    let edited = format!("{}\n-- edited after release\n", MIGRATIONS[0].sql);
    let edited: &'static str = Box::leak(edited.into_boxed_str());
    let changed = [Migration { name: MIGRATIONS[0].name, sql: edited }];
    let err = store.migrate_with(&changed).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Migration(MigrationError::ChecksumMismatch { name }) if name == MIGRATIONS[0].name),
        "{err:?}"
    );
    // The lock was released: a normal run still works.
    store.migrate().await.unwrap();

    // Concurrent first-time runs on an empty database apply each file exactly once.
    let (db2, dsn2) = fresh_database().await;
    let stores = [
        hyperion_vault_store::Store::connect(
            &args_for(&dsn2),
            local_keys(),
            hyperion_vault_store::dek_cache::DekCache::disabled(),
        )
        .await
        .unwrap(),
        hyperion_vault_store::Store::connect(
            &args_for(&dsn2),
            local_keys(),
            hyperion_vault_store::dek_cache::DekCache::disabled(),
        )
        .await
        .unwrap(),
    ];
    let (r1, r2) = tokio::join!(stores[0].migrate(), stores[1].migrate());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.applied.len() + r2.applied.len(), MIGRATIONS.len());
    drop((store, stores));
    drop_database(&db).await;
    drop_database(&db2).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn roles_tokens_bootstrap_and_lockouts() {
    let (db, dsn) = fresh_database().await;
    let store = store_at(&dsn, local_keys()).await;
    let now = Timestamp::now();

    // Bootstrap is idempotent across "replicas".
    let boot = Fingerprint::of("hvt_bootstrap");
    assert!(store.ensure_bootstrap_admin(&boot, now).await.unwrap());
    assert!(!store.ensure_bootstrap_admin(&boot, now).await.unwrap());
    let (x, y) =
        tokio::join!(store.ensure_bootstrap_admin(&boot, now), store.ensure_bootstrap_admin(&boot, now));
    assert!(!x.unwrap() && !y.unwrap());
    let admin = store.lookup_token(&boot, now).await.unwrap().unwrap();
    assert_eq!(admin.name, "bootstrap-admin");
    assert!(rbac::is_admin(&[admin.role]));

    let role = NewRole {
        name: "deployer".into(),
        description: Some("CI".into()),
        is_admin: false,
        rules: vec![Rule::parse("rotate", "payments/*").unwrap(), Rule::parse("read-metadata", "*").unwrap()],
    };
    store.create_role(role.clone(), now).await.unwrap();
    assert!(matches!(store.create_role(role.clone(), now).await, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(store.get_role("deployer").await.unwrap().unwrap().rules, role.rules);

    let fp = Fingerprint::of("hvt_ci");
    store.create_token("ci", "deployer", &fp, Some(now + SignedDuration::from_hours(1)), now).await.unwrap();
    assert!(matches!(
        store.create_token("ci", "deployer", &Fingerprint::of("other"), None, now).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_token("x", "nope", &Fingerprint::of("x"), None, now).await,
        Err(StoreError::Invalid { field: "role", .. })
    ));
    let rec = store.lookup_token(&fp, now).await.unwrap().unwrap();
    assert!(rbac::allows(std::slice::from_ref(&rec.role), Action::Rotate, "payments/api"));
    assert!(!rbac::allows(&[rec.role], Action::Delete, "payments/api"));
    // Expired tokens do not authenticate.
    assert!(store.lookup_token(&fp, now + SignedDuration::from_hours(2)).await.unwrap().is_none());
    assert!(matches!(store.delete_role("deployer").await, Err(StoreError::Conflict(_))));

    let updated = NewRole { rules: vec![Rule::parse("*", "payments/*").unwrap()], ..role };
    store.update_role(updated.clone(), now).await.unwrap();
    assert_eq!(store.lookup_token(&fp, now).await.unwrap().unwrap().role.rules, updated.rules);

    assert!(store.revoke_token("ci", now).await.unwrap());
    assert!(!store.revoke_token("ci", now).await.unwrap());
    assert!(store.lookup_token(&fp, now).await.unwrap().is_none());
    // A revoked token's name can be reused.
    store.create_token("ci", "deployer", &Fingerprint::of("hvt_ci2"), None, now).await.unwrap();
    assert_eq!(store.list_tokens().await.unwrap().iter().filter(|t| t.name == "ci").count(), 1);

    let policy =
        LockoutPolicy { threshold: 3, window: Duration::from_secs(60), lockout: Duration::from_secs(300) };
    let client = "10.9.9.9";
    for i in 1..=2 {
        let s = store.record_auth_failure(client, now, &policy).await.unwrap();
        assert_eq!((s.failures, s.locked_until), (i, None));
    }
    let s = store.record_auth_failure(client, now, &policy).await.unwrap();
    let until = s.locked_until.expect("locked after the third failure");
    assert!(
        until.duration_since(now + SignedDuration::from_secs(300)).abs() < SignedDuration::from_millis(1)
    );
    assert!(store.is_locked_out(client, now).await.unwrap().is_some());
    assert!(store.is_locked_out(client, now + SignedDuration::from_secs(301)).await.unwrap().is_none());
    // Failures outside the window start a new count.
    let s = store.record_auth_failure(client, now + SignedDuration::from_secs(400), &policy).await.unwrap();
    assert_eq!(s.failures, 1);
    store.clear_failures(client).await.unwrap();
    assert!(store.is_locked_out(client, now).await.unwrap().is_none());
    drop(store);
    drop_database(&db).await;
}
