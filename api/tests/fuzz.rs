//! Fuzz targets for everything the API decodes from a request: JSON bodies (as model types and
//! through the router), the pagination cursor, `X-Forwarded-For`, the bearer header, names in the
//! path, query parameters and route labels. Arbitrary and near-valid input alike; accepted values
//! must satisfy the documented limits (`api/openapi.json`), rejected ones get a 4xx, never a 5xx.
//!
//! Run by `e2e/reliability/fuzz.sh`; `HV_FUZZ_CASES` and `HV_FUZZ_SEED` as in `core/tests/fuzz.rs`.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod common;
// The fuzz harness is shared with core's fuzz targets: one file, included by path.
#[path = "../../core/tests/support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ALLOWED_PEER, Harness, Options};
use hyperion_vault_api::backend::{LockoutPolicy, NewSecret, RoleDef, SecretKind};
use hyperion_vault_api::client_ip::{FORWARDED_FOR, ProxyTrust, client_ip};
use hyperion_vault_api::cursor;
use hyperion_vault_api::memory::MemoryBackend;
use hyperion_vault_api::model::{
    BatchRequest, CreateRoleRequest, CreateSecretRequest, CreateTokenRequest, MAX_BATCH_NAMES,
    MAX_DESCRIPTION_CHARS, MAX_DURATION_SECS, MAX_VALUE_BYTES, NewToken, SecretUpdate, UpdateRoleRequest,
    UpdateSecretRequest, VerifyRequest, parse_batch, parse_ident, role_from_update,
};
use hyperion_vault_api::router::route_template;
use hyperion_vault_core::allowlist::{Allowlist, canonical};
use hyperion_vault_core::generator::Charset;
use hyperion_vault_core::name::{NameError, SecretName};
use hyperion_vault_core::rbac::Action;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::{Map, Value, json};
use support::{apply_byte_edits, byte_edits, bytes, fuzz, mutated, text};

/// The oracle's verdict on a JSON object must be the decoder's: accepted exactly when `expected`.
macro_rules! prop_assert_verdict {
    ($result:expr, $expected:expr, $object:expr) => {
        prop_assert_eq!(
            $result.is_ok(),
            $expected,
            "{} -> {:?}",
            Value::Object($object.clone()),
            $result.as_ref().err()
        )
    };
}

// ---- generators ----

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        text(24).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 14] = [
    "name",
    "kind",
    "value",
    "description",
    "rotation_interval_secs",
    "grace_period_secs",
    "generator",
    "length",
    "charset",
    "names",
    "permissions",
    "is_admin",
    "role",
    "expires_in_secs",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(FIELDS.to_vec()).prop_map(String::from), 1 => text(8)]
}

fn name_string() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        8 => "[A-Za-z0-9._-]{1,10}",
        1 => prop::sample::select(vec![".", "..", "verify", "rotate", "versions"]).prop_map(String::from),
    ];
    let valid = prop::collection::vec(seg, 1..5).prop_map(|s| s.join("/")).boxed();
    prop_oneof![6 => valid.clone(), 3 => mutated(valid), 1 => "[a-z]{250,256}", 1 => text(20)]
}

/// A string field, or occasionally a value of another type.
fn string_or_other(s: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    prop_oneof![12 => s.prop_map(Value::String), 1 => json_value()]
}

fn value_field() -> impl Strategy<Value = Value> {
    let sized = prop_oneof![Just(MAX_VALUE_BYTES - 1), Just(MAX_VALUE_BYTES), Just(MAX_VALUE_BYTES + 1),];
    prop_oneof![
        6 => string_or_other("\\PC{0,24}"),
        1 => sized.clone().prop_map(|n| Value::String("v".repeat(n))),
        // Multi-byte characters: the limit counts bytes, not characters.
        1 => sized.prop_map(|n| Value::String("é".repeat(n / 2) + &"v".repeat(n % 2))),
        1 => Just(Value::String(String::new())),
    ]
}

fn description_field() -> impl Strategy<Value = Value> {
    let boundary = prop_oneof![Just(MAX_DESCRIPTION_CHARS), Just(MAX_DESCRIPTION_CHARS + 1)];
    prop_oneof![
        6 => string_or_other(text(30)),
        2 => string_or_other("[a-z \n\t]{0,30}"),
        1 => (boundary, prop::sample::select(vec!['d', 'é', '\n'])).prop_map(|(n, c)| Value::String(c.to_string().repeat(n))),
    ]
}

