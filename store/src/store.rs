//! The [`Store`] handle: writer and reader pools over one host list, the key wrapper and the DEK
//! cache. Operations live in `secrets.rs`, `auth.rs` and `audit.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use hyperion_vault_core::envelope::{self, Sealed};
use hyperion_vault_core::keywrap::{EncryptionContext, KeyWrapper, WrappedDek};
use hyperion_vault_core::secret::{Dek, SecretBytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::NoTls;

use crate::config::{ConfigError, SslMode, StoreArgs};
use crate::dek_cache::{DekCache, DekCacheKey, DekCacheStats};
use crate::error::{self, StoreError};
use crate::migrate::{self, MigrationReport};
use crate::model::NodeInfo;

/// How long reads skip a reader pool that failed to hand out a connection.
const READER_BACKOFF: Duration = Duration::from_secs(5);

/// The vault's storage handle. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("writer", &self.inner.writer.status())
            .field("reader", &self.inner.reader.status())
            .field("active_key_id", &self.inner.keys.active_key_id())
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) writer: Pool,
    pub(crate) reader: Pool,
    /// Reader connections shared by concurrent reads: tokio-postgres pipelines the queries of
    /// concurrent callers on one connection, which saves round trips and syscalls on both sides.
    read_slots: Vec<Mutex<Option<Arc<Object>>>>,
    next_slot: AtomicUsize,
    pub(crate) keys: Arc<dyn KeyWrapper>,
    pub(crate) cache: DekCache,
    reader_down_since: Mutex<Option<Instant>>,
    /// Opened in place of a real version when a verify names an unknown secret, so the answer
    /// costs comparable work.
    pub(crate) decoy: (Dek, Sealed),
}

