//! Routing through a running gatehouse: host patterns, longest path prefix, listener-limited
//! routes, prefix stripping, Host rewriting, per-route header edits, and the 404 for no route.

mod common;

use bytes::Bytes;
use common::{Client, Reply, TestUpstream};
use http::{Request, Response};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const HEAD: &str = r#"
[admin]
bind = ""

[log]
access = "off"
"#;

fn listener(name: &str) -> String {
    format!("\n[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\n")
}

fn upstream(name: &str, server: SocketAddr) -> String {
    format!("\n[upstream.{name}]\nservers = [\"{server}\"]\n")
}

/// A GET on a new connection with the given Host header.
async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Client::connect(addr)
        .await
        .send(
            Request::get(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
}

/// Which upstream answered (the named upstreams put their name in the body).
async fn answered_by(addr: SocketAddr, host: &str, path: &str) -> String {
    let reply = get_host(addr, host, path).await;
    assert_eq!(reply.status, 200, "{host}{path}: {}", reply.text());
    reply.text()
}

#[tokio::test]
async fn hosts_match_exact_then_wildcard_then_any() {
    let exact = TestUpstream::named("exact").await;
    let wild = TestUpstream::named("wild").await;
    let deeper = TestUpstream::named("deeper").await;
    let any = TestUpstream::named("any").await;
    // Written least specific first: the order in the file must not matter.
    let config = format!(
        r#"{HEAD}{}
[[route]]
host = "*"
upstream = "any"

[[route]]
host = "*.example.com"
upstream = "wild"

[[route]]
host = "*.eu.example.com"
upstream = "deeper"

[[route]]
host = "api.example.com"
upstream = "exact"
{}{}{}{}"#,
        listener("public"),
        upstream("exact", exact.addr),
        upstream("wild", wild.addr),
        upstream("deeper", deeper.addr),
        upstream("any", any.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "api.example.com", "/").await, "exact");
    assert_eq!(answered_by(addr, "API.Example.COM", "/x").await, "exact");
    assert_eq!(
        answered_by(addr, "api.example.com:8080", "/").await,
        "exact"
    );
    assert_eq!(answered_by(addr, "shop.example.com", "/").await, "wild");
    assert_eq!(answered_by(addr, "a.b.example.com", "/").await, "wild");
    assert_eq!(
        answered_by(addr, "paris.eu.example.com", "/").await,
        "deeper"
    );
    // The wildcard needs a label before the suffix: the bare domain falls through to `*`.
    assert_eq!(answered_by(addr, "example.com", "/").await, "any");
    assert_eq!(answered_by(addr, "other.org", "/").await, "any");
    assert_eq!(answered_by(addr, "notexample.com", "/").await, "any");
}

#[tokio::test]
async fn the_longest_path_prefix_wins() {
    let root = TestUpstream::named("root").await;
    let orders = TestUpstream::named("orders").await;
    let archive = TestUpstream::named("archive").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
path_prefix = "/orders"
upstream = "orders"

[[route]]
path_prefix = "/orders/archive"
upstream = "archive"

[[route]]
path_prefix = "/"
upstream = "root"
{}{}{}"#,
        listener("public"),
        upstream("root", root.addr),
        upstream("orders", orders.addr),
        upstream("archive", archive.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "h", "/orders/archive/7").await, "archive");
    assert_eq!(answered_by(addr, "h", "/orders/archive").await, "archive");
    assert_eq!(answered_by(addr, "h", "/orders/7").await, "orders");
    assert_eq!(answered_by(addr, "h", "/orders").await, "orders");
    assert_eq!(answered_by(addr, "h", "/menu").await, "root");
    assert_eq!(answered_by(addr, "h", "/").await, "root");
    // The query is not part of the path that routes.
    assert_eq!(answered_by(addr, "h", "/menu?x=/orders").await, "root");
    // Each upstream saw the full, unchanged path.
    assert_eq!(archive.received()[0].uri, "/orders/archive/7");
    assert_eq!(root.received()[2].uri, "/menu?x=/orders");
}

