//! Harness for the integration tests against the real test environment (`e2e/testenv`).
//!
//! Everything comes from the testenv's env file: the kube client is built from its
//! `KUBECONFIG` only (never the developer's default context), kubectl gets that `KUBECONFIG`
//! explicitly, and the controller runs as a child process of the built binary, watching only the
//! test's own namespace and electing its leader on a Lease in that namespace.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use hyperion_vault_core::name::SecretName;
use hyperion_vault_crds::v1alpha1::VaultSecret;
use hyperion_vault_store::Store;
use hyperion_vault_store::config::StoreArgs;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::kms::{AwsKms, RetryPolicy, ring_http_client};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Reads `${HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}/env`; fails the test if it is missing.
    pub fn load() -> Self {
        let dir = std::env::var("HV_TESTENV_DIR").unwrap_or_else(|_| "/tmp/hyperion-vault-testenv".into());
        let path = Path::new(&dir).join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("the testenv is not up ({}: {e}); run `e2e/testenv/testenv up` first", path.display())
        });
        let mut vars = HashMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("export ") else { continue };
            let Some((k, v)) = rest.split_once('=') else { continue };
            vars.insert(k.to_owned(), v.trim_matches('\'').to_owned());
        }
        let env = Self { vars };
        for k in ["KUBECONFIG", "KUBECTL", "TESTENV_PG_DSN_RW", "VAULT_KMS_ENDPOINT", "VAULT_KMS_KEY_ID"] {
            assert!(!env.get(k).is_empty(), "testenv env file lacks {k}");
        }
        env
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or("")
    }
}

