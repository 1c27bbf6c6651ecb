//! DNS service discovery over real sockets: gatehouse's resolver asks a DNS server on loopback
//! for an upstream's name, and servers on 127.0.0.1, .2 and .3 (one port) answer for the
//! addresses it gets. Addresses join and leave under keep-alive load without a failed request;
//! a failing or emptied name keeps the last good set; kept addresses keep their state; a name
//! that does not resolve at start leaves its upstream empty until it does; without `[resolver]`
//! the system configuration and /etc/hosts answer; a reload resolves new names at once and may
//! change the name servers; an upstream holds at most 64 addresses.

mod common;

use bytes::Bytes;
use common::dns::TestDns;
use common::{Client, TestUpstream, WAIT, metric_sample, start_gatehouse};
use gatehouse::app::Running;
use http::{Response, StatusCode};
use http_body_util::Full;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NAME: &str = "orders.test";

fn config(dns: SocketAddr, port: u16, extra: &str) -> String {
    format!(
        r#"
[admin]
bind = ""

[log]
access = "off"

[resolver]
nameservers = ["{dns}"]
timeout = "500ms"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
upstream = "orders"

[upstream.orders]
servers = ["{NAME}:{port}"]
dns_refresh = "100ms"
{extra}
"#
    )
}

/// Three backends on one port, at 127.0.0.1, 127.0.0.2 and 127.0.0.3, each answering its name.
async fn three_backends() -> (u16, Vec<TestUpstream>) {
    let first = TestUpstream::named("b1").await;
    let port = first.addr.port();
    let mut backends = vec![first];
    for i in 2..=3u8 {
        let bind = SocketAddr::from(([127, 0, 0, i], port));
        backends.push(TestUpstream::named_at(&format!("b{i}"), bind).await);
    }
    (port, backends)
}

fn servers_in_force(running: &Running) -> BTreeSet<String> {
    running.snapshot.load().upstreams["orders"]
        .servers
        .iter()
        .map(|s| s.addr.to_string())
        .collect()
}

fn addrs(port: u16, hosts: &[u8]) -> BTreeSet<String> {
    hosts
        .iter()
        .map(|h| format!("127.0.0.{h}:{port}"))
        .collect()
}

