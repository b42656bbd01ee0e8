//! `/v1/secrets...` and `/v1/batch/secrets`.
//!
//! Names contain `/`, so everything under `/v1/secrets/` is one wildcard route, dispatched on the
//! last segment (`verify`, `rotate`, `versions` are reserved as last segments of names, so the
//! split is unambiguous). Percent-encoded names (`payments%2Fapi-key`) are decoded by the path
//! extractor and take the same path.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyperion_vault_core::name::{NameError, SecretName};
use hyperion_vault_core::rbac::{self, Action};
use jiff::Timestamp;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Ctx, body, json};
use crate::audit::CallClass;
use crate::backend::{AuditEvent, BackendError, NewSecret};
use crate::cursor::{self, PageQuery};
use crate::error::{AppError, ErrorBody};
use crate::guard::{allow_read, authenticate, authorize};
use crate::model::{
    BatchRequest, CreateSecretDoc, CreateSecretRequest, SecretList, SecretMetaResponse, SecretUpdate,
    SecretValueResponse, UpdateSecretRequest, VerifyRequest, VerifyResponse, VersionList, VersionResponse,
    parse_batch,
};
use crate::router::SharedState;

const CURSOR_KIND: &str = "secrets";
/// Concurrent store reads per batch request.
const BATCH_CONCURRENCY: usize = 16;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSecretsQuery {
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only names starting with this string (characters of a name only).
    #[param(max_length = 253, pattern = r"^[A-Za-z0-9._/-]*$")]
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Read this version; it must be current or inside its grace period.
    #[param(minimum = 1)]
    pub version: Option<u32>,
}

