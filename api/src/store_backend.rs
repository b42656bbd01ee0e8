//! [`Backend`] over the PostgreSQL store (`hyperion-vault-store`), plus a key-wrapper decorator
//! that counts KMS calls for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyperion_vault_core::keywrap::{BoxFuture, EncryptionContext, KeyWrapper, NewDek, WrapError, WrappedDek};
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::secret::{Dek, SecretBytes};
use hyperion_vault_core::token::Fingerprint;
use hyperion_vault_store::model as sm;
use hyperion_vault_store::sealed::SealedRow;
use hyperion_vault_store::{Store, StoreError};
use jiff::Timestamp;

use crate::backend::*;
use crate::row_cache::RowCache;

/// Counts calls to the wrapped key service (bounded: two counters, no labels).
pub struct CountingKeys {
    inner: Arc<dyn KeyWrapper>,
    calls: AtomicU64,
    errors: AtomicU64,
}

impl CountingKeys {
    pub fn new(inner: Arc<dyn KeyWrapper>) -> Arc<Self> {
        Arc::new(Self { inner, calls: AtomicU64::new(0), errors: AtomicU64::new(0) })
    }

    fn count<T>(&self, r: Result<T, WrapError>) -> Result<T, WrapError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl KeyWrapper for CountingKeys {
    fn active_key_id(&self) -> &str {
        self.inner.active_key_id()
    }

    fn generate_dek<'a>(&'a self, ctx: EncryptionContext<'a>) -> BoxFuture<'a, Result<NewDek, WrapError>> {
        Box::pin(async move { self.count(self.inner.generate_dek(ctx).await) })
    }

    fn unwrap_dek<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<Dek, WrapError>> {
        Box::pin(async move { self.count(self.inner.unwrap_dek(wrapped, ctx).await) })
    }

    fn rewrap<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<WrappedDek, WrapError>> {
        Box::pin(async move { self.count(self.inner.rewrap(wrapped, ctx).await) })
    }
}

pub struct StoreBackend {
    store: Store,
    keys: Arc<CountingKeys>,
    /// Live versions by name, sealed: serves reads and verifies (see [`crate::row_cache`]).
    rows: RowCache<Vec<SealedRow>>,
}

/// Default of `VAULT_ROW_CACHE_TTL_MS`.
pub const DEFAULT_ROW_CACHE_TTL: Duration = Duration::from_millis(500);
/// Names whose sealed rows are held at once.
const ROW_CACHE_ENTRIES: usize = 10_000;

impl StoreBackend {
    pub fn new(store: Store, keys: Arc<CountingKeys>) -> Self {
        Self { store, keys, rows: RowCache::new(DEFAULT_ROW_CACHE_TTL, ROW_CACHE_ENTRIES) }
    }

    /// Sets the sealed-row cache TTL (zero: off).
    pub fn with_row_cache(self, ttl: Duration) -> Self {
        Self { rows: RowCache::new(ttl, ROW_CACHE_ENTRIES), ..self }
    }

    /// The live sealed versions of `name`, newest first (empty: no such secret), from the cache or
    /// the reader pool. Only non-empty answers are cached, so a new secret is readable at once.
    async fn live(&self, name: &SecretName) -> BackendResult<Arc<Vec<SealedRow>>> {
        if let Some(rows) = self.rows.get(name.as_str()) {
            return Ok(rows);
        }
        let fetched_at = Instant::now();
        let rows = Arc::new(
            read_retrying(|| self.store.live_sealed(name, Timestamp::now())).await.map_err(map_err)?,
        );
        if !rows.is_empty() {
            self.rows.insert(name.as_str(), Arc::clone(&rows), fetched_at);
        }
        Ok(rows)
    }

