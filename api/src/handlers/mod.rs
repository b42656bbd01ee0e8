//! Request handlers, grouped by guard: secrets (reads and management), admin (tokens, roles,
//! audit), ops (health, metrics, OpenAPI).

pub mod admin;
pub mod ops;
pub mod secrets;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::audit::{AuditCell, note};
use crate::error::AppError;
use crate::guard::ClientAddr;
use crate::router::ApiJson;

/// What the middleware attached to the request, plus its headers.
pub struct Ctx {
    pub addr: ClientAddr,
    pub cell: AuditCell,
    pub headers: HeaderMap,
}

impl Ctx {
    pub fn audit(&self, action: &'static str, secret: Option<&str>) {
        // Bounded: a hostile path cannot make an audit row arbitrarily large. Control characters
        // are escaped: PostgreSQL text cannot hold NUL (`/v1/secrets/a%00b` would make the audit
        // batch unwritable, and the flusher retries a batch until it is written), and an audit
        // viewer should not be fed raw escapes.
        let secret = secret.map(|s| {
            s.chars()
                .take(256)
                .flat_map(|c| if c.is_control() { c.escape_debug().collect() } else { vec![c] })
                .collect::<String>()
        });
        note(&self.cell, |n| {
            n.action = Some(action);
            n.secret = secret;
        });
    }

    pub fn detail(&self, detail: &'static str) {
        note(&self.cell, |n| n.detail = Some(detail));
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<ClientAddr>().copied().unwrap_or(ClientAddr(None));
        let cell =
            parts.extensions.get::<AuditCell>().cloned().ok_or_else(|| {
                AppError::internal("request reached a handler without the observe middleware")
            })?;
        Ok(Self { addr, cell, headers: parts.headers.clone() })
    }
}

/// Parses a JSON body after the guard has run, so unauthenticated callers learn nothing from
/// validation messages.
pub async fn body<T: DeserializeOwned>(req: Request) -> Result<T, AppError> {
    let ApiJson(v) = ApiJson::<T>::from_request(req, &()).await?;
    Ok(v)
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, Json(value)).into_response()
}
