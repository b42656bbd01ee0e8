//! In-memory cache of unwrapped DEKs, so reads of recently used versions survive a KMS outage.
//!
//! Keys are a SHA-256 over (master key id, wrapped blob, secret name, version): a hit stands for
//! exactly the (blob, context) pair the key service already accepted, so a blob copied into another
//! row cannot borrow a cached key. Entries hold `Arc<Dek>`; the key is zeroized when the last
//! reference drops (eviction, expiry, or the end of a read). Plaintext values are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyperion_vault_core::keywrap::{EncryptionContext, WrappedDek};
use hyperion_vault_core::secret::Dek;
use sha2::{Digest, Sha256};

/// Cache key; derived from public data only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DekCacheKey([u8; 32]);

impl DekCacheKey {
    pub fn new(wrapped: &WrappedDek, ctx: EncryptionContext<'_>) -> Self {
        let mut h = Sha256::new();
        for part in [wrapped.key_id.as_bytes(), &wrapped.blob, ctx.secret.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(ctx.version.to_be_bytes());
        Self(h.finalize().into())
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DekCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
}

struct Entry {
    dek: Arc<Dek>,
    inserted: Instant,
}

struct Inner {
    ttl: Duration,
    max_entries: usize,
    map: Mutex<HashMap<DekCacheKey, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// TTL + size-bounded DEK cache. Cheap to clone (shared). A TTL of 0 or `max_entries` of 0
/// disables caching.
#[derive(Clone)]
pub struct DekCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DekCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DekCache")
            .field("ttl", &self.inner.ttl)
            .field("max_entries", &self.inner.max_entries)
            .field("stats", &self.stats())
            .finish()
    }
}

impl DekCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                max_entries,
                map: Mutex::new(HashMap::new()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            }),
        }
    }

    /// A cache that never holds anything.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, 0)
    }

    fn enabled(&self) -> bool {
        !self.inner.ttl.is_zero() && self.inner.max_entries > 0
    }

    pub fn get(&self, key: &DekCacheKey) -> Option<Arc<Dek>> {
        if !self.enabled() {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut map = self.lock();
        let found = match map.get(key) {
            Some(e) if e.inserted.elapsed() < self.inner.ttl => Some(Arc::clone(&e.dek)),
            Some(_) => {
                map.remove(key);
                self.inner.evictions.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        };
        drop(map);
        let counter = if found.is_some() { &self.inner.hits } else { &self.inner.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, key: DekCacheKey, dek: Arc<Dek>) {
        if !self.enabled() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.inner.max_entries && !map.contains_key(&key) {
            let ttl = self.inner.ttl;
            let before = map.len();
            map.retain(|_, e| e.inserted.elapsed() < ttl);
            let mut evicted = before - map.len();
            if map.len() >= self.inner.max_entries
                && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.inserted).map(|(k, _)| *k)
            {
                map.remove(&oldest);
                evicted += 1;
            }
            self.inner.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
        map.insert(key, Entry { dek, inserted: Instant::now() });
    }

    /// Drops every entry (their keys are zeroized once no read holds them).
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn stats(&self) -> DekCacheStats {
        DekCacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DekCacheKey, Entry>> {
        // A panic while holding the lock cannot leave the map logically broken (every mutation is
        // a single call), so a poisoned lock is still usable.
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(n: u8) -> WrappedDek {
        WrappedDek { key_id: "k".into(), blob: vec![n; 8] }
    }

    fn ctx(v: u32) -> EncryptionContext<'static> {
        EncryptionContext { secret: "a/b", version: v }
    }

    #[test]
    fn key_binds_blob_and_context() {
        assert_eq!(DekCacheKey::new(&wrapped(1), ctx(1)), DekCacheKey::new(&wrapped(1), ctx(1)));
        assert_ne!(DekCacheKey::new(&wrapped(1), ctx(1)), DekCacheKey::new(&wrapped(1), ctx(2)));
        assert_ne!(DekCacheKey::new(&wrapped(1), ctx(1)), DekCacheKey::new(&wrapped(2), ctx(1)));
        let other = EncryptionContext { secret: "a/c", version: 1 };
        assert_ne!(DekCacheKey::new(&wrapped(1), ctx(1)), DekCacheKey::new(&wrapped(1), other));
    }

    #[test]
    fn hit_miss_and_bound() {
        let cache = DekCache::new(Duration::from_secs(60), 2);
        let k1 = DekCacheKey::new(&wrapped(1), ctx(1));
        assert!(cache.get(&k1).is_none());
        cache.insert(k1, Arc::new(Dek::generate().unwrap()));
        assert!(cache.get(&k1).is_some());
        for n in 2..5 {
            cache.insert(DekCacheKey::new(&wrapped(n), ctx(1)), Arc::new(Dek::generate().unwrap()));
        }
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.entries), (1, 1, 2));
        assert_eq!(s.evictions, 2);
    }

    #[test]
    fn entries_expire() {
        let cache = DekCache::new(Duration::from_millis(20), 10);
        let k = DekCacheKey::new(&wrapped(1), ctx(1));
        cache.insert(k, Arc::new(Dek::generate().unwrap()));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&k).is_none());
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let cache = DekCache::disabled();
        let k = DekCacheKey::new(&wrapped(1), ctx(1));
        cache.insert(k, Arc::new(Dek::generate().unwrap()));
        assert!(cache.get(&k).is_none());
    }
}
