//! Fuzz targets for every parser and decoder in the core: arbitrary input and near-valid input
//! (valid forms with a few mutations), checked against an independent statement of each rule.
//!
//! Run by `e2e/reliability/fuzz.sh`. `HV_FUZZ_CASES` sets the cases per target (default 2000),
//! `HV_FUZZ_SEED` (64 hex digits) replays a run; each target prints its count and seed.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyperion_vault_core::allowlist::{Allowlist, AllowlistError};
use hyperion_vault_core::duration::{DurationError, format_go_duration, parse_go_duration};
use hyperion_vault_core::envelope::{self, EnvelopeError, NONCE_LEN};
use hyperion_vault_core::generator::{Charset, GeneratorSpec, MAX_LENGTH, MIN_LENGTH};
use hyperion_vault_core::keyring::LocalKeyring;
use hyperion_vault_core::keywrap::{EncryptionContext, WrappedDek};
use hyperion_vault_core::name::{MAX_NAME_LEN, RESERVED_LAST_SEGMENTS, SecretName};
use hyperion_vault_core::rbac::{Action, PathPattern, Rule};
use hyperion_vault_core::schedule;
use hyperion_vault_core::secret::Dek;
use hyperion_vault_core::token::{self, Fingerprint, TOKEN_PREFIX, Token};
use hyperion_vault_core::verify::find_match;
use jiff::Timestamp;
use proptest::prelude::*;
use support::{apply_byte_edits, byte_edits, bytes, fuzz, mutated, text};

// ---- allowlist ----

fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, a, b)),
        v4().prop_map(|a| a.to_ipv6_mapped()),
    ]
}

fn allowlist_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        v4().prop_map(|a| a.to_string()),
        (v4(), 0u8..=32).prop_map(|(a, l)| format!("{a}/{l}")),
        v6().prop_map(|a| a.to_string()),
        (v6(), 0u8..=128).prop_map(|(a, l)| format!("{a}/{l}")),
    ]
}

fn allowlist_spec() -> impl Strategy<Value = String> {
    prop::collection::vec((allowlist_entry(), "[ \t]{0,2}", "[ \t]{0,2}"), 1..6)
        .prop_map(|es| es.iter().map(|(e, l, r)| format!("{l}{e}{r}")).collect::<Vec<_>>().join(","))
}

fn ip_canonical_is_v4(ip: IpAddr) -> bool {
    hyperion_vault_core::allowlist::canonical(ip).is_ipv4()
}

/// What the allowlist documents: every comma-separated entry, trimmed, is an IP address (in std's
/// strict syntax: no leading zeros) or such an address, `/` and a decimal prefix length.
fn entry_is_valid(entry: &str) -> bool {
    match entry.split_once('/') {
        None => entry.parse::<IpAddr>().is_ok(),
        Some((addr, prefix)) => {
            let max = match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            !prefix.is_empty()
                && prefix.bytes().all(|b| b.is_ascii_digit())
                && prefix.parse::<u32>().is_ok_and(|p| p <= max)
        }
    }
}

#[test]
fn fuzz_core_allowlist() {
    let input = prop_oneof![
        3 => text(80),
        2 => "[0-9a-fA-F:./,\\[\\] %]{0,60}",
        3 => allowlist_spec(),
        4 => mutated(allowlist_spec()),
    ];
    fuzz("core_allowlist", 1, input, |spec| {
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        match Allowlist::parse(&spec) {
            Ok(list) if spec.trim().is_empty() => prop_assert!(list.is_empty()),
            Ok(list) => {
                // No entry silently dropped, widened or accepted as garbage.
                prop_assert_eq!(list.nets().len(), entries.len());
                for (entry, net) in entries.iter().zip(list.nets()) {
                    prop_assert!(entry_is_valid(entry), "accepted {entry:?}");
                    let alone = Allowlist::parse(entry).unwrap();
                    prop_assert_eq!(alone.nets(), std::slice::from_ref(net));
                    // An entry admits its own address, except an IPv4-mapped address under an
                    // IPv6 prefix shorter than /96: mapped clients are matched as IPv4 (fail closed).
                    let ip = entry.split('/').next().unwrap().parse::<IpAddr>().unwrap();
                    if !(net.addr().is_ipv6() && ip_canonical_is_v4(ip)) {
                        prop_assert!(list.allows(ip), "{entry:?} does not admit its own address");
                    }
                }
                let printed = list.nets().iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                prop_assert_eq!(Allowlist::parse(&printed), Ok(list));
            }
            Err(AllowlistError::EmptyEntry { position }) => {
                prop_assert!(entries[position - 1].is_empty());
                prop_assert!(entries[..position - 1].iter().all(|e| entry_is_valid(e)));
            }
            Err(AllowlistError::Invalid { entry }) => {
                prop_assert!(entries.contains(&entry.as_str()), "error names {entry:?}");
                prop_assert!(!entry_is_valid(&entry));
            }
        }
        Ok(())
    });
}

