//! `config/examples/edge.toml` as shipped, run over its embedded demo backends (its fixed
//! ports swapped for free ones): the rate-limited route, the sticky route, the client named by
//! a trusted proxy, compression on every route, and what /metrics and /status say about them.

mod common;

use bytes::Bytes;
use common::Client;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::collections::BTreeSet;
use std::path::Path;

const EXAMPLE: &str = include_str!("../config/examples/edge.toml");

/// The example with every fixed port replaced: listener and admin by port 0, the demo
/// backends (and the servers that name them) by ports free now.
fn example_on_free_ports() -> String {
    let mut text = EXAMPLE
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0");
    for port in ["8001", "8002", "8003"] {
        text = text.replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", common::unclaimed_port()),
        );
    }
    text
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

#[test]
fn the_example_checks_as_shipped() {
    let config = gatehouse::config::load_str(Path::new("edge.toml"), EXAMPLE)
        .unwrap_or_else(|e| panic!("config/examples/edge.toml does not check:\n{e}"));
    assert_eq!(config.listeners[0].bind.get_ref(), "127.0.0.1:8080");
    assert_eq!(config.admin.bind.get_ref(), "127.0.0.1:9090");
}

#[tokio::test]
async fn the_example_limits_hashes_and_trusts_as_it_says() {
    let running = common::start_gatehouse(&example_on_free_ports()).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");
    let mut client = Client::connect(proxy).await;

    // /limited/orders reaches /orders; 5/s without burst: the second at once is refused.
    let first = client.send(get("/limited/orders", &[])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert!(
        first.text().contains("\"orders\""),
        "the order list: {}",
        first.text()
    );
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per_client\";q=5;w=1")
    );
    let second = client.send(get("/limited/orders", &[])).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.header("retry-after"), Some("1"));
    // A client behind the trusted proxy (127.0.0.1 here) has its own allowance.
    let behind = client
        .send(get("/limited/orders", &[("x-forwarded-for", "192.0.2.7")]))
        .await;
    assert_eq!(behind.status, StatusCode::OK);

    // /sticky/orders: each user always on one backend, the users over more than one.
    let mut backends_of_users = BTreeSet::new();
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let reply = client
                .send(get("/sticky/orders", &[("x-user", user)]))
                .await;
            assert_eq!(reply.status, StatusCode::OK);
            seen.insert(reply.header("x-served-by").expect("x-served-by").to_owned());
        }
        assert_eq!(seen.len(), 1, "{user} was served by {seen:?}");
        backends_of_users.extend(seen);
    }
    assert!(backends_of_users.len() >= 2, "{backends_of_users:?}");

    // Every route compresses JSON, the best coding first; the demo's (empty) list included.
    for path in ["/orders", "/limited/orders", "/sticky/orders"] {
        let reply = client
            .send(get(
                path,
                &[
                    ("accept-encoding", "gzip, br, zstd"),
                    ("x-user", "alice"),
                    ("x-forwarded-for", "192.0.2.99"),
                ],
            ))
            .await;
        assert_eq!(reply.header("content-encoding"), Some("zstd"), "{path}");
        assert!(
            reply
                .header("vary")
                .is_some_and(|vary| vary.eq_ignore_ascii_case("accept-encoding")),
            "{path}"
        );
        let plain = zstd::decode_all(&reply.body[..]).expect("zstd body");
        assert!(
            serde_json::from_slice::<serde_json::Value>(&plain).is_ok(),
            "{path}"
        );
    }

    let metrics = common::get(admin, "/metrics").await.text();
    let sample = |name: &str, labels: &[(&str, &str)]| {
        common::metric_sample(&metrics, name, labels).unwrap_or(0.0)
    };
    assert_eq!(
        sample(
            "gatehouse_rate_limit_requests_total",
            &[("limit", "per_client"), ("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "gatehouse_upstream_hash_picks_total",
            &[("upstream", "orders_by_user"), ("placement", "home")]
        ),
        33.0,
        "8 users x 4 requests, and alice's compressed one"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&common::get(admin, "/status").await.body).expect("JSON");
    assert_eq!(status["limits"]["per_client"]["rejected"], 1);
    assert_eq!(
        status["upstreams"]["orders_by_user"]["balance"],
        "consistent_hash"
    );
    running.shutdown().await;
}
