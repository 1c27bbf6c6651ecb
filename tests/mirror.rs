//! Request mirroring (`[route.mirror]`) over real loopback servers: the shadow gets the request
//! as it goes upstream (method, URI, headers, body, chunked or not); the client's body streams
//! to the main upstream without waiting for the copy; bodies over the limit are skipped; a
//! dead or slow shadow changes neither the client's status nor its latency; copies past
//! `max_in_flight` are dropped; each outcome is counted and shown in /status.

mod common;

use bytes::Bytes;
use common::{Client, HeldUpstream, TestUpstream, WAIT};
use gatehouse::app::Running;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn config(main: SocketAddr, shadow: SocketAddr, mirror_extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access = "off"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
name = "api"
path_prefix = "/api/"
strip_prefix = true
upstream = "main"

[route.request_headers]
set = {{ x-added = "by-route" }}

[route.mirror]
upstream = "shadow"
{mirror_extra}

[upstream.main]
servers = ["{main}"]

[upstream.shadow]
servers = ["{shadow}"]
connect_timeout = "500ms"
retries = 0
"#
    )
}

async fn start(main: SocketAddr, shadow: SocketAddr, mirror_extra: &str) -> Running {
    common::start_gatehouse(&config(main, shadow, mirror_extra)).await
}

async fn mirror_count(running: &Running, outcome: &str) -> f64 {
    let text = common::get(running.admin_addr.expect("admin"), "/metrics")
        .await
        .text();
    common::metric_sample(
        &text,
        "gatehouse_mirror_requests_total",
        &[("route", "api"), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// Waits (at most `WAIT`) until the mirror has counted `count` copies with `outcome`.
async fn wait_for_count(running: &Running, outcome: &str, count: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = mirror_count(running, outcome).await;
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mirror {outcome} is {now}, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most `WAIT`) until `upstream` has received `count` requests.
async fn wait_for_requests(upstream: &TestUpstream, count: usize) -> Vec<common::Recorded> {
    let deadline = Instant::now() + WAIT;
    loop {
        let received = upstream.received();
        if received.len() >= count {
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "{} received {} requests, expected {count}",
            upstream.name,
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_shadow_gets_the_request_as_it_goes_upstream() {
    let main = TestUpstream::named("main").await;
    let shadow = TestUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "").await;
    let proxy = running.listener_addrs[0];
    let request = Request::put("/api/orders/7?draft=1")
        .header("host", "shop.example")
        .header("x-test", "yes")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"qty\": 3}")))
        .unwrap();
    let reply = Client::connect(proxy).await.send(request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        "main",
        "the client gets the main upstream's answer"
    );

    let sent = &wait_for_requests(&main, 1).await[0];
    let copy = &wait_for_requests(&shadow, 1).await[0];
    assert_eq!(copy.method, http::Method::PUT);
    assert_eq!(copy.uri, "/orders/7?draft=1", "the URI as sent upstream");
    assert_eq!(copy.uri, sent.uri);
    assert_eq!(&copy.body[..], b"{\"qty\": 3}");
    assert_eq!(copy.body, sent.body);
    for name in [
        "host",
        "x-test",
        "content-type",
        "x-added",
        "x-forwarded-for",
        "x-request-id",
        "via",
        "content-length",
    ] {
        assert_eq!(
            copy.headers.get(name),
            sent.headers.get(name),
            "{name} as the main upstream got it"
        );
    }
    assert_eq!(copy.headers["host"], "shop.example", "Host is kept");
    assert_eq!(copy.headers["x-added"], "by-route");
    wait_for_count(&running, "sent", 1.0).await;

    let status: serde_json::Value = serde_json::from_slice(
        &common::get(running.admin_addr.unwrap(), "/status")
            .await
            .body,
    )
    .unwrap();
    let mirror = &status["routes"][0]["mirror"];
    assert_eq!(mirror["upstream"], "shadow", "{mirror}");
    assert_eq!(mirror["sent"], 1);
    assert_eq!(mirror["max_body_bytes"], 65536);
    assert_eq!(mirror["max_in_flight"], 64);
    assert_eq!(mirror["percent"], 100);
    running.shutdown().await;
}

/// A main upstream that tells when the first bytes of a request body reach it, then reads
/// the rest and answers with what it got.
async fn announcing_upstream() -> (TestUpstream, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = TestUpstream::with_handler(
        "main",
        Arc::new(move |request: Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            Box::pin(async move {
                let mut body = request.into_body();
                let mut got = Vec::new();
                let mut first = true;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        got.extend_from_slice(data);
                        if first && !data.is_empty() {
                            first = false;
                            let _ = tx.send(());
                        }
                    }
                }
                Response::new(Full::new(Bytes::from(got)))
            })
        }),
    )
    .await;
    (upstream, rx)
}

