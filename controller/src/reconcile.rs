//! The reconcile: instrumented entry → kube's `finalizer()` → [`apply`] / [`cleanup`], both
//! idempotent and decided from observed state (the object and the database), never from the
//! event that triggered them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyperion_vault_core::name::SecretName;
use hyperion_vault_core::secret::SecretBytes;
use hyperion_vault_crds::FINALIZER;
use hyperion_vault_crds::v1alpha1::{DeletionPolicy, VaultSecret, VaultSecretStatus};
use hyperion_vault_crds::validated::{InvalidSpec, ValidKind, ValidSpec};
use hyperion_vault_store::StoreError;
use hyperion_vault_store::model::{Owner, RotateOutcome};
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, FinalizerError, finalizer_category};
use crate::plan::{self, Nonce};
use crate::status::{self, Observed, Readiness, reason};
use crate::steps::{SourceValue, new_secret, observe, read_source, sync_settings};

/// How soon to look again after losing a version race to another writer.
const CONFLICT_RETRY: Duration = Duration::from_millis(500);
/// How often a name conflict is re-checked (the other owner may delete its secret).
const NAME_CONFLICT_RETRY: Duration = Duration::from_secs(60);

/// Entry point for the kube-runtime `Controller`.
#[tracing::instrument(skip_all, fields(namespace = vs.namespace().unwrap_or_default(), name = vs.name_any()))]
pub async fn reconcile(vs: Arc<VaultSecret>, ctx: Arc<Context>) -> Result<Action, FinalizerError> {
    ctx.metrics.reconcile_started();
    let started = Instant::now();
    let namespace = vs.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", vs.name_any());
    let api: Api<VaultSecret> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, vs, |event| async {
        match event {
            Finalizer::Apply(vs) => apply(vs, &ctx).await,
            Finalizer::Cleanup(vs) => cleanup(vs, &ctx).await,
        }
    })
    .await;
    ctx.metrics.reconcile_finished(started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// Transient failures back off exponentially per object; permanent ones wait for a change
/// (their Ready=False status was already written by `apply`).
pub fn error_policy(vs: Arc<VaultSecret>, error: &FinalizerError, ctx: Arc<Context>) -> Action {
    let category = finalizer_category(error);
    ctx.metrics.error(category);
    warn!(
        namespace = vs.namespace().unwrap_or_default(),
        name = vs.name_any(),
        category,
        error = %error_chain(error),
        "Reconcile failed"
    );
    let permanent = matches!(error, kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) if !e.is_transient());
    if permanent {
        Action::await_change()
    } else {
        let key = format!("{}/{}", vs.namespace().unwrap_or_default(), vs.name_any());
        Action::requeue(ctx.backoff(&key))
    }
}

