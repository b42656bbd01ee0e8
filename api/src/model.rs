//! Wire types (DESIGN.md §7, snake_case) and their conversion into validated domain values.
//! Request bodies deserialize into `*Request` and become domain types through `TryFrom`, whose
//! errors name the offending field.

use std::time::Duration;

use hyperion_vault_core::generator::{Charset, GeneratorSpec};
use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::rbac::Rule;
use hyperion_vault_core::secret::SecretBytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::backend::{
    AuditRecord, MetaUpdate, NewSecret, RoleDef, SecretKind, SecretMeta, SecretValue, TokenInfo, VersionMeta,
};
use crate::error::AppError;

/// Largest accepted secret value in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest accepted request body in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const MAX_BATCH_NAMES: usize = 256;
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Ten years: anything longer is a typo, and keeps timestamp arithmetic far from overflow.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;
pub const MAX_IDENT_LEN: usize = 63;
/// A permission path: a whole name and the trailing `*` of a prefix.
pub const MAX_PERMISSION_PATH_CHARS: usize = hyperion_vault_core::name::MAX_NAME_LEN + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Manual,
    Automatic,
}

impl From<Kind> for SecretKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Manual => SecretKind::Manual,
            Kind::Automatic => SecretKind::Automatic,
        }
    }
}

impl From<SecretKind> for Kind {
    fn from(k: SecretKind) -> Self {
        match k {
            SecretKind::Manual => Kind::Manual,
            SecretKind::Automatic => Kind::Automatic,
        }
    }
}

/// The documented shape of a secret name (DESIGN.md §7). Slightly narrower than what the server
/// accepts (segments may not start with `.` here), and it cannot say "the last segment is not
/// `verify`, `rotate` or `versions`": such names are refused at create time and answer 404 elsewhere.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$";
/// Role and token names.
pub const IDENT_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]{0,62}$";

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CharsetName {
    Alphanumeric,
    #[serde(rename = "base64url")]
    #[schema(rename = "base64url")]
    Base64Url,
    Hex,
    AsciiPrintable,
}

impl From<CharsetName> for Charset {
    fn from(c: CharsetName) -> Self {
        match c {
            CharsetName::Alphanumeric => Charset::Alphanumeric,
            CharsetName::Base64Url => Charset::Base64Url,
            CharsetName::Hex => Charset::Hex,
            CharsetName::AsciiPrintable => Charset::AsciiPrintable,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorRequest {
    #[schema(minimum = 16, maximum = 4096)]
    #[serde(deserialize_with = "whole_u32")]
    pub length: u32,
    pub charset: CharsetName,
}

/// `POST /v1/secrets`, as parsed: one flat shape so that a missing or misplaced field gets a
/// message naming it. The document describes it as [`CreateSecretDoc`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "whole_secs")]
    pub rotation_interval_secs: Option<u64>,
    #[serde(default, deserialize_with = "whole_secs")]
    pub grace_period_secs: Option<u64>,
    #[serde(default)]
    pub generator: Option<GeneratorRequest>,
}

/// `POST /v1/secrets`: a manual or an automatic secret, by `kind`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only
pub enum CreateSecretDoc {
    Manual(CreateManualSecret),
    Automatic(CreateAutomaticSecret),
}

#[derive(Deserialize, ToSchema)]
#[schema(as = ManualKind)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ManualKindDoc {
    Manual,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = AutomaticKind)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AutomaticKindDoc {
    Automatic,
}

/// A secret whose value is set through the API.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateManualSecret {
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
    )]
    pub name: String,
    pub kind: ManualKindDoc,
    /// At most 65536 bytes of UTF-8 (multi-byte characters count for more than one).
    #[schema(min_length = 1, max_length = 65536)]
    pub value: String,
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    /// Default 0.
    #[schema(minimum = 0, maximum = 315360000)]
    pub grace_period_secs: Option<u64>,
}

/// A secret rotated on a schedule; its value is generated unless given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateAutomaticSecret {
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
    )]
    pub name: String,
    pub kind: AutomaticKindDoc,
    /// The first value; generated when absent. At most 65536 bytes of UTF-8 (multi-byte characters count for more than one).
    #[schema(min_length = 1, max_length = 65536)]
    pub value: Option<String>,
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    #[schema(minimum = 1, maximum = 315360000)]
    pub rotation_interval_secs: u64,
    /// Default 0.
    #[schema(minimum = 0, maximum = 315360000)]
    pub grace_period_secs: Option<u64>,
    pub generator: Option<GeneratorRequest>,
}

