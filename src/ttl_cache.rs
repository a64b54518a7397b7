//! Answers of an outside service kept for a fixed time, at most `capacity` of them,
//! shared by every worker (a reconnect may land on any). The auth service's verdicts
//! (`auth.cacheTtl`) and the groups service's (`groups.cacheTtl`) are kept in one.
//!
//! One `std::sync::Mutex`, taken only on the connect path (never on the delta path),
//! held for one map operation and never across an `.await`. An entry lives `ttl`, so
//! insertion order is expiry order: `order` is a queue whose front expires first, and
//! a full cache drops its oldest. The one exception, [`TtlCache::put_for`] (an answer
//! another node cached earlier, kept only for the rest of its life), may wait in the
//! queue past its expiry: `get` never answers it, and it counts against `capacity`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A bounded cache whose entries expire `ttl` after they were put.
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    values: HashMap<K, (Instant, V)>,
    order: VecDeque<(K, Instant)>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache { ttl, capacity, entries: Mutex::new(Entries { values: HashMap::new(), order: VecDeque::new() }) }
    }

    /// The value for `key`, if it is still fresh at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.values.get(key).filter(|(expires, _)| *expires > now).map(|(_, value)| value.clone())
    }

    /// Keeps `value` for `ttl` from `now`, dropping expired entries and, at capacity,
    /// the oldest.
    pub fn put(&self, key: K, value: V, now: Instant) {
        self.put_for(key, value, now, self.ttl);
    }

    /// As `put`, for `life` from `now` (at most `ttl`).
    pub fn put_for(&self, key: K, value: V, now: Instant, life: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let expires = now + life.min(self.ttl);
        entries.values.insert(key.clone(), (expires, value));
        entries.order.push_back((key, expires));
        while let Some((oldest, oldest_expiry)) = entries.order.front().cloned() {
            if oldest_expiry > now && entries.values.len() <= self.capacity {
                break;
            }
            entries.order.pop_front();
            // A key put again since has a later expiry: keep that value.
            if let Entry::Occupied(entry) = entries.values.entry(oldest) {
                if entry.get().0 == oldest_expiry {
                    entry.remove();
                }
            }
        }
    }

    /// How many entries are held (for tests).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).values.len()
    }
}

#[cfg(test)]
#[path = "ttl_cache_tests.rs"]
mod tests;
