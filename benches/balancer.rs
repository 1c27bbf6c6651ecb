//! Micro benchmarks of the balancers' `pick` over three servers, as the request path calls it,
//! and of consistent hashing: the cost of hashing a request's key, of a pick in gatehouse's
//! Maglev table against a Ketama ring (nginx's `hash ... consistent`, written here only to be
//! measured against it), and of building each. Before the timings it prints each one's spread
//! (the busiest and idlest server's share of keys against the mean) and the share of keys that
//! move when a server joins.

use criterion::{BenchmarkId, Criterion};
use gatehouse::config::{BalanceAlgorithm, HashKey};
use gatehouse::metrics::Metrics;
use gatehouse::upstream::balancer::{
    self, MaglevTable, Placement, ServerLoads, Tried, hash_bytes, key_hash,
};
use gatehouse::upstream::pool::Endpoint;
use gatehouse::upstream::{ServerSet, ServerState};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn servers(metrics: &Metrics, count: u16) -> Vec<Arc<ServerState>> {
    (0..count)
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
    let servers = servers(&metrics, 3);
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
    // The table as an upstream uses it: a key per request (drawn from many users), weights
    // 5,1,1, with and without the bounded-load cap (which reads every server's in-flight).
    let addrs: Vec<&str> = servers.iter().map(|s| &*s.addr).collect();
    let keys = user_keys(4096);
    for (name, factor) in [("consistent_hash", 0.0), ("consistent_hash_bounded", 1.25)] {
        let table = MaglevTable::new(&with_weights(&addrs, &weights), factor);
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) & (keys.len() - 1);
                table.pick(keys[next], black_box(&set), Tried::default(), &|_| true)
            })
        });
    }
    group.finish();
}

/// What hashing costs per request before the pick: reading the key from the head and hashing it.
fn request_key(c: &mut Criterion) {
    let request = http::Request::get("/orders/12345?expand=items")
        .header("host", "shop.example")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101",
        )
        .header("accept", "text/html,application/xhtml+xml")
        .header("x-user", "customer-8f3a2c")
        .header(
            "cookie",
            "theme=dark; lang=en; session=4b1f0d2e9a8c7b6a5f4e3d2c1b0a",
        )
        .body(())
        .expect("a valid request");
    let (parts, ()) = request.into_parts();
    let client = "203.0.113.9".parse().ok();
    let mut group = c.benchmark_group("hash_key");
    for key in [
        "client_ip",
        "header:x-user",
        "cookie:session",
        "path",
        "uri",
    ] {
        let key = HashKey::parse(key).expect("a valid hash key");
        group.bench_function(key.to_string(), |b| {
            b.iter(|| {
                key_hash(
                    black_box(&key),
                    black_box(&parts.uri),
                    black_box(&parts.headers),
                    client,
                )
            })
        });
    }
    group.finish();
}

