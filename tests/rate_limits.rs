//! Rate and concurrency limits (`[limit.NAME]`, nginx's `limit_req` and `limit_conn`) over real
//! loopback servers: refusals at once with Retry-After and the RateLimit fields, keys kept
//! apart, the burst spaced out to the rate, requests in flight per key, dry runs, state across
//! reloads, and the counts in /metrics and /status.
//!
//! Rates are slow (per minute) wherever a test counts admissions, so that no allowance comes
//! back while it runs.

mod common;

use bytes::Bytes;
use common::{Client, HeldUpstream, TestUpstream};
use gatehouse::app::Running;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn config(upstream: SocketAddr, limits: &str, route_limits: &str) -> String {
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
path_prefix = "/limited/"
upstream = "app"
limits = [{route_limits}]

[[route]]
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = ["{upstream}"]

{limits}
"#
    )
}

async fn start(upstream: SocketAddr, limits: &str, route_limits: &str) -> (Running, SocketAddr) {
    let running = common::start_gatehouse(&config(upstream, limits, route_limits)).await;
    let proxy = running.listener_addrs[0];
    (running, proxy)
}

fn get_with(path: &str, header: Option<(&str, &str)>) -> Request<Full<Bytes>> {
    let mut request = Request::get(path);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

async fn metrics(running: &Running) -> String {
    common::get(running.admin_addr.expect("admin"), "/metrics")
        .await
        .text()
}

fn outcome(metrics: &str, limit: &str, outcome: &str) -> f64 {
    common::metric_sample(
        metrics,
        "gatehouse_rate_limit_requests_total",
        &[("limit", limit), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn over_the_limit_is_refused_at_once_with_retry_after_and_the_ratelimit_fields() {
    let upstream = TestUpstream::named("app").await;
    let (running, proxy) = start(
        upstream.addr,
        "[limit.per_ip]\nrate = \"6/m\"\nburst = 2\nnodelay = true\n",
        "\"per_ip\"",
    )
    .await;
    let mut client = Client::connect(proxy).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        let reply = client.get("/limited/orders").await;
        answers.push((
            reply.status.as_u16(),
            reply.header("ratelimit").unwrap_or("-").to_owned(),
            reply.header("retry-after").unwrap_or("-").to_owned(),
        ));
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"per_ip\";q=6;w=60")
        );
    }
    // Three at once (the burst of two and one), then 429 until 10 s have passed.
    assert_eq!(
        answers,
        [
            (200, "\"per_ip\";r=2;t=10".to_owned(), "-".to_owned()),
            (200, "\"per_ip\";r=1;t=20".to_owned(), "-".to_owned()),
            (200, "\"per_ip\";r=0;t=30".to_owned(), "-".to_owned()),
            (429, "\"per_ip\";r=0;t=10".to_owned(), "10".to_owned()),
            (429, "\"per_ip\";r=0;t=10".to_owned(), "10".to_owned()),
        ]
    );
    assert_eq!(upstream.requests.lock().unwrap().len(), 3);
    // A route without limits is not limited and says nothing of limits.
    for _ in 0..5 {
        let reply = client.get("/other").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit"), None);
    }
    // HTTP/2 requests count against the same client address.
    let h2 = common::get_h2(proxy, "/limited/orders").await;
    assert_eq!(h2.status, StatusCode::TOO_MANY_REQUESTS);

    let exposition = metrics(&running).await;
    assert_eq!(outcome(&exposition, "per_ip", "allowed"), 3.0);
    assert_eq!(outcome(&exposition, "per_ip", "rejected"), 3.0);
    let status: serde_json::Value = serde_json::from_slice(
        &common::get(running.admin_addr.expect("admin"), "/status")
            .await
            .body,
    )
    .expect("/status is JSON");
    let limit = &status["limits"]["per_ip"];
    assert_eq!(limit["rejected"], 3, "{limit}");
    assert_eq!(limit["allowed"], 3, "{limit}");
    assert_eq!(limit["keys"], 1, "{limit}");
    assert_eq!(status["routes"][0]["limits"][0], "per_ip");
    running.shutdown().await;
}

#[tokio::test]
async fn keys_are_counted_apart_and_requests_without_a_key_are_not_limited() {
    let upstream = TestUpstream::named("app").await;
    let (running, proxy) = start(
        upstream.addr,
        "[limit.per_key]\nrate = \"1/m\"\nkey = \"header:X-Api-Key\"\n",
        "\"per_key\"",
    )
    .await;
    let mut client = Client::connect(proxy).await;
    let status = |reply: common::Reply| reply.status.as_u16();
    let a = Some(("x-api-key", "a"));
    let b = Some(("x-api-key", "b"));
    assert_eq!(status(client.send(get_with("/limited/x", a)).await), 200);
    assert_eq!(status(client.send(get_with("/limited/x", a)).await), 429);
    assert_eq!(status(client.send(get_with("/limited/x", b)).await), 200);
    assert_eq!(status(client.send(get_with("/limited/x", b)).await), 429);
    for _ in 0..4 {
        assert_eq!(status(client.send(get_with("/limited/x", None)).await), 200);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn without_nodelay_the_burst_is_spaced_out_to_the_rate_and_the_rest_refused() {
    let upstream = TestUpstream::named("app").await;
    // 10/s: one request per 100 ms; a burst of 2 waits 100 and 200 ms.
    let (running, proxy) = start(
        upstream.addr,
        "[limit.paced]\nrate = \"10/s\"\nburst = 2\n",
        "\"paced\"",
    )
    .await;
    let started = Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let reply = common::get(proxy, "/limited/x").await;
                (reply.status.as_u16(), started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("request task"));
    }
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 429]);
    // The last one admitted waited its turn: two intervals at least (a lower bound only).
    let slowest = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, elapsed)| *elapsed)
        .max()
        .expect("admitted requests");
    assert!(slowest >= Duration::from_millis(190), "{answers:?}");
    let exposition = metrics(&running).await;
    assert_eq!(outcome(&exposition, "paced", "allowed"), 1.0);
    assert_eq!(outcome(&exposition, "paced", "delayed"), 2.0);
    assert_eq!(outcome(&exposition, "paced", "rejected"), 1.0);
    running.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_lets_everything_through_and_counts_what_it_would_refuse() {
    let upstream = TestUpstream::named("app").await;
    let (running, proxy) = start(
        upstream.addr,
        "[limit.trial]\nrate = \"1/m\"\ndry_run = true\n",
        "\"trial\"",
    )
    .await;
    let mut client = Client::connect(proxy).await;
    for _ in 0..4 {
        let reply = client.get("/limited/x").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit"), None);
    }
    assert_eq!(upstream.requests.lock().unwrap().len(), 4);
    let exposition = metrics(&running).await;
    assert_eq!(outcome(&exposition, "trial", "dry_run_rejected"), 3.0);
    assert_eq!(outcome(&exposition, "trial", "rejected"), 0.0);
    running.shutdown().await;
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rate-limits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("gatehouse.toml")
}

