//! What an nginx `location` says, through a running gatehouse on real sockets: exact, stopping
//! prefix and regex paths in nginx's precedence; method, header, query and client matchers;
//! rewrites with captures and nginx's query rule; prefix replacement and its slash redirect;
//! `return`; error pages; per-route timeouts; header values with variables.

mod common;

use bytes::Bytes;
use common::{Reply, TestUpstream};
use http::Response;
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEAD: &str = common::ONE_LISTENER;

fn upstream(name: &str, server: SocketAddr) -> String {
    format!("\n[upstream.{name}]\nservers = [\"{server}\"]\n")
}

async fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    common::send_to_host(addr, "shop.example.com", method, target, headers).await
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    send(addr, "GET", target, &[]).await
}

/// Which upstream answered a GET (the named upstreams put their name in the body).
async fn answered_by(addr: SocketAddr, target: &str) -> String {
    let reply = get(addr, target).await;
    assert_eq!(reply.status, 200, "{target}: {}", reply.text());
    reply.text()
}

#[tokio::test]
async fn paths_match_in_nginx_precedence() {
    let names = [
        "root", "health", "assets", "images", "users", "orders", "userlist",
    ];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(TestUpstream::named(name).await);
    }
    let mut config = format!(
        r#"{HEAD}
[[route]]
path_prefix = "/"
upstream = "root"

[[route]]
path_exact = "/healthz"
upstream = "health"

[[route]]
path_prefix = "/assets/"
prefix_stops_regex = true
upstream = "assets"

[[route]]
path_regex = '(?i)\.(png|jpg)$'
upstream = "images"

[[route]]
path_regex = '^/users/(\d+)/orders$'
upstream = "orders"

[[route]]
path_regex = '^/users/'
upstream = "users"

[[route]]
path_prefix = "/users/"
upstream = "userlist"
"#
    );
    for (name, up) in names.iter().zip(&upstreams) {
        config.push_str(&upstream(name, up.addr));
    }
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "/healthz").await, "health");
    assert_eq!(answered_by(addr, "/healthz/more").await, "root");
    // `^~`: the regex for images is not consulted.
    assert_eq!(answered_by(addr, "/assets/logo.png").await, "assets");
    assert_eq!(answered_by(addr, "/media/LOGO.PNG").await, "images");
    // Regexes in the order written win over the longest prefix.
    assert_eq!(answered_by(addr, "/users/42/orders").await, "orders");
    assert_eq!(answered_by(addr, "/users/42").await, "users");
    assert_eq!(answered_by(addr, "/menu").await, "root");
    // Matched in normal form: `/users/../healthz` is `/healthz`.
    assert_eq!(answered_by(addr, "/users/../healthz").await, "health");
}

#[tokio::test]
async fn methods_headers_query_and_clients_pick_routes() {
    let names = ["root", "reads", "canary", "debug", "office"];
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(TestUpstream::named(name).await);
    }
    let mut config = format!(
        r#"{HEAD}
[[route]]
upstream = "root"

[[route]]
path_prefix = "/orders"
methods = ["GET", "HEAD"]
upstream = "reads"

[[route]]
path_prefix = "/orders"
upstream = "canary"
[[route.match_header]]
name = "x-canary"
exact = "1"

[[route]]
path_prefix = "/"
upstream = "debug"
[[route.match_query]]
name = "debug"
regex = "^(1|true)$"

[[route]]
path_prefix = "/"
clients = ["10.0.0.0/8"]
upstream = "office"
"#
    );
    for (name, up) in names.iter().zip(&upstreams) {
        config.push_str(&upstream(name, up.addr));
    }
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "/orders/1").await, "reads");
    let post = send(addr, "POST", "/orders", &[]).await;
    assert_eq!(post.text(), "root");
    let canary = send(addr, "POST", "/orders", &[("x-canary", "1")]).await;
    assert_eq!(canary.text(), "canary");
    let not_canary = send(addr, "POST", "/orders", &[("x-canary", "2")]).await;
    assert_eq!(not_canary.text(), "root");
    assert_eq!(answered_by(addr, "/menu?debug=true").await, "debug");
    assert_eq!(answered_by(addr, "/menu?debug=yes").await, "root");
    // 127.0.0.1 is not in 10.0.0.0/8: the office route is passed over.
    assert_eq!(answered_by(addr, "/office").await, "root");
}

