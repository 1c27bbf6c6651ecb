//! A rate limit counted across replicas (`shared = true`): GCRA in Redis, one atomic script
//! per call, with quota leased in small batches so that most requests are decided here
//! without a call, and none waits on more than one.
//!
//! Per key, a replica holds a *lease*: cells the script admitted for it in one call (up to
//! `batch`), spent by its next requests, dropped after `LEASE_TTL` (so that a replica cannot
//! hoard a burst). When half of a lease is spent, a call in the background tops it up, so that
//! a key in steady use finds cells ready and its requests wait on no call. A refusal from Redis is remembered until its retry time, so that a key
//! over its rate costs no call either. Redis decides; the process also counts the same rate
//! on its own (its requests only), which is what `on_redis_error = "local"` falls back to.
//!
//! Redis keeps one number per key, its TAT in microseconds of Redis's own clock (TIME), so
//! replicas' clocks need not agree.

use crate::config::OnRedisError;
use crate::shared::{CallError, Redis, Script};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};

/// Quota a replica may sit on unused; past it, the lease is dropped.
const LEASE_TTL: u64 = 1_000_000_000;
const SHARDS: usize = 16;

/// KEYS[1]: the key's TAT. ARGV: interval, tolerance (burst × interval), cells wanted; times
/// in microseconds. Returns {cells granted, microseconds}: with cells, how far ahead of now
/// the TAT runs after them; with none, when one cell fits again.
const GCRA_LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local room = math.floor((tolerance + interval - (tat - now)) / interval)
local granted = math.min(wanted, room)
if granted <= 0 then
  return {0, tat - now - tolerance}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {granted, tat - now}
";

/// What the lease says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    Admit,
    /// Redis refused this key until `retry_in` nanoseconds from now.
    Refuse {
        retry_in: u64,
    },
    /// Nothing leased: one call decides.
    Ask,
    /// Admitted from the lease, which is half spent: the caller tops it up in the background
    /// (`refill`).
    AdmitAndRefill,
}

#[derive(Default, Clone, Copy)]
struct Lease {
    cells: u32,
    expires: u64,
    refused_until: u64,
    /// The key as Redis knows it (from the call that made the lease).
    stable: u64,
    /// A top-up call is out.
    refilling: bool,
}

#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
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

type Shard = HashMap<u64, Lease, BuildHasherDefault<KeyHasher>>;

pub(super) struct Via {
    pub lease: IntCounter,
    pub redis: IntCounter,
    pub refused_locally: IntCounter,
    pub fallback: IntCounter,
}

/// The shared part of one `[limit.NAME]`.
pub struct SharedPace {
    pub(super) redis: Arc<Redis>,
    pub(super) on_error: OnRedisError,
    script: Script,
    key_prefix: String,
    interval_us: i64,
    tolerance_us: i64,
    batch: u32,
    leases: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    pub(super) via: Via,
}

/// The cells asked for in one call: about 20 ms of the rate, within the burst (the script
/// cannot grant more than burst + 1 at once anyway).
pub fn batch_for(interval_nanos: u64, burst: u32) -> u32 {
    let per_20ms = 20_000_000 / interval_nanos.max(1);
    u32::try_from(per_20ms)
        .unwrap_or(u32::MAX)
        .clamp(1, burst.saturating_add(1))
}

/// What one call's answer does to the lease: cells granted beyond the request's own are
/// leased; none granted refuses until the retry time.
pub fn apply_answer(granted: i64, micros: i64) -> LeaseStep {
    if granted > 0 {
        LeaseStep::Admit
    } else {
        LeaseStep::Refuse {
            retry_in: u64::try_from(micros.max(1))
                .unwrap_or(1)
                .saturating_mul(1_000),
        }
    }
}

