//! Micro benchmarks of the balancers' `pick` over three servers, as the request path calls it.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::config::BalanceAlgorithm;
use gatehouse::metrics::Metrics;
use gatehouse::upstream::balancer::{self, Tried};
use gatehouse::upstream::pool::Endpoint;
use gatehouse::upstream::{ServerSet, ServerState};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn servers(metrics: &Metrics) -> Vec<Arc<ServerState>> {
    (0..3)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", 8001 + i);
            let endpoint = Endpoint {
                host: "127.0.0.1".into(),
                port: 8001 + i,
                socket_addr: addr.parse().ok(),
            };
            let server = Arc::new(ServerState::new(
                "bench",
                &addr,
                endpoint,
                8,
                Duration::from_secs(60),
                metrics,
            ));
            server.observe_latency(Duration::from_micros(200 + 100 * u64::from(i)));
            server
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics registry");
    let servers = servers(&metrics);
    let weights = [5, 1, 1];
    let set = ServerSet {
        servers: &servers,
        weights: &weights,
    };
    let mut group = c.benchmark_group("balancer_pick");
    for algorithm in [
        BalanceAlgorithm::RoundRobin,
        BalanceAlgorithm::WeightedRoundRobin,
        BalanceAlgorithm::LeastConnections,
        BalanceAlgorithm::P2cEwma,
    ] {
        let balancer = balancer::build(algorithm, &weights);
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| balancer.pick(black_box(&set), Tried::default(), &|_| true))
        });
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
