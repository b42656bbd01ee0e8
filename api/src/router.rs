//! The router, the request middleware (request id, client address, audit slot, metrics, headers)
//! and the JSON extractor whose rejections are [`AppError`]s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::audit::{self, AuditCell, AuditNote, CallClass};
use crate::client_ip;
use crate::error::{AppError, InternalCause};
use crate::guard::{ClientAddr, RequestId};
use crate::handlers::{admin, ops, secrets};
use crate::metrics::{RequestLabels, status_class};
use crate::model::MAX_BODY_BYTES;
use crate::state::AppState;

pub type SharedState = Arc<AppState>;

/// The whole HTTP surface. Tests drive it with `tower::ServiceExt::oneshot`.
pub fn app(state: SharedState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/secrets", get(secrets::list).post(secrets::create))
        .route(
            "/v1/secrets/{*rest}",
            get(secrets::get_any)
                .post(secrets::post_any)
                .put(secrets::put_any)
                .delete(secrets::delete_any)
                .options(secrets::options_any),
        )
        .route("/v1/batch/secrets", post(secrets::batch))
        .route("/v1/tokens", get(admin::list_tokens).post(admin::create_token))
        .route("/v1/tokens/{name}", delete(admin::revoke_token))
        .route("/v1/roles", get(admin::list_roles).post(admin::create_role))
        .route("/v1/roles/{name}", get(admin::get_role).put(admin::replace_role).delete(admin::delete_role))
        .route("/v1/audit", get(admin::read_audit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> AppError {
    // axum's method router adds the `Allow` header itself.
    AppError::MethodNotAllowed(None)
}

/// A JSON body extractor whose every rejection (415, 400, 413) is an [`AppError`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(AppError::UnsupportedMediaType(
                "expected request with `Content-Type: application/json`".to_owned(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge
            } else {
                AppError::bad_request(e.body_text())
            }
        })?;
        // serde would also build a struct from a JSON array (`[null, null]`); every body here
        // is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(AppError::bad_request("body: must be a JSON object"));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A bounded route label for metrics (never the secret name itself).
pub fn route_template(path: &str) -> &'static str {
    const FIXED: [&str; 11] = [
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
    ];
    if let Some(f) = FIXED.iter().find(|f| **f == path) {
        return f;
    }
    if let Some(rest) = path.strip_prefix("/v1/secrets/") {
        return match rest.rsplit('/').next() {
            Some("verify") => "/v1/secrets/{name}/verify",
            Some("rotate") => "/v1/secrets/{name}/rotate",
            Some("versions") => "/v1/secrets/{name}/versions",
            _ => "/v1/secrets/{name}",
        };
    }
    if path.strip_prefix("/v1/tokens/").is_some_and(|r| !r.is_empty() && !r.contains('/')) {
        return "/v1/tokens/{name}";
    }
    if path.strip_prefix("/v1/roles/").is_some_and(|r| !r.is_empty() && !r.contains('/')) {
        return "/v1/roles/{name}";
    }
    "unmatched"
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Which calls are audited, and how a full audit queue treats them.
fn audit_class(route: &'static str, method: &Method) -> Option<CallClass> {
    match route {
        "/v1/secrets/{name}" if method == Method::GET => Some(CallClass::Read),
        "/v1/secrets/{name}/verify" | "/v1/batch/secrets" => Some(CallClass::Read),
        "/v1/secrets"
        | "/v1/secrets/{name}"
        | "/v1/secrets/{name}/rotate"
        | "/v1/secrets/{name}/versions" => Some(CallClass::Management),
        "/v1/tokens" | "/v1/tokens/{name}" | "/v1/roles" | "/v1/roles/{name}" | "/v1/audit" => {
            Some(CallClass::Management)
        }
        _ => None,
    }
}

/// How long a client may take to send its request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the whole body, bounded in size and time, before an audit slot is reserved or a handler
/// runs: a client announcing or sending more than the limit gets 413 at once, one that stalls gets
/// 408, and neither can hold audit capacity or a handler while it dawdles.
async fn buffer_body(req: Request) -> Result<Request, AppError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(AppError::PayloadTooLarge);
    }
    let bytes =
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
            Err(_) => return Err(AppError::RequestTimeout),
            Ok(Err(e)) => {
                let too_large = e.into_inner().downcast_ref::<http_body_util::LengthLimitError>().is_some();
                return Err(if too_large {
                    AppError::PayloadTooLarge
                } else {
                    AppError::bad_request("failed to read the request body")
                });
            }
            Ok(Ok(bytes)) => bytes,
        };
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().clone();
    let route = route_template(req.uri().path());

    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| req.extensions().get::<MockConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    let client = match peer.map(|p| client_ip::client_ip(p, req.headers(), &state.proxy)) {
        Some(Ok(ip)) => Some(ip),
        Some(Err(e)) => {
            return finish(
                &state,
                route,
                &method,
                started,
                &request_id,
                AppError::bad_request(e.to_string()).into_response(),
            );
        }
        None => None,
    };

    let mut req = match buffer_body(req).await {
        Ok(req) => req,
        Err(e) => return finish(&state, route, &method, started, &request_id, e.into_response()),
    };

    let class = audit_class(route, &method);
    let slot = match class {
        Some(class) => match state.audit.reserve(class) {
            Ok(slot) => Some(slot),
            Err(_) => {
                tracing::error!(request_id, "Audit queue full; refusing the call");
                let r = AppError::Unavailable("audit log unavailable").into_response();
                return finish(&state, route, &method, started, &request_id, r);
            }
        },
        None => None,
    };
    let cell: AuditCell = Arc::new(Mutex::new(AuditNote::default()));
    req.extensions_mut().insert(ClientAddr(client));
    req.extensions_mut().insert(RequestId(request_id.clone()));
    req.extensions_mut().insert(cell.clone());

    let response = next.run(req).await;

    if let Some(slot) = slot {
        let note = std::mem::take(&mut *cell.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(event) = audit::event(note, client, response.status().as_u16(), &request_id) {
            slot.record(event);
        }
    }
    finish(&state, route, &method, started, &request_id, response)
}

fn finish(
    state: &AppState,
    route: &'static str,
    method: &Method,
    started: Instant,
    request_id: &str,
    mut response: Response,
) -> Response {
    let status = response.status();
    if let Some(InternalCause(cause)) = response.extensions_mut().remove::<InternalCause>() {
        tracing::error!(request_id, route, error = %cause, "Internal error");
    }
    let labels =
        RequestLabels { route, method: method_label(method), status_class: status_class(status.as_u16()) };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_are_bounded() {
        assert_eq!(route_template("/v1/secrets/a/b/c"), "/v1/secrets/{name}");
        assert_eq!(route_template("/v1/secrets/a/b/verify"), "/v1/secrets/{name}/verify");
        assert_eq!(route_template("/v1/secrets/a%2Fb/rotate"), "/v1/secrets/{name}/rotate");
        assert_eq!(route_template("/v1/tokens/ci"), "/v1/tokens/{name}");
        assert_eq!(route_template("/v1/tokens/ci/x"), "unmatched");
        assert_eq!(route_template("/etc/passwd"), "unmatched");
        assert_eq!(route_template("/v1/audit"), "/v1/audit");
    }
}
