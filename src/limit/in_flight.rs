//! What a key has in flight (nginx's `limit_conn`): a count per key, taken when a request (or
//! a connection) is admitted and given back when it ends. Only keys with something in flight
//! are held, so the table is bounded by what is in flight, and by `max_keys` besides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 32;

#[derive(Debug)]
pub struct InFlightTable {
    shards: Box<[Mutex<HashMap<u64, u32>>]>,
    shard_capacity: usize,
}

/// One request in flight for a key; dropping it ends it.
#[derive(Debug)]
pub struct InFlightGuard {
    table: Arc<InFlightTable>,
    key: u64,
}

impl InFlightTable {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// A place for one more of `key`, or `None` when the key has `limit` in flight (or the
    /// table is full of keys that all have something in flight).
    pub fn try_acquire(self: &Arc<Self>, key: u64, limit: u32) -> Option<InFlightGuard> {
        let mut shard = self.shard(key);
        let shard_len = shard.len();
        match shard.get_mut(&key) {
            Some(count) if *count >= limit => return None,
            Some(count) => *count += 1,
            None if shard_len >= self.shard_capacity => return None,
            None => {
                shard.insert(key, 1);
            }
        }
        Some(InFlightGuard {
            table: Arc::clone(self),
            key,
        })
    }

    /// Requests in flight for `key`.
    pub fn count(&self, key: u64) -> u32 {
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    /// Keys with a request in flight.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        self.shards[(key >> 59) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut shard = self.table.shard(self.key);
        if let Some(count) = shard.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_limit_and_gets_places_back() {
        let table = Arc::new(InFlightTable::new(1_000));
        let first = table.try_acquire(7, 2).expect("first");
        let second = table.try_acquire(7, 2).expect("second");
        assert!(table.try_acquire(7, 2).is_none());
        // Other keys are counted apart.
        let other = table.try_acquire(8, 2).expect("other key");
        assert_eq!((table.count(7), table.count(8)), (2, 1));
        drop(first);
        let third = table.try_acquire(7, 2).expect("a place came back");
        drop((second, third, other));
        assert_eq!(table.keys(), 0, "keys with nothing in flight are not held");
    }

    #[test]
    fn a_full_table_refuses_new_keys_rather_than_forget_counts() {
        let table = Arc::new(InFlightTable::new(SHARDS));
        // One place per shard: a second key in shard 0 is refused while the first is held.
        let held = table.try_acquire(1, 1).expect("first key");
        assert!(table.try_acquire(2, 1).is_none());
        drop(held);
        assert!(table.try_acquire(2, 1).is_some());
    }
}
