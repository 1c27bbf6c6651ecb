//! Forward authentication (`[forward_auth.NAME]`, nginx's `auth_request`, Traefik's
//! ForwardAuth) over real sockets: a real authentication service (a hyper server in the test)
//! admitting by header and copying headers onto the request, denying with 401 and 403 (its
//! answer passed on), failing with 500 or a redirect (client 500), hanging (500 within the
//! timeout), absent (500); admissions remembered for `cache_for`; CORS preflights before it
//! and limits after it; the metric and /status.

mod common;

use bytes::Bytes;
use common::{Client, Recorded, Reply, TestUpstream};
use gatehouse::app::Running;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The authentication service: by the `Authorization` it is sent.
fn authenticate(request: &Recorded) -> Response<Full<Bytes>> {
    let token = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let answer = |status: u16| Response::builder().status(status);
    let response = match token {
        "Bearer alice" | "Bearer bob" => answer(200)
            .header("x-user", &token[7..])
            .header("x-roles", "reader")
            .header("x-not-copied", "1"),
        "Bearer forbidden" => answer(403).header("content-type", "text/plain"),
        "Bearer broken" => answer(500),
        "Bearer moved" => answer(302).header("location", "https://sso.test/elsewhere"),
        _ => answer(401)
            .header("www-authenticate", "Bearer realm=\"sso\"")
            .header("location", "https://sso.test/login")
            .header("x-internal", "not for the client"),
    };
    let body = match token {
        "Bearer forbidden" => "not for you\n",
        "" => "log in first\n",
        _ => "",
    };
    response.body(Full::new(Bytes::from(body))).unwrap()
}

fn config(app: SocketAddr, auth: SocketAddr, hang: SocketAddr, dead: SocketAddr) -> String {
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
forward_auth = "sso"
cors = "web"

[[route]]
name = "cached"
path_prefix = "/cached/"
upstream = "app"
forward_auth = "sso_cached"

[[route]]
name = "limited"
path_prefix = "/limited/"
upstream = "app"
forward_auth = "sso"
limits = ["one"]

[[route]]
name = "hang"
path_prefix = "/hang/"
upstream = "app"
forward_auth = "hang"

[[route]]
name = "dead"
path_prefix = "/dead/"
upstream = "app"
forward_auth = "dead"

[[route]]
name = "open"
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = ["{app}"]

[upstream.auth]
servers = ["{auth}"]

[upstream.hang]
servers = ["{hang}"]

[upstream.dead]
servers = ["{dead}"]

[forward_auth.sso]
upstream = "auth"
uri = "/check?app=orders"
request_headers = ["authorization", "cookie"]
copy_headers = ["x-user", "x-roles"]

[forward_auth.sso_cached]
upstream = "auth"
uri = "/check"
request_headers = ["authorization"]
copy_headers = ["x-user"]
cache_for = "30s"
cache_key = ["header:authorization"]

[forward_auth.hang]
upstream = "hang"
timeout = "300ms"

[forward_auth.dead]
upstream = "dead"

[limit.one]
rate = "1/m"
nodelay = true

[cors.web]
origins = ["https://app.example.com"]
"#
    )
}

struct Setup {
    running: Running,
    proxy: SocketAddr,
    admin: SocketAddr,
    app: TestUpstream,
    auth: TestUpstream,
    hang: TestUpstream,
}

async fn setup() -> Setup {
    let app = TestUpstream::named("app").await;
    let auth = TestUpstream::with_responder("auth", Arc::new(authenticate)).await;
    let hang = TestUpstream::with_handler(
        "hang",
        Arc::new(|_request| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Response::new(Full::new(Bytes::new()))
            })
        }),
    )
    .await;
    let dead = common::refused_addr().await;
    let running = common::start_gatehouse(&config(app.addr, auth.addr, hang.addr, dead)).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin");
    Setup {
        running,
        proxy,
        admin,
        app,
        auth,
        hang,
    }
}

async fn send(proxy: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Client::connect(proxy)
        .await
        .send(
            request
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap(),
        )
        .await
}

