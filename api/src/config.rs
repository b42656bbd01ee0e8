//! The API's configuration: clap `Args` with environment fallbacks, validated once at start into
//! [`ApiConfig`] with errors that name the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyperion_vault_core::allowlist::Allowlist;
use zeroize::Zeroizing;

use crate::audit::OverflowPolicy;
use crate::backend::LockoutPolicy;
use crate::client_ip::ProxyTrust;

/// Minimum length of `VAULT_BOOTSTRAP_TOKEN`: it must carry at least 128 bits even if hex.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 32;

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "VAULT_API_LISTEN", default_value = "0.0.0.0:8200")]
    pub listen: String,

    /// Comma-separated IPv4/IPv6 addresses or CIDRs allowed to read and verify. Empty denies all.
    #[arg(long, env = "VAULT_ALLOWED_IPS", default_value = "")]
    pub allowed_ips: String,

    /// Honour X-Forwarded-For from the proxies in VAULT_TRUSTED_PROXIES.
    #[arg(long, env = "VAULT_TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy: bool,

    /// Comma-separated CIDRs of the proxies whose X-Forwarded-For is believed.
    #[arg(long, env = "VAULT_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Failed authentications (bad tokens, allowlist denials) from one client before a lockout.
    #[arg(long, env = "VAULT_AUTH_MAX_FAILURES", default_value_t = 10)]
    pub auth_max_failures: u32,

    /// Window in which failures are counted.
    #[arg(long, env = "VAULT_AUTH_FAILURE_WINDOW_SECS", default_value_t = 300)]
    pub auth_failure_window_secs: u64,

    /// How long a locked-out client gets 429.
    #[arg(long, env = "VAULT_AUTH_LOCKOUT_SECS", default_value_t = 900)]
    pub auth_lockout_secs: u64,

    /// Raw admin token accepted as `bootstrap-admin` (same on every replica). At least 32 characters.
    #[arg(long, env = "VAULT_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,

    /// PEM certificate chain; with VAULT_TLS_KEY_FILE turns on TLS.
    #[arg(long, env = "VAULT_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key matching VAULT_TLS_CERT_FILE.
    #[arg(long, env = "VAULT_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Audit events held in memory while the primary is slow or unreachable.
    #[arg(long, env = "VAULT_AUDIT_QUEUE_CAPACITY", default_value_t = 65_536)]
    pub audit_queue_capacity: usize,

    /// What happens when the audit queue is full: `fail-closed` (every call answers 503) or
    /// `drop-reads` (reads and verifies go on unaudited and are counted; management still fails).
    #[arg(long, env = "VAULT_AUDIT_OVERFLOW", default_value = "fail-closed")]
    pub audit_overflow: String,

    /// How long a secret's sealed rows (never plaintext) are reused for reads and verifies, in
    /// milliseconds; 0 turns the cache off. At most 1000: a rotation committed elsewhere must be
    /// served within the replication lag plus one second (DESIGN.md §6).
    #[arg(long, env = "VAULT_ROW_CACHE_TTL_MS", default_value_t = 500)]
    pub row_cache_ttl_ms: u64,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "VAULT_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Serving threads, each with its own single-threaded runtime and its own share of the reader
    /// connections (so a database read never hops threads). Default: the CPUs available to the
    /// process (cgroup quota included).
    #[arg(long, env = "VAULT_API_THREADS")]
    pub threads: Option<usize>,
}

pub struct ApiConfig {
    pub listen: SocketAddr,
    pub allowlist: Allowlist,
    pub proxy: ProxyTrust,
    pub lockout: LockoutPolicy,
    pub bootstrap_token: Option<Zeroizing<String>>,
    pub tls: Option<TlsFiles>,
    pub audit_queue_capacity: usize,
    pub audit_overflow: OverflowPolicy,
    pub shutdown_grace: Duration,
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { var, message: message.into() }
}

/// Upper bound of `VAULT_ROW_CACHE_TTL_MS` (DESIGN.md §6: new versions within lag + 1 s).
pub const MAX_ROW_CACHE_TTL_MS: u64 = 1000;

/// Upper bound of `VAULT_API_THREADS`.
pub const MAX_THREADS: usize = 64;

impl ApiArgs {
    /// The sealed-row cache TTL; needed before the backend is built, so checked on its own too.
    pub fn row_cache_ttl(&self) -> Result<Duration, ConfigError> {
        if self.row_cache_ttl_ms > MAX_ROW_CACHE_TTL_MS {
            return Err(err(
                "VAULT_ROW_CACHE_TTL_MS",
                format!(
                    "{} is over {MAX_ROW_CACHE_TTL_MS} (new versions must be served within lag + 1 s)",
                    self.row_cache_ttl_ms
                ),
            ));
        }
        Ok(Duration::from_millis(self.row_cache_ttl_ms))
    }