fn secs_field() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..=MAX_DURATION_SECS + 2).prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![0, 1, MAX_DURATION_SECS, MAX_DURATION_SECS + 1, u64::MAX]).prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![60.0, 60.5, -1.0, -0.0, 0.0, 1e19, 315_360_000.0, 315_360_001.0, 1e-9])
            .prop_map(|f| json!(f)),
        1 => json_value(),
    ]
}

fn charset_name() -> impl Strategy<Value = String> {
    let names = prop::sample::select(Charset::NAMES.to_vec()).prop_map(String::from);
    prop_oneof![4 => names.clone(), 1 => mutated(names)]
}

fn generator_field() -> impl Strategy<Value = Value> {
    let length = prop_oneof![
        3 => (0u32..5000).prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![15.0, 16.0, 32.0, 32.5, 4096.0, 4097.0, -16.0, 1e30]).prop_map(|f| json!(f)),
        1 => json_value(),
    ];
    let object = (
        prop::option::weighted(0.95, length),
        prop::option::weighted(0.95, string_or_other(charset_name())),
        prop::option::weighted(0.05, json_value()),
    )
        .prop_map(|(length, charset, extra)| {
            let mut m = Map::new();
            length.map(|v| m.insert("length".into(), v));
            charset.map(|v| m.insert("charset".into(), v));
            extra.map(|v| m.insert("extra".into(), v));
            Value::Object(m)
        });
    prop_oneof![8 => object, 1 => json_value()]
}

/// An object with each of `fields` present with the given probability, plus rarely an unknown one.
fn object(fields: Vec<(&'static str, f64, BoxedStrategy<Value>)>) -> impl Strategy<Value = Value> {
    let parts: Vec<_> =
        fields.into_iter().map(|(k, p, s)| prop::option::weighted(p, s).prop_map(move |v| (k, v))).collect();
    (parts, prop::option::weighted(0.05, (field_name(), json_value()))).prop_map(|(parts, extra)| {
        let mut m = Map::new();
        if let Some((k, v)) = extra {
            m.insert(k, v);
        }
        for (k, v) in parts {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        }
        Value::Object(m)
    })
}

/// Body bytes: a near-valid object as JSON text (sometimes with byte edits), arbitrary JSON, or
/// arbitrary bytes. The `Value` is `Some` when the bytes are exactly its serialization.
fn body(
    near_valid: impl Strategy<Value = Value> + 'static,
) -> impl Strategy<Value = (Option<Value>, Vec<u8>)> {
    let v = near_valid.prop_map(|v| (Some(v.clone()), v.to_string().into_bytes())).boxed();
    let edited = (v.clone(), byte_edits()).prop_map(
        |((_, mut b), e): ((Option<Value>, Vec<u8>), Vec<support::ByteEdit>)| {
            apply_byte_edits(&mut b, &e);
            (None, b)
        },
    );
    prop_oneof![
        8 => v,
        2 => edited,
        1 => json_value().prop_map(|v| (None, v.to_string().into_bytes())),
        1 => bytes(64).prop_map(|b| (None, b)),
    ]
}

// ---- oracles: the documented limits, restated ----

/// `^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$`, at most 1024 characters.
fn description_ok(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => {
            s.chars().count() <= MAX_DESCRIPTION_CHARS
                && !s
                    .chars()
                    .any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'))
        }
        _ => false,
    }
}

/// A whole number of seconds (integer, or float without fraction) in `min..=MAX_DURATION_SECS`.
fn secs_ok(v: Option<&Value>, min: u64) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => (min..=MAX_DURATION_SECS).contains(&u),
            (None, Some(f)) => f.fract() == 0.0 && f >= min as f64 && f <= MAX_DURATION_SECS as f64,
            _ => false,
        },
        _ => false,
    }
}

fn secs_of(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_f64).map(|f| f as u64)
}

/// 1 to 65536 bytes of UTF-8.
fn value_ok(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => (1..=MAX_VALUE_BYTES).contains(&s.len()),
        _ => false,
    }
}

fn present(v: Option<&Value>) -> bool {
    v.is_some_and(|v| !v.is_null())
}

fn only_keys(m: &Map<String, Value>, allowed: &[&str]) -> bool {
    m.keys().all(|k| allowed.contains(&k.as_str()))
}

/// `{length: 16..=4096 (whole), charset: one of the names}` and nothing else.
fn generator_ok(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(g)) => {
            let length_ok = g
                .get("length")
                .and_then(Value::as_f64)
                .is_some_and(|f| f.fract() == 0.0 && (16.0..=4096.0).contains(&f));
            let charset_ok =
                g.get("charset").and_then(Value::as_str).is_some_and(|c| Charset::NAMES.contains(&c));
            length_ok && charset_ok && only_keys(g, &["length", "charset"])
        }
        _ => false,
    }
}

