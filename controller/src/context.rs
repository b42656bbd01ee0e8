//! The one shared [`Context`] of the reconcilers: no globals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperion_vault_store::Store;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::metrics::Metrics;

/// The field manager of every status apply, and the events' reporting controller.
pub const FIELD_MANAGER: &str = "hyperion-vault-controller";

pub struct Context {
    pub client: Client,
    pub store: Store,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The shortest `rotationInterval` accepted (`VAULT_MIN_ROTATION_INTERVAL`).
    pub min_rotation_interval: Duration,
    /// Consecutive failures per object (`namespace/name`), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        store: Store,
        metrics: Arc<Metrics>,
        min_rotation_interval: Duration,
        instance: Option<String>,
    ) -> Arc<Self> {
        let reporter = Reporter { controller: FIELD_MANAGER.to_owned(), instance };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Self { client, store, recorder, metrics, min_rotation_interval, failures: Mutex::default() })
    }
}

/// First retry delay after a transient failure; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Context {
    /// Records one more failure of `key` and returns how long to wait before retrying.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

/// `BACKOFF_BASE · 2^(failures-1)`, capped at [`BACKOFF_MAX`].
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_millis(500));
        assert_eq!(backoff_delay(2), Duration::from_secs(1));
        assert_eq!(backoff_delay(4), Duration::from_secs(4));
        assert_eq!(backoff_delay(30), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