#[tokio::test]
async fn rewrites_use_captures_and_nginx_query_rule() {
    let api = TestUpstream::named("api").await;
    let legacy = TestUpstream::named("legacy").await;
    let config = format!(
        r#"{HEAD}
[[route]]
path_prefix = "/"
upstream = "api"

[[route]]
path_regex = '^/users/(?P<user>\d+)/orders$'
upstream = "api"
[[route.rewrite]]
regex = '^/users/(\d+)/orders$'
to = "/orders?user=$1"
flag = "break"

[[route]]
path_prefix = "/old/"
upstream = "api"
[[route.rewrite]]
regex = "^/old/(.*)$"
to = "/legacy/$1"
flag = "last"

[[route]]
path_prefix = "/legacy/"
upstream = "legacy"

[[route]]
path_prefix = "/gone/"
upstream = "api"
[[route.rewrite]]
regex = "^/gone/(.*)$"
to = "/new/$1"
flag = "permanent"

[[route]]
path_prefix = "/away/"
upstream = "api"
[[route.rewrite]]
regex = "^/away/(.*)$"
to = "https://$host/$1?"
{}{}"#,
        upstream("api", api.addr),
        upstream("legacy", legacy.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "/users/42/orders?page=2").await, "api");
    assert_eq!(api.received()[0].uri, "/orders?user=42&page=2");
    // `last` routes the new path again: the /legacy/ route takes it.
    assert_eq!(answered_by(addr, "/old/menu?x=1").await, "legacy");
    assert_eq!(legacy.received()[0].uri, "/legacy/menu?x=1");

    let moved = get(addr, "/gone/a?b=1").await;
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/new/a?b=1"));
    let away = get(addr, "/away/x?dropped=1").await;
    assert_eq!(away.status, 302);
    assert_eq!(away.header("location"), Some("https://shop.example.com/x"));
    assert_eq!(api.received().len(), 1, "redirects reach no upstream");
}

