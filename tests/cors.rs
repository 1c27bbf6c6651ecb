//! CORS at the edge (`[cors.NAME]`, route `cors = "NAME"`) over real sockets: preflights
//! answered without the upstream, allowed and refused origins, the fields of actual responses
//! (the upstream's replaced), credentials, a cached response answered per origin, the
//! metric and /status, and config errors at their place.

mod common;

use bytes::Bytes;
use common::{Client, Reply, TestUpstream};
use gatehouse::app::Running;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;

fn config(upstream: SocketAddr, cors: &str) -> String {
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
upstream = "app"
cors = "web"
access = ["deny 192.0.2.0/24"]

[[route]]
name = "cached"
path_prefix = "/cached/"
upstream = "app"
cors = "web"
cache = "pages"

[[route]]
name = "denied"
path_prefix = "/denied/"
upstream = "app"
cors = "web"
access = ["deny all"]

[[route]]
name = "plain"
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = ["{upstream}"]

[cache.pages]

{cors}
"#
    )
}

const WEB: &str = r#"
[cors.web]
origins = ["https://app.example.com", "https://*.example.org"]
methods = ["GET", "POST", "DELETE"]
headers = ["content-type", "x-api-key"]
expose_headers = ["x-upstream", "x-request-id"]
credentials = true
max_age = "10m"
"#;

/// An upstream that sends its own (wrong) CORS fields and a cacheable body.
async fn upstream() -> TestUpstream {
    TestUpstream::with_responder(
        "app",
        Arc::new(|_| {
            Response::builder()
                .header("x-upstream", "app")
                .header("access-control-allow-origin", "*")
                .header("access-control-allow-methods", "PATCH")
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Encoding")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap()
        }),
    )
    .await
}

async fn start(upstream: &TestUpstream, cors: &str) -> (Running, SocketAddr, SocketAddr) {
    let running = common::start_gatehouse(&config(upstream.addr, cors)).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin");
    (running, proxy, admin)
}

async fn send(proxy: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Client::connect(proxy)
        .await
        .send(request.body(Full::new(Bytes::new())).unwrap())
        .await
}

async fn preflight(proxy: SocketAddr, path: &str, origin: &str) -> Reply {
    send(
        proxy,
        "OPTIONS",
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "x-api-key"),
        ],
    )
    .await
}

fn counter(exposition: &str, route: &str, outcome: &str) -> f64 {
    common::metric_sample(
        exposition,
        "gatehouse_cors_preflights_total",
        &[("route", route), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn preflights_are_answered_at_the_edge() {
    let upstream = upstream().await;
    let (running, proxy, admin) = start(&upstream, WEB).await;

    for origin in ["https://app.example.com", "https://a.b.example.org"] {
        let reply = preflight(proxy, "/api/orders/1", origin).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            reply.header("access-control-allow-methods"),
            Some("GET, POST, DELETE")
        );
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some("content-type, x-api-key")
        );
        assert_eq!(reply.header("access-control-max-age"), Some("600"));
        assert_eq!(reply.header("vary"), Some("Origin"));
        assert!(reply.header("x-request-id").is_some());
        assert!(reply.body.is_empty());
    }
    // Not allowed: 204 without any Access-Control-Allow-* field, still at the edge.
    for origin in [
        "https://evil.test",
        "https://example.org",
        "null",
        "http://app.example.com",
    ] {
        let reply = preflight(proxy, "/api/orders/1", origin).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{origin}");
        for name in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
            "access-control-allow-credentials",
            "access-control-max-age",
        ] {
            assert_eq!(reply.header(name), None, "{origin}: {name}");
        }
    }
    assert!(
        upstream.received().is_empty(),
        "a preflight reached the upstream"
    );
    // Access rules come first: a denied client gets 403, not a preflight answer.
    let reply = preflight(proxy, "/denied/x", "https://app.example.com").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);

    // OPTIONS without Access-Control-Request-Method is no preflight: it is forwarded.
    let reply = send(
        proxy,
        "OPTIONS",
        "/api/x",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.received().len(), 1);
    // A route without CORS forwards preflights untouched, the upstream's fields included.
    let reply = preflight(proxy, "/other", "https://app.example.com").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(upstream.received().len(), 2);

    let exposition = common::get(admin, "/metrics").await.text();
    assert_eq!(counter(&exposition, "api", "allowed"), 2.0);
    assert_eq!(counter(&exposition, "api", "denied"), 4.0);
    let status: serde_json::Value =
        serde_json::from_slice(&common::get(admin, "/status").await.body).unwrap();
    let api = &status["routes"][0];
    assert_eq!(api["cors"]["name"], "web", "{api}");
    assert_eq!(api["cors"]["preflights_allowed"], 2, "{api}");
    assert_eq!(api["cors"]["preflights_denied"], 4, "{api}");
    assert_eq!(status["routes"][3]["cors"], serde_json::Value::Null);
    running.shutdown().await;
}

