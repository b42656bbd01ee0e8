//! Transient failures against the real testenv: with the key service down a VaultSecret reports
//! Ready=False, KmsUnavailable and is retried with backoff; once it is back the secret seals.
//!
//! This test stops the testenv's KMS endpoint for a few seconds, so it lives in its own test
//! binary (cargo runs test binaries one at a time).
//!
//! Run: `e2e/testenv/testenv up && cargo test -p hyperion-vault-controller --test outage -- --ignored`

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;

async fn testenv(env: &Env, command: &str) {
    let script = repo_root().join("e2e/testenv/testenv");
    let out = tokio::process::Command::new(script)
        .arg(command)
        .env("HV_TESTENV_DIR", env.get("HV_TESTENV_DIR"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "testenv {command}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Restarts the KMS endpoint even if the test fails half-way.
struct KmsBack<'a>(&'a Env);

impl Drop for KmsBack<'_> {
    fn drop(&mut self) {
        let script = repo_root().join("e2e/testenv/testenv");
        let _ = std::process::Command::new(script)
            .arg("kms-start")
            .env("HV_TESTENV_DIR", self.0.get("HV_TESTENV_DIR"))
            .status();
    }
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn kms_outage_is_reported_and_recovered_from() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "outage").await;
    let controller = Controller::spawn(&env, &ns, "c1");
    controller.metrics_addr().await;
    let guard = KmsBack(&env);
    testenv(&env, "kms-stop").await;
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: waits}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    let vs = wait_ready(&client, &ns, "waits", "False", "KmsUnavailable").await;
    assert_eq!(ready(&vs).2, None);
    testenv(&env, "kms-start").await;
    drop(guard);
    let vs = wait_ready(&client, &ns, "waits", "True", "Sealed").await;
    assert_eq!(ready(&vs).2, Some(1));
    let events = kubectl(&env, &["-n", &ns, "get", "events", "-o", "yaml"], None).await.stdout;
    assert!(events.contains("reason: KmsUnavailable") && events.contains("type: Warning"), "{events}");
    let addr = controller.metrics_addr().await;
    let (_, body) = http_get(&addr, "/metrics").await;
    assert!(body.contains("reconcile_errors_total{category=\"kms_unavailable\"}"), "{body}");
    teardown(&env, &client, &ns).await;
}