// ---- Go durations ----

/// `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`, the CRD's pattern, as a hand-written matcher.
fn matches_go_duration_pattern(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let mut i = 0;
    if b.is_empty() {
        return false;
    }
    while i < b.len() {
        let Some(mut j) = digits(i) else { return false };
        if b.get(j) == Some(&b'.') {
            let Some(k) = digits(j + 1) else { return false };
            j = k;
        }
        i = match (b.get(j), b.get(j + 1)) {
            (Some(b'm'), Some(b's')) => j + 2,
            (Some(b'h' | b'm' | b's'), _) => j + 1,
            _ => return false,
        };
    }
    true
}

/// The value of one `<whole>[.<frac>]<unit>` part in nanoseconds, truncated like Go's parser.
fn part_nanos(whole: &str, frac: &str, unit: &str) -> Option<u128> {
    let unit: u128 = match unit {
        "h" => 3_600_000_000_000,
        "m" => 60_000_000_000,
        "s" => 1_000_000_000,
        _ => 1_000_000,
    };
    let w: u128 = whole.trim_start_matches('0').parse().unwrap_or(0);
    let frac = &frac[..frac.len().min(18)];
    let f: u128 = frac.parse().unwrap_or(0);
    let den = 10u128.pow(frac.len() as u32);
    w.checked_mul(unit)?.checked_add(f * unit / den)
}

fn duration_parts() -> impl Strategy<Value = Vec<(String, String, &'static str)>> {
    let unit = prop::sample::select(vec!["ms", "s", "m", "h"]);
    prop::collection::vec(("[0-9]{1,24}", "([0-9]{1,22})?", unit), 1..5)
}

fn join_parts(parts: &[(String, String, &str)]) -> String {
    parts
        .iter()
        .map(|(w, f, u)| if f.is_empty() { format!("{w}{u}") } else { format!("{w}.{f}{u}") })
        .collect()
}

#[test]
fn fuzz_core_duration() {
    let valid = || duration_parts().prop_map(|p| join_parts(&p));
    let input = prop_oneof![
        3 => text(40),
        3 => "[0-9.hmsµ +-]{0,24}",
        2 => valid(),
        4 => mutated(valid()),
    ];
    fuzz("core_duration", 1, input, |t| {
        let matches = matches_go_duration_pattern(&t);
        match parse_go_duration(&t) {
            Ok(_) => prop_assert!(matches, "accepted {t:?}, which the CRD pattern rejects"),
            Err(DurationError::Overflow(_)) => prop_assert!(matches),
            Err(DurationError::Syntax(_)) => {
                prop_assert!(!matches, "rejected {t:?}, which the pattern accepts")
            }
        }
        Ok(())
    });
    fuzz("core_duration_value", 2, duration_parts(), |parts| {
        let t = join_parts(&parts);
        let expected = parts.iter().try_fold(0u128, |acc, (w, f, u)| acc.checked_add(part_nanos(w, f, u)?));
        let expected = expected.and_then(|n| {
            let secs = u64::try_from(n / 1_000_000_000).ok()?;
            Some(Duration::new(secs, (n % 1_000_000_000) as u32))
        });
        match expected {
            Some(d) => prop_assert_eq!(parse_go_duration(&t), Ok(d)),
            None => prop_assert!(matches!(parse_go_duration(&t), Err(DurationError::Overflow(_)))),
        }
        Ok(())
    });
    fuzz("core_duration_round_trip", 2, (any::<u64>(), 0u32..1000), |(secs, millis)| {
        let d = Duration::new(secs, millis * 1_000_000);
        prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        Ok(())
    });
}

