//! `config/examples/shared-a.toml` and `shared-b.toml` as shipped: both check, and run
//! together (their fixed ports swapped for free ones, their Redis for one started here) they
//! share the cache (a response fetched through A is a shared-tier hit through B) and the rate
//! limit (counted for both replicas together).

mod common;

use bytes::Bytes;
use common::Client;
use common::redis::RedisServer;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::path::Path;
use std::time::{Duration, Instant};

const A: &str = include_str!("../config/examples/shared-a.toml");
const B: &str = include_str!("../config/examples/shared-b.toml");

#[test]
fn both_replicas_check_as_shipped() {
    for (name, text, proxy, admin) in [
        ("shared-a.toml", A, "127.0.0.1:8081", "127.0.0.1:9091"),
        ("shared-b.toml", B, "127.0.0.1:8082", "127.0.0.1:9092"),
    ] {
        let config = gatehouse::config::load_str(Path::new(name), text)
            .unwrap_or_else(|e| panic!("config/examples/{name} does not check:\n{e}"));
        assert_eq!(config.listeners[0].bind.get_ref(), proxy);
        assert_eq!(config.admin.bind.get_ref(), admin);
        assert_eq!(config.redis.url.get_ref(), "redis://127.0.0.1:6379");
        assert!(*config.caches["orders"].shared.get_ref());
        assert!(*config.rate_limits["everyone"].shared.get_ref());
    }
    // Only A runs the demo backends; B proxies to A's.
    assert!(A.contains("[demo]") && !B.contains("[demo]"));
}

#[test]
fn gatehouse_check_accepts_both() {
    for name in ["shared-a.toml", "shared-b.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/examples")
            .join(name);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run gatehouse check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("config ok"),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "shop.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_share_the_cache_and_the_limit() {
    let redis = RedisServer::start();
    let mut a = A
        .replace("127.0.0.1:8081", "127.0.0.1:0")
        .replace("127.0.0.1:9091", "127.0.0.1:0")
        .replace("redis://127.0.0.1:6379", &redis.url());
    let mut b = B
        .replace("127.0.0.1:8082", "127.0.0.1:0")
        .replace("127.0.0.1:9092", "127.0.0.1:0")
        .replace("redis://127.0.0.1:6379", &redis.url());
    for port in ["8001", "8002", "8003"] {
        let free = format!("127.0.0.1:{}", common::unclaimed_port());
        let fixed = format!("127.0.0.1:{port}");
        a = a.replace(&fixed, &free);
        b = b.replace(&fixed, &free);
    }
    let a = common::start_gatehouse(&a).await;
    let b = common::start_gatehouse(&b).await;
    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;

    let first = to_a.send(get("/cached/orders")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert!(first.text().contains("\"orders\""), "{}", first.text());
    let status = first.header("cache-status").unwrap_or("").to_owned();
    assert!(status.contains("stored"), "{status}");
    // A's write to Redis is in the background: waited for, within a bounded time.
    let deadline = Instant::now() + common::WAIT;
    loop {
        let text = common::get(a.admin_addr.expect("admin"), "/metrics")
            .await
            .text();
        let written = common::metric_sample(
            &text,
            "gatehouse_shared_cache_writes_total",
            &[("cache", "orders"), ("outcome", "ok")],
        );
        if written == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A wrote nothing to Redis:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shared = to_b.send(get("/cached/orders")).await;
    let status = shared.header("cache-status").unwrap_or("").to_owned();
    assert!(
        status.contains("hit") && status.contains("detail=shared"),
        "{status}"
    );
    assert_eq!(shared.body, first.body, "the response A fetched");

    // The limit: 10/s for both together, no burst. Twenty requests at once through the two
    // replicas: about one passes (two if a 100 ms tick falls inside), not one per replica
    // and not ten.
    let mut ok = 0;
    let started = Instant::now();
    for _ in 0..10 {
        for client in [&mut to_a, &mut to_b] {
            let reply = client.send(get("/limited/orders")).await;
            match reply.status {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}: {}", reply.text()),
            }
        }
    }
    let elapsed = started.elapsed();
    // At most one per 100 ms passed, plus the first, across both replicas.
    let allowed = 1 + (elapsed.as_millis() / 100) as usize;
    assert!(ok >= 1 && ok <= allowed, "{ok} passed in {elapsed:?}");
    a.shutdown().await;
    b.shutdown().await;
}
