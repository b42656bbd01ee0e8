//! Golden vectors of the rotation schedule (`hyperion_vault_core::schedule`), as JSON on stdout.
//!
//! The reliability suite replays a secret's version history against the schedule to tell
//! scheduled rotations from forced ones (`e2e/reliability/schedule.py`); it checks its model of
//! the schedule against these vectors, so the model cannot drift from the product's.
//!
//!   cargo run -q -p hyperion-vault-core --example schedule_vectors
//!
//! Output: `{"spread": [[identity, interval_us, spread_us], ..], "first_rotation": [[created_us,
//! interval_us, identity, first_us], ..], "next_after": [[scheduled_us, interval_us, now_us,
//! next_us], ..], "is_due": [[next_us, now_us, due], ..]}`. Identities are plain ASCII names.

use std::time::Duration;

use hyperion_vault_core::schedule::{first_rotation, is_due, next_after, spread};
use jiff::Timestamp;

const S: i64 = 1_000_000;
const US: u64 = 1_000_000;

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).expect("vector times are inside jiff's range")
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).expect("vector durations fit in u64 microseconds")
}

/// A deterministic pseudo-random sequence (xorshift64*), so the vectors are the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Intervals around every edge of the spread window (under 10 µs it is empty; over 3,000 s it
    // is capped at 5 min) and the few-second intervals the suite uses.
    let mut intervals: Vec<u64> = vec![1, 9, 10, 11, 999_999, US, 3 * US, 4 * US, 5 * US, 8 * US];
    intervals.extend([3_000 * US, 3_000 * US + 1, 86_400 * US, 3_650 * 86_400 * US]);
    intervals.extend((0..20).map(|_| 1 + rng.below(10 * 86_400 * US)));
    let mut identities: Vec<String> =
        vec!["x".into(), "ns/a".into(), "rel-restarts-a1b2c3/s0".into(), "rel/restarts-a1b2c3/a3".into()];
    identities.extend((0..40).map(|i| format!("ns-{:x}/secret-{i}", rng.next())));

    let mut spreads = Vec::new();
    let mut firsts = Vec::new();
    for id in &identities {
        assert!(id.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'), "plain JSON strings");
        for &iv in &intervals {
            let interval = Duration::from_micros(iv);
            spreads.push(format!("[\"{id}\",{iv},{}]", us(spread(id, interval))));
            let created = 1_700_000_000 * S + rng.below(100_000 * US) as i64;
            let first = first_rotation(ts(created), interval, id).expect("inside the range");
            firsts.push(format!("[{created},{iv},\"{id}\",{}]", first.as_microsecond()));
        }
    }

    let mut nexts = Vec::new();
    let mut dues = Vec::new();
    for i in 0..400 {
        let iv = intervals[i % intervals.len()];
        let scheduled = 1_700_000_000 * S + rng.below(1_000_000 * US) as i64;
        let ivs = i64::try_from(iv).expect("interval fits");
        // Before the slot, exactly on it, exactly on a later multiple, just before and after one,
        // and far later (many missed periods).
        let now = match i % 7 {
            0 => scheduled - 1 - rng.below(iv) as i64,
            1 => scheduled,
            2 => scheduled + ivs * (1 + rng.below(5) as i64),
            3 => scheduled + ivs * (1 + rng.below(5) as i64) - 1,
            4 => scheduled + ivs * (1 + rng.below(5) as i64) + 1,
            5 => scheduled + rng.below(iv.saturating_mul(1_000).min(1_000_000 * US)) as i64,
            _ => scheduled + rng.below(3 * iv) as i64 - ivs,
        };
        let next = next_after(ts(scheduled), Duration::from_micros(iv), ts(now)).expect("inside the range");
        nexts.push(format!("[{scheduled},{iv},{now},{}]", next.as_microsecond()));
        dues.push(format!("[{scheduled},{now},{}]", is_due(ts(scheduled), ts(now))));
    }

    println!(
        "{{\"spread\":[{}],\"first_rotation\":[{}],\"next_after\":[{}],\"is_due\":[{}]}}",
        spreads.join(","),
        firsts.join(","),
        nexts.join(","),
        dues.join(",")
    );
}
