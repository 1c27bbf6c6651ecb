//! The shared cache tier between two replicas of gatehouse (two instances in this process)
//! and a real redis-server (started by PID on a free loopback port): a response fetched
//! through one is a shared-tier hit through the other with its age carried on, the origin
//! asked once; purges and unsafe requests on one replica are honoured by the other; Redis
//! killed under load fails no request; a hanging Redis holds no request past its timeout; a
//! claim on an origin fetch whose answer never came back is given back.

mod common;

use bytes::Bytes;
use common::redis::{HangingRedis, RedisServer};
use common::{Client, Recorded, Reply, TestUpstream, metric_sample};
use gatehouse::app::Running;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Both replicas name the same host, so that they key their caches alike.
const HOST: &str = "shared.test";

fn config(origin: SocketAddr, redis_url: &str, cache_extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access = "off"

[redis]
url = "{redis_url}"
timeout = "100ms"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
upstream = "app"
cache = "c"

[upstream.app]
servers = ["{origin}"]

[cache.c]
shared = true
{cache_extra}
"#
    )
}

/// An origin answering `path #n` (n counting that path's requests), fresh for a minute and
/// already 30 s old; `/big/…` answers 4 KiB, `/lang…` varies by Accept-Language.
async fn origin() -> TestUpstream {
    let counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    TestUpstream::with_responder(
        "origin",
        Arc::new(move |request: &Recorded| {
            let path = request.uri.path().to_owned();
            let n = {
                let mut counts = counts.lock().unwrap();
                let n = counts.entry(path.clone()).or_default();
                *n += 1;
                *n
            };
            let language = request
                .headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let body = if path.starts_with("/big/") {
                Bytes::from(vec![b'x'; 4096])
            } else if path.starts_with("/lang") {
                Bytes::from(format!("{path} #{n} {language}"))
            } else {
                Bytes::from(format!("{path} #{n}"))
            };
            let mut response = Response::builder()
                .header("cache-control", "max-age=60")
                .header("age", "30");
            if path.starts_with("/lang") {
                response = response.header("vary", "accept-language");
            }
            response.body(Full::new(body)).unwrap()
        }),
    )
    .await
}

fn origin_count(origin: &TestUpstream, path: &str) -> usize {
    origin
        .received()
        .iter()
        .filter(|r| r.uri.path() == path && r.method == http::Method::GET)
        .count()
}

