//! Upstream failures as the client sees them: refused, reset, garbage, ambiguous framing and
//! silence each get a fast, short 502/504 from gatehouse, counted in the metrics; connect
//! failures are retried on another server for idempotent methods only, up to `retries`.

mod common;

use bytes::Bytes;
use common::{
    Client, HeldUpstream, Reply, TestUpstream, metric_sample, read_until_closed, refused_addr,
    send_raw, simple_config,
};
use gatehouse::app::Running;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// A failure must be answered well before any timeout that could be involved (1 s by default
/// for connecting, 5 s for the response in these configs).
const FAST: Duration = Duration::from_millis(750);

/// An upstream speaking raw TCP: for each connection, reads one request head and hands the
/// socket to `act`. Returns its address and the number of request heads it has read.
async fn raw_upstream<F, Fut>(act: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&heads);
    let act = Arc::new(act);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let act = Arc::clone(&act);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if common::read_head(&mut stream).await.is_none() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                act(stream).await;
            });
        }
    });
    (addr, heads)
}

/// Writes `bytes` to the socket and closes it with a TCP reset (SO_LINGER 0).
async fn write_then_reset(mut stream: TcpStream, bytes: &'static [u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Writes `bytes` to the socket and closes it normally.
async fn write_then_close(mut stream: TcpStream, bytes: &'static [u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
}

async fn start(servers: &[SocketAddr], upstream_extra: &str) -> Running {
    common::start_gatehouse(&simple_config(servers, upstream_extra)).await
}

/// gatehouse (`response_timeout` 5 s) in front of a `raw_upstream` acting with `act`; returns
/// it with the upstream's address and count of request heads.
async fn start_raw<F, Fut>(act: F) -> (Running, SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (addr, heads) = raw_upstream(act).await;
    let running = start(&[addr], "response_timeout = \"5s\"").await;
    (running, addr, heads)
}

/// As `start_raw`, then asserts that a GET is answered by gatehouse itself with a fast 502.
async fn assert_502_from_raw<F, Fut>(act: F) -> (Running, SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (running, addr, heads) = start_raw(act).await;
    let (reply, elapsed) = timed_get(&running, "/").await;
    assert_local_error(&reply, elapsed, StatusCode::BAD_GATEWAY);
    (running, addr, heads)
}

/// A GET on a new connection, with the time it took.
async fn timed_get(running: &Running, path: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = common::get(running.listener_addrs[0], path).await;
    (reply, started.elapsed())
}

/// Asserts a gatehouse-made error answer: `status`, within `FAST`, a short plain-text body
/// naming the status, and nothing from an upstream.
fn assert_local_error(reply: &Reply, elapsed: Duration, status: StatusCode) {
    assert_eq!(reply.status, status, "body: {:?}", reply.text());
    assert!(
        elapsed < FAST,
        "{status} took {elapsed:?}, should be answered within {FAST:?}"
    );
    let text = reply.text();
    assert!(
        text.starts_with(&format!("{} ", status.as_u16())) && text.len() < 200,
        "expected a short text body starting with the status, got {text:?}"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "content-type: {:?}",
        reply.header("content-type")
    );
}

/// Sends `request` on `client` and returns the status, asserting that a 502 is gatehouse's own
/// (see `assert_local_error`).
async fn send_checking_502(client: &mut Client, request: Request<Full<Bytes>>) -> StatusCode {
    let started = Instant::now();
    let reply = client.send(request).await;
    if reply.status == StatusCode::BAD_GATEWAY {
        assert_local_error(&reply, started.elapsed(), StatusCode::BAD_GATEWAY);
    }
    reply.status
}

/// How many of `statuses` are 502.
fn bad_gateways(statuses: &[StatusCode]) -> usize {
    statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_GATEWAY)
        .count()
}

fn upstream_outcome(running: &Running, server: SocketAddr, outcome: &str) -> f64 {
    let server = server.to_string();
    metric_sample(
        &running.metrics.render(),
        "gatehouse_upstream_requests_total",
        &[
            ("upstream", "app"),
            ("server", &server),
            ("outcome", outcome),
        ],
    )
    .unwrap_or(0.0)
}

