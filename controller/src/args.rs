//! The controller's one typed configuration: flags with `VAULT_*` environment fallbacks.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hyperion_vault_core::duration::parse_go_duration;
use hyperion_vault_store::config::{KmsArgs, StoreArgs};

#[derive(Debug, Parser)]
#[command(
    name = "hyperion-vault-controller",
    version,
    about = "Reconciles VaultSecrets into sealed, rotating secrets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the VaultSecret CustomResourceDefinition as YAML and exit.
    Crd,
    /// Run the controller (the default).
    Run,
}

/// Everything `run` needs.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kms: KmsArgs,

    /// Watch VaultSecrets (and Secrets) in this namespace only; all namespaces when unset.
    #[arg(long, env = "VAULT_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Shortest rotationInterval accepted; shorter specs get Ready=False, InvalidSpec.
    #[arg(long, env = "VAULT_MIN_ROTATION_INTERVAL", default_value = "60s", value_parser = go_duration)]
    pub min_rotation_interval: Duration,

    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "VAULT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "VAULT_LEASE_NAME", default_value = "hyperion-vault-controller")]
    pub lease_name: String,

    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease; defaults to POD_NAME, else hostname and pid.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long the Lease stays valid without renewal.
    #[arg(long, env = "VAULT_LEASE_DURATION", default_value = "15s", value_parser = go_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews (and candidates retry).
    #[arg(long, env = "VAULT_LEASE_RENEW_INTERVAL", default_value = "5s", value_parser = go_duration)]
    pub lease_renew_interval: Duration,

    /// How often API-owned secrets are checked for due rotations and expired grace versions.
    #[arg(long, env = "VAULT_API_SWEEP_INTERVAL", default_value = "5s", value_parser = go_duration)]
    pub api_sweep_interval: Duration,

    /// VaultSecrets reconciled concurrently.
    #[arg(long, env = "VAULT_RECONCILE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Log format: text or json.
    #[arg(long, env = "VAULT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn go_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_subcommand() {
        let cli = Cli::try_parse_from(["hvc", "--min-rotation-interval", "1s", "crd"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Crd)));
        assert_eq!(cli.run.min_rotation_interval, Duration::from_secs(1));
        assert_eq!(cli.run.lease_duration, Duration::from_secs(15));
        assert_eq!(cli.run.metrics_addr.port(), 8080);
        assert!(Cli::try_parse_from(["hvc", "--lease-duration", "15"]).is_err());
    }
}