async fn send(client: &mut Client, method: &str, path: &str) -> Reply {
    client
        .send(
            Request::builder()
                .method(method)
                .uri(path)
                .header("host", HOST)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
}

async fn get(client: &mut Client, path: &str) -> Reply {
    send(client, "GET", path).await
}

fn cache_status(reply: &Reply) -> String {
    reply.header("cache-status").unwrap_or("").to_owned()
}

fn age(reply: &Reply) -> u64 {
    reply
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age: {:?}", reply.headers))
}

async fn metrics(running: &Running) -> String {
    common::get(running.admin_addr.expect("admin"), "/metrics")
        .await
        .text()
}

async fn status(running: &Running) -> serde_json::Value {
    let text = common::get(running.admin_addr.expect("admin"), "/status")
        .await
        .text();
    serde_json::from_str(&text).expect("status JSON")
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sample(text, name, labels).unwrap_or(0.0)
}

fn lookups(text: &str, outcome: &str) -> f64 {
    sample(
        text,
        "gatehouse_shared_cache_lookups_total",
        &[("cache", "c"), ("outcome", outcome)],
    )
}

fn writes(text: &str) -> f64 {
    sample(
        text,
        "gatehouse_shared_cache_writes_total",
        &[("cache", "c"), ("outcome", "ok")],
    )
}

/// Polls `check` on `running`'s /metrics until it holds, within the test bound.
async fn wait_metrics(running: &Running, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let text = metrics(running).await;
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen in time:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `running` listens to the purges of the other replicas.
async fn wait_subscribed(running: &Running) {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let status = status(running).await;
        if status["caches"]["c"]["shared"]["subscribed"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "never subscribed: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tests of this file one at a time: their timings must not compete for the cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_fetched_through_one_replica_is_a_shared_hit_through_the_other() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let origin = origin().await;
    let text = config(origin.addr, &redis.url(), "shared_max_object = \"1KiB\"");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;

    let first = get(&mut to_a, "/page").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "/page #1");
    assert!(
        cache_status(&first).contains("fwd=miss"),
        "{first:?}",
        first = first.headers
    );
    wait_metrics(&a, "the write to Redis", |t| writes(t) == 1.0).await;
    // Let the copy age a second past the origin's 30 s (polled on A's own hits), so that an
    // age reset by the trip through Redis would show.
    let deadline = Instant::now() + common::WAIT;
    let age_on_a = loop {
        let hit = get(&mut to_a, "/page").await;
        assert!(cache_status(&hit).contains("hit"), "{}", cache_status(&hit));
        if age(&hit) >= 31 {
            break age(&hit);
        }
        assert!(Instant::now() < deadline, "Age on A stays {}", age(&hit));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let shared = get(&mut to_b, "/page").await;
    assert_eq!(shared.status, StatusCode::OK);
    assert_eq!(shared.text(), "/page #1", "the copy A stored");
    assert!(
        cache_status(&shared).contains("hit") && cache_status(&shared).contains("detail=shared"),
        "{:?}",
        shared.headers
    );
    // The age A's copy had, plus the moment since: never reset by the trip through Redis.
    let shared_age = age(&shared);
    assert!(
        (age_on_a..=age_on_a + 3).contains(&shared_age),
        "Age {shared_age} on B, {age_on_a} on A before"
    );
    assert_eq!(origin_count(&origin, "/page"), 1, "the origin asked once");

    // Stored locally on B as well: the next one is a local hit, no Redis lookup.
    let text_before = metrics(&b).await;
    let local = get(&mut to_b, "/page").await;
    assert_eq!(local.text(), "/page #1");
    let local_status = cache_status(&local);
    assert!(
        local_status.contains("hit") && !local_status.contains("shared"),
        "{local_status}"
    );
    let text_after = metrics(&b).await;
    assert_eq!(lookups(&text_before, "hit"), 1.0, "{text_before}");
    assert_eq!(
        lookups(&text_after, "hit") + lookups(&text_after, "miss"),
        1.0,
        "a local hit looks nothing up"
    );
    assert!(age(&local) >= shared_age);

    // only-if-cached is answered from the shared tier too.
    wait_metrics(&a, "the write to Redis", |t| writes(t) == 1.0).await;
    get(&mut to_a, "/cached-only").await;
    wait_metrics(&a, "the write to Redis", |t| writes(t) == 2.0).await;
    let only = to_b
        .send(
            Request::get("/cached-only")
                .header("host", HOST)
                .header("cache-control", "only-if-cached")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(only.status, StatusCode::OK, "{}", cache_status(&only));
    assert!(
        cache_status(&only).contains("detail=shared"),
        "{}",
        cache_status(&only)
    );

    // A miss in both tiers looks in Redis once, then goes to the origin.
    let missed = get(&mut to_b, "/other").await;
    assert_eq!(missed.text(), "/other #1");
    let text = metrics(&b).await;
    assert_eq!(lookups(&text, "miss"), 1.0, "{text}");
    assert_eq!(lookups(&text, "hit"), 2.0, "{text}");

    // Larger than shared_max_object: cached on A, never written to Redis, so B asks the origin.
    let big = get(&mut to_a, "/big/1").await;
    assert_eq!(big.body.len(), 4096);
    assert!(cache_status(&get(&mut to_a, "/big/1").await).contains("hit"));
    let big_b = get(&mut to_b, "/big/1").await;
    assert!(
        !cache_status(&big_b).contains("shared"),
        "{}",
        cache_status(&big_b)
    );
    assert_eq!(origin_count(&origin, "/big/1"), 2);
    let text = metrics(&a).await;
    assert_eq!(
        writes(&text),
        2.0,
        "/page and /cached-only, not /big/1: {text}"
    );

    let status = status(&b).await;
    let tier = &status["caches"]["c"]["shared"];
    assert_eq!(tier["hits"], 2, "{status}");
    assert_eq!(tier["max_object"], 1024, "{status}");
    a.shutdown().await;
    b.shutdown().await;
}

async fn get_in(client: &mut Client, path: &str, language: &str) -> Reply {
    client
        .send(
            Request::get(path)
                .header("host", HOST)
                .header("accept-language", language)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
}

/// How many entry keys cache `c` has in Redis, as Redis answers (`:N`): the claims on origin
/// fetches, given back in the background once each entry is written, are not counted.
fn entry_keys(redis: &RedisServer) -> String {
    redis
        .command(&[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            "*cache:c:*",
        ])
        .unwrap_or_default()
}

/// An origin that answers after 200 ms, `/nostore` with `no-store`, `/short` fresh for two
/// seconds and the rest for a minute, with the paths it was asked for.
async fn slow_origin() -> (TestUpstream, Arc<std::sync::Mutex<Vec<String>>>) {
    let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&asked);
    let upstream = TestUpstream::with_handler(
        "slow",
        Arc::new(move |request| {
            let path = request.uri().path().to_owned();
            log.lock().unwrap().push(path.clone());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let policy = match path.as_str() {
                    "/nostore" => "no-store",
                    // Two seconds: a copy's age counts from the origin's Date, whole seconds,
                    // so one second of freshness can be all but gone when a copy arrives.
                    "/short" => "max-age=2",
                    _ => "max-age=60",
                };
                Response::builder()
                    .header("cache-control", policy)
                    .body(Full::new(Bytes::from(path)))
                    .unwrap()
            })
        }),
    )
    .await;
    (upstream, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_missing_one_key_at_once_fetch_it_from_the_origin_once() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let (origin, asked) = slow_origin().await;
    let count = |path: &str| asked.lock().unwrap().iter().filter(|p| *p == path).count();
    let text = config(origin.addr, &redis.url(), "");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;

    // Both miss at once (the origin takes 200 ms): one fetches, the other waits for its entry.
    let (from_a, from_b) = tokio::join!(get(&mut to_a, "/once"), get(&mut to_b, "/once"));
    for reply in [&from_a, &from_b] {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "/once");
    }
    assert_eq!(count("/once"), 1, "the origin asked once");
    let statuses = [cache_status(&from_a), cache_status(&from_b)];
    assert!(
        statuses.iter().any(|s| s.contains("detail=shared")),
        "one answered from the other's fetch: {statuses:?}"
    );
    let claims = |text: &str, outcome: &str| {
        sample(
            text,
            "gatehouse_shared_cache_fetch_claims_total",
            &[("cache", "c"), ("outcome", outcome)],
        )
    };
    let (ma, mb) = (metrics(&a).await, metrics(&b).await);
    assert_eq!(claims(&ma, "won") + claims(&mb, "won"), 1.0, "{ma}\n{mb}");
    assert_eq!(claims(&ma, "lost") + claims(&mb, "lost"), 1.0);

    // A response that is not stored gives its claim back at once: the replica that waited
    // fetches it itself then, not after waiting out the claim (1 s).
    let started = Instant::now();
    let (from_a, from_b) = tokio::join!(get(&mut to_a, "/nostore"), get(&mut to_b, "/nostore"));
    let elapsed = started.elapsed();
    assert_eq!(
        (from_a.status, from_b.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(count("/nostore"), 2);
    assert!(
        elapsed < Duration::from_millis(1000),
        "the waiting replica waited out the claim: {elapsed:?}"
    );

    // Both replicas hold a copy that goes stale at the same moment: one refreshes it, the
    // other takes the refreshed one from the shared tier.
    get(&mut to_a, "/short").await;
    let first = get(&mut to_b, "/short").await;
    assert!(
        cache_status(&first).contains("detail=shared"),
        "{}",
        cache_status(&first)
    );
    assert_eq!(count("/short"), 1);
    // Past its two seconds of freshness on both replicas, the copy taken from the shared tier
    // included (its Age is whole seconds, so it may count up to one second young).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (from_a, from_b) = tokio::join!(get(&mut to_a, "/short"), get(&mut to_b, "/short"));
    assert_eq!(
        (from_a.status, from_b.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(count("/short"), 2, "refreshed once for both replicas");
    drop(redis);
}

/// Whether Redis holds a claim on the origin fetch of `path` (cache `c`, host HOST).
fn claimed(redis: &RedisServer, path: &str) -> bool {
    let key = format!("gatehouse:cache-fetch:c:{HOST}{path}");
    match redis.command(&["EXISTS", &key]).as_deref() {
        Some(":1\r\n") => true,
        Some(":0\r\n") => false,
        other => panic!("EXISTS {key}: {other:?}"),
    }
}

/// Holds Redis's writes (a claim is one; reads, such as the lookup before it, go on) for
/// `millis`, as a Redis too busy to answer within `redis.timeout` would.
fn pause_writes(redis: &RedisServer, millis: u32) {
    let reply = redis.command(&["CLIENT", "PAUSE", &millis.to_string(), "WRITE"]);
    assert_eq!(reply.as_deref(), Some("+OK\r\n"));
}

/// Waits for Redis's writes to go through again, then for `path`'s claim to be gone within
/// `bound`; the time that took.
fn claim_gone_within(redis: &RedisServer, path: &str, bound: Duration) -> Duration {
    // A write of one's own waits for the pause to end, behind those made before it.
    let deadline = Instant::now() + common::WAIT;
    while redis.command(&["SET", "pause-over", "1"]).as_deref() != Some("+OK\r\n") {
        assert!(Instant::now() < deadline, "Redis's writes never resumed");
    }
    let resumed = Instant::now();
    while claimed(redis, path) {
        assert!(
            resumed.elapsed() < bound,
            "the claim on {path} was still held {bound:?} after Redis resumed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    resumed.elapsed()
}

/// Redis may set a claim whose answer never reaches the replica: the call timed out, or the
/// request was dropped with its client. Such a claim is given back, so the next replica to
/// miss the key fetches it at once instead of waiting the claim out (1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_never_came_back_is_given_back() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let (origin, asked) = slow_origin().await;
    let count = |path: &str| asked.lock().unwrap().iter().filter(|p| *p == path).count();
    let text = config(origin.addr, &redis.url(), "");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;
    // Well under the claim's second, and the test's margin above Redis catching up.
    let bound = Duration::from_millis(500);

    // The claim times out (redis.timeout is 100 ms) while Redis holds it; A fetches anyway.
    pause_writes(&redis, 500);
    let reply = get(&mut to_a, "/nostore").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text_a = metrics(&a).await;
    assert!(
        sample(
            &text_a,
            "gatehouse_shared_calls_total",
            &[("outcome", "timeout")]
        ) >= 1.0,
        "the claim did not time out:\n{text_a}"
    );
    claim_gone_within(&redis, "/nostore", bound);
    let started = Instant::now();
    let reply = get(&mut to_b, "/nostore").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "B waited out A's claim: {:?}",
        started.elapsed()
    );
    assert_eq!(count("/nostore"), 2);

    // The client goes away while its request's claim waits in Redis.
    pause_writes(&redis, 500);
    let mut gone = common::send_raw(
        a.listener_addrs[0],
        format!("GET /nostore-gone HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes(),
    )
    .await;
    let deadline = Instant::now() + common::WAIT;
    while count("/nostore-gone") == 0 && lookups(&metrics(&a).await, "miss") < 2.0 {
        assert!(Instant::now() < deadline, "A never looked the key up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::io::AsyncWriteExt::shutdown(&mut gone).await.ok();
    drop(gone);
    claim_gone_within(&redis, "/nostore-gone", bound);
    let started = Instant::now();
    let reply = get(&mut to_b, "/nostore-gone").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "B waited out A's claim: {:?}",
        started.elapsed()
    );
    let text_b = metrics(&b).await;
    assert_eq!(
        sample(
            &text_b,
            "gatehouse_shared_cache_fetch_claims_total",
            &[("cache", "c"), ("outcome", "lost")],
        ),
        0.0,
        "{text_b}"
    );
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_variant_of_a_uri_is_shared_on_its_own() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let origin = origin().await;
    let text = config(origin.addr, &redis.url(), "");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;

    assert_eq!(get_in(&mut to_a, "/lang", "fr").await.text(), "/lang #1 fr");
    assert_eq!(get_in(&mut to_a, "/lang", "en").await.text(), "/lang #2 en");
    wait_metrics(&a, "the writes to Redis", |t| writes(t) == 2.0).await;

    for (language, body) in [("en", "/lang #2 en"), ("fr", "/lang #1 fr")] {
        let reply = get_in(&mut to_b, "/lang", language).await;
        assert_eq!(reply.text(), body);
        assert!(
            cache_status(&reply).contains("detail=shared"),
            "{language}: {}",
            cache_status(&reply)
        );
    }
    // A variant nobody fetched yet is a miss in both tiers.
    let de = get_in(&mut to_b, "/lang", "de").await;
    assert_eq!(de.text(), "/lang #3 de", "{}", cache_status(&de));
    assert_eq!(origin_count(&origin, "/lang"), 3);
    // One Redis key for the URI, all its variants in it: one DEL purges them all (beside
    // it, only the claims on fetches, given back once each entry is written).
    let keys = entry_keys(&redis);
    assert!(keys.starts_with(":1"), "{keys:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_or_an_unsafe_request_on_one_replica_is_honoured_by_the_other() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let origin = origin().await;
    let text = config(origin.addr, &redis.url(), "");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    wait_subscribed(&a).await;
    wait_subscribed(&b).await;
    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;

    for path in ["/p/x", "/q"] {
        assert_eq!(get(&mut to_a, path).await.text(), format!("{path} #1"));
    }
    wait_metrics(&a, "the writes to Redis", |t| writes(t) == 2.0).await;
    for path in ["/p/x", "/q"] {
        // B holds its own copy now.
        get(&mut to_b, path).await;
        let hit = get(&mut to_b, path).await;
        assert!(cache_status(&hit).contains("hit"), "{}", cache_status(&hit));
    }

    // Purged through A's admin: B drops its copy within a bounded time, and Redis its own.
    let mut admin = Client::connect(a.admin_addr.expect("admin")).await;
    let body = serde_json::json!({ "url": format!("http://{HOST}/p/x") }).to_string();
    let reply = admin
        .send(
            Request::post("/cache/purge")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let purged_at = Instant::now();
    wait_metrics(&b, "the purge received", |t| {
        sample(
            t,
            "gatehouse_shared_cache_purges_total",
            &[("cache", "c"), ("direction", "received")],
        ) >= 1.0
    })
    .await;
    let fetched = get(&mut to_b, "/p/x").await;
    assert_eq!(fetched.text(), "/p/x #2", "{:?}", fetched.headers);
    assert!(purged_at.elapsed() < common::WAIT);
    let text = metrics(&a).await;
    assert_eq!(
        sample(
            &text,
            "gatehouse_shared_cache_purges_total",
            &[("cache", "c"), ("direction", "sent")],
        ),
        1.0,
        "{text}"
    );

    // A prefix purge: scanned for in Redis, dropped on every replica.
    for path in ["/p/y", "/p/z"] {
        get(&mut to_a, path).await;
    }
    wait_metrics(&a, "the writes to Redis", |t| writes(t) == 4.0).await;
    for path in ["/p/y", "/p/z"] {
        assert!(cache_status(&get(&mut to_b, path).await).contains("detail=shared"));
    }
    let body = serde_json::json!({ "prefix": format!("http://{HOST}/p/") }).to_string();
    let reply = admin
        .send(
            Request::post("/cache/purge")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_metrics(&b, "the prefix purge received", |t| {
        sample(
            t,
            "gatehouse_shared_cache_purges_total",
            &[("cache", "c"), ("direction", "received")],
        ) >= 3.0
    })
    .await;
    for path in ["/p/y", "/p/z"] {
        let fetched = get(&mut to_b, path).await;
        assert_eq!(
            fetched.text(),
            format!("{path} #2"),
            "{}",
            cache_status(&fetched)
        );
    }

    // A POST to /q through B invalidates A's copy (and Redis's).
    let posted = send(&mut to_b, "POST", "/q").await;
    assert_eq!(posted.status, StatusCode::OK);
    let deadline = Instant::now() + common::WAIT;
    loop {
        let reply = get(&mut to_a, "/q").await;
        if !cache_status(&reply).contains("hit") {
            assert!(
                !cache_status(&reply).contains("shared"),
                "Redis kept the old copy: {}",
                cache_status(&reply)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A still serves /q from its cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_no_request() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let origin = origin().await;
    let text = config(origin.addr, &redis.url(), "");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    let proxies = [a.listener_addrs[0], b.listener_addrs[0]];
    // Hot paths in Redis first, for B to find there under load.
    let mut to_a = Client::connect(proxies[0]).await;
    for n in 0..8 {
        get(&mut to_a, &format!("/load/hot-{n}")).await;
    }
    wait_metrics(&a, "the writes to Redis", |t| writes(t) == 8.0).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, proxy) in proxies.into_iter().enumerate() {
        for c in 0..2 {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(proxy).await;
                let mut failed = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // New paths (misses in both tiers) and repeated ones (hits).
                    let path = if n.is_multiple_of(2) {
                        format!("/load/{i}-{c}-{n}")
                    } else {
                        format!("/load/hot-{}", (n / 2) % 8)
                    };
                    let reply = get(&mut client, &path).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if reply.status != StatusCode::OK {
                        failed.push((path, reply.status));
                    }
                }
                failed
            }));
        }
    }
    wait_metrics(&b, "shared hits under load", |t| lookups(t, "hit") >= 5.0).await;
    redis.kill();
    wait_metrics(&a, "lookups failing", |t| lookups(t, "error") >= 20.0).await;
    wait_metrics(&b, "lookups failing", |t| lookups(t, "error") >= 20.0).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for task in tasks {
        failed.extend(task.await.expect("client task"));
    }
    let total = sent.load(Ordering::Relaxed);
    assert!(total > 100, "too little load: {total}");
    assert!(
        failed.is_empty(),
        "{} of {total} failed: {failed:?}",
        failed.len()
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_delays_no_request_past_the_timeout() {
    let _serial = SERIAL.lock().await;
    let hanging = HangingRedis::start().await;
    let origin = origin().await;
    // The breaker stays open once it opens: no probe call among the timed requests.
    let text = config(origin.addr, &hanging.url(), "").replace(
        "timeout = \"100ms\"",
        "timeout = \"200ms\"\nbreaker_open_for = \"30s\"\nbreaker_max_open_for = \"30s\"",
    );
    let running = common::start_gatehouse(&text).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    let mut latencies = Vec::new();
    for i in 0..12 {
        let started = Instant::now();
        let reply = get(&mut client, &format!("/hang/{i}")).await;
        latencies.push(started.elapsed());
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("/hang/{i} #1"));
    }
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(200 + 250),
        "a request waited {slowest:?} on a hanging Redis: {latencies:?}"
    );
    // Lookups time out until the breaker opens; after that no request waits on Redis.
    let late = latencies[4..].iter().max().copied().unwrap_or_default();
    assert!(late < Duration::from_millis(100), "{latencies:?}");
    let text = metrics(&running).await;
    assert_eq!(lookups(&text, "error"), 12.0, "{text}");
    assert_eq!(
        lookups(&text, "hit") + lookups(&text, "miss"),
        0.0,
        "{text}"
    );
    running.shutdown().await;
}

#[test]
fn a_shared_cache_without_redis_is_located() {
    let text = r#"
[[listener]]
name = "l"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"
cache = "c"

[upstream.app]
servers = ["127.0.0.1:1"]

[cache.c]
shared = true
"#;
    let errors = gatehouse::config::load_str(std::path::Path::new("t.toml"), text)
        .expect_err("invalid")
        .to_string();
    assert!(errors.contains("t.toml:14:10: cache.c.shared"), "{errors}");
    assert!(errors.contains("set [redis] url"), "{errors}");
    let with_redis = format!("[redis]\nurl = \"redis://127.0.0.1:6379\"\n{text}");
    if let Err(e) = gatehouse::config::load_str(std::path::Path::new("t.toml"), &with_redis) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_the_other_replica_again_after_redis_restarts() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let origin = origin().await;
    let text = config(origin.addr, &redis.url(), "");
    let a = common::start_gatehouse(&text).await;
    let b = common::start_gatehouse(&text).await;
    wait_subscribed(&b).await;
    redis.kill();
    let deadline = Instant::now() + common::WAIT;
    while status(&b).await["caches"]["c"]["shared"]["subscribed"] == true {
        assert!(Instant::now() < deadline, "the subscription outlived Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.restart();
    wait_subscribed(&a).await;
    wait_subscribed(&b).await;

    let mut to_a = Client::connect(a.listener_addrs[0]).await;
    let mut to_b = Client::connect(b.listener_addrs[0]).await;
    get(&mut to_b, "/r").await;
    assert!(cache_status(&get(&mut to_b, "/r").await).contains("hit"));
    // B's copy in Redis too, before the purge (a write still on its way could land after it).
    wait_metrics(&b, "the write to Redis", |t| writes(t) == 1.0).await;
    let posted = send(&mut to_a, "DELETE", "/r").await;
    assert_eq!(posted.status, StatusCode::OK);
    wait_metrics(&b, "the purge received", |t| {
        sample(
            t,
            "gatehouse_shared_cache_purges_total",
            &[("cache", "c"), ("direction", "received")],
        ) >= 1.0
    })
    .await;
    let fetched = get(&mut to_b, "/r").await;
    // The origin's third answer for /r (the DELETE was its second).
    assert_eq!(fetched.text(), "/r #3", "{}", cache_status(&fetched));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_shared_tier_on_and_off() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let origin = origin().await;
    let shared = config(origin.addr, &redis.url(), "");
    let local = shared.replace("shared = true", "shared = false");
    let running = common::start_gatehouse(&local).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    get(&mut client, "/before").await;
    assert!(status(&running).await["caches"]["c"]["shared"].is_null());

    let path = std::path::Path::new("test.toml");
    let report = running.reloader.reload_text("test", path, &shared).await;
    assert!(report.ok, "{:?}", report.errors);
    get(&mut client, "/after").await;
    wait_metrics(&running, "the write to Redis", |t| writes(t) == 1.0).await;
    let keys = entry_keys(&redis);
    assert!(keys.starts_with(":1"), "one entry in Redis: {keys:?}");
    assert_eq!(
        status(&running).await["caches"]["c"]["shared"]["max_object"],
        1024 * 1024
    );

    let report = running.reloader.reload_text("test", path, &local).await;
    assert!(report.ok, "{:?}", report.errors);
    get(&mut client, "/later").await;
    assert!(status(&running).await["caches"]["c"]["shared"].is_null());
    let text = metrics(&running).await;
    assert_eq!(writes(&text), 1.0, "{text}");
    running.shutdown().await;
}