fn requests_with_code(running: &Running, code: &str) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_http_requests_total",
        &[("upstream", "app"), ("code", code)],
    )
    .unwrap_or(0.0)
}

fn retries_total(running: &Running) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_upstream_retries_total",
        &[("upstream", "app")],
    )
    .unwrap_or(0.0)
}

/// Polls `condition` every 10 ms until it holds or `common::WAIT` passes.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + common::WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until exactly one request with status `code` is counted in the metrics.
async fn wait_counted_once(running: &Running, code: &str) {
    eventually(&format!("the {code} to be counted"), || {
        requests_with_code(running, code) == 1.0
    })
    .await;
}

#[tokio::test]
async fn refused_connection_is_a_fast_502_counted_as_connect_error() {
    let dead = refused_addr().await;
    let running = start(&[dead], "retries = 0").await;

    let (reply, elapsed) = timed_get(&running, "/x").await;
    assert_local_error(&reply, elapsed, StatusCode::BAD_GATEWAY);
    assert!(reply.header("x-request-id").is_some());

    assert_eq!(upstream_outcome(&running, dead, "connect_error"), 1.0);
    wait_counted_once(&running, "502").await;
}

#[tokio::test]
async fn only_server_refusing_with_retries_left_is_502_not_503() {
    // The default `retries = 2`, but there is no other server to retry on: the reference
    // config promises "refused -> 502 (after retries)".
    let dead = refused_addr().await;
    let running = start(&[dead], "").await;

    let (reply, elapsed) = timed_get(&running, "/").await;
    assert_local_error(&reply, elapsed, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream_outcome(&running, dead, "connect_error"), 1.0);
    assert_eq!(
        retries_total(&running),
        0.0,
        "no retry can have happened with a single server"
    );
}

#[tokio::test]
async fn reset_before_the_response_head_is_502_counted_as_error() {
    let (running, addr, heads) =
        assert_502_from_raw(|s| write_then_reset(s, b"HTTP/1.1 200 OK\r\nContent-Le")).await;
    assert_eq!(heads.load(Ordering::SeqCst), 1, "sent once, not retried");
    assert_eq!(upstream_outcome(&running, addr, "error"), 1.0);
}

#[tokio::test]
async fn reset_in_the_response_body_cuts_the_client_response_short() {
    // The head has gone to the client already, so no 502 is possible: the client must see the
    // response end short of its Content-Length, not a complete-looking response.
    let (running, _, _) = start_raw(|s| {
        write_then_reset(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        )
    })
    .await;

    let started = Instant::now();
    let mut client = send_raw(
        running.listener_addrs[0],
        b"GET / HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await;
    // Panics unless the client connection is closed.
    let got = read_until_closed(&mut client, common::WAIT).await;
    assert!(started.elapsed() < FAST, "took {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "head: {head:?}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 100"),
        "head: {head:?}"
    );
    assert!(body.len() < 100, "the body must be cut short, got {body:?}");
}

#[tokio::test]
async fn garbage_instead_of_http_is_502() {
    let (running, addr, _) = assert_502_from_raw(|s| {
        write_then_close(s, b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n")
    })
    .await;
    assert_eq!(upstream_outcome(&running, addr, "error"), 1.0);
}

#[tokio::test]
async fn response_with_content_length_and_transfer_encoding_is_502() {
    // RFC 9112 §6.3: such a message "ought to be handled as an error" — a proxy that passes
    // it on (with the upstream's Content-Length) invites response splitting.
    let (_running, _, _) = assert_502_from_raw(|s| {
        write_then_close(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        )
    })
    .await;
}

#[tokio::test]
async fn response_with_two_different_content_lengths_is_502() {
    let (running, addr, _) = assert_502_from_raw(|s| {
        write_then_close(
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!",
        )
    })
    .await;
    assert_eq!(upstream_outcome(&running, addr, "error"), 1.0);
}

#[tokio::test]
async fn silent_upstream_is_504_at_response_timeout() {
    // The upstream parks every request and is never told to release it.
    let upstream = HeldUpstream::start().await;
    let running = start(&[upstream.addr], "response_timeout = \"300ms\"").await;

    let started = Instant::now();
    let reply = common::get(running.listener_addrs[0], "/").await;
    let elapsed = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before response_timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(300) + FAST,
        "504 should come right at response_timeout, took {elapsed:?}"
    );
    assert!(reply.text().starts_with("504 ") && reply.body.len() < 200);
    assert_eq!(upstream.arrivals(), 1, "sent once, not retried");
    assert_eq!(upstream_outcome(&running, upstream.addr, "timeout"), 1.0);
    wait_counted_once(&running, "504").await;
}

#[tokio::test]
async fn a_reused_upstream_connection_times_out_from_its_own_request() {
    // One connection: the first request is answered after 200 ms, the second never. Each
    // request's response_timeout counts from that request, on the same connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if common::read_head(&mut stream).await.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                // The second request is read and never answered.
                let _ = common::read_head(&mut stream).await;
                let _ = common::read_head(&mut stream).await;
            });
        }
    });
    let running = start(&[addr], "response_timeout = \"300ms\"\nretries = 0").await;
    let mut client = common::Client::connect(running.listener_addrs[0]).await;
    assert_eq!(client.get("/first").await.status, StatusCode::OK);

    let started = Instant::now();
    let reply = client.get("/second").await;
    let elapsed = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "timed out from the first request's start: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_millis(300) + FAST, "{elapsed:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the pooled connection was reused"
    );
}

