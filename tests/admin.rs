//! The admin listener over real HTTP: /healthz and /readyz, /metrics values after known traffic,
//! and /status describing listeners, routes and upstreams with their live numbers.

mod common;

use bytes::Bytes;
use common::{Client, HeldUpstream, TestUpstream, metric_sample, refused_addr};
use gatehouse::app::Running;
use http::StatusCode;
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Two live servers (weights 3 and 1) behind `/`, a refused one behind `/dead`, and a server
/// that holds requests until released behind `/held`.
struct Setup {
    running: Running,
    admin: SocketAddr,
    proxy: SocketAddr,
    a: TestUpstream,
    b: TestUpstream,
    dead: SocketAddr,
    held: HeldUpstream,
}

async fn setup() -> Setup {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let dead = refused_addr().await;
    let held = HeldUpstream::start().await;
    let config = format!(
        r#"
[log]
access = "off"

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
upstream = "app"

[[route]]
path_prefix = "/dead"
upstream = "dead"

[[route]]
name = "held-route"
path_prefix = "/held"
upstream = "held"

[upstream.app]
balance = "round_robin"
servers = [{{ addr = "{a}", weight = 3 }}, "{b}"]

[upstream.dead]
servers = ["{dead}"]
retries = 0

[upstream.held]
servers = ["{held}"]
"#,
        a = a.addr,
        b = b.addr,
        held = held.addr,
    );
    let running = common::start_gatehouse(&config).await;
    Setup {
        admin: running.admin_addr.expect("admin listener"),
        proxy: running.listener_addrs[0],
        running,
        a,
        b,
        dead,
        held,
    }
}

