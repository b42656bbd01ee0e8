//! The two guards: the IP allowlist for reads, bearer token + RBAC for management. Both count
//! failures per client address and lock a client out (429) after too many.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use hyperion_vault_core::rbac::{self, Action};
use hyperion_vault_core::token::Token;
use jiff::Timestamp;

use crate::audit::{AuditCell, note};
use crate::backend::Principal;
use crate::error::AppError;
use crate::state::AppState;

/// The request's client address as computed by the middleware (see [`crate::client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

/// Request id, also returned as `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn retry_after(until: Timestamp, now: Timestamp) -> u64 {
    let secs = until.as_second().saturating_sub(now.as_second());
    u64::try_from(secs).unwrap_or(0).max(1)
}

/// Records a failed authentication; returns the error to answer with (429 if this locked the client).
async fn fail(state: &AppState, client: &str, denial: AppError) -> AppError {
    state.metrics.auth_failures.inc();
    let now = Timestamp::now();
    match state.backend.record_auth_failure(client, now, state.lockout).await {
        Ok(Some(until)) => {
            state.metrics.lockouts.inc();
            state.remember_lockout(client, until);
            tracing::warn!(client, "Client locked out after repeated failed authentications");
            AppError::LockedOut { retry_after_secs: retry_after(until, now) }
        }
        Ok(None) => denial,
        Err(e) => {
            // The denial stands either way; a lost count only delays a lockout.
            tracing::warn!(error = %e, "Failed to record an authentication failure");
            denial
        }
    }
}

/// Allowlist guard for reads and verify. Returns the client address as text for the audit.
pub async fn allow_read(state: &AppState, addr: ClientAddr) -> Result<String, AppError> {
    let Some(ip) = addr.0 else {
        return Err(AppError::Forbidden("client address is not allowed to read secrets"));
    };
    let client = ip.to_string();
    let now = Timestamp::now();
    if let Some(until) = state.locally_locked_until(&client, now) {
        return Err(AppError::LockedOut { retry_after_secs: retry_after(until, now) });
    }
    if state.allowlist.allows(ip) {
        return Ok(client);
    }
    Err(fail(state, &client, AppError::Forbidden("client address is not allowed to read secrets")).await)
}

/// Bearer-token guard for management calls. Returns the principal; notes the actor for the audit.
pub async fn authenticate(
    state: &AppState,
    addr: ClientAddr,
    headers: &HeaderMap,
    cell: &AuditCell,
) -> Result<Principal, AppError> {
    let client = addr.0.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let now = Timestamp::now();
    if let Some(until) = state.locally_locked_until(&client, now) {
        return Err(AppError::LockedOut { retry_after_secs: retry_after(until, now) });
    }
    if let Some(until) = state.backend.locked_until(&client, now).await.map_err(AppError::from)? {
        state.remember_lockout(&client, until);
        return Err(AppError::LockedOut { retry_after_secs: retry_after(until, now) });
    }
    let Some(presented) = bearer(headers) else {
        return Err(fail(state, &client, AppError::Unauthorized).await);
    };
    let token = Token::from_presented(presented);
    // The store looks the token up by its SHA-256 fingerprint (an index probe on a digest, so the
    // lookup's timing does not depend on how much of a guessed token is right).
    match state.backend.lookup_token(token.fingerprint(), now).await.map_err(AppError::from)? {
        Some(principal) => {
            note(cell, |n| n.actor = Some(format!("token:{}", principal.token_name)));
            Ok(principal)
        }
        None => Err(fail(state, &client, AppError::Unauthorized).await),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 512).then_some(token)
}

pub fn authorize(principal: &Principal, action: Action, name: &str) -> Result<(), AppError> {
    if rbac::allows(&principal.roles, action, name) {
        Ok(())
    } else {
        Err(AppError::Forbidden("token's roles do not allow this action on this secret"))
    }
}

pub fn require_admin(principal: &Principal) -> Result<(), AppError> {
    if rbac::is_admin(&principal.roles) {
        Ok(())
    } else {
        Err(AppError::Forbidden("this endpoint requires an admin role"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer   abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let now = Timestamp::now();
        assert_eq!(retry_after(now, now), 1);
        let later = now.checked_add(jiff::SignedDuration::from_secs(90)).unwrap();
        assert_eq!(retry_after(later, now), 90);
    }
}
