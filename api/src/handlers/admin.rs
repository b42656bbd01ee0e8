//! `/v1/tokens`, `/v1/roles`, `/v1/audit`: admin only.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyperion_vault_core::token::Token;
use jiff::{SignedDuration, Timestamp};

use super::{Ctx, body, json};
use crate::backend::{BackendError, RoleDef};
use crate::cursor::{self, PageQuery};
use crate::error::{AppError, ErrorBody};
use crate::guard::{authenticate, require_admin};
use crate::model::{
    AuditEntry, AuditPage, CreateRoleRequest, CreateTokenRequest, NewToken, RoleList, RoleResponse,
    TokenCreatedResponse, TokenList, TokenResponse, UpdateRoleRequest, parse_ident, role_from_update,
};
use crate::router::SharedState;

const AUDIT_CURSOR: &str = "audit";
/// The role `VAULT_BOOTSTRAP_TOKEN` holds; changing or deleting it could lock every admin out.
const BUILTIN_ADMIN_ROLE: &str = "admin";

fn builtin_guard(name: &str) -> Result<(), AppError> {
    if name == BUILTIN_ADMIN_ROLE {
        return Err(AppError::Conflict(format!("role {name} is built in and cannot be changed or deleted")));
    }
    Ok(())
}

async fn admin(st: &SharedState, ctx: &Ctx) -> Result<(), AppError> {
    let p = authenticate(st, ctx.addr, &ctx.headers, &ctx.cell).await?;
    require_admin(&p)
}

/// Mint a token for a role; the raw token is in this response only.
#[utoipa::path(post, path = "/v1/tokens", tag = "admin", request_body = CreateTokenRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = TokenCreatedResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such role"),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
pub async fn create_token(
    State(st): State<SharedState>,
    ctx: Ctx,
    req: Request,
) -> Result<Response, AppError> {
    ctx.audit("token_create", None);
    admin(&st, &ctx).await?;
    let new = NewToken::try_from(body::<CreateTokenRequest>(req).await?)?;
    let expires_at = new
        .expires_in
        .map(|d| {
            let d = SignedDuration::try_from(d).map_err(AppError::internal)?;
            Timestamp::now().checked_add(d).map_err(AppError::internal)
        })
        .transpose()?;
    let token = Token::generate().map_err(AppError::internal)?;
    let info = st.backend.create_token(&new.name, &new.role, token.fingerprint(), expires_at).await.map_err(
        |e| match e {
            // The store reports an unknown role as invalid input; it is a missing resource.
            BackendError::NotFound => AppError::NotFound(format!("role {} not found", new.role)),
            BackendError::Invalid(field, _) if field == "role" => {
                AppError::NotFound(format!("role {} not found", new.role))
            }
            e => AppError::from_backend(e, &format!("token {}", new.name)),
        },
    )?;
    let resp = TokenCreatedResponse {
        name: info.name,
        role: info.role,
        token: token.expose().to_owned(),
        expires_at: info.expires_at,
    };
    Ok(json(StatusCode::CREATED, &resp))
}

/// Active (unrevoked) tokens; never the raw tokens.
#[utoipa::path(get, path = "/v1/tokens", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_tokens(State(st): State<SharedState>, ctx: Ctx) -> Result<Response, AppError> {
    ctx.audit("token_list", None);
    admin(&st, &ctx).await?;
    let items = st.backend.list_tokens().await?.into_iter().map(TokenResponse::from).collect();
    Ok(json(StatusCode::OK, &TokenList { items }))
}

/// Revoke a token; its name may be reused afterwards.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Token name", pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses((status = 204, description = "Revoked"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn revoke_token(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    ctx.audit("token_revoke", None);
    admin(&st, &ctx).await?;
    let Path(name) = path?;
    let name = parse_ident("name", &name)?;
    st.backend.revoke_token(&name).await.map_err(|e| AppError::from_backend(e, &format!("token {name}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/roles", tag = "admin", request_body = CreateRoleRequest,
    security(("bearer" = [])),
    responses((status = 201, body = RoleResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create_role(
    State(st): State<SharedState>,
    ctx: Ctx,
    req: Request,
) -> Result<Response, AppError> {
    ctx.audit("role_create", None);
    admin(&st, &ctx).await?;
    let role = RoleDef::try_from(body::<CreateRoleRequest>(req).await?)?;
    let name = role.name.clone();
    let role =
        st.backend.create_role(role).await.map_err(|e| AppError::from_backend(e, &format!("role {name}")))?;
    Ok(json(StatusCode::CREATED, &RoleResponse::from(role)))
}

#[utoipa::path(get, path = "/v1/roles", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = RoleList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_roles(State(st): State<SharedState>, ctx: Ctx) -> Result<Response, AppError> {
    ctx.audit("role_list", None);
    admin(&st, &ctx).await?;
    let items = st.backend.list_roles().await?.into_iter().map(RoleResponse::from).collect();
    Ok(json(StatusCode::OK, &RoleList { items }))
}

#[utoipa::path(get, path = "/v1/roles/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Role name", pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses((status = 200, body = RoleResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_role(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    ctx.audit("role_read", None);
    admin(&st, &ctx).await?;
    let Path(name) = path?;
    let name = parse_ident("name", &name)?;
    let role =
        st.backend.get_role(&name).await.map_err(|e| AppError::from_backend(e, &format!("role {name}")))?;
    Ok(json(StatusCode::OK, &RoleResponse::from(role)))
}

/// Replace a role's description, admin flag and permissions.
#[utoipa::path(put, path = "/v1/roles/{name}", tag = "admin", request_body = UpdateRoleRequest,
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Role name", pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses((status = 200, body = RoleResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The built-in admin role"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn replace_role(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, AppError> {
    ctx.audit("role_update", None);
    admin(&st, &ctx).await?;
    let Path(name) = path?;
    builtin_guard(&name)?;
    let role = role_from_update(&name, body::<UpdateRoleRequest>(req).await?)?;
    let role = st
        .backend
        .replace_role(role)
        .await
        .map_err(|e| AppError::from_backend(e, &format!("role {name}")))?;
    Ok(json(StatusCode::OK, &RoleResponse::from(role)))
}

#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Role name", pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Role still used by tokens"),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_role(
    State(st): State<SharedState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    ctx.audit("role_delete", None);
    admin(&st, &ctx).await?;
    let Path(name) = path?;
    let name = parse_ident("name", &name)?;
    builtin_guard(&name)?;
    st.backend.delete_role(&name).await.map_err(|e| AppError::from_backend(e, &format!("role {name}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The audit trail, newest first, paginated.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn read_audit(
    State(st): State<SharedState>,
    ctx: Ctx,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    ctx.audit("audit_read", None);
    admin(&st, &ctx).await?;
    let Query(q) = query?;
    let limit = q.limit()?;
    let after =
        q.cursor.as_deref().filter(|c| !c.is_empty()).map(|c| cursor::decode(AUDIT_CURSOR, c)).transpose()?;
    let page = st.backend.read_audit(after.as_deref(), limit).await?;
    let items = page.items.into_iter().map(AuditEntry::from).collect();
    let next_cursor = page.next.map(|k| cursor::encode(AUDIT_CURSOR, &k));
    Ok(json(StatusCode::OK, &AuditPage { items, next_cursor }))
}
