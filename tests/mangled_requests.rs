//! Mangled request streams over real sockets: whatever bytes a client sends, gatehouse answers
//! or closes the connection within its timeouts, never panics, and goes on serving everyone
//! else. The mutations are random but seeded (`GATEHOUSE_MANGLE_SEED` replays a run).

mod common;

use common::TestUpstream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TEMPLATES: &[&[u8]] = &[
    b"GET /a?b=c HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\n\r\n",
    b"POST /orders HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 11\r\n\r\nhello world",
    b"PUT /orders/1 HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
    b"GET /one HTTP/1.1\r\nHost: shop.test\r\n\r\nPOST /two HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2\r\n\r\nokGET /three HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    b"POST /expect HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"GET http://shop.test/absolute HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
];

/// Bytes that sit on the boundaries parsers disagree about.
const INTERESTING: &[u8] = b"\r\n\0 :\t\x7f\xff0f-_;,\"=";

fn mangle(rng: &mut fastrand::Rng, template: &[u8]) -> Vec<u8> {
    let mut bytes = template.to_vec();
    for _ in 0..rng.usize(1..=4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.usize(..bytes.len());
        let byte = if rng.bool() {
            INTERESTING[rng.usize(..INTERESTING.len())]
        } else {
            rng.u8(..)
        };
        match rng.u8(..6) {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            4 => {
                // A line said twice (two Hosts, two lengths, two codings).
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| at + i + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(end..end, line);
            }
            _ => {
                // A digit changed in place: lengths and chunk sizes that lie.
                bytes[at] = b"0123456789abcdef"[rng.usize(..16)];
            }
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_request_streams_are_answered_or_closed_and_nothing_breaks() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&panics);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let upstream = TestUpstream::named("app").await;
    let config = format!(
        "{}\n[limits]\nmax_header_bytes = \"8KiB\"\nmax_body_bytes = \"4KiB\"\n\
         header_read_timeout = \"300ms\"\nidle_timeout = \"1s\"\n",
        common::simple_config(&[upstream.addr], "")
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    let seed = std::env::var("GATEHOUSE_MANGLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    println!("seed {seed} (GATEHOUSE_MANGLE_SEED replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let cases: Vec<Vec<u8>> = (0..240)
        .map(|i| mangle(&mut rng, TEMPLATES[i % TEMPLATES.len()]))
        .collect();

    let mut tasks = Vec::new();
    for (index, bytes) in cases.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(&bytes).await;
            // Answered and closed, or closed at once, or left open only until a timeout
            // (head 300 ms, idle 1 s, or the 2 s linger after an answer): never longer.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let closed = tokio::time::timeout(Duration::from_secs(8), async {
                loop {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await
            .is_ok();
            assert!(
                closed,
                "case {index}: still open after 8 s: {:?} got {:?}",
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&got)
            );
            if !got.is_empty() {
                assert!(
                    got.starts_with(b"HTTP/1.1 ") || got.starts_with(b"HTTP/1.0 "),
                    "case {index}: {:?} got {:?}",
                    String::from_utf8_lossy(&bytes),
                    String::from_utf8_lossy(&got)
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // Everyone else is still served.
    let reply = common::get(addr, "/after").await;
    assert_eq!(reply.status, 200);
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a panic while serving");
}