impl Store {
    /// Builds both pools (no connection is made yet: a database that is down at start-up shows as
    /// `DatabaseUnavailable` on the first call, not as a start-up failure).
    pub async fn connect(
        args: &StoreArgs,
        keys: Arc<dyn KeyWrapper>,
        cache: DekCache,
    ) -> Result<Self, StoreError> {
        let config_err =
            |e: ConfigError| StoreError::Invalid { field: "database configuration", message: e.to_string() };
        let tls = tls_connector(args).map_err(config_err)?;
        let writer_cfg = args.writer_config().map_err(config_err)?;
        let reader_cfg = args.reader_config().map_err(config_err)?;
        let hosts = writer_cfg.get_hosts().len().max(1) as u32;
        let create_timeout =
            Duration::from_secs(args.pg_connect_timeout_secs.max(1)) * hosts + Duration::from_secs(2);
        let writer = build_pool(writer_cfg, tls.clone(), args.pg_pool_size, create_timeout)?;
        let reader = build_pool(reader_cfg, tls, args.pg_pool_size, create_timeout)?;
        let read_connections =
            args.pg_read_connections.unwrap_or(args.pg_pool_size / 2).clamp(1, args.pg_pool_size.max(1));
        let decoy_dek =
            Dek::generate().map_err(|_| StoreError::Internal("failed to generate a decoy key"))?;
        let decoy_sealed =
            envelope::seal(&decoy_dek, "decoy", 1, &[0u8; 32]).map_err(error::crypto("seal the decoy"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                reader,
                read_slots: (0..read_connections).map(|_| Mutex::new(None)).collect(),
                next_slot: AtomicUsize::new(0),
                keys,
                cache,
                reader_down_since: Mutex::new(None),
                decoy: (decoy_dek, decoy_sealed),
            }),
        })
    }

    /// Applies the embedded migrations on the primary (advisory-locked; safe from many replicas).
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.migrate_with(migrate::MIGRATIONS).await
    }

    /// Applies an explicit migration set (tests and tools).
    pub async fn migrate_with(
        &self,
        migrations: &[migrate::Migration],
    ) -> Result<MigrationReport, StoreError> {
        let mut client = self.writer().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        Ok(migrate::apply(client, migrations).await?)
    }

    /// Readiness: the primary answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.writer().await?;
        client.simple_query("SELECT 1").await.map_err(error::db("ping the primary"))?;
        Ok(())
    }

    /// Which node the reader pool reaches (diagnostics).
    pub async fn reader_node(&self) -> Result<NodeInfo, StoreError> {
        let client = self.reader().await?;
        let row = client
            .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
            .await
            .map_err(error::db("inspect the reader node"))?;
        Ok(NodeInfo { in_recovery: row.get(0), server_port: row.get(1) })
    }

    /// DEK cache counters for metrics.
    pub fn dek_cache_stats(&self) -> DekCacheStats {
        self.inner.cache.stats()
    }

    /// The key wrapper in use.
    pub fn key_wrapper(&self) -> &Arc<dyn KeyWrapper> {
        &self.inner.keys
    }

    pub(crate) async fn writer(&self) -> Result<Object, StoreError> {
        self.inner.writer.get().await.map_err(error::pool("connect to the primary"))
    }

    /// A shared reader connection (round-robin over the slots, or over the calling thread's share
    /// of them: see [`crate::read_shard`]), or a writer connection while the
    /// reader pool is failing. While backing off, a failing primary sends reads back to the
    /// reader pool: with the primary down, the standby is the node that can still answer.
    pub(crate) async fn reader(&self) -> Result<ReadClient, StoreError> {
        let backing_off = self.reader_state().is_some_and(|since| since.elapsed() < READER_BACKOFF);
        if backing_off && let Ok(w) = self.writer().await {
            return Ok(ReadClient::Writer(Box::new(w)));
        }
        let slots = crate::read_shard::slot_range(crate::read_shard::current(), self.inner.read_slots.len());
        let slot = slots.start + self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % slots.len().max(1);
        {
            let mut guard = self.slot(slot);
            match guard.as_ref() {
                Some(c) if !c.is_closed() => return Ok(ReadClient::Shared(Arc::clone(c), slot)),
                // Release a dead connection so the pool can replace it; holding it would keep the
                // pool exhausted after a node goes away.
                Some(_) => *guard = None,
                None => {}
            }
        }
        match self.inner.reader.get().await {
            Ok(c) => {
                *self.reader_state_mut() = None;
                let c = Arc::new(c);
                *self.slot(slot) = Some(Arc::clone(&c));
                Ok(ReadClient::Shared(c, slot))
            }
            Err(e) if backing_off => Err(error::pool("connect to a reader")(e)),
            Err(e) => {
                tracing::warn!(error = %e, "Reader pool unavailable; reading from the primary");
                *self.reader_state_mut() = Some(Instant::now());
                Ok(ReadClient::Writer(Box::new(self.writer().await?)))
            }
        }
    }

    /// Forgets a shared reader connection that failed (it returns to the pool, which discards it
    /// once closed, when its last in-flight query ends).
    pub(crate) fn discard_reader(&self, client: ReadClient) {
        if let ReadClient::Shared(c, slot) = client {
            let mut guard = self.slot(slot);
            if guard.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &c)) {
                *guard = None;
            }
        }
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Option<Arc<Object>>> {
        // Holds an Option<Arc>; a poisoned lock still holds a valid value.
        let slot = &self.inner.read_slots[i % self.inner.read_slots.len()];
        slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader_state(&self) -> Option<Instant> {
        *self.reader_state_mut()
    }

    fn reader_state_mut(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // Holds a plain timestamp; a poisoned lock still holds a valid value.
        self.inner.reader_down_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unwraps a version's DEK through the cache.
    pub(crate) async fn dek(
        &self,
        wrapped: &WrappedDek,
        ctx: EncryptionContext<'_>,
    ) -> Result<Arc<Dek>, StoreError> {
        let key = DekCacheKey::new(wrapped, ctx);
        if let Some(dek) = self.inner.cache.get(&key) {
            return Ok(dek);
        }
        let dek = Arc::new(
            self.inner.keys.unwrap_dek(wrapped, ctx).await.map_err(error::kms("unwrap the data key"))?,
        );
        self.inner.cache.insert(key, Arc::clone(&dek));
        Ok(dek)
    }

    /// Seals a new version: a fresh DEK from the key service (called before any transaction),
    /// then XChaCha20-Poly1305. The DEK goes into the cache so the first reads need no KMS call.
    pub(crate) async fn seal(
        &self,
        name: &str,
        version: u32,
        value: &SecretBytes,
    ) -> Result<SealedVersion, StoreError> {
        let ctx = EncryptionContext { secret: name, version };
        let new = self.inner.keys.generate_dek(ctx).await.map_err(error::kms("generate a data key"))?;
        let sealed = envelope::seal(&new.dek, name, version, value.expose())
            .map_err(error::crypto("seal the value"))?;
        self.inner.cache.insert(DekCacheKey::new(&new.wrapped, ctx), Arc::new(new.dek));
        Ok(SealedVersion { wrapped: new.wrapped, sealed })
    }
}

/// A connection reads run on: a shared reader connection or, as a fallback, the primary.
pub(crate) enum ReadClient {
    Shared(Arc<Object>, usize),
    Writer(Box<Object>),
}

impl std::ops::Deref for ReadClient {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Shared(c, _) => c,
            Self::Writer(c) => c,
        }
    }
}

