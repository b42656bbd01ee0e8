//! Typed configuration shared by both binaries: `#[command(flatten)]` [`StoreArgs`] and [`KmsArgs`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyperion_vault_core::keyring::LocalKeyring;
use hyperion_vault_core::keywrap::KeyWrapper;
use tokio_postgres::config::{LoadBalanceHosts, TargetSessionAttrs};

use crate::dek_cache::DekCache;
use crate::kms::{AwsKms, RetryPolicy};

/// A configuration value that cannot be used. The message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("{var} is required when {because}")]
    Missing { var: &'static str, because: &'static str },
    #[error("failed to read {var} file {path}")]
    ReadFile {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SslMode {
    /// Plain TCP. Only for loopback or a trusted pod network.
    Disable,
    /// Encrypted, server certificate not verified (like libpq `require`).
    Require,
    /// Encrypted, certificate chain verified against `VAULT_PG_SSLROOTCERT` and host name checked.
    #[value(name = "verify-full")]
    VerifyFull,
}

/// PostgreSQL connection settings. Both pools are built from the same host list.
#[derive(Clone, clap::Args)]
pub struct StoreArgs {
    /// Comma-separated `host` or `host:port` entries; tried in order.
    #[arg(long = "pg-hosts", env = "VAULT_PG_HOSTS", value_delimiter = ',', default_value = "localhost")]
    pub pg_hosts: Vec<String>,
    /// Port for hosts given without one.
    #[arg(long = "pg-port", env = "VAULT_PG_PORT", default_value_t = 5432)]
    pub pg_port: u16,
    #[arg(long = "pg-user", env = "VAULT_PG_USER", default_value = "vault")]
    pub pg_user: String,
    #[arg(long = "pg-password", env = "VAULT_PG_PASSWORD", hide_env_values = true)]
    pub pg_password: Option<String>,
    #[arg(long = "pg-dbname", env = "VAULT_PG_DBNAME", default_value = "vault")]
    pub pg_dbname: String,
    /// Required (verify-full) whenever PostgreSQL is reached across hosts.
    #[arg(long = "pg-sslmode", env = "VAULT_PG_SSLMODE", value_enum, default_value = "disable")]
    pub pg_sslmode: SslMode,
    /// PEM file with the CA certificate(s) for `verify-full`.
    #[arg(long = "pg-sslrootcert", env = "VAULT_PG_SSLROOTCERT")]
    pub pg_sslrootcert: Option<PathBuf>,
    /// Connections per pool (writer and reader each). ~4× the database's cores is a good start.
    #[arg(long = "pg-pool-size", env = "VAULT_PG_POOL_SIZE", default_value_t = 8)]
    pub pg_pool_size: usize,
    /// How many reader connections concurrent reads share (pipelined); at most the pool size.
    /// Default: half the pool size, leaving headroom to replace connections to a failed node.
    #[arg(long = "pg-read-connections", env = "VAULT_PG_READ_CONNECTIONS")]
    pub pg_read_connections: Option<usize>,
    #[arg(long = "pg-connect-timeout-secs", env = "VAULT_PG_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub pg_connect_timeout_secs: u64,
    /// Spread reader connections over all hosts instead of trying them in order.
    #[arg(long = "pg-read-load-balance", env = "VAULT_PG_READ_LOAD_BALANCE", default_value_t = false)]
    pub pg_read_load_balance: bool,
    /// A full (multi-host) connection URL; overrides hosts, port, user, password and dbname.
    /// Its `sslmode` may only be disable|prefer|require: TLS verification follows VAULT_PG_SSLMODE.
    #[arg(long = "database-url", env = "VAULT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreArgs")
            .field("pg_hosts", &self.pg_hosts)
            .field("pg_port", &self.pg_port)
            .field("pg_user", &self.pg_user)
            .field("pg_password", &self.pg_password.as_ref().map(|_| "<redacted>"))
            .field("pg_dbname", &self.pg_dbname)
            .field("pg_sslmode", &self.pg_sslmode)
            .field("pg_sslrootcert", &self.pg_sslrootcert)
            .field("pg_pool_size", &self.pg_pool_size)
            .field("pg_read_connections", &self.pg_read_connections)
            .field("pg_read_load_balance", &self.pg_read_load_balance)
            .field("database_url", &self.database_url.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl StoreArgs {
    /// Settings from a libpq-style URL or key/value DSN (tests and tools); TLS disabled.
    pub fn from_url(url: &str) -> Self {
        Self {
            pg_hosts: vec![],
            pg_port: 5432,
            pg_user: String::new(),
            pg_password: None,
            pg_dbname: String::new(),
            pg_sslmode: SslMode::Disable,
            pg_sslrootcert: None,
            pg_pool_size: 8,
            pg_read_connections: None,
            pg_connect_timeout_secs: 5,
            pg_read_load_balance: false,
            database_url: Some(url.to_owned()),
        }
    }

    /// The base `tokio_postgres::Config` (without session attributes).
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let mut cfg = match &self.database_url {
            Some(url) => url.parse::<tokio_postgres::Config>().map_err(|e| ConfigError::Invalid {
                var: "VAULT_DATABASE_URL",
                // The parser's message quotes no credentials, only the offending option.
                message: e.to_string(),
            })?,
            None => {
                let mut cfg = tokio_postgres::Config::new();
                if self.pg_hosts.iter().all(|h| h.trim().is_empty()) {
                    return Err(ConfigError::Invalid {
                        var: "VAULT_PG_HOSTS",
                        message: "no host given".into(),
                    });
                }
                for entry in self.pg_hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
                    let (host, port) = split_host_port(entry, self.pg_port)?;
                    cfg.host(host).port(port);
                }
                cfg.user(&self.pg_user).dbname(&self.pg_dbname);
                if let Some(pw) = &self.pg_password {
                    cfg.password(pw);
                }
                cfg
            }
        };
        if self.pg_pool_size == 0 {
            return Err(ConfigError::Invalid {
                var: "VAULT_PG_POOL_SIZE",
                message: "must be at least 1".into(),
            });
        }
        cfg.application_name("hyperion-vault")
            .connect_timeout(Duration::from_secs(self.pg_connect_timeout_secs.max(1)))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if self.pg_sslmode != SslMode::Disable {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        Ok(cfg)
    }

    /// The writer pool's config: only a node that accepts writes (follows failover).
    pub fn writer_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let mut cfg = self.pg_config()?;
        cfg.target_session_attrs(TargetSessionAttrs::ReadWrite);
        Ok(cfg)
    }

    /// The reader pool's config: any node.
    pub fn reader_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let mut cfg = self.pg_config()?;
        cfg.target_session_attrs(TargetSessionAttrs::Any);
        if self.pg_read_load_balance {
            cfg.load_balance_hosts(LoadBalanceHosts::Random);
        }
        Ok(cfg)
    }
}