/// `PUT /v1/secrets/{name}`: absent (or null) fields stay as they are; `{}` changes nothing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecretRequest {
    /// A new value (a new version). At most 65536 bytes of UTF-8 (multi-byte characters count for more than one).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 65536)]
    pub value: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    /// Automatic secrets only.
    #[serde(default, deserialize_with = "whole_secs")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub rotation_interval_secs: Option<u64>,
    #[serde(default, deserialize_with = "whole_secs")]
    #[schema(minimum = 0, maximum = 315360000)]
    pub grace_period_secs: Option<u64>,
}

/// `POST /v1/secrets/{name}/verify`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Any string; too long or empty values simply do not match.
    pub value: String,
}

/// A secret name in a request body.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, min_length = 1, max_length = 253, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")]
pub struct SecretNameString(pub String);

/// `POST /v1/batch/secrets`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(min_items = 1, max_items = 256, value_type = Vec<SecretNameString>)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
pub enum ActionName {
    #[serde(rename = "create")]
    Create,
    #[serde(rename = "update")]
    Update,
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "rotate")]
    Rotate,
    #[serde(rename = "read-metadata")]
    ReadMetadata,
    #[serde(rename = "*")]
    All,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// create | update | delete | rotate | read-metadata | *
    #[schema(value_type = ActionName)]
    pub action: String,
    /// An exact secret name or a prefix ending in `*`.
    #[schema(pattern = r"^(\*|[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*(/?\*)?)$", max_length = 254)]
    pub path: String,
}

/// `POST /v1/roles`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    #[serde(default)]
    pub is_admin: Option<bool>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// `PUT /v1/roles/{name}`: replaces the role's description, admin flag and permissions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    #[serde(default)]
    pub is_admin: Option<bool>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// `POST /v1/tokens`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub name: String,
    /// An existing role (404 otherwise).
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    pub role: String,
    #[serde(default, deserialize_with = "whole_secs")]
    #[schema(minimum = 1, maximum = 315360000)]
    pub expires_in_secs: Option<u64>,
}

/// A secret value. Built only to be serialized into a response body.
#[derive(Serialize, ToSchema)]
pub struct SecretValueResponse {
    pub name: String,
    pub kind: Kind,
    pub version: u32,
    pub value: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_rotation_at: Option<Timestamp>,
    /// Only for a superseded version read with `?version=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

impl TryFrom<SecretValue> for SecretValueResponse {
    type Error = AppError;

