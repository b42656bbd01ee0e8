//! Health, readiness, metrics and the OpenAPI document: unguarded and unaudited.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::json;
use crate::error::{AppError, ErrorBody};
use crate::model::Health;
use crate::router::SharedState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Response {
    json(StatusCode::OK, &Health { status: "ok".to_owned() })
}

/// The database is reachable.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(st): State<SharedState>) -> Result<Response, AppError> {
    st.backend.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "Readiness check failed");
        AppError::Unavailable("database unavailable")
    })?;
    Ok(json(StatusCode::OK, &Health { status: "ready".to_owned() }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(st): State<SharedState>) -> Result<Response, AppError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &st.registry).map_err(AppError::internal)?;
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    let mut r = crate::openapi::document_json().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