#[tokio::test]
async fn an_upstream_that_never_stops_sending_interim_responses_is_cut_at_the_response_timeout() {
    // An upstream that answers with 102 Processing as fast as it can and never with a final
    // response: the reads of the exchange use up the task's budget on every turn, and the
    // timeout must still come.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if common::read_head(&mut stream).await.is_none() {
                    return;
                }
                let flood = b"HTTP/1.1 102 Processing\r\n\r\n".repeat(64);
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until {
                    if stream.write_all(&flood).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let running = start(&[addr], "response_timeout = \"300ms\"\nretries = 0").await;
    let started = Instant::now();
    let mut client = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let found = timeout(Duration::from_millis(300) + FAST, async {
        loop {
            use tokio::io::AsyncReadExt;
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    // Only the tail can hold the final head; keep the buffer small.
                    if seen.windows(12).any(|w| w == b"HTTP/1.1 504") {
                        return true;
                    }
                    let keep = seen.len().saturating_sub(16);
                    seen.drain(..keep);
                }
            }
        }
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "no 504 within the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_server_at_max_connections_is_an_immediate_503_with_retry_after() {
    // One server allowed one request at a time; the first request is parked upstream.
    let upstream = HeldUpstream::start().await;
    let running = start(&[upstream.addr], "max_connections = 1").await;
    let addr = running.listener_addrs[0];
    let first = tokio::spawn(async move { common::get(addr, "/first").await });
    upstream.wait_arrival().await;
    assert_eq!(upstream.arrivals(), 1);

    let (reply, elapsed) = timed_get(&running, "/second").await;
    assert_local_error(&reply, elapsed, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(
        upstream.arrivals(),
        1,
        "the upstream never saw the second request"
    );

    upstream.release_one();
    let first = timeout(common::WAIT, first).await.unwrap().unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "released");
    // The slot is free again.
    let again = tokio::spawn(async move { common::get(addr, "/third").await });
    upstream.wait_arrival().await;
    assert_eq!(upstream.arrivals(), 2);
    upstream.release_one();
    assert_eq!(
        timeout(common::WAIT, again).await.unwrap().unwrap().status,
        StatusCode::OK
    );
    wait_counted_once(&running, "503").await;
}

