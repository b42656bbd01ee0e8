//! On-demand scale benchmark against the real testenv (issue 6): 1,000 VaultSecrets at once.
//! Reports time until all are Ready, the controller's apiserver writes, its peak RSS, and the
//! rotation rate when all 1,000 fall due together.
//!
//! Run: `e2e/testenv/testenv up && cargo test -p hyperion-vault-controller --test scale -- --ignored --nocapture`
//! (`HV_SCALE_COUNT` overrides 1000.)

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use hyperion_vault_crds::v1alpha1::VaultSecret;
use kube::Api;
use kube::api::ListParams;

/// Sums `apiserver_request_total` by (verb, resource, subresource) for our group and events.
async fn write_counts(env: &Env) -> BTreeMap<String, f64> {
    let out = kubectl(env, &["get", "--raw", "/metrics"], None).await;
    let mut counts = BTreeMap::new();
    for line in out.stdout.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |k: &str| {
            line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_owned()
        };
        let (verb, resource, sub, group) =
            (label("verb"), label("resource"), label("subresource"), label("group"));
        let relevant = (group == "vault.hyperiondb.io" || resource == "events")
            && verb != "GET"
            && verb != "LIST"
            && verb != "WATCH";
        if !relevant {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *counts
            .entry(format!("{verb} {resource}{}{sub}", if sub.is_empty() { "" } else { "/" }))
            .or_insert(0.0) += value;
    }
    counts
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command (benchmark, on demand)"]
async fn scale_1000_vaultsecrets() {
    let env = Env::load();
    let client = client(&env).await;
    let count: usize = std::env::var("HV_SCALE_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // Long enough that one round of 1,000 rotations finishes well inside one interval.
    let interval_secs = 90;
    let ns = setup(&env, &client, "scale").await;
    let mut controller = Controller::spawn_opts(&env, &ns, "bench", env.get("KUBECONFIG"), 8, 16);
    controller.metrics_addr().await;
    let pid = controller.pid().unwrap();
    let mut manifest = String::new();
    for i in 0..count {
        manifest.push_str(&format!(
            "---\napiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {{name: s{i:04}}}\n\
             spec: {{kind: Automatic, rotationInterval: {interval_secs}s}}\n"
        ));
    }
    let before = write_counts(&env).await;
    let started = Instant::now();
    let out = kubectl(&env, &["-n", &ns, "create", "-f", "-"], Some(&manifest)).await;
    assert!(out.ok, "{}", out.stderr);
    let created_in = started.elapsed();
    let api: Api<VaultSecret> = Api::namespaced(client.clone(), &ns);
    let ready_count = || async {
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|vs| ready(vs).0 == "True")
            .count()
    };
    eventually("all Ready", Duration::from_secs(300), || async {
        (ready_count().await == count).then_some(())
    })
    .await;
    let all_ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = diff(&write_counts(&env).await, &before);
    let controller_writes: f64 =
        writes.iter().filter(|(k, _)| !k.starts_with("POST vaultsecrets")).map(|(_, v)| v).sum();

    // Make all 1,000 due at once: stop the controller until every slot has passed, then start
    // it again; it finds them all due on its first pass.
    let rss_first = peak_rss_mib(pid);
    controller.kill().await;
    let store = store(&env).await;
    let mut last_due = jiff::Timestamp::UNIX_EPOCH;
    for i in 0..count {
        let m = store.metadata(&vault_name(&ns, &format!("s{i:04}"))).await.unwrap().unwrap();
        last_due = last_due.max(m.next_rotation_at.unwrap());
    }
    let wait = last_due.duration_since(jiff::Timestamp::now()).as_secs_f64().max(0.0) + 1.0;
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let restarted = Instant::now();
    let second = Controller::spawn_opts(&env, &ns, "bench-2", env.get("KUBECONFIG"), 8, 16);
    let pid2 = second.pid().unwrap();
    eventually("all rotated", Duration::from_secs(300), || async {
        let items = api.list(&ListParams::default()).await.unwrap().items;
        (items.iter().filter(|vs| ready(vs).2 >= Some(2)).count() == count).then_some(())
    })
    .await;
    let rotate_all = restarted.elapsed().as_secs_f64();
    let mut versions = 0;
    let (mut first, mut last) = (jiff::Timestamp::MAX, jiff::Timestamp::MIN);
    for i in 0..count {
        let name = vault_name(&ns, &format!("s{i:04}"));
        versions += store.metadata(&name).await.unwrap().unwrap().current_version;
        let h = store.history(&name).await.unwrap().unwrap();
        let v2 = h.iter().find(|v| v.version == 2).unwrap().created_at;
        first = first.min(v2);
        last = last.max(v2);
    }
    let window = last.duration_since(first).as_secs_f64();
    assert_eq!(versions as usize, 2 * count, "each rotated exactly once");
    println!("--- scale benchmark: {count} VaultSecrets ---");
    println!("kubectl create of all objects: {:.1}s", created_in.as_secs_f64());
    println!("all Ready after: {:.1}s (from the start of the create)", all_ready.as_secs_f64());
    println!(
        "apiserver writes by the controller: {controller_writes} ({:.2} per VaultSecret): {writes:?}",
        controller_writes / count as f64
    );
    println!(
        "controller peak RSS: {rss_first:.1} MiB (creating {count}); {:.1} MiB (restart + {count} rotations)",
        peak_rss_mib(pid2)
    );
    println!(
        "{count} due at once: all rotated {rotate_all:.1}s after the controller started ({:.0} rotations/s, start-up included)",
        count as f64 / rotate_all.max(0.001)
    );
    println!(
        "rotation window (first to last new version): {window:.1}s = {:.0} rotations/s",
        count as f64 / window.max(0.001)
    );
    teardown(&env, &client, &ns).await;
    drop(second);
}