fn outcome(exposition: &str, route: &str, outcome: &str) -> f64 {
    common::metric_sample(
        exposition,
        "gatehouse_forward_auth_requests_total",
        &[("route", route), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn an_admitted_request_carries_the_services_headers_in_place_of_the_clients() {
    let s = setup().await;
    let reply = send(
        s.proxy,
        "POST",
        "/api/orders?x=1",
        &[
            ("authorization", "Bearer alice"),
            ("cookie", "sid=42"),
            ("x-user", "mallory"),
            ("x-roles", "admin"),
            ("x-private", "not for the auth service"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "app");

    let forwarded = s.app.received();
    assert_eq!(forwarded.len(), 1);
    let request = &forwarded[0];
    let all = |name: &str| -> Vec<_> { request.headers.get_all(name).iter().cloned().collect() };
    assert_eq!(all("x-user"), ["alice"], "the client's own x-user is gone");
    assert_eq!(all("x-roles"), ["reader"]);
    assert!(request.headers.get("x-not-copied").is_none());
    assert_eq!(
        request.body, "payload",
        "the body goes upstream, not to the check"
    );
    assert_eq!(request.method, "POST");

    let checks = s.auth.received();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(check.method, "GET");
    assert_eq!(check.uri, "/check?app=orders");
    assert!(check.body.is_empty(), "the check has no body");
    assert_eq!(check.headers["authorization"], "Bearer alice");
    assert_eq!(check.headers["cookie"], "sid=42");
    assert!(check.headers.get("x-private").is_none());
    assert!(check.headers.get("content-length").is_none_or(|v| v == "0"));
    assert_eq!(check.headers["x-original-method"], "POST");
    assert_eq!(check.headers["x-original-uri"], "/api/orders?x=1");
    assert_eq!(check.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(check.headers["x-forwarded-proto"], "http");
    assert_eq!(
        check.headers["x-forwarded-host"],
        s.proxy.to_string().as_str()
    );
    assert!(check.headers.get("x-request-id").is_some());

    // A route without forward auth never asks.
    assert_eq!(
        send(s.proxy, "GET", "/open", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(s.auth.received().len(), 1);
    s.running.shutdown().await;
}

#[tokio::test]
async fn denials_pass_the_services_answer_and_failures_are_500() {
    let s = setup().await;
    let reply = send(
        s.proxy,
        "GET",
        "/api/x",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The route's CORS policy answers the refusal too, for the browser's script to read it.
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"sso\"")
    );
    assert_eq!(reply.header("location"), Some("https://sso.test/login"));
    assert_eq!(reply.header("x-internal"), None);
    assert_eq!(reply.text(), "log in first\n");
    assert!(reply.header("x-request-id").is_some());

    let reply = send(
        s.proxy,
        "GET",
        "/api/x",
        &[("authorization", "Bearer forbidden")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.text(), "not for you\n");

    for token in ["Bearer broken", "Bearer moved"] {
        let reply = send(s.proxy, "GET", "/api/x", &[("authorization", token)]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{token}");
        assert_eq!(reply.header("location"), None, "{token}");
    }
    assert!(
        s.app.received().is_empty(),
        "a refused request reached the upstream"
    );

    // No server to ask: 500.
    let reply = send(
        s.proxy,
        "GET",
        "/dead/x",
        &[("authorization", "Bearer alice")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);

    let exposition = common::get(s.admin, "/metrics").await.text();
    assert_eq!(outcome(&exposition, "api", "denied"), 2.0);
    assert_eq!(outcome(&exposition, "api", "error"), 2.0);
    assert_eq!(outcome(&exposition, "api", "allowed"), 0.0);
    assert_eq!(outcome(&exposition, "dead", "error"), 1.0);
    s.running.shutdown().await;
}

#[tokio::test]
async fn a_hanging_service_is_500_within_the_timeout() {
    let s = setup().await;
    let started = Instant::now();
    let reply = send(s.proxy, "GET", "/hang/x", &[]).await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        took >= Duration::from_millis(300),
        "answered before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} for a 300ms timeout"
    );
    assert_eq!(
        s.hang.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(s.app.received().is_empty());
    let exposition = common::get(s.admin, "/metrics").await.text();
    assert_eq!(outcome(&exposition, "hang", "error"), 1.0);
    s.running.shutdown().await;
}

#[tokio::test]
async fn admissions_are_remembered_for_cache_for_by_their_key() {
    let s = setup().await;
    for _ in 0..3 {
        let reply = send(
            s.proxy,
            "GET",
            "/cached/a",
            &[("authorization", "Bearer alice"), ("x-user", "mallory")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(s.auth.received().len(), 1, "later requests asked again");
    // Each of them went upstream with the remembered x-user, never the client's.
    let users: Vec<_> = s
        .app
        .received()
        .iter()
        .map(|r| r.headers["x-user"].clone())
        .collect();
    assert_eq!(users, ["alice", "alice", "alice"]);
    // Another key is asked about; a denial is never remembered.
    assert_eq!(
        send(
            s.proxy,
            "GET",
            "/cached/a",
            &[("authorization", "Bearer bob")]
        )
        .await
        .status,
        StatusCode::OK
    );
    for _ in 0..2 {
        assert_eq!(
            send(
                s.proxy,
                "GET",
                "/cached/a",
                &[("authorization", "Bearer nobody")]
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED
        );
    }
    // No key (no Authorization): asked every time.
    for _ in 0..2 {
        send(s.proxy, "GET", "/cached/a", &[]).await;
    }
    assert_eq!(s.auth.received().len(), 6);

    let exposition = common::get(s.admin, "/metrics").await.text();
    assert_eq!(outcome(&exposition, "cached", "allowed"), 2.0);
    assert_eq!(outcome(&exposition, "cached", "cached"), 2.0);
    assert_eq!(outcome(&exposition, "cached", "denied"), 4.0);
    let status: serde_json::Value =
        serde_json::from_slice(&common::get(s.admin, "/status").await.body).unwrap();
    let route = &status["routes"][1];
    assert_eq!(route["forward_auth"]["name"], "sso_cached", "{route}");
    assert_eq!(route["forward_auth"]["cached"], 2, "{route}");
    assert_eq!(route["forward_auth"]["cached_admissions"], 2, "{route}");
    assert_eq!(route["forward_auth"]["cache_for_ms"], 30_000, "{route}");
    assert_eq!(status["routes"][5]["forward_auth"], serde_json::Value::Null);
    s.running.shutdown().await;
}

#[tokio::test]
async fn preflights_come_before_it_and_limits_after_it() {
    let s = setup().await;
    // A CORS preflight is answered without asking (browsers send it without credentials).
    let reply = send(
        s.proxy,
        "OPTIONS",
        "/api/x",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(s.auth.received().is_empty());

    // Refused requests do not spend the route's limit (one a minute).
    for _ in 0..3 {
        assert_eq!(
            send(s.proxy, "GET", "/limited/x", &[]).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        send(
            s.proxy,
            "GET",
            "/limited/x",
            &[("authorization", "Bearer alice")]
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            s.proxy,
            "GET",
            "/limited/x",
            &[("authorization", "Bearer alice")]
        )
        .await
        .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    s.running.shutdown().await;
}

#[test]
fn config_errors_are_placed() {
    let text = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
                [[route]]\nupstream = \"app\"\nforward_auth = \"nope\"\n\
                [upstream.app]\nservers = [\"127.0.0.1:9\"]\n\
                [forward_auth.a]\nupstream = \"missing\"\nuri = \"check\"\n\
                copy_headers = [\"x user\"]\ncache_for = \"10s\"\ntimeout = \"0s\"\n\
                [forward_auth.b]\nupstream = \"app\"\ncache_for = \"10s\"\ncache_key = \"route\"\n";
    let errors = gatehouse::config::load_str(std::path::Path::new("t.toml"), text)
        .expect_err("invalid")
        .to_string();
    for want in [
        "t.toml:6:16: route[0].forward_auth: no forward_auth named \"nope\" (configured: a, b)",
        "t.toml:10:12: forward_auth.a.upstream: no upstream named \"missing\" (configured: app)",
        "t.toml:11:7: forward_auth.a.uri: \"check\" is not a path",
        "t.toml:12:17: forward_auth.a.copy_headers[0]: \"x user\" is not a header name",
        "t.toml:13:13: forward_auth.a.cache_key: cache_for needs a cache_key",
        "t.toml:14:11: forward_auth.a.timeout: must be greater than zero",
        "t.toml:18:13: forward_auth.b.cache_key: invalid cache key \"route\"",
    ] {
        assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
    }
}