fn split_host_port(entry: &str, default_port: u16) -> Result<(&str, u16), ConfigError> {
    let bad = |m: &str| ConfigError::Invalid { var: "VAULT_PG_HOSTS", message: format!("{entry:?}: {m}") };
    if entry.starts_with('/') {
        return Ok((entry, default_port));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((host, p.parse().map_err(|_| bad("invalid port"))?)),
            None if tail.is_empty() => Ok((host, default_port)),
            None => Err(bad("unexpected text after ']'")),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Ok((entry, default_port)), // bare IPv6
        Some((host, port)) => Ok((host, port.parse().map_err(|_| bad("invalid port"))?)),
        None => Ok((entry, default_port)),
    }
}

/// Which key service wraps the DEKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KmsMode {
    Aws,
    Local,
}

/// Key-wrapping and DEK cache settings.
#[derive(Clone, clap::Args)]
pub struct KmsArgs {
    #[arg(long = "kms-mode", env = "VAULT_KMS_MODE", value_enum, default_value = "local")]
    pub kms_mode: KmsMode,
    /// Key id, ARN or alias of the CMK (aws mode).
    #[arg(long = "kms-key-id", env = "VAULT_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// Endpoint override, e.g. a moto server in tests.
    #[arg(long = "kms-endpoint", env = "VAULT_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// `id1:base64,id2:base64` (local mode); the first is active. Unset: ephemeral key.
    #[arg(long = "local-master-keys", env = "VAULT_LOCAL_MASTER_KEYS", hide_env_values = true)]
    pub local_master_keys: Option<String>,
    #[arg(long = "dek-cache-ttl-secs", env = "VAULT_DEK_CACHE_TTL_SECS", default_value_t = 300)]
    pub dek_cache_ttl_secs: u64,
    #[arg(long = "dek-cache-max-entries", env = "VAULT_DEK_CACHE_MAX_ENTRIES", default_value_t = 10_000)]
    pub dek_cache_max_entries: usize,
    #[arg(long = "kms-max-retries", env = "VAULT_KMS_MAX_RETRIES", default_value_t = 5)]
    pub kms_max_retries: u32,
    /// Upper bound of one KMS attempt, in milliseconds.
    #[arg(long = "kms-attempt-timeout-ms", env = "VAULT_KMS_ATTEMPT_TIMEOUT_MS", default_value_t = 2000)]
    pub kms_attempt_timeout_ms: u64,
}

