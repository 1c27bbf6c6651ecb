//! The GCRA state of every key of one limit, in bounded memory: a key is a 64-bit hash (its
//! text is never kept, so a long header value costs what a short one does), and the table
//! holds at most `max_keys` of them. When a shard is full, keys back to a full allowance are
//! dropped first (forgetting them changes nothing); if none is, the one nearest to it among a
//! few goes (forgetting it gives away the least). A flood of fresh keys therefore costs
//! constant memory and constant work per request, and evicts one another rather than the keys
//! that used much of their allowance.

use super::gcra::{Gcra, Verdict};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// Shards, so that worker threads rarely wait on one another.
const SHARDS: usize = 32;
/// Keys looked at to choose one to evict when nothing is idle.
const EVICTION_SAMPLE: usize = 8;
/// A full shard sweeps out idle keys at most this often (nanoseconds): a flood of keys that
/// are all busy must not make every request walk the shard.
const SWEEP_EVERY: u64 = 100_000_000;

pub struct KeyTable {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<u64, u64, BuildHasherDefault<KeyHashHasher>>,
    last_sweep: u64,
}

/// Keys are hashes already (keyed by a per-process secret); hashing them again is waste.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl KeyTable {
    pub fn new(max_keys: usize) -> Self {
        let shard_capacity = max_keys.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: HashMap::default(),
                    last_sweep: 0,
                })
            })
            .collect();
        Self {
            shards,
            shard_capacity,
        }
    }

    /// Checks one request of `key` at `now`, and records it if admitted.
    pub fn check(&self, gcra: &Gcra, key: u64, now: u64) -> (Verdict, u64) {
        let mut shard = self.shard(key);
        let tat = shard.tats.get(&key).copied().unwrap_or(0);
        let verdict = gcra.check(tat, now);
        match verdict {
            Verdict::Admit { tat: next, .. } => {
                if !shard.tats.contains_key(&key) && shard.tats.len() >= self.shard_capacity {
                    shard.make_room(gcra, now, self.shard_capacity);
                }
                shard.tats.insert(key, next);
                (verdict, next)
            }
            Verdict::Refuse { .. } => (verdict, tat),
        }
    }

    /// Gives back an admission of `key` (a later limit of the same request refused it).
    pub fn refund(&self, gcra: &Gcra, key: u64) {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.tats.get_mut(&key) {
            *tat = gcra.refund(*tat);
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        // The low bits index the shard's map; the high ones choose the shard.
        let index = (key >> 59) as usize % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shard {
    fn make_room(&mut self, gcra: &Gcra, now: u64, capacity: usize) {
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY || self.last_sweep == 0 {
            self.last_sweep = now.max(1);
            self.tats.retain(|_, tat| !gcra.is_idle(*tat, now));
            if self.tats.len() < capacity {
                return;
            }
        }
        let victim = self
            .tats
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, tat)| **tat)
            .map(|(key, _)| *key);
        if let Some(victim) = victim {
            self.tats.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn keys_are_counted_apart() {
        let table = KeyTable::new(1_000);
        let gcra = Gcra::new(100 * MS, 0);
        let now = 1_000 * MS;
        assert!(matches!(
            table.check(&gcra, 1, now).0,
            Verdict::Admit { .. }
        ));
        assert!(matches!(
            table.check(&gcra, 1, now).0,
            Verdict::Refuse { .. }
        ));
        assert!(matches!(
            table.check(&gcra, 2, now).0,
            Verdict::Admit { .. }
        ));
        table.refund(&gcra, 1);
        assert!(matches!(
            table.check(&gcra, 1, now).0,
            Verdict::Admit { .. }
        ));
    }

    /// A key for shard `shard` (of `SHARDS`), distinct for each `n`.
    fn key_in(shard: u64, n: u64) -> u64 {
        shard << 59 | n
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_bound_and_spares_keys_that_used_their_burst() {
        let max_keys = 3_200;
        let table = KeyTable::new(max_keys);
        // A slow rate: every key stays busy for the whole flood.
        let gcra = Gcra::new(60_000 * MS, 10);
        let now = 1_000 * MS;
        // A client that used its whole burst.
        let heavy = key_in(5, 42);
        for _ in 0..11 {
            assert!(matches!(
                table.check(&gcra, heavy, now).0,
                Verdict::Admit { .. }
            ));
        }
        assert!(matches!(
            table.check(&gcra, heavy, now).0,
            Verdict::Refuse { .. }
        ));
        let mut key = 1u64;
        for i in 0..200_000u64 {
            key = key
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            table.check(&gcra, key, now + i);
        }
        assert!(table.len() <= max_keys, "{} keys held", table.len());
        assert!(
            table.len() >= max_keys * 9 / 10,
            "{} keys held",
            table.len()
        );
        assert!(matches!(
            table.check(&gcra, heavy, now + 200_000).0,
            Verdict::Refuse { .. }
        ));
    }

    #[test]
    fn idle_keys_are_dropped_first_when_full() {
        let table = KeyTable::new(SHARDS * 4);
        let gcra = Gcra::new(10 * MS, 2);
        let mut now = 1_000 * MS;
        for n in 0..4 {
            table.check(&gcra, key_in(3, n), now);
        }
        // Later, those four are idle; a busy key and three new ones fill the shard, and one
        // more takes an idle key's place, never the busy one's.
        now += 1_000 * MS;
        let busy = key_in(3, 100);
        for _ in 0..3 {
            table.check(&gcra, busy, now);
        }
        for n in 200..204 {
            table.check(&gcra, key_in(3, n), now);
        }
        assert!(table.len() <= SHARDS * 4);
        assert!(matches!(
            table.check(&gcra, busy, now).0,
            Verdict::Refuse { .. }
        ));
    }
}