impl SharedPace {
    pub(super) fn new(
        name: &str,
        redis: Arc<Redis>,
        on_error: OnRedisError,
        interval_nanos: u64,
        burst: u32,
        max_keys: usize,
        via: Via,
    ) -> Self {
        let interval_us = i64::try_from(interval_nanos / 1_000)
            .unwrap_or(i64::MAX)
            .max(1);
        Self {
            key_prefix: redis.key(&format!("limit:{name}:")),
            redis,
            on_error,
            script: Script::new(GCRA_LEASE),
            interval_us,
            tolerance_us: interval_us.saturating_mul(i64::from(burst)),
            batch: batch_for(interval_nanos, burst),
            leases: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
            via,
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.leases[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The lease's say on one request of `key` at `now` (nanoseconds), spending a cell if it
    /// has one.
    pub fn take(&self, key: u64, now: u64) -> LeaseStep {
        let mut shard = self.shard(key);
        let Some(lease) = shard.get_mut(&key) else {
            return LeaseStep::Ask;
        };
        if lease.cells > 0 && now < lease.expires {
            lease.cells -= 1;
            if self.batch >= 2 && lease.cells <= self.batch / 2 && !lease.refilling {
                lease.refilling = true;
                return LeaseStep::AdmitAndRefill;
            }
            return LeaseStep::Admit;
        }
        if now < lease.refused_until {
            return LeaseStep::Refuse {
                retry_in: lease.refused_until - now,
            };
        }
        LeaseStep::Ask
    }

    /// One call for `key` (`stable` is its hash as every replica computes it): the request's
    /// own cell and a batch to lease.
    pub async fn ask(&self, key: u64, stable: u64, now: u64) -> Result<LeaseStep, CallError> {
        let redis_key = format!("{}{stable:016x}", self.key_prefix);
        let (granted, micros): (i64, i64) = self
            .redis
            .script(
                &self.script,
                &[&redis_key],
                &[self.interval_us, self.tolerance_us, i64::from(self.batch)],
            )
            .await?;
        let step = apply_answer(granted, micros);
        let mut shard = self.shard(key);
        if !shard.contains_key(&key) && shard.len() >= self.shard_capacity {
            make_room(&mut shard, now);
        }
        let lease = shard.entry(key).or_default();
        match step {
            LeaseStep::Refuse { retry_in } => {
                lease.refused_until = now.saturating_add(self.hold(retry_in));
            }
            _ => {
                let extra = u32::try_from(granted - 1).unwrap_or(0);
                if now >= lease.expires {
                    lease.cells = 0;
                }
                lease.cells = lease.cells.saturating_add(extra);
                lease.expires = now.saturating_add(LEASE_TTL);
                lease.refused_until = 0;
            }
        }
        lease.stable = stable;
        // A top-up that never ran (no runtime) must not stop the next one.
        lease.refilling = false;
        Ok(step)
    }

    /// Tops up the lease of `key` (after `take` said `AdmitAndRefill`): every cell granted is
    /// leased. A refusal is remembered for when the cells left run out.
    pub async fn refill(&self, key: u64, now: u64) {
        let stable = {
            let shard = self.shard(key);
            match shard.get(&key) {
                Some(lease) => lease.stable,
                None => return,
            }
        };
        let redis_key = format!("{}{stable:016x}", self.key_prefix);
        let answer: Result<(i64, i64), CallError> = self
            .redis
            .script(
                &self.script,
                &[&redis_key],
                &[self.interval_us, self.tolerance_us, i64::from(self.batch)],
            )
            .await;
        let mut shard = self.shard(key);
        let Some(lease) = shard.get_mut(&key) else {
            return;
        };
        lease.refilling = false;
        // An error is counted and logged by the connection; the next call tries again.
        if let Ok((granted, micros)) = answer {
            match apply_answer(granted, micros) {
                LeaseStep::Refuse { retry_in } => {
                    lease.refused_until = now.saturating_add(self.hold(retry_in));
                }
                _ => {
                    if now >= lease.expires {
                        lease.cells = 0;
                    }
                    let granted = u32::try_from(granted).unwrap_or(0);
                    lease.cells = lease.cells.saturating_add(granted);
                    lease.expires = now.saturating_add(LEASE_TTL);
                }
            }
        }
    }

    /// How long a refusal from Redis is taken as the answer for the key. With batches, at
    /// least one batch's worth of time: asking as soon as one cell fits makes every admission
    /// of a key over its rate a call, while waiting a batch lets the cells gather (within the
    /// burst, which a batch never exceeds, so none is lost) and come in one call.
    fn hold(&self, retry_in: u64) -> u64 {
        if self.batch < 2 {
            return retry_in;
        }
        let batch_time = u64::try_from(self.interval_us)
            .unwrap_or(u64::MAX)
            .saturating_mul(1_000)
            .saturating_mul(u64::from(self.batch));
        retry_in.max(batch_time)
    }

    /// Keys with a lease or a refusal remembered.
    pub fn keys(&self) -> usize {
        self.leases
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// Forgets leases that are spent or expired, or, if none is, any one.
fn make_room(shard: &mut Shard, now: u64) {
    let before = shard.len();
    shard.retain(|_, lease| (lease.cells > 0 && now < lease.expires) || now < lease.refused_until);
    if shard.len() == before
        && let Some(&victim) = shard.keys().next()
    {
        shard.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_about_20ms_of_the_rate_within_the_burst() {
        // 1000/s: 20 cells in 20 ms, if the burst allows.
        assert_eq!(batch_for(1_000_000, 100), 20);
        assert_eq!(batch_for(1_000_000, 4), 5);
        // 10/s: less than a cell in 20 ms: one at a time.
        assert_eq!(batch_for(100_000_000, 100), 1);
        assert_eq!(batch_for(0, u32::MAX), 20_000_000);
    }

    #[test]
    fn answers() {
        assert_eq!(apply_answer(3, 30_000), LeaseStep::Admit);
        assert_eq!(
            apply_answer(0, 2_500),
            LeaseStep::Refuse {
                retry_in: 2_500_000
            }
        );
        assert_eq!(apply_answer(0, -5), LeaseStep::Refuse { retry_in: 1_000 });
    }

    #[test]
    fn a_half_spent_lease_asks_for_a_top_up_once() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let settings = crate::config::RedisConfig {
            url: toml::Spanned::new(0..0, "redis://127.0.0.1:1".into()),
            ..Default::default()
        };
        let redis = Arc::new(Redis::new(&settings, &metrics).unwrap());
        let via = |v: &str| metrics.shared.limit_decisions.with_label_values(&["t", v]);
        let via = Via {
            lease: via("lease"),
            redis: via("redis"),
            refused_locally: via("refused_locally"),
            fallback: via("fallback"),
        };
        // 1000/s with a burst of 9: batches of 10.
        let pace = SharedPace::new("t", redis, OnRedisError::Local, 1_000_000, 9, 100, via);
        assert_eq!(pace.batch, 10);
        let now = 5_000_000_000;
        assert_eq!(pace.take(7, now), LeaseStep::Ask);
        // What a call granting 10 leaves: 9 cells for the next requests.
        pace.shard(7).insert(
            7,
            Lease {
                cells: 9,
                expires: now + LEASE_TTL,
                ..Lease::default()
            },
        );
        let steps: Vec<_> = (0..10).map(|_| pace.take(7, now)).collect();
        use LeaseStep::{Admit, AdmitAndRefill, Ask};
        assert_eq!(
            steps,
            [
                Admit,
                Admit,
                Admit,
                AdmitAndRefill,
                Admit,
                Admit,
                Admit,
                Admit,
                Admit,
                Ask
            ]
        );
        // Expired cells are not spent.
        pace.shard(7).insert(
            7,
            Lease {
                cells: 9,
                expires: now,
                ..Lease::default()
            },
        );
        assert_eq!(pace.take(7, now), LeaseStep::Ask);
    }

    #[test]
    fn making_room_keeps_live_leases() {
        let lease = |cells, expires, refused_until| Lease {
            cells,
            expires,
            refused_until,
            ..Lease::default()
        };
        let mut shard = Shard::default();
        shard.insert(1, lease(2, 100, 0));
        shard.insert(2, lease(0, 100, 0));
        shard.insert(3, lease(0, 0, 200));
        make_room(&mut shard, 50);
        let mut left: Vec<_> = shard.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [1, 3]);
        make_room(&mut shard, 500);
        assert!(shard.is_empty());
    }
}
