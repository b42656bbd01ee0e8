//! The key-wrapping boundary: who protects the per-version DEKs.
//!
//! Implementations: [`crate::keyring::LocalKeyring`] here, and the AWS KMS wrapper in the `store`
//! crate. The trait returns boxed futures so it can be used as `Arc<dyn KeyWrapper>`.

use std::future::Future;
use std::pin::Pin;

use crate::secret::Dek;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a wrapped DEK is bound to. AWS KMS receives it as the encryption context
/// `{secret: <name>, version: <n>}`; the local keyring binds it as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptionContext<'a> {
    pub secret: &'a str,
    pub version: u32,
}

impl EncryptionContext<'_> {
    /// The context as key/value pairs, in a fixed order.
    pub fn pairs(&self) -> [(&'static str, String); 2] {
        [("secret", self.secret.to_owned()), ("version", self.version.to_string())]
    }
}

/// A DEK as stored: which master key wrapped it and the opaque blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDek {
    pub key_id: String,
    pub blob: Vec<u8>,
}

/// A fresh DEK together with its wrapped form.
pub struct NewDek {
    pub dek: Dek,
    pub wrapped: WrappedDek,
}

#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    /// The key service could not be reached or kept failing within the retry budget.
    #[error("key service unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The key service answered, and refused: wrong context, corrupted blob, disabled key.
    #[error("key service rejected the wrapped key")]
    Rejected(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("unknown master key id {0:?}")]
    UnknownKey(String),
    #[error("key service returned malformed key material")]
    Malformed,
    #[error(transparent)]
    Rng(#[from] crate::secret::RngError),
}

impl WrapError {
    /// A bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "kms_unavailable",
            Self::Rejected(_) => "kms_rejected",
            Self::UnknownKey(_) => "unknown_key",
            Self::Malformed => "kms_malformed",
            Self::Rng(_) => "rng",
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub trait KeyWrapper: Send + Sync {
    /// The key id new DEKs are wrapped under.
    fn active_key_id(&self) -> &str;

    /// Generates a fresh DEK and wraps it under the active key, bound to `ctx`.
    fn generate_dek<'a>(&'a self, ctx: EncryptionContext<'a>) -> BoxFuture<'a, Result<NewDek, WrapError>>;

    /// Unwraps a stored DEK; fails unless `ctx` matches the one it was wrapped with.
    fn unwrap_dek<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<Dek, WrapError>>;

    /// Re-wraps a stored DEK under the active key without exposing it to the caller.
    fn rewrap<'a>(
        &'a self,
        wrapped: &'a WrappedDek,
        ctx: EncryptionContext<'a>,
    ) -> BoxFuture<'a, Result<WrappedDek, WrapError>>;
}