async fn wait_for_servers(running: &Running, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + WAIT;
    while servers_in_force(running) != *expected {
        assert!(
            Instant::now() < deadline,
            "servers in force {:?}, expected {expected:?}",
            servers_in_force(running)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn dns_count(running: &Running, result: &str) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_dns_resolutions_total",
        &[("upstream", "orders"), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Keep-alive clients requesting `/` until stopped; each reply's status and body are counted.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<(u16, String), usize>>>,
}

impl Load {
    fn start(proxy: SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let mut client = Client::connect(proxy).await;
                    let mut seen = BTreeMap::new();
                    while !stop.load(Ordering::Relaxed) {
                        let reply = client.get("/").await;
                        *seen
                            .entry((reply.status.as_u16(), reply.text()))
                            .or_insert(0) += 1;
                    }
                    seen
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> BTreeMap<(u16, String), usize> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = BTreeMap::new();
        for task in self.tasks {
            for (key, n) in task.await.unwrap() {
                *total.entry(key).or_insert(0) += n;
            }
        }
        total
    }
}

/// Waits until `backend` has answered `more` requests beyond what it had.
async fn wait_for_requests(backend: &TestUpstream, more: usize) {
    let start = backend.received().len();
    let deadline = Instant::now() + WAIT;
    while backend.received().len() < start + more {
        assert!(Instant::now() < deadline, "{} got no traffic", backend.name);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_join_and_leave_under_load_without_a_failed_request() {
    let dns = TestDns::start().await;
    let (port, backends) = three_backends().await;
    dns.set(NAME, &["127.0.0.1"]);
    let running = start_gatehouse(&config(dns.addr, port, "")).await;
    assert_eq!(servers_in_force(&running), addrs(port, &[1]));
    let load = Load::start(running.listener_addrs[0], 4);
    wait_for_requests(&backends[0], 20).await;

    // Two addresses join: both get traffic.
    dns.set(NAME, &["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    wait_for_servers(&running, &addrs(port, &[1, 2, 3])).await;
    wait_for_requests(&backends[1], 20).await;
    wait_for_requests(&backends[2], 20).await;

    // One leaves: it gets nothing once the snapshot without it is in force (a request already
    // on its way finishes there).
    dns.set(NAME, &["127.0.0.2", "127.0.0.3"]);
    wait_for_servers(&running, &addrs(port, &[2, 3])).await;
    wait_for_requests(&backends[1], 20).await;
    let left_with = backends[0].received().len();
    wait_for_requests(&backends[2], 50).await;
    assert!(
        backends[0].received().len() <= left_with + 4,
        "a removed address kept getting requests"
    );

    // The set turns over completely.
    dns.set(NAME, &["127.0.0.1"]);
    wait_for_servers(&running, &addrs(port, &[1])).await;
    wait_for_requests(&backends[0], 20).await;

    let seen = load.finish().await;
    let failed: usize = seen
        .iter()
        .filter(|((status, _), _)| *status != 200)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 0, "failed requests: {seen:?}");
    for name in ["b1", "b2", "b3"] {
        assert!(
            seen.contains_key(&(200, name.to_owned())),
            "{name} never answered: {seen:?}"
        );
    }
    assert!(dns_count(&running, "success") >= 4.0);
    running.shutdown().await;
}

#[tokio::test]
async fn a_failing_or_emptied_name_keeps_the_last_good_set() {
    let dns = TestDns::start().await;
    let (port, backends) = three_backends().await;
    dns.set(NAME, &["127.0.0.1", "127.0.0.2"]);
    let text = config(dns.addr, port, "")
        .replace("[admin]\nbind = \"\"", "[admin]\nbind = \"127.0.0.1:0\"");
    let running = start_gatehouse(&text).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");
    assert_eq!(servers_in_force(&running), addrs(port, &[1, 2]));
    let dns_status = || async move {
        let reply = common::get(admin, "/status").await;
        let status: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        status["upstreams"]["orders"]["dns"][NAME].clone()
    };
    assert_eq!(
        dns_status().await,
        serde_json::json!({ "addresses": ["127.0.0.1", "127.0.0.2"], "failing": false })
    );

    // SERVFAIL: failures are counted, the set stays, both servers still serve.
    dns.fail(true);
    let failures = dns_count(&running, "failure");
    let deadline = Instant::now() + WAIT;
    while dns_count(&running, "failure") < failures + 3.0 {
        assert!(Instant::now() < deadline, "failures were not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(servers_in_force(&running), addrs(port, &[1, 2]));
    let mut client = Client::connect(proxy).await;
    let mut answered = BTreeSet::new();
    for _ in 0..10 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        answered.insert(reply.text());
    }
    assert_eq!(answered, BTreeSet::from(["b1".to_owned(), "b2".to_owned()]));
    assert_eq!(
        dns_status().await,
        serde_json::json!({ "addresses": ["127.0.0.1", "127.0.0.2"], "failing": true })
    );

    // The name disappears (NXDOMAIN): the same.
    dns.fail(false);
    dns.set(NAME, &[]);
    let failures = dns_count(&running, "failure");
    let deadline = Instant::now() + WAIT;
    while dns_count(&running, "failure") < failures + 3.0 {
        assert!(
            Instant::now() < deadline,
            "an empty answer was not a failure"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(servers_in_force(&running), addrs(port, &[1, 2]));

    // Working answers are followed again.
    dns.set(NAME, &["127.0.0.3"]);
    wait_for_servers(&running, &addrs(port, &[3])).await;
    assert_eq!(client.get("/").await.text(), "b3");
    drop(backends);
    running.shutdown().await;
}

#[tokio::test]
async fn kept_addresses_keep_their_state_when_the_set_changes() {
    let dns = TestDns::start().await;
    let first = TestUpstream::named("b1").await;
    let port = first.addr.port();
    // b2 fails its health checks, so it is down; b3 is fine.
    let sick = TestUpstream::with_responder_at(
        "b2",
        SocketAddr::from(([127, 0, 0, 2], port)),
        Arc::new(|request: &common::Recorded| {
            let status = if request.uri.path() == "/healthz" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(b"b2")))
                .unwrap()
        }),
    )
    .await;
    let third = TestUpstream::named_at("b3", SocketAddr::from(([127, 0, 0, 3], port))).await;
    dns.set(NAME, &["127.0.0.1", "127.0.0.2"]);
    let health = r#"
[upstream.orders.health]
path = "/healthz"
interval = "200ms"
timeout = "1s"
unhealthy_threshold = 1
healthy_threshold = 2
"#;
    let running = start_gatehouse(&config(dns.addr, port, health)).await;
    let proxy = running.listener_addrs[0];
    let sick_addr = format!("127.0.0.2:{port}");
    let sick_up = || {
        metric_sample(
            &running.metrics.render(),
            "gatehouse_upstream_server_up",
            &[("upstream", "orders"), ("server", &sick_addr)],
        )
    };
    let deadline = Instant::now() + WAIT;
    while sick_up() != Some(0.0) {
        assert!(Instant::now() < deadline, "b2 never went down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state_of = |addr: &str| {
        running.snapshot.load().upstreams["orders"]
            .servers
            .iter()
            .find(|s| &*s.addr == addr)
            .cloned()
    };
    let b1_before = state_of(&format!("127.0.0.1:{port}")).expect("b1 in force");
    let b2_before = state_of(&sick_addr).expect("b2 in force");

    let mut client = Client::connect(proxy).await;
    assert_eq!(client.get("/").await.text(), "b1");
    let served_by_sick = || {
        sick.received()
            .iter()
            .filter(|r| r.uri.path() != "/healthz")
            .count()
    };
    let sick_served = served_by_sick();

    dns.set(NAME, &["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    wait_for_servers(&running, &addrs(port, &[1, 2, 3])).await;

    // The same long-lived state (health, breaker, pool), not fresh copies: b2 is still down.
    let b1_after = state_of(&format!("127.0.0.1:{port}")).expect("b1 kept");
    let b2_after = state_of(&sick_addr).expect("b2 kept");
    assert!(Arc::ptr_eq(&b1_before, &b1_after));
    assert!(Arc::ptr_eq(&b2_before, &b2_after));
    assert_eq!(sick_up(), Some(0.0));
    let mut answered = BTreeMap::new();
    for _ in 0..20 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        *answered.entry(reply.text()).or_insert(0) += 1;
    }
    assert_eq!(answered.keys().cloned().collect::<Vec<_>>(), ["b1", "b3"]);
    assert_eq!(
        served_by_sick(),
        sick_served,
        "the down server got requests"
    );

    // b2 leaves: its health checks stop with it (once nothing holds its state).
    drop((b1_before, b1_after, b2_before, b2_after));
    dns.set(NAME, &["127.0.0.1", "127.0.0.3"]);
    wait_for_servers(&running, &addrs(port, &[1, 3])).await;
    let checks = || {
        sick.received()
            .iter()
            .filter(|r| r.uri.path() == "/healthz")
            .count()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let before = checks();
        // Three check intervals without a check.
        tokio::time::sleep(Duration::from_millis(600)).await;
        if checks() == before {
            break;
        }
        assert!(Instant::now() < deadline, "b2's health checks went on");
    }
    drop(third);
    running.shutdown().await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_at_start_fills_in_when_it_does() {
    let dns = TestDns::start().await;
    let backend = TestUpstream::named("b1").await;
    let text = config(dns.addr, backend.addr.port(), "");
    // `check` does not resolve: the config is valid whatever DNS says now.
    gatehouse::config::load_str(Path::new("test.toml"), &text).expect("valid config");
    let running = start_gatehouse(&text).await;
    assert!(servers_in_force(&running).is_empty());
    let mut client = Client::connect(running.listener_addrs[0]).await;
    assert_eq!(
        client.get("/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    dns.set(NAME, &["127.0.0.1"]);
    wait_for_servers(&running, &addrs(backend.addr.port(), &[1])).await;
    assert_eq!(client.get("/").await.text(), "b1");
    assert!(dns.answered() > 0);
    running.shutdown().await;
}

#[test]
fn resolver_and_refresh_settings_are_checked_with_their_place() {
    let text = r#"
[resolver]
nameservers = ["dns.example"]
timeout = "0s"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
upstream = "orders"

[upstream.orders]
servers = ["orders.test:8000"]
dns_refresh = "10ms"
"#;
    let errors = gatehouse::config::load_str(Path::new("dns.toml"), text)
        .expect_err("invalid settings")
        .to_string();
    for expected in [
        "dns.toml:3:16: resolver.nameservers[0]",
        "dns.toml:4:11: resolver.timeout",
        "dns.toml:15:15: upstream.orders.dns_refresh: must be at least 100ms",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in:\n{errors}");
    }
}

#[tokio::test]
async fn without_a_resolver_section_the_system_resolver_and_hosts_file_answer() {
    // `localhost` comes from /etc/hosts through the system configuration (no [resolver]).
    let backend = TestUpstream::named("b1").await;
    let text = common::simple_config(&[], "").replace(
        "servers = []",
        &format!("servers = [\"localhost:{}\"]", backend.addr.port()),
    );
    let running = start_gatehouse(&text).await;
    let in_force: BTreeSet<String> = running.snapshot.load().upstreams["app"]
        .servers
        .iter()
        .map(|s| s.addr.to_string())
        .collect();
    assert!(
        in_force.contains(&backend.addr.to_string()),
        "localhost resolved to {in_force:?}"
    );
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for _ in 0..4 {
        assert_eq!(client.get("/").await.status, StatusCode::OK);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_reload_resolves_new_names_at_once_and_can_change_the_name_servers() {
    let first_dns = TestDns::start().await;
    let second_dns = TestDns::start().await;
    let (port, backends) = three_backends().await;
    first_dns.set(NAME, &["127.0.0.1"]);
    second_dns.set(NAME, &["127.0.0.2"]);
    // Start with the upstream given by address, then reload to the name.
    let by_address = config(first_dns.addr, port, "").replace(
        &format!("\"{NAME}:{port}\""),
        &format!("\"127.0.0.3:{port}\""),
    );
    let running = start_gatehouse(&by_address).await;
    assert_eq!(servers_in_force(&running), addrs(port, &[3]));

    let report = running
        .reloader
        .reload_text(
            "test",
            Path::new("test.toml"),
            &config(first_dns.addr, port, ""),
        )
        .await;
    assert!(report.ok, "{:?}", report.errors);
    // Resolved during the reload, not at the next refresh.
    assert_eq!(servers_in_force(&running), addrs(port, &[1]));

    // Other name servers: the next refresh asks them.
    let report = running
        .reloader
        .reload_text(
            "test",
            Path::new("test.toml"),
            &config(second_dns.addr, port, ""),
        )
        .await;
    assert!(report.ok, "{:?}", report.errors);
    wait_for_servers(&running, &addrs(port, &[2])).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    assert_eq!(client.get("/").await.text(), "b2");
    drop(backends);
    running.shutdown().await;
}

#[tokio::test]
async fn a_name_with_more_addresses_than_an_upstream_holds_is_cut_at_64() {
    let dns = TestDns::start().await;
    let many: Vec<String> = (1..=70).map(|i| format!("127.0.1.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    dns.set(NAME, &many);
    let running = start_gatehouse(&config(dns.addr, 8000, "")).await;
    assert_eq!(servers_in_force(&running).len(), 64);
    running.shutdown().await;
}
