//! The store's error type: one variant per kind of failure the callers must tell apart.
//!
//! Messages never contain a secret value, a DEK, a token or key material; secret and role names are
//! not secret and may appear. The API maps the typed variants to status codes (see `StoreError`).

use hyperion_vault_core::envelope::EnvelopeError;
use hyperion_vault_core::keywrap::WrapError;
use tokio_postgres::error::SqlState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every failure of a store operation.
///
/// API mapping: `NotFound` → 404, `AlreadyExists`/`Conflict`/`OwnedByResource` → 409, `Invalid` → 400,
/// `DatabaseUnavailable`/`KmsUnavailable` → 503 with `Retry-After`, everything else → 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named object does not exist (or was deleted).
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    /// An object with this name already exists.
    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: &'static str, name: String },

    /// A guard failed: the expected current version moved on, or a referenced object is in use.
    #[error("conflict: {0}")]
    Conflict(String),

    /// The secret belongs to a `VaultSecret`; change that resource instead.
    #[error("secret is managed by VaultSecret {namespace}/{name}; change that resource instead")]
    OwnedByResource { namespace: String, name: String },

    /// Input the store refuses; `field` names the offending field for the 400 message.
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },

    /// PostgreSQL could not be reached, or the node we reached cannot serve the request.
    #[error("failed to {step}: database unavailable")]
    DatabaseUnavailable {
        step: &'static str,
        #[source]
        source: BoxError,
    },

    /// The key service could not be reached within the retry budget.
    #[error("failed to {step}: key service unavailable")]
    KmsUnavailable {
        step: &'static str,
        #[source]
        source: WrapError,
    },

    /// A query failed for a reason other than availability (a bug or a schema mismatch).
    #[error("failed to {step}")]
    Database {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The key service refused (wrong context, disabled key, corrupted blob).
    #[error("failed to {step}")]
    KeyService {
        step: &'static str,
        #[source]
        source: WrapError,
    },

    /// Sealing or opening a value failed (tampered row, wrong key).
    #[error("failed to {step}")]
    Crypto {
        step: &'static str,
        #[source]
        source: EnvelopeError,
    },

    /// Applying the embedded migrations failed or was refused.
    #[error(transparent)]
    Migration(#[from] crate::migrate::MigrationError),

    /// A row read back violates an invariant the schema should have enforced.
    #[error("stored {what} is inconsistent: {detail}")]
    Corrupt { what: &'static str, detail: String },

    /// Anything else that is a bug, with a short static description.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl StoreError {
    /// A bounded label for metrics, events and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Conflict(_) => "conflict",
            Self::OwnedByResource { .. } => "owned_by_resource",
            Self::Invalid { .. } => "invalid",
            Self::DatabaseUnavailable { .. } => "database_unavailable",
            Self::KmsUnavailable { .. } => "kms_unavailable",
            Self::Database { .. } => "database",
            Self::KeyService { .. } => "kms_rejected",
            Self::Crypto { .. } => "crypto",
            Self::Migration(_) => "migration",
            Self::Corrupt { .. } => "corrupt",
            Self::Internal(_) => "internal",
        }
    }

    /// Transient: retry later (503 in the API, backoff requeue in the controller).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::DatabaseUnavailable { .. } | Self::KmsUnavailable { .. })
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    /// Whether a write should be retried once on a fresh connection: the node turned read-only
    /// (failover) or the pooled connection was already closed.
    pub(crate) fn is_stale_writer(&self) -> bool {
        match self {
            Self::DatabaseUnavailable { source, .. } => source
                .downcast_ref::<tokio_postgres::Error>()
                .is_some_and(|e| e.is_closed() || e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)),
            _ => false,
        }
    }
}

/// Classifies a query error: connection-level failures become `DatabaseUnavailable`.
pub(crate) fn db(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| {
        if is_unavailable_pg(&source) {
            StoreError::DatabaseUnavailable { step, source: Box::new(source) }
        } else {
            StoreError::Database { step, source }
        }
    }
}

pub(crate) fn pool(step: &'static str) -> impl FnOnce(deadpool_postgres::PoolError) -> StoreError {
    move |source| StoreError::DatabaseUnavailable { step, source: Box::new(source) }
}

pub(crate) fn kms(step: &'static str) -> impl FnOnce(WrapError) -> StoreError {
    move |source| {
        if source.is_unavailable() {
            StoreError::KmsUnavailable { step, source }
        } else {
            StoreError::KeyService { step, source }
        }
    }
}

pub(crate) fn crypto(step: &'static str) -> impl FnOnce(EnvelopeError) -> StoreError {
    move |source| StoreError::Crypto { step, source }
}

fn is_unavailable_pg(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol failure on the connection.
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || c == "53300" // too many connections
                || c == SqlState::READ_ONLY_SQL_TRANSACTION.code()
        }
    }
}

/// The constraint a unique violation hit, if the error is one.
pub(crate) fn unique_violation(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION).then(|| db.constraint().unwrap_or(""))
}

/// The constraint a CHECK violation names, if `e` is one.
pub(crate) fn check_violation(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    (db.code() == &SqlState::CHECK_VIOLATION).then(|| db.constraint().unwrap_or(""))
}

pub(crate) fn is_code(e: &tokio_postgres::Error, state: &SqlState) -> bool {
    e.code() == Some(state)
}
