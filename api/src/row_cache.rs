//! A short-lived cache of sealed rows by secret name (DESIGN.md §6: "Sealed rows may be cached in
//! the API for speed, provided that after a rotation or update commits, every API replica serves
//! the new version within the standby's replication lag plus one second").
//!
//! Entries live at most `ttl` (validated ≤ 1 s at start-up) and hold only what the database holds:
//! ciphertext, wrapped DEKs, metadata. Plaintext is never cached. Writes through this replica
//! invalidate the name at once; writes elsewhere (the controller, other replicas) are seen after
//! at most `ttl` plus the reader's replication lag. Bounded: when full, expired entries go, and a
//! still-full cache stores nothing new rather than evicting live entries at random.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct RowCache<T> {
    ttl: Duration,
    max_entries: usize,
    map: Mutex<HashMap<String, (Instant, Arc<T>)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<T> RowCache<T> {
    /// A zero `ttl` disables the cache (every lookup misses, nothing is stored).
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            map: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        self.get_at(name, Instant::now())
    }

    fn get_at(&self, name: &str, now: Instant) -> Option<Arc<T>> {
        let found = self
            .lock()
            .get(name)
            .filter(|(at, _)| now.duration_since(*at) < self.ttl)
            .map(|(_, v)| Arc::clone(v));
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `value` as fetched at `fetched_at` (taken *before* the query, so the entry never
    /// outlives the database state it shows by more than `ttl`).
    pub fn insert(&self, name: &str, value: Arc<T>, fetched_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max_entries && !map.contains_key(name) {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max_entries {
                return;
            }
        }
        map.insert(name.to_owned(), (fetched_at, value));
    }

    /// Forgets `name` (after a write through this replica).
    pub fn invalidate(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Forgets `name` when the returned guard drops: hold it across a write, so the entry goes
    /// after the write ends, whether it succeeded, failed or was cancelled.
    pub fn invalidate_on_drop<'a>(&'a self, name: &'a str) -> InvalidateOnDrop<'a, T> {
        InvalidateOnDrop { cache: self, name }
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<T>)>> {
        // Holds plain data; a poisoned lock still holds a valid map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct InvalidateOnDrop<'a, T> {
    cache: &'a RowCache<T>,
    name: &'a str,
}

impl<T> Drop for InvalidateOnDrop<'_, T> {
    fn drop(&mut self) {
        self.cache.invalidate(self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(500);

    #[test]
    fn serves_an_entry_until_its_ttl_then_misses() {
        let cache = RowCache::new(TTL, 10);
        let t0 = Instant::now();
        cache.insert("a", Arc::new(1), t0);
        assert_eq!(cache.get_at("a", t0 + Duration::from_millis(499)).as_deref(), Some(&1));
        assert!(cache.get_at("a", t0 + TTL).is_none(), "an entry must not be served at its TTL");
        assert!(cache.get_at("b", t0).is_none());
        assert_eq!(cache.stats(), (1, 2));
    }

    #[test]
    fn invalidate_forgets_at_once() {
        let cache = RowCache::new(TTL, 10);
        cache.insert("a", Arc::new(1), Instant::now());
        cache.invalidate("a");
        assert!(cache.get("a").is_none());
        cache.insert("a", Arc::new(1), Instant::now());
        {
            let _guard = cache.invalidate_on_drop("a");
            assert!(cache.get("a").is_some(), "still there while the write runs");
        }
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn zero_ttl_stores_nothing() {
        let cache = RowCache::new(Duration::ZERO, 10);
        cache.insert("a", Arc::new(1), Instant::now());
        assert!(cache.get("a").is_none());
        assert!(cache.lock().is_empty());
    }

    #[test]
    fn full_cache_drops_expired_entries_and_never_grows_past_its_bound() {
        let cache = RowCache::new(TTL, 2);
        let old = Instant::now() - Duration::from_secs(5);
        cache.insert("a", Arc::new(1), old);
        cache.insert("b", Arc::new(2), Instant::now());
        cache.insert("c", Arc::new(3), Instant::now());
        assert!(cache.get("a").is_none(), "the expired entry makes room");
        assert_eq!(cache.get("c").as_deref(), Some(&3));
        cache.insert("d", Arc::new(4), Instant::now());
        assert!(cache.get("d").is_none(), "full of live entries: nothing new is stored");
        assert_eq!(cache.lock().len(), 2);
        cache.insert("b", Arc::new(5), Instant::now());
        assert_eq!(cache.get("b").as_deref(), Some(&5), "an existing name is still refreshed");
    }
}
