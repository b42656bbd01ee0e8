//! Domain types the store reads and writes. Nothing here holds key material; only
//! [`SecretValue`] holds a plaintext value, and it has no `Debug`/`Clone`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use hyperion_vault_core::generator::GeneratorSpec;
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::rbac::{Role, Rule};
use hyperion_vault_core::secret::SecretBytes;
use jiff::Timestamp;

/// `manual` (value set by an admin or `valueFrom`) or `automatic` (generated and rotated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SecretKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(Self::Manual),
            "automatic" => Ok(Self::Automatic),
            other => Err(UnknownKind(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown secret kind {0:?}; expected manual or automatic")]
pub struct UnknownKind(pub String);

/// Who manages a secret: the REST API, or a `VaultSecret` resource (identified by its uid).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Api,
    Resource { uid: String, namespace: String, name: String },
}

impl Owner {
    /// `"api"` or `"<namespace>/<name>"`, for the API's `owner` field.
    pub fn display_name(&self) -> String {
        match self {
            Self::Api => "api".to_owned(),
            Self::Resource { namespace, name, .. } => format!("{namespace}/{name}"),
        }
    }

    pub fn resource_uid(&self) -> Option<&str> {
        match self {
            Self::Api => None,
            Self::Resource { uid, .. } => Some(uid),
        }
    }
}

/// A secret to create. Validated by the store: automatic needs `rotation_interval` (whole seconds,
/// ≥ 1 s); manual must not have an interval or generator; durations are whole seconds.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub name: SecretName,
    pub kind: SecretKind,
    pub owner: Owner,
    pub description: Option<String>,
    pub rotation_interval: Option<Duration>,
    pub grace_period: Duration,
    /// Automatic only; `None` uses [`GeneratorSpec::default`].
    pub generator: Option<GeneratorSpec>,
}

/// A secret's metadata. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: SecretName,
    pub kind: SecretKind,
    pub owner: Owner,
    pub description: Option<String>,
    /// 0 while a manual secret awaits its first value.
    pub current_version: u32,
    pub rotation_interval: Option<Duration>,
    pub grace_period: Duration,
    pub generator: Option<GeneratorSpec>,
    pub next_rotation_at: Option<Timestamp>,
    /// When the current version was created (the last rotation or value change).
    pub last_rotated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The lifecycle state of one version at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// The version reads serve by default.
    Current,
    /// Superseded but still inside its grace period: readable with `?version=` and verifiable.
    Grace,
    /// Past its expiry; crypto material may not be destroyed yet (the sweeper has not run).
    Expired,
    /// Crypto material destroyed; only this metadata remains.
    Shredded,
}

impl VersionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Grace => "grace",
            Self::Expired => "expired",
            Self::Shredded => "shredded",
        }
    }
}

/// Metadata of one version. Never key material or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub version: u32,
    pub kms_key_id: String,
    pub created_at: Timestamp,
    pub superseded_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub shredded_at: Option<Timestamp>,
}

impl VersionMeta {
    pub fn state(&self, now: Timestamp) -> VersionState {
        if self.shredded_at.is_some() {
            VersionState::Shredded
        } else if self.superseded_at.is_none() {
            VersionState::Current
        } else if hyperion_vault_core::schedule::is_live(self.expires_at, now) {
            VersionState::Grace
        } else {
            VersionState::Expired
        }
    }

    /// Readable and verifiable at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        matches!(self.state(now), VersionState::Current | VersionState::Grace)
    }
}

/// A decrypted value with the metadata the read endpoints return. Holds plaintext: no `Debug`,
/// no `Clone`; the bytes are zeroized on drop.
pub struct SecretValue {
    pub name: SecretName,
    pub kind: SecretKind,
    pub version: u32,
    pub created_at: Timestamp,
    /// `Some` for a grace version.
    pub expires_at: Option<Timestamp>,
    pub next_rotation_at: Option<Timestamp>,
    pub(crate) value: SecretBytes,
}

impl SecretValue {
    pub fn value(&self) -> &SecretBytes {
        &self.value
    }

