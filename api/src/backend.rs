//! What the handlers need from storage, as one object-safe trait.
//!
//! The production implementation adapts `hyperion-vault-store` (see [`crate::store_backend`]); the
//! in-memory twin in [`crate::memory`] serves the router tests that need no database. Keeping the
//! boundary here means the HTTP layer is written against the contract of DESIGN.md §7, not against
//! the shape of a SQL query.

use std::time::Duration;

use hyperion_vault_core::generator::GeneratorSpec;
use hyperion_vault_core::keywrap::BoxFuture;
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::rbac::{Role, Rule};
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_core::token::Fingerprint;
use jiff::Timestamp;

/// Who a secret belongs to: created through the API, or reconciled from a VaultSecret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Api,
    Resource { namespace: String, name: String },
}

impl Owner {
    /// The wire form: `api` or `vaultsecret:<namespace>/<name>`.
    pub fn to_wire(&self) -> String {
        match self {
            Self::Api => "api".to_owned(),
            Self::Resource { namespace, name } => format!("vaultsecret:{namespace}/{name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Manual,
    Automatic,
}

impl SecretKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Automatic => "automatic",
        }
    }
}

/// A validated create request. The value is always present: the API generates it for automatic
/// secrets created without one, so the response can return it.
pub struct NewSecret {
    pub name: SecretName,
    pub kind: SecretKind,
    pub value: SecretBytes,
    pub description: Option<String>,
    pub rotation_interval: Option<Duration>,
    pub grace_period: Duration,
    pub generator: Option<GeneratorSpec>,
}

/// A decrypted version of a secret.
pub struct SecretValue {
    pub name: String,
    pub kind: SecretKind,
    pub version: u32,
    pub value: SecretBytes,
    pub created_at: Timestamp,
    pub next_rotation_at: Option<Timestamp>,
    /// Set for a superseded version still inside its grace period.
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct SecretMeta {
    pub name: String,
    pub kind: SecretKind,
    pub owner: Owner,
    pub description: Option<String>,
    pub version: u32,
    pub rotation_interval_secs: Option<u64>,
    pub grace_period_secs: u64,
    pub next_rotation_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct VersionMeta {
    pub version: u32,
    pub created_at: Timestamp,
    pub superseded_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// False once the crypto material was destroyed (grace ended or the secret was deleted).
    pub has_material: bool,
}

/// A metadata change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MetaUpdate {
    pub description: Option<String>,
    pub rotation_interval: Option<Duration>,
    pub grace_period: Option<Duration>,
}

impl MetaUpdate {
    pub fn is_empty(&self) -> bool {
        self.description.is_none() && self.rotation_interval.is_none() && self.grace_period.is_none()
    }
}

/// The result of a successful bearer-token lookup.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_name: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub name: String,
    pub role: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct RoleDef {
    pub name: String,
    pub description: Option<String>,
    pub is_admin: bool,
    pub permissions: Vec<Rule>,
}

/// One audited call. Never carries a value.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: String,
    pub client_ip: Option<std::net::IpAddr>,
    pub action: &'static str,
    pub secret: Option<String>,
    /// One of `success, denied, not_found, invalid, conflict, locked_out, unavailable, error`.
    pub outcome: &'static str,
    /// e.g. `mismatch request_id=…`.
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub client_ip: Option<String>,
    pub action: String,
    pub secret: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// A page of results and the key to continue after, if there may be more.
#[derive(Debug, Clone)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

/// Failed-authentication bookkeeping policy (from configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

/// Storage failures, mapped one-to-one onto HTTP statuses by [`crate::error::AppError`].
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("owned by VaultSecret {namespace}/{name}")]
    OwnedByResource { namespace: String, name: String },
    #[error("{0}: {1}")]
    Invalid(String, String),
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] Option<Box<dyn std::error::Error + Send + Sync>>),
    #[error("key service unavailable")]
    KmsUnavailable(#[source] Option<Box<dyn std::error::Error + Send + Sync>>),
    #[error("internal storage error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type BackendResult<T> = Result<T, BackendError>;

/// Counters the store keeps and `/metrics` exposes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendStats {
    pub kms_calls: u64,
    pub kms_errors: u64,
    pub dek_cache_hits: u64,
    pub dek_cache_misses: u64,
    pub row_cache_hits: u64,
    pub row_cache_misses: u64,
}

