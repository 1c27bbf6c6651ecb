//! Chooses how cache hits are compressed, by measurement: compressing a stored ~100 KiB JSON
//! order list on every hit (gzip 1, brotli 4, zstd 3, the defaults) against serving an
//! encoded copy kept beside it, which costs a `Bytes` clone and the copy's memory. Prints each
//! copy's size beside the identity body's before timing.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gatehouse::compress::{Encoding, compress_all};
use std::hint::black_box;

/// A JSON list of orders like the demo's `/orders`, about `target` bytes.
fn orders(target: usize) -> Bytes {
    let mut text = String::from("{\"orders\":[");
    let mut seed = 14u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let statuses = ["new", "paid", "shipped", "delivered", "cancelled"];
    let mut id = 0;
    while text.len() < target {
        id += 1;
        text.push_str(&format!(
            "{{\"id\":{id},\"customer\":\"customer-{:04}\",\"status\":\"{}\",\"items\":[{{\"sku\":\"SKU-{:05}\",\"quantity\":{},\"unit_price_cents\":{}}}],\"created_at\":\"2026-12-0{}T{:02}:{:02}:{:02}Z\"}},",
            next(5000),
            statuses[next(5) as usize],
            next(100_000),
            next(5) + 1,
            next(99_800) + 199,
            next(6) + 1,
            next(24),
            next(60),
            next(60),
        ));
    }
    text.push_str("{}],\"next\":null}");
    Bytes::from(text)
}

const DEFAULTS: [(Encoding, u32); 3] = [
    (Encoding::Gzip, 1),
    (Encoding::Brotli, 4),
    (Encoding::Zstd, 3),
];

fn per_hit(c: &mut Criterion) {
    let body = orders(100 * 1024);
    for (encoding, level) in DEFAULTS {
        let copy = compress_all(encoding, level, &body).expect("compresses");
        eprintln!(
            "{} level {level}: {} -> {} bytes ({:.1}% of the identity body)",
            encoding.token(),
            body.len(),
            copy.len(),
            copy.len() as f64 * 100.0 / body.len() as f64
        );
    }
    // zlib-rs's level 1 is a quicker, looser match finder than zlib's (nginx's): the levels
    // beside it show which one matches nginx's level-1 output.
    for level in 1..=4 {
        let copy = compress_all(Encoding::Gzip, level, &body).expect("compresses");
        eprintln!("gzip level {level}: {} bytes", copy.len());
    }
    let mut group = c.benchmark_group("cache_hit_100KiB_json");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (encoding, level) in DEFAULTS {
        group.bench_with_input(
            BenchmarkId::new("compress_every_hit", encoding.token()),
            &body,
            |b, body| {
                b.iter(|| compress_all(encoding, level, black_box(body)).expect("compresses"))
            },
        );
        let copy = compress_all(encoding, level, &body).expect("compresses");
        group.bench_with_input(
            BenchmarkId::new("stored_copy", encoding.token()),
            &copy,
            |b, copy| b.iter(|| black_box(copy).clone()),
        );
    }
    group.finish();
}

criterion_group!(benches, per_hit);
criterion_main!(benches);
