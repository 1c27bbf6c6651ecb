//! Consistent hashing through a running gatehouse, over real upstream servers on loopback:
//! a user stays on one server, users spread over all of them, a reload keeps the mapping and a
//! new server takes about its share, a down server's users move on and come back, a retry
//! walks on to the next server of the table, and bounded loads spread one hot key.

mod common;

use bytes::Bytes;
use common::{Client, HeldUpstream, KillableUpstream, TestUpstream, WAIT, metric_sample};
use gatehouse::app::Running;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// gatehouse with an admin listener and one upstream `app` hashing by `X-User` over `servers`
/// (TOML entries), with `extra` lines in the upstream's table.
fn hashed_config(servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
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
path_prefix = "/"
upstream = "app"

[upstream.app]
balance = "consistent_hash"
hash_key = "header:X-User"
servers = [{}]
{extra}
"#,
        list.join(", ")
    )
}

fn user(n: usize) -> String {
    format!("user-{n}")
}

/// GET `/` as `user` (no X-User when `None`); the answering server's name.
async fn server_for(client: &mut Client, user: Option<&str>) -> String {
    let mut request = Request::get("/");
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    let reply = client
        .send(request.body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{user:?}: {}", reply.text());
    reply.text()
}

/// The server each of `users` reaches, asked on one connection.
async fn mapping(proxy: SocketAddr, users: usize) -> Vec<String> {
    let mut client = Client::connect(proxy).await;
    let mut servers = Vec::with_capacity(users);
    for n in 0..users {
        servers.push(server_for(&mut client, Some(&user(n))).await);
    }
    servers
}

fn count_by_server(mapping: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for server in mapping {
        *counts.entry(server.as_str()).or_insert(0) += 1;
    }
    counts
}

async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let reply = common::get(admin, path).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}");
    reply.text()
}

fn hash_picks(metrics: &str, placement: &str) -> f64 {
    metric_sample(
        metrics,
        "gatehouse_upstream_hash_picks_total",
        &[("upstream", "app"), ("placement", placement)],
    )
    .unwrap_or(0.0)
}

async fn reload_to(running: &Running, text: &str) {
    let report = running
        .reloader
        .reload_text("test", Path::new("test.toml"), text)
        .await;
    assert!(report.ok && report.changed, "reload: {:?}", report.errors);
}

