//! The response cache over real HTTP: a scripted origin that counts the requests it gets per
//! path, and gatehouse in front of it with a `[cache.c]` on its one route — hits, expiry,
//! revalidation, conditional and range requests from the store, Vary, invalidation, coalescing,
//! stale-while-revalidate and stale-if-error, size bounds, purge and metrics.

mod common;

use bytes::Bytes;
use common::{Client, Reply, WAIT, metric_sample};
use gatehouse::app::Running;
use gatehouse::cache::Cache;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// The scripted origin.

/// One request as the origin received it; `nth` counts the requests for its path, from 1.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    /// Path and query.
    path: String,
    headers: HeaderMap,
    nth: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type OriginBody = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 origin on a loopback port whose answers a test scripts per request. Every
/// request is logged (with its per-path number) on arrival, before the script answers, so a
/// request the script holds is already counted.
struct Origin {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Origin {
    /// An origin answering each request at once with `script`.
    async fn start(script: impl Fn(&Seen) -> Response<OriginBody> + Send + Sync + 'static) -> Self {
        let script = Arc::new(script);
        Self::start_async(move |seen| {
            let script = Arc::clone(&script);
            async move { script(&seen) }
        })
        .await
    }

    /// An origin whose script may wait (to hold a request) before answering.
    async fn start_async<F, Fut>(script: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<OriginBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(script);
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_log, tasks) = (Arc::clone(&log), Arc::clone(&connections));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, log) = (Arc::clone(&script), Arc::clone(&accept_log));
                let task = tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (script, log) = (Arc::clone(&script), Arc::clone(&log));
                        async move {
                            let (parts, body) = request.into_parts();
                            let _ = body.collect().await;
                            let path = parts
                                .uri
                                .path_and_query()
                                .map_or("/", |pq| pq.as_str())
                                .to_owned();
                            let seen = {
                                let mut log = log.lock().unwrap();
                                let nth = log.iter().filter(|s| s.path == path).count() + 1;
                                let seen = Seen {
                                    method: parts.method,
                                    path,
                                    headers: parts.headers,
                                    nth,
                                };
                                log.push(seen.clone());
                                seen
                            };
                            Ok::<_, Infallible>(script(seen).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut open = tasks.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        });
        Self {
            addr,
            log,
            accept: Some(accept),
            connections,
        }
    }

    /// How many requests for `path` (path and query) arrived so far.
    fn count(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    /// The requests for `path`, in arrival order.
    fn seen(&self, path: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Waits (at most `WAIT`) until `n` requests for `path` have arrived.
    async fn wait_count(&self, path: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.count(path) < n {
            assert!(
                Instant::now() < deadline,
                "{path}: {} origin requests after {WAIT:?}, want {n}",
                self.count(path)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Gone like a crashed process: the listener closed and every open connection dropped.
    async fn kill(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = timeout(WAIT, accept).await.expect("accept loop stops");
        }
        let open = std::mem::take(&mut *self.connections.lock().unwrap());
        for task in &open {
            task.abort();
        }
        for task in open {
            let _ = timeout(WAIT, task).await.expect("connection task stops");
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for task in self.connections.lock().unwrap().iter() {
            task.abort();
        }
    }
}

/// A response with `headers` and a body of known length (Content-Length).
fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<OriginBody> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into()).boxed()).unwrap()
}

fn ok(headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<OriginBody> {
    respond(200, headers, body)
}

/// A 200 with `headers` and the body `"{path} #{nth}"`, which tells a path's requests apart.
fn ok_numbered(seen: &Seen, headers: &[(&str, &str)]) -> Response<OriginBody> {
    ok(headers, format!("{} #{}", seen.path, seen.nth))
}

/// A body sent chunked (no length known in advance), one chunk per frame.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// A 200 with `headers` and `body` sent chunked, in chunks of `chunk` bytes.
fn ok_chunked(headers: &[(&str, &str)], body: &Bytes, chunk: usize) -> Response<OriginBody> {
    let chunks = (0..body.len())
        .step_by(chunk)
        .map(|start| body.slice(start..(start + chunk).min(body.len())))
        .collect();
    let mut builder = Response::builder();
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Chunks(chunks).boxed()).unwrap()
}

/// `len` bytes of a pattern that does not repeat every chunk, so a lost or reordered chunk shows.
fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

fn http_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

// ---------------------------------------------------------------------------------------------
// gatehouse in front of it.

/// The `[cache.c]` settings of the brief.
const CACHE: &str = r#"max_size = "1MiB"
max_object_size = "64KiB"
default_ttl = "0s""#;

/// One listener and an admin listener; one catch-all route to `origin` through `[cache.c]`
/// (with `cache_lines` as its settings); `extra` appended (more upstream sections).
fn config_with(origin: SocketAddr, cache_lines: &str, extra: &str) -> String {
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
path_prefix = "/"
upstream = "app"
cache = "c"

[upstream.app]
servers = ["{origin}"]

[cache.c]
{cache_lines}

{extra}
"#
    )
}

/// gatehouse with the default cache settings in front of `origin`, and a client connection.
async fn start(origin: &Origin) -> (Running, Client) {
    start_with(&config_with(origin.addr, CACHE, "")).await
}

async fn start_with(config: &str) -> (Running, Client) {
    let running = common::start_gatehouse(config).await;
    let client = Client::connect(running.listener_addrs[0]).await;
    (running, client)
}

fn cache_of(running: &Running) -> Arc<Cache> {
    running
        .caches
        .all()
        .into_iter()
        .find(|c| &*c.name == "c")
        .expect("cache c exists")
}

/// `gatehouse_cache_requests_total{cache="c",result}` (0 if never counted).
fn requests(running: &Running, result: &str) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_cache_requests_total",
        &[("cache", "c"), ("result", result)],
    )
    .unwrap_or(0.0)
}

fn coalesced(running: &Running) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_cache_coalesced_total",
        &[("cache", "c")],
    )
    .unwrap_or(0.0)
}

