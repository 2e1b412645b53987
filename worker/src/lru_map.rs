//! A map with a size bound for the worker's caches (credentials, a scope's
//! clients, a campaign's cadence, documents): past the bound, the least recently used
//! entry goes, in constant time (the `lru` crate), under one lock.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

/// The map.
pub struct LruMap<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> LruMap<K, V> {
    /// An empty map holding at most `max` entries (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN))),
        }
    }

    /// The value for `key`, made by `make` (under the lock) when absent;
    /// either way `key` becomes the most recently used.
    pub fn get_or_insert_with(&self, key: &K, make: impl FnOnce() -> V) -> V {
        self.entries
            .lock()
            .expect("cache lock")
            .get_or_insert_ref(key, make)
            .clone()
    }

    /// The value for `key`, which becomes the most recently used.
    pub fn get(&self, key: &K) -> Option<V> {
        self.entries.lock().expect("cache lock").get(key).cloned()
    }

    /// Sets `key`'s value; past the bound, the least recently used goes.
    pub fn insert(&self, key: K, value: V) {
        self.entries.lock().expect("cache lock").put(key, value);
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_when_full() {
        let cache = LruMap::new(2);
        let mut made = 0;
        let mut get = |key: &str| {
            cache.get_or_insert_with(&key.to_owned(), || {
                made += 1;
                made
            })
        };
        assert_eq!(get("a"), 1);
        assert_eq!(get("b"), 2);
        assert_eq!(get("a"), 1, "a hit is not made again");
        assert_eq!(get("c"), 3, "b was the least recently used and went");
        assert_eq!(get("a"), 1);
        assert_eq!(get("b"), 4, "b is made again");
        assert_eq!(cache.len(), 2);
    }
}