    pub fn validate(self) -> Result<ApiConfig, ConfigError> {
        self.row_cache_ttl()?;
        let listen = self
            .listen
            .parse()
            .map_err(|_| err("VAULT_API_LISTEN", format!("{:?} is not an address:port", self.listen)))?;
        let allowlist =
            Allowlist::parse(&self.allowed_ips).map_err(|e| err("VAULT_ALLOWED_IPS", e.to_string()))?;
        let trusted = Allowlist::parse(&self.trusted_proxies)
            .map_err(|e| err("VAULT_TRUSTED_PROXIES", e.to_string()))?;
        if self.trust_proxy && trusted.is_empty() {
            return Err(err(
                "VAULT_TRUSTED_PROXIES",
                "must list the proxy CIDRs when VAULT_TRUST_PROXY=true",
            ));
        }
        if self.auth_max_failures == 0 {
            return Err(err("VAULT_AUTH_MAX_FAILURES", "must be at least 1"));
        }
        if self.auth_failure_window_secs == 0 {
            return Err(err("VAULT_AUTH_FAILURE_WINDOW_SECS", "must be at least 1"));
        }
        if self.auth_lockout_secs == 0 {
            return Err(err("VAULT_AUTH_LOCKOUT_SECS", "must be at least 1"));
        }
        let bootstrap_token = match self.bootstrap_token {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) => {
                let t = Zeroizing::new(t);
                if t.chars().count() < MIN_BOOTSTRAP_TOKEN_LEN
                    || t.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(err(
                        "VAULT_BOOTSTRAP_TOKEN",
                        format!("must be at least {MIN_BOOTSTRAP_TOKEN_LEN} characters without whitespace"),
                    ));
                }
                Some(t)
            }
        };
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(err("VAULT_TLS_KEY_FILE", "is required when VAULT_TLS_CERT_FILE is set"));
            }
            (None, Some(_)) => {
                return Err(err("VAULT_TLS_CERT_FILE", "is required when VAULT_TLS_KEY_FILE is set"));
            }
        };
        let threads = match self.threads {
            Some(n) if !(1..=MAX_THREADS).contains(&n) => {
                return Err(err("VAULT_API_THREADS", format!("{n} is not between 1 and {MAX_THREADS}")));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
        };
        if self.audit_queue_capacity < 16 {
            return Err(err("VAULT_AUDIT_QUEUE_CAPACITY", "must be at least 16"));
        }
        let audit_overflow = match self.audit_overflow.as_str() {
            "fail-closed" => OverflowPolicy::FailClosed,
            "drop-reads" => OverflowPolicy::DropReads,
            other => {
                return Err(err(
                    "VAULT_AUDIT_OVERFLOW",
                    format!("{other:?}; expected fail-closed or drop-reads"),
                ));
            }
        };
        Ok(ApiConfig {
            listen,
            allowlist,
            proxy: ProxyTrust { enabled: self.trust_proxy, trusted },
            lockout: LockoutPolicy {
                max_failures: self.auth_max_failures,
                window: Duration::from_secs(self.auth_failure_window_secs),
                lockout: Duration::from_secs(self.auth_lockout_secs),
            },
            bootstrap_token,
            tls,
            audit_queue_capacity: self.audit_queue_capacity,
            audit_overflow,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        api: ApiArgs,
    }

    fn parse(args: &[&str]) -> Result<ApiConfig, ConfigError> {
        let mut argv = vec!["hv"];
        argv.extend_from_slice(args);
        Harness::try_parse_from(argv).unwrap().api.validate()
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Harness::command().debug_assert();
    }

    #[test]
    fn defaults_are_fail_closed() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8200");
        assert!(c.allowlist.is_empty());
        assert!(!c.proxy.enabled);
        assert!(c.tls.is_none() && c.bootstrap_token.is_none());
        assert_eq!(c.audit_overflow, OverflowPolicy::FailClosed);
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.threads, cpus.min(MAX_THREADS));
        assert_eq!(parse(&["--threads", "3"]).unwrap().threads, 3);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: [(&[&str], &str); 11] = [
            (&["--threads", "0"], "VAULT_API_THREADS"),
            (&["--threads", "65"], "VAULT_API_THREADS"),
            (&["--row-cache-ttl-ms", "1001"], "VAULT_ROW_CACHE_TTL_MS"),
            (&["--listen", "nope"], "VAULT_API_LISTEN"),
            (&["--allowed-ips", "10.0.0.0/33"], "VAULT_ALLOWED_IPS"),
            (&["--trust-proxy", "true"], "VAULT_TRUSTED_PROXIES"),
            (&["--auth-max-failures", "0"], "VAULT_AUTH_MAX_FAILURES"),
            (&["--bootstrap-token", "short"], "VAULT_BOOTSTRAP_TOKEN"),
            (&["--tls-cert-file", "/x.pem"], "VAULT_TLS_KEY_FILE"),
            (&["--audit-overflow", "yolo"], "VAULT_AUDIT_OVERFLOW"),
            (&["--audit-queue-capacity", "1"], "VAULT_AUDIT_QUEUE_CAPACITY"),
        ];
        for (args, var) in cases {
            let e = parse(args).err().unwrap();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var));
        }
    }

    #[test]
    fn proxy_trust_and_tls_pairs() {
        let c = parse(&["--trust-proxy", "true", "--trusted-proxies", "10.0.0.0/8,fd00::/8"]).unwrap();
        assert!(c.proxy.enabled && c.proxy.trusted.nets().len() == 2);
        let c = parse(&["--tls-cert-file", "/c.pem", "--tls-key-file", "/k.pem"]).unwrap();
        assert!(c.tls.is_some());
    }
}
