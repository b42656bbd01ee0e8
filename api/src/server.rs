//! Serving: plain TCP or rustls (ring provider) through [`crate::protocol::serve`] on
//! `VAULT_API_THREADS` serving threads ([`crate::shards`]), graceful shutdown on SIGTERM / ctrl-c,
//! and the audit flusher drained before exit. The flusher and the signal listener run on the
//! caller's runtime.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyperion_vault_core::token::Fingerprint;

use crate::backend::Backend;
use crate::config::{ApiConfig, TlsFiles};
use crate::state::{AppState, StateOptions};

/// Builds the state, bootstraps the admin token, serves until a shutdown signal, then drains audit.
pub async fn run(config: ApiConfig, backend: Arc<dyn Backend>) -> anyhow::Result<()> {
    if let Some(token) = &config.bootstrap_token {
        backend
            .ensure_bootstrap_admin(Fingerprint::of(token))
            .await
            .context("failed to create the bootstrap admin token (VAULT_BOOTSTRAP_TOKEN)")?;
        tracing::info!("Bootstrap admin token ensured");
    }
    if config.allowlist.is_empty() {
        tracing::warn!("VAULT_ALLOWED_IPS is empty: every read and verify will be denied");
    }
    let (state, rx) = AppState::new(
        backend.clone(),
        StateOptions {
            allowlist: config.allowlist.clone(),
            proxy: config.proxy.clone(),
            lockout: config.lockout,
            audit_capacity: config.audit_queue_capacity,
            audit_overflow: config.audit_overflow,
        },
    );
    let flusher = tokio::spawn(crate::audit::run_flusher(rx, backend, state.metrics.clone()));
    let app = crate::router::app(state.clone());
    let grace = config.shutdown_grace;

    // One signal listener; the server's graceful shutdown watches it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("failed to bind VAULT_API_LISTEN={}", config.listen))?;
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            Some(axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_tls_config(files)?)))
        }
    };
    let (with_tls, metrics) = (tls.is_some(), state.metrics.clone());
    let shards = crate::shards::spawn(config.threads, &listener, move |listener, handle| {
        crate::protocol::serve(listener, tls, app, handle, crate::protocol::HEADER_READ_TIMEOUT, metrics)
    })
    .context("failed to start the serving threads")?;
    drop(listener);
    // In-flight requests get `grace`; connections still open after that are dropped.
    let shutdown = shards.shutdown_handle();
    tokio::spawn(async move {
        stopped(stop_rx).await;
        shutdown(grace);
    });
    tracing::info!(addr = %config.listen, tls = with_tls, threads = config.threads, "Listening");
    shards
        .wait(grace)
        .await
        .with_context(|| format!("failed to serve on VAULT_API_LISTEN={}", config.listen))?;
    tracing::info!("Server stopped; draining the audit queue");
    let backlog = state.audit.backlog();
    drop(state);
    match tokio::time::timeout(grace.max(Duration::from_secs(5)), flusher).await {
        Ok(_) => tracing::info!("Audit queue drained"),
        Err(_) => tracing::error!(lost = backlog, "Audit queue not drained before the shutdown deadline"),
    }
    Ok(())
}

/// A rustls server config over the ring provider (DEPENDENCIES.md §4.1), from PEM files.
pub fn server_tls_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = std::fs::read(&files.cert)
        .with_context(|| format!("failed to read VAULT_TLS_CERT_FILE {}", files.cert.display()))?;
    let key_pem = std::fs::read(&files.key)
        .with_context(|| format!("failed to read VAULT_TLS_KEY_FILE {}", files.key.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("invalid VAULT_TLS_CERT_FILE: not a PEM certificate chain")?;
    if certs.is_empty() {
        anyhow::bail!("invalid VAULT_TLS_CERT_FILE: no certificate found");
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("invalid VAULT_TLS_KEY_FILE: not a PEM private key")?
        .context("invalid VAULT_TLS_KEY_FILE: no private key found")?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("failed to select TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context(
                "invalid VAULT_TLS_CERT_FILE / VAULT_TLS_KEY_FILE: key does not match the certificate",
            )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent `true`.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Failed to listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("hv-api-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = TlsFiles { cert: dir.join("nope.pem"), key: dir.join("nope.key") };
        let e = format!("{:#}", server_tls_config(&missing).unwrap_err());
        assert!(e.contains("VAULT_TLS_CERT_FILE"), "{e}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let files = TlsFiles { cert: garbage.clone(), key: garbage };
        let e = format!("{:#}", server_tls_config(&files).unwrap_err());
        assert!(e.contains("VAULT_TLS_CERT_FILE"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
