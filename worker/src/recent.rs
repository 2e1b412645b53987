//! A map with a size bound for caches: past the bound, the least recently
//! used entry goes. Lookups and inserts take one lock; eviction scans the
//! map, which only happens when it is full.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// The map.
pub struct Recent<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    max: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Recent<K, V> {
    /// An empty map holding at most `max` entries.
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// The value for `key`, made by `make` (under the lock) when absent;
    /// either way `key` becomes the most recently used.
    pub fn get_or_insert_with(&self, key: &K, make: impl FnOnce() -> V) -> V {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("cache lock");
        if let Some((value, used)) = entries.get_mut(key) {
            *used = now;
            return value.clone();
        }
        if entries.len() >= self.max
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        let value = make();
        entries.insert(key.clone(), (value.clone(), now));
        value
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
        let cache = Recent::new(2);
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