pub trait Backend: Send + Sync + 'static {
    /// Cheap reachability check used by `/readyz`.
    fn ping(&self) -> BoxFuture<'_, BackendResult<()>>;
    fn stats(&self) -> BackendStats;

    fn create_secret(&self, new: NewSecret) -> BoxFuture<'_, BackendResult<SecretValue>>;
    fn put_value<'a>(&'a self, name: &'a SecretName, value: SecretBytes)
    -> BoxFuture<'a, BackendResult<u32>>;
    fn update_meta<'a>(
        &'a self,
        name: &'a SecretName,
        update: MetaUpdate,
    ) -> BoxFuture<'a, BackendResult<()>>;
    /// Rotates now; returns the new current version. Manual secrets answer `Invalid`.
    fn rotate<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretValue>>;
    fn read_current<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretValue>>;
    /// A version that is current or still inside its grace period; otherwise `NotFound`.
    fn read_version<'a>(
        &'a self,
        name: &'a SecretName,
        version: u32,
    ) -> BoxFuture<'a, BackendResult<SecretValue>>;
    /// Constant-time comparison against every live version; unknown names answer `Ok(None)`.
    fn verify<'a>(
        &'a self,
        name: &'a SecretName,
        presented: &'a [u8],
    ) -> BoxFuture<'a, BackendResult<Option<u32>>>;
    /// `cursor` is the backend's own `next` from the previous page.
    fn list<'a>(
        &'a self,
        prefix: Option<&'a str>,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, BackendResult<Page<SecretMeta, String>>>;
    fn metadata<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<SecretMeta>>;
    fn history<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<Vec<VersionMeta>>>;
    fn delete<'a>(&'a self, name: &'a SecretName) -> BoxFuture<'a, BackendResult<()>>;

    fn lookup_token(
        &self,
        fingerprint: Fingerprint,
        now: Timestamp,
    ) -> BoxFuture<'_, BackendResult<Option<Principal>>>;
    fn create_token<'a>(
        &'a self,
        name: &'a str,
        role: &'a str,
        fingerprint: Fingerprint,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, BackendResult<TokenInfo>>;
    fn list_tokens(&self) -> BoxFuture<'_, BackendResult<Vec<TokenInfo>>>;
    fn revoke_token<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<()>>;
    fn ensure_bootstrap_admin(&self, fingerprint: Fingerprint) -> BoxFuture<'_, BackendResult<()>>;

    fn create_role(&self, role: RoleDef) -> BoxFuture<'_, BackendResult<RoleDef>>;
    fn get_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<RoleDef>>;
    fn list_roles(&self) -> BoxFuture<'_, BackendResult<Vec<RoleDef>>>;
    fn replace_role(&self, role: RoleDef) -> BoxFuture<'_, BackendResult<RoleDef>>;
    fn delete_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, BackendResult<()>>;

    /// Records one failure; returns the lockout end if this failure (or an earlier one) locked
    /// the client out.
    fn record_auth_failure<'a>(
        &'a self,
        client: &'a str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> BoxFuture<'a, BackendResult<Option<Timestamp>>>;
    fn locked_until<'a>(
        &'a self,
        client: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, BackendResult<Option<Timestamp>>>;
    fn clear_failures<'a>(&'a self, client: &'a str) -> BoxFuture<'a, BackendResult<()>>;

    fn append_audit_batch<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, BackendResult<()>>;
    /// Newest first; `cursor` is the backend's own `next` from the previous page.
    fn read_audit<'a>(
        &'a self,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, BackendResult<Page<AuditRecord, String>>>;
}