/// What one apply concluded.
struct Outcome {
    readiness: Readiness,
    observed: Option<Observed>,
    /// The `lastRotateRequest` to record.
    acknowledged: Option<String>,
    /// `None`: wait for a change of the object (or of its source Secret).
    requeue: Option<Duration>,
    /// A version this apply created, and why.
    created: Option<(u32, &'static str)>,
    /// A nonce that could not be honoured (manual secrets do not rotate).
    refused_nonce: bool,
}

impl Outcome {
    fn waiting(readiness: Readiness, observed: Option<Observed>, acknowledged: Option<String>) -> Self {
        Self { readiness, observed, acknowledged, requeue: None, created: None, refused_nonce: false }
    }
}

/// Brings the vault secret in line with the spec, then applies the status if it changed.
pub async fn apply(vs: Arc<VaultSecret>, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let previous = vs.status.as_ref();
    let outcome = match act(&vs, ctx, now).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // Surface a transient outage in status (best effort), then let error_policy back off.
            if let Some(readiness) = unavailable_readiness(&e) {
                let mut degraded = previous.cloned().unwrap_or_default();
                degraded.conditions =
                    status::desired(vs.meta().generation, &readiness, None, None, previous, now).conditions;
                if let Err(write) = write_status(&vs, ctx, previous, degraded, None).await {
                    warn!(error = %error_chain(&write), "Could not record the outage in status");
                }
            }
            return Err(e);
        }
    };
    let desired = status::desired(
        vs.meta().generation,
        &outcome.readiness,
        outcome.observed.as_ref(),
        outcome.acknowledged.clone(),
        previous,
        now,
    );
    write_status(&vs, ctx, previous, desired, outcome.created).await?;
    if outcome.refused_nonce {
        publish(
            ctx,
            &vs,
            EventType::Warning,
            "RotateNotSupported",
            "A Manual secret is not rotated; change its source or set a new value through the API".into(),
        )
        .await;
    }
    Ok(outcome.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Applies `desired` when it differs from `previous`, with events on transitions.
async fn write_status(
    vs: &VaultSecret,
    ctx: &Context,
    previous: Option<&VaultSecretStatus>,
    desired: VaultSecretStatus,
    created: Option<(u32, &'static str)>,
) -> Result<(), Error> {
    let key = format!("{}/{}", vs.namespace().unwrap_or_default(), vs.name_any());
    let before = status::ready_of(previous).map(|(s, r)| (s.to_owned(), r.to_owned()));
    let after_reason = desired.conditions.first().map(|c| c.reason.clone()).unwrap_or_default();
    let after_ready = desired.conditions.first().is_some_and(|c| c.status == "True");
    ctx.metrics.set_condition(&key, static_reason(&after_reason));
    let unchanged =
        previous.is_some_and(|p| serde_json::to_value(p).ok() == serde_json::to_value(&desired).ok());
    if !unchanged {
        let api: Api<VaultSecret> = Api::namespaced(ctx.client.clone(), &vs.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": "vault.hyperiondb.io/v1alpha1",
            "kind": "VaultSecret",
            "status": desired,
        });
        api.patch_status(&vs.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::ApplyStatus)?;
    }
    // Events on transitions only.
    let message = desired.conditions.first().map(|c| c.message.clone()).unwrap_or_default();
    let flipped = before.as_ref().map(|(s, r)| (s.as_str() == "True", r.as_str()))
        != Some((after_ready, after_reason.as_str()));
    if let Some((version, trigger)) = created
        && trigger != "initial"
    {
        let note = match trigger {
            "source_changed" => format!("Sealed version {version} from the changed source Secret"),
            "rotate_now" => format!("Rotated to version {version} on request"),
            _ => format!("Rotated to version {version} on schedule"),
        };
        let reason = if trigger == "source_changed" { "ValueChanged" } else { "Rotated" };
        publish(ctx, vs, EventType::Normal, reason, note).await;
    }
    if flipped {
        let kind = if after_ready { EventType::Normal } else { EventType::Warning };
        publish(ctx, vs, kind, &after_reason, message).await;
    }
    Ok(())
}

async fn act(vs: &VaultSecret, ctx: &Context, now: Timestamp) -> Result<Outcome, Error> {
    let namespace = vs.namespace().ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let uid = vs.uid().ok_or(Error::MissingObjectField("metadata.uid"))?;
    let previous = vs.status.as_ref();
    let acknowledged = previous.and_then(|s| s.last_rotate_request.clone());
    let name = match SecretName::for_resource(&namespace, &vs.name_any()) {
        Ok(n) => n,
        Err(e) => {
            let invalid =
                InvalidSpec { field: "metadata.name", reason: format!("vault name is invalid: {e}") };
            return Ok(Outcome::waiting(invalid_readiness(&invalid), None, acknowledged));
        }
    };
    let owner = Owner::Resource { uid: uid.clone(), namespace: namespace.clone(), name: vs.name_any() };
    let existing = ctx.store.find_by_owner_uid(&uid).await.map_err(Error::LookupSecret)?;
    let spec = ValidSpec::try_from(&vs.spec)
        .and_then(|s| s.check_min_rotation_interval(ctx.min_rotation_interval).map(|()| s));
    let spec = match spec {
        Ok(s) => s,
        Err(invalid) => {
            let observed = match &existing {
                Some(meta) => Some(observe(ctx, &name, meta, now).await?),
                None => None,
            };
            return Ok(Outcome::waiting(invalid_readiness(&invalid), observed, acknowledged));
        }
    };

    let source = match spec.source() {
        Some(r) => Some(read_source(ctx, &namespace, r).await?),
        None => None,
    };
    let mut created = None;
    let mut meta = match existing {
        Some(meta) => sync_settings(ctx, &name, &owner, meta, &spec, now).await?,
        None => {
            let value = match &source {
                Some(SourceValue::Present(v)) => Some(SecretBytes::copy_from(v.expose())),
                _ => None,
            };
            match ctx.store.create_secret(new_secret(&name, &owner, &spec), value, now).await {
                Ok(meta) => {
                    if meta.current_version > 0 {
                        ctx.metrics.rotated("initial");
                        info!(secret = %name.as_str(), version = meta.current_version, "Sealed first version");
                        created = Some((meta.current_version, "initial"));
                    }
                    meta
                }
                Err(StoreError::AlreadyExists { .. }) => {
                    let holder = ctx.store.metadata(&name).await.map_err(Error::LookupSecret)?;
                    let message = match holder.map(|m| m.owner) {
                        Some(Owner::Resource { namespace: n, name: r, .. })
                            if n == namespace && r == vs.name_any() =>
                        {
                            format!(
                                "vault name {} is still held by an earlier VaultSecret of this name that was \
                                 deleted with deletionPolicy Retain",
                                name.as_str()
                            )
                        }
                        Some(Owner::Api) => format!(
                            "vault name {} is held by an API-owned secret (created through the API, or \
                             retained from a deleted VaultSecret); delete it through the API to free the name",
                            name.as_str()
                        ),
                        Some(other) => format!(
                            "vault name {} is held by VaultSecret {}",
                            name.as_str(),
                            other.display_name()
                        ),
                        None => format!("vault name {} is held by another owner", name.as_str()),
                    };
                    let readiness = Readiness::not_ready(reason::NAME_CONFLICT, message);
                    let mut o = Outcome::waiting(readiness, None, acknowledged);
                    o.requeue = Some(NAME_CONFLICT_RETRY);
                    return Ok(o);
                }
                Err(StoreError::Invalid { field, message }) => {
                    let invalid = InvalidSpec { field: store_field(field), reason: message };
                    return Ok(Outcome::waiting(invalid_readiness(&invalid), None, acknowledged));
                }
                Err(e) => return Err(Error::CreateSecret(e)),
            }
        }
    };

    // Manual values: from the source Secret, exactly one new version per distinct value.
    if let Some(source) = &source {
        match source {
            SourceValue::Present(value) if created.is_none() => {
                // On the primary: a lagging standby would not yet see the version sealed by the
                // previous reconcile, and the same value would be sealed again.
                let unchanged = meta.current_version > 0
                    && ctx
                        .store
                        .verify_on_primary(&name, value.expose(), now)
                        .await
                        .map_err(Error::CompareSource)?
                        == Some(meta.current_version);
                if !unchanged {
                    let trigger = if meta.current_version == 0 { "initial" } else { "source_changed" };
                    let v = ctx
                        .store
                        .put_value(&name, SecretBytes::copy_from(value.expose()), now)
                        .await
                        .map_err(Error::SealVersion)?;
                    ctx.metrics.rotated(trigger);
                    info!(secret = %name.as_str(), version = v.version, trigger, "Sealed new version from the source Secret");
                    meta.current_version = v.version;
                    meta.last_rotated_at = Some(v.created_at);
                    created = Some((v.version, trigger));
                }
            }
            SourceValue::Present(_) => {}
            SourceValue::Missing(what) => {
                let observed = observe(ctx, &name, &meta, now).await?;
                let readiness = Readiness::not_ready(reason::SOURCE_SECRET_MISSING, what.clone());
                let mut o = Outcome::waiting(readiness, Some(observed.clone()), acknowledged);
                o.requeue = Some(plan::requeue_after(None, observed.grace.iter().map(|g| g.1), now));
                return Ok(o);
            }
        }
    }

    // Rotation: when the database says it is due, or once per rotate-now nonce.
    let annotation = vs.rotate_now_nonce();
    // Only a nonce not yet acknowledged in status costs a database read (on the primary).
    let served = match annotation {
        Some(n) if Some(n) != acknowledged.as_deref() && meta.current_version > 0 => {
            ctx.store.served_rotate_request(&name, n).await.map_err(Error::LookupSecret)?
        }
        _ => false,
    };
    let nonce =
        plan::nonce(annotation, acknowledged.as_deref(), previous.and_then(|s| s.current_version), served);
    let mut refused_nonce = false;
    let mut lost_race = false;
    let mut requeue_override = None;
    match &spec.kind {
        ValidKind::Automatic { .. }
            if meta.current_version > 0 && plan::should_rotate(meta.next_rotation_at, nonce, now) =>
        {
            let due = meta.next_rotation_at.is_some_and(|t| t <= now);
            let trigger = if due { "schedule" } else { "rotate_now" };
            // A pending nonce is answered by this rotation (even when the slot is due too), and
            // recorded with its version so a crash before the status write cannot rotate again.
            let rotated = match annotation.filter(|_| nonce == Nonce::Rotate) {
                Some(request) => ctx.store.rotate_on_request(&name, meta.current_version, request, now).await,
                None => ctx.store.rotate(&name, meta.current_version, None, now).await,
            };
            match rotated.map_err(Error::RotateSecret)? {
                RotateOutcome::Rotated { version, next_rotation_at } => {
                    ctx.metrics.rotated(trigger);
                    info!(secret = %name.as_str(), version = version.version, trigger, "Rotated secret");
                    meta.current_version = version.version;
                    meta.last_rotated_at = Some(version.created_at);
                    meta.next_rotation_at = next_rotation_at;
                    created = Some((version.version, trigger));
                }
                RotateOutcome::Conflict { current_version } => {
                    info!(secret = %name.as_str(), current_version, "Rotation raced another writer; looking again");
                    requeue_override = Some(CONFLICT_RETRY);
                    lost_race = true;
                }
            }
        }
        ValidKind::Manual { .. } if nonce == Nonce::Rotate => refused_nonce = true,
        _ => {}
    }
    let acknowledged = plan::acknowledgement(nonce, lost_race, annotation, acknowledged);

    let observed = observe(ctx, &name, &meta, now).await?;
    let readiness = if observed.current_version == 0 {
        Readiness::not_ready(
            reason::AWAITING_VALUE,
            format!("set the value with PUT /v1/secrets/{} on the vault API", name.as_str()),
        )
    } else {
        Readiness::sealed(observed.current_version)
    };
    let requeue = requeue_override.unwrap_or_else(|| {
        let at = plan::requeue_after(observed.next_rotation, observed.grace.iter().map(|g| g.1), now);
        if observed.current_version == 0 { at.min(plan::AWAITING_RECHECK) } else { at }
    });
    Ok(Outcome {
        readiness,
        observed: Some(observed),
        acknowledged,
        requeue: Some(requeue),
        created,
        refused_nonce,
    })
}

/// Releases the vault secret per `deletionPolicy`. Idempotent: a secret already gone is fine.
pub async fn cleanup(vs: Arc<VaultSecret>, ctx: &Context) -> Result<Action, Error> {
    let key = format!("{}/{}", vs.namespace().unwrap_or_default(), vs.name_any());
    ctx.metrics.set_condition(&key, None);
    let Some(uid) = vs.uid() else { return Ok(Action::await_change()) };
    if vs.spec.deletion_policy == DeletionPolicy::Retain {
        // Owned by a uid that is going away, the secret would stop rotating and nobody could
        // manage or delete it; the API owner keeps it rotating and lets an admin do both.
        if let Some(name) =
            ctx.store.release_to_api(&uid, Timestamp::now()).await.map_err(Error::ReleaseSecret)?
        {
            info!(resource = %key, secret = %name.as_str(), "Retained the vault secret; the API owns it now");
        }
        return Ok(Action::await_change());
    }
    let Some(meta) = ctx.store.find_by_owner_uid(&uid).await.map_err(Error::LookupSecret)? else {
        return Ok(Action::await_change());
    };
    let owner = meta.owner.clone();
    match ctx.store.delete(&meta.name, &owner, Timestamp::now()).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(Error::DeleteSecret(e)),
    }
    info!(secret = %meta.name.as_str(), "Deleted the vault secret and destroyed its crypto material");
    Ok(Action::await_change())
}

