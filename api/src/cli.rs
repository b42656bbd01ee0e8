//! The command line: `serve` (the default), `mint-token`, `openapi`. One typed config; `run` wires
//! everything.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hyperion_vault_core::token::Token;
use hyperion_vault_store::Store;
use hyperion_vault_store::config::{KmsArgs, StoreArgs};

use crate::config::ApiArgs;
use crate::store_backend::{CountingKeys, StoreBackend};

#[derive(Parser)]
#[command(name = "hyperion-vault-api", version, about = "hyperion-vault REST API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kms: KmsArgs,
    /// Log format: `text` or `json`.
    #[arg(long, env = "VAULT_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    /// Apply the embedded database migrations before serving (normally the controller does).
    #[arg(long, env = "VAULT_API_MIGRATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the OpenAPI document generated from the code.
    Openapi,
    /// Store a new token for a role and print the raw token once (to stdout).
    MintToken {
        /// Token name (a-z 0-9 . _ -).
        #[arg(long)]
        name: String,
        /// Role the token acts as.
        #[arg(long)]
        role: String,
        /// Expire the token after this many seconds.
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        // Before anything builds TLS (DEPENDENCIES.md §4.1). An error means a provider is already
        // installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(Command::Openapi) = self.command {
            print!("{}", crate::openapi::document_json());
            return Ok(());
        }
        init_tracing(&self.log_format)?;
        // Requests are served on their own threads (`crate::shards`); this runtime only starts
        // things, runs the audit flusher and waits for the shutdown signal.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        runtime.block_on(self.run_async())
    }

    async fn run_async(self) -> anyhow::Result<()> {
        let row_ttl = self.api.row_cache_ttl()?;
        let (backend, store) = connect(&self.store, &self.kms, row_ttl).await?;
        if self.migrate {
            let report = store.migrate().await.context("failed to apply database migrations")?;
            tracing::info!(?report, "Migrations applied");
        }
        match self.command {
            Some(Command::MintToken { name, role, expires_in_secs }) => {
                mint_token(&backend, &name, &role, expires_in_secs).await
            }
            Some(Command::Serve) | None => {
                let config = self.api.validate()?;
                crate::server::run(config, backend).await
            }
            Some(Command::Openapi) => Ok(()),
        }
    }
}

async fn connect(
    store: &StoreArgs,
    kms: &KmsArgs,
    row_cache_ttl: std::time::Duration,
) -> anyhow::Result<(Arc<dyn crate::backend::Backend>, Store)> {
    let keys = kms.build().await.context("invalid key service configuration")?;
    let keys = CountingKeys::new(keys);
    let db = Store::connect(store, keys.clone(), kms.dek_cache())
        .await
        .context("invalid database configuration")?;
    Ok((Arc::new(StoreBackend::new(db.clone(), keys).with_row_cache(row_cache_ttl)), db))
}

async fn mint_token(
    backend: &Arc<dyn crate::backend::Backend>,
    name: &str,
    role: &str,
    expires_in_secs: Option<u64>,
) -> anyhow::Result<()> {
    let name = crate::model::parse_ident("name", name).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let role = crate::model::parse_ident("role", role).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let expires_at = match expires_in_secs {
        None => None,
        Some(s) => {
            let d =
                jiff::SignedDuration::from_secs(i64::try_from(s).context("--expires-in-secs is too large")?);
            Some(jiff::Timestamp::now().checked_add(d).context("--expires-in-secs is too large")?)
        }
    };
    let token = Token::generate().context("failed to generate a token")?;
    let info = backend
        .create_token(&name, &role, token.fingerprint(), expires_at)
        .await
        .map_err(|e| anyhow::anyhow!("failed to store the token: {e}"))?;
    eprintln!(
        "Created token {} for role {}{}. It is shown once:",
        info.name,
        info.role,
        info.expires_at.map(|t| format!(" (expires {t})")).unwrap_or_default()
    );
    println!("{}", token.expose());
    Ok(())
}

fn init_tracing(format: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        "json" => builder.json().try_init(),
        "text" => builder.try_init(),
        other => anyhow::bail!("invalid VAULT_LOG_FORMAT: {other:?}; expected text or json"),
    }
    .map_err(|e| anyhow::anyhow!("failed to install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mint_token_parses() {
        let cli = Cli::try_parse_from([
            "hv",
            "mint-token",
            "--name",
            "ci",
            "--role",
            "admin",
            "--expires-in-secs",
            "60",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::MintToken { expires_in_secs: Some(60), .. })));
    }
}
