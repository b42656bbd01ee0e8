//! Prometheus metrics. Every label is from a closed set (route templates, methods, status classes);
//! never a secret name, token name, client address or value.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::backend::Backend;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status_class: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RequestLabels, Histogram>,
    pub lockouts: Counter,
    pub auth_failures: Counter,
    pub audit_written: Counter,
    pub audit_write_failures: Counter,
    pub audit_dropped: Counter,
    pub audit_rejected: Counter,
    pub audit_unstorable: Counter,
    pub protocol_rejections: Counter,
}

fn latency_histogram() -> Histogram {
    // 250 µs .. ~4 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 15))
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            lockouts: Counter::default(),
            auth_failures: Counter::default(),
            audit_written: Counter::default(),
            audit_write_failures: Counter::default(),
            audit_dropped: Counter::default(),
            audit_rejected: Counter::default(),
            audit_unstorable: Counter::default(),
            protocol_rejections: Counter::default(),
        }
    }

    /// A registry over these metrics plus the store's counters, read at scrape time.
    pub fn registry(
        self: &Arc<Self>,
        backend: Arc<dyn Backend>,
        backlog: Arc<dyn Fn() -> usize + Send + Sync>,
    ) -> Registry {
        let mut r = Registry::with_prefix("hyperion_vault_api");
        r.register(
            "http_requests",
            "HTTP requests by route template, method and status class",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template, method and status class",
            self.latency.clone(),
        );
        r.register(
            "auth_lockouts",
            "Clients locked out after repeated failed authentications",
            self.lockouts.clone(),
        );
        r.register(
            "auth_failures",
            "Failed authentications (bad tokens, allowlist denials)",
            self.auth_failures.clone(),
        );
        r.register("audit_events_written", "Audit events written to the primary", self.audit_written.clone());
        r.register(
            "audit_write_failures",
            "Failed audit batch writes (retried)",
            self.audit_write_failures.clone(),
        );
        r.register(
            "audit_events_dropped",
            "Read audit events dropped under drop-reads",
            self.audit_dropped.clone(),
        );
        r.register(
            "audit_queue_rejections",
            "Calls refused because the audit queue was full",
            self.audit_rejected.clone(),
        );
        r.register(
            "audit_events_unstorable",
            "Audit events the database refused even as a placeholder (dropped and logged)",
            self.audit_unstorable.clone(),
        );
        r.register(
            "http_protocol_rejections",
            "Requests refused before routing because they are not valid HTTP/1.1 (bad bytes, too many or too large headers)",
            self.protocol_rejections.clone(),
        );
        r.register_collector(Box::new(StoreCollector { backend, backlog }));
        r
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

struct StoreCollector {
    backend: Arc<dyn Backend>,
    backlog: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.backend.stats();
        for (name, help, value) in [
            ("kms_calls", "Calls to the key service", s.kms_calls),
            ("kms_errors", "Failed calls to the key service", s.kms_errors),
            ("dek_cache_hits", "Unwrapped-DEK cache hits", s.dek_cache_hits),
            ("dek_cache_misses", "Unwrapped-DEK cache misses", s.dek_cache_misses),
            ("row_cache_hits", "Reads and verifies answered from the sealed-row cache", s.row_cache_hits),
            ("row_cache_misses", "Reads and verifies that queried the database", s.row_cache_misses),
        ] {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        let g = ConstGauge::new((self.backlog)() as i64);
        let m = encoder.encode_descriptor(
            "audit_queue_depth",
            "Audit events waiting to be written",
            None,
            g.metric_type(),
        )?;
        g.encode(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}