#[tokio::test]
async fn actual_responses_carry_the_policy_not_the_upstream_fields() {
    let upstream = upstream().await;
    let (running, proxy, _admin) = start(&upstream, WEB).await;

    let reply = send(
        proxy,
        "GET",
        "/api/a",
        &[("origin", "https://x.example.org")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://x.example.org")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-upstream, x-request-id")
    );
    assert_eq!(
        reply.header("access-control-allow-methods"),
        None,
        "the upstream's stays out"
    );
    let vary: Vec<_> = reply.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    // The Origin is passed upstream as sent.
    assert_eq!(
        upstream.received()[0].headers["origin"],
        "https://x.example.org"
    );

    // Another origin, or none: no CORS fields at all (the upstream's `*` removed).
    for headers in [vec![("origin", "https://evil.test")], vec![]] {
        let reply = send(proxy, "GET", "/api/a", &headers).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            None,
            "{headers:?}"
        );
        assert_eq!(reply.header("access-control-allow-credentials"), None);
    }
    // A route without CORS leaves the upstream's fields alone.
    let reply = send(proxy, "GET", "/plain", &[("origin", "https://evil.test")]).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    running.shutdown().await;
}

#[tokio::test]
async fn a_cached_response_is_answered_for_each_origin() {
    let upstream = upstream().await;
    let (running, proxy, _admin) = start(&upstream, WEB).await;
    let first = send(
        proxy,
        "GET",
        "/cached/page",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(
        first.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let hit = send(
        proxy,
        "GET",
        "/cached/page",
        &[("origin", "https://b.example.org")],
    )
    .await;
    assert_eq!(
        upstream.received().len(),
        1,
        "the second was not a cache hit"
    );
    assert_eq!(
        hit.header("access-control-allow-origin"),
        Some("https://b.example.org")
    );
    let refused = send(
        proxy,
        "GET",
        "/cached/page",
        &[("origin", "https://evil.test")],
    )
    .await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert_eq!(upstream.received().len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_without_credentials_answers_star() {
    let upstream = upstream().await;
    let (running, proxy, _admin) = start(&upstream, "[cors.web]\norigins = [\"*\"]\n").await;
    let reply = preflight(proxy, "/api/x", "https://anyone.test").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("GET, HEAD, POST")
    );
    assert_eq!(reply.header("access-control-allow-credentials"), None);
    assert_eq!(reply.header("access-control-max-age"), None);
    let reply = send(proxy, "GET", "/api/x", &[("origin", "https://anyone.test")]).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    running.shutdown().await;
}

#[test]
fn config_errors_are_placed() {
    let text = config(
        "127.0.0.1:9".parse().unwrap(),
        "[cors.web]\norigins = [\"*\", \"https://a.*.example.com\", \"example.com\"]\n\
         methods = [\"GET\", \"NOT A METHOD\"]\nheaders = [\"x ok\"]\ncredentials = true\n",
    )
    .replace("cors = \"web\"\naccess", "cors = \"nope\"\naccess");
    let errors = gatehouse::config::load_str(std::path::Path::new("t.toml"), &text)
        .expect_err("invalid")
        .to_string();
    for want in [
        "t.toml:16:8: route[0].cors: no cors named \"nope\" (configured: web)",
        "t.toml:44:17: cors.web.origins[1]: invalid origin \"https://a.*.example.com\"",
        "t.toml:44:44: cors.web.origins[2]: invalid origin \"example.com\"",
        "t.toml:45:19: cors.web.methods[1]: \"NOT A METHOD\" is not an HTTP method",
        "t.toml:46:12: cors.web.headers[0]: \"x ok\" is not a header name",
        "t.toml:47:15: cors.web.credentials: credentials = true cannot go with origins = [\"*\"]",
    ] {
        assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
    }
}