#[tokio::test]
async fn a_chunked_body_streams_to_the_main_upstream_and_reaches_the_shadow_whole() {
    let (main, mut first_bytes) = announcing_upstream().await;
    let shadow = TestUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "").await;
    let proxy = running.listener_addrs[0];
    let mut stream = common::send_raw(
        proxy,
        b"POST /api/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n",
    )
    .await;
    // The first chunk reaches the main upstream while the client still holds the rest: the
    // copy never holds the body back.
    tokio::time::timeout(WAIT, first_bytes.recv())
        .await
        .expect("the first chunk is forwarded before the body ends");
    assert!(
        shadow.received().is_empty(),
        "the copy waits for the whole body"
    );
    stream
        .write_all(b"7\r\n, world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let answer = common::read_until_closed(&mut stream, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello, world"), "{answer}");
    let copy = &wait_for_requests(&shadow, 1).await[0];
    assert_eq!(&copy.body[..], b"hello, world");
    assert_eq!(copy.uri, "/upload");
    assert_eq!(copy.headers["content-length"], "12");
    assert!(!copy.headers.contains_key("transfer-encoding"));
    wait_for_count(&running, "sent", 1.0).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_not_mirrored_and_is_counted_as_skipped() {
    let main = TestUpstream::named("main").await;
    let shadow = TestUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "max_body_bytes = \"1KiB\"").await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    // Too large by its Content-Length.
    let big = Request::post("/api/big")
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    assert_eq!(client.send(big).await.status, 200);
    wait_for_count(&running, "skipped", 1.0).await;
    // Too large as it streams (chunked, no length given).
    let mut stream = common::send_raw(
        proxy,
        format!(
            "POST /api/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n800\r\n{}\r\n800\r\n{}\r\n0\r\n\r\n",
            "a".repeat(0x800),
            "b".repeat(0x800)
        )
        .as_bytes(),
    )
    .await;
    let answer = common::read_until_closed(&mut stream, WAIT).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    wait_for_count(&running, "skipped", 2.0).await;
    // One within the limit still goes.
    let small = Request::post("/api/small")
        .body(Full::new(Bytes::from(vec![b'y'; 1024])))
        .unwrap();
    assert_eq!(client.send(small).await.status, 200);
    wait_for_count(&running, "sent", 1.0).await;
    let received = wait_for_requests(&main, 3).await;
    assert_eq!(
        received[0].body.len(),
        4096,
        "the main upstream got every body"
    );
    assert_eq!(received[1].body.len(), 0x1000);
    let copies = shadow.received();
    assert_eq!(copies.len(), 1, "only the small body was mirrored");
    assert_eq!(copies[0].uri, "/small");
    assert_eq!(copies[0].body.len(), 1024);
    running.shutdown().await;
}

#[tokio::test]
async fn a_dead_shadow_changes_nothing_for_the_client() {
    let main = TestUpstream::named("main").await;
    let dead = common::refused_addr().await;
    let running = start(main.addr, dead, "").await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    for i in 0..5 {
        let request = Request::post(format!("/api/orders/{i}"))
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let reply = client.send(request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "main");
    }
    wait_for_count(&running, "failed", 5.0).await;
    assert_eq!(mirror_count(&running, "sent").await, 0.0);
    running.shutdown().await;
}

#[tokio::test]
async fn a_slow_shadow_does_not_slow_the_client() {
    let main = TestUpstream::named("main").await;
    let slow = TestUpstream::with_handler(
        "slow",
        Arc::new(|_request| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Response::new(Full::new(Bytes::from_static(b"late")))
            })
        }),
    )
    .await;
    let running = start(main.addr, slow.addr, "").await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let started = Instant::now();
    for _ in 0..3 {
        let request = Request::post("/api/orders")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let reply = client.send(request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "main");
    }
    let took = started.elapsed();
    // Three answers well within one of the shadow's two-second delays.
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    // The copies are still out; they count as sent once the shadow answers.
    assert_eq!(mirror_count(&running, "sent").await, 0.0);
    wait_for_count(&running, "sent", 3.0).await;
    running.shutdown().await;
}