#[tokio::test]
async fn a_route_limited_to_a_listener_matches_only_there() {
    let admin = TestUpstream::named("admin").await;
    let site = TestUpstream::named("site").await;
    let config = format!(
        r#"{HEAD}{}{}
[[route]]
listener = "internal"
path_prefix = "/admin"
upstream = "admin"

[[route]]
path_prefix = "/"
upstream = "site"
{}{}"#,
        listener("public"),
        listener("internal"),
        upstream("admin", admin.addr),
        upstream("site", site.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let public = gatehouse.listener_addrs[0];
    let internal = gatehouse.listener_addrs[1];
    assert_ne!(public, internal);

    assert_eq!(answered_by(internal, "h", "/admin/users").await, "admin");
    assert_eq!(answered_by(public, "h", "/admin/users").await, "site");
    assert_eq!(answered_by(internal, "h", "/home").await, "site");
    assert_eq!(admin.received().len(), 1);
    assert_eq!(site.received().len(), 2);
}

#[tokio::test]
async fn strip_prefix_removes_the_route_prefix_only_where_asked() {
    let api = TestUpstream::named("api").await;
    let keep = TestUpstream::named("keep").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
path_prefix = "/api"
upstream = "api"
strip_prefix = true

[[route]]
path_prefix = "/keep"
upstream = "keep"
{}{}"#,
        listener("public"),
        upstream("api", api.addr),
        upstream("keep", keep.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    assert_eq!(answered_by(addr, "h", "/api/orders/7?full=1").await, "api");
    assert_eq!(answered_by(addr, "h", "/api").await, "api");
    assert_eq!(answered_by(addr, "h", "/api?q=1").await, "api");
    assert_eq!(answered_by(addr, "h", "/keep/orders?full=1").await, "keep");

    let uris: Vec<String> = api.received().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(uris, ["/orders/7?full=1", "/", "/?q=1"]);
    assert_eq!(keep.received()[0].uri, "/keep/orders?full=1");
}

#[tokio::test]
async fn set_host_replaces_the_host_sent_upstream() {
    let internal = TestUpstream::named("internal").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
host = "shop.example.com"
upstream = "internal"
set_host = "orders.internal:8001"
{}"#,
        listener("public"),
        upstream("internal", internal.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;

    let reply = get_host(gatehouse.listener_addrs[0], "shop.example.com", "/o").await;
    assert_eq!(reply.status, 200);
    let seen = &internal.received()[0];
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["orders.internal:8001"]);
    // The client's own host is still told, in X-Forwarded-Host.
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example.com");
}

#[tokio::test]
async fn route_header_rules_set_and_remove_on_both_sides() {
    let app = TestUpstream::with_responder(
        "app",
        Arc::new(|_req: &common::Recorded| {
            Response::builder()
                .header("server", "app-server/1.0")
                .header("x-powered-by", "tests")
                .header("x-frame-options", "ALLOWALL")
                .header("x-kept", "yes")
                .body(Full::new(Bytes::from_static(b"app")))
                .unwrap()
        }),
    )
    .await;
    let other = TestUpstream::named("other").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
path_prefix = "/app"
upstream = "app"
request_headers = {{ set = {{ "x-env" = "demo", "x-added" = "1" }}, remove = ["x-debug", "cookie"] }}
response_headers = {{ set = {{ "x-frame-options" = "DENY" }}, remove = ["server", "x-powered-by"] }}

[[route]]
path_prefix = "/"
upstream = "other"
{}{}"#,
        listener("public"),
        upstream("app", app.addr),
        upstream("other", other.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];
    let mut client = Client::connect(addr).await;

    let reply = client
        .send(
            Request::get("/app/x")
                .header("x-env", "prod")
                .header("x-env", "staging")
                .header("x-debug", "1")
                .header("cookie", "session=secret")
                .header("x-client", "kept")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "app");

    let seen = &app.received()[0];
    let env: Vec<_> = seen.headers.get_all("x-env").iter().collect();
    assert_eq!(env, ["demo"], "set replaces every client value");
    assert_eq!(seen.headers["x-added"], "1");
    assert!(!seen.headers.contains_key("x-debug"), "{:?}", seen.headers);
    assert!(!seen.headers.contains_key("cookie"), "{:?}", seen.headers);
    assert_eq!(seen.headers["x-client"], "kept");

    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        reply.headers.get_all("x-frame-options").iter().count(),
        1,
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.header("server"), None, "{:?}", reply.headers);
    assert_eq!(reply.header("x-powered-by"), None, "{:?}", reply.headers);
    assert_eq!(reply.header("x-kept"), Some("yes"));

    // Another route's requests are untouched by these rules.
    let reply = client
        .send(
            Request::get("/elsewhere")
                .header("x-debug", "1")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.text(), "other");
    let seen = &other.received()[0];
    assert_eq!(seen.headers["x-debug"], "1");
    assert!(!seen.headers.contains_key("x-env"));
    assert!(!seen.headers.contains_key("x-added"));
    assert_eq!(reply.header("x-frame-options"), None);
}

#[tokio::test]
async fn no_matching_route_is_a_404_from_gatehouse_itself() {
    let known = TestUpstream::named("known").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
host = "known.example.com"
path_prefix = "/api"
upstream = "known"
{}"#,
        listener("public"),
        upstream("known", known.addr),
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    for (host, path) in [
        ("unknown.example.com", "/api/x"),
        ("known.example.com", "/other"),
        ("known.example.com", "/"),
    ] {
        let reply = get_host(addr, host, path).await;
        assert_eq!(reply.status, 404, "{host}{path}");
        assert_eq!(reply.header("server"), Some("gatehouse"));
        assert!(
            reply.text().contains("no route"),
            "a local answer: {}",
            reply.text()
        );
        assert!(reply.header("x-request-id").is_some());
        assert_eq!(reply.header("x-upstream"), None);
    }
    assert_eq!(known.connections.load(Ordering::SeqCst), 0);
    assert!(known.received().is_empty());

    // The route itself works, so the 404s above were about routing.
    assert_eq!(
        answered_by(addr, "known.example.com", "/api/x").await,
        "known"
    );
}

/// Two upstreams behind host routes: `good.example` and everything else.
async fn host_routed() -> (gatehouse::app::Running, TestUpstream, TestUpstream) {
    let good = TestUpstream::named("good").await;
    let other = TestUpstream::named("other").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
host = "good.example"
upstream = "good"

[[route]]
host = "*"
upstream = "other"
{}{}"#,
        listener("public"),
        upstream("good", good.addr),
        upstream("other", other.addr),
    );
    (common::start_gatehouse(&config).await, good, other)
}

#[tokio::test]
async fn a_request_with_two_hosts_or_an_invalid_host_is_400_and_goes_nowhere() {
    let (gatehouse, good, other) = host_routed().await;
    let addr = gatehouse.listener_addrs[0];
    for (what, request) in [
        (
            "two different Hosts",
            "GET /x HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "the same Host twice",
            "GET /x HTTP/1.1\r\nHost: good.example\r\nHost: good.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "a space inside",
            "GET /x HTTP/1.1\r\nHost: good.example evil\r\nConnection: close\r\n\r\n",
        ),
        (
            "userinfo",
            "GET /x HTTP/1.1\r\nHost: user@good.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "a path",
            "GET /x HTTP/1.1\r\nHost: good.example/x\r\nConnection: close\r\n\r\n",
        ),
        (
            "empty",
            "GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        ),
        (
            "an absolute target with an invalid Host beside it",
            "GET http://good.example/x HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let response = common::raw_exchange(addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{what}: {response:?}"
        );
    }
    assert!(good.received().is_empty() && other.received().is_empty());
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_and_forwarded_by_its_authority() {
    let (gatehouse, good, other) = host_routed().await;
    let response = common::raw_exchange(
        gatehouse.listener_addrs[0],
        b"GET http://good.example/c?q=1 HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response:?}");
    assert!(
        other.received().is_empty(),
        "routed by Host, not the target"
    );
    let seen = &good.received()[0];
    assert_eq!(seen.uri, "/c?q=1", "origin-form upstream");
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, ["good.example"], "the client's Host is replaced");
    assert_eq!(seen.headers["x-forwarded-host"], "good.example");
}

/// One HTTP/2 (prior knowledge) request to `uri` with the given Host header lines.
async fn h2_with_hosts(addr: SocketAddr, uri: &str, hosts: &[&str]) -> http::StatusCode {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let mut request = Request::get(uri);
    for host in hosts {
        request = request.header("host", *host);
    }
    let response = tokio::time::timeout(
        common::WAIT,
        sender.send_request(request.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("h2 reply in time")
    .expect("h2 response");
    response.status()
}

#[tokio::test]
async fn http2_authority_and_host_follow_the_same_rules() {
    let (gatehouse, good, other) = host_routed().await;
    let addr = gatehouse.listener_addrs[0];
    assert_eq!(
        h2_with_hosts(addr, "http://good.example/a", &["good.example"]).await,
        200,
        ":authority and Host agree"
    );
    assert_eq!(
        h2_with_hosts(addr, "http://good.example/b", &[]).await,
        200,
        ":authority alone"
    );
    assert_eq!(good.received().len(), 2);
    for (what, uri, hosts) in [
        (
            "Host differs from :authority",
            "http://good.example/c",
            &["evil.example"][..],
        ),
        (
            "two Hosts",
            "http://good.example/d",
            &["good.example", "good.example"][..],
        ),
        ("an invalid Host", "http://good.example/e", &["a b"][..]),
    ] {
        assert_eq!(h2_with_hosts(addr, uri, hosts).await, 400, "{what}");
    }
    assert_eq!(good.received().len(), 2);
    assert!(other.received().is_empty());
}

/// Sends `target` as the raw request line's target and returns the status and the path the
/// upstream that answered received (from its body and records).
async fn raw_target(addr: SocketAddr, target: &str) -> String {
    let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    common::raw_exchange(addr, request.as_bytes()).await
}

#[tokio::test]
async fn paths_are_routed_and_forwarded_in_their_normal_form() {
    let admin = TestUpstream::named("admin").await;
    let app = TestUpstream::named("app").await;
    let config = format!(
        r#"{HEAD}{}
[[route]]
path_prefix = "/"
upstream = "app"

[[route]]
path_prefix = "/admin/"
upstream = "admin"
{}{}"#,
        listener("public"),
        upstream("app", app.addr),
        upstream("admin", admin.addr),
    );
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    // Each spelling of /admin/x reaches the /admin/ route, and its upstream gets /admin/x.
    for target in [
        "/admin/x",
        "/%61dmin/x",
        "//admin/x",
        "/admin//x",
        "/x/../admin/x",
        "/x/%2e%2e/admin/x",
        "/./admin/./x",
    ] {
        let answer = raw_target(proxy, target).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        assert!(answer.ends_with("admin"), "{target} reached {answer}");
        let received = admin.requests.lock().unwrap().pop().expect("a request");
        assert_eq!(received.uri.path(), "/admin/x", "{target}");
    }
    // The query stays as sent.
    let answer = raw_target(proxy, "//admin/x?a=%2F&b=1").await;
    assert!(answer.ends_with("admin"), "{answer}");
    let received = admin.requests.lock().unwrap().pop().expect("a request");
    assert_eq!(received.uri.query(), Some("a=%2F&b=1"));
    // What is ambiguous is refused before any upstream is asked.
    for target in [
        "/admin%2Fx",
        "/x/%2e%2e/%2e%2e/admin",
        "/../admin/x",
        "/a%00b",
        "/a%zz",
    ] {
        let answer = raw_target(proxy, target).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
    }
    assert!(admin.requests.lock().unwrap().is_empty());
    assert!(app.requests.lock().unwrap().is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn merge_slashes_off_keeps_empty_segments() {
    let app = TestUpstream::named("app").await;
    let config = format!(
        "{HEAD}{}\n[limits]\nmerge_slashes = false\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n{}",
        listener("public"),
        upstream("app", app.addr),
    );
    let running = common::start_gatehouse(&config).await;
    let answer = raw_target(running.listener_addrs[0], "//a/./b").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = app.requests.lock().unwrap().pop().expect("a request");
    assert_eq!(received.uri.path(), "//a/b");
    running.shutdown().await;
}

#[tokio::test]
async fn access_rules_let_in_the_first_match_and_turn_away_with_403() {
    let app = TestUpstream::named("app").await;
    let config = format!(
        r#"{HEAD}
[[listener]]
name = "public"
bind = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]

[[route]]
path_prefix = "/inside/"
upstream = "app"
access = ["deny 10.9.0.0/16", "allow 10.0.0.0/8", "deny all"]

[[route]]
path_prefix = "/"
upstream = "app"
access = ["deny 192.0.2.0/24"]
{}"#,
        upstream("app", app.addr),
    );
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    let from = |client: &str, path: &str| {
        Request::get(path)
            .header("x-forwarded-for", client)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut client = Client::connect(proxy).await;
    // The client is the one the trusted proxy (127.0.0.1) names.
    for (who, path, status) in [
        ("10.1.2.3", "/inside/x", 200),
        ("10.9.2.3", "/inside/x", 403),
        ("192.0.2.7", "/inside/x", 403),
        ("192.0.2.7", "/elsewhere", 403),
        ("198.51.100.1", "/elsewhere", 200),
    ] {
        let reply = client.send(from(who, path)).await;
        assert_eq!(reply.status, status, "{who} {path}: {}", reply.text());
    }
    // Turned away before any upstream is asked.
    assert_eq!(app.requests.lock().unwrap().len(), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn a_route_may_have_its_own_body_limit() {
    let app = TestUpstream::named("app").await;
    let config = format!(
        r#"{HEAD}{}
[limits]
max_body_bytes = "1KiB"

[[route]]
path_prefix = "/uploads/"
upstream = "app"
max_body_bytes = "64KiB"

[[route]]
path_prefix = "/"
upstream = "app"
{}"#,
        listener("public"),
        upstream("app", app.addr),
    );
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    // Each on its own connection: a 413 before the body is read closes its connection.
    let post = |path: &'static str, bytes: usize| async move {
        let request = Request::post(path)
            .body(Full::new(Bytes::from(vec![b'x'; bytes])))
            .unwrap();
        Client::connect(proxy).await.send(request).await.status
    };
    assert_eq!(post("/uploads/a", 10 * 1024).await, 200);
    assert_eq!(post("/other", 10 * 1024).await, 413);
    assert_eq!(post("/uploads/a", 100 * 1024).await, 413);
    // A chunked body is held to the route's limit as it streams.
    let chunked = format!(
        "POST /uploads/b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        70 * 1024,
        "y".repeat(70 * 1024)
    );
    let answer = common::raw_exchange(proxy, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(app.requests.lock().unwrap().len(), 1);
    running.shutdown().await;
}
