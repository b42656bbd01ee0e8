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
    /// A new nonce: rotate once, then acknowledge it.
    Rotate,
    /// A new nonce, but the database already holds a version newer than the status we last
    /// wrote: the rotation for it committed and the status write that would have acknowledged it
    /// did not happen (a crash, or a stale cache). Acknowledge without rotating again.
    AlreadyRotated,
}

/// Decides how to treat the `rotate-now` annotation.
///
/// Exactly-once without extra writes: status is written after every database change, so
/// `status.currentVersion < db current` means a change committed after the last status write.
/// When a nonce is pending in that state the rotation it asked for is taken to be that change.
/// The one imprecision is benign: if the newer version came from something else (a scheduled
/// rotation whose status write was lost, or an API `rotate`), the nonce is answered by that
/// fresh version instead of a second one, which is never a double rotation.
pub fn nonce(
    annotation: Option<&str>,
    acknowledged: Option<&str>,
    status_version: Option<i64>,
    db_version: u32,
) -> Nonce {
    match annotation {
        None => Nonce::Settled,
        Some(n) if Some(n) == acknowledged => Nonce::Settled,
        Some(_) => match status_version {
            // No status version yet: the first version was just created for this resource and
            // is itself fresh, so a nonce present at creation needs no further rotation.
            None => Nonce::AlreadyRotated,
            Some(v) if v < i64::from(db_version) => Nonce::AlreadyRotated,
            Some(_) => Nonce::Rotate,
        },
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
        assert_eq!(nonce(None, None, Some(1), 1), Nonce::Settled);
        assert_eq!(nonce(Some("a"), Some("a"), Some(2), 2), Nonce::Settled);
        assert_eq!(nonce(Some("b"), Some("a"), Some(2), 2), Nonce::Rotate);
        // Rotated for "b" but the status write was lost: do not rotate again.
        assert_eq!(nonce(Some("b"), Some("a"), Some(2), 3), Nonce::AlreadyRotated);
        // Acknowledged after that.
        assert_eq!(nonce(Some("b"), Some("b"), Some(3), 3), Nonce::Settled);
        assert_eq!(nonce(Some("c"), None, Some(3), 3), Nonce::Rotate);
    }

    #[test]
    fn nonce_at_creation_is_answered_by_version_one() {
        assert_eq!(nonce(Some("x"), None, None, 1), Nonce::AlreadyRotated);
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