#[tokio::test]
async fn copies_past_max_in_flight_are_dropped_and_counted() {
    let main = TestUpstream::named("main").await;
    let shadow = HeldUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "max_in_flight = 1").await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    assert_eq!(client.get("/api/one").await.status, 200);
    // The first copy is parked at the shadow, holding the only place.
    shadow.wait_arrival().await;
    for path in ["/api/two", "/api/three"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, 200, "the client is served all the same");
    }
    wait_for_count(&running, "dropped", 2.0).await;
    assert_eq!(shadow.arrivals(), 1);
    // Its place given back, the next copy goes.
    shadow.release_one();
    wait_for_count(&running, "sent", 1.0).await;
    shadow.release_one();
    assert_eq!(client.get("/api/four").await.status, 200);
    wait_for_count(&running, "sent", 2.0).await;
    assert_eq!(shadow.arrivals(), 2);
    assert_eq!(mirror_count(&running, "dropped").await, 2.0);
    running.shutdown().await;
}

async fn mirror_status(running: &Running) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_slice(
        &common::get(running.admin_addr.unwrap(), "/status")
            .await
            .body,
    )
    .unwrap();
    status["routes"][0]["mirror"].clone()
}

#[tokio::test]
async fn percent_mirrors_that_share_of_requests() {
    let main = TestUpstream::named("main").await;
    let shadow = TestUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "percent = 25").await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let n = 400;
    for _ in 0..n {
        assert_eq!(client.get("/api/x").await.status, 200);
    }
    // A copy takes its place before its request is forwarded: once every client has its
    // answer and no copy is outstanding, every copy is counted.
    let deadline = Instant::now() + WAIT;
    while mirror_status(&running).await["in_flight"] != 0 {
        assert!(Instant::now() < deadline, "copies still outstanding");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = mirror_status(&running).await["sent"].as_u64().unwrap() as f64;
    let (mean, sigma) = (n as f64 * 0.25, (n as f64 * 0.25 * 0.75).sqrt());
    assert!(
        (sent - mean).abs() <= 6.0 * sigma,
        "{sent} of {n} mirrored at 25%"
    );
    assert_eq!(shadow.received().len() as f64, sent);
    assert_eq!(mirror_count(&running, "failed").await, 0.0);
    running.shutdown().await;
}

#[tokio::test]
async fn an_http2_request_is_mirrored_with_its_body() {
    let main = TestUpstream::named("main").await;
    let shadow = TestUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "").await;
    let proxy = running.listener_addrs[0];
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    for (i, body) in ["first body", "second, longer body"]
        .into_iter()
        .enumerate()
    {
        let request = Request::post(format!("http://{proxy}/api/h2/{i}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .expect("h2 reply in time")
            .expect("h2 response");
        assert_eq!(response.status(), 200);
        let text = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], b"main");
    }
    wait_for_count(&running, "sent", 2.0).await;
    let mut copies = wait_for_requests(&shadow, 2).await;
    copies.sort_by_key(|c| c.uri.to_string());
    assert_eq!(copies[0].uri, "/h2/0");
    assert_eq!(&copies[0].body[..], b"first body");
    assert_eq!(&copies[1].body[..], b"second, longer body");
    assert_eq!(mirror_count(&running, "skipped").await, 0.0);
    running.shutdown().await;
}

#[tokio::test]
async fn a_body_longer_than_what_is_read_ahead_is_mirrored_whole() {
    let main = TestUpstream::named("main").await;
    let shadow = TestUpstream::named("shadow").await;
    let running = start(main.addr, shadow.addr, "").await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    // 60 KiB: past the 16 KiB read before forwarding, within the mirror's 64 KiB.
    let body: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    let request = Request::post("/api/large")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    assert_eq!(client.send(request).await.status, 200);
    wait_for_count(&running, "sent", 1.0).await;
    let copy = &wait_for_requests(&shadow, 1).await[0];
    assert_eq!(copy.body.len(), body.len());
    assert!(copy.body == body, "the copy's bytes are the client's");
    assert_eq!(wait_for_requests(&main, 1).await[0].body, body);
    running.shutdown().await;
}