async fn metrics(admin: SocketAddr) -> String {
    let reply = common::get(admin, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.text()
}

async fn status(admin: SocketAddr) -> Value {
    let reply = common::get(admin, "/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    serde_json::from_slice(&reply.body).expect("/status is JSON")
}

/// Polls /metrics until `name{labels}` equals `want`; panics with the exposition otherwise.
async fn wait_metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let text = metrics(admin).await;
        let value = metric_sample(&text, name, labels);
        if value == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} = {value:?}, want {want}; /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sample(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics:\n{text}"))
}

/// The `in_flight` of `server` in upstream `upstream`, as /status reports it.
fn in_flight(status: &Value, upstream: &str, server: SocketAddr) -> u64 {
    status["upstreams"][upstream]["servers"]
        .as_array()
        .expect("servers array")
        .iter()
        .find(|s| s["addr"] == server.to_string())
        .unwrap_or_else(|| panic!("{server} not in /status: {status}"))["in_flight"]
        .as_u64()
        .expect("in_flight number")
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let setup = setup().await;
    let health = common::get(setup.admin, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "ok\n");
    let ready = common::get(setup.admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.text(), "ready\n");

    let unknown = common::get(setup.admin, "/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let mut client = Client::connect(setup.admin).await;
    let post = client
        .send(
            http::Request::post("/healthz")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn metrics_count_the_traffic_sent() {
    let setup = setup().await;
    const N: usize = 6;
    let mut client = Client::connect(setup.proxy).await;
    for i in 0..N {
        let reply = client.get(&format!("/items/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let failed = client.get("/dead/x").await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);

    let app = [("route", "*/"), ("upstream", "app")];
    wait_metric(
        setup.admin,
        "gatehouse_http_requests_total",
        &[app[0], app[1], ("code", "200")],
        N as f64,
    )
    .await;
    wait_metric(
        setup.admin,
        "gatehouse_http_requests_total",
        &[("route", "*/dead"), ("upstream", "dead"), ("code", "502")],
        1.0,
    )
    .await;

    let reply = common::get(setup.admin, "/metrics").await;
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    for (family, kind) in [
        ("gatehouse_http_requests_total", "counter"),
        ("gatehouse_http_request_duration_seconds", "histogram"),
        ("gatehouse_upstream_requests_total", "counter"),
        ("gatehouse_open_connections", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}")),
            "no {kind} {family} in /metrics:\n{text}"
        );
    }
    assert_eq!(
        metric_sample(
            &text,
            "gatehouse_http_requests_total",
            &[app[0], app[1], ("code", "502")]
        ),
        None,
        "no 502 on the app route"
    );
    assert_eq!(
        sample(&text, "gatehouse_http_request_duration_seconds_count", &app),
        N as f64
    );
    assert_eq!(
        sample(
            &text,
            "gatehouse_http_request_duration_seconds_bucket",
            &[app[0], app[1], ("le", "+Inf")]
        ),
        N as f64
    );

    // Round robin ignores weights: three each.
    let (a, b, dead) = (
        setup.a.addr.to_string(),
        setup.b.addr.to_string(),
        setup.dead.to_string(),
    );
    for server in [&a, &b] {
        assert_eq!(
            sample(
                &text,
                "gatehouse_upstream_requests_total",
                &[("upstream", "app"), ("server", server), ("outcome", "ok")]
            ),
            (N / 2) as f64,
            "server {server}"
        );
    }
    assert_eq!(setup.a.received().len() + setup.b.received().len(), N);
    assert_eq!(
        sample(
            &text,
            "gatehouse_upstream_requests_total",
            &[
                ("upstream", "dead"),
                ("server", &dead),
                ("outcome", "connect_error")
            ]
        ),
        1.0
    );

    // The keep-alive client is the one open connection on the listener, until it goes.
    assert_eq!(
        sample(&text, "gatehouse_open_connections", &[("listener", "test")]),
        1.0
    );
    drop(client);
    wait_metric(
        setup.admin,
        "gatehouse_open_connections",
        &[("listener", "test")],
        0.0,
    )
    .await;
}

#[tokio::test]
async fn status_lists_listeners_routes_and_upstreams_with_live_in_flight() {
    let setup = setup().await;
    let status_now = status(setup.admin).await;

    assert_eq!(status_now["ready"], true);
    let listeners = status_now["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0]["name"], "test");
    assert_eq!(listeners[0]["bind"], "127.0.0.1:0");

    let routes = status_now["routes"].as_array().expect("routes");
    let summary: Vec<(String, String, String)> = routes
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["path_prefix"].as_str().unwrap_or_default().to_owned(),
                r["upstream"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("*/", "/", "app"),
        ("*/dead", "/dead", "dead"),
        ("held-route", "/held", "held"),
    ];
    assert_eq!(
        summary,
        expected.map(|(n, p, u)| (n.to_owned(), p.to_owned(), u.to_owned())),
        "{status_now}"
    );

    let app = &status_now["upstreams"]["app"];
    assert_eq!(app["balance"], "round_robin");
    let servers = app["servers"].as_array().expect("servers");
    let described: Vec<(String, u64, u64)> = servers
        .iter()
        .map(|s| {
            (
                s["addr"].as_str().unwrap_or_default().to_owned(),
                s["weight"].as_u64().unwrap_or(0),
                s["in_flight"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            (setup.a.addr.to_string(), 3, 0),
            (setup.b.addr.to_string(), 1, 0)
        ]
    );
    let upstream_names: Vec<&String> = status_now["upstreams"]
        .as_object()
        .expect("upstreams object")
        .keys()
        .collect();
    assert_eq!(upstream_names, ["app", "dead", "held"]);
    assert_eq!(status_now["upstreams"]["dead"]["retries"], 0);

    // A request held by its upstream shows as in flight on that server, and only while held.
    let in_flight_request = tokio::spawn(common::get(setup.proxy, "/held/1"));
    setup.held.wait_arrival().await;
    let during = status(setup.admin).await;
    assert_eq!(in_flight(&during, "held", setup.held.addr), 1, "{during}");
    assert_eq!(in_flight(&during, "app", setup.a.addr), 0);

    setup.held.release_one();
    let reply = timeout(common::WAIT, in_flight_request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let deadline = Instant::now() + common::WAIT;
    loop {
        let after = status(setup.admin).await;
        if in_flight(&after, "held", setup.held.addr) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "in_flight stuck: {after}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(setup.running);
}