#[tokio::test]
async fn a_reload_keeps_the_state_of_a_limit_it_leaves_alone() {
    let upstream = TestUpstream::named("app").await;
    let path = scratch_file("reload");
    let limit = "[limit.per_ip]\nrate = \"1/m\"\n";
    // The listener keeps its port across reloads only if the config names it.
    let port = common::unclaimed_port();
    let write = |limit: &str, extra_route: &str| {
        let text = config(upstream.addr, limit, "\"per_ip\"").replace(
            "127.0.0.1:0\"\n\n[[route]]",
            &format!("127.0.0.1:{port}\"\n\n[[route]]"),
        ) + extra_route;
        std::fs::write(&path, text).unwrap();
    };
    write(limit, "");
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    assert_eq!(common::get(proxy, "/limited/x").await.status, 200);
    assert_eq!(common::get(proxy, "/limited/x").await.status, 429);

    // Another route added: the limit is the same, so is its state.
    write(
        limit,
        "\n[[route]]\npath_prefix = \"/new/\"\nupstream = \"app\"\n",
    );
    let report = running.reloader.reload("test").await;
    assert!(report.ok && report.changed, "{:?}", report.errors);
    assert_eq!(common::get(proxy, "/limited/x").await.status, 429);

    // The limit itself changed: it starts afresh.
    write(
        "[limit.per_ip]\nrate = \"1/m\"\nburst = 1\nnodelay = true\n",
        "",
    );
    let report = running.reloader.reload("test").await;
    assert!(report.ok && report.changed, "{:?}", report.errors);
    assert_eq!(common::get(proxy, "/limited/x").await.status, 200);
    assert_eq!(common::get(proxy, "/limited/x").await.status, 200);
    assert_eq!(common::get(proxy, "/limited/x").await.status, 429);
    running.shutdown().await;
}