fn name_ok(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| SecretName::parse(s).is_ok())
}

/// `^[a-z0-9][a-z0-9._-]{0,62}$`
fn ident_ok(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-_".contains(c))
}

/// The documented permission path: `^(\*|[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*(/?\*)?)$`, at most
/// 254 characters.
fn permission_path_ok(p: &str) -> bool {
    if p == "*" {
        return true;
    }
    if p.len() > 254 {
        return false;
    }
    let body = p.strip_suffix("/*").or_else(|| p.strip_suffix('*')).unwrap_or(p);
    !body.is_empty()
        && body
            .split('/')
            .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
}

fn permissions_ok(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::Array(items)) => items.iter().all(|p| match p {
            Value::Object(m) => {
                only_keys(m, &["action", "path"])
                    && m.get("action").and_then(Value::as_str).is_some_and(|a| Action::ALL_NAMES.contains(&a))
                    && m.get("path").and_then(Value::as_str).is_some_and(permission_path_ok)
            }
            _ => false,
        }),
        _ => false,
    }
}

// ---- JSON request types (model level) ----

fn create_secret_object() -> impl Strategy<Value = Value> {
    let kind = string_or_other(prop_oneof![
        4 => Just("manual".to_owned()),
        4 => Just("automatic".to_owned()),
        1 => mutated(Just("manual".to_owned())),
    ]);
    object(vec![
        ("name", 0.97, string_or_other(name_string()).boxed()),
        ("kind", 0.97, kind.boxed()),
        ("value", 0.7, value_field().boxed()),
        ("description", 0.3, description_field().boxed()),
        ("rotation_interval_secs", 0.5, secs_field().boxed()),
        ("grace_period_secs", 0.3, secs_field().boxed()),
        ("generator", 0.3, generator_field().boxed()),
    ])
}