#[tokio::test]
async fn get_is_retried_on_the_live_server_after_a_connect_failure() {
    let dead = refused_addr().await;
    let live = TestUpstream::named("live").await;
    // Without ejection, so that every request meets the dead server (tests/resilience.rs
    // covers ejection after refused connects).
    let running = start(&[dead, live.addr], "retries = 2\neject_after_refused = 0").await;

    let mut client = Client::connect(running.listener_addrs[0]).await;
    const N: usize = 6;
    for i in 0..N {
        let started = Instant::now();
        let reply = client.get(&format!("/item/{i}")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "live");
        assert!(
            started.elapsed() < FAST,
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    let received = live.received();
    assert_eq!(received.len(), N);
    for recorded in &received {
        assert_forwarding_fields_once(&recorded.headers);
    }

    // Round robin moves on at every pick, a retry included, so after the first request every
    // request starts on the dead server: N - 1 or N retries.
    let retries = retries_total(&running);
    let connect_errors = upstream_outcome(&running, dead, "connect_error");
    assert!(
        retries >= (N - 1) as f64 && retries <= N as f64,
        "retries_total = {retries}"
    );
    assert_eq!(
        connect_errors, retries,
        "each retry follows one connect error"
    );
}

#[tokio::test]
async fn post_is_not_retried_after_a_connect_failure() {
    let dead = refused_addr().await;
    let live = TestUpstream::named("live").await;
    let running = start(&[dead, live.addr], "retries = 2").await;

    let mut statuses = Vec::new();
    for i in 0..4 {
        // A new connection each time: a 502 leaves the request body unread, which may close
        // the client connection.
        let mut client = Client::connect(running.listener_addrs[0]).await;
        let request = Request::post(format!("/orders/{i}"))
            .body(Full::new(Bytes::from_static(b"{\"qty\":1}")))
            .unwrap();
        statuses.push(send_checking_502(&mut client, request).await);
    }
    // One pick per POST: the two servers alternate, so the dead one answers every other time.
    assert_eq!(bad_gateways(&statuses), 2, "statuses: {statuses:?}");
    assert!(
        statuses.windows(2).all(|w| w[0] != w[1]),
        "alternating statuses expected: {statuses:?}"
    );
    let received = live.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.method == http::Method::POST));
    assert_eq!(retries_total(&running), 0.0);
    assert_eq!(upstream_outcome(&running, dead, "connect_error"), 2.0);
}

#[tokio::test]
async fn retries_zero_disables_retrying_idempotent_requests() {
    let dead = refused_addr().await;
    let live = TestUpstream::named("live").await;
    let running = start(&[dead, live.addr], "retries = 0").await;

    let mut client = Client::connect(running.listener_addrs[0]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get("/").await.status);
    }
    assert_eq!(bad_gateways(&statuses), 2, "statuses: {statuses:?}");
    assert!(statuses.windows(2).all(|w| w[0] != w[1]), "{statuses:?}");
    assert_eq!(live.received().len(), 2);
    assert_eq!(retries_total(&running), 0.0);
}

#[tokio::test]
async fn retries_bound_the_number_of_attempts() {
    // [dead, dead, live] with retries = 1: a request starting on the first dead server tries
    // the second one and gives up with 502; any other start reaches the live server. Round
    // robin moves at every pick, so six GETs in a row give exactly three 502s.
    let dead1 = refused_addr().await;
    let dead2 = refused_addr().await;
    let live = TestUpstream::named("live").await;
    // Without ejection, so that the dead servers keep their turns.
    let running = start(
        &[dead1, dead2, live.addr],
        "retries = 1\neject_after_refused = 0",
    )
    .await;

    let mut client = Client::connect(running.listener_addrs[0]).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        statuses.push(send_checking_502(&mut client, request).await);
    }
    assert_eq!(bad_gateways(&statuses), 3, "statuses: {statuses:?}");
    assert_eq!(live.received().len(), 3);
    // Every 502 used its one retry; at most one success needed one too.
    let retries = retries_total(&running);
    assert!((3.0..=4.0).contains(&retries), "retries_total = {retries}");
    let connect_errors = upstream_outcome(&running, dead1, "connect_error")
        + upstream_outcome(&running, dead2, "connect_error");
    assert_eq!(connect_errors, 3.0 + retries, "attempts on dead servers");
}