impl fmt::Debug for KmsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsArgs")
            .field("kms_mode", &self.kms_mode)
            .field("kms_key_id", &self.kms_key_id)
            .field("kms_endpoint", &self.kms_endpoint)
            .field("local_master_keys", &self.local_master_keys.as_ref().map(|_| "<redacted>"))
            .field("dek_cache_ttl_secs", &self.dek_cache_ttl_secs)
            .field("dek_cache_max_entries", &self.dek_cache_max_entries)
            .field("kms_max_retries", &self.kms_max_retries)
            .finish()
    }
}

impl KmsArgs {
    /// Builds the configured key wrapper. In local mode without keys, warns loudly: everything
    /// sealed is lost when the process exits.
    pub async fn build(&self) -> Result<Arc<dyn KeyWrapper>, ConfigError> {
        match self.kms_mode {
            KmsMode::Local => {
                let ring = LocalKeyring::from_config(self.local_master_keys.as_deref()).map_err(|e| {
                    ConfigError::Invalid { var: "VAULT_LOCAL_MASTER_KEYS", message: e.to_string() }
                })?;
                if ring.is_ephemeral() {
                    tracing::warn!(
                        "VAULT_LOCAL_MASTER_KEYS is not set: using an EPHEMERAL master key; every secret \
                         written now becomes unreadable when this process exits. Never use this in production"
                    );
                }
                Ok(Arc::new(ring))
            }
            KmsMode::Aws => {
                let key_id = self
                    .kms_key_id
                    .clone()
                    .filter(|k| !k.trim().is_empty())
                    .ok_or(ConfigError::Missing { var: "VAULT_KMS_KEY_ID", because: "VAULT_KMS_MODE=aws" })?;
                let kms = AwsKms::from_env(key_id, self.kms_endpoint.as_deref(), self.retry_policy()).await;
                Ok(Arc::new(kms))
            }
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.kms_max_retries,
            attempt_timeout: Duration::from_millis(self.kms_attempt_timeout_ms.max(1)),
            ..RetryPolicy::default()
        }
    }

    /// The DEK cache these settings describe (share it with metrics via `DekCache::stats`).
    pub fn dek_cache(&self) -> DekCache {
        DekCache::new(Duration::from_secs(self.dek_cache_ttl_secs), self.dek_cache_max_entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        kms: KmsArgs,
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hosts_with_and_without_ports() {
        let cli = Cli::parse_from(["x", "--pg-hosts", "a,b:5433,[::1]:7,::1", "--pg-port", "6000"]);
        let cfg = cli.store.writer_config().unwrap();
        assert_eq!(cfg.get_ports(), &[6000, 5433, 7, 6000]);
        assert_eq!(cfg.get_hosts().len(), 4);
        assert_eq!(cfg.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(cli.store.reader_config().unwrap().get_target_session_attrs(), TargetSessionAttrs::Any);
    }

    #[test]
    fn invalid_port_names_the_variable() {
        let cli = Cli::parse_from(["x", "--pg-hosts", "a:notaport"]);
        let err = cli.store.pg_config().unwrap_err().to_string();
        assert!(err.contains("VAULT_PG_HOSTS"), "{err}");
    }

    #[test]
    fn debug_redacts_credentials() {
        let cli = Cli::parse_from(["x", "--pg-password", "hunter2", "--local-master-keys", "k:AAAA"]);
        let text = format!("{:?} {:?}", cli.store, cli.kms);
        assert!(!text.contains("hunter2") && !text.contains("AAAA"), "{text}");
    }
}
