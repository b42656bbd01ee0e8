//! Prometheus metrics and the health endpoints on one port (`/metrics`, `/healthz`, `/readyz`).
//! Every label value is a `&'static str` from a closed set, never free text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyperion_vault_store::Store;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<Labels, Counter>,
    rotations: Family<Labels, Counter>,
    duration: Histogram,
    by_condition: Family<Labels, Gauge>,
    /// Each VaultSecret's current Ready reason, so the gauge counts objects, not transitions.
    conditions: Mutex<HashMap<String, &'static str>>,
    is_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hyperion_vault_controller");
        let reconciles = Counter::default();
        let errors = Family::<Labels, Counter>::default();
        let rotations = Family::<Labels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let by_condition = Family::<Labels, Gauge>::default();
        let is_leader = Gauge::default();
        registry.register("reconciles", "VaultSecret reconciles started", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by error category", errors.clone());
        registry.register("rotations", "Versions created by the controller, by trigger", rotations.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", duration.clone());
        registry.register("secrets", "VaultSecrets by Ready condition reason", by_condition.clone());
        registry.register("leader", "1 while this replica holds the leader lease", is_leader.clone());
        Self {
            registry,
            reconciles,
            errors,
            rotations,
            duration,
            by_condition,
            conditions: Mutex::new(HashMap::new()),
            is_leader,
        }
    }
}

impl Metrics {
    pub fn reconcile_started(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_finished(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn error(&self, category: &'static str) {
        self.errors.get_or_create(&vec![("category", category)]).inc();
    }

    /// `trigger`: `initial`, `schedule`, `rotate_now`, `source_changed`, `api_schedule`.
    pub fn rotated(&self, trigger: &'static str) {
        self.rotations.get_or_create(&vec![("trigger", trigger)]).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.is_leader.set(i64::from(leader));
    }

    /// Records the Ready reason of one VaultSecret (`None`: it is gone).
    pub fn set_condition(&self, key: &str, reason: Option<&'static str>) {
        let mut map = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        let old = match reason {
            Some(r) => map.insert(key.to_owned(), r),
            None => map.remove(key),
        };
        if old == reason {
            return;
        }
        if let Some(old) = old {
            self.by_condition.get_or_create(&vec![("reason", old)]).dec();
        }
        if let Some(new) = reason {
            self.by_condition.get_or_create(&vec![("reason", new)]).inc();
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone)]
struct HealthState {
    metrics: Arc<Metrics>,
    store: Store,
}

/// Serves `/metrics`, `/healthz` (process alive) and `/readyz` (the primary answers within 2s).
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, store: Store) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HealthState { metrics, store });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "Serving metrics and health probes");
    axum::serve(listener, app).await
}

async fn metrics_handler(State(s): State<HealthState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_gauge_counts_objects() {
        let m = Metrics::default();
        m.set_condition("a/x", Some("Sealed"));
        m.set_condition("a/x", Some("Sealed"));
        m.set_condition("a/y", Some("AwaitingValue"));
        m.set_condition("a/y", Some("Sealed"));
        m.set_condition("a/x", None);
        m.rotated("schedule");
        m.error("kube");
        let text = m.encode();
        assert!(text.contains("hyperion_vault_controller_secrets{reason=\"Sealed\"} 1"), "{text}");
        assert!(text.contains("hyperion_vault_controller_secrets{reason=\"AwaitingValue\"} 0"), "{text}");
        assert!(text.contains("hyperion_vault_controller_rotations_total{trigger=\"schedule\"} 1"), "{text}");
        assert!(text.contains("hyperion_vault_controller_reconcile_errors_total{category=\"kube\"} 1"));
    }
}