#[test]
fn fuzz_api_create_secret_body() {
    fuzz("api_create_secret_body", 1, body(create_secret_object()), |(value, bytes)| {
        let parsed = serde_json::from_slice::<CreateSecretRequest>(&bytes).map_err(|e| e.to_string());
        let result = parsed.and_then(|r| NewSecret::try_from(r).map_err(|e| e.to_string()));
        if let Some(Value::Object(m)) = &value {
            let kind = m.get("kind").and_then(Value::as_str);
            let rotation = m.get("rotation_interval_secs");
            let kind_ok = match kind {
                Some("manual") => {
                    present(m.get("value")) && !present(rotation) && !present(m.get("generator"))
                }
                Some("automatic") => present(rotation),
                _ => false,
            };
            let expected = kind_ok
                && name_ok(m.get("name"))
                && value_ok(m.get("value"))
                && description_ok(m.get("description"))
                && secs_ok(rotation, 1)
                && secs_ok(m.get("grace_period_secs"), 0)
                && generator_ok(m.get("generator"))
                && only_keys(m, &FIELDS[..7]);
            prop_assert_verdict!(result, expected, m);
        }
        if let Ok(new) = result {
            // Whatever was accepted satisfies the documented limits.
            prop_assert!((1..=MAX_VALUE_BYTES).contains(&new.value.len()));
            prop_assert!(description_ok(new.description.map(Value::String).as_ref()));
            prop_assert!(new.grace_period.as_secs() <= MAX_DURATION_SECS);
            match new.kind {
                SecretKind::Manual => {
                    prop_assert!(new.rotation_interval.is_none() && new.generator.is_none())
                }
                SecretKind::Automatic => {
                    let interval = new.rotation_interval.unwrap().as_secs();
                    prop_assert!((1..=MAX_DURATION_SECS).contains(&interval));
                    let g = new.generator.unwrap();
                    prop_assert!((16..=4096).contains(&g.length()));
                }
            }
            if let Some(Value::Object(m)) = &value {
                prop_assert_eq!(Some(new.name.as_str()), m.get("name").and_then(Value::as_str));
                match m.get("value").and_then(Value::as_str) {
                    Some(v) => prop_assert_eq!(new.value.expose(), v.as_bytes()),
                    None => {
                        let g = new.generator.unwrap();
                        let alphabet = g.charset().alphabet();
                        prop_assert_eq!(new.value.len(), g.length() as usize);
                        prop_assert!(new.value.expose().iter().all(|b| alphabet.contains(b)));
                    }
                }
                prop_assert_eq!(secs_of(m.get("grace_period_secs")).unwrap_or(0), new.grace_period.as_secs());
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_api_update_secret_body() {
    let update = object(vec![
        ("value", 0.5, value_field().boxed()),
        ("description", 0.5, description_field().boxed()),
        ("rotation_interval_secs", 0.4, secs_field().boxed()),
        ("grace_period_secs", 0.4, secs_field().boxed()),
    ]);
    fuzz("api_update_secret_body", 1, body(update), |(value, bytes)| {
        let parsed = serde_json::from_slice::<UpdateSecretRequest>(&bytes).map_err(|e| e.to_string());
        let result = parsed.and_then(|r| SecretUpdate::try_from(r).map_err(|e| e.to_string()));
        if let Some(Value::Object(m)) = &value {
            let expected = value_ok(m.get("value"))
                && description_ok(m.get("description"))
                && secs_ok(m.get("rotation_interval_secs"), 1)
                && secs_ok(m.get("grace_period_secs"), 0)
                && only_keys(m, &["value", "description", "rotation_interval_secs", "grace_period_secs"]);
            prop_assert_verdict!(result, expected, m);
        }
        if let Ok(u) = result {
            prop_assert!(u.value.is_none_or(|v| (1..=MAX_VALUE_BYTES).contains(&v.len())));
            prop_assert!(description_ok(u.meta.description.map(Value::String).as_ref()));
            prop_assert!(
                u.meta.rotation_interval.is_none_or(|d| (1..=MAX_DURATION_SECS).contains(&d.as_secs()))
            );
            prop_assert!(u.meta.grace_period.is_none_or(|d| d.as_secs() <= MAX_DURATION_SECS));
        }
        Ok(())
    });
}

fn permission_path() -> impl Strategy<Value = String> {
    let valid = "[A-Za-z0-9._-]{1,8}(/[A-Za-z0-9._-]{1,8}){0,3}(/?\\*)?";
    prop_oneof![4 => valid.prop_map(String::from), 1 => Just("*".to_owned()), 3 => mutated(valid), 1 => "[a-z]{250,260}\\*?"]
}

fn permissions() -> impl Strategy<Value = Value> {
    let action = prop_oneof![
        4 => prop::sample::select(Action::ALL_NAMES.to_vec()).prop_map(String::from),
        1 => mutated(prop::sample::select(Action::ALL_NAMES.to_vec()).prop_map(String::from)),
    ];
    let perm = object(vec![
        ("action", 0.97, string_or_other(action).boxed()),
        ("path", 0.97, string_or_other(permission_path()).boxed()),
    ]);
    prop_oneof![8 => prop::collection::vec(perm, 0..4).prop_map(Value::Array), 1 => json_value()]
}

fn ident() -> impl Strategy<Value = String> {
    let valid = "[a-z0-9][a-z0-9._-]{0,20}";
    prop_oneof![4 => valid.prop_map(String::from), 2 => mutated(valid), 1 => "[a-z]{60,66}", 1 => text(10)]
}

fn is_admin_field() -> impl Strategy<Value = Value> {
    prop_oneof![4 => any::<bool>().prop_map(Value::Bool), 1 => json_value()]
}

#[test]
fn fuzz_api_role_bodies() {
    let role = object(vec![
        ("name", 0.97, string_or_other(ident()).boxed()),
        ("description", 0.3, description_field().boxed()),
        ("is_admin", 0.3, is_admin_field().boxed()),
        ("permissions", 0.8, permissions().boxed()),
    ]);
    fuzz("api_role_bodies", 1, (body(role), ident()), |((value, bytes), path_name)| {
        let create = serde_json::from_slice::<CreateRoleRequest>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| RoleDef::try_from(r).map_err(|e| e.to_string()));
        // The same body as a replacement of the role named in the path (minus the name field).
        let mut update_body = value.clone();
        if let Some(Value::Object(m)) = &mut update_body {
            m.remove("name");
        }
        let update_bytes = update_body.as_ref().map_or_else(|| bytes.clone(), |v| v.to_string().into_bytes());
        let update = serde_json::from_slice::<UpdateRoleRequest>(&update_bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| role_from_update(&path_name, r).map_err(|e| e.to_string()));
        if let Some(Value::Object(m)) = &value {
            let common = description_ok(m.get("description"))
                && matches!(m.get("is_admin"), None | Some(Value::Null | Value::Bool(_)))
                && permissions_ok(m.get("permissions"));
            let create_ok = common
                && m.get("name").and_then(Value::as_str).is_some_and(ident_ok)
                && only_keys(m, &["name", "description", "is_admin", "permissions"]);
            prop_assert_eq!(
                create.is_ok(),
                create_ok,
                "{} -> {:?}",
                Value::Object(m.clone()),
                create.as_ref().err()
            );
            let update_ok = common
                && ident_ok(&path_name)
                && only_keys(m, &["name", "description", "is_admin", "permissions"]);
            prop_assert_eq!(
                update.is_ok(),
                update_ok,
                "{} -> {:?}",
                Value::Object(m.clone()),
                update.as_ref().err()
            );
        }
        for role in [create.ok(), update.ok()].into_iter().flatten() {
            prop_assert!(ident_ok(&role.name));
            prop_assert!(description_ok(role.description.map(Value::String).as_ref()));
            for rule in &role.permissions {
                prop_assert!(permission_path_ok(&rule.path.to_string()), "accepted path {}", rule.path);
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_api_token_body() {
    let token = object(vec![
        ("name", 0.97, string_or_other(ident()).boxed()),
        ("role", 0.97, string_or_other(ident()).boxed()),
        ("expires_in_secs", 0.5, secs_field().boxed()),
    ]);
    fuzz("api_token_body", 1, body(token), |(value, bytes)| {
        let result = serde_json::from_slice::<CreateTokenRequest>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| NewToken::try_from(r).map_err(|e| e.to_string()));
        if let Some(Value::Object(m)) = &value {
            let expected = m.get("name").and_then(Value::as_str).is_some_and(ident_ok)
                && m.get("role").and_then(Value::as_str).is_some_and(ident_ok)
                && secs_ok(m.get("expires_in_secs"), 1)
                && only_keys(m, &["name", "role", "expires_in_secs"]);
            prop_assert_verdict!(result, expected, m);
        }
        if let Ok(t) = result {
            prop_assert!(ident_ok(&t.name) && ident_ok(&t.role));
            prop_assert!(t.expires_in.is_none_or(|d| (1..=MAX_DURATION_SECS).contains(&d.as_secs())));
        }
        Ok(())
    });
}

#[test]
fn fuzz_api_batch_and_verify_bodies() {
    let names = prop_oneof![
        8 => prop::collection::vec(string_or_other(name_string()), 0..8).prop_map(Value::Array),
        1 => (0usize..3, name_string()).prop_map(|(d, n)| Value::Array(vec![json!(n); MAX_BATCH_NAMES - 1 + d])),
        1 => json_value(),
    ];
    let batch = object(vec![("names", 0.97, names.boxed())]);
    fuzz("api_batch_body", 1, body(batch), |(value, bytes)| {
        let result = serde_json::from_slice::<BatchRequest>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| parse_batch(r).map_err(|e| e.to_string()));
        if let Some(Value::Object(m)) = &value {
            let names = m.get("names").and_then(Value::as_array);
            // Names ending in a reserved word cannot exist; they are left out of the answer.
            let fine = |v: &Value| {
                v.as_str().is_some_and(|s| {
                    matches!(SecretName::parse(s), Ok(_) | Err(NameError::ReservedSuffix(_)))
                })
            };
            let expected = names
                .is_some_and(|n| (1..=MAX_BATCH_NAMES).contains(&n.len()) && n.iter().all(fine))
                && only_keys(m, &["names"]);
            prop_assert_verdict!(result, expected, m);
            if let Ok(parsed) = &result {
                let valid: Vec<&str> = names
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| SecretName::parse(s).is_ok())
                    .collect();
                prop_assert_eq!(parsed.iter().map(SecretName::as_str).collect::<Vec<_>>(), valid);
            }
        }
        if let Ok(parsed) = result {
            prop_assert!(parsed.len() <= MAX_BATCH_NAMES);
        }
        Ok(())
    });
    let verify = object(vec![("value", 0.97, string_or_other(text(40)).boxed())]);
    fuzz("api_verify_body", 1, body(verify), |(value, bytes)| {
        let result = serde_json::from_slice::<VerifyRequest>(&bytes);
        if let Some(Value::Object(m)) = &value {
            let expected = m.get("value").is_some_and(Value::is_string) && only_keys(m, &["value"]);
            prop_assert_eq!(result.is_ok(), expected);
        }
        Ok(())
    });
}

#[test]
fn fuzz_api_ident() {
    fuzz("api_ident", 1, prop_oneof![ident(), text(70)], |raw| {
        let parsed = parse_ident("name", &raw);
        prop_assert_eq!(parsed.is_ok(), ident_ok(&raw), "{:?}", raw);
        Ok(())
    });
}

// ---- pagination cursor ----

#[test]
fn fuzz_api_cursor() {
    let kinds = prop::sample::select(vec!["secrets", "audit", "roles"]);
    let cursor_text = prop_oneof![
        2 => text(40),
        2 => "[A-Za-z0-9_=+/-]{0,40}",
        1 => "[A-Za-z]{505,520}",
        3 => mutated((kinds.clone(), text(30)).prop_map(|(k, key)| cursor::encode(k, &key))),
    ];
    fuzz("api_cursor_decode", 1, (kinds.clone(), cursor_text), |(kind, c)| {
        match cursor::decode(kind, &c) {
            Ok(key) => {
                prop_assert!(c.len() <= 512);
                let decoded = URL_SAFE_NO_PAD.decode(&c).unwrap();
                prop_assert_eq!(decoded, format!("{kind}:{key}").into_bytes());
            }
            Err(e) => prop_assert_eq!(e.to_string(), "cursor: is not a cursor returned by this listing"),
        }
        Ok(())
    });
    let pair = (kinds.clone(), kinds, text(300));
    fuzz("api_cursor_round_trip", 1, pair, |(kind, other, key)| {
        let c = cursor::encode(kind, &key);
        if c.len() <= 512 {
            prop_assert_eq!(cursor::decode(kind, &c).ok(), Some(key.clone()));
        } else {
            prop_assert!(cursor::decode(kind, &c).is_err());
        }
        if other != kind {
            prop_assert!(cursor::decode(other, &c).is_err(), "a {kind} cursor replayed as {other}");
        }
        Ok(())
    });
}

// ---- client address and X-Forwarded-For ----

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
        (any::<u8>(), any::<u16>())
            .prop_map(|(a, b)| format!("10.{a}.{}.{}", b >> 8, b & 0xff).parse().unwrap()),
        any::<u64>().prop_map(|a| IpAddr::from(std::net::Ipv6Addr::from(0xfd00u128 << 112 | u128::from(a)))),
        any::<u32>().prop_map(|a| IpAddr::from(std::net::Ipv4Addr::from(a).to_ipv6_mapped())),
    ]
}

fn hop_text() -> impl Strategy<Value = String> {
    (ip(), 0u8..4, 0u32..100_000).prop_map(|(ip, form, port)| match (ip, form) {
        (IpAddr::V4(a), 1) => format!("{a}:{port}"),
        (IpAddr::V6(a), 1) => format!("[{a}]:{port}"),
        (IpAddr::V6(a), 2) => format!("[{a}]"),
        (a, 3) => format!(" {a} "),
        (a, _) => a.to_string(),
    })
}

fn forwarded_value() -> impl Strategy<Value = Vec<u8>> {
    let list = prop::collection::vec(hop_text(), 1..5).prop_map(|h| h.join(",")).boxed();
    prop_oneof![
        4 => list.clone().prop_map(String::into_bytes),
        3 => mutated(list).prop_map(String::into_bytes),
        1 => bytes(40),
    ]
}

/// One hop as documented: an address, `[v6]`, `[v6]:port` or `v4:port`; ports of 1-5 digits.
fn oracle_hop(raw: &str) -> Option<IpAddr> {
    let port = |p: &str| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if raw.is_empty() || raw.len() > 64 {
        return None;
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let close = inner.find(']')?;
        let (addr, rest) = (&inner[..close], &inner[close + 1..]);
        let v6: std::net::Ipv6Addr = addr.parse().ok()?;
        return (rest.is_empty() || rest.strip_prefix(':').is_some_and(port))
            .then(|| canonical(IpAddr::V6(v6)));
    }
    let colon = raw.rfind(':')?;
    let v4: std::net::Ipv4Addr = raw[..colon].parse().ok()?;
    port(&raw[colon + 1..]).then_some(IpAddr::V4(v4))
}

#[test]
fn fuzz_api_client_ip() {
    let trusted = Allowlist::parse("10.0.0.0/8,fd00::/8").unwrap();
    let trust = ProxyTrust { enabled: true, trusted: trusted.clone() };
    let case = (ip(), prop::collection::vec(forwarded_value(), 0..3));
    fuzz("api_client_ip", 1, case, |(peer, values)| {
        let mut headers = HeaderMap::new();
        let mut lines = Vec::new();
        for v in values {
            if let Ok(h) = HeaderValue::from_bytes(&v) {
                headers.append(FORWARDED_FOR, h);
                lines.push(v);
            }
        }
        let got = client_ip(peer, &headers, &trust);
        let peer = canonical(peer);
        if !trusted.allows(peer) {
            // A client that is not a trusted proxy cannot choose its address.
            prop_assert_eq!(got, Ok(peer));
            return Ok(());
        }
        let hops: Option<Vec<IpAddr>> = lines
            .iter()
            .map(|l| {
                std::str::from_utf8(l)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b == b'\t' || (32..127).contains(&b)))
            })
            .collect::<Option<Vec<&str>>>()
            .and_then(|ls| ls.iter().flat_map(|l| l.split(',')).map(|h| oracle_hop(h.trim())).collect());
        match (got, hops) {
            (Ok(client), Some(hops)) => {
                // The rightmost hop not itself a trusted proxy; every hop right of it is trusted.
                let expected = hops
                    .iter()
                    .rev()
                    .find(|h| !trusted.allows(**h))
                    .or(hops.first())
                    .copied()
                    .unwrap_or(peer);
                prop_assert_eq!(client, expected);
            }
            (Err(_), None) => {}
            (got, hops) => {
                return Err(TestCaseError::fail(format!("client_ip {got:?}, documented hops {hops:?}")));
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_api_route_template() {
    let path = prop_oneof![
        2 => text(40),
        3 => (prop::sample::select(vec!["/v1/secrets/", "/v1/tokens/", "/v1/roles/", "/v1/", "/"]), text(30))
            .prop_map(|(p, r)| format!("{p}{r}")),
    ];
    let known = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/secrets",
        "/v1/batch/secrets",
        "/v1/tokens",
        "/v1/roles",
        "/v1/audit",
        "/v1/tokens/{name}",
        "/v1/roles/{name}",
        "/v1/secrets/{name}",
        "/v1/secrets/{name}/verify",
        "/v1/secrets/{name}/rotate",
        "/v1/secrets/{name}/versions",
        "unmatched",
    ];
    fuzz("api_route_template", 1, path, |path| {
        let label = route_template(&path);
        // A bounded metric label, never text from the request.
        prop_assert!(known.contains(&label), "{path:?} -> {label:?}");
        prop_assert_eq!(path.starts_with("/v1/secrets/"), label.starts_with("/v1/secrets/{name}"));
        Ok(())
    });
}

// ---- through the router: bodies, bearer header, paths and query parameters ----

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A harness that never locks a client out, so every case sees the guard's first answer.
fn harness(rt: &tokio::runtime::Runtime) -> Harness {
    let lockout = LockoutPolicy {
        max_failures: u32::MAX,
        window: Duration::from_secs(1),
        lockout: Duration::from_secs(1),
    };
    rt.block_on(Harness::new(Arc::new(MemoryBackend::new()), Options { lockout, ..Options::default() }))
}

fn check_reply(r: &common::Reply) -> TestCaseResult {
    prop_assert!(!r.status.is_server_error(), "{} {:?}", r.status, r.body);
    prop_assert_eq!(r.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    if r.status.is_client_error() {
        prop_assert!(r.body["error"].is_string(), "error body {:?}", r.body);
    }
    Ok(())
}

#[test]
fn fuzz_api_router_bodies() {
    let rt = runtime();
    let h = harness(&rt);
    rt.block_on(h.manual("fuzz/existing", "value"));
    let endpoint = prop::sample::select(vec![
        (Method::POST, "/v1/secrets"),
        (Method::PUT, "/v1/secrets/fuzz/existing"),
        (Method::POST, "/v1/secrets/fuzz/existing/verify"),
        (Method::POST, "/v1/batch/secrets"),
        (Method::POST, "/v1/roles"),
        (Method::PUT, "/v1/roles/fuzz-role"),
        (Method::POST, "/v1/tokens"),
    ]);
    let content_type = prop_oneof![
        6 => Just(Some("application/json".to_owned())),
        1 => Just(Some("application/merge-patch+json; charset=utf-8".to_owned())),
        1 => Just(None),
        1 => mutated(Just("application/json".to_owned())).prop_map(Some),
    ];
    let any_body = prop_oneof![
        body(create_secret_object()),
        body(object(vec![(
            "names",
            0.9,
            prop::collection::vec(string_or_other(name_string()), 0..4).prop_map(Value::Array).boxed()
        )])),
        body(object(vec![
            ("value", 0.9, value_field().boxed()),
            ("description", 0.3, description_field().boxed())
        ])),
        body(object(vec![
            ("name", 0.9, string_or_other(ident()).boxed()),
            ("permissions", 0.8, permissions().boxed())
        ])),
    ];
    fuzz("api_router_bodies", 4, (endpoint, content_type, any_body), |((method, uri), ct, (_, bytes))| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", h.admin_token));
        if let Some(ct) = ct.and_then(|c| HeaderValue::from_str(&c).ok()) {
            b = b.header("content-type", ct);
        }
        let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let r = rt.block_on(h.raw(ALLOWED_PEER, b.body(Body::from(bytes)).unwrap()));
        check_reply(&r)?;
        if !object {
            prop_assert!(r.status.is_client_error(), "a body that is not a JSON object was accepted");
        }
        Ok(())
    });
}

#[test]
fn fuzz_api_router_bearer() {
    let rt = runtime();
    let h = harness(&rt);
    let admin = h.admin_token.clone();
    let scheme =
        prop::sample::select(vec!["Bearer", "bearer", "BEARER", "BeArEr", "Bearer:", "Basic", "Token", ""]);
    let sep = prop::sample::select(vec![" ", "  ", "\t", "", " \t"]);
    let tok = prop_oneof![3 => Just(admin.clone()), 3 => mutated(Just(admin.clone())), 1 => text(50)];
    let near = (scheme, sep, tok, prop::sample::select(vec!["", " ", "\t", "  "]))
        .prop_map(|(s, sep, t, trail)| format!("{s}{sep}{t}{trail}").into_bytes());
    let header = prop_oneof![4 => near, 1 => bytes(80), 1 => text(60).prop_map(String::into_bytes)];
    fuzz("api_router_bearer", 4, header, |value| {
        let Ok(v) = HeaderValue::from_bytes(&value) else { return Ok(()) };
        let req = Request::builder()
            .method(Method::GET)
            .uri("/v1/roles")
            .header("authorization", v)
            .body(Body::empty())
            .unwrap();
        let r = rt.block_on(h.raw(ALLOWED_PEER, req));
        check_reply(&r)?;
        // RFC 6750: `Bearer` (any case), one space, the token; surrounding blanks are tolerated.
        let presented = std::str::from_utf8(&value)
            .ok()
            .filter(|s| s.bytes().all(|b| b == b'\t' || (32..127).contains(&b)))
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let expected =
            if presented == Some(admin.as_str()) { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
        prop_assert_eq!(r.status, expected, "{:?}", String::from_utf8_lossy(&value));
        Ok(())
    });
}

/// Percent-encodes everything outside the unreserved set (and `/`, unless `slash` is false).
fn percent_encode(raw: &str, slash: bool) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (slash && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn fuzz_api_router_paths_and_queries() {
    let rt = runtime();
    let h = harness(&rt);
    let seeded = ["fuzz/a", "fuzz/b.c", "x"];
    for name in seeded {
        rt.block_on(h.manual(name, "value"));
    }
    let name = prop_oneof![
        3 => prop::sample::select(seeded.to_vec()).prop_map(String::from),
        3 => mutated(prop::sample::select(seeded.to_vec()).prop_map(String::from)),
        2 => name_string(),
        2 => text(30),
    ];
    let suffix = prop::sample::select(vec!["", "", "/versions", "/verify", "/rotate", "/"]);
    let version = prop_oneof![
        2 => Just(None),
        2 => (0u64..4).prop_map(|n| Some(n.to_string())),
        1 => any::<u64>().prop_map(|n| Some(n.to_string())),
        2 => text(12).prop_map(Some),
    ];
    let list_query = (prop::option::of(text(8)), prop::option::of(text(40)), prop::option::of(text(20)));
    let case = (name, any::<bool>(), suffix, version, list_query);
    fuzz(
        "api_router_paths_and_queries",
        4,
        case,
        |(name, slash, suffix, version, (limit, cursor, prefix))| {
            let mut uri = format!("/v1/secrets/{}{suffix}", percent_encode(&name, slash));
            if let Some(v) = &version {
                uri.push_str(&format!("?version={}", percent_encode(v, false)));
            }
            let token = h.admin_token.clone();
            let r = rt.block_on(h.call(Method::GET, &uri, Some(&token), None));
            check_reply(&r)?;
            if r.status == StatusCode::OK {
                // Only a real secret (or its history) is ever returned, under its exact name.
                prop_assert!(
                    seeded.contains(&r.body["name"].as_str().unwrap_or("")),
                    "{uri} -> {:?}",
                    r.body
                );
            }
            let mut q = Vec::new();
            for (k, v) in [("limit", limit), ("cursor", cursor), ("prefix", prefix)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", percent_encode(&v, false)));
                }
            }
            let r =
                rt.block_on(h.call(Method::GET, &format!("/v1/secrets?{}", q.join("&")), Some(&token), None));
            check_reply(&r)?;
            prop_assert!(matches!(r.status, StatusCode::OK | StatusCode::BAD_REQUEST), "{}", r.status);
            Ok(())
        },
    );
}
