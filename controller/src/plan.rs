//! Pure decisions of the reconcile: whether to rotate, how to answer a `rotate-now` nonce, and
//! when to look again. All inputs come from the database and the observed object; nothing here
//! keeps state between reconciles, so a restarted controller decides exactly as before.

use std::time::Duration;

use jiff::Timestamp;

/// How a pending `rotate-now` nonce is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonce {
    /// No annotation, or it equals `status.lastRotateRequest`.
    Settled,
    /// A new nonce: rotate once (recording the nonce with the new version), then acknowledge it.
    Rotate,
    /// A new nonce that the database says a rotation already answered (recorded in the same
    /// transaction as its version): the status write that would have acknowledged it did not
    /// happen (a crash), or the cached object predates it. Acknowledge without rotating again.
    AlreadyRotated,
}

/// Decides how to treat the `rotate-now` annotation.
///
/// Exactly once, decided from the database: a rotation for a nonce records the nonce in the
/// transaction that creates its version, so `served` (that record equals this nonce) is true
/// exactly when the rotation for it committed. A newer database version alone proves nothing: it
/// may come from an API rotate or PUT made before the nonce was set, and answering the nonce with
/// it would give the user a value older than the request.
///
/// One case keeps the old inference: no `status.currentVersion` yet means the controller has not
/// reported any version of this resource, so the version it finds was sealed by the create that
/// followed the resource (and its annotation) into existence, and answers the nonce.
pub fn nonce(
    annotation: Option<&str>,
    acknowledged: Option<&str>,
    status_version: Option<i64>,
    served: bool,
) -> Nonce {
    match annotation {
        None => Nonce::Settled,
        Some(n) if Some(n) == acknowledged => Nonce::Settled,
        Some(_) if served || status_version.is_none() => Nonce::AlreadyRotated,
        Some(_) => Nonce::Rotate,
    }
}

/// The `status.lastRotateRequest` to record after this reconcile. A nonce whose rotation lost
/// its version race is not answered yet: the version that won (an API rotate, say) may predate
/// the request, and the retry rotates for it (or finds it served, if the winner was for it).
pub fn acknowledgement(
    nonce: Nonce,
    lost_race: bool,
    annotation: Option<&str>,
    acknowledged: Option<String>,
) -> Option<String> {
    match nonce {
        Nonce::Settled => acknowledged,
        Nonce::Rotate if lost_race => acknowledged,
        Nonce::Rotate | Nonce::AlreadyRotated => annotation.map(str::to_owned),
    }
}

/// Whether to rotate now: the database's schedule is due, or a new nonce asks for it.
pub fn should_rotate(next_rotation: Option<Timestamp>, nonce: Nonce, now: Timestamp) -> bool {
    let due = next_rotation.is_some_and(|t| hyperion_vault_core::schedule::is_due(t, now));
    due || nonce == Nonce::Rotate
}

/// A little past the due instant, so a requeue never fires a hair early and finds nothing due.
pub const REQUEUE_SLACK: Duration = Duration::from_millis(50);
/// Longest wait between reconciles of an idle object: a safety net beside the watches, and how
/// soon status catches up with changes made through the vault API (which no watch reports).
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);
/// How often a Manual secret awaiting its value is checked for a value set through the API.
pub const AWAITING_RECHECK: Duration = Duration::from_secs(15);

/// When to look at the object again: at the next rotation or grace expiry, whichever is first,
/// capped at [`MAX_REQUEUE`]. Past instants requeue almost at once.
pub fn requeue_after(
    next_rotation: Option<Timestamp>,
    grace_expiries: impl IntoIterator<Item = Timestamp>,
    now: Timestamp,
) -> Duration {
    match hyperion_vault_core::schedule::next_wakeup(next_rotation, grace_expiries) {
        None => MAX_REQUEUE,
        Some(at) => {
            let wait = at.duration_since(now);
            let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
            (wait + REQUEUE_SLACK).min(MAX_REQUEUE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(ms).unwrap()
    }

    #[test]
    fn nonce_rotates_once() {
        assert_eq!(nonce(None, None, Some(1), false), Nonce::Settled);
        assert_eq!(nonce(Some("a"), Some("a"), Some(2), false), Nonce::Settled);
        assert_eq!(nonce(Some("b"), Some("a"), Some(2), false), Nonce::Rotate);
        // Rotated for "b" (recorded with its version) but the status write was lost: not again.
        assert_eq!(nonce(Some("b"), Some("a"), Some(2), true), Nonce::AlreadyRotated);
        // Acknowledged after that.
        assert_eq!(nonce(Some("b"), Some("b"), Some(3), true), Nonce::Settled);
        assert_eq!(nonce(Some("c"), None, Some(3), false), Nonce::Rotate);
    }

    #[test]
    fn a_newer_version_from_elsewhere_does_not_answer_a_nonce() {
        // status says v2, the database holds v3 from an API rotate made before "c" was set: the
        // nonce still gets its own rotation (it used to be acknowledged with v3).
        assert_eq!(nonce(Some("c"), Some("b"), Some(2), false), Nonce::Rotate);
    }

    #[test]
    fn nonce_at_creation_is_answered_by_version_one() {
        assert_eq!(nonce(Some("x"), None, None, false), Nonce::AlreadyRotated);
    }

    #[test]
    fn a_nonce_is_acknowledged_only_once_answered() {
        let prev = || Some("a".to_owned());
        assert_eq!(acknowledgement(Nonce::Rotate, false, Some("b"), prev()).as_deref(), Some("b"));
        assert_eq!(
            acknowledgement(Nonce::Rotate, true, Some("b"), prev()).as_deref(),
            Some("a"),
            "lost the race"
        );
        assert_eq!(acknowledgement(Nonce::AlreadyRotated, false, Some("b"), prev()).as_deref(), Some("b"));
        assert_eq!(acknowledgement(Nonce::Settled, true, Some("a"), prev()).as_deref(), Some("a"));
        assert_eq!(acknowledgement(Nonce::Settled, false, None, None), None);
    }

    #[test]
    fn rotation_decision() {
        let now = ts(10_000);
        assert!(should_rotate(Some(ts(10_000)), Nonce::Settled, now), "due at the boundary");
        assert!(!should_rotate(Some(ts(10_001)), Nonce::Settled, now));
        assert!(should_rotate(Some(ts(20_000)), Nonce::Rotate, now));
        assert!(!should_rotate(Some(ts(20_000)), Nonce::AlreadyRotated, now));
        assert!(!should_rotate(None, Nonce::Settled, now), "manual secrets never rotate on schedule");
    }

    #[test]
    fn requeue_at_the_earliest_wakeup() {
        let now = ts(10_000);
        assert_eq!(requeue_after(Some(ts(12_000)), [ts(11_000)], now), Duration::from_millis(1_050));
        assert_eq!(requeue_after(Some(ts(12_000)), [], now), Duration::from_millis(2_050));
        assert_eq!(requeue_after(None, [ts(10_500)], now), Duration::from_millis(550));
        assert_eq!(requeue_after(Some(ts(9_000)), [], now), REQUEUE_SLACK, "overdue: at once");
        assert_eq!(requeue_after(None, [], now), MAX_REQUEUE);
        assert_eq!(requeue_after(Some(ts(10_000 + 86_400_000)), [], now), MAX_REQUEUE);
    }
}
