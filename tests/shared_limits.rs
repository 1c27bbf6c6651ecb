//! Rate limits shared between replicas through a real redis-server (started by PID on a free
//! loopback port): two gatehouse processes with one shared limit admit its rate between them,
//! not twice it; Redis killed and restarted under load fails no request (the limits fall
//! back, then share again); a Redis that accepts and never answers holds no request past the
//! timeout and opens the breaker, which /metrics and /status show.

mod common;

use common::process::Process;
use common::redis::{HangingRedis, RedisServer};
use common::{Client, TestUpstream, metric_sample};
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn config(upstream: SocketAddr, redis_url: &str, limit: &str) -> String {
    config_with(upstream, redis_url, "", limit)
}

fn config_with(upstream: SocketAddr, redis_url: &str, redis_extra: &str, limit: &str) -> String {
    format!(
        r#"
[log]
level = "info"
access = "json"

[admin]
bind = "127.0.0.1:0"

[redis]
url = "{redis_url}"
timeout = "50ms"
{redis_extra}

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"
limits = ["api"]

[upstream.app]
servers = ["{upstream}"]

[limit.api]
shared = true
nodelay = true
{limit}
"#
    )
}

/// Sends requests on `connections` keep-alive connections to each of `proxies` until
/// `window` has passed; the statuses seen, by proxy.
async fn load(
    proxies: Vec<SocketAddr>,
    connections: usize,
    window: Duration,
    header: Option<&'static str>,
    stop: Arc<AtomicBool>,
) -> Vec<Vec<StatusCode>> {
    let until = Instant::now() + window;
    let mut tasks = Vec::new();
    for proxy in proxies {
        let mut per_proxy = Vec::new();
        for c in 0..connections {
            let stop = Arc::clone(&stop);
            per_proxy.push(tokio::spawn(async move {
                let mut client = Client::connect(proxy).await;
                let mut seen = Vec::new();
                let mut i = 0u64;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let mut request = http::Request::get("/").header("host", "test");
                    if let Some(name) = header {
                        request = request.header(name, format!("{proxy}-{c}-{i}"));
                    }
                    let reply = client.send(request.body(Default::default()).unwrap()).await;
                    seen.push(reply.status);
                }
                seen
            }));
        }
        tasks.push(per_proxy);
    }
    let mut out = Vec::new();
    for per_proxy in tasks {
        let mut seen = Vec::new();
        for task in per_proxy {
            seen.extend(task.await.expect("client task"));
        }
        out.push(seen);
    }
    out
}

/// The tests of this file one at a time: their load and their timings must not compete
/// with each other for the machine's cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn metrics(admin: SocketAddr) -> String {
    common::get(admin, "/metrics").await.text()
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&common::get(admin, "/status").await.text()).expect("status JSON")
}

