//! Shared router-test harness: an `app()` over some backend, driven with `oneshot` (no socket).
#![allow(dead_code)]

pub mod scenarios;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use hyperion_vault_api::audit::OverflowPolicy;
use hyperion_vault_api::backend::RoleDef;
use hyperion_vault_api::backend::{Backend, LockoutPolicy};
use hyperion_vault_api::client_ip::ProxyTrust;
use hyperion_vault_api::state::{AppState, StateOptions};
use hyperion_vault_core::allowlist::Allowlist;
use hyperion_vault_core::token::Token;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN_TOKEN: &str = "test-bootstrap-admin-token-0123456789abcdef";

/// A client address no other test run uses (lockout state may live in a shared database).
pub fn fresh_peer(first_octet: u8) -> String {
    let n = uuid_like();
    let h = n.bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("{first_octet}.{}.{}.{}:4000", (h >> 16) & 0xff, (h >> 8) & 0xff, (h & 0xfe) + 1)
}
pub const ALLOWED_PEER: &str = "10.1.2.3:40000";
pub const DENIED_PEER: &str = "203.0.113.50:40000";
pub const PROXY_PEER: &str = "192.168.7.7:40000";

pub struct Harness {
    pub state: Arc<AppState>,
    pub backend: Arc<dyn Backend>,
    /// A fresh admin-role token made for this harness (the database may be shared).
    pub admin_token: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct Options {
    pub lockout: LockoutPolicy,
    pub audit_capacity: usize,
    pub run_flusher: bool,
    pub trust_proxy: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lockout: LockoutPolicy {
                max_failures: 1000,
                window: Duration::from_secs(60),
                lockout: Duration::from_secs(60),
            },
            audit_capacity: 4096,
            run_flusher: true,
            trust_proxy: false,
        }
    }
}

impl Harness {
    pub async fn new(backend: Arc<dyn Backend>, opts: Options) -> Self {
        let admin_role = unique("admin");
        backend
            .create_role(RoleDef {
                name: admin_role.clone(),
                description: None,
                is_admin: true,
                permissions: vec![],
            })
            .await
            .expect("admin role");
        let token = Token::generate().unwrap();
        backend
            .create_token(&unique("admin-tok"), &admin_role, token.fingerprint(), None)
            .await
            .expect("admin token");
        let admin_token = token.expose().to_owned();
        let (state, rx) = AppState::new(
            backend.clone(),
            StateOptions {
                allowlist: Allowlist::parse("10.0.0.0/8,::1,127.0.0.1").unwrap(),
                proxy: ProxyTrust {
                    enabled: opts.trust_proxy,
                    trusted: Allowlist::parse("192.168.0.0/16").unwrap(),
                },
                lockout: opts.lockout,
                audit_capacity: opts.audit_capacity,
                audit_overflow: OverflowPolicy::FailClosed,
            },
        );
        if opts.run_flusher {
            tokio::spawn(hyperion_vault_api::audit::run_flusher(rx, backend.clone(), state.metrics.clone()));
        } else {
            // Keep the receiver alive so the queue fills instead of closing.
            std::mem::forget(rx);
        }
        Self { state, backend, admin_token }
    }

    pub fn app(&self, peer: &str) -> Router {
        let addr: SocketAddr = peer.parse().unwrap();
        hyperion_vault_api::app(self.state.clone()).layer(MockConnectInfo(addr))
    }

    pub async fn raw(&self, peer: &str, req: Request<Body>) -> Reply {
        let resp = self.app(peer).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply { status, headers, body }
    }

    pub async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.call_from(ALLOWED_PEER, method, uri, token, body).await
    }

    pub async fn call_from(
        &self,
        peer: &str,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.raw(peer, req).await
    }

    pub async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let token = self.admin_token.clone();
        self.call(method, uri, Some(&token), body).await
    }

    /// Creates a manual secret and returns its create reply.
    pub async fn manual(&self, name: &str, value: &str) -> Reply {
        let r = self
            .admin(Method::POST, "/v1/secrets", Some(json!({"name": name, "kind": "manual", "value": value})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r
    }

    /// Creates a role with the given permissions and a token for it; returns the raw token.
    pub async fn token_with(&self, role: &str, perms: Value, expires_in: Option<u64>) -> String {
        let r =
            self.admin(Method::POST, "/v1/roles", Some(json!({"name": role, "permissions": perms}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let mut req = json!({"name": format!("{role}-tok"), "role": role});
        if let Some(s) = expires_in {
            req["expires_in_secs"] = json!(s);
        }
        let r = self.admin(Method::POST, "/v1/tokens", Some(req)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }
}

/// Every response: JSON error body on failure, `Cache-Control: no-store` always.
pub fn assert_error(r: &Reply, status: StatusCode) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert!(r.body["error"].is_string(), "error body: {:?}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/json"));
}

/// A unique name per test run so tests can share one database.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", t & 0xffff_ffff_ffff, N.fetch_add(1, Ordering::Relaxed))
}
