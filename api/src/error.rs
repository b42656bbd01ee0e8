//! One error type for every HTTP failure: boring on the wire (`{"error": "..."}`), rich in the logs.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::BackendError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A human-readable message; for 400 it names the offending field.
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// With the methods the resource does support, for the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed(Option<&'static str>),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("timed out reading the request body")]
    RequestTimeout,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many failed attempts; try again later")]
    LockedOut { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(&'static str),
    /// A bug or an unexpected failure: logged with the request id, generic on the wire.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a storage failure for an operation on `what` (used in the 404 message).
    pub fn from_backend(err: BackendError, what: &str) -> Self {
        match err {
            BackendError::NotFound => Self::NotFound(format!("{what} not found")),
            BackendError::AlreadyExists => Self::Conflict(format!("{what} already exists")),
            BackendError::Conflict(msg) => Self::Conflict(msg),
            BackendError::OwnedByResource { namespace, name } => Self::Conflict(format!(
                "{what} is managed by VaultSecret {namespace}/{name}; change that resource instead"
            )),
            BackendError::Invalid(field, msg) => Self::BadRequest(format!("{field}: {msg}")),
            BackendError::DatabaseUnavailable(_) => Self::Unavailable("database unavailable"),
            BackendError::KmsUnavailable(_) => Self::Unavailable("key service unavailable"),
            BackendError::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<BackendError> for AppError {
    fn from(err: BackendError) -> Self {
        Self::from_backend(err, "resource")
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(ErrorBody { error: self.to_string() })).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::LockedOut { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::MethodNotAllowed(Some(allow)) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        // The middleware in `crate::router` logs internal errors with the request id; the source
        // travels there in an extension so the wire never sees it.
        if let Self::Internal(source) = self {
            response.extensions_mut().insert(InternalCause(source.to_string()));
        }
        response
    }
}

/// The logged cause of a 500, attached to the response for the request-id middleware.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl From<JsonRejection> for AppError {
    fn from(rej: JsonRejection) -> Self {
        match rej {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("expected request with `Content-Type: application/json`".into())
            }
            // 422 (well-formed JSON of the wrong shape) is answered as 400 like every other invalid
            // input, with serde's message, which names the field path.
            JsonRejection::JsonDataError(e) => Self::BadRequest(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(e.body_text()),
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Self::PayloadTooLarge
                } else {
                    Self::BadRequest(e.body_text())
                }
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(rej: PathRejection) -> Self {
        Self::BadRequest(format!("invalid path: {}", rej.body_text()))
    }
}

impl From<QueryRejection> for AppError {
    fn from(rej: QueryRejection) -> Self {
        Self::BadRequest(rej.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_map_to_documented_statuses() {
        let cases: Vec<(BackendError, StatusCode)> = vec![
            (BackendError::NotFound, StatusCode::NOT_FOUND),
            (BackendError::AlreadyExists, StatusCode::CONFLICT),
            (BackendError::Conflict("x".into()), StatusCode::CONFLICT),
            (
                BackendError::OwnedByResource { namespace: "ns".into(), name: "db".into() },
                StatusCode::CONFLICT,
            ),
            (BackendError::Invalid("value".into(), "too long".into()), StatusCode::BAD_REQUEST),
            (BackendError::DatabaseUnavailable(None), StatusCode::SERVICE_UNAVAILABLE),
            (BackendError::KmsUnavailable(None), StatusCode::SERVICE_UNAVAILABLE),
            (BackendError::Internal("boom".into()), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (err, status) in cases {
            assert_eq!(AppError::from_backend(err, "secret").status(), status);
        }
    }

    #[test]
    fn owned_conflict_names_the_resource_and_internal_is_generic() {
        let e = AppError::from_backend(
            BackendError::OwnedByResource { namespace: "team-a".into(), name: "db".into() },
            "secret team-a/db",
        );
        assert!(e.to_string().contains("VaultSecret team-a/db"), "{e}");
        let e = AppError::from_backend(BackendError::Internal("password=hunter2".into()), "x");
        assert_eq!(e.to_string(), "internal error");
        let r = e.into_response();
        assert!(r.extensions().get::<InternalCause>().is_some());
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let r = AppError::Unavailable("database unavailable").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = AppError::LockedOut { retry_after_secs: 42 }.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "42");
    }
}