/// Two PUTs with `body` to a server that resets every connection once it has read a request
/// head and a live one, on new client connections: round robin makes at least one of the two
/// start on the resetting server. Returns the replies, the live server and the heads the
/// resetting one read.
async fn puts_through_a_resetting_server(body: Bytes) -> (Vec<Reply>, TestUpstream, usize) {
    let (breaking, heads) = raw_upstream(|s| write_then_reset(s, b"")).await;
    let live = TestUpstream::named("live").await;
    let running = start(&[breaking, live.addr], "retries = 2").await;
    let mut replies = Vec::new();
    for i in 0..2 {
        let mut client = Client::connect(running.listener_addrs[0]).await;
        let request = Request::put(format!("/item/{i}"))
            .header("host", "retry.test")
            .body(Full::new(body.clone()))
            .unwrap();
        replies.push(client.send(request).await);
    }
    let heads = heads.load(Ordering::SeqCst);
    (replies, live, heads)
}

#[tokio::test]
async fn an_idempotent_request_with_a_small_body_is_retried_after_a_broken_connection() {
    let body = Bytes::from_static(b"{\"status\":\"ready\"}");
    let (replies, live, heads) = puts_through_a_resetting_server(body.clone()).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "live");
    }
    assert!(heads >= 1, "the resetting server was tried");
    let received = live.received();
    assert_eq!(received.len(), 2);
    for recorded in received {
        assert_eq!(recorded.body, body, "the body is sent again whole");
        assert_forwarding_fields_once(&recorded.headers);
    }
}

/// A request sent again carries gatehouse's forwarding fields once, as the first try did.
fn assert_forwarding_fields_once(headers: &http::HeaderMap) {
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
    ] {
        assert_eq!(
            headers.get_all(name).iter().count(),
            1,
            "one {name} line: {headers:?}"
        );
    }
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["via"], "1.1 gatehouse");
}

#[tokio::test]
async fn a_body_too_large_to_read_first_is_not_sent_twice() {
    let body = Bytes::from(vec![b'p'; 64 * 1024]);
    let (replies, live, heads) = puts_through_a_resetting_server(body.clone()).await;
    assert!(heads >= 1, "the resetting server was tried");
    let failed = replies
        .iter()
        .filter(|r| r.status == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(
        failed, heads,
        "each request that met the reset failed, unretried"
    );
    for recorded in live.received() {
        assert_eq!(recorded.body.len(), body.len(), "only whole bodies arrive");
    }
}

#[tokio::test]
async fn the_retry_budget_keeps_an_outage_from_multiplying_the_load() {
    // Two servers that refuse every connect (not ejected, so that each request meets them):
    // every request would retry on the other. A budget of 20% and no floor allows one retry
    // per five requests.
    let (dead1, dead2) = (refused_addr().await, refused_addr().await);
    let running = start(
        &[dead1, dead2],
        "retries = 1\nretry_budget = 0.2\nretry_budget_min = 0\neject_after_refused = 0",
    )
    .await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.status, StatusCode::BAD_GATEWAY);
    }
    // The 5th and the 10th requests had their retry; the other eight were answered with their
    // first server's failure.
    assert_eq!(retries_total(&running), 2.0);
    let refused = metric_sample(
        &running.metrics.render(),
        "gatehouse_upstream_retries_refused_total",
        &[("upstream", "app")],
    );
    assert_eq!(refused, Some(8.0));
    let connect_errors = upstream_outcome(&running, dead1, "connect_error")
        + upstream_outcome(&running, dead2, "connect_error");
    assert_eq!(connect_errors, 12.0, "ten first attempts and two retries");
    let status = gatehouse::admin::status_json(running.admin_state());
    let app = &status["upstreams"]["app"];
    assert_eq!(
        (&app["retries_total"], &app["retries_refused"]),
        (&serde_json::json!(2), &serde_json::json!(8)),
        "{app}"
    );
}
