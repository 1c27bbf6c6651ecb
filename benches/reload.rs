//! The cost of a reload's work away from the hot path, for a large config (1,000 routes, 100
//! upstreams of 10 servers): checking the text exactly as `gatehouse check` does, and compiling
//! the snapshot against registries that already know every server (as on a real reload).

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::cache::CacheRegistry;
use gatehouse::config;
use gatehouse::metrics::Metrics;
use gatehouse::snapshot::Snapshot;
use gatehouse::upstream::ServerRegistry;
use gatehouse::upstream::discovery::AddressBook;
use std::collections::HashMap;
use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;

fn large_config() -> String {
    let mut text = String::from(
        "[admin]\nbind = \"\"\n[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n",
    );
    for upstream in 0..100 {
        let servers: Vec<String> = (0..10)
            .map(|s| format!("\"10.0.{upstream}.{s}:8080\""))
            .collect();
        let _ = write!(
            text,
            "[upstream.u{upstream}]\nbalance = \"least_connections\"\nservers = [{}]\n",
            servers.join(", ")
        );
    }
    for route in 0..1000 {
        let _ = write!(
            text,
            "[[route]]\nhost = \"api{}.example.com\"\npath_prefix = \"/v{}/\"\nupstream = \"u{}\"\n",
            route % 50,
            route,
            route % 100
        );
    }
    text
}

fn reload(c: &mut Criterion) {
    let text = large_config();
    let path = Path::new("bench.toml");
    let metrics = Metrics::new().expect("metrics");
    let servers = ServerRegistry::new();
    let caches = CacheRegistry::new();
    let limiters = gatehouse::limit::LimiterRegistry::new();
    let redis = gatehouse::shared::RedisRegistry::new();
    let addresses = AddressBook::new();
    let ids = HashMap::from([("public".to_owned(), 0)]);
    let auth = gatehouse::auth::AuthRegistry::new();
    let traces = gatehouse::trace::TraceRegistry::new();
    let warm = config::load_str(path, &text).expect("valid config");
    Snapshot::compile(
        warm, &servers, &addresses, &caches, &limiters, &redis, &metrics, &ids, &auth, &traces,
    )
    .expect("compiles");

    let mut group = c.benchmark_group("reload_1000_routes_100x10_servers");
    group.sample_size(20);
    group.bench_function("check", |b| {
        b.iter(|| config::load_str(path, black_box(&text)).expect("valid"))
    });
    group.bench_function("check_and_compile", |b| {
        b.iter(|| {
            let config = config::load_str(path, black_box(&text)).expect("valid");
            Snapshot::compile(
                config, &servers, &addresses, &caches, &limiters, &redis, &metrics, &ids, &auth,
                &traces,
            )
            .expect("compiles")
        })
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
