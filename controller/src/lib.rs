//! The hyperion-vault controller: reconciles `VaultSecret` resources into sealed, rotating
//! secrets in PostgreSQL (DESIGN.md §3, §4, §8).
//!
//! [`args::Args::run`] wires everything: the rustls provider, the store and its migrations, the
//! metrics port, leader election, and — while leading — the kube-runtime `Controller` over
//! VaultSecrets (plus the Secrets their `valueFrom` names) and the sweep of API-owned secrets.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use hyperion_vault_crds::v1alpha1::VaultSecret;
use hyperion_vault_store::Store;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

pub mod api_secrets;
pub mod args;
pub mod context;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod status;
mod steps;

use crate::context::Context;
use crate::lease::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

impl args::Args {
    /// Runs until SIGTERM/SIGINT (exit 0) or until the leader lease is lost (an error: exiting
    /// is how a replica stops acting; its pod restarts as a candidate).
    pub async fn run(self) -> anyhow::Result<()> {
        install_crypto_provider();
        let client = Client::try_default().await.context("failed to build the Kubernetes client")?;
        self.run_with(client, shutdown_signal()).await
    }

    /// [`Self::run`] with an explicit client and shutdown trigger (tests).
    pub async fn run_with(self, client: Client, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        install_crypto_provider();
        let keys = self.kms.build().await.context("failed to configure key wrapping")?;
        let store = Store::connect(&self.store, keys, self.kms.dek_cache())
            .await
            .context("failed to configure the database")?;
        migrate(&store).await;

        let metrics = Arc::new(Metrics::default());
        let server = tokio::spawn(metrics::serve(self.metrics_addr, Arc::clone(&metrics), store.clone()));

        let identity = self.identity.clone().unwrap_or_else(lease::default_identity);
        let mut elector = LeaderElector::new(
            client.clone(),
            LeaseConfig {
                name: self.lease_name.clone(),
                namespace: self.lease_namespace.clone(),
                identity: identity.clone(),
                duration: self.lease_duration,
                renew_every: self.lease_renew_interval,
            },
        );
        let ctx = Context::new(
            client.clone(),
            store,
            Arc::clone(&metrics),
            self.min_rotation_interval,
            Some(identity.clone()),
        );
        tokio::pin!(shutdown);

        info!(%identity, lease = %self.lease_name, "Waiting for the leader lease");
        tokio::select! {
            () = elector.acquire() => {}
            () = &mut shutdown => { server.abort(); return Ok(()); }
        }
        info!(%identity, "Acquired the leader lease; reconciling");
        metrics.set_leader(true);
        let outcome = tokio::select! {
            () = run_controller(client, Arc::clone(&ctx), self.namespace.as_deref(), self.concurrency) => Err(anyhow::anyhow!("the controller stopped unexpectedly")),
            () = api_secrets::run(Arc::clone(&ctx), self.api_sweep_interval) => Err(anyhow::anyhow!("the API secret sweep stopped unexpectedly")),
            () = elector.hold() => Err(anyhow::anyhow!("lost the leader lease")),
            () = &mut shutdown => Ok(()),
        };
        metrics.set_leader(false);
        if outcome.is_ok() {
            info!("Shutting down; releasing the leader lease");
            if let Err(e) = elector.release().await {
                warn!(error = %reconcile::error_chain(&e), "Could not release the leader lease");
            }
        }
        server.abort();
        outcome
    }
}

/// The Controller over VaultSecrets, also triggered by changes of Secrets that a VaultSecret's
/// `valueFrom` names (found through the Controller's own VaultSecret cache).
pub async fn run_controller(client: Client, ctx: Arc<Context>, namespace: Option<&str>, concurrency: u16) {
    let (vaultsecrets, secrets): (Api<VaultSecret>, Api<Secret>) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller = Controller::new(vaultsecrets, watcher::Config::default().any_semantic())
        .with_config(Config::default().concurrency(concurrency));
    let cache = controller.store();
    controller
        .watches(secrets, watcher::Config::default().any_semantic(), move |secret: Secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            cache
                .state()
                .into_iter()
                .filter(|vs| {
                    vs.namespace() == namespace
                        && vs.spec.value_from.as_ref().is_some_and(|v| v.secret_key_ref.name == name)
                })
                .map(|vs| ObjectRef::from_obj(&*vs))
                .collect::<Vec<_>>()
        })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// Applies the migrations, retrying with backoff while the database is unreachable.
async fn migrate(store: &Store) {
    let mut delay = Duration::from_millis(500);
    loop {
        match store.migrate().await {
            Ok(report) => {
                info!(
                    applied = report.applied.len(),
                    already_applied = report.already_applied,
                    "Database schema is current"
                );
                return;
            }
            Err(e) => {
                warn!(error = %reconcile::error_chain(&e), retry_in = ?delay, "Could not apply migrations");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Makes ring the process's rustls provider before anything builds a TLS config. Installing twice
/// is harmless (the second call reports the first provider).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