// ---- secret names ----

/// DESIGN.md §7, restated: 1-253 characters of `/`-separated segments of `[A-Za-z0-9._-]`, no
/// segment empty, `.` or `..`, the last segment not a reserved route word.
fn name_is_valid(raw: &str) -> bool {
    !raw.is_empty()
        && raw.chars().count() <= MAX_NAME_LEN
        && raw.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        && !RESERVED_LAST_SEGMENTS.contains(&raw.rsplit('/').next().unwrap_or(raw))
}

fn name_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[A-Za-z0-9._-]{1,12}",
        1 => prop::sample::select(vec![".", "..", "verify", "rotate", "versions", "..a", "a.."]).prop_map(String::from),
    ]
}

fn secret_name() -> impl Strategy<Value = String> {
    prop::collection::vec(name_segment(), 1..6).prop_map(|s| s.join("/"))
}

#[test]
fn fuzz_core_secret_name() {
    let input = prop_oneof![
        3 => text(300),
        2 => "[A-Za-z0-9._/:%\\\\-]{0,260}",
        1 => "[a-z]{248,258}",
        3 => secret_name(),
        4 => mutated(secret_name()),
    ];
    fuzz("core_secret_name", 1, input, |raw| {
        let parsed = SecretName::parse(&raw);
        prop_assert_eq!(parsed.is_ok(), name_is_valid(&raw), "{:?} -> {:?}", raw, parsed);
        if let Ok(name) = parsed {
            prop_assert_eq!(name.as_str(), raw.as_str());
            let shown = name.to_string();
            prop_assert_eq!(SecretName::parse(&shown), Ok(name));
        }
        Ok(())
    });
}

// ---- tokens ----

fn token_like() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{43}".prop_map(|body| format!("{TOKEN_PREFIX}{body}"))
}

#[test]
fn fuzz_core_token() {
    let input = prop_oneof![3 => text(80), 2 => token_like(), 4 => mutated(token_like())];
    fuzz("core_token", 1, (input, text(60)), |(presented, other)| {
        let shaped = presented.strip_prefix(TOKEN_PREFIX).is_some_and(|b| {
            b.len() == 43 && b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        prop_assert_eq!(token::looks_like_token(&presented), shaped);
        let fp = Fingerprint::of(&presented);
        prop_assert_eq!(Token::from_presented(&presented).fingerprint(), fp);
        prop_assert_eq!(Fingerprint::from_bytes(fp.as_bytes()), Some(fp));
        let hex = fp.to_hex();
        prop_assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        prop_assert!(token::verify(&presented, &fp));
        prop_assert_eq!(token::verify(&other, &fp), other == presented);
        Ok(())
    });
    fuzz("core_fingerprint_bytes", 1, bytes(64), |b| {
        prop_assert_eq!(Fingerprint::from_bytes(&b).is_some(), b.len() == 32);
        Ok(())
    });
}

// ---- local keyring ----

fn key_b64() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::array::uniform32(any::<u8>()).prop_map(|k| STANDARD.encode(k)),
        1 => bytes(48).prop_map(|k| STANDARD.encode(k)),
    ]
}

fn keyring_spec() -> impl Strategy<Value = String> {
    let entry = (
        prop_oneof![4 => "[A-Za-z0-9._-]{1,16}", 1 => "[A-Za-z0-9._-]{60,66}", 1 => text(8)],
        key_b64(),
        "[ ]{0,2}",
    );
    prop::collection::vec(entry, 1..4).prop_map(|es| {
        es.iter().map(|(id, k, pad)| format!("{pad}{id}:{pad}{k}{pad}")).collect::<Vec<_>>().join(",")
    })
}

