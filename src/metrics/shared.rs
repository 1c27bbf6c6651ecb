//! The metric families of state shared between replicas through Redis: calls by outcome,
//! their latency, the connection's breaker, outages, and the shared rate limits' decisions
//! taken without Redis, and the shared cache tier's lookups, writes, purges and fetch claims.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct SharedMetrics {
    pub calls: IntCounterVec,
    pub call_duration: Histogram,
    /// 0 closed, 1 open, 2 half-open (one probe let through).
    pub breaker_state: IntGauge,
    pub outages: IntCounter,
    pub limit_decisions: IntCounterVec,
    pub cache_lookups: IntCounterVec,
    pub cache_writes: IntCounterVec,
    pub cache_purges: IntCounterVec,
    pub cache_fetch_claims: IntCounterVec,
}

impl SharedMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "gatehouse_shared_calls_total",
                "Calls to Redis, by outcome (ok; error: Redis or the connection failed; timeout: no answer within [redis] timeout; breaker_open: not sent, the breaker is open).",
            ),
            &["outcome"],
        )?;
        let call_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_shared_call_duration_seconds",
                "Time of the calls sent to Redis, answered or not.",
            )
            .buckets(super::LATENCY_BUCKETS.to_vec()),
        )?;
        let breaker_state = IntGauge::new(
            "gatehouse_shared_breaker_state",
            "The Redis connection's breaker: 0 closed, 1 open, 2 half-open.",
        )?;
        let outages = IntCounter::new(
            "gatehouse_shared_outages_total",
            "Times the Redis connection's breaker opened.",
        )?;
        let limit_decisions = IntCounterVec::new(
            Opts::new(
                "gatehouse_shared_limit_decisions_total",
                "Decisions of shared rate limits, by how they were taken (lease: from quota leased earlier, no call; redis: after one call; refused_locally: a refusal known without a call; fallback: Redis unavailable, on_redis_error decided).",
            ),
            &["limit", "via"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "gatehouse_shared_cache_lookups_total",
                "Local cache misses looked up in the shared tier, by outcome (hit; miss; error: Redis failed, timed out or its breaker is open, and the request went on as a miss).",
            ),
            &["cache", "outcome"],
        )?;
        let cache_writes = IntCounterVec::new(
            Opts::new(
                "gatehouse_shared_cache_writes_total",
                "Locally stored responses written to the shared tier, by outcome (ok; error).",
            ),
            &["cache", "outcome"],
        )?;
        let cache_purges = IntCounterVec::new(
            Opts::new(
                "gatehouse_shared_cache_purges_total",
                "Shared cache purges, by direction (sent: purges of one URL, its keys, or a prefix, deleted in Redis and published to the replicas; received: messages of a replica, one per key or prefix, applied to the local store).",
            ),
            &["cache", "direction"],
        )?;
        let cache_fetch_claims = IntCounterVec::new(
            Opts::new(
                "gatehouse_shared_cache_fetch_claims_total",
                "Claims on a key's origin fetch among the replicas, on a miss in both tiers, by outcome (won: this replica fetches; lost: another was fetching, and this one waited for its entry).",
            ),
            &["cache", "outcome"],
        )?;
        registry.register(Box::new(cache_fetch_claims.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_writes.clone()))?;
        registry.register(Box::new(cache_purges.clone()))?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(call_duration.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(outages.clone()))?;
        registry.register(Box::new(limit_decisions.clone()))?;
        Ok(Self {
            calls,
            call_duration,
            breaker_state,
            outages,
            limit_decisions,
            cache_lookups,
            cache_writes,
            cache_purges,
            cache_fetch_claims,
        })
    }
}
