//! TLS to PostgreSQL, live: both testenv nodes serve a certificate from the testenv CA, valid for
//! IP 127.0.0.1 only (`e2e/testenv/testenv`, `pg_server_cert`). `verify-full` must reach both
//! nodes encrypted and refuse a server its CA did not sign or a name the certificate does not
//! carry; `require` encrypts without authenticating the server (libpq semantics).

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_store::config::{SslMode, StoreArgs};
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::model::Owner;
use hyperion_vault_store::{Store, StoreError};
use jiff::Timestamp;

/// The tests here run one at a time: they count TLS sessions, and nothing else in the test suite
/// opens one.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Standby first ([`standby_first_args`]): one store exercises both nodes.
fn tls_args(host: &str, mode: SslMode, ca_var: &str) -> StoreArgs {
    StoreArgs {
        pg_sslmode: mode,
        pg_sslrootcert: Some(PathBuf::from(env(ca_var))),
        ..standby_first_args(host)
    }
}

async fn connect(args: &StoreArgs) -> Store {
    Store::connect(args, local_keys(), DekCache::new(Duration::from_secs(60), 100)).await.unwrap()
}

/// The error and its whole source chain, as one string.
fn chain(e: &StoreError) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// How many of this node's sessions of `application_name = 'hyperion-vault'` use TLS 1.3.
async fn tls_sessions(port_var: &str) -> i64 {
    superuser(port_var, &env("PG_DATABASE"))
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND s.version = 'TLSv1.3' AND a.application_name = 'hyperion-vault'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn verify_full_reaches_both_nodes_encrypted() {
    let _serial = SERIAL.lock().await;
    let store = connect(&tls_args("127.0.0.1", SslMode::VerifyFull, "PG_TLS_CA_FILE")).await;
    store.migrate().await.unwrap();
    assert!(store.reader_node().await.unwrap().in_recovery, "the reader pool must be on the standby");
    let n = format!("store-test/{}", unique("tls"));
    let now = Timestamp::now();
    store.create_secret(manual_spec(&n), Some(SecretBytes::copy_from(b"over tls")), now).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let value = loop {
        // Read from the standby: the new row arrives after the replication lag.
        if let Some(v) = store.read_current(&name(&n)).await.unwrap() {
            break v;
        }
        assert!(Instant::now() < deadline, "the standby never served the new secret");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(value.value().expose(), b"over tls");
    // The test's own superuser connections are plain TCP (PGSSLMODE=disable, NoTls), so every TLS
    // session counted is one of this store's.
    assert!(tls_sessions("PG_PRIMARY_PORT").await >= 1, "no TLS session on the primary");
    assert!(tls_sessions("PG_STANDBY_PORT").await >= 1, "no TLS session on the standby");
    store.delete(&name(&n), &Owner::Api, Timestamp::now()).await.unwrap();
}

/// `verify-full` to `host` trusting the CA in `ca_var` fails as unavailable, with `reason`.
async fn assert_verify_full_refuses(host: &str, ca_var: &str, reason: &str) {
    let _serial = SERIAL.lock().await;
    let store = connect(&tls_args(host, SslMode::VerifyFull, ca_var)).await;
    let e = store.ping().await.unwrap_err();
    assert!(matches!(e, StoreError::DatabaseUnavailable { .. }), "{}", chain(&e));
    assert!(chain(&e).contains(reason), "{}", chain(&e));
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn verify_full_refuses_a_server_its_ca_did_not_sign() {
    assert_verify_full_refuses("127.0.0.1", "PG_TLS_OTHER_CA_FILE", "UnknownIssuer").await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn verify_full_refuses_a_name_the_certificate_does_not_carry() {
    assert_verify_full_refuses("localhost", "PG_TLS_CA_FILE", "certificate not valid for name \"localhost\"")
        .await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn require_encrypts_without_authenticating_the_server() {
    let _serial = SERIAL.lock().await;
    // Sessions of earlier tests close when their runtime ends; wait for them to go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls_sessions("PG_PRIMARY_PORT").await > 0 {
        assert!(Instant::now() < deadline, "TLS sessions of earlier tests did not close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wrong CA and a name the certificate does not carry: `require` still connects, encrypted.
    let store = connect(&tls_args("localhost", SslMode::Require, "PG_TLS_OTHER_CA_FILE")).await;
    store.ping().await.unwrap();
    assert!(tls_sessions("PG_PRIMARY_PORT").await >= 1, "the require session is not TLS");
}