/// The documented keyring syntax: `id:base64key[,id:base64key...]`, ids 1-64 of `[A-Za-z0-9._-]`,
/// unique, keys exactly 32 bytes of standard base64. Returns the ids in order.
fn keyring_ids(spec: &str) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    for entry in spec.split(',') {
        let (id, key) = entry.trim().split_once(':')?;
        let id_ok = (1..=64).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !ids.iter().any(|i| i == id);
        if !id_ok || STANDARD.decode(key.trim()).ok()?.len() != 32 {
            return None;
        }
        ids.push(id.to_owned());
    }
    Some(ids)
}

fn ctx(secret: &str, version: u32) -> EncryptionContext<'_> {
    EncryptionContext { secret, version }
}

#[test]
fn fuzz_core_keyring_parse() {
    let input = prop_oneof![
        2 => text(120),
        2 => "[A-Za-z0-9+/=:, ._-]{0,120}",
        3 => keyring_spec(),
        4 => mutated(keyring_spec()),
    ];
    fuzz("core_keyring_parse", 1, input, |spec| {
        let parsed = LocalKeyring::parse(&spec);
        let expected = keyring_ids(&spec);
        prop_assert_eq!(parsed.is_ok(), expected.is_some(), "{:?}: {:?}", spec, parsed.as_ref().err());
        match parsed {
            Ok(ring) => {
                prop_assert_eq!(ring.key_ids().collect::<Vec<_>>(), expected.unwrap());
                let dek = Dek::generate().unwrap();
                let wrapped = ring.wrap(&dek, ctx("a/b", 1)).unwrap();
                let back = ring.unwrap(&wrapped, ctx("a/b", 1)).unwrap();
                prop_assert_eq!(back.expose(), dek.expose());
            }
            Err(e) => {
                // An error names the entry, never its key material (nor, in a mistyped entry, the
                // text before the ':', which may be the key).
                let message = format!("{e} {e:?}");
                let pairs: Vec<(&str, &str)> =
                    spec.split(',').filter_map(|entry| entry.trim().split_once(':')).collect();
                for (id, key) in &pairs {
                    let key = key.trim();
                    let also_an_id = pairs.iter().any(|(i, _)| {
                        i.contains(key)
                            && keyring_ids(&format!("{i}:{}", STANDARD.encode([0u8; 32]))).is_some()
                    });
                    if key.len() >= 8 && !also_an_id {
                        prop_assert!(!message.contains(key), "{message:?} leaks {key:?}");
                    }
                    let id_invalid = keyring_ids(&format!("{id}:{}", STANDARD.encode([0u8; 32]))).is_none();
                    if id.len() >= 8 && id_invalid {
                        prop_assert!(!message.contains(id), "{message:?} repeats the invalid id {id:?}");
                    }
                }
            }
        }
        Ok(())
    });
}

fn fixed_ring() -> LocalKeyring {
    LocalKeyring::parse(&format!("k2:{},k1:{}", STANDARD.encode([2u8; 32]), STANDARD.encode([1u8; 32])))
        .unwrap()
}

#[test]
fn fuzz_core_keyring_unwrap() {
    let ring = fixed_ring();
    let key_id = prop_oneof![Just("k1".to_owned()), Just("k2".to_owned()), text(8)];
    let arbitrary = (key_id, bytes(120), text(20), any::<u32>());
    fuzz("core_keyring_unwrap_arbitrary", 1, arbitrary, |(key_id, blob, secret, version)| {
        let wrapped = WrappedDek { key_id, blob };
        prop_assert!(ring.unwrap(&wrapped, ctx(&secret, version)).is_err());
        Ok(())
    });
    let mutation =
        (byte_edits(), prop::option::of(text(8)), prop::option::of(text(12)), prop::option::of(any::<u32>()));
    fuzz("core_keyring_unwrap_mutated", 1, (any::<u32>(), mutation), |(version, (edit, id, secret, v2))| {
        let dek = Dek::generate().unwrap();
        let good = ring.wrap(&dek, ctx("team/db", version)).unwrap();
        let back = ring.unwrap(&good, ctx("team/db", version)).unwrap();
        prop_assert_eq!(back.expose(), dek.expose());
        let mut bad = good.clone();
        apply_byte_edits(&mut bad.blob, &edit);
        if let Some(id) = id {
            bad.key_id = id;
        }
        let secret = secret.unwrap_or_else(|| "team/db".to_owned());
        let v2 = v2.unwrap_or(version);
        let changed = bad != good || secret != "team/db" || v2 != version;
        let opened = ring.unwrap(&bad, ctx(&secret, v2));
        prop_assert_eq!(opened.is_ok(), !changed, "a tampered wrapped key must not unwrap");
        Ok(())
    });
}

