//! Operational properties against the real testenv: API-owned secrets rotate, apiserver writes
//! per VaultSecret, metrics and probes, and the shipped RBAC is sufficient.
//!
//! Run: `e2e/testenv/testenv up && cargo test -p hyperion-vault-controller --test operations -- --ignored`

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use hyperion_vault_core::name::SecretName;
use hyperion_vault_crds::v1alpha1::VaultSecret;
use hyperion_vault_store::model::{NewSecret, Owner, SecretKind};
use jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher::{self, Event};

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn api_owned_automatic_secrets_are_rotated_and_expired_by_the_leader() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "apiowned").await;
    let store = store(&env).await;
    let name = SecretName::parse(&format!("api-test/{ns}")).unwrap();
    let new = NewSecret {
        name: name.clone(),
        kind: SecretKind::Automatic,
        owner: Owner::Api,
        description: None,
        rotation_interval: Some(Duration::from_secs(2)),
        grace_period: Duration::from_secs(1),
        generator: None,
    };
    let meta = store.create_secret(new, None, Timestamp::now()).await.unwrap();
    assert_eq!(meta.current_version, 1);
    let _controller = Controller::spawn(&env, &ns, "c1");
    eventually("the API secret rotates", Duration::from_secs(20), || async {
        let m = store.metadata(&name).await.unwrap()?;
        (m.current_version >= 3).then_some(())
    })
    .await;
    // Superseded versions lose their crypto material after the 1s grace (sweep every 2s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = store.history(&name).await.unwrap().unwrap();
    let now = Timestamp::now();
    for v in &h {
        if let Some(e) = v.expires_at
            && now.duration_since(e).as_secs_f64() > 2.5
        {
            assert!(v.shredded_at.is_some(), "expired version kept its key material: {v:?}");
        }
    }
    store.delete(&name, &Owner::Api, Timestamp::now()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn at_most_three_apiserver_writes_to_reach_ready() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "writes").await;
    let _controller = Controller::spawn(&env, &ns, "c1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<VaultSecret> = Api::namespaced(client.clone(), &ns);
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    // Start watching before the create, so no write is folded into the initial list.
    while !matches!(stream.next().await, Some(Ok(Event::InitDone))) {}
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: counted}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    // Every distinct resourceVersion seen is one write; the first is our own create.
    let mut versions = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Ok(Event::Apply(vs) | Event::InitApply(vs)) = ev {
            let rv = vs.metadata.resource_version.clone().unwrap();
            if !versions.contains(&rv) {
                versions.push(rv);
            }
        }
    }
    let vs = get_vs(&client, &ns, "counted").await.unwrap();
    assert_eq!(ready(&vs).0, "True");
    let object_writes = versions.len() - 1;
    let events = kubectl(&env, &["-n", &ns, "get", "events", "-o", "name"], None).await;
    let event_writes = events.stdout.lines().count();
    println!("controller writes to reach Ready: {object_writes} on the object + {event_writes} event(s)");
    assert_eq!(object_writes, 2, "finalizer + status, and no rewrite of an unchanged status");
    assert!(object_writes + event_writes <= 3);
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn metrics_and_probes_are_served() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "metrics").await;
    let controller = Controller::spawn(&env, &ns, "c1");
    let manifest = "apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: measured}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "measured", "True", "Sealed").await;
    let addr = controller.metrics_addr().await;
    assert_eq!(http_get(&addr, "/healthz").await.0, "HTTP/1.0 200 OK");
    assert_eq!(http_get(&addr, "/readyz").await.0, "HTTP/1.0 200 OK");
    let (status, body) = http_get(&addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.0 200 OK");
    for needle in [
        "hyperion_vault_controller_reconciles_total",
        "hyperion_vault_controller_rotations_total{trigger=\"initial\"} 1",
        "hyperion_vault_controller_reconcile_duration_seconds_bucket",
        "hyperion_vault_controller_secrets{reason=\"Sealed\"} 1",
        "hyperion_vault_controller_leader 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    teardown(&env, &client, &ns).await;
}

#[tokio::test]
#[ignore = "needs the testenv: run through the README test command"]
async fn the_shipped_rbac_is_sufficient() {
    let env = Env::load();
    let client = client(&env).await;
    let ns = setup(&env, &client, "rbac").await;
    let rbac = repo_root().join("controller/rbac.yaml");
    let out = kubectl(&env, &["apply", "-f", rbac.to_str().unwrap()], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(kubectl(&env, &["-n", &ns, "create", "serviceaccount", "controller"], None).await.ok);
    let binding = format!("hv-controller-{ns}");
    let sa = format!("{ns}:controller");
    let out = kubectl(
        &env,
        &[
            "create",
            "clusterrolebinding",
            &binding,
            "--clusterrole=hyperion-vault-controller",
            &format!("--serviceaccount={sa}"),
        ],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let token = kubectl(&env, &["-n", &ns, "create", "token", "controller", "--duration=1h"], None).await;
    assert!(token.ok, "{}", token.stderr);
    let kubeconfig = std::env::temp_dir().join(format!("hv-rbac-{ns}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: '{}', certificate-authority: '{}'}}\n\
             users:\n- name: sa\n  user: {{token: '{}'}}\ncontexts:\n- name: sa\n  context: {{cluster: t, user: sa}}\n\
             current-context: sa\n",
            env.get("KUBE_APISERVER_URL"),
            env.get("KUBE_CA_FILE"),
            token.stdout.trim()
        ),
    )
    .unwrap();
    let controller = Controller::spawn_with(&env, &ns, "rbac", kubeconfig.to_str().unwrap());
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata: {name: src}\nstringData: {k: some-value-1}\n---\n\
                    apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: a}\n\
                    spec: {kind: Automatic, rotationInterval: 1h}\n---\n\
                    apiVersion: vault.hyperiondb.io/v1alpha1\nkind: VaultSecret\nmetadata: {name: m}\n\
                    spec: {kind: Manual, valueFrom: {secretKeyRef: {name: src, key: k}}}\n";
    assert!(kubectl(&env, &["-n", &ns, "apply", "-f", "-"], Some(manifest)).await.ok);
    wait_ready(&client, &ns, "a", "True", "Sealed").await;
    wait_ready(&client, &ns, "m", "True", "Sealed").await;
    let out = kubectl(&env, &["-n", &ns, "delete", "vsec", "a", "--timeout=30s"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let events = kubectl(&env, &["-n", &ns, "get", "events", "-o", "name"], None).await;
    assert!(!events.stdout.trim().is_empty(), "events were published");
    let logs = controller.logs();
    assert!(!logs.contains("forbidden") && !logs.contains("Forbidden"), "{logs}");
    teardown(&env, &client, &ns).await;
    assert!(kubectl(&env, &["delete", "clusterrolebinding", &binding], None).await.ok);
}