#[tokio::test]
async fn a_concurrency_limit_refuses_requests_past_the_ones_in_flight_until_they_end() {
    let upstream = HeldUpstream::start().await;
    let (running, proxy) = start(
        upstream.addr,
        "[limit.two_at_once]\nconcurrency = 2\n",
        "\"two_at_once\"",
    )
    .await;
    let first = tokio::spawn(common::get(proxy, "/limited/a"));
    let second = tokio::spawn(common::get(proxy, "/limited/b"));
    upstream.wait_arrival().await;
    upstream.wait_arrival().await;
    // Two in flight for this client: the third is refused at once, with no Retry-After (no
    // one can say when a place frees up) and no RateLimit fields (no quota over time).
    let third = common::get(proxy, "/limited/c").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.header("retry-after"), None);
    assert_eq!(third.header("ratelimit"), None);
    assert_eq!(upstream.arrivals(), 2);
    // Other routes are not limited.
    let other = tokio::spawn(common::get(proxy, "/other"));
    upstream.wait_arrival().await;
    upstream.release_one();
    upstream.release_one();
    upstream.release_one();
    for request in [first, second, other] {
        assert_eq!(request.await.expect("request task").status, StatusCode::OK);
    }
    // Their places are back once their responses ended.
    let fourth = tokio::spawn(common::get(proxy, "/limited/d"));
    upstream.wait_arrival().await;
    upstream.release_one();
    assert_eq!(fourth.await.expect("request task").status, StatusCode::OK);
    let exposition = metrics(&running).await;
    assert_eq!(
        outcome(&exposition, "two_at_once", "rejected_concurrency"),
        1.0
    );
    assert_eq!(outcome(&exposition, "two_at_once", "allowed"), 3.0);
    running.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_real_client_is_what_is_counted() {
    let upstream = TestUpstream::named("app").await;
    let text = config(
        upstream.addr,
        "[limit.per_ip]\nrate = \"1/m\"\n",
        "\"per_ip\"",
    )
    .replace(
        "bind = \"127.0.0.1:0\"\n\n[[route]]",
        "bind = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n[[route]]",
    );
    let running = common::start_gatehouse(&text).await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let from = |client: &'static str| get_with("/limited/x", Some(("x-forwarded-for", client)));
    assert_eq!(client.send(from("192.0.2.1")).await.status, 200);
    assert_eq!(client.send(from("192.0.2.1")).await.status, 429);
    // Another client behind the same balancer has its own allowance.
    assert_eq!(client.send(from("192.0.2.2")).await.status, 200);
    assert_eq!(client.send(from("192.0.2.2")).await.status, 429);
    running.shutdown().await;
}

/// Sends a GET on `stream` and returns what comes back before the connection is idle or
/// closed (empty when it was closed at once).
async fn exchange_on(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream
        .write_all(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(common::WAIT, stream.read(&mut buffer))
            .await
            .expect("an answer or a close within the test deadline");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"app") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_holds_at_most_max_connections_per_client_on_a_listener() {
    let upstream = TestUpstream::named("app").await;
    let text = config(upstream.addr, "", "").replace(
        "bind = \"127.0.0.1:0\"\n\n[[route]]",
        "bind = \"127.0.0.1:0\"\nmax_connections_per_client = 2\n\n[[route]]",
    );
    let running = common::start_gatehouse(&text).await;
    let proxy = running.listener_addrs[0];
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        assert!(exchange_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // Two open (idle, as a slowloris would keep them): a third is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(proxy).await.unwrap();
    assert_eq!(exchange_on(&mut third).await, "");
    let exposition = metrics(&running).await;
    let refused = common::metric_sample(
        &exposition,
        "gatehouse_connections_closed_total",
        &[("listener", "test"), ("reason", "client_limit")],
    );
    assert_eq!(refused, Some(1.0));
    // Once one of them closes, its place is free again.
    drop(held.pop());
    let deadline = Instant::now() + common::WAIT;
    loop {
        let mut again = tokio::net::TcpStream::connect(proxy).await.unwrap();
        if exchange_on(&mut again).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await;
}