    async fn open(&self, row: &SealedRow) -> BackendResult<SecretValue> {
        self.store.open_sealed(row).await.map(value).map_err(map_err)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Read attempts on `DatabaseUnavailable`, within [`READ_RETRY_BUDGET`]. Each failure discards
/// the connection it used; after a node dies, the store's read slots and its pool can each hold a
/// dead connection, so a few cheap retries turn them into one slow read instead of failed reads.
const READ_ATTEMPTS: usize = 10;
const READ_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

async fn read_retrying<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = std::time::Instant::now();
    let mut attempt = 1;
    loop {
        match op().await {
            Err(StoreError::DatabaseUnavailable { .. })
                if attempt < READ_ATTEMPTS && started.elapsed() < READ_RETRY_BUDGET =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Rotation races (another replica or the controller rotated first) are retried this often.
const ROTATE_ATTEMPTS: usize = 3;

fn map_err(e: StoreError) -> BackendError {
    match e {
        StoreError::NotFound { .. } => BackendError::NotFound,
        StoreError::AlreadyExists { .. } => BackendError::AlreadyExists,
        StoreError::Conflict(msg) => BackendError::Conflict(msg),
        StoreError::OwnedByResource { namespace, name } => BackendError::OwnedByResource { namespace, name },
        StoreError::Invalid { field, message } => BackendError::Invalid(field.to_owned(), message),
        e @ StoreError::DatabaseUnavailable { .. } => BackendError::DatabaseUnavailable(Some(Box::new(e))),
        e @ StoreError::KmsUnavailable { .. } => BackendError::KmsUnavailable(Some(Box::new(e))),
        e => BackendError::Internal(Box::new(e)),
    }
}

fn kind(k: sm::SecretKind) -> SecretKind {
    match k {
        sm::SecretKind::Manual => SecretKind::Manual,
        sm::SecretKind::Automatic => SecretKind::Automatic,
    }
}

fn store_kind(k: SecretKind) -> sm::SecretKind {
    match k {
        SecretKind::Manual => sm::SecretKind::Manual,
        SecretKind::Automatic => sm::SecretKind::Automatic,
    }
}

fn meta(m: sm::SecretMeta) -> SecretMeta {
    SecretMeta {
        name: m.name.into_string(),
        kind: kind(m.kind),
        owner: match m.owner {
            sm::Owner::Api => Owner::Api,
            sm::Owner::Resource { namespace, name, .. } => Owner::Resource { namespace, name },
        },
        description: m.description,
        version: m.current_version,
        rotation_interval_secs: m.rotation_interval.map(|d| d.as_secs()),
        grace_period_secs: m.grace_period.as_secs(),
        next_rotation_at: m.next_rotation_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn value(v: sm::SecretValue) -> SecretValue {
    let (name, kind_, version, created_at, expires_at, next_rotation_at) =
        (v.name.as_str().to_owned(), kind(v.kind), v.version, v.created_at, v.expires_at, v.next_rotation_at);
    SecretValue {
        name,
        kind: kind_,
        version,
        value: v.into_value(),
        created_at,
        next_rotation_at,
        expires_at,
    }
}

fn role(r: sm::RoleRecord) -> RoleDef {
    RoleDef { name: r.name, description: r.description, is_admin: r.is_admin, permissions: r.rules }
}

fn new_role(r: RoleDef) -> sm::NewRole {
    sm::NewRole { name: r.name, description: r.description, is_admin: r.is_admin, rules: r.permissions }
}

fn outcome(s: &str) -> sm::AuditOutcome {
    sm::AuditOutcome::ALL.into_iter().find(|o| o.as_str() == s).unwrap_or(sm::AuditOutcome::Error)
}

impl Backend for StoreBackend {
    /// Ready when any node answers: reads (the pods' path) are served by the standby while the
    /// primary is down, so an unreachable primary must not take every replica out of the Service.
    fn ping(&self) -> BoxFuture<'_, BackendResult<()>> {
        Box::pin(async move {
            match self.store.reader_node().await {
                Ok(_) => Ok(()),
                Err(_) => self.store.ping().await.map_err(map_err),
            }
        })
    }

    fn stats(&self) -> BackendStats {
        let c = self.store.dek_cache_stats();
        let (row_cache_hits, row_cache_misses) = self.rows.stats();
        BackendStats {
            kms_calls: self.keys.calls.load(Ordering::Relaxed),
            kms_errors: self.keys.errors.load(Ordering::Relaxed),
            dek_cache_hits: c.hits,
            dek_cache_misses: c.misses,
            row_cache_hits,
            row_cache_misses,
        }
    }

    fn create_secret(&self, new: NewSecret) -> BoxFuture<'_, BackendResult<SecretValue>> {
        Box::pin(async move {
            let key = new.name.as_str().to_owned();
            let _fresh = self.rows.invalidate_on_drop(&key);
            let stored = SecretBytes::copy_from(new.value.expose());
            let spec = sm::NewSecret {
                name: new.name,
                kind: store_kind(new.kind),
                owner: sm::Owner::Api,
                description: new.description,
                rotation_interval: new.rotation_interval,
                grace_period: new.grace_period,
                generator: new.generator,
            };
            let m = self.store.create_secret(spec, Some(stored), Timestamp::now()).await.map_err(map_err)?;
            Ok(SecretValue {
                name: m.name.as_str().to_owned(),
                kind: kind(m.kind),
                version: m.current_version,
                value: new.value,
                created_at: m.last_rotated_at.unwrap_or(m.created_at),
                next_rotation_at: m.next_rotation_at,
                expires_at: None,
            })
        })
    }

    fn put_value<'a>(
        &'a self,
        name: &'a SecretName,
        value: SecretBytes,
    ) -> BoxFuture<'a, BackendResult<u32>> {
        Box::pin(async move {
            let _fresh = self.rows.invalidate_on_drop(name.as_str());
            let v = self.store.put_value(name, value, Timestamp::now()).await.map_err(map_err)?;
            Ok(v.version)
        })
    }

    fn update_meta<'a>(
        &'a self,
        name: &'a SecretName,
        update: MetaUpdate,
    ) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let _fresh = self.rows.invalidate_on_drop(name.as_str());
            let u = sm::MetadataUpdate {
                description: update.description,
                rotation_interval: update.rotation_interval,
                grace_period: update.grace_period,
                ..Default::default()
            };
            self.store.update_metadata(name, &sm::Owner::Api, u, Timestamp::now()).await.map_err(map_err)?;
            Ok(())
        })
    }

    fn rotate<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretValue>> {
        Box::pin(async move {
            let _fresh = self.rows.invalidate_on_drop(name.as_str());
            for _ in 0..ROTATE_ATTEMPTS {
                let m = self.store.metadata(name).await.map_err(map_err)?.ok_or(BackendError::NotFound)?;
                if m.kind != sm::SecretKind::Automatic {
                    return Err(BackendError::Invalid(
                        "kind".into(),
                        "manual secrets are not rotated; PUT a new value instead".into(),
                    ));
                }
                // Generated here so the response can carry the value without a read-back that a
                // lagging standby might not serve yet.
                let fresh = m
                    .generator
                    .unwrap_or_default()
                    .generate()
                    .map_err(|e| BackendError::Internal(Box::new(e)))?;
                let copy = SecretBytes::copy_from(fresh.expose());
                match self
                    .store
                    .rotate(name, m.current_version, Some(copy), Timestamp::now())
                    .await
                    .map_err(map_err)?
                {
                    sm::RotateOutcome::Rotated { version, next_rotation_at } => {
                        return Ok(SecretValue {
                            name: name.as_str().to_owned(),
                            kind: SecretKind::Automatic,
                            version: version.version,
                            value: fresh,
                            created_at: version.created_at,
                            next_rotation_at,
                            expires_at: None,
                        });
                    }
                    sm::RotateOutcome::Conflict { .. } => continue,
                }
            }
            Err(BackendError::Conflict(format!("secret {name} kept rotating concurrently; retry")))
        })
    }

    fn read_current<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretValue>> {
        Box::pin(async move {
            let rows = self.live(name).await?;
            let current = rows.iter().find(|r| r.expires_at.is_none()).ok_or(BackendError::NotFound)?;
            self.open(current).await
        })
    }

    fn read_version<'a>(
        &'a self,
        name: &'a SecretName,
        version: u32,
    ) -> BoxFuture<'a, BackendResult<SecretValue>> {
        Box::pin(async move {
            let rows = self.live(name).await?;
            let now = Timestamp::now();
            let row =
                rows.iter().find(|r| r.version == version && r.is_live(now)).ok_or(BackendError::NotFound)?;
            self.open(row).await
        })
    }

    fn verify<'a>(
        &'a self,
        name: &'a SecretName,
        presented: &'a [u8],
    ) -> BoxFuture<'a, BackendResult<Option<u32>>> {
        Box::pin(async move {
            let rows = self.live(name).await?;
            self.store.verify_sealed(&rows, presented, Timestamp::now()).await.map_err(map_err)
        })
    }

    fn list<'a>(
        &'a self,
        prefix: Option<&'a str>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, BackendResult<Page<SecretMeta, String>>> {
        Box::pin(async move {
            let q =
                sm::ListQuery { prefix: prefix.map(str::to_owned), cursor: cursor.map(str::to_owned), limit };
            let p = self.store.list(&q).await.map_err(map_err)?;
            Ok(Page { items: p.items.into_iter().map(meta).collect(), next: p.next_cursor })
        })
    }

    fn metadata<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretMeta>> {
        Box::pin(async move {
            self.store.metadata(name).await.map_err(map_err)?.map(meta).ok_or(BackendError::NotFound)
        })
    }

    fn history<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<Vec<VersionMeta>>> {
        Box::pin(async move {
            let h = self.store.history(name).await.map_err(map_err)?.ok_or(BackendError::NotFound)?;
            Ok(h.into_iter()
                .map(|v| VersionMeta {
                    version: v.version,
                    created_at: v.created_at,
                    superseded_at: v.superseded_at,
                    expires_at: v.expires_at,
                    has_material: v.shredded_at.is_none(),
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let _fresh = self.rows.invalidate_on_drop(name.as_str());
            match self.store.delete(name, &sm::Owner::Api, Timestamp::now()).await.map_err(map_err)? {
                true => Ok(()),
                false => Err(BackendError::NotFound),
            }
        })
    }

    fn lookup_token(
        &self,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> BoxFuture<'_, BackendResult<Option<Principal>>> {
        Box::pin(async move {
            let t = self.store.lookup_token(&fingerprint, now).await.map_err(map_err)?;
            Ok(t.map(|t| Principal { token_name: t.name, roles: vec![t.role] }))
        })
    }

    fn create_token<'a>(
        &'a self,
        name: &'a str,
        role: &'a str,
        fingerprint: Fingerprint,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, BackendResult<TokenInfo>> {
        Box::pin(async move {
            let t = self
                .store
                .create_token(name, role, &fingerprint, expires_at, Timestamp::now())
                .await
                .map_err(map_err)?;
            Ok(TokenInfo { name: t.name, role: t.role, created_at: t.created_at, expires_at: t.expires_at })
        })
    }

    fn list_tokens(&self) -> BoxFuture<'_, BackendResult<Vec<TokenInfo>>> {
        Box::pin(async move {
            let ts = self.store.list_tokens().await.map_err(map_err)?;
            Ok(ts
                .into_iter()
                .filter(|t| t.revoked_at.is_none())
                .map(|t| TokenInfo {
                    name: t.name,
                    role: t.role,
                    created_at: t.created_at,
                    expires_at: t.expires_at,
                })
                .collect())
        })
    }

    fn revoke_token<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            match self.store.revoke_token(name, Timestamp::now()).await.map_err(map_err)? {
                true => Ok(()),
                false => Err(BackendError::NotFound),
            }
        })
    }

    fn ensure_bootstrap_admin(&self, fingerprint: Fingerprint) -> BoxFuture<'_, BackendResult<()>> {
        Box::pin(async move {
            self.store.ensure_bootstrap_admin(&fingerprint, Timestamp::now()).await.map_err(map_err)?;
            Ok(())
        })
    }

    fn create_role(&self, r: RoleDef) -> BoxFuture<'_, BackendResult<RoleDef>> {
        Box::pin(async move {
            Ok(role(self.store.create_role(new_role(r), Timestamp::now()).await.map_err(map_err)?))
        })
    }

    fn get_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<RoleDef>> {
        Box::pin(async move {
            self.store.get_role(name).await.map_err(map_err)?.map(role).ok_or(BackendError::NotFound)
        })
    }

    fn list_roles(&self) -> BoxFuture<'_, BackendResult<Vec<RoleDef>>> {
        Box::pin(async move {
            Ok(self.store.list_roles().await.map_err(map_err)?.into_iter().map(role).collect())
        })
    }

    fn replace_role(&self, r: RoleDef) -> BoxFuture<'_, BackendResult<RoleDef>> {
        Box::pin(async move {
            Ok(role(self.store.update_role(new_role(r), Timestamp::now()).await.map_err(map_err)?))
        })
    }

    fn delete_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            match self.store.delete_role(name).await.map_err(map_err)? {
                true => Ok(()),
                false => Err(BackendError::NotFound),
            }
        })
    }

    fn record_auth_failure<'a>(
        &'a self,
        client: &'a str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> BoxFuture<'a, BackendResult<Option<Timestamp>>> {
        Box::pin(async move {
            let p = sm::LockoutPolicy {
                threshold: policy.max_failures,
                window: policy.window,
                lockout: policy.lockout,
            };
            Ok(self.store.record_auth_failure(client, now, &p).await.map_err(map_err)?.locked_until)
        })
    }

    fn locked_until<'a>(
        &'a self,
        client: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, BackendResult<Option<Timestamp>>> {
        Box::pin(async move { self.store.is_locked_out(client, now).await.map_err(map_err) })
    }

    fn clear_failures<'a>(&'a self, client: &'a str) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move { self.store.clear_failures(client).await.map_err(map_err) })
    }

    fn append_audit_batch<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, BackendResult<()>> {
        Box::pin(async move {
            let batch = events
                .iter()
                .map(|e| sm::AuditEvent {
                    at: e.at,
                    actor: e.actor.clone(),
                    client_ip: e.client_ip,
                    action: e.action.to_owned(),
                    secret: e.secret.clone(),
                    outcome: outcome(e.outcome),
                    detail: e.detail.clone(),
                })
                .collect();
            self.store.append_audit_batch(batch).await.map_err(map_err)
        })
    }

    fn read_audit<'a>(
        &'a self,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, BackendResult<Page<AuditRecord, String>>> {
        Box::pin(async move {
            let p = self.store.read_audit(cursor, limit).await.map_err(map_err)?;
            let items = p
                .items
                .into_iter()
                .map(|r| AuditRecord {
                    id: r.id,
                    at: r.at,
                    actor: r.actor,
                    client_ip: r.client_ip.map(|ip| ip.to_string()),
                    action: r.action,
                    secret: r.secret,
                    outcome: r.outcome.as_str().to_owned(),
                    detail: r.detail,
                })
                .collect();
            Ok(Page { items, next: p.next_cursor })
        })
    }
}