enum Target<'a> {
    Secret(&'a str),
    Verify(&'a str),
    Rotate(&'a str),
    Versions(&'a str),
}

impl Target<'_> {
    fn not_allowed(&self) -> AppError {
        AppError::MethodNotAllowed(Some(match self {
            Target::Secret(_) => "GET, PUT, DELETE",
            Target::Verify(_) | Target::Rotate(_) => "POST",
            Target::Versions(_) => "GET",
        }))
    }
}

fn target(rest: &str) -> Target<'_> {
    if let Some(n) = rest.strip_suffix("/verify") {
        Target::Verify(n)
    } else if let Some(n) = rest.strip_suffix("/rotate") {
        Target::Rotate(n)
    } else if let Some(n) = rest.strip_suffix("/versions") {
        Target::Versions(n)
    } else {
        Target::Secret(rest)
    }
}

/// A name from the path. A name ending in a reserved segment cannot exist (create refuses it), so
/// it is "not found" rather than invalid.
fn path_name(raw: &str) -> Result<SecretName, AppError> {
    match SecretName::parse(raw) {
        Ok(n) => Ok(n),
        Err(NameError::ReservedSuffix(_)) => Err(AppError::NotFound(format!("secret {raw} not found"))),
        Err(e) => Err(AppError::bad_request(format!("name: {e}"))),
    }
}

fn secret_err(e: BackendError, name: &str) -> AppError {
    AppError::from_backend(e, &format!("secret {name}"))
}

fn value_response(status: StatusCode, v: crate::backend::SecretValue) -> Result<Response, AppError> {
    Ok(json(status, &SecretValueResponse::try_from(v)?))
}

pub async fn get_any(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Path(rest) = path?;
    match target(&rest) {
        Target::Secret(name) => {
            let Query(q) = query?;
            read(&st, &ctx, name, q.version).await
        }
        Target::Versions(name) => versions(&st, &ctx, name).await,
        t @ (Target::Verify(_) | Target::Rotate(_)) => Err(t.not_allowed()),
    }
}

pub async fn post_any(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, AppError> {
    let Path(rest) = path?;
    match target(&rest) {
        Target::Verify(name) => verify(&st, &ctx, name, req).await,
        Target::Rotate(name) => rotate(&st, &ctx, name).await,
        t @ (Target::Secret(_) | Target::Versions(_)) => Err(t.not_allowed()),
    }
}

pub async fn put_any(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, AppError> {
    let Path(rest) = path?;
    match target(&rest) {
        Target::Secret(name) => update(&st, &ctx, name, req).await,
        t => Err(t.not_allowed()),
    }
}

/// One route serves four documented paths; answer OPTIONS with the right `Allow` for each.
pub async fn options_any(path: Result<Path<String>, PathRejection>) -> Result<Response, AppError> {
    let Path(rest) = path?;
    Err(target(&rest).not_allowed())
}

pub async fn delete_any(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(rest) = path?;
    match target(&rest) {
        Target::Secret(name) => remove(&st, &ctx, name).await,
        t => Err(t.not_allowed()),
    }
}

/// Read the current value (or a live grace version).
#[utoipa::path(get, path = "/v1/secrets/{name}", tag = "reads",
    params(("name" = String, Path, description = "Secret name; `/` raw or percent-encoded", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length = 253), ReadQuery),
    responses(
        (status = 200, body = SecretValueResponse),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn read(
    st: &SharedState,
    ctx: &Ctx,
    raw: &str,
    version: Option<u32>,
) -> Result<Response, AppError> {
    ctx.audit(if version.is_some() { "read_version" } else { "read" }, Some(raw));
    allow_read(st, ctx.addr).await?;
    let name = path_name(raw)?;
    let v = match version {
        None => st.backend.read_current(&name).await,
        Some(0) => return Err(AppError::bad_request("version: must be at least 1")),
        Some(n) => st.backend.read_version(&name, n).await,
    }
    .map_err(|e| match (e, version) {
        (BackendError::NotFound, Some(n)) => {
            AppError::NotFound(format!("secret {name} has no readable version {n}"))
        }
        (e, _) => secret_err(e, name.as_str()),
    })?;
    value_response(StatusCode::OK, v)
}

/// Constant-time check of a presented value against every live version.
#[utoipa::path(post, path = "/v1/secrets/{name}/verify", tag = "reads",
    params(("name" = String, Path, description = "Secret name; `/` raw or percent-encoded", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length = 253)),
    request_body = VerifyRequest,
    responses(
        (status = 200, body = VerifyResponse, description = "Unknown names answer like a mismatch"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn verify(st: &SharedState, ctx: &Ctx, raw: &str, req: Request) -> Result<Response, AppError> {
    ctx.audit("verify", Some(raw));
    allow_read(st, ctx.addr).await?;
    let VerifyRequest { value } = body(req).await?;
    let name = match path_name(raw) {
        Ok(n) => n,
        // Unknown names answer like a mismatch.
        Err(AppError::NotFound(_)) => {
            ctx.detail("mismatch");
            return Ok(json(StatusCode::OK, &VerifyResponse { valid: false, version: None }));
        }
        Err(e) => return Err(e),
    };
    let value = zeroize::Zeroizing::new(value);
    let version =
        st.backend.verify(&name, value.as_bytes()).await.map_err(|e| secret_err(e, name.as_str()))?;
    ctx.detail(if version.is_some() { "match" } else { "mismatch" });
    Ok(json(StatusCode::OK, &VerifyResponse { valid: version.is_some(), version }))
}

/// Read many secrets at once; missing names are omitted, order follows the request.
#[utoipa::path(post, path = "/v1/batch/secrets", tag = "reads",
    request_body = BatchRequest,
    responses(
        (status = 200, body = Vec<SecretValueResponse>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn batch(State(st): State<SharedState>, ctx: Ctx, req: Request) -> Result<Response, AppError> {
    ctx.audit("batch_read", None);
    allow_read(&st, ctx.addr).await?;
    let names = parse_batch(body::<BatchRequest>(req).await?)?;
    // One audit event per name, reserved before any secret is touched.
    let mut slots = Vec::with_capacity(names.len());
    for _ in &names {
        slots.push(
            st.audit.reserve(CallClass::Read).map_err(|_| AppError::Unavailable("audit log unavailable"))?,
        );
    }
    let reads: Vec<_> = names.iter().map(|n| st.backend.read_current(n)).collect();
    let results: Vec<_> = futures::stream::iter(reads).buffered(BATCH_CONCURRENCY).collect().await;
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut out = Vec::with_capacity(names.len());
    let mut failure = None;
    for ((name, result), slot) in names.iter().zip(results).zip(slots) {
        let outcome = match result {
            Ok(v) => match SecretValueResponse::try_from(v) {
                Ok(r) => {
                    out.push(r);
                    "success"
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    "error"
                }
            },
            Err(BackendError::NotFound) => "not_found",
            Err(e) => {
                failure.get_or_insert(secret_err(e, name.as_str()));
                "error"
            }
        };
        slot.record(AuditEvent {
            at: Timestamp::now(),
            actor: "anonymous".to_owned(),
            client_ip: ctx.addr.0,
            action: "read",
            secret: Some(name.as_str().to_owned()),
            outcome,
            detail: Some(format!("batch request_id={request_id}")),
        });
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(json(StatusCode::OK, &out))
}

/// Create an API-owned secret.
#[utoipa::path(post, path = "/v1/secrets", tag = "management",
    request_body = CreateSecretDoc,
    security(("bearer" = [])),
    responses(
        (status = 201, body = SecretValueResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn create(State(st): State<SharedState>, ctx: Ctx, req: Request) -> Result<Response, AppError> {
    ctx.audit("create", None);
    let principal = authenticate(&st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    let new = NewSecret::try_from(body::<CreateSecretRequest>(req).await?)?;
    ctx.audit("create", Some(new.name.as_str()));
    authorize(&principal, Action::Create, new.name.as_str())?;
    let name = new.name.clone();
    let v = st.backend.create_secret(new).await.map_err(|e| secret_err(e, name.as_str()))?;
    value_response(StatusCode::CREATED, v)
}

/// List secret metadata the token may read, by name, paginated.
#[utoipa::path(get, path = "/v1/secrets", tag = "management",
    params(ListSecretsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SecretList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn list(
    State(st): State<SharedState>,
    ctx: Ctx,
    query: Result<Query<ListSecretsQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    ctx.audit("list", None);
    let principal = authenticate(&st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    let Query(q) = query?;
    let limit = PageQuery { limit: q.limit, cursor: None }.limit()?;
    if q.prefix.as_ref().is_some_and(|p| p.len() > hyperion_vault_core::name::MAX_NAME_LEN) {
        return Err(AppError::bad_request("prefix: is longer than a name can be"));
    }
    if q.prefix.as_ref().is_some_and(|p| !p.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c)))
    {
        return Err(AppError::bad_request(
            "prefix: may only contain the characters of a name (A-Z a-z 0-9 . _ - /)",
        ));
    }
    // A cursor of this listing holds the last name of the previous page; anything else was not
    // made here (and could carry bytes PostgreSQL refuses, such as NUL).
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            let key = cursor::decode(CURSOR_KIND, c)?;
            SecretName::parse(&key)
                .map(|_| key)
                .map_err(|_| AppError::bad_request("cursor: is not a cursor returned by this listing"))
        })
        .transpose()?;
    let page = st.backend.list(q.prefix.as_deref(), after.as_deref(), limit).await?;
    let items = page
        .items
        .into_iter()
        .filter(|m| rbac::allows(&principal.roles, Action::ReadMetadata, &m.name))
        .map(SecretMetaResponse::from)
        .collect();
    let next_cursor = page.next.map(|k| cursor::encode(CURSOR_KIND, &k));
    Ok(json(StatusCode::OK, &SecretList { items, next_cursor }))
}

/// Version history (metadata only).
#[utoipa::path(get, path = "/v1/secrets/{name}/versions", tag = "management",
    params(("name" = String, Path, description = "Secret name; `/` raw or percent-encoded", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length = 253)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = VersionList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn versions(st: &SharedState, ctx: &Ctx, raw: &str) -> Result<Response, AppError> {
    ctx.audit("history", Some(raw));
    let principal = authenticate(st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    let name = path_name(raw)?;
    authorize(&principal, Action::ReadMetadata, name.as_str())?;
    let meta = st.backend.metadata(&name).await.map_err(|e| secret_err(e, name.as_str()))?;
    let history = st.backend.history(&name).await.map_err(|e| secret_err(e, name.as_str()))?;
    let now = Timestamp::now();
    let versions = history.into_iter().map(|v| VersionResponse::from_meta(v, meta.version, now)).collect();
    Ok(json(StatusCode::OK, &VersionList { name: name.into_string(), versions }))
}

/// Set a new value (new version) and/or change metadata.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "management",
    params(("name" = String, Path, description = "Secret name; `/` raw or percent-encoded", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length = 253)),
    request_body = UpdateSecretRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = SecretMetaResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Metadata of a VaultSecret-owned secret"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn update(st: &SharedState, ctx: &Ctx, raw: &str, req: Request) -> Result<Response, AppError> {
    ctx.audit("update", Some(raw));
    let principal = authenticate(st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    let name = path_name(raw)?;
    authorize(&principal, Action::Update, name.as_str())?;
    let update = SecretUpdate::try_from(body::<UpdateSecretRequest>(req).await?)?;
    if !update.meta.is_empty() {
        st.backend.update_meta(&name, update.meta).await.map_err(|e| secret_err(e, name.as_str()))?;
    }
    if let Some(value) = update.value {
        st.backend.put_value(&name, value).await.map_err(|e| secret_err(e, name.as_str()))?;
    }
    let meta = st.backend.metadata(&name).await.map_err(|e| secret_err(e, name.as_str()))?;
    Ok(json(StatusCode::OK, &SecretMetaResponse::from(meta)))
}

/// Rotate an automatic secret now; returns the new value.
#[utoipa::path(post, path = "/v1/secrets/{name}/rotate", tag = "management",
    params(("name" = String, Path, description = "Secret name; `/` raw or percent-encoded", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length = 253)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SecretValueResponse),
        (status = 400, body = ErrorBody, description = "Manual secrets are not rotated"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn rotate(st: &SharedState, ctx: &Ctx, raw: &str) -> Result<Response, AppError> {
    ctx.audit("rotate", Some(raw));
    let principal = authenticate(st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    let name = path_name(raw)?;
    authorize(&principal, Action::Rotate, name.as_str())?;
    let v = st.backend.rotate(&name).await.map_err(|e| secret_err(e, name.as_str()))?;
    value_response(StatusCode::OK, v)
}

/// Delete a secret: crypto material destroyed, metadata and audit kept, name freed.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "management",
    params(("name" = String, Path, description = "Secret name; `/` raw or percent-encoded", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length = 253)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Owned by a VaultSecret; delete that instead"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn remove(st: &SharedState, ctx: &Ctx, raw: &str) -> Result<Response, AppError> {
    ctx.audit("delete", Some(raw));
    let principal = authenticate(st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    let name: SecretName = path_name(raw)?;
    authorize(&principal, Action::Delete, name.as_str())?;
    st.backend.delete(&name).await.map_err(|e| secret_err(e, name.as_str()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
