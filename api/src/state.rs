//! The one shared context every handler receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyperion_vault_core::allowlist::Allowlist;
use jiff::Timestamp;
use prometheus_client::registry::Registry;

use crate::audit::AuditSink;
use crate::backend::{Backend, LockoutPolicy};
use crate::client_ip::ProxyTrust;
use crate::metrics::Metrics;

pub struct AppState {
    pub backend: Arc<dyn Backend>,
    pub allowlist: Allowlist,
    pub proxy: ProxyTrust,
    pub lockout: LockoutPolicy,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    /// This replica's view of locked-out clients, so the read path never asks the database. The
    /// database is the shared truth and is consulted on every management call.
    pub locked: Mutex<HashMap<String, Timestamp>>,
}

/// Everything needed to build an [`AppState`] besides the backend.
pub struct StateOptions {
    pub allowlist: Allowlist,
    pub proxy: ProxyTrust,
    pub lockout: LockoutPolicy,
    pub audit_capacity: usize,
    pub audit_overflow: crate::audit::OverflowPolicy,
}

impl AppState {
    /// Builds the state and returns the audit queue's receiving end for [`crate::audit::run_flusher`].
    pub fn new(
        backend: Arc<dyn Backend>,
        opts: StateOptions,
    ) -> (Arc<Self>, tokio::sync::mpsc::Receiver<crate::backend::AuditEvent>) {
        let metrics = Arc::new(Metrics::new());
        let (audit, rx) = AuditSink::new(opts.audit_capacity, opts.audit_overflow, metrics.clone());
        let backlog_sink = audit.clone();
        let registry = metrics.registry(backend.clone(), Arc::new(move || backlog_sink.backlog()));
        let state = Arc::new(Self {
            backend,
            allowlist: opts.allowlist,
            proxy: opts.proxy,
            lockout: opts.lockout,
            audit,
            metrics,
            registry,
            locked: Mutex::new(HashMap::new()),
        });
        (state, rx)
    }

    pub fn locally_locked_until(&self, client: &str, now: Timestamp) -> Option<Timestamp> {
        let mut map = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(client) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                map.remove(client);
                None
            }
            None => None,
        }
    }

    pub fn remember_lockout(&self, client: &str, until: Timestamp) {
        let mut map = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: expired entries go first; an attacker cycling addresses cannot grow this past
        // the number of addresses locked out within one lockout period.
        if map.len() >= 100_000 {
            let now = Timestamp::now();
            map.retain(|_, t| *t > now);
        }
        map.insert(client.to_owned(), until);
    }
}
