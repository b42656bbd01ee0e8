//! The desired `VaultSecret` status, computed by a pure function from what the reconcile
//! observed. Written only by server-side apply (see `reconcile`), and only when it differs from
//! the stored status, so an idle controller makes no writes.
//!
//! Nothing here ever holds a value, a hash of a value or key material: the inputs are version
//! numbers, timestamps and a reason.

use hyperion_vault_crds::v1alpha1::{GraceVersion, VaultSecretStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The one condition type.
pub const READY: &str = "Ready";

/// Reasons of the Ready condition.
pub mod reason {
    /// A value is sealed in the vault and readable.
    pub const SEALED: &str = "Sealed";
    /// Manual secret without `valueFrom`: waiting for `PUT /v1/secrets/{name}`.
    pub const AWAITING_VALUE: &str = "AwaitingValue";
    /// The spec cannot be acted on; the message names the field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// PostgreSQL is unreachable; retried with backoff.
    pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";
    /// The key service is unreachable; retried with backoff.
    pub const KMS_UNAVAILABLE: &str = "KmsUnavailable";
    /// The Secret (or key) named by `valueFrom` does not exist.
    pub const SOURCE_SECRET_MISSING: &str = "SourceSecretMissing";
    /// The vault name is held by another owner (an API secret, or a retained secret of a
    /// deleted VaultSecret).
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// An unexpected failure; see the controller logs.
    pub const ERROR: &str = "Error";
}

/// What the reconcile concluded about readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub fn sealed(version: u32) -> Self {
        Self { ready: true, reason: reason::SEALED, message: format!("Version {version} is sealed") }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: false, reason, message: message.into() }
    }
}

/// The vault-side facts that go into status, from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// 0 while no value exists.
    pub current_version: u32,
    pub last_rotation: Option<Timestamp>,
    pub next_rotation: Option<Timestamp>,
    /// Superseded versions still live, with their expiry.
    pub grace: Vec<(u32, Timestamp)>,
}

/// The status to apply. `previous` supplies the last transition time when Ready did not change,
/// so recomputing an unchanged status yields an equal value (and no write).
pub fn desired(
    generation: Option<i64>,
    readiness: &Readiness,
    observed: Option<&Observed>,
    last_rotate_request: Option<String>,
    previous: Option<&VaultSecretStatus>,
    now: Timestamp,
) -> VaultSecretStatus {
    let status = if readiness.ready { "True" } else { "False" };
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let last_transition_time = match previous_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let ready = Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: readiness.reason.to_owned(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let observed = observed.filter(|o| o.current_version > 0);
    VaultSecretStatus {
        observed_generation: generation,
        current_version: observed.map(|o| i64::from(o.current_version)),
        last_rotation_time: observed.and_then(|o| o.last_rotation).map(Time),
        next_rotation_time: observed.and_then(|o| o.next_rotation).map(Time),
        grace_versions: observed
            .map(|o| {
                o.grace
                    .iter()
                    .map(|&(version, expires_at)| GraceVersion {
                        version: i64::from(version),
                        expires_at: Time(expires_at),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        last_rotate_request,
        conditions: vec![ready],
    }
}

/// The Ready condition of a status, as `(status, reason)`.
pub fn ready_of(status: Option<&VaultSecretStatus>) -> Option<(&str, &str)> {
    status?.conditions.iter().find(|c| c.type_ == READY).map(|c| (c.status.as_str(), c.reason.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn observed() -> Observed {
        Observed {
            current_version: 3,
            last_rotation: Some(ts(1_000)),
            next_rotation: Some(ts(2_000)),
            grace: vec![(2, ts(1_500))],
        }
    }

    #[test]
    fn sealed_status_carries_versions_and_schedule() {
        let s =
            desired(Some(4), &Readiness::sealed(3), Some(&observed()), Some("n1".into()), None, ts(1_100));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.current_version, Some(3));
        assert_eq!(s.next_rotation_time, Some(Time(ts(2_000))));
        assert_eq!(s.grace_versions, vec![GraceVersion { version: 2, expires_at: Time(ts(1_500)) }]);
        assert_eq!(s.last_rotate_request.as_deref(), Some("n1"));
        assert_eq!(ready_of(Some(&s)), Some(("True", reason::SEALED)));
        assert_eq!(s.conditions[0].observed_generation, Some(4));
        assert_eq!(s.conditions[0].last_transition_time, Time(ts(1_100)));
    }

    #[test]
    fn recomputing_an_unchanged_status_is_equal() {
        let first = desired(Some(1), &Readiness::sealed(3), Some(&observed()), None, None, ts(1_100));
        let again = desired(Some(1), &Readiness::sealed(3), Some(&observed()), None, Some(&first), ts(1_900));
        assert_eq!(first, again, "same facts later must not produce a write");
    }

    #[test]
    fn transition_time_moves_only_when_ready_flips() {
        let first = desired(Some(1), &Readiness::sealed(3), Some(&observed()), None, None, ts(1_100));
        let reason_change = Readiness { message: "other".into(), ..Readiness::sealed(3) };
        let same = desired(Some(2), &reason_change, Some(&observed()), None, Some(&first), ts(1_200));
        assert_eq!(same.conditions[0].last_transition_time, Time(ts(1_100)));
        let down = Readiness::not_ready(reason::STORE_UNAVAILABLE, "database unavailable");
        let flipped = desired(Some(2), &down, Some(&observed()), None, Some(&first), ts(1_300));
        assert_eq!(flipped.conditions[0].last_transition_time, Time(ts(1_300)));
        assert_eq!(ready_of(Some(&flipped)), Some(("False", reason::STORE_UNAVAILABLE)));
    }

    #[test]
    fn awaiting_value_has_no_version_fields() {
        let none = Observed::default();
        let r = Readiness::not_ready(reason::AWAITING_VALUE, "set the value through the API");
        let s = desired(Some(1), &r, Some(&none), None, None, ts(5));
        assert_eq!(s.current_version, None);
        assert_eq!(s.last_rotation_time, None);
        assert!(s.grace_versions.is_empty());
    }

    #[test]
    fn serialised_status_never_has_value_fields() {
        let s = desired(Some(1), &Readiness::sealed(3), Some(&observed()), Some("n".into()), None, ts(1));
        let json = serde_json::to_value(&s).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "conditions",
                "currentVersion",
                "graceVersions",
                "lastRotateRequest",
                "lastRotationTime",
                "nextRotationTime",
                "observedGeneration"
            ]
        );
    }
}
