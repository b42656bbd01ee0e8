//! Rotation schedule math.
//!
//! The schedule is anchored: each rotation slot is the previous *scheduled* slot plus the
//! interval, so rotations do not drift by however late the controller ran. After missed periods
//! a secret rotates once and moves to the next future slot. The first slot carries a small
//! deterministic spread derived from the secret's identity, so many secrets created together do
//! not all rotate in the same second. Times are microsecond precision, as PostgreSQL stores them.

use std::time::Duration;

use jiff::Timestamp;
use sha2::{Digest, Sha256};

/// Upper bound on the spread, whatever the interval.
pub const MAX_SPREAD: Duration = Duration::from_secs(300);
/// The spread is at most this fraction (1/n) of the interval.
pub const SPREAD_DIVISOR: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("rotation interval must be greater than zero")]
    ZeroInterval,
    #[error("time arithmetic overflowed the supported range")]
    Overflow,
}

/// A deterministic offset in `[0, min(interval / 10, 5 min))`, derived from `identity`.
pub fn spread(identity: &str, interval: Duration) -> Duration {
    let window = (interval / SPREAD_DIVISOR).min(MAX_SPREAD);
    let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    if window_us == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(identity.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    Duration::from_micros(u64::from_be_bytes(head) % window_us)
}

/// The first rotation slot of a secret created (or given its first version) at `created`.
pub fn first_rotation(
    created: Timestamp,
    interval: Duration,
    identity: &str,
) -> Result<Timestamp, ScheduleError> {
    if interval.is_zero() {
        return Err(ScheduleError::ZeroInterval);
    }
    add(add(created, interval)?, spread(identity, interval))
}

/// Whether a rotation scheduled at `next_rotation` is due at `now` (due exactly at the boundary).
pub fn is_due(next_rotation: Timestamp, now: Timestamp) -> bool {
    now >= next_rotation
}

/// The slot after a rotation performed for slot `scheduled` at time `now`: the first
/// `scheduled + k * interval` (k >= 1) that is strictly after `now`.
pub fn next_after(
    scheduled: Timestamp,
    interval: Duration,
    now: Timestamp,
) -> Result<Timestamp, ScheduleError> {
    let interval_us = i64::try_from(interval.as_micros()).map_err(|_| ScheduleError::Overflow)?;
    if interval_us == 0 {
        return Err(ScheduleError::ZeroInterval);
    }
    let elapsed = now.as_microsecond() - scheduled.as_microsecond();
    let periods = if elapsed < 0 { 1 } else { elapsed / interval_us + 1 };
    let offset = periods.checked_mul(interval_us).ok_or(ScheduleError::Overflow)?;
    let next = scheduled.as_microsecond().checked_add(offset).ok_or(ScheduleError::Overflow)?;
    Timestamp::from_microsecond(next).map_err(|_| ScheduleError::Overflow)
}

/// When a version superseded at `superseded_at` stops being valid.
pub fn grace_expiry(superseded_at: Timestamp, grace: Duration) -> Result<Timestamp, ScheduleError> {
    add(superseded_at, grace)
}

/// Whether a version with the given expiry (`None`: the current version) is live at `at`.
/// A version is valid strictly before its expiry and invalid from that instant on.
pub fn is_live(expires_at: Option<Timestamp>, at: Timestamp) -> bool {
    expires_at.is_none_or(|e| at < e)
}

/// The earliest instant at which something must happen for a secret: its next rotation or the
/// first grace expiry still in the future.
pub fn next_wakeup(
    next_rotation: Option<Timestamp>,
    grace_expiries: impl IntoIterator<Item = Timestamp>,
) -> Option<Timestamp> {
    grace_expiries.into_iter().chain(next_rotation).min()
}

fn add(t: Timestamp, d: Duration) -> Result<Timestamp, ScheduleError> {
    let d = jiff::SignedDuration::try_from(d).map_err(|_| ScheduleError::Overflow)?;
    t.checked_add(d).map_err(|_| ScheduleError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(us: i64) -> Timestamp {
        Timestamp::from_microsecond(us).unwrap()
    }

    const S: i64 = 1_000_000;

    #[test]
    fn due_exactly_at_the_boundary() {
        let t = ts(1_700_000_000 * S);
        assert!(is_due(t, t));
        assert!(!is_due(t, ts(t.as_microsecond() - 1)));
        assert!(is_due(t, ts(t.as_microsecond() + 1)));
    }

    #[test]
    fn grace_valid_one_second_before_and_invalid_at_expiry() {
        let superseded = ts(1_700_000_000 * S);
        let expiry = grace_expiry(superseded, Duration::from_secs(3600)).unwrap();
        assert_eq!(expiry.as_microsecond() - superseded.as_microsecond(), 3600 * S);
        assert!(is_live(Some(expiry), ts(expiry.as_microsecond() - S)));
        assert!(is_live(Some(expiry), ts(expiry.as_microsecond() - 1)));
        assert!(!is_live(Some(expiry), expiry));
        assert!(!is_live(Some(expiry), ts(expiry.as_microsecond() + S)));
        assert!(is_live(None, ts(250_000_000_000 * S)));
        let zero_grace = grace_expiry(superseded, Duration::ZERO).unwrap();
        assert!(!is_live(Some(zero_grace), superseded), "0s grace means invalid at once");
    }

    #[test]
    fn no_drift_over_1000_periods_even_when_always_late() {
        let interval = Duration::from_secs(3600);
        let start = ts(1_700_000_000 * S);
        let mut scheduled = start;
        for k in 1..=1000i64 {
            // The controller runs up to 59 minutes late every time.
            let now = ts(scheduled.as_microsecond() + (k % 60) * 60 * S - 1);
            scheduled = next_after(scheduled, interval, now).unwrap();
            assert_eq!(scheduled.as_microsecond(), start.as_microsecond() + k * 3600 * S);
        }
    }

    #[test]
    fn missed_periods_rotate_once_and_move_to_the_next_future_slot() {
        let interval = Duration::from_secs(60);
        let scheduled = ts(1_000 * S);
        // Down for 10.5 periods: one rotation now, next slot is the 11th.
        let now = ts(1_000 * S + 630 * S);
        let next = next_after(scheduled, interval, now).unwrap();
        assert_eq!(next, ts(1_000 * S + 660 * S));
        assert!(!is_due(next, now));
        // Exactly on a slot: that slot is now, so the next is one interval later.
        assert_eq!(next_after(scheduled, interval, ts(1_060 * S)).unwrap(), ts(1_120 * S));
    }

    #[test]
    fn spread_is_deterministic_bounded_and_varies() {
        let day = Duration::from_secs(86_400);
        assert_eq!(spread("ns/a", day), spread("ns/a", day));
        let offsets: std::collections::HashSet<_> =
            (0..100).map(|i| spread(&format!("ns/s{i}"), day)).collect();
        assert!(offsets.len() > 90, "spread should differ between secrets");
        assert!(offsets.iter().all(|d| *d < MAX_SPREAD));
        let short = Duration::from_secs(5);
        assert!((0..100).all(|i| spread(&format!("s{i}"), short) < Duration::from_millis(500)));
        assert_eq!(spread("x", Duration::from_micros(5)), Duration::ZERO);
    }

    #[test]
    fn first_rotation_is_created_plus_interval_plus_spread() {
        let created = ts(10 * S);
        let i = Duration::from_secs(600);
        let first = first_rotation(created, i, "ns/a").unwrap();
        let spread_us = spread("ns/a", i).as_micros() as i64;
        assert_eq!(first.as_microsecond(), 10 * S + 600 * S + spread_us);
        assert_eq!(first_rotation(created, Duration::ZERO, "x"), Err(ScheduleError::ZeroInterval));
        assert_eq!(next_after(created, Duration::ZERO, created), Err(ScheduleError::ZeroInterval));
    }

    #[test]
    fn next_wakeup_is_the_earliest_event() {
        assert_eq!(next_wakeup(None, []), None);
        assert_eq!(next_wakeup(Some(ts(50)), [ts(70), ts(30)]), Some(ts(30)));
        assert_eq!(next_wakeup(Some(ts(20)), [ts(70)]), Some(ts(20)));
    }

    proptest! {
        #[test]
        fn next_is_a_future_slot_on_the_anchor_grid(anchor in 0i64..4_000_000_000, interval_s in 1i64..1_000_000, late in 0i64..100_000_000) {
            let scheduled = ts(anchor * S);
            let now = ts((anchor + late) * S);
            let next = next_after(scheduled, Duration::from_secs(interval_s as u64), now).unwrap();
            let delta = next.as_microsecond() - scheduled.as_microsecond();
            prop_assert!(delta > 0);
            prop_assert_eq!(delta % (interval_s * S), 0);
            prop_assert!(next > now);
            prop_assert!(next.as_microsecond() - now.as_microsecond() <= interval_s * S);
        }
    }
}