#[tokio::test]
async fn each_user_stays_on_one_server_and_users_spread_over_all() {
    const USERS: usize = 90;
    let upstreams = [
        TestUpstream::named("a").await,
        TestUpstream::named("b").await,
        TestUpstream::named("c").await,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    let running = common::start_gatehouse(&hashed_config(&addrs, "")).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");

    let first = mapping(proxy, USERS).await;
    // Asked again, on new connections and in another order: the same server every time.
    for n in (0..USERS).rev() {
        let mut client = Client::connect(proxy).await;
        for _ in 0..2 {
            assert_eq!(
                server_for(&mut client, Some(&user(n))).await,
                first[n],
                "{} moved",
                user(n)
            );
        }
    }
    // Each server holds about a third of the users, none a small sliver.
    let counts = count_by_server(&first);
    assert_eq!(counts.len(), 3, "every server has users: {counts:?}");
    assert!(counts.values().all(|&n| n >= 10), "{counts:?}");

    // No key: round robin, an exact share each.
    let mut client = Client::connect(proxy).await;
    let mut keyless = Vec::new();
    for _ in 0..30 {
        keyless.push(server_for(&mut client, None).await);
    }
    assert_eq!(
        count_by_server(&keyless).values().collect::<Vec<_>>(),
        [&10, &10, &10]
    );

    let metrics = admin_text(admin, "/metrics").await;
    assert_eq!(hash_picks(&metrics, "home"), (USERS * 3) as f64);
    assert_eq!(hash_picks(&metrics, "no_key"), 30.0);
    assert_eq!(hash_picks(&metrics, "next"), 0.0);
    let status: Value =
        serde_json::from_str(&admin_text(admin, "/status").await).expect("/status is JSON");
    let app = &status["upstreams"]["app"];
    assert_eq!(app["balance"], "consistent_hash", "{app}");
    assert_eq!(app["hash_key"], "header:x-user", "{app}");
    assert_eq!(app["hash_balance_factor"], 0.0, "{app}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_the_mapping_and_a_new_server_takes_about_its_share() {
    const USERS: usize = 200;
    let upstreams = [
        TestUpstream::named("a").await,
        TestUpstream::named("b").await,
        TestUpstream::named("c").await,
        TestUpstream::named("d").await,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    let running = common::start_gatehouse(&hashed_config(&addrs[..3], "")).await;
    let proxy = running.listener_addrs[0];
    let before = mapping(proxy, USERS).await;

    // A reload that keeps the upstream (other settings change, the servers listed in
    // another order): every user stays where it was.
    let reordered = [addrs[2], addrs[0], addrs[1]];
    reload_to(&running, &hashed_config(&reordered, "retries = 2")).await;
    assert_eq!(mapping(proxy, USERS).await, before);

    // A fourth server joins: about a quarter of the users move, nearly all of them to it
    // (Maglev moves a few between the others too).
    reload_to(&running, &hashed_config(&addrs, "retries = 2")).await;
    let after = mapping(proxy, USERS).await;
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(old, new)| old != new)
        .count();
    let to_d = after.iter().filter(|new| *new == "d").count();
    let expected = USERS as f64 / 4.0;
    assert!(
        (0.5 * expected..=1.6 * expected).contains(&(moved as f64)),
        "{moved} of {USERS} users moved, expected about {expected}"
    );
    assert!(
        moved - to_d <= USERS / 20,
        "{} users moved between servers that stayed: {before:?} -> {after:?}",
        moved - to_d
    );

    // And it leaves again: everyone is back where they started.
    reload_to(&running, &hashed_config(&addrs[..3], "")).await;
    assert_eq!(mapping(proxy, USERS).await, before);
    running.shutdown().await;
}

/// Waits until the health of server `index` of upstream `app` is `up`.
async fn wait_health(running: &Running, index: usize, up: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let snapshot = running.snapshot.load();
        if snapshot.upstreams["app"].servers[index].health.is_up() == up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server {index} never went up={up}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_down_servers_users_move_to_the_next_servers_and_come_back() {
    const USERS: usize = 60;
    let mut upstreams = [
        KillableUpstream::named("a").await,
        KillableUpstream::named("b").await,
        KillableUpstream::named("c").await,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    let health = "retries = 0\n\n[upstream.app.health]\ninterval = \"100ms\"\ntimeout = \"1s\"\nunhealthy_threshold = 1\nhealthy_threshold = 1";
    let running = common::start_gatehouse(&hashed_config(&addrs, health)).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");
    let before = mapping(proxy, USERS).await;
    let gone = "b";
    let theirs = before.iter().filter(|s| *s == gone).count();
    assert!(theirs > 0, "b has users: {before:?}");

    upstreams[1].kill().await;
    wait_health(&running, 1, false).await;
    let served_before = upstreams[1].arrivals().len();
    let next_before = hash_picks(&admin_text(admin, "/metrics").await, "next");
    let during = mapping(proxy, USERS).await;
    for (n, (old, now)) in before.iter().zip(&during).enumerate() {
        if old == gone {
            assert_ne!(now, gone, "{} still sent to the down server", user(n));
        } else {
            assert_eq!(now, old, "{} moved though its server is up", user(n));
        }
    }
    assert_eq!(
        hash_picks(&admin_text(admin, "/metrics").await, "next") - next_before,
        theirs as f64,
        "each of b's users counted as placed on a next server"
    );

    upstreams[1].restart();
    wait_health(&running, 1, true).await;
    assert_eq!(mapping(proxy, USERS).await, before, "b's users are back");
    let served_by_b = upstreams[1]
        .arrivals()
        .iter()
        .skip(served_before)
        .filter(|a| a.path != "/healthz")
        .count();
    assert_eq!(served_by_b, theirs, "b served exactly its own users again");
    running.shutdown().await;
}

#[tokio::test]
async fn a_retry_goes_to_the_next_server_of_the_table() {
    const USERS: usize = 60;
    let mut upstreams = [
        KillableUpstream::named("a").await,
        KillableUpstream::named("b").await,
        KillableUpstream::named("c").await,
    ];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    // No health checks and no breaker: only the failed connect tells, on every request.
    let running = common::start_gatehouse(&hashed_config(&addrs, "retries = 1")).await;
    let proxy = running.listener_addrs[0];
    let before = mapping(proxy, USERS).await;

    upstreams[0].kill().await;
    let first = mapping(proxy, USERS).await;
    // Retried the same way each time: the next server in the table is fixed by the key.
    assert_eq!(mapping(proxy, USERS).await, first);
    let mut retried = BTreeSet::new();
    for (n, (old, now)) in before.iter().zip(&first).enumerate() {
        if old == "a" {
            assert_ne!(now, "a", "{}", user(n));
            retried.insert(now.clone());
        } else {
            assert_eq!(now, old, "{} moved", user(n));
        }
    }
    assert!(!retried.is_empty(), "a had users: {before:?}");
    running.shutdown().await;
}

/// Sends `count` requests as one user, each once the one before reached a server (they stay
/// parked there, in flight), and returns how many of them each server holds.
async fn park_hot_user(
    proxy: SocketAddr,
    servers: &[HeldUpstream],
    count: usize,
) -> (Vec<usize>, Vec<tokio::task::JoinHandle<String>>) {
    let arrived_before: Vec<usize> = servers.iter().map(HeldUpstream::arrivals).collect();
    let held = || -> Vec<usize> {
        servers
            .iter()
            .zip(&arrived_before)
            .map(|(server, before)| server.arrivals() - before)
            .collect()
    };
    let mut parked = Vec::new();
    for sent in 1..=count {
        parked.push(tokio::spawn(async move {
            let mut client = Client::connect(proxy).await;
            server_for(&mut client, Some("hot")).await
        }));
        let deadline = Instant::now() + WAIT;
        while held().iter().sum::<usize>() < sent {
            assert!(Instant::now() < deadline, "request {sent} never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    (held(), parked)
}

async fn release_all(
    servers: &[HeldUpstream],
    held: &[usize],
    parked: Vec<tokio::task::JoinHandle<String>>,
) {
    for (server, &count) in servers.iter().zip(held) {
        for _ in 0..count {
            server.release_one();
        }
    }
    for request in parked {
        tokio::time::timeout(WAIT, request)
            .await
            .expect("answered in time")
            .expect("client task did not panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_loads_keep_a_hot_user_from_piling_onto_one_server() {
    const REQUESTS: usize = 6;
    let servers = [
        HeldUpstream::named("a").await,
        HeldUpstream::named("b").await,
        HeldUpstream::named("c").await,
    ];
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();

    // Unbounded: every request of the user waits on its one server.
    let running = common::start_gatehouse(&hashed_config(&addrs, "")).await;
    let (held, parked) = park_hot_user(running.listener_addrs[0], &servers, REQUESTS).await;
    assert_eq!(held.iter().max(), Some(&REQUESTS), "{held:?}");
    release_all(&servers, &held, parked).await;
    running.shutdown().await;

    // Bounded at 1.25: no server holds more than ceil(1.25 · 6 / 3) = 3.
    let running =
        common::start_gatehouse(&hashed_config(&addrs, "hash_balance_factor = 1.25")).await;
    let admin = running.admin_addr.expect("admin listener");
    let (held, parked) = park_hot_user(running.listener_addrs[0], &servers, REQUESTS).await;
    assert_eq!(held.iter().sum::<usize>(), REQUESTS);
    assert!(held.iter().all(|&n| n <= 3), "{held:?}");
    assert!(held.iter().filter(|&&n| n > 0).count() >= 2, "{held:?}");
    let metrics = admin_text(admin, "/metrics").await;
    assert_eq!(
        hash_picks(&metrics, "home") + hash_picks(&metrics, "over_cap"),
        REQUESTS as f64
    );
    assert!(hash_picks(&metrics, "over_cap") >= 1.0);
    release_all(&servers, &held, parked).await;
    running.shutdown().await;
}
