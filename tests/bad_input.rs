//! Malformed and oversized client requests, sent as raw bytes: each is answered 4xx by
//! gatehouse itself and never reaches the upstream, and clients that stall mid-head are cut off
//! at `header_read_timeout` without holding up anyone else.

mod common;

use common::{TestUpstream, raw_exchange, read_until_closed, send_raw, simple_config};
use gatehouse::app::Running;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const MAX_BODY: usize = 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);

async fn start() -> (Running, TestUpstream) {
    let upstream = TestUpstream::named("app").await;
    let config = format!(
        "{}
[limits]
max_header_bytes = \"8KiB\"
max_body_bytes = \"1KiB\"
header_read_timeout = \"500ms\"
",
        simple_config(&[upstream.addr], "")
    );
    (common::start_gatehouse(&config).await, upstream)
}

/// The status line of a raw response.
fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn assert_status(response: &str, code: u16) {
    assert!(
        status_line(response).starts_with(&format!("HTTP/1.1 {code} ")),
        "expected {code}, got {response:?}"
    );
}

/// The upstream neither saw a connection nor recorded a request.
fn assert_upstream_untouched(upstream: &TestUpstream) {
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        0,
        "the upstream must not be contacted"
    );
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
}

/// Starts gatehouse, sends `request` raw and asserts that gatehouse answers `code` itself,
/// never contacting the upstream.
async fn assert_refused(request: &[u8], code: u16) {
    let (running, upstream) = start().await;
    let response = raw_exchange(running.listener_addrs[0], request).await;
    assert_status(&response, code);
    assert_upstream_untouched(&upstream);
}

/// Asserts that a connection waiting on its head was closed at `header_read_timeout`.
fn assert_cut_at_header_read_timeout(closed_after: Duration) {
    assert!(
        closed_after >= HEADER_READ_TIMEOUT - Duration::from_millis(50),
        "closed too early: {closed_after:?}"
    );
    assert!(
        closed_after < HEADER_READ_TIMEOUT + Duration::from_secs(1),
        "closed too late: {closed_after:?}"
    );
}

#[tokio::test]
async fn request_head_over_max_header_bytes_is_431() {
    let big = "a".repeat(20 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n");
    assert_refused(request.as_bytes(), 431).await;
}

#[tokio::test]
async fn request_head_under_max_header_bytes_is_forwarded() {
    let (running, upstream) = start().await;
    let big = "b".repeat(6 * 1024);
    let request =
        format!("GET /fits HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(running.listener_addrs[0], request.as_bytes()).await;
    assert_status(&response, 200);
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["x-big"], big.as_str());
}

#[tokio::test]
async fn content_length_over_max_body_bytes_is_413_before_reaching_upstream() {
    let (running, upstream) = start().await;
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        MAX_BODY + 1
    );
    let started = Instant::now();
    let response = raw_exchange(running.listener_addrs[0], request.as_bytes()).await;
    assert_status(&response, 413);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        body.starts_with("413 ") && body.len() < 200,
        "body: {body:?}"
    );
    assert_upstream_untouched(&upstream);
}

#[tokio::test]
async fn body_of_exactly_max_body_bytes_is_forwarded() {
    let (running, upstream) = start().await;
    let body = "x".repeat(MAX_BODY);
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {MAX_BODY}\r\nConnection: close\r\n\r\n{body}"
    );
    let response = raw_exchange(running.listener_addrs[0], request.as_bytes()).await;
    assert_status(&response, 200);
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body.len(), MAX_BODY);
}

#[tokio::test]
async fn chunked_body_growing_past_max_body_bytes_is_413() {
    let (running, upstream) = start().await;
    let chunk = "y".repeat(512);
    let mut request = String::from(
        "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..3 {
        request.push_str(&format!("200\r\n{chunk}\r\n"));
    }
    request.push_str("0\r\n\r\n");
    let response = raw_exchange(running.listener_addrs[0], request.as_bytes()).await;
    assert_status(&response, 413);
    // The head may have been streamed on, but never a body past the limit.
    for recorded in upstream.received() {
        assert!(
            recorded.body.len() <= MAX_BODY,
            "the upstream got {} body bytes",
            recorded.body.len()
        );
    }
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    assert_refused(b"THIS IS NOT A REQUEST LINE\r\nHost: test\r\n\r\n", 400).await;
}

