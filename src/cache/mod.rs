//! The response cache: an RFC 9111 shared cache per `[cache.NAME]`, used by the routes that
//! name it. `policy` decides (pure), `store` holds (bounded memory), `coalesce` makes
//! concurrent misses share one upstream request, `fill` stores a response while it streams
//! to the client. Answering from a stored response (hit, 304, 206, HEAD) is the proxy's
//! (`proxy::cache_answer`).

pub mod coalesce;
pub mod fill;
pub mod policy;
pub mod shared;
pub mod store;

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::shared::Redis;
use coalesce::Coalescer;
use http::HeaderName;
use policy::PolicyConfig;
use prometheus::{IntCounter, IntGauge};
use shared::{Purge, SharedTier, SharedTierMetrics};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use store::Store;

/// What happened to a request at the cache, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

/// A cache's request counts by result.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CacheTotals {
    pub hit: u64,
    pub miss: u64,
    pub stale: u64,
    pub revalidated: u64,
    pub bypass: u64,
}

pub struct CacheMetrics {
    hit: IntCounter,
    miss: IntCounter,
    stale: IntCounter,
    revalidated: IntCounter,
    bypass: IntCounter,
    pub coalesced: IntCounter,
    bytes: IntGauge,
    entries: IntGauge,
}

impl CacheMetrics {
    fn new(metrics: &Metrics, cache: &str) -> Self {
        let result = |r: &str| metrics.cache_requests.with_label_values(&[cache, r]);
        Self {
            hit: result("hit"),
            miss: result("miss"),
            stale: result("stale"),
            revalidated: result("revalidated"),
            bypass: result("bypass"),
            coalesced: metrics.cache_coalesced.with_label_values(&[cache]),
            bytes: metrics.cache_bytes.with_label_values(&[cache]),
            entries: metrics.cache_entries.with_label_values(&[cache]),
        }
    }

    /// Requests by result since the process started, for /status.
    pub fn totals(&self) -> CacheTotals {
        CacheTotals {
            hit: self.hit.get(),
            miss: self.miss.get(),
            stale: self.stale.get(),
            revalidated: self.revalidated.get(),
            bypass: self.bypass.get(),
        }
    }

    pub fn count(&self, result: CacheResult) {
        match result {
            CacheResult::Hit => self.hit.inc(),
            CacheResult::Miss => self.miss.inc(),
            CacheResult::Stale => self.stale.inc(),
            CacheResult::Revalidated => self.revalidated.inc(),
            CacheResult::Bypass => self.bypass.inc(),
        }
    }
}

/// One configured cache, shared by the routes that name it and kept across reloads while its
/// settings stay the same.
pub struct Cache {
    pub name: Arc<str>,
    pub settings: CacheConfig,
    pub policy: PolicyConfig,
    pub max_object_size: u64,
    pub store: Arc<Store>,
    pub coalescer: Arc<Coalescer>,
    pub metrics: CacheMetrics,
    /// `shared = true`: the tier in `[redis]` behind the local store.
    pub shared: Option<Arc<SharedTier>>,
}

impl Cache {
    /// The cache `name`; its shared tier (when `settings.shared`) lives in `redis`.
    pub fn new(
        name: &str,
        settings: &CacheConfig,
        metrics: &Metrics,
        redis: Option<&Arc<Redis>>,
    ) -> Self {
        let field = settings.cache_control_field.get_ref();
        let store = Arc::new(Store::new(
            settings.max_size.0,
            settings.max_object_size.0,
            metrics.cache_evictions.with_label_values(&[name]),
        ));
        let cache_metrics = CacheMetrics::new(metrics, name);
        let shared = match redis {
            Some(redis) if *settings.shared.get_ref() => {
                let (store, bytes, entries) = (
                    Arc::clone(&store),
                    cache_metrics.bytes.clone(),
                    cache_metrics.entries.clone(),
                );
                let on_purge = move |purge: Purge| {
                    match purge {
                        Purge::Key(key) => {
                            store.invalidate(&key);
                        }
                        Purge::Prefix(prefix) => {
                            store.purge_prefix(&prefix);
                        }
                    }
                    bytes.set(store.bytes() as i64);
                    entries.set(store.entries() as i64);
                };
                Some(Arc::new(SharedTier::new(
                    Arc::clone(redis),
                    name,
                    settings.shared_max_object.0,
                    SharedTierMetrics::new(metrics, name),
                    Box::new(on_purge),
                )))
            }
            _ => None,
        };
        Self {
            name: name.into(),
            policy: PolicyConfig {
                default_ttl: settings.default_ttl.0,
                stale_while_revalidate: settings.stale_while_revalidate.0,
                stale_if_error: settings.stale_if_error.0,
                targeted_field: if field.is_empty() {
                    None
                } else {
                    HeaderName::from_bytes(field.as_bytes()).ok()
                },
                store_set_cookie: settings.store_set_cookie,
                store_post_responses: settings.store_post_responses,
            },
            max_object_size: settings.max_object_size.0,
            store,
            coalescer: Coalescer::new(),
            metrics: cache_metrics,
            shared,
            settings: settings.clone(),
        }
    }

    /// Publishes the store's size after a change.
    pub fn update_gauges(&self) {
        self.metrics.bytes.set(self.store.bytes() as i64);
        self.metrics.entries.set(self.store.entries() as i64);
    }
}

/// Caches by name, so that a reload keeps the entries of a cache whose settings did not change.
#[derive(Default)]
pub struct CacheRegistry {
    caches: Mutex<HashMap<String, Arc<Cache>>>,
}

impl CacheRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get_or_create(
        &self,
        name: &str,
        settings: &CacheConfig,
        metrics: &Metrics,
        redis: Option<&Arc<Redis>>,
    ) -> Arc<Cache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = caches.get(name)
            && existing.settings == *settings
            && match (
                &existing.shared,
                redis.filter(|_| *settings.shared.get_ref()),
            ) {
                (None, None) => true,
                (Some(tier), Some(redis)) => tier.uses(Some(redis)),
                _ => false,
            }
        {
            return Arc::clone(existing);
        }
        let cache = Arc::new(Cache::new(name, settings, metrics, redis));
        caches.insert(name.to_owned(), Arc::clone(&cache));
        cache
    }

    /// Forgets caches whose name `keep` rejects (no longer configured).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|name, _| keep(name));
    }

    pub fn all(&self) -> Vec<Arc<Cache>> {
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.values().cloned().collect()
    }
}
