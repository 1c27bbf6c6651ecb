//! `config/examples/routes.toml` as shipped, run over its embedded demo backends (its fixed
//! ports swapped for free ones), and the routing tools on it: `gatehouse route` and
//! `gatehouse check --routes-test` with the shipped cases, and a case that does not hold.

mod common;

use bytes::Bytes;
use common::Client;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::path::Path;
use std::process::Command;

const EXAMPLE: &str = include_str!("../config/examples/routes.toml");
const BINARY: &str = env!("CARGO_BIN_EXE_gatehouse");

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

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = if method == "POST" {
        Bytes::from_static(br#"{"customer": "7", "items": ["soup"]}"#)
    } else {
        Bytes::new()
    };
    request.body(Full::new(body)).unwrap()
}

#[tokio::test]
async fn the_example_routes_as_its_comments_say() {
    let running = common::start_gatehouse(&example_on_free_ports()).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;

    let health = client.send(request("GET", "/healthz", &[])).await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok\n")
    );
    let script = client.send(request("GET", "/x/index.PHP", &[])).await;
    assert_eq!(script.status, StatusCode::FORBIDDEN);

    // A created order, read back through the regex route's rewrite and the prefix route.
    let created = client.send(request("POST", "/api/orders", &[])).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let listed = client.send(request("GET", "/users/7/orders", &[])).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert!(listed.text().contains("\"orders\""), "{}", listed.text());

    let bare = client.send(request("GET", "/api", &[])).await;
    assert_eq!(bare.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(bare.header("location"), Some("/api/"));
    let old = client.send(request("GET", "/old/orders", &[])).await;
    assert_eq!(old.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(old.header("location"), Some("/api/orders"));
    let root = client.send(request("GET", "/", &[])).await;
    assert_eq!(root.header("location"), Some("/api/orders"));

    // /admin/stats is the demo's /_demo/stats, for loopback clients only.
    let stats = client.send(request("GET", "/admin/stats", &[])).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text());

    // A CORS preflight is answered at the edge.
    let preflight = client
        .send(request(
            "OPTIONS",
            "/api/orders",
            &[
                ("origin", "http://localhost:3000"),
                ("access-control-request-method", "POST"),
            ],
        ))
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );

    let missing = client.send(request("GET", "/menu", &[])).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.text(), "{\"error\": \"no such page\"}\n");
    assert_eq!(missing.header("content-type"), Some("application/json"));
}

#[test]
fn the_shipped_routing_cases_hold_and_a_wrong_one_fails() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/routes.toml");
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/routes.test.toml");
    let ok = Command::new(BINARY)
        .arg("check")
        .arg("-c")
        .arg(&config)
        .arg("--routes-test")
        .arg(&cases)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("routes ok: 16 case(s)"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("gatehouse-routes-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        "[[case]]\nrequest = \"GET http://localhost/api/orders/3\"\nroute = \"api\"\ntarget = \"/api/orders/3\"\n",
    )
    .unwrap();
    let failed = Command::new(BINARY)
        .arg("check")
        .arg("-c")
        .arg(&config)
        .arg("--routes-test")
        .arg(&wrong)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains(r#"case[0] GET http://localhost/api/orders/3: target: expected "/api/orders/3", got "/orders/3""#),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn route_explains_a_request() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/routes.toml");
    let output = Command::new(BINARY)
        .args(["route", "-c"])
        .arg(&config)
        .args(["GET", "http://localhost/orders/1", "-H", "x-canary: 1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("route: orders-canary (path /orders)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "beat orders: a more specific host, an exact path, a regex or a longer prefix wins"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("forward: upstream orders_v2, target /orders/1"),
        "{stdout}"
    );

    let denied = Command::new(BINARY)
        .args(["route", "-c"])
        .arg(&config)
        .args([
            "GET",
            "http://localhost/admin/stats",
            "--client",
            "192.0.2.1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert!(stdout.contains("policy: access: denied"), "{stdout}");
    assert!(stdout.contains("answer: 403"), "{stdout}");
}