/// Content-Length with Transfer-Encoding is the classic smuggling form: gatehouse reads the
/// head itself and refuses it (RFC 9112 §6.1, as haproxy does), contacting no upstream and
/// leaving nothing on the connection for a smuggled second request.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_not_forwarded() {
    let (running, upstream) = start().await;
    let response = raw_exchange(
        running.listener_addrs[0],
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await;
    // raw_exchange returns only once gatehouse closed the connection.
    assert_status(&response, 400);
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response:?}");
    assert_upstream_untouched(&upstream);
}

#[tokio::test]
async fn chunk_data_longer_than_its_size_is_400_before_any_upstream_is_contacted() {
    // The body fits the pre-read buffer, so it is checked whole before a server is chosen.
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        400,
    )
    .await;
}

#[tokio::test]
async fn a_long_body_that_turns_bad_midway_closes_its_upstream_connection() {
    let upstream = TestUpstream::named("app").await;
    let config = format!(
        "{}\n[limits]\nmax_body_bytes = \"1MiB\"\n",
        simple_config(&[upstream.addr], "")
    );
    let running = common::start_gatehouse(&config).await;
    let chunk = "z".repeat(4096);
    let mut request = String::from(
        "POST /long HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..8 {
        request.push_str(&format!("1000\r\n{chunk}\r\n"));
    }
    request.push_str("5\r\ntoo long by far\r\n0\r\n\r\n");
    let response = raw_exchange(running.listener_addrs[0], request.as_bytes()).await;
    assert_status(&response, 400);
    // The connection that carried the broken body is never used again.
    let after = common::get(running.listener_addrs[0], "/after").await;
    assert_eq!(after.status, 200);
    // The upstream may have seen the long request's head and part of its body (how much
    // depends on how fast the bad chunk is read), never its end.
    let received = upstream.received();
    let uris: Vec<_> = received.iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(uris.last().map(String::as_str), Some("/after"), "{uris:?}");
    if uris.len() == 2 {
        assert_eq!(uris[0], "/long");
        assert!(
            received[0].body.len() < 8 * 4096,
            "{}",
            received[0].body.len()
        );
    } else {
        assert_eq!(uris.len(), 1, "{uris:?}");
    }
    // A connection that carried part of the long request is not the next request's.
    if uris.len() == 2 {
        assert_eq!(
            upstream.connections.load(Ordering::SeqCst),
            2,
            "a new upstream connection for the next request"
        );
    }
}

#[tokio::test]
async fn two_different_content_lengths_are_400_and_not_forwarded() {
    assert_refused(
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\
          Connection: close\r\n\r\nhello!",
        400,
    )
    .await;
}

/// What a byte-counting upstream saw on one connection.
#[derive(Debug)]
enum UpstreamEvent {
    Accepted(SocketAddr),
    /// The result of the first read: the byte count, 0 when closed without sending anything.
    FirstRead(SocketAddr, usize),
}

async fn next(events: &mut mpsc::UnboundedReceiver<UpstreamEvent>) -> UpstreamEvent {
    timeout(common::WAIT, events.recv())
        .await
        .expect("upstream event in time")
        .expect("upstream running")
}

