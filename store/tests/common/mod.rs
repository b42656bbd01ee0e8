//! Shared helpers for the store's integration tests against the real testenv
//! (`e2e/testenv/testenv up`, then `source $HV_TESTENV_DIR/env`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyperion_vault_core::keyring::LocalKeyring;
use hyperion_vault_core::keywrap::KeyWrapper;
use hyperion_vault_core::name::SecretName;
use hyperion_vault_store::Store;
use hyperion_vault_store::config::StoreArgs;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::kms::{AwsKms, RetryPolicy};
use hyperion_vault_store::model::{NewSecret, Owner, SecretKind};
use tokio_postgres::NoTls;

pub const TEST_KEYS: &str = "test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A required testenv variable; a missing one fails the test with instructions.
pub fn env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: these tests need the real testenv. Run `e2e/testenv/testenv up`, then \
             `source ${{HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}}/env` and run the tests again"
        ),
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn name(raw: &str) -> SecretName {
    SecretName::parse(raw).expect("test names are valid")
}

/// A manual, API-owned secret without description or grace period.
pub fn manual_spec(n: &str) -> NewSecret {
    NewSecret {
        name: name(n),
        kind: SecretKind::Manual,
        owner: Owner::Api,
        description: None,
        rotation_interval: None,
        grace_period: Duration::ZERO,
        generator: None,
    }
}

pub fn local_keys() -> Arc<dyn KeyWrapper> {
    Arc::new(LocalKeyring::parse(TEST_KEYS).expect("the test keyring parses"))
}

pub fn kms_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        attempt_timeout: Duration::from_secs(2),
    }
}

pub async fn aws_keys() -> Arc<dyn KeyWrapper> {
    let endpoint = env("VAULT_KMS_ENDPOINT");
    env("AWS_ACCESS_KEY_ID");
    Arc::new(AwsKms::from_env(env("VAULT_KMS_KEY_ID"), Some(&endpoint), kms_policy()).await)
}

pub fn args_for(dsn: &str) -> StoreArgs {
    let mut args = StoreArgs::from_url(dsn);
    args.pg_pool_size = 4;
    args.pg_connect_timeout_secs = 3;
    args
}

/// A store over the shared testenv database (multi-host DSN), migrated.
pub async fn store_with(keys: Arc<dyn KeyWrapper>) -> Store {
    store_at(&env("TESTENV_PG_DSN_RW"), keys).await
}

pub async fn store_at(dsn: &str, keys: Arc<dyn KeyWrapper>) -> Store {
    let store = Store::connect(&args_for(dsn), keys, DekCache::new(Duration::from_secs(300), 1000))
        .await
        .expect("store connects");
    store.migrate().await.expect("migrations apply");
    store
}

pub async fn local_store() -> Store {
    store_with(local_keys()).await
}

/// A superuser connection to one node of the testenv.
pub async fn superuser(port_var: &str, db: &str) -> tokio_postgres::Client {
    let dsn = format!(
        "host={} port={} user={} password={} dbname={db}",
        env("PG_HOST"),
        env(port_var),
        env("PG_SUPERUSER"),
        env("PG_SUPERPASSWORD")
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await.expect("superuser connects");
    tokio::spawn(conn);
    client
}

/// A throwaway database on the primary (replicated to the standby), for tests that must not touch
/// the shared `vault` database (tampering, checksums, bootstrap). Dropped by [`drop_database`].
pub async fn fresh_database() -> (String, String) {
    let db = unique("hvstore").replace('-', "_");
    let admin = superuser("PG_PRIMARY_PORT", "postgres").await;
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.expect("create a scratch database");
    let dsn = format!(
        "postgresql://{}:{}@{}:{}/{db}",
        env("PG_SUPERUSER"),
        env("PG_SUPERPASSWORD"),
        env("PG_HOST"),
        env("PG_PRIMARY_PORT")
    );
    (db, dsn)
}

pub async fn drop_database(db: &str) {
    let admin = superuser("PG_PRIMARY_PORT", "postgres").await;
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

/// Runs `e2e/testenv/testenv <args>` against the testenv named by `HV_TESTENV_DIR`.
pub fn testenv(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/testenv/testenv");
    let status = std::process::Command::new(&script)
        .args(args)
        .env("HV_TESTENV_DIR", env("HV_TESTENV_DIR"))
        .status()
        .expect("run the testenv script");
    assert!(status.success(), "testenv {args:?} failed: {status}");
}

/// Both testenv nodes reached as `host`, standby first: the reader pool (`any`) lands on the
/// standby while the writer pool (`read-write`) skips it.
pub fn standby_first_args(host: &str) -> StoreArgs {
    StoreArgs {
        pg_hosts: vec![
            format!("{host}:{}", env("PG_STANDBY_PORT")),
            format!("{host}:{}", env("PG_PRIMARY_PORT")),
        ],
        pg_user: env("PG_SUPERUSER"),
        pg_password: Some(env("PG_SUPERPASSWORD")),
        pg_dbname: env("PG_DATABASE"),
        database_url: None,
        ..args_for("")
    }
}

/// A migrated store whose reader pool is on the standby ([`standby_first_args`]).
pub async fn standby_reader_store() -> Store {
    let args = standby_first_args(&env("PG_HOST"));
    let store =
        Store::connect(&args, local_keys(), DekCache::new(Duration::from_secs(60), 100)).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.reader_node().await.unwrap().in_recovery, "the reader pool must be on the standby");
    store
}
