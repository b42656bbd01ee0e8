//! The API backend over the real store (PostgreSQL pair + moto KMS from the testenv).

use std::sync::Arc;
use std::time::Duration;

use hyperion_vault_api::backend::Backend;
use hyperion_vault_api::store_backend::{CountingKeys, StoreBackend};
use hyperion_vault_store::Store;
use hyperion_vault_store::config::StoreArgs;
use hyperion_vault_store::dek_cache::DekCache;
use hyperion_vault_store::kms::{AwsKms, RetryPolicy};

pub fn env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: these tests need the real testenv. Run `e2e/testenv/testenv up`, then \
             `source ${{HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}}/env` and run the tests again"
        ),
    }
}

/// How a test store talks to its dependencies.
pub struct StoreOptions {
    pub kms_retries: u32,
    pub kms_attempt_timeout: Duration,
    pub pg_connect_timeout_secs: u64,
    /// The API's sealed-row cache TTL; zero makes every read and verify query the database.
    pub row_cache_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            kms_retries: 2,
            kms_attempt_timeout: Duration::from_secs(2),
            pg_connect_timeout_secs: 3,
            row_cache_ttl: hyperion_vault_api::store_backend::DEFAULT_ROW_CACHE_TTL,
        }
    }
}

pub async fn store_and_backend(opts: StoreOptions) -> (Store, Arc<dyn Backend>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    env("AWS_ACCESS_KEY_ID");
    let policy = RetryPolicy {
        max_retries: opts.kms_retries,
        attempt_timeout: opts.kms_attempt_timeout,
        ..RetryPolicy::default()
    };
    let kms = AwsKms::from_env(env("VAULT_KMS_KEY_ID"), Some(&env("VAULT_KMS_ENDPOINT")), policy).await;
    let keys = CountingKeys::new(Arc::new(kms));
    let mut args = StoreArgs::from_url(&env("TESTENV_PG_DSN_RW"));
    args.pg_pool_size = 4;
    args.pg_connect_timeout_secs = opts.pg_connect_timeout_secs;
    let store =
        Store::connect(&args, keys.clone(), DekCache::new(Duration::from_secs(300), 1000)).await.unwrap();
    store.migrate().await.expect("migrations apply");
    let backend = StoreBackend::new(store.clone(), keys).with_row_cache(opts.row_cache_ttl);
    (store, Arc::new(backend))
}
