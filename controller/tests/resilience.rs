//! Restarts, two replicas and deletion while down, against the real testenv.
//!
//! Run: `e2e/testenv/testenv up && cargo test -p hyperion-vault-controller --test resilience -- --ignored`

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn a_restart_rotates_nothing_that_is_not_due() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "restart").await;
    let mut controller = Controller::spawn(&env, &ns, "c1");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: slow}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n---\n\
                    apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: missed}\n\
                    spec: {kind: Automatic, rotationInterval: 3s}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "slow", "True", "Sealed").await;
    wait_ready(&client, &ns, "missed", "True", "Sealed").await;
    let store = store(&env).await;
    let missed = vault_name(&ns, "missed");
    controller.kill().await;
    let before = store.metadata(&missed).await.unwrap().unwrap().current_version;
    // Down for more than two periods of `missed`.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(store.metadata(&missed).await.unwrap().unwrap().current_version, before);
    let mut again = Controller::spawn(&env, &ns, "c2");
    wait_version(&client, &ns, "missed", i64::from(before) + 1, Duration::from_secs(15)).await;
    // Missed periods rotate once, then the schedule continues from the next future slot.
    let after = store.metadata(&missed).await.unwrap().unwrap();
    assert_eq!(after.current_version, before + 1, "missed periods rotate once");
    assert!(after.next_rotation_at.unwrap() > jiff::Timestamp::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.metadata(&vault_name(&ns, "slow")).await.unwrap().unwrap().current_version, 1);
    teardown(&env, &client, &ns).await;
    again.kill().await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn two_controllers_never_double_rotate_and_fail_over() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "lease").await;
    let mut a = Controller::spawn(&env, &ns, "replica-a");
    let mut b = Controller::spawn(&env, &ns, "replica-b");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: contended}\n\
                    spec: {kind: Automatic, rotationInterval: 2s}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "contended", "True", "Sealed").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder =
        leases.get("hyperion-vault-controller").await.unwrap().spec.unwrap().holder_identity.unwrap();
    assert!(holder == "replica-a" || holder == "replica-b");
    wait_version(&client, &ns, "contended", 3, Duration::from_secs(15)).await;
    // Only the holder reconciles.
    let (leader, standby) = if holder == "replica-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(leader.logs().contains("Rotated secret"));
    assert!(!standby.logs().contains("Rotated secret"), "the standby rotated");
    // Crash the leader: the standby takes over within the lease duration (4s) and rotates on.
    leader.kill().await;
    let killed_at = std::time::Instant::now();
    eventually("standby takes the lease", Duration::from_secs(10), || async {
        let h = leases.get("hyperion-vault-controller").await.ok()?.spec?.holder_identity?;
        (h == standby.identity).then_some(())
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(8), "took over after {:?}", killed_at.elapsed());
    let store = store(&env).await;
    let name = vault_name(&ns, "contended");
    let v = store.metadata(&name).await.unwrap().unwrap().current_version;
    wait_version(&client, &ns, "contended", i64::from(v) + 2, Duration::from_secs(15)).await;
    // No slot was rotated twice, across the failover too.
    assert_one_rotation_per_slot(&store, &name, Duration::from_secs(2)).await;
    teardown(&env, &client, &ns).await;
    standby.kill().await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn deleting_while_the_controller_is_down_does_not_wedge() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "down").await;
    let mut controller = Controller::spawn(&env, &ns, "c1");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: orphan}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "orphan", "True", "Sealed").await;
    controller.kill().await;
    let out = kubectl(&env, &["-n", &ns, "delete", "vsec", "orphan", "--wait=false"], None).await;
    assert!(out.ok, "{}", out.stderr);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = get_vs(&client, &ns, "orphan").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some(), "held by the finalizer while down");
    let store = store(&env).await;
    assert!(store.metadata(&vault_name(&ns, "orphan")).await.unwrap().is_some());
    let _back = Controller::spawn(&env, &ns, "c2");
    eventually("the finalizer is released", Duration::from_secs(30), || async {
        get_vs(&client, &ns, "orphan").await.is_none().then_some(())
    })
    .await;
    assert!(store.metadata(&vault_name(&ns, "orphan")).await.unwrap().is_none());
}