pub async fn client(env: &Env) -> Client {
    hyperion_vault_controller::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(env.get("KUBECONFIG")).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

pub struct Kubectl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the testenv's kubectl with the testenv's kubeconfig.
pub async fn kubectl(env: &Env, args: &[&str], stdin: Option<&str>) -> Kubectl {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env.get("KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env.get("KUBECONFIG"))
        .env_remove("KUBECTL_CONTEXT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Kubectl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Installs (server-side applies) the committed CRD and a fresh namespace for the test.
pub async fn setup(env: &Env, client: &Client, prefix: &str) -> String {
    let crd = repo_root().join("crds/vaultsecret.yaml");
    let out =
        kubectl(env, &["apply", "--server-side", "--force-conflicts", "-f", crd.to_str().unwrap()], None)
            .await;
    assert!(out.ok, "CRD apply failed: {}", out.stderr);
    let out = kubectl(
        env,
        &["wait", "--for=condition=Established", "crd/vaultsecrets.vault.hyperiondb.io", "--timeout=30s"],
        None,
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let ns = format!("hv-{prefix}-{:x}{:x}", std::process::id() % 0xfff, nanos % 0xfffff);
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() },
        ..Default::default()
    };
    api.create(&PostParams::default(), &obj).await.unwrap();
    ns
}

/// A controller child process.
pub struct Controller {
    child: tokio::process::Child,
    pub log: PathBuf,
    pub identity: String,
}

impl Controller {
    pub fn spawn(env: &Env, namespace: &str, identity: &str) -> Self {
        Self::spawn_with(env, namespace, identity, env.get("KUBECONFIG"))
    }

    /// With another kubeconfig (e.g. a ServiceAccount token bound to `controller/rbac.yaml`).
    pub fn spawn_with(env: &Env, namespace: &str, identity: &str, kubeconfig: &str) -> Self {
        Self::spawn_opts(env, namespace, identity, kubeconfig, 4, 8)
    }

    /// With explicit database pool size and reconcile concurrency (the benchmark).
    pub fn spawn_opts(
        env: &Env,
        namespace: &str,
        identity: &str,
        kubeconfig: &str,
        pool: u32,
        concurrency: u32,
    ) -> Self {
        let (pool, concurrency) = (pool.to_string(), concurrency.to_string());
        let log = std::env::temp_dir().join(format!("hv-controller-{namespace}-{identity}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hyperion-vault-controller"))
            .args([
                "--namespace",
                namespace,
                "--lease-namespace",
                namespace,
                "--identity",
                identity,
                "--min-rotation-interval",
                "1s",
                "--metrics-addr",
                "127.0.0.1:0",
                "--lease-duration",
                "4s",
                "--lease-renew-interval",
                "1s",
                "--api-sweep-interval",
                "2s",
                "--database-url",
                env.get("TESTENV_PG_DSN_RW"),
                "--pg-pool-size",
                &pool,
                "--concurrency",
                &concurrency,
                "--kms-mode",
                "aws",
                "--kms-key-id",
                env.get("VAULT_KMS_KEY_ID"),
                "--kms-endpoint",
                env.get("VAULT_KMS_ENDPOINT"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("AWS_ACCESS_KEY_ID", env.get("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", env.get("AWS_SECRET_ACCESS_KEY"))
            .env("AWS_REGION", env.get("AWS_REGION"))
            .env("RUST_LOG", "info,hyperion_vault_controller=debug")
            .env_remove("VAULT_WATCH_NAMESPACE")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, log, identity: identity.to_owned() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: a crash, no lease release.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The metrics port, from the start-up log line.
    pub async fn metrics_addr(&self) -> String {
        eventually("the metrics listener", Duration::from_secs(30), || async {
            let logs = self.logs();
            let line = logs.lines().find(|l| l.contains("Serving metrics"))?;
            let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
            Some(addr.to_owned())
        })
        .await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A store on the testenv database and KMS, for checking what the controller wrote.
pub async fn store(env: &Env) -> Store {
    let conf = aws_sdk_kms::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(env.get("AWS_REGION").to_owned()))
        .credentials_provider(Credentials::new(
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "testenv",
        ))
        .endpoint_url(env.get("VAULT_KMS_ENDPOINT"))
        .http_client(ring_http_client())
        .build();
    let kms = AwsKms::new(
        aws_sdk_kms::Client::from_conf(conf),
        env.get("VAULT_KMS_KEY_ID").to_owned(),
        RetryPolicy::default(),
    );
    let args = StoreArgs::from_url(env.get("TESTENV_PG_DSN_RW"));
    Store::connect(&args, Arc::new(kms), DekCache::disabled()).await.unwrap()
}

pub fn vault_name(ns: &str, name: &str) -> SecretName {
    SecretName::for_resource(ns, name).unwrap()
}

/// Polls `check` every 100ms until it returns `Some`, or fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn get_vs(client: &Client, ns: &str, name: &str) -> Option<VaultSecret> {
    Api::<VaultSecret>::namespaced(client.clone(), ns).get_opt(name).await.unwrap()
}

/// `(ready status, reason, current version)` of a VaultSecret.
pub fn ready(vs: &VaultSecret) -> (String, String, Option<i64>) {
    let status = vs.status.as_ref();
    let c = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    (
        c.map(|c| c.status.clone()).unwrap_or_default(),
        c.map(|c| c.reason.clone()).unwrap_or_default(),
        status.and_then(|s| s.current_version),
    )
}

/// Waits until the VaultSecret reports Ready with `reason`, returning it.
pub async fn wait_ready(client: &Client, ns: &str, name: &str, status: &str, reason: &str) -> VaultSecret {
    eventually(&format!("{ns}/{name} Ready={status} {reason}"), Duration::from_secs(60), || async {
        get_vs(client, ns, name).await.filter(|vs| {
            let (s, r, _) = ready(vs);
            s == status && r == reason
        })
    })
    .await
}

pub async fn wait_version(
    client: &Client,
    ns: &str,
    name: &str,
    at_least: i64,
    timeout: Duration,
) -> VaultSecret {
    eventually(&format!("{ns}/{name} version >= {at_least}"), timeout, || async {
        get_vs(client, ns, name).await.filter(|vs| ready(vs).2.is_some_and(|v| v >= at_least))
    })
    .await
}

/// Asserts that no schedule slot was rotated twice. Slots are `anchor + k·interval`, with the
/// anchor read from the database's `next_rotation_at` (the schedule is anchored, so every slot is
/// congruent to it); a rotation happens at or after its slot and before the next one is due, so
/// distinct rotations fall into distinct slots even when one ran late after a failover.
pub async fn assert_one_rotation_per_slot(store: &Store, name: &SecretName, interval: Duration) {
    let meta = store.metadata(name).await.unwrap().unwrap();
    let history = store.history(name).await.unwrap().unwrap();
    let interval_us = i64::try_from(interval.as_micros()).unwrap();
    let offset = meta.next_rotation_at.unwrap().as_microsecond().rem_euclid(interval_us);
    let mut slots: Vec<i64> = history
        .iter()
        .filter(|v| v.version >= 2)
        .map(|v| (v.created_at.as_microsecond() - offset).div_euclid(interval_us))
        .collect();
    let n = slots.len();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), n, "a slot was rotated twice: {history:?}");
}

/// A plain HTTP/1.0 GET; returns (status line, body).
pub async fn http_get(addr: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    conn.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (head.lines().next().unwrap_or("").to_owned(), body.to_owned())
}

/// Deletes every VaultSecret of the namespace while a controller still runs, so the test leaves
/// no automatic secret behind whose rotation would stay due forever.
pub async fn teardown(env: &Env, client: &Client, ns: &str) {
    let out = kubectl(env, &["-n", ns, "delete", "vsec", "--all", "--wait=false"], None).await;
    assert!(out.ok, "{}", out.stderr);
    let api: Api<VaultSecret> = Api::namespaced(client.clone(), ns);
    eventually("all VaultSecrets deleted", Duration::from_secs(300), || async {
        api.list(&Default::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}
