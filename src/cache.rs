//! A least-recently-used cache with a memory budget in bytes, for results that are expensive to
//! recompute and cheap to keep: text conditionings, encoded images, inverted latents, frames.

use std::collections::HashMap;
use std::hash::Hash;

/// Values that know how many bytes they hold.
pub trait Weighed {
    /// Approximate size in bytes.
    fn bytes(&self) -> usize;
}

impl Weighed for candle_core::Tensor {
    fn bytes(&self) -> usize {
        self.elem_count() * self.dtype().size_in_bytes()
    }
}

impl Weighed for Vec<u8> {
    fn bytes(&self) -> usize {
        self.len()
    }
}

/// An LRU cache holding at most `budget` bytes.
#[derive(Debug)]
pub struct LruCache<K, V> {
    entries: HashMap<K, (V, u64)>,
    clock: u64,
    used: usize,
    budget: usize,
}

impl<K: Hash + Eq + Clone, V: Weighed + Clone> LruCache<K, V> {
    /// Whether `key` is cached (without touching its recency).
    pub fn peek(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// An empty cache of `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { entries: HashMap::new(), clock: 0, used: 0, budget }
    }

    /// Drops every entry; the budget stays (what was cached is stale, e.g. after a model part
    /// changed).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value for `key`, marking it recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(v, used)| {
            *used = clock;
            v.clone()
        })
    }

    /// Stores `value`, evicting the least recently used entries to stay within the budget. A
    /// value larger than the whole budget is not kept.
    pub fn insert(&mut self, key: K, value: V) {
        let size = value.bytes();
        if let Some((old, _)) = self.entries.remove(&key) {
            self.used -= old.bytes();
        }
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((v, _)) = self.entries.remove(&oldest) {
                self.used -= v.bytes();
            }
        }
        self.clock += 1;
        self.used += size;
        self.entries.insert(key, (value, self.clock));
    }

    /// Changes the budget, evicting as needed.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        while self.used > self.budget {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((v, _)) = self.entries.remove(&oldest) {
                self.used -= v.bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_entries_go_first_and_the_budget_holds() {
        let mut c: LruCache<&str, Vec<u8>> = LruCache::new(10);
        c.insert("a", vec![0; 4]);
        c.insert("b", vec![0; 4]);
        assert!(c.get(&"a").is_some()); // a is now newer than b
        c.insert("c", vec![0; 4]); // evicts b
        assert!(c.get(&"b").is_none());
        assert!(c.get(&"a").is_some() && c.get(&"c").is_some());
        assert_eq!(c.used(), 8);
        c.insert("huge", vec![0; 11]);
        assert!(c.get(&"huge").is_none());
        c.set_budget(4);
        assert_eq!((c.len(), c.used()), (1, 4));
        assert!(c.get(&"c").is_some(), "the most recent entry stays");
    }
}