    pub fn into_value(self) -> SecretBytes {
        self.value
    }
}

/// The result of [`crate::Store::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// This call created the new version.
    Rotated { version: VersionMeta, next_rotation_at: Option<Timestamp> },
    /// The current version was no longer the expected one (another replica, a retry, or a
    /// concurrent value change got there first). Nothing was written.
    Conflict { current_version: u32 },
}

/// Changes to a secret's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MetadataUpdate {
    /// `Some("")` clears the description.
    pub description: Option<String>,
    pub kind: Option<SecretKind>,
    /// Automatic only. A new interval re-anchors the schedule on the current version's creation.
    pub rotation_interval: Option<Duration>,
    /// Applies to versions superseded from now on.
    pub grace_period: Option<Duration>,
    pub generator: Option<GeneratorSpec>,
}

/// Which owners' secrets [`crate::Store::due_rotations`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueFilter {
    /// Every owner.
    All,
    /// Only secrets created through the API (`owner = api`). The controller's API sweep asks
    /// for these alone: due VaultSecret-owned rows it does not act on (stuck on an invalid spec,
    /// say) would otherwise fill every batch and starve the API-owned ones.
    ApiOwned,
}

/// An automatic secret whose rotation is due (from [`crate::Store::due_rotations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRotation {
    pub name: SecretName,
    pub owner: Owner,
    /// Pass this as `expected_current_version` to [`crate::Store::rotate`].
    pub current_version: u32,
    pub next_rotation_at: Timestamp,
}

/// Keyset pagination over names (secrets) or ids (audit).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only names starting with this string.
    pub prefix: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size; 0 means the default (100); capped at 1000.
    pub limit: u32,
}

/// One page of results; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A role to create or replace. Names: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRole {
    pub name: String,
    pub description: Option<String>,
    pub is_admin: bool,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    pub description: Option<String>,
    pub is_admin: bool,
    pub rules: Vec<Rule>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl RoleRecord {
    /// The role as the RBAC matcher takes it.
    pub fn to_role(&self) -> Role {
        Role { is_admin: self.is_admin, rules: self.rules.clone() }
    }
}

/// Token metadata (for listing). The fingerprint is not exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMeta {
    pub name: String,
    pub role: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// An active token found by fingerprint, with its role resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub role_name: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// Failed-authentication policy: `threshold` failures within `window` lock a client for `lockout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub window: Duration,
    pub lockout: Duration,
}

/// A client's failure count after recording a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutState {
    pub failures: u32,
    /// `Some` while the client is locked out (answer 429 until then).
    pub locked_until: Option<Timestamp>,
}

/// The outcome recorded in an audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    Success,
    Denied,
    NotFound,
    Invalid,
    Conflict,
    LockedOut,
    Unavailable,
    Error,
}

impl AuditOutcome {
    pub const ALL: [AuditOutcome; 8] = [
        Self::Success,
        Self::Denied,
        Self::NotFound,
        Self::Invalid,
        Self::Conflict,
        Self::LockedOut,
        Self::Unavailable,
        Self::Error,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::Conflict => "conflict",
            Self::LockedOut => "locked_out",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Longest accepted `detail`, in characters; longer details are truncated.
pub const MAX_AUDIT_DETAIL: usize = 1024;
/// Longest accepted `actor`, in characters; longer actors are truncated.
pub const MAX_AUDIT_ACTOR: usize = 256;

/// An event to append. `action` is a short machine word (`^[a-z][a-z0-9_.-]{0,63}$`, e.g.
/// `secret.read`); `detail` must never contain a value or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: String,
    pub client_ip: Option<IpAddr>,
    pub action: String,
    pub secret: Option<String>,
    pub outcome: AuditOutcome,
    pub detail: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub client_ip: Option<IpAddr>,
    pub action: String,
    pub secret: Option<String>,
    pub outcome: AuditOutcome,
    pub detail: Option<String>,
}

/// Database node the reader pool is connected to (diagnostics and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub in_recovery: bool,
    pub server_port: Option<i32>,
}
