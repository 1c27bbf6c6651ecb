//! The cost of a rate limit per request, as the request path pays it, against the `governor`
//! crate's keyed limiter doing the same job; and the memory each holds for a million distinct
//! keys (printed after the timings: resident memory grown while the keys went in).
//!
//! `route_decide` is the whole decision of a route with one limit keyed by client address
//! (hashing the key with the per-process secret, the shard lock, the GCRA step, the counters);
//! `table_check` and `governor_check_key` compare the keyed state alone, over the same
//! pre-hashed keys.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::config::{KeyList, RateLimitConfig};
use gatehouse::limit::{Gcra, KeySource, KeyTable, RateLimiter, RouteLimits, now_nanos};
use gatehouse::metrics::Metrics;
use governor::{Quota, RateLimiter as Governor};
use http::HeaderMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use toml::Spanned;

/// Distinct keys cycled through, like a busy edge's clients.
const KEYS: u64 = 10_000;

fn settings(max_keys: usize) -> RateLimitConfig {
    RateLimitConfig {
        rate: Some(Spanned::new(0..0, "100/s".into())),
        concurrency: 0,
        burst: 50,
        nodelay: true,
        key: Spanned::new(0..0, KeyList(vec!["client_ip".into()])),
        dry_run: false,
        ipv6_prefix: 128,
        max_keys,
        headers: false,
        shared: Spanned::new(0..0, false),
        on_redis_error: Default::default(),
    }
}

fn key(i: u64) -> u64 {
    (i % KEYS).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn per_request(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics registry");
    let limiter =
        Arc::new(RateLimiter::new("bench", &settings(100_000), &metrics, None).expect("limit"));
    let limits = RouteLimits::new(vec![limiter]);
    let headers = HeaderMap::new();
    let mut i = 0u32;
    c.bench_function("route_decide", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let source = KeySource {
                client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i % KEYS as u32))),
                headers: &headers,
                route: "api",
            };
            black_box(limits.decide(&source, now_nanos()))
        })
    });

    let table = KeyTable::new(100_000);
    let gcra = Gcra::new(10_000_000, 50);
    let mut n = 0u64;
    c.bench_function("table_check", |b| {
        b.iter(|| {
            n += 1;
            black_box(table.check(&gcra, key(n), now_nanos()))
        })
    });

    let quota = Quota::per_second(NonZeroU32::new(100).expect("non-zero"))
        .allow_burst(NonZeroU32::new(51).expect("non-zero"));
    let governor = Governor::keyed(quota);
    let mut n = 0u64;
    c.bench_function("governor_check_key", |b| {
        b.iter(|| {
            n += 1;
            black_box(governor.check_key(&key(n)).is_ok())
        })
    });
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Resident memory grown by a million distinct keys, each limited once.
fn memory(_: &mut Criterion) {
    const DISTINCT: u64 = 1_000_000;
    let before = resident_bytes();
    let table = KeyTable::new(100_000);
    let gcra = Gcra::new(10_000_000, 50);
    let now = now_nanos();
    for i in 0..DISTINCT {
        black_box(table.check(&gcra, i.wrapping_mul(0x9e37_79b9_7f4a_7c15), now));
    }
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "memory: KeyTable(max_keys = 100000) after {DISTINCT} distinct keys: {} keys held, resident +{:.1} MiB",
        table.len(),
        grown as f64 / (1024.0 * 1024.0)
    );
    drop(table);

    let before = resident_bytes();
    let quota = Quota::per_second(NonZeroU32::new(100).expect("non-zero"));
    let governor = Governor::keyed(quota);
    for i in 0..DISTINCT {
        black_box(
            governor
                .check_key(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .is_ok(),
        );
    }
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "memory: governor keyed limiter after {DISTINCT} distinct keys: {} keys held, resident +{:.1} MiB (unbounded until retain_recent)",
        governor.len(),
        grown as f64 / (1024.0 * 1024.0)
    );
}

criterion_group!(benches, per_request, memory);
criterion_main!(benches);