// ---- envelope ----

#[test]
fn fuzz_core_envelope_open() {
    let dek = Dek::generate().unwrap();
    let arbitrary = (bytes(40), bytes(200), text(20), any::<u32>());
    fuzz("core_envelope_open_arbitrary", 1, arbitrary, |(nonce, ct, name, version)| {
        match envelope::open(&dek, &name, version, &nonce, &ct) {
            Err(EnvelopeError::NonceLength(n)) => prop_assert!(n == nonce.len() && n != NONCE_LEN),
            Err(EnvelopeError::Open) => prop_assert_eq!(nonce.len(), NONCE_LEN),
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            Ok(_) => return Err(TestCaseError::fail("forged ciphertext opened")),
        }
        Ok(())
    });
    let tamper =
        (byte_edits(), byte_edits(), prop::option::of(secret_name()), prop::option::of(any::<u32>()));
    let case = (bytes(300), secret_name(), any::<u32>(), tamper);
    fuzz(
        "core_envelope_open_mutated",
        1,
        case,
        |(value, name, version, (ct_edit, nonce_edit, name2, v2))| {
            let sealed = envelope::seal(&dek, &name, version, &value).unwrap();
            let opened = envelope::open(&dek, &name, version, &sealed.nonce, &sealed.ciphertext).unwrap();
            prop_assert_eq!(opened.expose(), &value[..]);
            let mut ct = sealed.ciphertext.clone();
            apply_byte_edits(&mut ct, &ct_edit);
            let mut nonce = sealed.nonce.to_vec();
            apply_byte_edits(&mut nonce, &nonce_edit);
            let name2 = name2.unwrap_or_else(|| name.clone());
            let v2 = v2.unwrap_or(version);
            let changed = ct != sealed.ciphertext || nonce != sealed.nonce || name2 != name || v2 != version;
            let reopened = envelope::open(&dek, &name2, v2, &nonce, &ct);
            prop_assert_eq!(
                reopened.is_ok(),
                !changed,
                "any change to ciphertext, nonce or binding must fail"
            );
            Ok(())
        },
    );
}

// ---- RBAC ----

fn path_pattern() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,6}(/[a-z0-9._-]{1,6}){0,3}/?\\*?"
}

/// A pattern is an exact name or a prefix ending in one `*`; names' characters only, no leading
/// or doubled `/`, and an exact pattern is not empty.
fn pattern_is_valid(s: &str) -> bool {
    let (body, prefix) = s.strip_suffix('*').map_or((s, false), |b| (b, true));
    body.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        && (prefix || !body.is_empty())
        && !body.contains("//")
        && !body.starts_with('/')
}

