//! Interim (1xx) responses from an upstream: passed on to HTTP/1.1 clients as they arrive,
//! before the final response, without hop-by-hop headers; never stored by the cache; not sent
//! to HTTP/1.0 clients; an upstream's 100 Continue is not repeated.
//!
//! The upstream is raw TCP (hyper's server cannot send 1xx): per request it writes its interim
//! responses, then holds the final one until the test releases it — so a test can see the 103
//! arrive while the final response does not exist yet.

mod common;

use common::WAIT;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\n\
    Link: </style.css>; rel=preload; as=style\r\n\
    Connection: x-hop\r\n\
    X-Hop: secret\r\n\
    Keep-Alive: timeout=5\r\n\r\n";

const FINAL: &[u8] = b"HTTP/1.1 200 OK\r\n\
    Content-Length: 5\r\n\
    Cache-Control: max-age=60\r\n\r\nhello";

/// An upstream that answers every request with `interim`, then — once released — `FINAL`.
struct InterimUpstream {
    addr: SocketAddr,
    release: Arc<Semaphore>,
    requests: Arc<AtomicUsize>,
}

impl InterimUpstream {
    async fn start(interim: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Semaphore::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (gate, count) = (Arc::clone(&release), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (gate, count) = (Arc::clone(&gate), Arc::clone(&count));
                tokio::spawn(serve(stream, interim, gate, count));
            }
        });
        Self {
            addr,
            release,
            requests,
        }
    }

    fn release_one(&self) {
        self.release.add_permits(1);
    }
}

async fn serve(
    mut stream: TcpStream,
    interim: &'static [u8],
    release: Arc<Semaphore>,
    requests: Arc<AtomicUsize>,
) {
    let mut pending = Vec::new();
    loop {
        // One request head (the tests send no bodies upstream except where they say so).
        let head_end = loop {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                break end + 4;
            }
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
        let body_length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while pending.len() < head_end + body_length {
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        pending.drain(..head_end + body_length);
        requests.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(interim).await.is_err() {
            return;
        }
        let Ok(permit) = release.acquire().await else {
            return;
        };
        permit.forget();
        if stream.write_all(FINAL).await.is_err() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The tests' one catch-all route to `upstream`, through a cache when `cached`.
fn config(upstream: SocketAddr, cached: bool) -> String {
    let plain = common::simple_config(&[upstream], "");
    if !cached {
        return plain;
    }
    plain.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\ncache = \"c\"\n",
    ) + "\n[cache.c]\nmax_size = \"1MiB\"\nmax_object_size = \"64KiB\"\n"
}

/// Reads from `stream` into `got` until `got` holds `needle` (after `from`); the offset past it.
async fn read_through(
    stream: &mut TcpStream,
    got: &mut Vec<u8>,
    from: usize,
    needle: &[u8],
) -> usize {
    timeout(WAIT, async {
        loop {
            if let Some(at) = find(&got[from..], needle) {
                return from + at + needle.len();
            }
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed; got {:?}",
                String::from_utf8_lossy(got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} in {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(got)
        )
    })
}

#[tokio::test]
async fn early_hints_reach_the_client_before_the_final_response_exists() {
    let upstream = InterimUpstream::start(EARLY_HINTS).await;
    let running = common::start_gatehouse(&config(upstream.addr, false)).await;
    let mut client = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    client
        .write_all(b"GET /page HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();

    // The upstream has not been allowed to answer yet: whatever arrives is the interim part.
    let mut got = Vec::new();
    let interim_end = read_through(&mut client, &mut got, 0, b"\r\n\r\n").await;
    let interim = String::from_utf8_lossy(&got[..interim_end]).to_ascii_lowercase();
    assert!(
        interim.starts_with("http/1.1 103 early hints\r\n"),
        "{interim}"
    );
    assert!(
        interim.contains("link: </style.css>; rel=preload; as=style\r\n"),
        "{interim}"
    );
    for hop_by_hop in ["x-hop", "connection:", "keep-alive"] {
        assert!(
            !interim.contains(hop_by_hop),
            "{hop_by_hop} passed on: {interim}"
        );
    }

    upstream.release_one();
    let end = read_through(&mut client, &mut got, interim_end, b"hello").await;
    let final_response = String::from_utf8_lossy(&got[interim_end..end]).to_ascii_lowercase();
    assert!(
        final_response.starts_with("http/1.1 200 ok\r\n"),
        "{final_response}"
    );

    // The connection is still in step: a second request gets its own 103, then its 200.
    client
        .write_all(b"GET /again HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    let second_interim = read_through(&mut client, &mut got, end, b"\r\n\r\n").await;
    assert!(
        String::from_utf8_lossy(&got[end..second_interim]).starts_with("HTTP/1.1 103 "),
        "{:?}",
        String::from_utf8_lossy(&got[end..])
    );
    upstream.release_one();
    read_through(&mut client, &mut got, second_interim, b"hello").await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn a_cached_route_passes_interim_responses_on_but_never_stores_them() {
    let upstream = InterimUpstream::start(EARLY_HINTS).await;
    let running = common::start_gatehouse(&config(upstream.addr, true)).await;
    let mut client = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    let request = b"GET /cached HTTP/1.1\r\nHost: example.test\r\n\r\n";

    client.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let interim_end = read_through(&mut client, &mut got, 0, b"\r\n\r\n").await;
    assert!(
        got.starts_with(b"HTTP/1.1 103 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    upstream.release_one();
    let miss_end = read_through(&mut client, &mut got, interim_end, b"hello").await;
    assert!(got[interim_end..].starts_with(b"HTTP/1.1 200 OK\r\n"));

    // Stored: the second request is a hit with no interim response, and the upstream is not
    // asked (no permit is given, so a request reaching it would never be answered).
    client.write_all(request).await.unwrap();
    let hit_end = read_through(&mut client, &mut got, miss_end, b"hello").await;
    let hit = String::from_utf8_lossy(&got[miss_end..hit_end]).to_ascii_lowercase();
    assert!(hit.starts_with("http/1.1 200 ok\r\n"), "{hit}");
    assert!(hit.contains("cache-status: gatehouse; hit"), "{hit}");
    assert!(!hit.contains("http/1.1 103"), "{hit}");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn http_1_0_clients_get_no_interim_responses() {
    let upstream = InterimUpstream::start(EARLY_HINTS).await;
    let running = common::start_gatehouse(&config(upstream.addr, false)).await;
    upstream.release_one();
    let answer = common::raw_exchange(
        running.listener_addrs[0],
        b"GET /old HTTP/1.0\r\nHost: example.test\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(!answer.contains(" 103 "), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    running.shutdown().await;
}

#[tokio::test]
async fn an_upstream_100_continue_is_not_repeated_to_the_client() {
    let upstream = InterimUpstream::start(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    let running = common::start_gatehouse(&config(upstream.addr, false)).await;
    upstream.release_one();
    let mut client = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    client
        .write_all(b"POST /orders HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_through(&mut client, &mut got, 0, b"hello").await;
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    running.shutdown().await;
}