pub(crate) struct SealedVersion {
    pub(crate) wrapped: WrappedDek,
    pub(crate) sealed: Sealed,
}

/// Runs `$body` (an expression using `$client: &mut Object`) on a writer connection; if the node
/// turned read-only (failover) or the pooled connection was dead, discards it and retries once.
macro_rules! with_writer {
    ($store:expr, |$client:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            #[allow(unused_mut)]
            let mut $client = $store.writer().await?;
            let result: Result<_, $crate::error::StoreError> = $body;
            match result {
                Err(e) if attempt == 0 && e.is_stale_writer() => {
                    tracing::warn!(error = %e, "Primary connection is stale; retrying on a fresh one");
                    drop(deadpool_postgres::Object::take($client));
                    attempt += 1;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use with_writer;

/// Runs `$body` on a reader connection, retrying once on the primary if that connection failed.
macro_rules! with_reader {
    ($store:expr, |$client:ident| $body:expr) => {{
        let $client = $store.reader().await?;
        let result: Result<_, $crate::error::StoreError> = $body;
        match result {
            Err(e) if matches!(e, $crate::error::StoreError::DatabaseUnavailable { .. }) => {
                tracing::warn!(error = %e, "Reader connection failed; retrying on the primary");
                $store.discard_reader($client);
                let $client = $store.writer().await?;
                $body
            }
            other => other,
        }
    }};
}
pub(crate) use with_reader;

fn build_pool(
    cfg: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    size: usize,
    create_timeout: Duration,
) -> Result<Pool, StoreError> {
    let mc = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let mgr = match tls {
        Some(tls) => Manager::from_config(cfg, tls, mc),
        None => Manager::from_config(cfg, NoTls, mc),
    };
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(create_timeout))
        .wait_timeout(Some(create_timeout + Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|_| StoreError::Internal("failed to build a connection pool"))
}

fn tls_connector(args: &StoreArgs) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid { var: "VAULT_PG_SSLMODE", message: e.to_string() })?;
    let config = match args.pg_sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::VerifyFull => {
            let path = args.pg_sslrootcert.as_ref().ok_or(ConfigError::Missing {
                var: "VAULT_PG_SSLROOTCERT",
                because: "VAULT_PG_SSLMODE=verify-full",
            })?;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ConfigError::Invalid { var: "VAULT_PG_SSLROOTCERT", message: e.to_string() })?;
            for cert in certs {
                let cert = cert.map_err(|e| ConfigError::Invalid {
                    var: "VAULT_PG_SSLROOTCERT",
                    message: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| ConfigError::Invalid {
                    var: "VAULT_PG_SSLROOTCERT",
                    message: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(ConfigError::Invalid {
                    var: "VAULT_PG_SSLROOTCERT",
                    message: "no certificate found".into(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// `sslmode=require`: encrypt, check the handshake signatures, but do not authenticate the server
/// (libpq semantics). Use `verify-full` across hosts.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