#[tokio::test]
async fn invalid_chunk_size_is_400_and_not_forwarded() {
    // The head is valid, so gatehouse may open an upstream connection before it meets the bad
    // chunk; what matters is that not one byte of the request goes out on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (events_tx, mut events) = mpsc::unbounded_channel::<UpstreamEvent>();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = events_tx.send(UpstreamEvent::Accepted(peer));
            let events_tx = events_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let _ = events_tx.send(UpstreamEvent::FirstRead(peer, n));
            });
        }
    });
    let config = format!(
        "{}\n[limits]\nmax_body_bytes = \"1KiB\"\n",
        simple_config(&[upstream_addr], "response_timeout = \"2s\"")
    );
    let running = common::start_gatehouse(&config).await;

    let response = raw_exchange(
        running.listener_addrs[0],
        b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          zz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_status(&response, 400);

    // Connections are accepted in order: once a sentinel connection made now is accepted,
    // every connection gatehouse opened for the request has been seen.
    let sentinel = TcpStream::connect(upstream_addr).await.unwrap();
    let sentinel_addr = sentinel.local_addr().unwrap();
    let mut from_gatehouse = Vec::new();
    let mut first_reads = Vec::new();
    loop {
        match next(&mut events).await {
            UpstreamEvent::Accepted(peer) if peer == sentinel_addr => break,
            UpstreamEvent::Accepted(peer) => from_gatehouse.push(peer),
            UpstreamEvent::FirstRead(peer, n) => first_reads.push((peer, n)),
        }
    }
    drop(sentinel);
    while first_reads.len() < from_gatehouse.len() {
        if let UpstreamEvent::FirstRead(peer, n) = next(&mut events).await
            && peer != sentinel_addr
        {
            first_reads.push((peer, n));
        }
    }
    for (peer, n) in first_reads {
        assert_eq!(
            n, 0,
            "upstream connection from {peer} carried {n} bytes of the request"
        );
    }
}

#[tokio::test]
async fn http11_request_without_host_is_400() {
    assert_refused(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400).await;
}

#[tokio::test]
async fn stalled_request_head_is_cut_at_header_read_timeout_while_others_are_served() {
    let (running, upstream) = start().await;
    let proxy = running.listener_addrs[0];

    let mut stalled = send_raw(proxy, b"GET /stalled HTTP/1.1\r\nHost: test\r\nX-Half: ").await;
    let stalled_at = Instant::now();

    // Meanwhile another client is served as usual.
    let reply = common::get(proxy, "/other").await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let served_after = stalled_at.elapsed();
    assert!(
        served_after < HEADER_READ_TIMEOUT - Duration::from_millis(100),
        "the other client waited {served_after:?}"
    );
    let mut probe = [0u8; 64];
    match stalled.try_read(&mut probe) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("stalled connection ended before header_read_timeout: {other:?}"),
    }

    read_until_closed(&mut stalled, Duration::from_secs(3)).await;
    assert_cut_at_header_read_timeout(stalled_at.elapsed());
    let paths: Vec<String> = upstream
        .received()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/other"]);
}

#[tokio::test]
async fn silent_connection_is_cut_at_header_read_timeout() {
    // A client that connects and sends nothing has not sent its head in time either
    // (slowloris with zero bytes); idle_timeout is the default 60 s, far beyond this test.
    let (running, upstream) = start().await;
    let mut silent = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    let connected_at = Instant::now();
    read_until_closed(&mut silent, Duration::from_secs(3)).await;
    assert_cut_at_header_read_timeout(connected_at.elapsed());
    assert_upstream_untouched(&upstream);
}

/// An upstream that answers every request head at once (chunked, never ending), before any
/// of the request body arrives: a streaming exchange (gRPC bidi, a chunked upload with
/// progress).
async fn answers_before_the_body() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if common::read_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nack\r\n",
                )
                .await;
                // Holds the exchange open until the test ends.
                let _ = stream.read(&mut [0u8; 64]).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_request_body_still_streaming_is_not_held_back_until_it_ends() {
    let upstream = answers_before_the_body().await;
    let running = common::start_gatehouse(&simple_config(&[upstream], "")).await;
    // The first chunk of a body that goes on once the client has seen the answer.
    let mut client = send_raw(
        running.listener_addrs[0],
        b"POST /stream HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    timeout(common::WAIT, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap_or(0);
            assert!(n > 0, "closed before an answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the upstream's answer arrives while the body is still open");
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn expect_continue_is_not_granted_before_a_server_takes_the_request() {
    let dead = common::refused_addr().await;
    let running = common::start_gatehouse(&simple_config(&[dead], "retries = 0")).await;
    let mut client = send_raw(
        running.listener_addrs[0],
        b"PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let mut buf = [0u8; 1024];
    let n = timeout(common::WAIT, client.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 502 "), "{first:?}");
}
