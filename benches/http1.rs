//! Micro benchmarks of the HTTP/1.1 codec: parsing a browser's request head and a small
//! upstream response head, writing a response head, and decoding a chunked body, each on a
//! buffer reused across iterations as a connection reuses its own.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse::http1::body::encode_chunk;
use gatehouse::http1::encode::encode_response_head;
use gatehouse::http1::{
    BodyLimits, Decoder, Framing, HeadConfig, Parsed, parse_request, parse_response,
};
use http::Method;
use std::hint::black_box;

const BROWSER_REQUEST: &[u8] = b"GET /orders/42?expand=items HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: session=6f1c2a9e0b7d4e3f8a5c; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: none\r\n\
Sec-Fetch-User: ?1\r\n\r\n";

const SMALL_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Date: Sun, 06 Dec 2026 12:00:00 GMT\r\n\
Content-Type: text/plain\r\n\
Content-Length: 200\r\n\
Connection: keep-alive\r\n\r\n";

fn heads(c: &mut Criterion) {
    let config = HeadConfig::default();
    let mut group = c.benchmark_group("http1_head");

    let mut buf = BytesMut::with_capacity(4096);
    group.throughput(Throughput::Bytes(BROWSER_REQUEST.len() as u64));
    group.bench_function("parse_browser_request", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(BROWSER_REQUEST);
            match parse_request(&mut buf, &config) {
                Ok(Parsed::Complete(head)) => black_box(head.headers.len()),
                _ => 0,
            }
        })
    });

    group.throughput(Throughput::Bytes(SMALL_RESPONSE.len() as u64));
    group.bench_function("parse_small_response", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(SMALL_RESPONSE);
            match parse_response(&mut buf, &config, &Method::GET) {
                Ok(Parsed::Complete(head)) => black_box(head.headers.len()),
                _ => 0,
            }
        })
    });

    buf.clear();
    buf.extend_from_slice(SMALL_RESPONSE);
    let Ok(Parsed::Complete(response)) = parse_response(&mut buf, &config, &Method::GET) else {
        panic!("the sample response parses");
    };
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("encode_small_response", |b| {
        b.iter(|| {
            out.clear();
            encode_response_head(
                response.status,
                response.version,
                black_box(&response.headers),
                &mut out,
            );
            black_box(out.len())
        })
    });
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let mut body = BytesMut::new();
    for _ in 0..16 {
        encode_chunk(&[b'x'; 4096], &mut body);
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let body = body.freeze();
    let mut group = c.benchmark_group("http1_body");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("decode_chunked_64KiB", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(Framing::Chunked, BodyLimits::default());
            let mut rest = &body[..];
            let mut total = 0;
            while let Ok(step) = decoder.decode(rest) {
                total += step.data.len();
                rest = rest.get(step.consumed..).unwrap_or_default();
                if step.consumed == 0 {
                    break;
                }
            }
            black_box(total)
        })
    });
    group.finish();
}

criterion_group!(benches, heads, chunked);
criterion_main!(benches);
