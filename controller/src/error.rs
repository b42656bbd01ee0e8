//! Reconcile errors, one variant per failed step, with a bounded category for metric labels and
//! event reasons. Messages name the step; none carries a value.

use hyperion_vault_store::error::StoreError;

/// A reconcile step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to look up the vault secret")]
    LookupSecret(#[source] StoreError),
    #[error("failed to create the vault secret")]
    CreateSecret(#[source] StoreError),
    #[error("failed to update the vault secret's settings")]
    UpdateSettings(#[source] StoreError),
    #[error("failed to seal a new version")]
    SealVersion(#[source] StoreError),
    #[error("failed to rotate the secret")]
    RotateSecret(#[source] StoreError),
    #[error("failed to compare the source value with the current version")]
    CompareSource(#[source] StoreError),
    #[error("failed to expire grace versions")]
    ExpireGrace(#[source] StoreError),
    #[error("failed to read the version history")]
    ReadHistory(#[source] StoreError),
    #[error("failed to delete the vault secret")]
    DeleteSecret(#[source] StoreError),
    #[error("failed to hand the retained vault secret over to the API")]
    ReleaseSecret(#[source] StoreError),
    #[error("failed to generate a value")]
    GenerateValue(#[source] hyperion_vault_core::generator::GeneratorError),
    #[error("failed to read the source Secret")]
    ReadSource(#[source] kube::Error),
    #[error("failed to apply the status")]
    ApplyStatus(#[source] kube::Error),
    #[error("the object has no {0}")]
    MissingObjectField(&'static str),
}

impl Error {
    /// A bounded label: `store_unavailable`, `kms_unavailable`, `kube`, `store`, `generator`,
    /// `invalid_object`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::LookupSecret(e)
            | Self::CreateSecret(e)
            | Self::UpdateSettings(e)
            | Self::SealVersion(e)
            | Self::RotateSecret(e)
            | Self::CompareSource(e)
            | Self::ExpireGrace(e)
            | Self::ReadHistory(e)
            | Self::DeleteSecret(e)
            | Self::ReleaseSecret(e) => store_category(e),
            Self::GenerateValue(_) => "generator",
            Self::ReadSource(_) | Self::ApplyStatus(_) => "kube",
            Self::MissingObjectField(_) => "invalid_object",
        }
    }

    /// Transient failures are retried with backoff; the others wait for a change of the object.
    pub fn is_transient(&self) -> bool {
        !matches!(self.category(), "invalid_object")
    }

    /// The store error behind this one, if any.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::LookupSecret(e)
            | Self::CreateSecret(e)
            | Self::UpdateSettings(e)
            | Self::SealVersion(e)
            | Self::RotateSecret(e)
            | Self::CompareSource(e)
            | Self::ExpireGrace(e)
            | Self::ReadHistory(e)
            | Self::DeleteSecret(e)
            | Self::ReleaseSecret(e) => Some(e),
            _ => None,
        }
    }
}

fn store_category(e: &StoreError) -> &'static str {
    match e {
        StoreError::DatabaseUnavailable { .. } => "store_unavailable",
        StoreError::KmsUnavailable { .. } => "kms_unavailable",
        StoreError::KeyService { .. } => "kms_rejected",
        StoreError::Conflict(_) => "conflict",
        _ => "store",
    }
}

/// Every category [`Error::category`] can return, plus the finalizer's own.
pub const CATEGORIES: [&str; 9] = [
    "store_unavailable",
    "kms_unavailable",
    "kms_rejected",
    "conflict",
    "store",
    "generator",
    "kube",
    "invalid_object",
    "finalizer",
];

/// The finalizer wrapper's error: ours, or a failure to add/remove the finalizer.
pub type FinalizerError = kube::runtime::finalizer::Error<Error>;

/// A bounded category for a finalizer-wrapped error.
pub fn finalizer_category(e: &FinalizerError) -> &'static str {
    use kube::runtime::finalizer::Error as F;
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e.category(),
        _ => "finalizer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_bounded() {
        let unavailable = Error::SealVersion(StoreError::DatabaseUnavailable {
            step: "x",
            source: Box::new(std::io::Error::other("down")),
        });
        assert_eq!(unavailable.category(), "store_unavailable");
        assert!(unavailable.is_transient());
        let missing = Error::MissingObjectField("metadata.uid");
        assert!(!missing.is_transient());
        for e in [unavailable, missing] {
            assert!(CATEGORIES.contains(&e.category()));
        }
        assert_eq!(Error::RotateSecret(StoreError::Internal("x")).to_string(), "failed to rotate the secret");
    }
}