/// Maglev against Ketama: pick cost by upstream size, with every server eligible and with one
/// down (whose keys walk on), and the cost of building each at a reload.
fn ring_against_table(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics registry");
    let keys = user_keys(4096);
    let mut group = c.benchmark_group("consistent_hash_pick");
    for count in [3u16, 16, 64] {
        let servers = servers(&metrics, count);
        let weights = vec![1; usize::from(count)];
        let set = ServerSet {
            servers: &servers,
            weights: &weights,
        };
        let addrs: Vec<&str> = servers.iter().map(|s| &*s.addr).collect();
        let ring = Ketama::new(&addrs, &weights);
        let maglev = MaglevTable::new(&with_weights(&addrs, &weights), 0.0);
        for (case, down) in [("all_up", usize::MAX), ("one_down", 1)] {
            let eligible = move |i: usize| i != down;
            let mut next = 0;
            group.bench_function(BenchmarkId::new(format!("ketama_{case}"), count), |b| {
                b.iter(|| {
                    next = (next + 1) & (keys.len() - 1);
                    ring.pick(keys[next], black_box(&set), Tried::default(), &eligible)
                })
            });
            group.bench_function(BenchmarkId::new(format!("maglev_{case}"), count), |b| {
                b.iter(|| {
                    next = (next + 1) & (keys.len() - 1);
                    maglev.pick(keys[next], black_box(&set), Tried::default(), &eligible)
                })
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("consistent_hash_build");
    let names: Vec<String> = (0..64).map(|i| format!("10.0.0.{}:8080", i + 1)).collect();
    let addrs: Vec<&str> = names.iter().map(String::as_str).collect();
    let weights = vec![1; 64];
    group.bench_function("ketama/64", |b| {
        b.iter(|| Ketama::new(black_box(&addrs), &weights))
    });
    group.bench_function("maglev/64", |b| {
        b.iter(|| MaglevTable::new(black_box(&with_weights(&addrs, &weights)), 0.0))
    });
    group.finish();
}

fn with_weights<'a>(addrs: &[&'a str], weights: &[u32]) -> Vec<(&'a str, u32)> {
    addrs.iter().copied().zip(weights.iter().copied()).collect()
}

/// Keys as requests would bring them (a power of two of them, to cycle through with a mask).
fn user_keys(count: usize) -> Vec<u64> {
    (0..count)
        .map(|n| hash_bytes(format!("user-{n}").as_bytes()))
        .collect()
}

/// A Ketama ring as nginx builds one for `hash ... consistent`: 160 points per unit of weight,
/// placed by hashing the server's address, a key going to the first point at or after its
/// hash; a down server's keys walk on to the next points. Here only to be measured against
/// the Maglev table (it was gatehouse's first implementation).
struct Ketama {
    points: Vec<u64>,
    owners: Vec<u8>,
}

impl Ketama {
    fn new(addrs: &[&str], weights: &[u32]) -> Self {
        let mut placed: Vec<(u64, u8)> = Vec::new();
        for (index, (addr, weight)) in addrs.iter().zip(weights).enumerate() {
            let base = hash_bytes(addr.as_bytes());
            for n in 0..u64::from(*weight) * 160 {
                // splitmix64's step, then a full mix: evenly spread, independent points.
                let seed = base.wrapping_add((n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                placed.push((hash_bytes(&seed.to_le_bytes()), index as u8));
            }
        }
        placed.sort_unstable();
        Self {
            points: placed.iter().map(|&(point, _)| point).collect(),
            owners: placed.iter().map(|&(_, owner)| owner).collect(),
        }
    }

    fn pick(
        &self,
        key: u64,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let start = self.points.partition_point(|&point| point < key);
        let mut seen = Tried::default();
        for position in (start..self.points.len()).chain(0..start) {
            let index = usize::from(self.owners[position]);
            if seen.contains(index) {
                continue;
            }
            seen.insert(index);
            if !tried.contains(index) && eligible(index) {
                return Some(index);
            }
            if seen.count() as usize == servers.len() {
                break;
            }
        }
        None
    }

    fn owner(&self, key: u64) -> usize {
        let position = self.points.partition_point(|&point| point < key);
        usize::from(self.owners[position % self.points.len()])
    }
}

/// Spread and movement of both, printed once: over 1M keys, the busiest and the idlest
/// server's share against the mean, and the share of keys that move when an N+1th server
/// joins (ideal: 1/(N+1)).
fn report_spread() {
    const KEYS: usize = 1 << 20;
    let keys = user_keys(KEYS);
    println!(
        "consistent hashing over {KEYS} keys (max / min server load as a multiple of the mean; keys moved when one server joins, against 1/(N+1)):"
    );
    // 63: the joining server is the 64th, the most an upstream holds.
    for count in [3usize, 16, 63] {
        let names: Vec<String> = (0..=count)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect();
        let addrs: Vec<&str> = names.iter().map(String::as_str).collect();
        let weights = vec![1; count + 1];
        let idle: Vec<u32> = vec![1; count + 1];
        let loads = Idle(&idle);
        let ring_small = Ketama::new(&addrs[..count], &weights);
        let ring_large = Ketama::new(&addrs, &weights);
        let table_small = MaglevTable::new(&with_weights(&addrs[..count], &weights), 0.0);
        let table_large = MaglevTable::new(&with_weights(&addrs, &weights), 0.0);
        let maglev =
            |table: &MaglevTable, key: u64| match table
                .pick(key, &loads, Tried::default(), &|_| true)
            {
                Some((index, Placement::Home)) => index,
                other => panic!("an idle upstream picked {other:?}"),
            };
        let ketama_spread = spread(count, keys.iter().map(|&k| ring_small.owner(k)));
        let maglev_spread = spread(count, keys.iter().map(|&k| maglev(&table_small, k)));
        let ketama_moved = moved(
            keys.iter().map(|&k| ring_small.owner(k)),
            keys.iter().map(|&k| ring_large.owner(k)),
        );
        let maglev_moved = moved(
            keys.iter().map(|&k| maglev(&table_small, k)),
            keys.iter().map(|&k| maglev(&table_large, k)),
        );
        println!(
            "  {count:>2} servers: ketama max {:.3} min {:.3} moved {:.4} | maglev max {:.3} min {:.3} moved {:.4} | ideal moved {:.4}",
            ketama_spread.0,
            ketama_spread.1,
            ketama_moved,
            maglev_spread.0,
            maglev_spread.1,
            maglev_moved,
            1.0 / (count + 1) as f64
        );
    }
}

struct Idle<'a>(&'a [u32]);

impl ServerLoads for Idle<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn weight(&self, index: usize) -> u32 {
        self.0[index]
    }
    fn in_flight(&self, _: usize) -> u32 {
        0
    }
    fn latency_ewma_nanos(&self, _: usize) -> u64 {
        0
    }
}

fn spread(count: usize, owners: impl Iterator<Item = usize>) -> (f64, f64) {
    let mut counts = vec![0usize; count];
    let mut total = 0;
    for owner in owners {
        counts[owner] += 1;
        total += 1;
    }
    let mean = total as f64 / count as f64;
    let max = counts.iter().copied().max().unwrap_or(0) as f64 / mean;
    let min = counts.iter().copied().min().unwrap_or(0) as f64 / mean;
    (max, min)
}

fn moved(before: impl Iterator<Item = usize>, after: impl Iterator<Item = usize>) -> f64 {
    let (mut moved, mut total) = (0usize, 0usize);
    for (old, new) in before.zip(after) {
        moved += usize::from(old != new);
        total += 1;
    }
    moved as f64 / total as f64
}

fn main() {
    report_spread();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    pick(&mut criterion);
    request_key(&mut criterion);
    ring_against_table(&mut criterion);
    criterion.final_summary();
}