#[test]
fn fuzz_core_rbac() {
    let action = prop_oneof![
        2 => text(16),
        1 => prop::sample::select(Action::ALL_NAMES.to_vec()).prop_map(String::from),
        2 => mutated(prop::sample::select(Action::ALL_NAMES.to_vec()).prop_map(String::from)),
    ];
    let pattern = prop_oneof![2 => text(24), 2 => "[a-z/*. _-]{0,12}", 2 => path_pattern(), 3 => mutated(path_pattern())];
    fuzz("core_rbac", 1, (action, pattern, secret_name()), |(action, pattern, path)| {
        match action.parse::<Action>() {
            Ok(a) => prop_assert_eq!(a.as_str(), action.as_str()),
            Err(_) => prop_assert!(!Action::ALL_NAMES.contains(&action.as_str())),
        }
        match pattern.parse::<PathPattern>() {
            Ok(p) => {
                prop_assert!(pattern_is_valid(&pattern), "accepted {pattern:?}");
                prop_assert_eq!(p.to_string(), pattern.clone());
                prop_assert_eq!(p.to_string().parse::<PathPattern>(), Ok(p.clone()));
                let expected = match pattern.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == pattern,
                };
                prop_assert_eq!(p.matches(&path), expected);
            }
            Err(_) => prop_assert!(!pattern_is_valid(&pattern), "rejected {pattern:?}"),
        }
        prop_assert_eq!(
            Rule::parse(&action, &pattern).is_ok(),
            action.parse::<Action>().is_ok() && pattern.parse::<PathPattern>().is_ok()
        );
        Ok(())
    });
}

// ---- generator settings ----

#[test]
fn fuzz_core_generator() {
    let name = prop_oneof![
        2 => text(20),
        1 => prop::sample::select(Charset::NAMES.to_vec()).prop_map(String::from),
        2 => mutated(prop::sample::select(Charset::NAMES.to_vec()).prop_map(String::from)),
    ];
    let length =
        prop_oneof![any::<u32>(), 0u32..5000, MIN_LENGTH - 2..MIN_LENGTH + 2, MAX_LENGTH - 2..MAX_LENGTH + 2];
    fuzz("core_generator", 4, (name, length), |(name, length)| {
        let charset = match name.parse::<Charset>() {
            Ok(c) => {
                prop_assert_eq!(c.as_str(), name.as_str());
                c
            }
            Err(_) => {
                prop_assert!(!Charset::NAMES.contains(&name.as_str()));
                Charset::Alphanumeric
            }
        };
        match GeneratorSpec::new(length, charset) {
            Ok(spec) => {
                prop_assert!((MIN_LENGTH..=MAX_LENGTH).contains(&length));
                let v = spec.generate().unwrap();
                prop_assert_eq!(v.len(), length as usize);
                let alphabet = charset.alphabet();
                prop_assert!(v.expose().iter().all(|b| alphabet.contains(b)));
            }
            Err(_) => prop_assert!(!(MIN_LENGTH..=MAX_LENGTH).contains(&length)),
        }
        Ok(())
    });
}

// ---- verify ----

#[test]
fn fuzz_core_verify() {
    let candidates = prop::collection::vec((1u32..10, bytes(12)), 0..6);
    fuzz("core_verify", 1, (bytes(12), candidates), |(presented, candidates)| {
        let naive = candidates.iter().find(|(_, v)| *v == presented).map(|(n, _)| *n);
        let found = find_match(&presented, candidates.iter().map(|(n, v)| (*n, v.as_slice())));
        prop_assert_eq!(found, naive);
        Ok(())
    });
}

// ---- schedule arithmetic on spec-derived durations ----

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (Timestamp::MIN.as_microsecond()..=Timestamp::MAX.as_microsecond())
            .prop_map(|us| Timestamp::from_microsecond(us).unwrap()),
        (0i64..4_102_444_800).prop_map(|s| Timestamp::from_second(s).unwrap()),
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..10 * 365 * 86_400).prop_map(Duration::from_secs),
        (0u64..2_000).prop_map(Duration::from_nanos),
    ]
}

#[test]
fn fuzz_core_schedule() {
    fuzz("core_schedule", 1, (timestamp(), timestamp(), duration(), text(40)), |(at, now, interval, id)| {
        let spread = schedule::spread(&id, interval);
        prop_assert!(spread <= schedule::MAX_SPREAD && spread <= interval);
        if let Ok(first) = schedule::first_rotation(at, interval, &id) {
            prop_assert!(first > at);
        }
        if let Ok(next) = schedule::next_after(at, interval, now) {
            prop_assert!(next > now && next > at);
        }
        if let Ok(expiry) = schedule::grace_expiry(at, interval) {
            prop_assert!(expiry >= at);
        }
        Ok(())
    });
}
