//! Traffic splits (`[[route.split]]`, `split_by`) and `[[route.pick_upstream]]` over real
//! loopback servers: weights within a binomial bound, sticky keys on one side across a
//! reload, picks by header and cookie before the split, the fallback draw for requests
//! without the key, the chosen upstream in metrics and /status, the cache kept apart per
//! side, and bad splits reported at their file:line:column.

mod common;

use bytes::Bytes;
use common::{Client, TestUpstream};
use gatehouse::app::Running;
use http::Request;
use http_body_util::Full;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn config(v1: SocketAddr, v2: SocketAddr, route: &str) -> String {
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
name = "orders"
path_prefix = "/"
{route}

[upstream.v1]
servers = ["{v1}"]

[upstream.v2]
servers = ["{v2}"]
"#
    )
}

async fn start(route: &str) -> (Running, SocketAddr, TestUpstream, TestUpstream) {
    let v1 = TestUpstream::named("v1").await;
    let v2 = TestUpstream::named("v2").await;
    let running = common::start_gatehouse(&config(v1.addr, v2.addr, route)).await;
    let proxy = running.listener_addrs[0];
    (running, proxy, v1, v2)
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

async fn metrics(running: &Running) -> String {
    common::get(running.admin_addr.expect("admin"), "/metrics")
        .await
        .text()
}

/// Whether `count` of `n` draws at probability `p` lies within 6 standard deviations of the
/// mean: a fair draw falls outside about once in 500 million runs.
fn within_six_sigma(count: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= 6.0 * sigma
}

#[tokio::test]
async fn weights_are_kept_over_many_requests_and_counted_by_upstream() {
    let route = r#"
[[route.split]]
upstream = "v1"
weight = 80

[[route.split]]
upstream = "v2"
weight = 20
"#;
    let (running, proxy, _v1, _v2) = start(route).await;
    let mut client = Client::connect(proxy).await;
    let n = 2000;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let reply = client.get("/orders").await;
        assert_eq!(reply.status, 200);
        *seen.entry(reply.text()).or_default() += 1;
    }
    let v2 = seen.get("v2").copied().unwrap_or(0);
    assert_eq!(seen.get("v1").copied().unwrap_or(0) + v2, n, "{seen:?}");
    assert!(within_six_sigma(v2, n, 0.2), "{v2} of {n} on v2 at 20%");

    let text = metrics(&running).await;
    let split = |upstream| {
        common::metric_sample(
            &text,
            "gatehouse_split_requests_total",
            &[("route", "orders"), ("upstream", upstream)],
        )
    };
    assert_eq!(split("v2"), Some(v2 as f64));
    assert_eq!(split("v1"), Some((n - v2) as f64));
    // Requests are counted under the upstream that answered them.
    let answered = |upstream| {
        common::metric_sample(
            &text,
            "gatehouse_http_requests_total",
            &[("route", "orders"), ("upstream", upstream), ("code", "200")],
        )
    };
    assert_eq!(answered("v2"), Some(v2 as f64));
    assert_eq!(answered("v1"), Some((n - v2) as f64));

    let status: serde_json::Value = serde_json::from_slice(
        &common::get(running.admin_addr.unwrap(), "/status")
            .await
            .body,
    )
    .unwrap();
    let route = &status["routes"][0];
    assert_eq!(route["requests"], n as u64, "{route}");
    assert_eq!(route["split"]["total_weight"], 100);
    assert_eq!(route["split"]["sides"][1]["upstream"], "v2");
    assert_eq!(route["split"]["sides"][1]["weight"], 20);
    assert_eq!(route["split"]["sides"][1]["requests"], v2 as u64);
    assert_eq!(
        route["upstream"], "v1",
        "the heaviest side stands for the route"
    );
    running.shutdown().await;
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("splits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("gatehouse.toml")
}

async fn side_of(client: &mut Client, cookie: &str) -> String {
    let reply = client
        .send(get_with("/orders", &[("cookie", cookie)]))
        .await;
    assert_eq!(reply.status, 200);
    reply.text()
}

#[tokio::test]
async fn a_sticky_cookie_keeps_its_side_across_requests_and_reloads() {
    let v1 = TestUpstream::named("v1").await;
    let v2 = TestUpstream::named("v2").await;
    let path = scratch_file("sticky");
    let port = common::unclaimed_port();
    let route = r#"
split_by = "cookie:session"

[[route.split]]
upstream = "v1"
weight = 50

[[route.split]]
upstream = "v2"
weight = 50
"#;
    let write = |extra: &str| {
        let text = config(v1.addr, v2.addr, route).replacen(
            "bind = \"127.0.0.1:0\"\n\n[[route]]",
            &format!("bind = \"127.0.0.1:{port}\"\n\n[[route]]"),
            1,
        ) + extra;
        std::fs::write(&path, text).unwrap();
    };
    write("");
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let users: Vec<String> = (0..40)
        .map(|i| format!("theme=dark; session=user-{i}"))
        .collect();
    let mut sides = Vec::new();
    for user in &users {
        let first = side_of(&mut client, user).await;
        for _ in 0..4 {
            assert_eq!(side_of(&mut client, user).await, first, "{user}");
        }
        sides.push(first);
    }
    // Forty users at 50/50 all on one side would be a broken hash (odds 2^-39).
    assert!(sides.iter().any(|s| s == "v1") && sides.iter().any(|s| s == "v2"));

    // A reload (here adding a route) moves no one.
    write("\n[[route]]\npath_prefix = \"/new/\"\nupstream = \"v1\"\n");
    let report = running.reloader.reload("test").await;
    assert!(report.ok && report.changed, "{:?}", report.errors);
    let mut client = Client::connect(proxy).await;
    for (user, side) in users.iter().zip(&sides) {
        assert_eq!(
            &side_of(&mut client, user).await,
            side,
            "{user} after a reload"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_sticky_side_is_the_same_in_every_process() {
    // The bucket function is fixed (pinned in the unit tests): at 95/5 these cookie values
    // land on these sides in any gatehouse, started anew or not.
    let route = r#"
split_by = "cookie:session"

[[route.split]]
upstream = "v1"
weight = 95

[[route.split]]
upstream = "v2"
weight = 5
"#;
    let (running, proxy, _v1, _v2) = start(route).await;
    let mut client = Client::connect(proxy).await;
    for (user, side) in [
        ("alice", "v1"),
        ("bob", "v1"),
        ("user-23", "v2"),
        ("user-24", "v2"),
    ] {
        assert_eq!(
            side_of(&mut client, &format!("session={user}")).await,
            side,
            "{user}"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_key_are_drawn_at_random() {
    let route = r#"
split_by = "header:x-user"

[[route.split]]
upstream = "v1"
weight = 1

[[route.split]]
upstream = "v2"
weight = 1
"#;
    let (running, proxy, _v1, _v2) = start(route).await;
    let mut client = Client::connect(proxy).await;
    let n = 400;
    let mut v2 = 0;
    for _ in 0..n {
        if client.get("/orders").await.text() == "v2" {
            v2 += 1;
        }
    }
    assert!(within_six_sigma(v2, n, 0.5), "{v2} of {n}");
    // With the key, one side every time.
    let keyed = client
        .send(get_with("/orders", &[("x-user", "alice")]))
        .await
        .text();
    for _ in 0..20 {
        let again = client
            .send(get_with("/orders", &[("x-user", "alice")]))
            .await;
        assert_eq!(again.text(), keyed);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn client_ip_keeps_a_client_on_one_side() {
    let route = r#"
split_by = "client_ip"

[[route.split]]
upstream = "v1"
weight = 1

[[route.split]]
upstream = "v2"
weight = 1
"#;
    let (running, proxy, _v1, _v2) = start(route).await;
    let first = common::get(proxy, "/orders").await.text();
    for _ in 0..30 {
        // A new connection (a new source port) each time: only the address counts.
        assert_eq!(common::get(proxy, "/orders").await.text(), first);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn pick_upstream_by_header_or_cookie_comes_before_the_split_in_order() {
    let v3 = TestUpstream::named("v3").await;
    let route = r#"
[[route.split]]
upstream = "v1"
weight = 1

[[route.pick_upstream]]
header = "X-Canary"
value = "1"
upstream = "v2"

[[route.pick_upstream]]
cookie = "canary"
value = "yes"
upstream = "v3"
"#;
    let v1 = TestUpstream::named("v1").await;
    let v2 = TestUpstream::named("v2").await;
    let text = config(v1.addr, v2.addr, route)
        + &format!("\n[upstream.v3]\nservers = [\"{}\"]\n", v3.addr);
    let running = common::start_gatehouse(&text).await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let side = |headers: &'static [(&'static str, &'static str)]| get_with("/orders", headers);
    assert_eq!(client.send(side(&[])).await.text(), "v1");
    assert_eq!(client.send(side(&[("x-canary", "1")])).await.text(), "v2");
    assert_eq!(client.send(side(&[("x-canary", "2")])).await.text(), "v1");
    assert_eq!(
        client
            .send(side(&[("cookie", "a=1; canary=yes")]))
            .await
            .text(),
        "v3"
    );
    assert_eq!(
        client.send(side(&[("cookie", "canary=no")])).await.text(),
        "v1"
    );
    // Both match: the first pick wins.
    assert_eq!(
        client
            .send(side(&[("x-canary", "1"), ("cookie", "canary=yes")]))
            .await
            .text(),
        "v2"
    );
    let text = metrics(&running).await;
    for (upstream, count) in [("v1", 3.0), ("v2", 2.0), ("v3", 1.0)] {
        assert_eq!(
            common::metric_sample(
                &text,
                "gatehouse_split_requests_total",
                &[("route", "orders"), ("upstream", upstream)],
            ),
            Some(count),
            "{upstream}"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_cached_route_keeps_each_sides_responses_apart() {
    // Each side answers one URL with its own body, cacheable: a client on one side must never
    // get the other side's stored copy.
    let answer = |name: &'static str| {
        std::sync::Arc::new(move |_: &common::Recorded| {
            http::Response::builder()
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from(name)))
                .unwrap()
        })
    };
    let v1 = TestUpstream::with_responder("v1", answer("v1")).await;
    let v2 = TestUpstream::with_responder("v2", answer("v2")).await;
    let route = r#"
cache = "pages"
split_by = "header:x-user"

[[route.split]]
upstream = "v1"
weight = 95

[[route.split]]
upstream = "v2"
weight = 5
"#;
    let text = config(v1.addr, v2.addr, route) + "\n[cache.pages]\n";
    let running = common::start_gatehouse(&text).await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    // "alice" is on v1 and "user-23" on v2 at 95/5 (pinned in the unit tests).
    for _ in 0..3 {
        for (user, side) in [("alice", "v1"), ("user-23", "v2")] {
            let reply = client.send(get_with("/page", &[("x-user", user)])).await;
            assert_eq!(reply.text(), side, "{user}");
        }
    }
    // Each side was asked once; the rest were hits of its own copy.
    assert_eq!(v1.received().len(), 1);
    assert_eq!(v2.received().len(), 1);

    // A purge of the URL removes both sides' copies.
    let purge = Request::post("/cache/purge")
        .body(Full::new(Bytes::from(format!(
            r#"{{"url": "http://{proxy}/page"}}"#
        ))))
        .unwrap();
    let reply = Client::connect(running.admin_addr.unwrap())
        .await
        .send(purge)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let purged: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(purged["purged"], 2);
    client.send(get_with("/page", &[("x-user", "alice")])).await;
    assert_eq!(v1.received().len(), 2);
    running.shutdown().await;
}

fn load_error(text: &str) -> String {
    match gatehouse::config::load_str(Path::new("test.toml"), text) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(errors) => errors.to_string(),
    }
}

#[test]
fn bad_splits_are_reported_at_their_place() {
    let v = "127.0.0.1:1".parse().unwrap();
    let base = |route: &str| config(v, v, route);
    let cases = [
        (
            "\n[[route.split]]\nupstream = \"v9\"\nweight = 1\n",
            "route[0].split[0].upstream: no upstream named \"v9\"",
            "\"v9\"",
        ),
        (
            "\n[[route.split]]\nupstream = \"v1\"\nweight = 0\n\n[[route.split]]\nupstream = \"v2\"\nweight = 0\n",
            "route[0].split: the split's weights add up to 0",
            "[[route.split]]",
        ),
        (
            "split_by = \"path\"\n\n[[route.split]]\nupstream = \"v1\"\nweight = 1\n",
            "route[0].split_by: split_by path",
            "\"path\"",
        ),
        (
            "split_by = \"cookie:a=b\"\n\n[[route.split]]\nupstream = \"v1\"\nweight = 1\n",
            "route[0].split_by: invalid split_by",
            "\"cookie:a=b\"",
        ),
        (
            "upstream = \"v1\"\n\n[[route.split]]\nupstream = \"v2\"\nweight = 1\n",
            "route[0].upstream: a route with [[route.split]]",
            "\"v1\"",
        ),
        (
            "upstream = \"v1\"\n\n[[route.pick_upstream]]\nheader = \"x-canary\"\nvalue = \"1\"\nupstream = \"nope\"\n",
            "route[0].pick_upstream[0].upstream: no upstream named \"nope\"",
            "\"nope\"",
        ),
        (
            "upstream = \"v1\"\n\n[route.mirror]\nupstream = \"shadow\"\n",
            "route[0].mirror.upstream: no upstream named \"shadow\"",
            "\"shadow\"",
        ),
        (
            "upstream = \"v1\"\n\n[route.mirror]\nupstream = \"v2\"\npercent = 101\n",
            "route[0].mirror.percent: must be between 0 and 100",
            "101",
        ),
        (
            "",
            "route[0].upstream: the route needs an `upstream`",
            "[[route]]",
        ),
        (
            "\n[[route.split]]\nupstream = \"v1\"\nweight = 1\n\n[[route.split]]\nupstream = \"v1\"\nweight = 2\n",
            "route[0].split[1].upstream: upstream \"v1\" is in the split twice",
            "\"v1\"\nweight = 2",
        ),
        (
            "upstream = \"v1\"\nsplit_by = \"client_ip\"\n",
            "route[0].split_by: split_by without a [[route.split]]",
            "\"client_ip\"",
        ),
        (
            "upstream = \"v1\"\n\n[[route.pick_upstream]]\nheader = \"x-a\"\ncookie = \"a\"\nvalue = \"1\"\nupstream = \"v2\"\n",
            "route[0].pick_upstream[0].cookie: give one of `header` and `cookie`, not both",
            "\"a\"",
        ),
        (
            "upstream = \"v1\"\n\n[[route.pick_upstream]]\nvalue = \"1\"\nupstream = \"v2\"\n",
            "route[0].pick_upstream[0].header: give `header = \"NAME\"` or `cookie = \"NAME\"`",
            "\"1\"",
        ),
        (
            "upstream = \"v1\"\n\n[[route.pick_upstream]]\ncookie = \"a;b\"\nvalue = \"1\"\nupstream = \"v2\"\n",
            "route[0].pick_upstream[0].cookie: \"a;b\" is not a cookie name",
            "\"a;b\"",
        ),
        (
            "upstream = \"v1\"\n\n[route.mirror]\nupstream = \"v2\"\nmax_in_flight = 0\n",
            "route[0].mirror.max_in_flight: must be at least 1",
            "0\n",
        ),
    ];
    for (route, message, at) in cases {
        let text = base(route);
        let error = load_error(&text);
        // The error names the line and column where `at` is written.
        let offset = text.find(at).unwrap();
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        let place = format!("test.toml:{line}:{column}: ");
        assert!(
            error.contains(&format!("{place}{message}")),
            "expected {place}{message}\ngot: {error}"
        );
    }
}