#[tokio::test]
async fn rewrite_cycles_end_in_500() {
    let api = TestUpstream::named("api").await;
    let config = format!(
        r#"{HEAD}
[[route]]
path_prefix = "/a/"
upstream = "api"
[[route.rewrite]]
regex = "^/a/(.*)$"
to = "/b/$1"
flag = "last"

[[route]]
path_prefix = "/b/"
upstream = "api"
[[route.rewrite]]
regex = "^/b/(.*)$"
to = "/a/$1"
flag = "last"
{}"#,
        upstream("api", api.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let reply = get(gatehouse.listener_addrs[0], "/a/x").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.text().contains("cycle"), "{}", reply.text());
    assert!(api.received().is_empty());
}

#[tokio::test]
async fn replaced_prefixes_and_the_slash_redirect() {
    let api = TestUpstream::named("api").await;
    let config = format!(
        r#"{HEAD}
[[route]]
path_prefix = "/api/"
replace_prefix = "/v2/"
upstream = "api"

[[route]]
path_prefix = "/plain/"
upstream = "api"
{}"#,
        upstream("api", api.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "/api/orders/7?x=1").await, "api");
    assert_eq!(answered_by(addr, "/api/").await, "api");
    let received = api.received();
    assert_eq!(received[0].uri, "/v2/orders/7?x=1");
    assert_eq!(received[1].uri, "/v2/");
    // nginx's 301 for the prefix without its slash, query kept.
    let bare = get(addr, "/api?x=1").await;
    assert_eq!(bare.status, 301);
    assert_eq!(bare.header("location"), Some("/api/?x=1"));
    // A route that forwards its path as it is does not redirect.
    assert_eq!(get(addr, "/plain").await.status, 404);
}

#[tokio::test]
async fn return_answers_at_the_edge() {
    let config = format!(
        r#"{HEAD}
[[route]]
path_exact = "/healthz"
[route.return]
status = 200
body = "ok from $host\n"

[[route]]
path_regex = '^/item/(?P<id>\d+)$'
[route.return]
status = 308
location = "https://$host/items/$id$is_args$args"

[[route]]
path_prefix = "/"
[route.return]
status = 301
location = "https://$host$request_uri"
"#
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    let health = get(addr, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok from shop.example.com\n");
    assert_eq!(
        health.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let item = get(addr, "/item/7?a=b").await;
    assert_eq!(item.status, 308);
    assert_eq!(
        item.header("location"),
        Some("https://shop.example.com/items/7?a=b")
    );
    // $request_uri is the target as sent, before normalization.
    let moved = get(addr, "/x/../menu?q=1").await;
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        Some("https://shop.example.com/x/../menu?q=1")
    );
}

#[tokio::test]
async fn error_pages_replace_gatehouse_own_answers() {
    let dir = tempdir("error-pages");
    let page = dir.join("502.html");
    std::fs::write(&page, "<h1>We are cooking</h1>\n").unwrap();
    let dead = common::refused_addr().await;
    let config = format!(
        r#"{HEAD}
[[error_page]]
status = [404]
body = "nothing here\n"
content_type = "text/plain"

[[route]]
path_prefix = "/kitchen/"
upstream = "dead"
[[route.error_page]]
status = [502, 503, 504]
file = "{}"
{}"#,
        page.display(),
        upstream("dead", dead),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    let missing = get(addr, "/nowhere").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text(), "nothing here\n");
    assert_eq!(missing.header("content-type"), Some("text/plain"));
    let down = get(addr, "/kitchen/orders").await;
    assert_eq!(down.status, 502);
    assert_eq!(down.text(), "<h1>We are cooking</h1>\n");
    assert_eq!(
        down.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(down.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_route_may_set_its_own_timeouts() {
    let slow = TestUpstream::with_handler(
        "slow",
        Arc::new(|_req| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Response::new(Full::new(Bytes::from("late")))
            })
        }),
    )
    .await;
    let config = format!(
        r#"{HEAD}
[[route]]
path_prefix = "/quick/"
response_timeout = "200ms"
upstream = "slow"

[[route]]
path_prefix = "/"
upstream = "slow"

[upstream.slow]
servers = ["{}"]
response_timeout = "10s"
"#,
        slow.addr
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    let started = Instant::now();
    let quick = get(addr, "/quick/x").await;
    assert_eq!(quick.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1500));
    // The upstream's own timeout still applies to the other route.
    let patient = get(addr, "/other").await;
    assert_eq!(patient.status, 200);
    assert_eq!(patient.text(), "late");
}

#[tokio::test]
async fn header_values_take_variables() {
    let api = TestUpstream::named("api").await;
    let config = format!(
        r#"{HEAD}
[[route]]
path_regex = '^/users/(?P<id>\d+)'
upstream = "api"
request_headers = {{ set = {{ "x-user-id" = "$id", "x-client" = "$remote_addr", "x-page" = "$arg_page", "x-trace" = "$http_x_trace-$request_method", "x-empty" = "$arg_missing" }} }}
{}"#,
        upstream("api", api.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    let reply = send(
        addr,
        "GET",
        "/users/42/profile?page=3",
        &[("x-trace", "t1"), ("x-empty", "spoofed")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let received = &api.received()[0];
    let header = |name: &str| received.headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(header("x-user-id"), Some("42"));
    assert_eq!(header("x-client"), Some("127.0.0.1"));
    assert_eq!(header("x-page"), Some("3"));
    assert_eq!(header("x-trace"), Some("t1-GET"));
    // A value that comes out empty is not sent (nor the client's copy).
    assert_eq!(header("x-empty"), None);
}

#[test]
fn location_errors_name_their_place() {
    let config = r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[upstream.api]
servers = ["127.0.0.1:9"]

[[route]]
path_regex = '^/users/(\d+'
upstream = "api"

[[route]]
path_prefix = "/a/"
upstream = "api"
[[route.rewrite]]
regex = "^/a/(.*)$"
to = "/b/$2"

[[route]]
path_prefix = "/c/"
[route.return]
status = 301

[[route]]
path_exact = "/x"
path_regex = "^/x"
upstream = "api"

[[route]]
path_prefix = "/h/"
upstream = "api"
request_headers = { set = { "x-a" = "$nosuch" } }

[[route]]
path_prefix = "/m/"
methods = ["get"]
upstream = "api"
"#;
    let errors = gatehouse::config::load_str(Path::new("routes.toml"), config)
        .expect_err("invalid")
        .to_string();
    for expected in [
        "routes.toml:10:14: route[0].path_regex: invalid regex",
        "routes.toml:18:6: route[1].rewrite[0].to: $2 refers to a capture group the regex does not have",
        "routes.toml:23:10: route[2].return.location: a redirect needs a location",
        "route[3].path_regex: give one of path_prefix, path_exact and path_regex",
        "routes.toml:33:37: route[4].request_headers.set.x-a: unknown variable $nosuch",
        "routes.toml:37:12: route[5].methods[0]",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