/// Waits (at most `WAIT`) until no upstream fetch of cache c is in flight (a background
/// refresh or a fill has landed).
async fn wait_no_flights(running: &Running) {
    let cache = cache_of(running);
    let deadline = Instant::now() + WAIT;
    while cache.coalescer.flights() > 0 {
        assert!(Instant::now() < deadline, "a fetch still in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn send(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    client
        .send(
            builder
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
}

async fn get_with(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(client, "GET", path, headers, "").await
}

fn status_of(reply: &Reply) -> &str {
    reply.header("cache-status").unwrap_or("<no Cache-Status>")
}

fn describe(reply: &Reply) -> String {
    format!(
        "{} (Cache-Status {:?}, Age {:?}) body {:?}",
        reply.status,
        status_of(reply),
        reply.header("age"),
        match std::str::from_utf8(&reply.body) {
            Ok(text) if text.len() <= 200 => text.to_owned(),
            _ => format!("<{} bytes>", reply.body.len()),
        }
    )
}

/// A fresh hit: 200 from the store, Cache-Status `hit; ttl=…`, with an Age.
fn assert_hit(reply: &Reply, body: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(reply));
    assert!(
        status_of(reply).starts_with("gatehouse; hit; ttl="),
        "want a fresh hit: {}",
        describe(reply)
    );
    assert!(reply.header("age").is_some(), "a hit carries Age");
    assert_eq!(reply.text(), body);
}

/// The answer went to the origin (a miss, or a response that may not be used) and came back.
fn assert_forwarded(reply: &Reply, body: &str) {
    assert!(
        status_of(reply).starts_with("gatehouse; fwd="),
        "want a forwarded answer: {}",
        describe(reply)
    );
    assert_eq!(reply.text(), body, "{}", describe(reply));
}

/// A stale entry revalidated with the origin (which answered 304): the client, which sent a
/// plain GET, gets the stored response as a 200.
fn assert_revalidated_from_store(reply: &Reply, body: &str) {
    assert!(
        status_of(reply).starts_with("gatehouse; fwd=stale; fwd-status=304"),
        "{}",
        describe(reply)
    );
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the client sent a plain GET: it gets the stored response, not the origin's 304 to the \
         cache's own conditional request: {}",
        describe(reply)
    );
    assert_eq!(reply.text(), body);
}

/// `Cache-Status` `ttl=N` as a number.
fn ttl(reply: &Reply) -> u64 {
    let status = status_of(reply);
    status
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no ttl in Cache-Status {status:?}"))
}

/// Waits until just after a wall-clock second begins. `Date` has whole seconds, so a response
/// dated "now" already looks up to a second old; starting early in a second keeps a
/// `max-age=1` response fresh for most of a second.
async fn at_start_of_second() {
    let into = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    if into > 100 {
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - into) + 10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Storing and reusing.

#[tokio::test]
async fn hit_after_miss_is_served_from_the_store_with_age() {
    let origin = Origin::start(|_| ok(&[("cache-control", "max-age=60")], "stored body")).await;
    let (running, mut client) = start(&origin).await;

    let first = client.get("/a").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        status_of(&first),
        "gatehouse; fwd=miss; fwd-status=200; stored"
    );
    assert_eq!(first.text(), "stored body");

    let second = client.get("/a").await;
    assert_hit(&second, "stored body");
    let age: u64 = second
        .header("age")
        .unwrap()
        .parse()
        .expect("Age is a number");
    assert!(
        age <= 1,
        "stored a moment ago (Date has whole seconds): Age {age}"
    );
    assert!((59..=60).contains(&ttl(&second)), "{}", describe(&second));
    assert_eq!(origin.count("/a"), 1, "the hit did not reach the origin");
    // Another connection shares the store.
    assert_hit(
        &common::get(running.listener_addrs[0], "/a").await,
        "stored body",
    );
    assert_eq!(origin.count("/a"), 1);
    assert_eq!(requests(&running, "miss"), 1.0);
    assert_eq!(requests(&running, "hit"), 2.0);
}

#[tokio::test]
async fn no_store_and_private_responses_are_never_stored() {
    let origin = Origin::start(|seen| {
        let cc = match seen.path.as_str() {
            "/no-store" => "no-store, max-age=60",
            _ => "private, max-age=60",
        };
        ok_numbered(seen, &[("cache-control", cc)])
    })
    .await;
    let (running, mut client) = start(&origin).await;

    for (path, detail) in [("/no-store", "no-store"), ("/private", "private")] {
        for n in 1..=3 {
            let reply = client.get(path).await;
            assert_forwarded(&reply, &format!("{path} #{n}"));
            assert_eq!(
                status_of(&reply),
                format!("gatehouse; fwd=miss; fwd-status=200; detail={detail}")
            );
        }
        assert_eq!(
            origin.count(path),
            3,
            "{path} is never answered from the store"
        );
    }
    assert_eq!(cache_of(&running).store.entries(), 0);
    assert_eq!(requests(&running, "hit"), 0.0);
}

#[tokio::test]
async fn must_understand_stores_understood_statuses_despite_no_store() {
    let origin = Origin::start(|seen| {
        let understanding = "max-age=60, must-understand, no-store";
        let (status, cc) = match seen.path.as_str() {
            "/understood" => (200, understanding),
            "/understood-404" => (404, understanding),
            "/not-understood" => (299, understanding),
            _ => (200, "max-age=60, no-store"),
        };
        respond(
            status,
            &[("cache-control", cc)],
            format!("{} #{}", seen.path, seen.nth),
        )
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    for path in ["/understood", "/understood-404"] {
        let first = client.get(path).await;
        assert!(
            status_of(&first).ends_with("stored"),
            "{}",
            describe(&first)
        );
        let hit = client.get(path).await;
        assert!(
            status_of(&hit).starts_with("gatehouse; hit"),
            "{}",
            describe(&hit)
        );
        assert_eq!(hit.text(), format!("{path} #1"));
        assert_eq!(origin.count(path), 1);
    }
    for (path, detail) in [
        ("/not-understood", "must-understand"),
        ("/no-store-alone", "no-store"),
    ] {
        for n in 1..=2 {
            let reply = client.get(path).await;
            assert_forwarded(&reply, &format!("{path} #{n}"));
            assert!(
                status_of(&reply).ends_with(&format!("detail={detail}")),
                "{}",
                describe(&reply)
            );
        }
    }
}

#[tokio::test]
async fn max_age_expires_and_the_next_request_goes_to_the_origin() {
    let origin = Origin::start(|seen| {
        ok(
            &[("cache-control", "max-age=1")],
            format!("version {}", seen.nth),
        )
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    at_start_of_second().await;
    let stored_at = Instant::now();
    assert_forwarded(&client.get("/short").await, "version 1");
    assert_hit(&client.get("/short").await, "version 1");

    // Poll until the stored response is no longer fresh: max-age=1 ends it within a second.
    let expired = loop {
        let reply = client.get("/short").await;
        if !status_of(&reply).starts_with("gatehouse; hit; ttl=") {
            break reply;
        }
        assert_eq!(reply.text(), "version 1");
        assert!(
            stored_at.elapsed() < Duration::from_secs(3),
            "still a fresh hit {:?} after a max-age=1 response was stored",
            stored_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status_of(&expired),
        "gatehouse; fwd=stale; fwd-status=200; stored",
        "{}",
        describe(&expired)
    );
    assert_eq!(expired.text(), "version 2");
    assert_eq!(origin.count("/short"), 2);
    // The new response replaced the old one.
    assert_hit(&client.get("/short").await, "version 2");
    assert_eq!(origin.count("/short"), 2);
}

#[tokio::test]
async fn s_maxage_wins_over_max_age_in_a_shared_cache() {
    let origin = Origin::start(|seen| {
        let cc = match seen.path.as_str() {
            "/shared-longer" => "max-age=0, s-maxage=60",
            _ => "max-age=60, s-maxage=0",
        };
        ok_numbered(seen, &[("cache-control", cc)])
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    // max-age=0 alone would make it stale at once; s-maxage=60 keeps it fresh for a minute.
    assert_forwarded(&client.get("/shared-longer").await, "/shared-longer #1");
    let hit = client.get("/shared-longer").await;
    assert_hit(&hit, "/shared-longer #1");
    assert!(ttl(&hit) >= 59, "{}", describe(&hit));
    assert_eq!(origin.count("/shared-longer"), 1);

    // max-age=60 would keep it for a minute; s-maxage=0 makes it stale for a shared cache.
    assert_forwarded(&client.get("/shared-shorter").await, "/shared-shorter #1");
    let again = client.get("/shared-shorter").await;
    assert_forwarded(&again, "/shared-shorter #2");
    assert_eq!(origin.count("/shared-shorter"), 2);
}

#[tokio::test]
async fn expires_counts_from_date() {
    let origin = Origin::start(|seen| {
        let now = SystemTime::now();
        let minute = Duration::from_secs(60);
        let half = Duration::from_secs(30);
        let (date, expires) = match seen.path.as_str() {
            "/expires-in-a-minute" => (http_date(now), http_date(now + minute)),
            // Dated 30 s ago (an Age the origin's clock implies) with 60 s of lifetime.
            "/dated-earlier" => (http_date(now - half), http_date(now + half)),
            "/expires-at-date" => (http_date(now), http_date(now)),
            _ => (http_date(now), "0".to_owned()),
        };
        ok_numbered(seen, &[("date", &date), ("expires", &expires)])
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    assert_forwarded(
        &client.get("/expires-in-a-minute").await,
        "/expires-in-a-minute #1",
    );
    let hit = client.get("/expires-in-a-minute").await;
    assert_hit(&hit, "/expires-in-a-minute #1");
    assert!((58..=60).contains(&ttl(&hit)), "{}", describe(&hit));

    assert_forwarded(&client.get("/dated-earlier").await, "/dated-earlier #1");
    let hit = client.get("/dated-earlier").await;
    assert_hit(&hit, "/dated-earlier #1");
    assert!(
        (27..=30).contains(&ttl(&hit)),
        "Expires − Date is 60 s, of which 30 s had passed: {}",
        describe(&hit)
    );
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((30..=32).contains(&age), "Age counts from Date: {age}");

    // Expires at Date, and an invalid Expires ("0"), are already stale.
    for path in ["/expires-at-date", "/expires-invalid"] {
        assert_forwarded(&client.get(path).await, &format!("{path} #1"));
        assert_forwarded(&client.get(path).await, &format!("{path} #2"));
        assert_eq!(origin.count(path), 2);
    }
    assert_eq!(origin.count("/expires-in-a-minute"), 1);
    assert_eq!(origin.count("/dated-earlier"), 1);
}

/// `at` in RFC 850's obsolete format (`Sunday, 06-Nov-94 08:49:37 GMT`).
fn rfc850_date(at: SystemTime) -> String {
    // From IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    let fixdate = http_date(at);
    let parts: Vec<&str> = fixdate.split(' ').collect();
    let day = match parts[0] {
        "Mon," => "Monday",
        "Tue," => "Tuesday",
        "Wed," => "Wednesday",
        "Thu," => "Thursday",
        "Fri," => "Friday",
        "Sat," => "Saturday",
        _ => "Sunday",
    };
    format!(
        "{day}, {}-{}-{} {} GMT",
        parts[1],
        parts[2],
        &parts[3][2..],
        parts[4]
    )
}

/// `at` in C's asctime format (`Sun Nov  6 08:49:37 1994`).
fn asctime_date(at: SystemTime) -> String {
    let fixdate = http_date(at);
    let parts: Vec<&str> = fixdate.split(' ').collect();
    let day: u32 = parts[1].parse().unwrap();
    format!(
        "{} {} {day:>2} {} {}",
        &parts[0][..3],
        parts[2],
        parts[4],
        parts[3]
    )
}

#[tokio::test]
async fn expires_and_conditionals_in_obsolete_date_formats_and_any_case() {
    let origin = Origin::start(|seen| {
        let now = SystemTime::now();
        let in_a_minute = now + Duration::from_secs(60);
        let expires = match seen.path.as_str() {
            "/rfc850" => rfc850_date(in_a_minute),
            "/asctime" => asctime_date(in_a_minute),
            "/lower-utc" => http_date(in_a_minute)
                .to_ascii_lowercase()
                .replace("gmt", "utc"),
            _ => "soon".to_owned(),
        };
        let modified = http_date(now - Duration::from_secs(3600));
        ok_numbered(
            seen,
            &[
                ("date", &http_date(now)),
                ("expires", &expires),
                ("last-modified", &modified),
            ],
        )
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    for path in ["/rfc850", "/asctime", "/lower-utc"] {
        assert_forwarded(&client.get(path).await, &format!("{path} #1"));
        let hit = client.get(path).await;
        assert_hit(&hit, &format!("{path} #1"));
        assert!((58..=60).contains(&ttl(&hit)), "{path}: {}", describe(&hit));
        assert_eq!(origin.count(path), 1, "{path}");
    }
    // An Expires that is no date at all is already expired.
    assert_forwarded(&client.get("/garbage").await, "/garbage #1");
    assert_forwarded(&client.get("/garbage").await, "/garbage #2");

    // A client's If-Modified-Since in the obsolete formats is understood as well.
    let now = SystemTime::now();
    for since in [
        rfc850_date(now),
        asctime_date(now),
        http_date(now).to_ascii_uppercase(),
    ] {
        let reply = get_with(&mut client, "/rfc850", &[("if-modified-since", &since)]).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_MODIFIED,
            "{since}: {}",
            describe(&reply)
        );
    }
    let long_ago = rfc850_date(now - Duration::from_secs(7200));
    let reply = get_with(&mut client, "/rfc850", &[("if-modified-since", &long_ago)]).await;
    assert_hit(&reply, "/rfc850 #1");
    assert_eq!(origin.count("/rfc850"), 1);
}

// ---------------------------------------------------------------------------------------------
// Validation.

#[tokio::test]
async fn stale_response_with_etag_is_revalidated_with_if_none_match() {
    let origin = Origin::start(|seen| {
        if seen.header("if-none-match") == Some("\"v1\"") {
            respond(
                304,
                &[("etag", "\"v1\""), ("cache-control", "max-age=0")],
                "",
            )
        } else {
            ok(
                &[("etag", "\"v1\""), ("cache-control", "max-age=0")],
                format!("full response #{}", seen.nth),
            )
        }
    })
    .await;
    let (running, mut client) = start(&origin).await;

    assert_forwarded(&client.get("/etag").await, "full response #1");
    let reply = client.get("/etag").await;

    let seen = origin.seen("/etag");
    assert_eq!(seen.len(), 2, "one revalidation request");
    assert_eq!(seen[0].header("if-none-match"), None);
    assert_eq!(
        seen[1].header("if-none-match"),
        Some("\"v1\""),
        "the origin is asked with the stored ETag"
    );
    assert_revalidated_from_store(&reply, "full response #1");
    assert_eq!(reply.header("etag"), Some("\"v1\""));
    assert_eq!(requests(&running, "revalidated"), 1.0);
}

#[tokio::test]
async fn stale_response_with_last_modified_is_revalidated_with_if_modified_since() {
    let modified = http_date(SystemTime::now() - Duration::from_secs(3600));
    let expected = modified.clone();
    let origin = Origin::start(move |seen| {
        let headers = [
            ("last-modified", expected.as_str()),
            ("cache-control", "no-cache"),
        ];
        if seen.header("if-modified-since") == Some(expected.as_str()) {
            respond(304, &headers, "")
        } else {
            ok(&headers, format!("full response #{}", seen.nth))
        }
    })
    .await;
    let (running, mut client) = start(&origin).await;

    // no-cache: stored, but revalidated before every use.
    assert_forwarded(&client.get("/lm").await, "full response #1");
    let reply = client.get("/lm").await;

    let seen = origin.seen("/lm");
    assert_eq!(seen.len(), 2, "one revalidation request");
    assert_eq!(
        seen[1].header("if-modified-since"),
        Some(modified.as_str()),
        "the origin is asked with the stored Last-Modified"
    );
    assert_revalidated_from_store(&reply, "full response #1");
    assert_eq!(requests(&running, "revalidated"), 1.0);
}

#[tokio::test]
async fn clients_own_conditional_request_is_answered_304_from_the_store() {
    let modified = http_date(SystemTime::now() - Duration::from_secs(3600));
    let later = http_date(SystemTime::now() - Duration::from_secs(60));
    let earlier = http_date(SystemTime::now() - Duration::from_secs(7200));
    let last_modified = modified.clone();
    let origin = Origin::start(move |_| {
        ok(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"c1\""),
                ("last-modified", last_modified.as_str()),
            ],
            "conditional body",
        )
    })
    .await;
    let (_running, mut client) = start(&origin).await;
    assert_forwarded(&client.get("/cond").await, "conditional body");

    for headers in [
        [("if-none-match", "\"c1\"")],
        [("if-none-match", "W/\"c1\"")],
        [("if-modified-since", modified.as_str())],
        [("if-modified-since", later.as_str())],
    ] {
        let reply = get_with(&mut client, "/cond", &headers).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_MODIFIED,
            "{headers:?}: {}",
            describe(&reply)
        );
        assert!(reply.body.is_empty());
        assert!(
            status_of(&reply).starts_with("gatehouse; hit"),
            "{}",
            describe(&reply)
        );
        assert_eq!(reply.header("etag"), Some("\"c1\""));
    }
    // Conditions that do not hold get the full stored response.
    for headers in [
        [("if-none-match", "\"other\"")],
        [("if-modified-since", earlier.as_str())],
    ] {
        let reply = get_with(&mut client, "/cond", &headers).await;
        assert_hit(&reply, "conditional body");
    }
    assert_eq!(
        origin.count("/cond"),
        1,
        "no conditional request reached the origin"
    );
}

#[tokio::test]
async fn if_modified_since_is_answered_304_against_the_date_when_there_is_no_last_modified() {
    let dated = http_date(SystemTime::now() - Duration::from_secs(10));
    let date = dated.clone();
    let origin = Origin::start(move |seen| {
        ok_numbered(seen, &[("cache-control", "max-age=60"), ("date", &date)])
    })
    .await;
    let (_running, mut client) = start(&origin).await;
    let first = client.get("/dated").await;
    assert_forwarded(&first, "/dated #1");
    assert_eq!(first.header("last-modified"), None);

    let date = httpdate::parse_http_date(&dated).unwrap();
    for since in [date, date + Duration::from_secs(5)] {
        let since = http_date(since);
        for method in ["GET", "HEAD"] {
            let reply = send(
                &mut client,
                method,
                "/dated",
                &[("if-modified-since", &since)],
                "",
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_MODIFIED,
                "{method} since {since}: {}",
                describe(&reply)
            );
            assert!(reply.body.is_empty());
            assert!(status_of(&reply).starts_with("gatehouse; hit"));
            assert_eq!(reply.header("date"), Some(dated.as_str()));
        }
    }
    // Older than the Date: the client's copy may be older than the stored one.
    let before = http_date(date - Duration::from_secs(1));
    let reply = get_with(&mut client, "/dated", &[("if-modified-since", &before)]).await;
    assert_hit(&reply, "/dated #1");
    assert_eq!(origin.count("/dated"), 1, "all answered from the store");
}

// ---------------------------------------------------------------------------------------------
// Variants.

#[tokio::test]
async fn vary_keeps_one_variant_per_accept_language_and_vary_star_is_never_stored() {
    let origin = Origin::start(|seen| {
        let lang = seen.header("accept-language").unwrap_or("none").to_owned();
        let vary = if seen.path == "/star" {
            "*"
        } else {
            "Accept-Language"
        };
        ok(
            &[("cache-control", "max-age=60"), ("vary", vary)],
            format!("{lang} #{}", seen.nth),
        )
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_forwarded(&get_with(&mut client, "/lang", &en).await, "en #1");
    assert_forwarded(&get_with(&mut client, "/lang", &fr).await, "fr #2");
    assert_hit(&get_with(&mut client, "/lang", &en).await, "en #1");
    assert_hit(&get_with(&mut client, "/lang", &fr).await, "fr #2");
    assert_hit(&get_with(&mut client, "/lang", &en).await, "en #1");
    assert_eq!(origin.count("/lang"), 2, "one origin request per variant");
    // A request without the field is a third variant.
    assert_forwarded(&client.get("/lang").await, "none #3");
    assert_hit(&client.get("/lang").await, "none #3");
    assert_hit(&get_with(&mut client, "/lang", &fr).await, "fr #2");
    assert_eq!(origin.count("/lang"), 3);

    for n in 1..=2 {
        let reply = get_with(&mut client, "/star", &en).await;
        assert_forwarded(&reply, &format!("en #{n}"));
        assert!(
            status_of(&reply).ends_with("detail=vary-star"),
            "{}",
            describe(&reply)
        );
    }
    assert_eq!(origin.count("/star"), 2, "Vary: * is never stored");
}

// ---------------------------------------------------------------------------------------------
// Invalidation.

#[tokio::test]
async fn vary_on_preference_lists_matches_them_as_sets_with_weights_significant() {
    let origin = Origin::start(|seen| {
        let vary = if seen.path == "/custom" {
            "X-Tenants"
        } else {
            "Accept-Language, Accept"
        };
        ok_numbered(seen, &[("cache-control", "max-age=60"), ("vary", vary)])
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    let first = [
        ("accept-language", "en, fr"),
        ("accept", "text/html, */*;q=0.8"),
    ];
    assert_forwarded(&get_with(&mut client, "/neg", &first).await, "/neg #1");
    for same in [
        [
            ("accept-language", "FR,en"),
            ("accept", "*/*; Q=0.80, Text/HTML"),
        ],
        [
            ("accept-language", "fr , EN"),
            ("accept", "text/html,*/*;q=0.8"),
        ],
        [
            ("accept-language", "en, fr, en"),
            ("accept", "*/*;q=0.8, text/html"),
        ],
    ] {
        assert_hit(&get_with(&mut client, "/neg", &same).await, "/neg #1");
    }
    // Other weights are another preference: another variant.
    let weighted = [
        ("accept-language", "en;q=0.5, fr"),
        ("accept", "text/html, */*;q=0.8"),
    ];
    assert_forwarded(&get_with(&mut client, "/neg", &weighted).await, "/neg #2");
    let reweighted = [
        ("accept-language", "fr, EN;Q=0.5"),
        ("accept", "*/*;q=0.8, text/html"),
    ];
    assert_hit(&get_with(&mut client, "/neg", &reweighted).await, "/neg #2");
    let fewer = [
        ("accept-language", "en"),
        ("accept", "text/html, */*;q=0.8"),
    ];
    assert_forwarded(&get_with(&mut client, "/neg", &fewer).await, "/neg #3");
    assert_eq!(origin.count("/neg"), 3);

    // A field of the application's own keeps its order.
    let ab = [("x-tenants", "a, b")];
    assert_forwarded(&get_with(&mut client, "/custom", &ab).await, "/custom #1");
    assert_hit(
        &get_with(&mut client, "/custom", &[("x-tenants", "a,b")]).await,
        "/custom #1",
    );
    assert_forwarded(
        &get_with(&mut client, "/custom", &[("x-tenants", "b, a")]).await,
        "/custom #2",
    );
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_uri_and_same_origin_location() {
    let origin = Origin::start(|seen| {
        if seen.method == Method::GET {
            return ok_numbered(seen, &[("cache-control", "max-age=60")]);
        }
        match seen.path.as_str() {
            "/items" => {
                let location = seen.header("x-location").unwrap_or("/").to_owned();
                respond(201, &[("location", &location)], "created")
            }
            "/broken" => respond(500, &[], "failed"),
            _ => ok(&[], "changed"),
        }
    })
    .await;
    let (running, mut client) = start(&origin).await;
    let proxy = running.listener_addrs[0];

    assert_forwarded(&client.get("/item").await, "/item #1");
    // The origin numbers every request for /item, the unsafe ones too.
    let mut last = 1;
    for method in ["POST", "PATCH", "DELETE"] {
        assert_hit(&client.get("/item").await, &format!("/item #{last}"));
        let reply = send(&mut client, method, "/item", &[], "data").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{method}: {}",
            describe(&reply)
        );
        assert_eq!(status_of(&reply), "gatehouse; fwd=method");
        last += 2;
        assert_forwarded(&client.get("/item").await, &format!("/item #{last}"));
        assert_eq!(origin.count("/item"), last, "{method} invalidated /item");
    }

    // A successful POST elsewhere invalidates a same-origin Location, relative or absolute,
    // and leaves another origin's URI alone.
    for path in ["/item/7", "/item/8", "/item/9"] {
        assert_forwarded(&client.get(path).await, &format!("{path} #1"));
        assert_hit(&client.get(path).await, &format!("{path} #1"));
    }
    let absolute = format!("http://{proxy}/item/8");
    for location in [
        "/item/7",
        absolute.as_str(),
        "http://elsewhere.example/item/9",
    ] {
        let reply = send(
            &mut client,
            "POST",
            "/items",
            &[("x-location", location)],
            "new",
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    assert_forwarded(&client.get("/item/7").await, "/item/7 #2");
    assert_forwarded(&client.get("/item/8").await, "/item/8 #2");
    assert_hit(&client.get("/item/9").await, "/item/9 #1");

    // A failed unsafe request changes nothing.
    assert_forwarded(&client.get("/broken").await, "/broken #1");
    let reply = send(&mut client, "POST", "/broken", &[], "x").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_hit(&client.get("/broken").await, "/broken #1");

    assert_eq!(requests(&running, "bypass"), 7.0);
}

// ---------------------------------------------------------------------------------------------
// Answers made from a stored response.

/// An origin for POST reuse: a POST answers with `content_location` (if any) and max-age,
/// a GET with a numbered body.
async fn post_origin() -> Origin {
    Origin::start(|seen| {
        if seen.method == Method::POST {
            let location = match seen.path.as_str() {
                "/elsewhere" => "/orders/1",
                "/no-freshness" | "/orders/7" => seen.path.as_str(),
                _ => "",
            };
            let cc = if seen.path == "/no-freshness" {
                "public"
            } else {
                "max-age=60"
            };
            let mut headers = vec![("cache-control", cc)];
            if !location.is_empty() {
                headers.push(("content-location", location));
            }
            ok(&headers, format!("posted {} #{}", seen.path, seen.nth))
        } else {
            ok_numbered(seen, &[("cache-control", "max-age=60")])
        }
    })
    .await
}

#[tokio::test]
async fn a_post_response_naming_its_target_answers_later_gets_when_configured() {
    let origin = post_origin().await;
    let cache = format!("{CACHE}\nstore_post_responses = true");
    let (running, mut client) = start_with(&config_with(origin.addr, &cache, "")).await;

    assert_forwarded(&client.get("/orders/7").await, "/orders/7 #1");
    let posted = send(&mut client, "POST", "/orders/7", &[], "{}").await;
    assert_eq!(posted.text(), "posted /orders/7 #2");
    assert_eq!(
        status_of(&posted),
        "gatehouse; fwd=method; fwd-status=200; stored"
    );
    // The POST replaced the stored GET response with its own.
    let hit = client.get("/orders/7").await;
    assert_hit(&hit, "posted /orders/7 #2");
    assert_eq!(hit.header("content-location"), Some("/orders/7"));
    let head = send(&mut client, "HEAD", "/orders/7", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(status_of(&head).starts_with("gatehouse; hit"));
    assert_eq!(origin.count("/orders/7"), 2, "one GET, one POST");

    // Content-Location naming another resource, none, or no explicit freshness: not stored.
    for path in ["/elsewhere", "/no-location", "/no-freshness"] {
        let posted = send(&mut client, "POST", path, &[], "{}").await;
        assert_eq!(status_of(&posted), "gatehouse; fwd=method", "{path}");
        assert_forwarded(&client.get(path).await, &format!("{path} #2"));
    }
    assert_eq!(
        cache_of(&running).store.entries(),
        4,
        "/orders/7 and the three GETs"
    );
}

#[tokio::test]
async fn post_responses_are_not_reused_without_the_switch() {
    let origin = post_origin().await;
    let (_running, mut client) = start(&origin).await;
    let posted = send(&mut client, "POST", "/orders/7", &[], "{}").await;
    assert_eq!(posted.text(), "posted /orders/7 #1");
    assert_eq!(status_of(&posted), "gatehouse; fwd=method");
    assert_forwarded(&client.get("/orders/7").await, "/orders/7 #2");
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let origin = Origin::start(|_| ok(&[("cache-control", "max-age=60")], "hello, head")).await;
    let (_running, mut client) = start(&origin).await;
    assert_forwarded(&client.get("/head").await, "hello, head");

    let reply = send(&mut client, "HEAD", "/head", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert!(reply.body.is_empty(), "no body for HEAD");
    assert_eq!(
        reply.header("content-length"),
        Some("11"),
        "Content-Length still describes the GET's body"
    );
    assert!(
        status_of(&reply).starts_with("gatehouse; hit; ttl="),
        "{}",
        describe(&reply)
    );
    assert!(reply.header("age").is_some());
    assert_eq!(origin.count("/head"), 1, "the origin was not asked");
    assert!(origin.seen("/head").iter().all(|s| s.method == Method::GET));
    // The connection still frames the next response right.
    assert_hit(&client.get("/head").await, "hello, head");
}

#[tokio::test]
async fn single_byte_range_is_answered_206_from_the_store() {
    let origin = Origin::start(|_| ok(&[("cache-control", "max-age=60")], "0123456789")).await;
    let (_running, mut client) = start(&origin).await;
    assert_forwarded(&client.get("/range").await, "0123456789");

    for (range, content_range, body) in [
        ("bytes=2-5", "bytes 2-5/10", "2345"),
        ("bytes=7-", "bytes 7-9/10", "789"),
        ("bytes=-3", "bytes 7-9/10", "789"),
        ("bytes=8-100", "bytes 8-9/10", "89"),
    ] {
        let reply = get_with(&mut client, "/range", &[("range", range)]).await;
        assert_eq!(
            reply.status,
            StatusCode::PARTIAL_CONTENT,
            "{range}: {}",
            describe(&reply)
        );
        assert_eq!(
            reply.header("content-range"),
            Some(content_range),
            "{range}"
        );
        assert_eq!(
            reply.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(reply.text(), body, "{range}");
        assert!(status_of(&reply).starts_with("gatehouse; hit"));
    }
    let unsatisfiable = get_with(&mut client, "/range", &[("range", "bytes=10-")]).await;
    assert_eq!(unsatisfiable.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(unsatisfiable.header("content-range"), Some("bytes */10"));
    assert_eq!(origin.count("/range"), 1);
    assert!(origin.seen("/range")[0].header("range").is_none());
}

/// An origin serving `pattern(1000)` at every path, honouring a single `bytes=a-b` Range with
/// a 206, and counting each answer by its status.
async fn ranged_origin() -> Origin {
    Origin::start(|seen| {
        let body = pattern(1000);
        let headers = [("cache-control", "max-age=60"), ("etag", "\"v1\"")];
        let range = seen
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        match range {
            Some((first, last)) => {
                let content_range = format!("bytes {first}-{last}/1000");
                let mut with_range = headers.to_vec();
                with_range.push(("content-range", &content_range));
                respond(206, &with_range, body.slice(first..=last))
            }
            None => ok(&headers, body),
        }
    })
    .await
}

fn assert_partial(reply: &Reply, first: usize, last: usize, from_store: bool) {
    assert_eq!(
        reply.status,
        StatusCode::PARTIAL_CONTENT,
        "{first}-{last}: {}",
        describe(reply)
    );
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes {first}-{last}/1000").as_str())
    );
    assert_eq!(reply.body, pattern(1000).slice(first..=last));
    assert_eq!(
        status_of(reply).starts_with("gatehouse; hit"),
        from_store,
        "{first}-{last}: {}",
        describe(reply)
    );
}

#[tokio::test]
async fn a_stored_206_answers_ranges_inside_it_and_never_a_whole_request() {
    let origin = ranged_origin().await;
    let (running, mut client) = start(&origin).await;
    let range = |spec: &'static str| [("range", spec)];

    let first = get_with(&mut client, "/video", &range("bytes=100-199")).await;
    assert_partial(&first, 100, 199, false);
    assert_eq!(
        status_of(&first),
        "gatehouse; fwd=miss; fwd-status=206; stored"
    );
    for (spec, a, b) in [
        ("bytes=100-199", 100, 199),
        ("bytes=150-160", 150, 160),
        ("bytes=199-199", 199, 199),
    ] {
        let reply = get_with(&mut client, "/video", &range(spec)).await;
        assert_partial(&reply, a, b, true);
        assert!(status_of(&reply).ends_with("detail=partial"));
        assert_eq!(reply.header("etag"), Some("\"v1\""));
    }
    assert_eq!(origin.count("/video"), 1);
    // A conditional range request is the origin's to judge.
    let conditional = [("range", "bytes=150-160"), ("if-none-match", "\"v1\"")];
    let reply = get_with(&mut client, "/video", &conditional).await;
    assert!(
        status_of(&reply).starts_with("gatehouse; fwd=miss"),
        "{}",
        describe(&reply)
    );
    assert_eq!(origin.count("/video"), 2);
    let hits = requests(&running, "hit");

    // Reaching outside the piece: the origin answers, and its piece joins the stored one.
    let outside = get_with(&mut client, "/video", &range("bytes=150-249")).await;
    assert_partial(&outside, 150, 249, false);
    assert_eq!(origin.count("/video"), 3);
    assert_partial(
        &get_with(&mut client, "/video", &range("bytes=200-249")).await,
        200,
        249,
        true,
    );
    // A request for the whole never gets a piece; the full response then answers every range.
    let whole = client.get("/video").await;
    assert_eq!(whole.status, StatusCode::OK, "{}", describe(&whole));
    assert_eq!(whole.body, pattern(1000));
    assert!(status_of(&whole).starts_with("gatehouse; fwd=miss"));
    assert_eq!(origin.count("/video"), 4);
    assert_partial(
        &get_with(&mut client, "/video", &range("bytes=0-9")).await,
        0,
        9,
        true,
    );
    let whole = client.get("/video").await;
    assert!(status_of(&whole).starts_with("gatehouse; hit; ttl="));
    assert_eq!(whole.body, pattern(1000));
    assert_eq!(origin.count("/video"), 4);
    assert!(requests(&running, "hit") > hits);
}

#[tokio::test]
async fn pieces_with_one_strong_etag_combine_and_make_the_whole() {
    let origin = ranged_origin().await;
    let (_running, mut client) = start(&origin).await;
    let range = |spec: &'static str| [("range", spec)];

    for (spec, a, b) in [("bytes=0-99", 0, 99), ("bytes=100-499", 100, 499)] {
        assert_partial(
            &get_with(&mut client, "/film", &range(spec)).await,
            a,
            b,
            false,
        );
    }
    // Across the seam of the two pieces: one combined piece answers it.
    assert_partial(
        &get_with(&mut client, "/film", &range("bytes=50-150")).await,
        50,
        150,
        true,
    );
    assert_eq!(origin.count("/film"), 2);
    let whole = client.get("/film").await;
    assert!(
        status_of(&whole).starts_with("gatehouse; fwd=miss"),
        "not whole yet"
    );
    assert_eq!(origin.count("/film"), 3);

    // The last piece makes the whole representation: stored as a full 200.
    for (spec, a, b) in [("bytes=0-599", 0, 599), ("bytes=600-999", 600, 999)] {
        assert_partial(
            &get_with(&mut client, "/tape", &range(spec)).await,
            a,
            b,
            false,
        );
    }
    let whole = client.get("/tape").await;
    assert_eq!(whole.status, StatusCode::OK, "{}", describe(&whole));
    assert!(
        status_of(&whole).starts_with("gatehouse; hit; ttl="),
        "{}",
        describe(&whole)
    );
    assert_eq!(whole.body, pattern(1000));
    assert_eq!(whole.header("content-length"), Some("1000"));
    assert_eq!(whole.header("content-range"), None);
    assert_eq!(origin.count("/tape"), 2);
}

// ---------------------------------------------------------------------------------------------
// Coalescing.

/// `n` GETs of `path` on connections of their own, at once; returns when the first has reached
/// the origin (which holds it) and the other `n - 1` are waiting for it (at most `WAIT`).
async fn concurrent_gets(
    running: &Running,
    origin: &Origin,
    path: &'static str,
    n: usize,
) -> Vec<JoinHandle<Reply>> {
    let proxy = running.listener_addrs[0];
    let clients = (0..n)
        .map(|_| tokio::spawn(async move { common::get(proxy, path).await }))
        .collect();
    origin.wait_count(path, 1).await;
    let deadline = Instant::now() + WAIT;
    while coalesced(running) < (n - 1) as f64 {
        assert!(
            Instant::now() < deadline,
            "{} of {} requests waiting on the first",
            coalesced(running),
            n - 1
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clients
}

#[tokio::test]
async fn hundred_concurrent_misses_make_one_origin_request() {
    const CLIENTS: usize = 100;
    let release = Arc::new(Semaphore::new(0));
    let gate = Arc::clone(&release);
    let origin = Origin::start_async(move |_seen| {
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire().await.expect("gate open").forget();
            ok(&[("cache-control", "max-age=60")], "shared body")
        }
    })
    .await;
    let (running, _client) = start(&origin).await;

    // The first is held at the origin until every other one is waiting for it.
    let clients = concurrent_gets(&running, &origin, "/hot", CLIENTS).await;
    assert_eq!(origin.count("/hot"), 1);
    release.add_permits(CLIENTS);

    let mut collapsed = 0;
    for client in clients {
        let reply = timeout(WAIT, client)
            .await
            .expect("every client answered")
            .expect("client task");
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
        assert_eq!(reply.text(), "shared body");
        if status_of(&reply).ends_with("collapsed") {
            collapsed += 1;
        }
    }
    assert_eq!(origin.count("/hot"), 1, "exactly one origin request");
    assert_eq!(collapsed, CLIENTS - 1);
    assert_eq!(coalesced(&running), (CLIENTS - 1) as f64);
    assert_eq!(requests(&running, "miss"), 1.0);
    assert_eq!(requests(&running, "hit"), (CLIENTS - 1) as f64);
}

#[tokio::test]
async fn waiters_go_upstream_themselves_when_the_response_is_not_storable() {
    const CLIENTS: usize = 20;
    let release = Arc::new(Semaphore::new(0));
    let gate = Arc::clone(&release);
    let origin = Origin::start_async(move |seen: Seen| {
        let gate = Arc::clone(&gate);
        async move {
            if seen.nth == 1 {
                gate.acquire().await.expect("gate open").forget();
            }
            ok(
                &[("cache-control", "private, max-age=60")],
                format!("for you #{}", seen.nth),
            )
        }
    })
    .await;
    let (running, _client) = start(&origin).await;

    let clients = concurrent_gets(&running, &origin, "/private-hot", CLIENTS).await;
    assert_eq!(
        origin.count("/private-hot"),
        1,
        "the others wait for the first"
    );
    release.add_permits(1);

    let mut bodies = Vec::new();
    for client in clients {
        let reply = timeout(WAIT, client)
            .await
            .expect("every waiter answered")
            .expect("client task");
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
        assert!(
            status_of(&reply).ends_with("detail=private"),
            "{}",
            describe(&reply)
        );
        bodies.push(reply.text());
    }
    bodies.sort();
    let mut want: Vec<String> = (1..=CLIENTS).map(|n| format!("for you #{n}")).collect();
    want.sort();
    assert_eq!(bodies, want, "each waiter got its own origin response");
    assert_eq!(origin.count("/private-hot"), CLIENTS);
    assert_eq!(cache_of(&running).store.entries(), 0);
}

// ---------------------------------------------------------------------------------------------
// Stale content.

#[tokio::test]
async fn stale_while_revalidate_serves_stale_at_once_and_refreshes_once() {
    let release = Arc::new(Semaphore::new(0));
    let gate = Arc::clone(&release);
    let origin = Origin::start_async(move |seen: Seen| {
        let gate = Arc::clone(&gate);
        async move {
            match seen.nth {
                1 => ok(
                    &[("cache-control", "max-age=0, stale-while-revalidate=60")],
                    "old",
                ),
                2 => {
                    // The background refresh: held until the test has seen stale answers.
                    gate.acquire().await.expect("gate open").forget();
                    ok(&[("cache-control", "max-age=60")], "new")
                }
                n => ok(&[("cache-control", "max-age=60")], format!("extra #{n}")),
            }
        }
    })
    .await;
    let (running, mut client) = start(&origin).await;

    assert_forwarded(&client.get("/swr").await, "old");
    // Stale at once (max-age=0) but within stale-while-revalidate: served now, while the
    // refresh waits at the origin.
    for _ in 0..3 {
        let reply = timeout(Duration::from_secs(2), client.get("/swr"))
            .await
            .expect("stale served without waiting for the refresh");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "old");
        assert_eq!(
            status_of(&reply),
            "gatehouse; hit; detail=stale-while-revalidate"
        );
        assert!(reply.header("age").is_some());
        origin.wait_count("/swr", 2).await;
    }
    assert_eq!(
        origin.count("/swr"),
        2,
        "one background refresh, however many stale answers"
    );
    release.add_permits(1);
    wait_no_flights(&running).await;

    assert_hit(&client.get("/swr").await, "new");
    assert_eq!(origin.count("/swr"), 2);
    assert_eq!(requests(&running, "stale"), 3.0);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_answers_500() {
    let origin = Origin::start(|seen| match (seen.nth, seen.path.as_str()) {
        (1, "/sie") => ok(&[("cache-control", "max-age=0, stale-if-error=60")], "good"),
        (1, _) => ok(&[("cache-control", "max-age=0")], "good"),
        _ => respond(500, &[], "boom"),
    })
    .await;
    let (running, mut client) = start(&origin).await;

    assert_forwarded(&client.get("/sie").await, "good");
    let reply = client.get("/sie").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert_eq!(reply.text(), "good");
    assert_eq!(
        status_of(&reply),
        "gatehouse; hit; fwd=stale; fwd-status=500; detail=stale-if-error"
    );
    assert_eq!(origin.count("/sie"), 2, "the origin was asked first");
    assert_eq!(requests(&running, "stale"), 1.0);

    // Without stale-if-error the error goes through.
    assert_forwarded(&client.get("/no-sie").await, "good");
    let reply = client.get("/no-sie").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.text(), "boom");
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_origin_is_gone() {
    let mut origin = Origin::start(|seen| {
        let cc = if seen.path == "/sie" {
            "max-age=0, stale-if-error=60"
        } else {
            "max-age=0"
        };
        ok(&[("cache-control", cc)], "good")
    })
    .await;
    let (_running, mut client) = start(&origin).await;
    assert_forwarded(&client.get("/sie").await, "good");
    assert_forwarded(&client.get("/no-sie").await, "good");
    origin.kill().await;

    let reply = client.get("/sie").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert_eq!(reply.text(), "good");
    assert_eq!(
        status_of(&reply),
        "gatehouse; hit; fwd=stale; detail=stale-if-error"
    );
    let reply = client.get("/no-sie").await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "no stale-if-error: the failure shows: {}",
        describe(&reply)
    );
}

/// How the raw origin of `stale_if_error_serves_stale_when_the_connection_breaks` fails once
/// its responses are stored.
const BREAKS: [&str; 3] = ["reset", "reset-mid-head", "close"];

#[tokio::test]
async fn stale_if_error_serves_stale_when_the_connection_breaks() {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // 0: answer; 1 + i: fail as BREAKS[i].
    let mode = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(AtomicUsize::new(0));
    let (origin_mode, origin_heads) = (Arc::clone(&mode), Arc::clone(&heads));
    let origin = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (mode, heads) = (Arc::clone(&origin_mode), Arc::clone(&origin_heads));
            tokio::spawn(async move {
                let Some(head) = common::read_head(&mut stream).await else {
                    return;
                };
                heads.fetch_add(1, Ordering::SeqCst);
                let linger = |stream: &tokio::net::TcpStream| {
                    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                };
                match mode.load(Ordering::SeqCst) {
                    0 => {
                        let cc = if head.starts_with(b"GET /sie ") {
                            "max-age=0, stale-if-error=60"
                        } else {
                            "max-age=0"
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncache-control: {cc}\r\ncontent-length: 4\r\n\
                             connection: close\r\n\r\ngood"
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    1 => linger(&stream),
                    2 => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                        let _ = stream.flush().await;
                        linger(&stream);
                    }
                    _ => {
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    let (_running, mut client) = start_with(&config_with(addr, CACHE, "")).await;
    assert_forwarded(&client.get("/sie").await, "good");
    assert_forwarded(&client.get("/no-sie").await, "good");

    for (i, how) in BREAKS.iter().enumerate() {
        mode.store(i + 1, Ordering::SeqCst);
        let before = heads.load(Ordering::SeqCst);
        let reply = client.get("/sie").await;
        assert!(
            heads.load(Ordering::SeqCst) > before,
            "{how}: the origin was asked first"
        );
        assert_eq!(reply.status, StatusCode::OK, "{how}: {}", describe(&reply));
        assert_eq!(reply.text(), "good");
        assert_eq!(
            status_of(&reply),
            "gatehouse; hit; fwd=stale; detail=stale-if-error",
            "{how}"
        );
        let reply = client.get("/no-sie").await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{how}, no stale-if-error: the failure shows: {}",
            describe(&reply)
        );
    }
    origin.abort();
}

#[tokio::test]
async fn stale_if_error_serves_stale_instead_of_503_when_the_breaker_is_open() {
    let origin = Origin::start(|seen| match seen.path.as_str() {
        "/fail" => respond(500, &[], "boom"),
        _ => ok(&[("cache-control", "max-age=0, stale-if-error=60")], "good"),
    })
    .await;
    let breaker = r#"
[upstream.app.breaker]
consecutive_failures = 2
open_for = "60s"
max_open_for = "5m"
"#;
    let (running, mut client) = start_with(&config_with(origin.addr, CACHE, breaker)).await;
    assert_forwarded(&client.get("/obj").await, "good");
    for _ in 0..2 {
        assert_eq!(
            client.get("/fail").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let server = origin.addr.to_string();
    let deadline = Instant::now() + WAIT;
    while metric_sample(
        &running.metrics.render(),
        "gatehouse_circuit_breaker_state",
        &[("upstream", "app"), ("server", &server)],
    ) != Some(2.0)
    {
        assert!(Instant::now() < deadline, "the breaker never opened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unstored = client.get("/never-stored").await;
    assert_eq!(
        unstored.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no server to ask: {}",
        describe(&unstored)
    );

    let reply = client.get("/obj").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert_eq!(reply.text(), "good");
    assert_eq!(
        status_of(&reply),
        "gatehouse; hit; fwd=stale; detail=stale-if-error"
    );
    assert_eq!(origin.count("/obj"), 1);
}

#[tokio::test]
async fn stale_if_error_serves_stale_when_every_server_is_down() {
    let down = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&down);
    let origin = Origin::start(move |seen| match seen.path.as_str() {
        "/healthz" if flag.load(Ordering::SeqCst) => respond(503, &[], "down"),
        "/healthz" => ok(&[], "up"),
        _ => ok(&[("cache-control", "max-age=0, stale-if-error=60")], "good"),
    })
    .await;
    let health = r#"
[upstream.app.health]
path = "/healthz"
interval = "50ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1
"#;
    let (running, mut client) = start_with(&config_with(origin.addr, CACHE, health)).await;
    assert_forwarded(&client.get("/obj").await, "good");
    down.store(true, Ordering::SeqCst);
    let server = origin.addr.to_string();
    let deadline = Instant::now() + WAIT;
    while metric_sample(
        &running.metrics.render(),
        "gatehouse_upstream_server_up",
        &[("upstream", "app"), ("server", &server)],
    ) != Some(0.0)
    {
        assert!(Instant::now() < deadline, "the server never went down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        client.get("/never-stored").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let reply = client.get("/obj").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert_eq!(reply.text(), "good");
    assert_eq!(
        status_of(&reply),
        "gatehouse; hit; fwd=stale; detail=stale-if-error"
    );
    assert_eq!(origin.count("/obj"), 1);
}

#[tokio::test]
async fn stale_if_error_gives_the_stored_body_for_a_response_with_an_etag() {
    let origin = Origin::start(|seen| match seen.nth {
        1 => ok(
            &[
                ("cache-control", "max-age=0, stale-if-error=60"),
                ("etag", "\"e1\""),
            ],
            "good",
        ),
        _ => respond(500, &[], "boom"),
    })
    .await;
    let (_running, mut client) = start(&origin).await;
    assert_forwarded(&client.get("/sie-etag").await, "good");

    let reply = client.get("/sie-etag").await;
    assert_eq!(
        origin.seen("/sie-etag")[1].header("if-none-match"),
        Some("\"e1\""),
        "revalidation attempted"
    );
    assert_eq!(
        status_of(&reply),
        "gatehouse; hit; fwd=stale; fwd-status=500; detail=stale-if-error"
    );
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a plain GET served stale gets the stored body: {}",
        describe(&reply)
    );
    assert_eq!(reply.text(), "good");
}

// ---------------------------------------------------------------------------------------------
// Size bounds.

#[tokio::test]
async fn max_size_bounds_the_store_under_a_stream_of_distinct_keys() {
    const MAX_SIZE: u64 = 64 * 1024;
    let origin = Origin::start(|seen| {
        let mut body = format!("{} ", seen.path).into_bytes();
        body.resize(4000, b'x');
        ok(&[("cache-control", "max-age=60")], body)
    })
    .await;
    let settings = r#"max_size = "64KiB"
max_object_size = "8KiB"
default_ttl = "0s""#;
    let (running, mut client) = start_with(&config_with(origin.addr, settings, "")).await;
    let admin = running.admin_addr.expect("admin listener");
    let cache = cache_of(&running);

    for i in 0..100 {
        let path = format!("/e/{i}");
        let reply = client.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), 4000);
        let bytes = cache.store.bytes();
        assert!(
            bytes <= MAX_SIZE,
            "after {} keys the store holds {bytes} bytes",
            i + 1
        );
        let gauge = metric_sample(
            &running.metrics.render(),
            "gatehouse_cache_bytes",
            &[("cache", "c")],
        )
        .expect("gatehouse_cache_bytes");
        assert!(gauge <= MAX_SIZE as f64, "gatehouse_cache_bytes {gauge}");
        if i % 20 == 19 {
            let status: Value =
                serde_json::from_slice(&common::get(admin, "/status").await.body).unwrap();
            let reported = status["caches"]["c"]["bytes"]
                .as_u64()
                .expect("caches.c.bytes");
            assert!(reported <= MAX_SIZE, "/status caches.c.bytes {reported}");
            assert!(reported > 0);
            assert_eq!(status["caches"]["c"]["max_size"].as_u64(), Some(MAX_SIZE));
        }
    }
    let evictions = metric_sample(
        &running.metrics.render(),
        "gatehouse_cache_evictions_total",
        &[("cache", "c")],
    )
    .unwrap_or(0.0);
    assert!(evictions > 0.0, "400 KB through a 64 KiB cache evicts");
    let entries = cache.store.entries();
    assert!(
        entries > 0 && entries < 100,
        "{entries} entries after eviction"
    );
    assert_eq!(origin.count("/e/99"), 1);
}

#[tokio::test]
async fn responses_larger_than_max_object_size_pass_through_uncached() {
    const BIG: usize = 100_000; // max_object_size is 64 KiB
    let origin = Origin::start(|seen| {
        let cc = [("cache-control", "max-age=60")];
        match seen.path.as_str() {
            "/big" => ok(&cc, pattern(BIG)),
            "/big-chunked" => ok_chunked(&cc, &pattern(BIG), 10_000),
            _ => ok_chunked(&cc, &pattern(4_000), 1_000),
        }
    })
    .await;
    let (running, mut client) = start(&origin).await;

    for _ in 0..2 {
        let reply = client.get("/big").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, pattern(BIG), "delivered whole");
        assert_eq!(
            status_of(&reply),
            "gatehouse; fwd=miss; fwd-status=200; detail=too-large"
        );
    }
    assert_eq!(
        origin.count("/big"),
        2,
        "a too-large response is not stored"
    );

    // No length in advance: it grows past the limit while streaming.
    for _ in 0..2 {
        let reply = client.get("/big-chunked").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("content-length").is_none());
        assert_eq!(
            reply.body.len(),
            BIG,
            "delivered whole: {}",
            describe(&reply)
        );
        assert_eq!(reply.body, pattern(BIG));
        assert!(status_of(&reply).starts_with("gatehouse; fwd=miss"));
    }
    assert_eq!(
        origin.count("/big-chunked"),
        2,
        "a body that outgrew max_object_size was not stored"
    );
    assert_eq!(cache_of(&running).store.entries(), 0);
    wait_no_flights(&running).await;

    // A chunked body that stays under the limit is stored.
    let first = client.get("/small-chunked").await;
    assert_eq!(first.body, pattern(4_000));
    let second = client.get("/small-chunked").await;
    assert!(
        status_of(&second).starts_with("gatehouse; hit"),
        "{}",
        describe(&second)
    );
    assert_eq!(second.body, pattern(4_000));
    assert_eq!(origin.count("/small-chunked"), 1);
}

#[tokio::test]
async fn responses_up_to_max_object_size_are_stored() {
    const SIZE: usize = 300_000;
    let origin = Origin::start(|_| ok(&[("cache-control", "max-age=60")], pattern(SIZE))).await;
    let settings = r#"max_size = "1MiB"
max_object_size = "512KiB"
default_ttl = "0s""#;
    let (running, mut client) = start_with(&config_with(origin.addr, settings, "")).await;

    let first = client.get("/large").await;
    assert_eq!(first.body, pattern(SIZE));
    assert_eq!(
        status_of(&first),
        "gatehouse; fwd=miss; fwd-status=200; stored"
    );
    let second = client.get("/large").await;
    let cache = cache_of(&running);
    assert!(
        status_of(&second).starts_with("gatehouse; hit"),
        "a {SIZE}-byte response (max_object_size 512 KiB, max_size 1 MiB) was reported stored \
         but is not in the store (entries {}, bytes {}): {}",
        cache.store.entries(),
        cache.store.bytes(),
        describe(&second)
    );
    assert_eq!(second.body, pattern(SIZE));
    assert_eq!(origin.count("/large"), 1);
}

// ---------------------------------------------------------------------------------------------
// Who may store what.

#[tokio::test]
async fn cdn_cache_control_overrides_cache_control() {
    let origin = Origin::start(|seen| {
        let headers: &[(&str, &str)] = match seen.path.as_str() {
            "/cdn-allows" => &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            "/cdn-forbids" => &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
            // The configured Gatehouse-Cache-Control comes before CDN-Cache-Control.
            _ => &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=60"),
                ("gatehouse-cache-control", "no-store"),
            ],
        };
        ok_numbered(seen, headers)
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    assert_forwarded(&client.get("/cdn-allows").await, "/cdn-allows #1");
    let hit = client.get("/cdn-allows").await;
    assert_hit(&hit, "/cdn-allows #1");
    assert!(ttl(&hit) >= 59);
    assert_eq!(origin.count("/cdn-allows"), 1);

    for path in ["/cdn-forbids", "/own-field-forbids"] {
        for n in 1..=2 {
            let reply = client.get(path).await;
            assert_forwarded(&reply, &format!("{path} #{n}"));
            assert!(status_of(&reply).ends_with("detail=no-store"));
        }
        assert_eq!(origin.count(path), 2);
    }
}

#[tokio::test]
async fn a_cdn_cache_control_of_the_wrong_shape_is_ignored_for_cache_control() {
    let origin = Origin::start(|seen| {
        let headers: &[(&str, &str)] = match seen.path.as_str() {
            // A decimal max-age would allow storing; ignored, Cache-Control forbids it.
            "/decimal" => &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60.0"),
            ],
            // A quoted number likewise.
            "/string" => &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=\"60\""),
            ],
            // A no-store with a value is no Boolean: the whole field goes, max-age with it.
            "/bad-flag" => &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=600, no-store=yes"),
            ],
            // Not a Dictionary at all.
            _ => &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store;"),
            ],
        };
        ok_numbered(seen, headers)
    })
    .await;
    let (_running, mut client) = start(&origin).await;

    for path in ["/decimal", "/string"] {
        for n in 1..=2 {
            let reply = client.get(path).await;
            assert_forwarded(&reply, &format!("{path} #{n}"));
            assert!(
                status_of(&reply).ends_with("detail=no-store"),
                "{path}: {}",
                describe(&reply)
            );
        }
    }
    for path in ["/bad-flag", "/unparsable"] {
        assert_forwarded(&client.get(path).await, &format!("{path} #1"));
        let hit = client.get(path).await;
        assert_hit(&hit, &format!("{path} #1"));
        assert!(
            ttl(&hit) <= 60,
            "Cache-Control's max-age, not the ignored field's: {}",
            describe(&hit)
        );
        assert_eq!(origin.count(path), 1);
    }
}

#[tokio::test]
async fn set_cookie_responses_are_never_stored_by_default_not_even_when_public() {
    let origin = Origin::start(|seen| {
        let cc = if seen.path == "/cookie-public" {
            "public, s-maxage=60"
        } else {
            "max-age=60"
        };
        ok_numbered(
            seen,
            &[("cache-control", cc), ("set-cookie", "session=alice")],
        )
    })
    .await;
    let (running, mut client) = start(&origin).await;

    for path in ["/cookie", "/cookie-public"] {
        for n in 1..=2 {
            let reply = client.get(path).await;
            assert_forwarded(&reply, &format!("{path} #{n}"));
            assert!(
                status_of(&reply).ends_with("detail=set-cookie"),
                "{}",
                describe(&reply)
            );
            assert_eq!(reply.header("set-cookie"), Some("session=alice"));
        }
        assert_eq!(origin.count(path), 2);
    }
    assert_eq!(cache_of(&running).store.entries(), 0);
}

#[tokio::test]
async fn a_cookie_set_by_a_304_goes_to_the_client_that_caused_it_only() {
    let origin = Origin::start(|seen| {
        let headers = [("etag", "\"v1\""), ("cache-control", "max-age=0")];
        match (seen.nth, seen.header("if-none-match")) {
            (2, Some(_)) => {
                let mut with_cookie = headers.to_vec();
                with_cookie.push(("set-cookie", "visit=2"));
                respond(304, &with_cookie, "")
            }
            (_, Some(_)) => respond(304, &headers, ""),
            _ => ok(&headers, "body"),
        }
    })
    .await;
    let (_running, mut client) = start(&origin).await;
    assert_forwarded(&client.get("/visits").await, "body");
    let second = client.get("/visits").await;
    assert_revalidated_from_store(&second, "body");
    assert_eq!(second.header("set-cookie"), Some("visit=2"));
    let third = client.get("/visits").await;
    assert_revalidated_from_store(&third, "body");
    assert_eq!(
        third.header("set-cookie"),
        None,
        "not stored, not replayed to the next client"
    );
    assert_eq!(origin.count("/visits"), 3);
}

#[tokio::test]
async fn store_set_cookie_stores_them_with_their_cookies() {
    let origin = Origin::start(|seen| match seen.path.as_str() {
        "/private" => ok_numbered(
            seen,
            &[
                ("cache-control", "private, max-age=60"),
                ("set-cookie", "session=alice"),
            ],
        ),
        _ => ok_numbered(
            seen,
            &[
                ("cache-control", "max-age=60"),
                ("set-cookie", "lb=server-1; Path=/"),
                ("set-cookie", "consent=none"),
            ],
        ),
    })
    .await;
    let cache = format!("{CACHE}\nstore_set_cookie = true");
    let (_running, mut client) = start_with(&config_with(origin.addr, &cache, "")).await;

    let first = client.get("/affinity").await;
    assert_forwarded(&first, "/affinity #1");
    assert!(
        status_of(&first).ends_with("stored"),
        "{}",
        describe(&first)
    );
    for _ in 0..2 {
        let hit = client.get("/affinity").await;
        assert_hit(&hit, "/affinity #1");
        let cookies: Vec<&str> = hit
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            ["lb=server-1; Path=/", "consent=none"],
            "stored and served with every cookie the origin set"
        );
    }
    assert_eq!(origin.count("/affinity"), 1);
    // The switch lifts the cookie rule only: private is still private.
    for n in 1..=2 {
        let reply = client.get("/private").await;
        assert_forwarded(&reply, &format!("/private #{n}"));
        assert!(status_of(&reply).ends_with("detail=private"));
    }
}

#[tokio::test]
async fn authorization_requests_are_stored_only_when_public() {
    let origin = Origin::start(|seen| {
        let cc = if seen.path == "/auth-public" {
            "public, max-age=60"
        } else {
            "max-age=60"
        };
        let who = seen
            .header("authorization")
            .unwrap_or("anonymous")
            .to_owned();
        ok(&[("cache-control", cc)], format!("for {who} #{}", seen.nth))
    })
    .await;
    let (_running, mut client) = start(&origin).await;
    let alice = [("authorization", "Bearer alice")];

    let reply = get_with(&mut client, "/auth", &alice).await;
    assert_forwarded(&reply, "for Bearer alice #1");
    assert!(
        status_of(&reply).ends_with("detail=authorization"),
        "{}",
        describe(&reply)
    );
    // Neither alice again nor anyone else gets alice's response from the store.
    assert_forwarded(
        &get_with(&mut client, "/auth", &alice).await,
        "for Bearer alice #2",
    );
    assert_forwarded(&client.get("/auth").await, "for anonymous #3");
    assert_eq!(origin.count("/auth"), 3);

    assert_forwarded(
        &get_with(&mut client, "/auth-public", &alice).await,
        "for Bearer alice #1",
    );
    assert_hit(
        &get_with(&mut client, "/auth-public", &alice).await,
        "for Bearer alice #1",
    );
    assert_hit(&client.get("/auth-public").await, "for Bearer alice #1");
    assert_eq!(origin.count("/auth-public"), 1);
}

// ---------------------------------------------------------------------------------------------
// Operations.

#[tokio::test]
async fn admin_purge_by_url_and_by_prefix() {
    let origin = Origin::start(|seen| ok_numbered(seen, &[("cache-control", "max-age=60")])).await;
    let (running, mut client) = start(&origin).await;
    let admin = running.admin_addr.expect("admin listener");
    let proxy = running.listener_addrs[0];
    let purge = |body: String| async move {
        let mut admin_client = Client::connect(admin).await;
        let reply = admin_client
            .send(
                Request::post("/cache/purge")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "purge: {}", reply.text());
        serde_json::from_slice::<Value>(&reply.body).expect("purge answers JSON")["purged"]
            .as_u64()
            .expect("purged count")
    };

    let paths = ["/p/a", "/p/b", "/p/c?x=1", "/q"];
    for path in paths {
        assert_forwarded(&client.get(path).await, &format!("{path} #1"));
        assert_hit(&client.get(path).await, &format!("{path} #1"));
    }

    let url = serde_json::json!({ "url": format!("http://{proxy}/p/a") }).to_string();
    assert_eq!(purge(url).await, 1);
    assert_forwarded(&client.get("/p/a").await, "/p/a #2");
    assert_hit(&client.get("/p/b").await, "/p/b #1");

    let prefix = serde_json::json!({ "prefix": format!("http://{proxy}/p/") }).to_string();
    assert_eq!(purge(prefix).await, 3, "/p/a, /p/b and /p/c?x=1");
    assert_forwarded(&client.get("/p/a").await, "/p/a #3");
    assert_forwarded(&client.get("/p/b").await, "/p/b #2");
    assert_forwarded(&client.get("/p/c?x=1").await, "/p/c?x=1 #2");
    assert_hit(&client.get("/q").await, "/q #1");

    let status: Value = serde_json::from_slice(&common::get(admin, "/status").await.body).unwrap();
    assert_eq!(status["caches"]["c"]["entries"].as_u64(), Some(4));
    assert_eq!(
        status["caches"]["c"]["bytes"].as_u64(),
        Some(cache_of(&running).store.bytes())
    );
}

#[tokio::test]
async fn cache_request_metrics_count_each_result() {
    let origin = Origin::start(|seen| match seen.path.as_str() {
        "/fresh" => ok(&[("cache-control", "max-age=60")], "fresh"),
        "/reval" if seen.header("if-none-match").is_some() => respond(
            304,
            &[("etag", "\"r\""), ("cache-control", "max-age=0")],
            "",
        ),
        "/reval" => ok(
            &[("etag", "\"r\""), ("cache-control", "max-age=0")],
            "reval",
        ),
        _ => ok(
            &[("cache-control", "max-age=0, stale-while-revalidate=60")],
            "swr",
        ),
    })
    .await;
    let (running, mut client) = start(&origin).await;
    let admin = running.admin_addr.expect("admin listener");

    client.get("/fresh").await; // miss
    client.get("/fresh").await; // hit
    client.get("/reval").await; // miss
    client.get("/reval").await; // revalidated (304 from the origin)
    client.get("/swr").await; // miss
    client.get("/swr").await; // stale, refreshed in the background
    send(&mut client, "POST", "/fresh", &[], "x").await; // bypass
    wait_no_flights(&running).await;

    let text = common::get(admin, "/metrics").await.text();
    for (result, want) in [
        ("hit", 1.0),
        ("miss", 3.0),
        ("stale", 1.0),
        ("revalidated", 1.0),
        ("bypass", 1.0),
    ] {
        assert_eq!(
            metric_sample(
                &text,
                "gatehouse_cache_requests_total",
                &[("cache", "c"), ("result", result)]
            ),
            Some(want),
            "gatehouse_cache_requests_total{{result={result}}}; /metrics:\n{text}"
        );
    }
    assert_eq!(origin.count("/swr"), 2, "one background refresh");
}