    fn try_from(v: SecretValue) -> Result<Self, AppError> {
        let value = v
            .value
            .expose_str()
            .ok_or_else(|| AppError::internal("stored value is not UTF-8 and cannot be returned as JSON"))?
            .to_owned();
        Ok(Self {
            name: v.name,
            kind: v.kind.into(),
            version: v.version,
            value,
            created_at: v.created_at,
            next_rotation_at: v.next_rotation_at,
            expires_at: v.expires_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretMetaResponse {
    pub name: String,
    pub kind: Kind,
    /// `api`, or `vaultsecret:<namespace>/<name>` for a secret reconciled from a VaultSecret.
    pub owner: String,
    pub description: Option<String>,
    pub version: u32,
    pub rotation_interval_secs: Option<u64>,
    pub grace_period_secs: u64,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_rotation_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<SecretMeta> for SecretMetaResponse {
    fn from(m: SecretMeta) -> Self {
        Self {
            name: m.name,
            kind: m.kind.into(),
            owner: m.owner.to_wire(),
            description: m.description,
            version: m.version,
            rotation_interval_secs: m.rotation_interval_secs,
            grace_period_secs: m.grace_period_secs,
            next_rotation_at: m.next_rotation_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretMetaResponse>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// The version reads return.
    Current,
    /// Superseded, still readable with `?version=` and verifiable until `expires_at`.
    Grace,
    /// Crypto material destroyed; metadata kept for history.
    Expired,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionResponse {
    pub version: u32,
    pub state: VersionState,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub superseded_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

impl VersionResponse {
    pub fn from_meta(v: VersionMeta, current: u32, now: Timestamp) -> Self {
        let state = if v.version == current && v.has_material {
            VersionState::Current
        } else if v.has_material && v.expires_at.is_some_and(|e| e > now) {
            VersionState::Grace
        } else {
            VersionState::Expired
        };
        Self {
            version: v.version,
            state,
            created_at: v.created_at,
            superseded_at: v.superseded_at,
            expires_at: v.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub name: String,
    pub versions: Vec<VersionResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    /// The matching version, or null.
    pub version: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleResponse {
    pub name: String,
    pub description: Option<String>,
    pub is_admin: bool,
    pub permissions: Vec<Permission>,
}

impl From<RoleDef> for RoleResponse {
    fn from(r: RoleDef) -> Self {
        Self {
            name: r.name,
            description: r.description,
            is_admin: r.is_admin,
            permissions: r
                .permissions
                .iter()
                .map(|p| Permission { action: p.action.as_str().to_owned(), path: p.path.to_string() })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    pub items: Vec<RoleResponse>,
}

/// The raw token appears here and nowhere else, once.
#[derive(Serialize, ToSchema)]
pub struct TokenCreatedResponse {
    pub name: String,
    pub role: String,
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub name: String,
    pub role: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

impl From<TokenInfo> for TokenResponse {
    fn from(t: TokenInfo) -> Self {
        Self { name: t.name, role: t.role, created_at: t.created_at, expires_at: t.expires_at }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub actor: String,
    pub client_ip: Option<String>,
    pub action: String,
    pub secret: Option<String>,
    /// success | denied | not_found | invalid | conflict | locked_out | unavailable | error
    pub outcome: String,
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            client_ip: r.client_ip,
            action: r.action,
            secret: r.secret,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

// ---- validation ----

fn whole_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
    whole
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| D::Error::custom(format!("invalid value {n}: expected a whole number")))
}

/// A count of seconds: a JSON integer, also written as a float with no fraction (`60.0`), which
/// JSON Schema counts as an integer too.
fn whole_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=MAX_DURATION_SECS as f64).contains(&f) => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!("invalid value {n}: expected a whole number of seconds"))),
    }
}

fn bad(field: &str, msg: impl std::fmt::Display) -> AppError {
    AppError::bad_request(format!("{field}: {msg}"))
}

pub fn parse_name(field: &str, raw: &str) -> Result<SecretName, AppError> {
    SecretName::parse(raw).map_err(|e| bad(field, e))
}

pub fn parse_value(field: &str, raw: String) -> Result<SecretBytes, AppError> {
    if raw.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if raw.len() > MAX_VALUE_BYTES {
        return Err(bad(field, format!("is {} bytes; the limit is {MAX_VALUE_BYTES}", raw.len())));
    }
    Ok(SecretBytes::new(raw.into_bytes()))
}

fn parse_description(raw: Option<String>) -> Result<Option<String>, AppError> {
    match raw {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => {
            Err(bad("description", format!("is longer than {MAX_DESCRIPTION_CHARS} characters")))
        }
        Some(d) if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            Err(bad("description", "must not contain control characters"))
        }
        other => Ok(other),
    }
}

fn parse_secs(field: &str, secs: u64, min: u64) -> Result<Duration, AppError> {
    if secs < min || secs > MAX_DURATION_SECS {
        return Err(bad(field, format!("must be between {min} and {MAX_DURATION_SECS}")));
    }
    Ok(Duration::from_secs(secs))
}

/// Role and token names: `[a-z0-9]([a-z0-9._-]*)`, at most 63 characters.
pub fn parse_ident(field: &str, raw: &str) -> Result<String, AppError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_IDENT_LEN
        && raw.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(bad(
            field,
            format!("must be 1-{MAX_IDENT_LEN} characters of a-z 0-9 . _ - starting with a letter or digit"),
        ));
    }
    Ok(raw.to_owned())
}

impl TryFrom<CreateSecretRequest> for NewSecret {
    type Error = AppError;

    fn try_from(r: CreateSecretRequest) -> Result<Self, AppError> {
        let name = parse_name("name", &r.name)?;
        let description = parse_description(r.description)?;
        let grace_period = parse_secs("grace_period_secs", r.grace_period_secs.unwrap_or(0), 0)?;
        let value = r.value.map(|v| parse_value("value", v)).transpose()?;
        match r.kind {
            Kind::Manual => {
                if r.rotation_interval_secs.is_some() {
                    return Err(bad("rotation_interval_secs", "is only valid for automatic secrets"));
                }
                if r.generator.is_some() {
                    return Err(bad("generator", "is only valid for automatic secrets"));
                }
                let value = value.ok_or_else(|| bad("value", "is required for a manual secret"))?;
                Ok(NewSecret {
                    name,
                    kind: SecretKind::Manual,
                    value,
                    description,
                    rotation_interval: None,
                    grace_period,
                    generator: None,
                })
            }
            Kind::Automatic => {
                let interval = r
                    .rotation_interval_secs
                    .ok_or_else(|| bad("rotation_interval_secs", "is required for an automatic secret"))?;
                let rotation_interval = parse_secs("rotation_interval_secs", interval, 1)?;
                let generator = match r.generator {
                    None => GeneratorSpec::default(),
                    Some(g) => GeneratorSpec::new(g.length, g.charset.into())
                        .map_err(|e| bad("generator.length", e))?,
                };
                let value = match value {
                    Some(v) => v,
                    None => generator.generate().map_err(AppError::internal)?,
                };
                Ok(NewSecret {
                    name,
                    kind: SecretKind::Automatic,
                    value,
                    description,
                    rotation_interval: Some(rotation_interval),
                    grace_period,
                    generator: Some(generator),
                })
            }
        }
    }
}

/// A validated update: an optional new value plus optional metadata changes.
pub struct SecretUpdate {
    pub value: Option<SecretBytes>,
    pub meta: MetaUpdate,
}

impl TryFrom<UpdateSecretRequest> for SecretUpdate {
    type Error = AppError;

    fn try_from(r: UpdateSecretRequest) -> Result<Self, AppError> {
        let value = r.value.map(|v| parse_value("value", v)).transpose()?;
        let meta = MetaUpdate {
            description: parse_description(r.description)?,
            rotation_interval: r
                .rotation_interval_secs
                .map(|s| parse_secs("rotation_interval_secs", s, 1))
                .transpose()?,
            grace_period: r.grace_period_secs.map(|s| parse_secs("grace_period_secs", s, 0)).transpose()?,
        };
        Ok(Self { value, meta })
    }
}

pub fn parse_batch(r: BatchRequest) -> Result<Vec<SecretName>, AppError> {
    if r.names.is_empty() {
        return Err(bad("names", "must not be empty"));
    }
    if r.names.len() > MAX_BATCH_NAMES {
        return Err(bad("names", format!("has {} entries; the limit is {MAX_BATCH_NAMES}", r.names.len())));
    }
    let mut names = Vec::with_capacity(r.names.len());
    for (i, raw) in r.names.iter().enumerate() {
        match SecretName::parse(raw) {
            Ok(n) => names.push(n),
            // Cannot exist (create refuses it), so it is simply missing from the answer.
            Err(hyperion_vault_core::name::NameError::ReservedSuffix(_)) => {}
            Err(e) => return Err(bad(&format!("names[{i}]"), e)),
        }
    }
    Ok(names)
}

pub fn parse_permissions(perms: &[Permission]) -> Result<Vec<Rule>, AppError> {
    perms
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("permissions[{i}]");
            // The documented limit, and the database's: without it an over-long path was stored
            // by one backend and refused by the other.
            if p.path.chars().count() > MAX_PERMISSION_PATH_CHARS {
                return Err(bad(
                    &field,
                    format!("path is longer than {MAX_PERMISSION_PATH_CHARS} characters"),
                ));
            }
            // Names never end in '/', so such an exact path could match nothing: a typo.
            if p.path.ends_with('/') {
                return Err(bad(&field, "path: an exact name does not end in '/' (a prefix is 'a/*')"));
            }
            Rule::parse(&p.action, &p.path).map_err(|e| bad(&field, e))
        })
        .collect()
}

impl TryFrom<CreateRoleRequest> for RoleDef {
    type Error = AppError;

    fn try_from(r: CreateRoleRequest) -> Result<Self, AppError> {
        Ok(RoleDef {
            name: parse_ident("name", &r.name)?,
            description: parse_description(r.description)?,
            is_admin: r.is_admin.unwrap_or(false),
            permissions: parse_permissions(&r.permissions)?,
        })
    }
}

pub fn role_from_update(name: &str, r: UpdateRoleRequest) -> Result<RoleDef, AppError> {
    Ok(RoleDef {
        name: parse_ident("name", name)?,
        description: parse_description(r.description)?,
        is_admin: r.is_admin.unwrap_or(false),
        permissions: parse_permissions(&r.permissions)?,
    })
}

/// A validated token request.
#[derive(Debug)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    pub expires_in: Option<Duration>,
}

impl TryFrom<CreateTokenRequest> for NewToken {
    type Error = AppError;

    fn try_from(r: CreateTokenRequest) -> Result<Self, AppError> {
        Ok(NewToken {
            name: parse_ident("name", &r.name)?,
            role: parse_ident("role", &r.role)?,
            expires_in: r.expires_in_secs.map(|s| parse_secs("expires_in_secs", s, 1)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(json: serde_json::Value) -> Result<NewSecret, String> {
        let r: CreateSecretRequest = serde_json::from_value(json).map_err(|e| e.to_string())?;
        NewSecret::try_from(r).map_err(|e| e.to_string())
    }

    #[test]
    fn create_validation_names_the_field() {
        let cases = [
            (serde_json::json!({"name": "a//b", "kind": "manual", "value": "x"}), "name:"),
            (serde_json::json!({"name": "a/verify", "kind": "manual", "value": "x"}), "name:"),
            (serde_json::json!({"name": "a", "kind": "manual"}), "value:"),
            (serde_json::json!({"name": "a", "kind": "manual", "value": ""}), "value:"),
            (
                serde_json::json!({"name": "a", "kind": "manual", "value": "x", "rotation_interval_secs": 5}),
                "rotation_interval_secs:",
            ),
            (serde_json::json!({"name": "a", "kind": "automatic"}), "rotation_interval_secs:"),
            (
                serde_json::json!({"name": "a", "kind": "automatic", "rotation_interval_secs": 0}),
                "rotation_interval_secs:",
            ),
            (
                serde_json::json!({"name": "a", "kind": "automatic", "rotation_interval_secs": 60, "generator": {"length": 8, "charset": "hex"}}),
                "generator.length:",
            ),
            (
                serde_json::json!({"name": "a", "kind": "automatic", "rotation_interval_secs": 60, "generator": {"length": 32, "charset": "emoji"}}),
                "unknown variant `emoji`",
            ),
            (
                serde_json::json!({"name": "a", "kind": "manual", "value": "x", "grace_period_secs": u64::MAX}),
                "grace_period_secs:",
            ),
        ];
        for (json, field) in cases {
            let e = create(json.clone()).err().unwrap();
            assert!(e.starts_with(field), "{json}: {e}");
        }
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(
            create(serde_json::json!({"name": "a", "kind": "manual", "value": big}))
                .err()
                .unwrap()
                .contains("65536")
        );
    }

    #[test]
    fn automatic_without_value_is_generated() {
        let s = create(
            serde_json::json!({"name": "svc/key", "kind": "automatic", "rotation_interval_secs": 3600,
            "generator": {"length": 40, "charset": "hex"}}),
        )
        .unwrap();
        assert_eq!(s.value.len(), 40);
        assert!(s.value.expose().iter().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(s.grace_period, Duration::ZERO);
    }

    #[test]
    fn batch_and_update_and_role_validation() {
        let names: Vec<String> = (0..257).map(|i| format!("n{i}")).collect();
        assert!(parse_batch(BatchRequest { names }).is_err());
        let e = parse_batch(BatchRequest { names: vec!["ok".into(), "bad/".into()] }).err().unwrap();
        assert!(e.to_string().starts_with("names[1]:"), "{e}");
        let u = UpdateSecretRequest {
            value: None,
            description: None,
            rotation_interval_secs: None,
            grace_period_secs: None,
        };
        assert!(SecretUpdate::try_from(u).is_ok_and(|u| u.value.is_none() && u.meta.is_empty()));
        let r = CreateRoleRequest {
            name: "deployer".into(),
            description: None,
            is_admin: None,
            permissions: vec![Permission { action: "read".into(), path: "a/*".into() }],
        };
        assert!(RoleDef::try_from(r).err().unwrap().to_string().starts_with("permissions[0]:"));
        let long =
            |n: usize| vec![Permission { action: "rotate".into(), path: format!("{}*", "a".repeat(n)) }];
        assert!(parse_permissions(&long(MAX_PERMISSION_PATH_CHARS - 1)).is_ok());
        let e = parse_permissions(&long(MAX_PERMISSION_PATH_CHARS)).err().unwrap();
        assert!(e.to_string().starts_with("permissions[0]: path is longer than 254"), "{e}");
        let slash = [Permission { action: "update".into(), path: "team/".into() }];
        assert!(parse_permissions(&slash).err().unwrap().to_string().starts_with("permissions[0]: path:"));
        assert!(parse_ident("name", "Admin").is_err());
        assert!(parse_ident("name", "ci-bot.1").is_ok());
    }

    #[test]
    fn version_state_from_meta() {
        let now = Timestamp::now();
        let meta = |version, expires_at, has_material| VersionMeta {
            version,
            created_at: now,
            superseded_at: None,
            expires_at,
            has_material,
        };
        let later = now.checked_add(jiff::SignedDuration::from_secs(60)).unwrap();
        assert!(matches!(
            VersionResponse::from_meta(meta(3, None, true), 3, now).state,
            VersionState::Current
        ));
        assert!(matches!(
            VersionResponse::from_meta(meta(2, Some(later), true), 3, now).state,
            VersionState::Grace
        ));
        assert!(matches!(
            VersionResponse::from_meta(meta(1, Some(now), false), 3, now).state,
            VersionState::Expired
        ));
    }
}
