//! The fuzz harness: proptest's runner with a case count from `HV_FUZZ_CASES`, a printed and
//! replayable seed (`HV_FUZZ_SEED`), and generators for arbitrary and near-valid input.
//!
//! Also included by `api/tests/fuzz.rs` (`#[path]`), so both crates fuzz with one harness.
#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestError, TestRng, TestRunner};

/// Cases per target unless `HV_FUZZ_CASES` says otherwise.
pub const DEFAULT_CASES: u32 = 2000;

fn base_cases() -> u32 {
    std::env::var("HV_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn seed() -> [u8; 32] {
    if let Some(hex) = std::env::var("HV_FUZZ_SEED").ok().filter(|s| s.len() == 64) {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("HV_FUZZ_SEED is 64 hex digits");
        }
        return seed;
    }
    static SALT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    seed[20..28].copy_from_slice(&SALT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    seed
}

/// Runs one fuzz target: `HV_FUZZ_CASES / divisor` cases (at least 1) of `strategy` through `test`.
/// Prints `fuzz target=<name> cases=<n> failures=<0|1> seed=<hex> ms=<t>`; panics with the
/// shrunk failing input on failure.
pub fn fuzz<S>(name: &str, divisor: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = (base_cases() / divisor.max(1)).max(1);
    let seed = seed();
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_global_rejects: cases.saturating_mul(4),
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let ran = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        ran.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    let ms = started.elapsed().as_millis();
    let failed = u8::from(result.is_err());
    println!(
        "fuzz target={name} cases={} failures={failed} seed={seed_hex} ms={ms}",
        ran.load(Ordering::Relaxed)
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!(
                "fuzz target {name} failed: {reason}\nminimal input: {value:#?}\nreplay: HV_FUZZ_SEED={seed_hex}"
            )
        }
        Err(TestError::Abort(reason)) => {
            panic!("fuzz target {name} aborted: {reason} (HV_FUZZ_SEED={seed_hex})")
        }
    }
}

/// Characters that matter to the parsers here, plus a few that trip naive ones.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ',', ':', '/', '.', '*', '[', ']', '%', '-', '_', '+', '=', ' ', '\t', '\n', '\r', '\0', '\\',
            '0', '9', 'a', 'f', 'h', 'm', 's', 'A', 'Z', '{', '}', '"',
        ]),
        2 => any::<char>(),
        1 => prop::sample::select(vec!['é', 'µ', '\u{200b}', '\u{3000}', '\u{feff}', '\u{85}', '٣', '𝟙']),
    ]
}

/// Arbitrary text up to `max` characters: printable, control and non-ASCII alike.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::collection::vec(any::<char>(), 0..=max).prop_map(|c| c.into_iter().collect()),
        2 => prop::collection::vec(interesting_char(), 0..=max).prop_map(|c| c.into_iter().collect()),
        1 => Just(String::new()),
    ]
}

pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// One edit of a string; positions are taken modulo the length when applied.
#[derive(Debug, Clone)]
pub enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
    /// Repeats a slice of the input at its end (duplicated entries, doubled separators).
    Duplicate(usize, usize),
    Truncate(usize),
    Swap(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<usize>();
    prop_oneof![
        3 => (i, interesting_char()).prop_map(|(p, c)| Edit::Insert(p, c)),
        3 => i.prop_map(Edit::Delete),
        3 => (i, interesting_char()).prop_map(|(p, c)| Edit::Replace(p, c)),
        1 => (i, i).prop_map(|(a, b)| Edit::Duplicate(a, b)),
        1 => i.prop_map(Edit::Truncate),
        1 => (i, i).prop_map(|(a, b)| Edit::Swap(a, b)),
    ]
}

pub fn apply_edits(s: &str, edits: &[Edit]) -> String {
    let mut c: Vec<char> = s.chars().collect();
    for e in edits {
        let n = c.len();
        match *e {
            Edit::Insert(p, ch) => c.insert(p % (n + 1), ch),
            Edit::Delete(p) if n > 0 => {
                c.remove(p % n);
            }
            Edit::Replace(p, ch) if n > 0 => c[p % n] = ch,
            Edit::Duplicate(a, b) if n > 0 => {
                let (a, b) = (a % n, b % n);
                let slice: Vec<char> = c[a.min(b)..=a.max(b)].to_vec();
                c.extend(slice);
            }
            Edit::Truncate(p) => c.truncate(p % (n + 1)),
            Edit::Swap(a, b) if n > 0 => c.swap(a % n, b % n),
            _ => {}
        }
    }
    c.into_iter().collect()
}

/// A valid form from `base` with one to four edits: the near misses where parsers go wrong.
pub fn mutated(base: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (base, prop::collection::vec(edit(), 1..=4)).prop_map(|(s, edits)| apply_edits(&s, &edits))
}

/// One edit of a byte string; positions are taken modulo the length when applied.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    FlipBit(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
}

/// Zero to three byte edits (zero keeps the input intact, so the unmodified path is checked too).
pub fn byte_edits() -> impl Strategy<Value = Vec<ByteEdit>> {
    let i = any::<usize>();
    let e = prop_oneof![
        4 => (i, 0u8..8).prop_map(|(p, b)| ByteEdit::FlipBit(p, b)),
        1 => (i, any::<u8>()).prop_map(|(p, b)| ByteEdit::Insert(p, b)),
        1 => i.prop_map(ByteEdit::Delete),
        1 => (i, any::<u8>()).prop_map(|(p, b)| ByteEdit::Replace(p, b)),
        1 => i.prop_map(ByteEdit::Truncate),
        1 => bytes(8).prop_map(ByteEdit::Extend),
    ];
    prop::collection::vec(e, 0..=3)
}

pub fn apply_byte_edits(b: &mut Vec<u8>, edits: &[ByteEdit]) {
    for e in edits {
        let n = b.len();
        match e {
            ByteEdit::FlipBit(p, bit) if n > 0 => b[p % n] ^= 1 << bit,
            ByteEdit::Insert(p, v) => b.insert(p % (n + 1), *v),
            ByteEdit::Delete(p) if n > 0 => {
                b.remove(p % n);
            }
            ByteEdit::Replace(p, v) if n > 0 => b[p % n] = *v,
            ByteEdit::Truncate(p) => b.truncate(p % (n + 1)),
            ByteEdit::Extend(more) => b.extend_from_slice(more),
            _ => {}
        }
    }
}