fn invalid_readiness(invalid: &InvalidSpec) -> Readiness {
    Readiness::not_ready(reason::INVALID_SPEC, invalid.to_string())
}

fn unavailable_readiness(e: &Error) -> Option<Readiness> {
    match e.category() {
        "store_unavailable" => {
            Some(Readiness::not_ready(reason::STORE_UNAVAILABLE, "database unavailable; retrying"))
        }
        "kms_unavailable" => {
            Some(Readiness::not_ready(reason::KMS_UNAVAILABLE, "key service unavailable; retrying"))
        }
        _ => None,
    }
}

/// Maps the store's snake_case field names onto the spec's.
fn store_field(field: &'static str) -> &'static str {
    match field {
        "rotation_interval" => "rotationInterval",
        "grace_period" => "gracePeriod",
        "generator" => "generator",
        "kind" => "kind",
        _ => "spec",
    }
}

fn static_reason(r: &str) -> Option<&'static str> {
    [
        reason::SEALED,
        reason::AWAITING_VALUE,
        reason::INVALID_SPEC,
        reason::STORE_UNAVAILABLE,
        reason::KMS_UNAVAILABLE,
        reason::SOURCE_SECRET_MISSING,
        reason::NAME_CONFLICT,
    ]
    .into_iter()
    .find(|k| *k == r)
    .or(Some(reason::ERROR))
}

async fn publish(ctx: &Context, vs: &VaultSecret, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &vs.object_ref(&())).await {
        warn!(error = %e, "Could not publish an event");
    }
}

/// `error: cause: cause` on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
