//! `VaultSecret` v1alpha1: the wire types from which the CRD schema is derived.
//!
//! Doc comments on fields become the schema descriptions that `kubectl explain vaultsecret.spec`
//! shows, so they are written for the user of the resource.
//!
//! Rules the schema can express are enforced by the apiserver at `kubectl apply` time: enums,
//! ranges, the duration pattern, and CEL rules across fields. A `Manual` secret may not carry
//! `rotationInterval` or `generator` (rejected rather than silently ignored, so a user who meant
//! `Automatic` finds out at once); an `Automatic` secret may not carry `valueFrom`; `kind` is
//! immutable, since a secret's versions were produced under one kind. Everything else (a duration
//! that overflows, an interval below the controller's minimum) is reported by the controller as
//! `Ready=False, reason InvalidSpec` with a message naming the field; see
//! [`crate::validated`].

use hyperion_vault_core::duration::GO_DURATION_PATTERN;
use hyperion_vault_core::generator::{DEFAULT_LENGTH, MAX_LENGTH, MIN_LENGTH};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret held encrypted by hyperion-vault: sealed in PostgreSQL under envelope encryption,
/// readable and verifiable through the vault API, and (for kind Automatic) rotated on schedule.
/// The vault name of the secret is `<namespace>/<name>`.
// clippy reads the repeated `printcolumn(type_ = ..)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vault.hyperiondb.io",
    version = "v1alpha1",
    kind = "VaultSecret",
    plural = "vaultsecrets",
    shortname = "vsec",
    category = "hyperion",
    namespaced,
    status = "VaultSecretStatus",
    derive = "PartialEq",
    doc = "A secret sealed, rotated and served by hyperion-vault. The vault name is <namespace>/<name>; the value never appears in this resource.",
    printcolumn(
        name = "Kind",
        type_ = "string",
        json_path = ".spec.kind",
        description = "Manual or Automatic"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.currentVersion",
        description = "Current version in the vault"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the secret is sealed and readable"
    ),
    printcolumn(
        name = "Last Rotated",
        type_ = "date",
        json_path = ".status.lastRotationTime",
        description = "When the current version was created"
    ),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.nextRotationTime",
        description = "When the next scheduled rotation is due (RFC 3339; a date column would show future times as <invalid>)"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.kind != 'Automatic' || has(self.rotationInterval)",
        "message": "rotationInterval is required when kind is Automatic",
        "fieldPath": ".rotationInterval",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.kind != 'Manual' || !has(self.rotationInterval)",
        "message": "rotationInterval is only allowed when kind is Automatic",
        "fieldPath": ".rotationInterval",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind != 'Manual' || !has(self.generator)",
        "message": "generator is only allowed when kind is Automatic",
        "fieldPath": ".generator",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind != 'Automatic' || !has(self.valueFrom)",
        "message": "valueFrom is only allowed when kind is Manual",
        "fieldPath": ".valueFrom",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind == oldSelf.kind",
        "message": "kind is immutable; delete and recreate the VaultSecret to change it",
        "fieldPath": ".kind"
    }
]))]
pub struct VaultSecretSpec {
    /// Manual: the value is supplied by you (from `valueFrom`, or through the vault API's
    /// `PUT /v1/secrets/<namespace>/<name>`). Automatic: the vault generates the value and
    /// rotates it every `rotationInterval`. Immutable.
    pub kind: SecretKind,

    /// How often an Automatic secret is rotated, as a Go duration (`90s`, `15m`, `24h`, `720h`).
    /// Required for kind Automatic, forbidden for Manual. The controller enforces a minimum
    /// (60s by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub rotation_interval: Option<String>,

    /// How long a superseded version still reads (`?version=`) and verifies after a rotation or
    /// a new manual value, as a Go duration. `0s` (the default) invalidates it at once.
    #[serde(default = "default_grace_period")]
    #[schemars(schema_with = "grace_schema")]
    pub grace_period: String,

    /// How values of an Automatic secret are generated. Forbidden for kind Manual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,

    /// Take the value of a Manual secret from a Secret in the same namespace; every change of
    /// that value becomes one new version. Without it a Manual secret waits (Ready=False,
    /// AwaitingValue) until its value is set through the vault API, so the plaintext never
    /// passes through etcd. Forbidden for kind Automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,

    /// What happens to the sealed versions when this resource is deleted. Delete (the default)
    /// destroys the crypto material of every version (metadata and audit trail remain) and frees
    /// the vault name; Retain leaves the vault secret in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Manual or Automatic.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SecretKind {
    Manual,
    Automatic,
}

/// Delete or Retain.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// Parameters of the value generator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Generator {
    /// Number of characters, 16 to 4096 (default 32).
    #[serde(default = "default_length")]
    #[schemars(range(min = MIN_LENGTH, max = MAX_LENGTH))]
    pub length: u32,

    /// Characters to draw from, uniformly: alphanumeric (A-Z a-z 0-9, the default), base64url
    /// (alphanumeric plus `-` and `_`), hex (0-9 a-f) or ascii-printable (`!` to `~`).
    #[serde(default)]
    pub charset: GeneratorCharset,
}

impl Default for Generator {
    fn default() -> Self {
        Self { length: DEFAULT_LENGTH, charset: GeneratorCharset::default() }
    }
}

/// alphanumeric, base64url, hex or ascii-printable.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorCharset {
    #[default]
    Alphanumeric,
    #[serde(rename = "base64url")]
    Base64Url,
    Hex,
    AsciiPrintable,
}

/// Where a Manual secret's value comes from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret in the same namespace as this VaultSecret.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Observed state, written only by the controller. Never contains a value, a hash of a value or
/// key material.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultSecretStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The current version in the vault (1 for a fresh secret); absent until a value exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,

    /// When the current version was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,

    /// When the next scheduled rotation is due (Automatic only). The database holds the source
    /// of truth; this is a copy for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,

    /// Superseded versions still inside their grace period, with the instant each stops being
    /// valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grace_versions: Vec<GraceVersion>,

    /// The last value of the `vault.hyperiondb.io/rotate-now` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotate_request: Option<String>,

    /// Current conditions; type Ready tells whether the secret is sealed and readable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A superseded version still valid during its grace period.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraceVersion {
    /// The version number.
    pub version: i64,
    /// The instant from which this version no longer reads or verifies.
    pub expires_at: Time,
}

fn default_grace_period() -> String {
    "0s".to_owned()
}

fn default_length() -> u32 {
    DEFAULT_LENGTH
}

/// Durations are bounded strings so CEL cost estimation stays small.
const DURATION_MAX_LENGTH: u64 = 32;

fn duration_string(default: Option<&str>) -> schemars::Schema {
    let mut schema = schemars::json_schema!({
        "type": "string",
        "pattern": GO_DURATION_PATTERN,
        "maxLength": DURATION_MAX_LENGTH,
    });
    if let Some(default) = default {
        schema.insert("default".to_owned(), default.into());
    }
    schema
}

fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_string(None)
}

fn grace_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_string(Some("0s"))
}

impl VaultSecret {
    /// The `vault.hyperiondb.io/rotate-now` nonce, if any.
    pub fn rotate_now_nonce(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::ROTATE_NOW_ANNOTATION))
            .map(String::as_str)
    }
}
