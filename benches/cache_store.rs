//! Chooses the cache store by measurement: quick_cache and moka, both size-weighted and
//! holding `Arc`'d entries as gatehouse does, on the operations a cache hit and a fill make
//! (a hit: get of a present key; a fill: insert of a new key with evictions once full).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

const CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
const ENTRY_BYTES: u64 = 4096;
const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("localhost:8080/orders/{i}"))
        .collect()
}

fn quick() -> quick_cache::sync::Cache<String, Arc<Vec<u8>>, Weight> {
    quick_cache::sync::Cache::with_weighter(KEYS, CAPACITY_BYTES, Weight)
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Arc<Vec<u8>>> for Weight {
    fn weight(&self, key: &String, value: &Arc<Vec<u8>>) -> u64 {
        (key.len() + value.len()) as u64
    }
}

fn moka() -> moka::sync::Cache<String, Arc<Vec<u8>>> {
    moka::sync::Cache::builder()
        .max_capacity(CAPACITY_BYTES)
        .weigher(|key: &String, value: &Arc<Vec<u8>>| (key.len() + value.len()) as u32)
        .build()
}

fn hits(c: &mut Criterion) {
    let keys = keys();
    let value = Arc::new(vec![0u8; ENTRY_BYTES as usize]);
    let mut group = c.benchmark_group("cache_store_hit");
    group.throughput(Throughput::Elements(1));
    let q = quick();
    let m = moka();
    for key in &keys {
        q.insert(key.clone(), Arc::clone(&value));
        m.insert(key.clone(), Arc::clone(&value));
    }
    let mut i = 0;
    group.bench_function(BenchmarkId::new("quick_cache", "get"), |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(q.get(keys[i].as_str()))
        })
    });
    group.bench_function(BenchmarkId::new("moka", "get"), |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(m.get(&keys[i]))
        })
    });
    group.finish();
}

fn fills(c: &mut Criterion) {
    let value = Arc::new(vec![0u8; ENTRY_BYTES as usize]);
    let mut group = c.benchmark_group("cache_store_insert");
    group.throughput(Throughput::Elements(1));
    // Four times more keys than fit: every insert past the start evicts.
    let keys: Vec<String> = (0..4 * (CAPACITY_BYTES / ENTRY_BYTES) as usize)
        .map(|i| format!("localhost:8080/orders/{i}"))
        .collect();
    let q = quick();
    let m = moka();
    let mut i = 0;
    group.bench_function(BenchmarkId::new("quick_cache", "insert"), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            q.insert(keys[i].clone(), Arc::clone(&value));
        })
    });
    group.bench_function(BenchmarkId::new("moka", "insert"), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            m.insert(keys[i].clone(), Arc::clone(&value));
        })
    });
    group.finish();
}

criterion_group!(benches, hits, fills);
criterion_main!(benches);
