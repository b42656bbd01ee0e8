//! The database- and Secret-side steps of `apply`: observing the vault secret, keeping its
//! settings in line with the spec, and reading a `valueFrom` source. No value is ever logged or
//! put into an error.

use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_crds::v1alpha1::SecretKeyRef;
use hyperion_vault_crds::validated::{ValidKind, ValidSpec};
use hyperion_vault_store::model::{MetadataUpdate, NewSecret, Owner, SecretKind, SecretMeta};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tracing::info;

use crate::context::Context;
use crate::error::Error;
use crate::status::Observed;

/// The database facts for status; shreds versions whose grace has ended on the way.
pub(crate) async fn observe(
    ctx: &Context,
    name: &SecretName,
    meta: &SecretMeta,
    now: Timestamp,
) -> Result<Observed, Error> {
    let history = ctx.store.history(name).await.map_err(Error::ReadHistory)?.unwrap_or_default();
    let mut grace = Vec::new();
    let mut overdue = false;
    for v in &history {
        if v.superseded_at.is_none() || v.shredded_at.is_some() {
            continue;
        }
        match v.expires_at {
            Some(e) if e > now => grace.push((v.version, e)),
            _ => overdue = true,
        }
    }
    if overdue {
        ctx.store.expire_grace_versions(now).await.map_err(Error::ExpireGrace)?;
    }
    grace.sort_unstable();
    let last_rotation = history
        .iter()
        .find(|v| v.version == meta.current_version)
        .map(|v| v.created_at)
        .or(meta.last_rotated_at);
    Ok(Observed {
        current_version: meta.current_version,
        last_rotation,
        next_rotation: meta.next_rotation_at,
        grace,
    })
}

/// Makes the database settings follow the spec (interval, grace period, generator).
pub(crate) async fn sync_settings(
    ctx: &Context,
    name: &SecretName,
    owner: &Owner,
    meta: SecretMeta,
    spec: &ValidSpec,
    now: Timestamp,
) -> Result<SecretMeta, Error> {
    let (kind, interval, generator) = match &spec.kind {
        ValidKind::Automatic { rotation_interval, generator } => {
            (SecretKind::Automatic, Some(*rotation_interval), Some(*generator))
        }
        ValidKind::Manual { .. } => (SecretKind::Manual, None, None),
    };
    if meta.kind == kind
        && meta.rotation_interval == interval
        && meta.grace_period == spec.grace_period
        && meta.generator == generator
    {
        return Ok(meta);
    }
    let update = MetadataUpdate {
        description: None,
        kind: (meta.kind != kind).then_some(kind),
        rotation_interval: interval,
        grace_period: Some(spec.grace_period),
        generator,
    };
    info!(secret = %name.as_str(), "Updating vault secret settings from the spec");
    ctx.store.update_metadata(name, owner, update, now).await.map_err(Error::UpdateSettings)
}

pub(crate) fn new_secret(name: &SecretName, owner: &Owner, spec: &ValidSpec) -> NewSecret {
    let (kind, rotation_interval, generator) = match &spec.kind {
        ValidKind::Automatic { rotation_interval, generator } => {
            (SecretKind::Automatic, Some(*rotation_interval), Some(*generator))
        }
        ValidKind::Manual { .. } => (SecretKind::Manual, None, None),
    };
    NewSecret {
        name: name.clone(),
        kind,
        owner: owner.clone(),
        description: None,
        rotation_interval,
        grace_period: spec.grace_period,
        generator,
    }
}

pub(crate) enum SourceValue {
    Present(SecretBytes),
    /// Why not: a message naming the Secret or key (never a value).
    Missing(String),
}

pub(crate) async fn read_source(
    ctx: &Context,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<SourceValue, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(secret) = api.get_opt(&r.name).await.map_err(Error::ReadSource)? else {
        return Ok(SourceValue::Missing(format!("Secret {namespace}/{} does not exist", r.name)));
    };
    let bytes =
        secret.data.as_ref().and_then(|d| d.get(&r.key)).map(|b| SecretBytes::copy_from(&b.0)).or_else(
            || {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|s| SecretBytes::copy_from(s.as_bytes()))
            },
        );
    Ok(match bytes {
        Some(b) if !b.is_empty() => SourceValue::Present(b),
        Some(_) => SourceValue::Missing(format!("key {:?} of Secret {namespace}/{} is empty", r.key, r.name)),
        None => SourceValue::Missing(format!("Secret {namespace}/{} has no key {:?}", r.name, r.key)),
    })
}
