//! Micro benchmarks of route matching: a small config (the demo's) and a larger one with
//! exact, wildcard and catch-all hosts and many prefixes.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::route::{HostPattern, RouteEntry, Router};
use std::hint::black_box;

fn entry(host: &str, prefix: &str, target: usize) -> RouteEntry<usize> {
    RouteEntry {
        listener: None,
        host: HostPattern::parse(host),
        path_prefix: prefix.into(),
        target,
    }
}

fn route_match(c: &mut Criterion) {
    let small = Router::new(vec![entry("*", "/", 0)]);
    let mut entries = Vec::new();
    for i in 0..10 {
        entries.push(entry(&format!("api{i}.example.com"), "/", i));
        entries.push(entry(&format!("*.tenant{i}.example.com"), "/", 100 + i));
        entries.push(entry("*", &format!("/service{i}/v1"), 200 + i));
    }
    entries.push(entry("*", "/", 999));
    let large = Router::new(entries);

    let mut group = c.benchmark_group("route_match");
    group.bench_function("one_catch_all", |b| {
        b.iter(|| small.find(0, black_box("localhost"), black_box("/orders/1")))
    });
    group.bench_function("31_routes_exact_host", |b| {
        b.iter(|| large.find(0, black_box("api7.example.com"), black_box("/orders/1")))
    });
    group.bench_function("31_routes_prefix", |b| {
        b.iter(|| large.find(0, black_box("localhost"), black_box("/service9/v1/orders")))
    });
    group.bench_function("31_routes_fallthrough", |b| {
        b.iter(|| large.find(0, black_box("localhost"), black_box("/menu")))
    });
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