/// Polls `/metrics` until `check` holds, within the test bound.
async fn wait_metrics(admin: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let text = metrics(admin).await;
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen in time:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sample(text, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_admit_the_shared_rate_between_them_not_twice_it() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let upstream = TestUpstream::named("app").await;
    // One key for the whole route: the cluster admits 200/s, with a burst of 10.
    // A timeout no call takes even with this test's load on two cores: what is measured here
    // is the sharing, not the fallback.
    let text = config(
        upstream.addr,
        &redis.url(),
        "rate = \"200/s\"\nburst = 10\nkey = \"route\"",
    )
    .replace("timeout = \"50ms\"", "timeout = \"1s\"");
    let mut first = Process::spawn(&text, "shared-rate-a");
    let mut second = Process::spawn(&text, "shared-rate-b");
    let proxies = [
        first.addr_logged("listening").await,
        second.addr_logged("listening").await,
    ];
    let admins = [
        first.addr_logged("admin listening").await,
        second.addr_logged("admin listening").await,
    ];
    // Both connected to Redis before the load starts.
    for admin in admins {
        let deadline = Instant::now() + common::WAIT;
        while status(admin).await["redis"]["connected"] != true {
            assert!(Instant::now() < deadline, "not connected to Redis in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let window = Duration::from_secs(3);
    let seen = load(proxies.to_vec(), 4, window, None, Arc::default()).await;
    let admitted: Vec<usize> = seen
        .iter()
        .map(|s| s.iter().filter(|c| **c == StatusCode::OK).count())
        .collect();
    let offered: usize = seen.iter().map(Vec::len).sum();
    let total: usize = admitted.iter().sum();
    // 200/s over 3 s, plus the burst of 11 at the start.
    let expected = 200.0 * window.as_secs_f64() + 11.0;
    eprintln!("admitted {total} ({admitted:?} by process) of {offered}; expected {expected}");
    assert!(
        offered as f64 > 3.0 * expected,
        "the load must be well over the rate to show anything: {offered} requests offered"
    );
    assert!(
        (total as f64 - expected).abs() <= 0.10 * expected,
        "admitted {total} ({admitted:?} by process) of {offered}; expected {expected} ± 10%"
    );
    for s in &seen {
        assert!(
            s.iter()
                .all(|c| *c == StatusCode::OK || *c == StatusCode::TOO_MANY_REQUESTS),
            "only 200 and 429 expected"
        );
    }
    // Both shared the work, and most decisions took no call.
    for admin in admins {
        let text = metrics(admin).await;
        let via = |v: &str| {
            sample(
                &text,
                "gatehouse_shared_limit_decisions_total",
                &[("limit", "api"), ("via", v)],
            )
        };
        let without_call = via("lease") + via("refused_locally");
        eprintln!(
            "lease {} redis {} refused_locally {} fallback {}; calls {}",
            via("lease"),
            via("redis"),
            via("refused_locally"),
            via("fallback"),
            sample(&text, "gatehouse_shared_calls_total", &[("outcome", "ok")])
        );
        assert!(via("redis") > 0.0, "{text}");
        assert!(
            without_call > via("redis"),
            "most decisions should take no call: {text}"
        );
        assert_eq!(via("fallback"), 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_fails_no_request() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let upstream = TestUpstream::named("app").await;
    // A key per request: each one is decided by a call to Redis while it is up.
    let text = config(
        upstream.addr,
        &redis.url(),
        "rate = \"10/s\"\nburst = 5\nkey = \"header:x-client\"",
    );
    let mut process = Process::spawn(&text, "shared-kill");
    let proxy = process.addr_logged("listening").await;
    let admin = process.addr_logged("admin listening").await;

    // Until sharing has resumed (bounded by the test's waits).
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = tokio::spawn(load(
        vec![proxy],
        4,
        Duration::from_secs(60),
        Some("x-client"),
        Arc::clone(&stop),
    ));
    let via = |text: &str, v: &str| {
        sample(
            text,
            "gatehouse_shared_limit_decisions_total",
            &[("limit", "api"), ("via", v)],
        )
    };
    wait_metrics(admin, "calls to Redis", |t| via(t, "redis") > 20.0).await;
    redis.kill();
    let during = wait_metrics(admin, "decisions without Redis", |t| {
        via(t, "fallback") > 20.0 && sample(t, "gatehouse_shared_breaker_state", &[]) != 0.0
    })
    .await;
    let status_down = status(admin).await;
    assert_ne!(status_down["redis"]["breaker"], "closed", "{status_down}");
    redis.restart();
    let calls_before = via(&during, "redis");
    wait_metrics(admin, "calls to Redis again", |t| {
        via(t, "redis") > calls_before + 20.0
            && sample(t, "gatehouse_shared_breaker_state", &[]) == 0.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let seen = loaded.await.expect("load");
    let failed: Vec<_> = seen[0].iter().filter(|c| **c != StatusCode::OK).collect();
    assert!(seen[0].len() > 100, "too little load: {}", seen[0].len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        seen[0].len()
    );
    // Sharing resumed: the limit's keys are in the restarted Redis.
    assert!(shared_keys(&redis) > 0, "no shared keys after the restart");
    let log = process.all_lines_so_far().await.join("\n");
    assert_eq!(
        log.matches("Redis unavailable").count(),
        1,
        "one log line per outage:\n{log}"
    );
    assert!(log.contains("Redis available again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_holds_no_request_past_the_timeout_and_opens_the_breaker() {
    let _serial = SERIAL.lock().await;
    let hanging = HangingRedis::start().await;
    let upstream = TestUpstream::named("app").await;
    // The breaker stays open for the whole test: no probe call among the timed requests.
    let text = config_with(
        upstream.addr,
        &hanging.url(),
        "breaker_open_for = \"30s\"\nbreaker_max_open_for = \"30s\"",
        "rate = \"10/s\"\nburst = 5\nkey = \"header:x-client\"",
    )
    // Long enough to tell a request that waited for it from one that did not.
    .replace("timeout = \"50ms\"", "timeout = \"200ms\"");
    let running = common::start_gatehouse(&text).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin");
    let mut client = Client::connect(proxy).await;
    let mut slowest = Duration::ZERO;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let reply = client
            .send(
                http::Request::get("/")
                    .header("host", "test")
                    .header("x-client", format!("c{i}"))
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        let took = started.elapsed();
        latencies.push(took);
        slowest = slowest.max(took);
        // on_redis_error defaults to "local": the request passes on this process's count.
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The first three waited for the 200 ms timeout, and no longer (the rest is a debug
    // build's own time on a shared machine).
    assert!(
        latencies[..3]
            .iter()
            .all(|took| *took >= Duration::from_millis(195)),
        "{latencies:?}"
    );
    assert!(
        slowest < Duration::from_millis(200 + 250),
        "a request waited {slowest:?} on a hanging Redis"
    );
    // After the breaker opened (3 failures), no request waits on Redis at all.
    let late = latencies[3..].iter().max().copied().unwrap_or_default();
    assert!(
        late < Duration::from_millis(100),
        "late requests: {latencies:?}"
    );
    let text = metrics(admin).await;
    assert!(
        sample(
            &text,
            "gatehouse_shared_calls_total",
            &[("outcome", "timeout")]
        ) >= 3.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "gatehouse_shared_breaker_state", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "gatehouse_shared_outages_total", &[]),
        1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "gatehouse_shared_limit_decisions_total",
            &[("limit", "api"), ("via", "fallback")]
        ) >= 17.0,
        "{text}"
    );
    let status = status(admin).await;
    assert_eq!(status["redis"]["breaker"], "open", "{status}");
    assert_eq!(status["limits"]["api"]["shared"], true, "{status}");
    assert!(
        status["redis"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer")),
        "{status}"
    );
    running.shutdown().await;
}

#[test]
fn bad_redis_and_shared_settings_are_located() {
    let text = r#"
[redis]
url = "http://127.0.0.1:6379"
timeout = "0s"

[[route]]
upstream = "app"
limits = ["api"]

[upstream.app]
servers = ["127.0.0.1:1"]

[limit.api]
rate = "10/s"
shared = true
"#;
    let errors = gatehouse::config::load_str(std::path::Path::new("t.toml"), text)
        .expect_err("invalid")
        .to_string();
    assert!(errors.contains("t.toml:3:7: redis.url"), "{errors}");
    assert!(errors.contains("t.toml:4:11: redis.timeout"), "{errors}");
    // Without nodelay, a shared limit is refused where `shared` is written.
    assert!(
        errors.contains("t.toml:15:10: limit.api.shared"),
        "{errors}"
    );
    assert!(errors.contains("nodelay = true"), "{errors}");

    let no_redis = text.replace(
        "[redis]\nurl = \"http://127.0.0.1:6379\"\ntimeout = \"0s\"\n",
        "",
    );
    let errors = gatehouse::config::load_str(std::path::Path::new("t.toml"), &no_redis)
        .expect_err("invalid")
        .to_string();
    assert!(errors.contains("set [redis] url"), "{errors}");
}

/// Keys the shared limit `api` holds in `redis`.
fn shared_keys(redis: &RedisServer) -> usize {
    let reply = redis
        .command(&["KEYS", "gatehouse:limit:api:*"])
        .expect("redis answers");
    // `*N\r\n...`: an array of N keys.
    reply
        .strip_prefix('*')
        .and_then(|rest| rest.split("\r\n").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an array: {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_shared_limit_to_another_redis_and_back_to_local() {
    let _serial = SERIAL.lock().await;
    let first = RedisServer::start();
    let second = RedisServer::start();
    let upstream = TestUpstream::named("app").await;
    let limit = "rate = \"10/s\"\nburst = 5\nkey = \"header:x-client\"";
    let running = common::start_gatehouse(&config(upstream.addr, &first.url(), limit)).await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let mut send = async |name: &str| {
        let reply = client
            .send(
                http::Request::get("/")
                    .header("host", "test")
                    .header("x-client", name)
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    };
    send("a").await;
    assert_eq!((shared_keys(&first), shared_keys(&second)), (1, 0));

    let path = std::path::Path::new("test.toml");
    let report = running
        .reloader
        .reload_text("test", path, &config(upstream.addr, &second.url(), limit))
        .await;
    assert!(report.ok, "{:?}", report.errors);
    send("b").await;
    assert_eq!((shared_keys(&first), shared_keys(&second)), (1, 1));

    // Shared no more, and no [redis]: counted in the process, nothing written.
    let local = config(upstream.addr, "", &format!("{limit}\n"))
        .replace("shared = true\n", "")
        .replace("[redis]\nurl = \"\"", "[redis]");
    let report = running.reloader.reload_text("test", path, &local).await;
    assert!(report.ok, "{:?}", report.errors);
    send("c").await;
    assert_eq!((shared_keys(&first), shared_keys(&second)), (1, 1));
    let status = status(running.admin_addr.expect("admin")).await;
    assert!(status["redis"].is_null(), "{status}");
    assert_eq!(status["limits"]["api"]["shared"], false, "{status}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_error_decides_while_redis_is_unreachable() {
    let _serial = SERIAL.lock().await;
    let unreachable = common::refused_addr().await;
    let upstream = TestUpstream::named("app").await;
    for (choice, expected) in [
        // The process's own count: one a minute.
        ("local", [200, 429, 429, 429, 429, 429]),
        ("allow", [200; 6]),
        ("deny", [429; 6]),
    ] {
        let limit = format!("rate = \"1/m\"\nkey = \"route\"\non_redis_error = \"{choice}\"");
        let running = common::start_gatehouse(&config(
            upstream.addr,
            &format!("redis://{unreachable}"),
            &limit,
        ))
        .await;
        let mut client = Client::connect(running.listener_addrs[0]).await;
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            let started = Instant::now();
            let reply = client.get("/").await;
            assert!(started.elapsed() < Duration::from_millis(250), "{choice}");
            seen.push(reply.status.as_u16());
        }
        assert_eq!(seen, expected, "on_redis_error = {choice:?}");
        let text = metrics(running.admin_addr.expect("admin")).await;
        assert_eq!(
            sample(
                &text,
                "gatehouse_shared_limit_decisions_total",
                &[("limit", "api"), ("via", "fallback")]
            ),
            6.0,
            "{choice}: {text}"
        );
        running.shutdown().await;
    }
}
