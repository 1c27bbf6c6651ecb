//! Upstream resilience with real servers on loopback: health checks taking a killed server out
//! of rotation and a restarted one back in, circuit breakers opening on consecutive failures or
//! a failure rate and recovering through half-open trials (sooner only when a server's checks
//! failed and pass again, not while they keep passing), fast 503s when no server is left,
//! failover from a hanging server, panic mode, no extra upstream requests on the data path,
//! /status reporting, and `gatehouse check` rejecting bad resilience settings.

mod common;

use bytes::Bytes;
use common::{
    Client, HeldUpstream, KillableUpstream, Reply, TestUpstream, WAIT, balanced_config,
    metric_sample, refused_addr, server_entries, simple_config,
};
use gatehouse::app::Running;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// Room for scheduling on a busy two-core machine, added to every upper time bound.
const MARGIN: Duration = Duration::from_millis(400);

/// The timing-sensitive tests run one at a time, so none measures another's load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

// ---------------------------------------------------------------------------------------------
// An upstream the test steers while it runs.

struct SwitchState {
    /// The status of every path but /healthz.
    status: AtomicU16,
    /// The status of /healthz.
    healthz_status: AtomicU16,
    /// Data requests alternate 200, 500, 200, … (overrides `status`).
    alternate: AtomicBool,
    /// Data requests wait for `release` before answering.
    hold: AtomicBool,
    release: Semaphore,
    data: AtomicUsize,
    checks: AtomicUsize,
    /// (path, user-agent) of every request.
    log: Mutex<Vec<(String, Option<String>)>>,
}

/// Counts health checks (/healthz) and data requests (any other path) apart; the statuses it
/// answers and whether it holds data requests can be switched at any time.
struct Switchable {
    addr: SocketAddr,
    state: Arc<SwitchState>,
    upstream: TestUpstream,
}

impl Switchable {
    async fn start(name: &str, status: u16, healthz_status: u16) -> Self {
        let state = Arc::new(SwitchState {
            status: AtomicU16::new(status),
            healthz_status: AtomicU16::new(healthz_status),
            alternate: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            release: Semaphore::new(0),
            data: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let owned = name.to_owned();
        let upstream = TestUpstream::with_handler(
            name,
            Arc::new(move |request: Request<Incoming>| {
                let state = Arc::clone(&shared);
                let name = owned.clone();
                Box::pin(async move {
                    let path = request.uri().path().to_owned();
                    let agent = request
                        .headers()
                        .get(http::header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    state.log.lock().unwrap().push((path.clone(), agent));
                    let status = if path == "/healthz" {
                        state.checks.fetch_add(1, Ordering::SeqCst);
                        state.healthz_status.load(Ordering::SeqCst)
                    } else {
                        let n = state.data.fetch_add(1, Ordering::SeqCst);
                        if state.hold.load(Ordering::SeqCst) {
                            state
                                .release
                                .acquire()
                                .await
                                .expect("release gate open")
                                .forget();
                        }
                        if state.alternate.load(Ordering::SeqCst) {
                            if n.is_multiple_of(2) { 200 } else { 500 }
                        } else {
                            state.status.load(Ordering::SeqCst)
                        }
                    };
                    Response::builder()
                        .status(status)
                        .header("x-upstream", name.as_str())
                        .body(Full::new(Bytes::from(name)))
                        .unwrap()
                })
            }),
        )
        .await;
        Self {
            addr: upstream.addr,
            state,
            upstream,
        }
    }

    fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }
    fn set_hold(&self, hold: bool) {
        self.state.hold.store(hold, Ordering::SeqCst);
    }
    fn release_one(&self) {
        self.state.release.add_permits(1);
    }
    fn data(&self) -> usize {
        self.state.data.load(Ordering::SeqCst)
    }
    fn checks(&self) -> usize {
        self.state.checks.load(Ordering::SeqCst)
    }
    fn connections(&self) -> usize {
        self.upstream.connections.load(Ordering::SeqCst)
    }
    fn log(&self) -> Vec<(String, Option<String>)> {
        self.state.log.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics, waiting and config helpers.

fn server_sample(running: &Running, family: &str, server: SocketAddr) -> Option<f64> {
    let server = server.to_string();
    metric_sample(
        &running.metrics.render(),
        family,
        &[("upstream", "app"), ("server", &server)],
    )
}

/// `gatehouse_upstream_server_up` of `server`.
fn up(running: &Running, server: SocketAddr) -> Option<f64> {
    server_sample(running, "gatehouse_upstream_server_up", server)
}

/// `gatehouse_circuit_breaker_state` of `server`: 0 closed, 1 half-open, 2 open.
fn breaker(running: &Running, server: SocketAddr) -> Option<f64> {
    server_sample(running, "gatehouse_circuit_breaker_state", server)
}

/// `gatehouse_circuit_breaker_transitions_total{to}` of `server`.
fn transitions(running: &Running, server: SocketAddr, to: &str) -> f64 {
    let server = server.to_string();
    metric_sample(
        &running.metrics.render(),
        "gatehouse_circuit_breaker_transitions_total",
        &[("upstream", "app"), ("server", &server), ("to", to)],
    )
    .unwrap_or(0.0)
}

/// Every attempt gatehouse made on `server`, whatever its outcome (connect errors included).
fn attempts(running: &Running, server: SocketAddr) -> f64 {
    let text = running.metrics.render();
    let server = server.to_string();
    ["ok", "http_5xx", "connect_error", "timeout", "error"]
        .iter()
        .filter_map(|outcome| {
            metric_sample(
                &text,
                "gatehouse_upstream_requests_total",
                &[
                    ("upstream", "app"),
                    ("server", &server),
                    ("outcome", outcome),
                ],
            )
        })
        .sum()
}

/// `gatehouse_health_checks_total` of `server`, passed and failed.
fn checks_recorded(running: &Running, server: SocketAddr) -> f64 {
    let text = running.metrics.render();
    let server = server.to_string();
    ["pass", "fail"]
        .iter()
        .filter_map(|result| {
            metric_sample(
                &text,
                "gatehouse_health_checks_total",
                &[("upstream", "app"), ("server", &server), ("result", result)],
            )
        })
        .sum()
}

/// `gatehouse_health_checks_total{result="fail"}` of `server`.
fn checks_failed(running: &Running, server: SocketAddr) -> f64 {
    let server = server.to_string();
    metric_sample(
        &running.metrics.render(),
        "gatehouse_health_checks_total",
        &[("upstream", "app"), ("server", &server), ("result", "fail")],
    )
    .unwrap_or(0.0)
}

/// Polls `condition` every few milliseconds until it holds, and returns how long that took;
/// panics (naming `what`) if it still does not hold after `limit`.
async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// The text of a `[upstream.app.health]` section.
fn health(interval: &str, healthy: u32, unhealthy: u32) -> String {
    format!(
        r#"
[upstream.app.health]
path = "/healthz"
interval = "{interval}"
timeout = "100ms"
expect_status = "200-399"
healthy_threshold = {healthy}
unhealthy_threshold = {unhealthy}
"#
    )
}

fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {:?}", reply.headers))
        .parse()
        .expect("Retry-After in seconds")
}

fn describe(reply: &Reply) -> String {
    format!("{} {:?}", reply.status, reply.text())
}

/// Turned away at once (`why`): 503 with a Retry-After of at least a second.
fn assert_turned_away(reply: &Reply, why: &str) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{why}: {}",
        describe(reply)
    );
    assert!(retry_after(reply) >= 1);
}

// ---------------------------------------------------------------------------------------------
// 1. Kill and restart under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_leaves_rotation_without_client_errors_and_returns_after_restart() {
    let _serial = serial().await;
    const INTERVAL: Duration = Duration::from_millis(100);
    const CHECK_TIMEOUT: Duration = Duration::from_millis(100);
    const THRESHOLD: u32 = 2;
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let mut k = KillableUpstream::named("k").await;
    let config = balanced_config("round_robin", &server_entries(&[a.addr, b.addr, k.addr]))
        + &health("100ms", THRESHOLD, THRESHOLD);
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    // How long checks may take to notice a change, plus scheduling room.
    let notice = INTERVAL * THRESHOLD + CHECK_TIMEOUT + MARGIN;

    // Four clients, each on one keep-alive connection, GET in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(proxy).await;
            let (mut ok, mut failed) = (0usize, Vec::new());
            for i in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let reply = client.get(&format!("/load/{c}/{i}")).await;
                if reply.status == StatusCode::OK {
                    ok += 1;
                } else {
                    failed.push(describe(&reply));
                }
                // A steady load, not a saturating one.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        }));
    }
    let data_arrivals = |k: &KillableUpstream, from: usize| {
        k.arrivals()[from..]
            .iter()
            .filter(|a| a.path != "/healthz")
            .count()
    };
    wait_until("k serves its share before the kill", WAIT, || {
        data_arrivals(&k, 0) >= 20
    })
    .await;

    k.kill().await;
    let killed_at = Instant::now();
    let went_down = wait_until("k's up gauge goes to 0 after the kill", WAIT, || {
        up(&running, k.addr) == Some(0.0)
    })
    .await;
    assert!(
        went_down <= notice,
        "k marked down {went_down:?} after the kill; allowed {notice:?}"
    );
    // Requests that had already picked k may still try it once each (four clients); then no
    // attempt on k while it is down.
    let attempts_when_down = attempts(&running, k.addr);
    tokio::time::sleep_until((killed_at + Duration::from_millis(900)).into()).await;
    let attempts_later = attempts(&running, k.addr);
    assert!(
        attempts_later <= attempts_when_down + 4.0,
        "k was tried {} more times while marked down",
        attempts_later - attempts_when_down
    );
    assert_eq!(up(&running, k.addr), Some(0.0), "k stays down while dead");

    let before_restart = k.arrivals().len();
    k.restart();
    let came_up = wait_until("k's up gauge back to 1 after the restart", WAIT, || {
        up(&running, k.addr) == Some(1.0)
    })
    .await;
    assert!(
        came_up <= notice,
        "k marked up {came_up:?} after the restart; allowed {notice:?}"
    );
    wait_until("k gets traffic again after the restart", WAIT, || {
        data_arrivals(&k, before_restart) >= 10
    })
    .await;
    stop.store(true, Ordering::SeqCst);

    let (mut ok, mut failed) = (0, Vec::new());
    for client in clients {
        let (o, f) = timeout(WAIT, client)
            .await
            .expect("load client finishes")
            .expect("load client did not panic");
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed, first: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 100, "only {ok} GETs in the run");

    // After the restart, k saw `healthy_threshold` passing checks before any real request.
    let after: Vec<_> = k.arrivals()[before_restart..].to_vec();
    let first_data = after
        .iter()
        .position(|a| a.path != "/healthz")
        .expect("a real request after the restart");
    assert!(
        first_data >= THRESHOLD as usize,
        "k got a real request after only {first_data} checks: {:?}",
        &after[..=first_data]
    );
    assert!(a.received().len() > 20 && b.received().len() > 20);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_eject_a_killed_server_at_once_and_its_share_spreads_evenly() {
    let _serial = serial().await;
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let mut k = KillableUpstream::named("k").await;
    // Checks that would take a hundred failures to mark k down: only refused connects can
    // take it out; a passing check brings it back.
    let config = balanced_config("round_robin", &server_entries(&[a.addr, b.addr, k.addr]))
        + "eject_after_refused = 3\neject_for = \"1m\"\n"
        + &health("200ms", 1, 100);
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    for i in 0..30 {
        assert_eq!(
            client.get(&format!("/warm/{i}")).await.status,
            StatusCode::OK
        );
    }
    assert!(k.arrivals().iter().any(|a| a.path.starts_with("/warm/")));

    k.kill().await;
    let k_before = attempts(&running, k.addr);
    let load = |u: &TestUpstream| {
        u.received()
            .iter()
            .filter(|r| r.uri.path().starts_with("/load/"))
            .count()
    };
    for i in 0..300 {
        let reply = client.get(&format!("/load/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    }
    // Three refused connects, each retried elsewhere, then not one attempt more: ejected on
    // the third (a stale pooled connection may add one failed attempt before them).
    let k_tried = attempts(&running, k.addr) - k_before;
    assert!(
        (3.0..=4.0).contains(&k_tried),
        "k tried {k_tried} times after the kill"
    );
    let connect_errors = metric_sample(
        &running.metrics.render(),
        "gatehouse_upstream_requests_total",
        &[
            ("upstream", "app"),
            ("server", &k.addr.to_string()),
            ("outcome", "connect_error"),
        ],
    );
    assert_eq!(connect_errors, Some(3.0));
    let ejections = metric_sample(
        &running.metrics.render(),
        "gatehouse_upstream_ejections_total",
        &[("upstream", "app"), ("server", &k.addr.to_string())],
    );
    assert_eq!(ejections, Some(1.0));
    // k's share went to a and b alike, not all to the server after it.
    let (a_got, b_got) = (load(&a), load(&b));
    assert_eq!(a_got + b_got, 300);
    assert!(a_got.abs_diff(b_got) <= 4, "a got {a_got}, b got {b_got}");
    assert_eq!(
        up(&running, k.addr),
        Some(1.0),
        "the checks did not mark k down"
    );

    // Restarted: the next check that reaches it ends the ejection, long before its minute.
    let before_restart = k.arrivals().len();
    k.restart();
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    while !k.arrivals()[before_restart..]
        .iter()
        .any(|arrival| arrival.path.starts_with("/again/"))
    {
        assert!(
            Instant::now() < deadline,
            "k never got traffic again after its restart"
        );
        let reply = client.get(&format!("/again/{n}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Breaker: consecutive failures, half-open trials, longer re-opening.

/// Sends GETs (each on a new connection, one every 10 ms) until one is admitted to the
/// upstream rather than answered 503 by gatehouse; `data` counts the real requests the
/// upstream received. Returns when the admission was seen and the admitted request (still
/// running if the upstream holds it).
async fn next_trial(
    proxy: SocketAddr,
    data: impl Fn() -> usize,
    limit: Duration,
) -> (Instant, tokio::task::JoinHandle<Reply>) {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < limit,
            "no request admitted within {limit:?}"
        );
        let before = data();
        let request = tokio::spawn(common::get(proxy, "/trial"));
        let reached = loop {
            if data() > before {
                break true;
            }
            if request.is_finished() {
                break data() > before;
            }
            assert!(
                start.elapsed() < limit + WAIT,
                "a GET neither ended nor arrived"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let seen = Instant::now();
        if reached {
            return (seen, request);
        }
        let reply = request.await.expect("GET task");
        assert_turned_away(&reply, "rejected by the open breaker");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_after_consecutive_failures_and_recovers_through_trials() {
    let _serial = serial().await;
    const OPEN_FOR: Duration = Duration::from_millis(400);
    let up = Switchable::start("flaky", 500, 200).await;
    let config = simple_config(&[up.addr], "")
        + r#"
[upstream.app.breaker]
consecutive_failures = 3
open_for = "400ms"
max_open_for = "5m"
half_open_requests = 1
"#;
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    let mut client = Client::connect(proxy).await;
    let state = || breaker(&running, up.addr);

    // Two failures: still closed.
    for _ in 0..2 {
        assert_eq!(
            client.get("/x").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(state(), Some(0.0));
    // The third opens it.
    let opened = Instant::now();
    assert_eq!(
        client.get("/x").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(state(), Some(2.0), "open after 3 failures in a row");
    assert_eq!(transitions(&running, up.addr, "open"), 1.0);
    assert_eq!(up.data(), 3);

    // Open: 503 with Retry-After at once, and nothing reaches the upstream.
    for _ in 0..3 {
        let reply = client.get("/x").await;
        assert_turned_away(&reply, "open: nothing reaches the upstream");
    }
    assert_eq!(
        up.data(),
        3,
        "no request reaches a server whose breaker is open"
    );

    // After open_for, one trial goes through (held here), and only one.
    up.set_hold(true);
    let (admitted, trial) = next_trial(proxy, || up.data(), OPEN_FOR + MARGIN + WAIT).await;
    let waited = admitted - opened;
    assert!(
        waited >= OPEN_FOR && waited <= OPEN_FOR + MARGIN,
        "first trial after {waited:?}; open_for is {OPEN_FOR:?}"
    );
    assert_eq!(state(), Some(1.0), "half-open during the trial");
    assert_eq!(transitions(&running, up.addr, "half_open"), 1.0);
    let reply = client.get("/x").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a second request while the one trial runs: {}",
        describe(&reply)
    );
    assert_eq!(up.data(), 4);

    // A failed trial re-opens it, for twice as long.
    let reopened = Instant::now();
    up.release_one();
    let reply = timeout(WAIT, trial)
        .await
        .expect("trial ends")
        .expect("task");
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(state(), Some(2.0), "open again after a failed trial");
    assert_eq!(transitions(&running, up.addr, "open"), 2.0);
    up.set_hold(false);
    up.set_status(200);
    let (admitted, trial) = next_trial(proxy, || up.data(), 2 * OPEN_FOR + MARGIN + WAIT).await;
    let waited = admitted - reopened;
    assert!(
        waited >= 2 * OPEN_FOR && waited <= 2 * OPEN_FOR + MARGIN,
        "trial after the re-opening came {waited:?} later; want 2 × open_for = {:?}",
        2 * OPEN_FOR
    );
    // A good trial closes it.
    let reply = timeout(WAIT, trial)
        .await
        .expect("trial ends")
        .expect("task");
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert_eq!(state(), Some(0.0), "closed after a good trial");
    assert_eq!(transitions(&running, up.addr, "closed"), 1.0);
    assert_eq!(transitions(&running, up.addr, "half_open"), 2.0);
    for _ in 0..3 {
        assert_eq!(client.get("/x").await.status, StatusCode::OK);
    }

    // Once closed, the next opening lasts open_for again, not the doubled time.
    up.set_status(500);
    let opened = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            client.get("/x").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(state(), Some(2.0));
    up.set_status(200);
    let (admitted, trial) = next_trial(proxy, || up.data(), OPEN_FOR + MARGIN + WAIT).await;
    let waited = admitted - opened;
    assert!(
        waited >= OPEN_FOR && waited < 2 * OPEN_FOR,
        "trial {waited:?} after the third opening; want open_for ({OPEN_FOR:?}) again"
    );
    let reply = timeout(WAIT, trial)
        .await
        .expect("trial ends")
        .expect("task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(state(), Some(0.0));
    running.shutdown().await;
}

/// A server that passes its health checks but fails every real request: the passing checks
/// tell the breaker nothing new, so trials come open_for, 2 × open_for, 4 × open_for after
/// each opening, not at every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_checks_leave_the_open_time_and_its_doubling_to_a_server_failing_requests() {
    let _serial = serial().await;
    const OPEN_FOR: Duration = Duration::from_millis(300);
    // Checks every 50 ms: several pass during every open time.
    let server = Switchable::start("fails-requests", 500, 200).await;
    let config = simple_config(&[server.addr], "")
        + &health("50ms", 1, 1)
        + r#"
[upstream.app.breaker]
consecutive_failures = 3
open_for = "300ms"
max_open_for = "5m"
half_open_requests = 1
"#;
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    wait_until("a first health check recorded", WAIT, || {
        checks_recorded(&running, server.addr) >= 1.0
    })
    .await;
    let mut client = Client::connect(proxy).await;
    let mut opened = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            client.get("/x").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(
        breaker(&running, server.addr),
        Some(2.0),
        "open after 3 failures"
    );

    // Each trial is held upstream, so that the re-opening can be timed from its release.
    server.set_hold(true);
    for (n, open_for) in [OPEN_FOR, 2 * OPEN_FOR, 4 * OPEN_FOR]
        .into_iter()
        .enumerate()
    {
        let checks_before = server.checks();
        let (admitted, trial) = next_trial(proxy, || server.data(), open_for + MARGIN + WAIT).await;
        let waited = admitted - opened;
        let checks_passed = server.checks() - checks_before;
        assert!(
            waited >= open_for && waited <= open_for + MARGIN,
            "trial {} came {waited:?} after the breaker opened, with {checks_passed} passing \
             health checks meanwhile; want {open_for:?}",
            n + 1
        );
        assert!(
            checks_passed >= 2,
            "only {checks_passed} health checks in {waited:?}: the test shows nothing"
        );
        assert_eq!(up(&running, server.addr), Some(1.0), "health checks pass");
        assert_eq!(
            breaker(&running, server.addr),
            Some(1.0),
            "half-open during the trial"
        );
        opened = Instant::now();
        server.release_one();
        let reply = timeout(WAIT, trial)
            .await
            .expect("trial ends")
            .expect("task");
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            describe(&reply)
        );
        assert_eq!(breaker(&running, server.addr), Some(2.0), "open again");
    }
    assert_eq!(
        server.data(),
        3 + 3,
        "three failures, then one request per trial"
    );
    assert_eq!(transitions(&running, server.addr, "open"), 4.0);
    assert_eq!(transitions(&running, server.addr, "half_open"), 3.0);
    running.shutdown().await;
}

/// A server that was down (its checks failed while its breaker was open) and came back: the
/// first passing check is news, and the next request is the trial at once instead of after
/// open_for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_was_down_and_came_back_gets_its_trial_at_once() {
    let _serial = serial().await;
    const INTERVAL: Duration = Duration::from_millis(100);
    const OPEN_FOR: Duration = Duration::from_secs(30);
    let mut k = KillableUpstream::named("k").await;
    // Three failed checks (at least 200 ms) before k is marked down: time for two real
    // requests to fail and open the breaker first.
    let config = simple_config(&[k.addr], "")
        + &health("100ms", 1, 3)
        + r#"
[upstream.app.breaker]
consecutive_failures = 2
open_for = "30s"
half_open_requests = 1
"#;
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    wait_until("a first health check recorded", WAIT, || {
        checks_recorded(&running, k.addr) >= 1.0
    })
    .await;

    k.kill().await;
    let mut client = Client::connect(proxy).await;
    for _ in 0..2 {
        assert_eq!(client.get("/x").await.status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(
        breaker(&running, k.addr),
        Some(2.0),
        "open after 2 refused connects"
    );
    let failed_before = checks_failed(&running, k.addr);
    wait_until("k marked down by its failing checks", WAIT, || {
        up(&running, k.addr) == Some(0.0) && checks_failed(&running, k.addr) > failed_before
    })
    .await;
    assert_eq!(breaker(&running, k.addr), Some(2.0), "still open");

    let data_before = k_data(&k);
    k.restart();
    let restarted = Instant::now();
    let (admitted, trial) = next_trial(proxy, || k_data(&k), WAIT).await;
    let waited = admitted - restarted;
    assert!(
        waited <= 2 * INTERVAL + MARGIN,
        "trial {waited:?} after the restart; want the next passing check (every {INTERVAL:?}), \
         not open_for ({OPEN_FOR:?})"
    );
    let reply = timeout(WAIT, trial)
        .await
        .expect("trial ends")
        .expect("task");
    assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    assert_eq!(
        breaker(&running, k.addr),
        Some(0.0),
        "closed by the good trial"
    );
    assert_eq!(transitions(&running, k.addr, "half_open"), 1.0);
    assert_eq!(transitions(&running, k.addr, "closed"), 1.0);
    assert_eq!(k_data(&k), data_before + 1, "one trial");
    for _ in 0..3 {
        assert_eq!(client.get("/x").await.status, StatusCode::OK);
    }
    running.shutdown().await;
}

/// Real requests (not health checks) `k` received, across restarts.
fn k_data(k: &KillableUpstream) -> usize {
    k.arrivals().iter().filter(|a| a.path != "/healthz").count()
}

// ---------------------------------------------------------------------------------------------
// 3. Breaker: failure rate.

#[tokio::test]
async fn breaker_opens_on_failure_rate_once_min_requests_were_seen() {
    let _serial = serial().await;
    let up = Switchable::start("half-bad", 200, 200).await;
    up.state.alternate.store(true, Ordering::SeqCst);
    let config = simple_config(&[up.addr], "")
        + r#"
[upstream.app.breaker]
consecutive_failures = 1000
failure_rate = 0.5
window = "10s"
min_requests = 10
open_for = "30s"
"#;
    let running = common::start_gatehouse(&config).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for n in 0..9_u32 {
        let reply = client.get("/x").await;
        let want = if n.is_multiple_of(2) { 200 } else { 500 };
        assert_eq!(reply.status.as_u16(), want, "request {}", n + 1);
        assert_eq!(
            breaker(&running, up.addr),
            Some(0.0),
            "closed after {} requests (fewer than min_requests)",
            n + 1
        );
    }
    // The tenth (a failure) makes 5 of 10: 50%.
    assert_eq!(client.get("/x").await.status.as_u16(), 500);
    assert_eq!(
        breaker(&running, up.addr),
        Some(2.0),
        "open at 5 failures in 10"
    );
    assert_eq!(transitions(&running, up.addr, "open"), 1.0);
    let reply = client.get("/x").await;
    assert_turned_away(&reply, "open at 5 failures in 10");
    assert_eq!(up.data(), 10);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Every server down.

#[tokio::test]
async fn all_servers_down_answers_503_at_once_without_connecting() {
    let _serial = serial().await;
    let sick = Switchable::start("sick", 200, 503).await;
    let dead = refused_addr().await;
    let config = simple_config(&[sick.addr, dead], "") + &health("250ms", 1, 1);
    let running = common::start_gatehouse(&config).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    wait_until("both servers marked down", WAIT, || {
        up(&running, sick.addr) == Some(0.0) && up(&running, dead) == Some(0.0)
    })
    .await;

    // Measure between two checks of `sick` (250 ms apart), so that every connection it
    // accepts in that time is gatehouse's; again if a check slipped in anyway.
    let mut measured = 0;
    for _ in 0..10 {
        let checks = checks_recorded(&running, sick.addr);
        wait_until("the next health check of sick", WAIT, || {
            checks_recorded(&running, sick.addr) > checks
        })
        .await;
        let (connections, seen_checks) = (sick.connections(), sick.checks());
        let mut fast = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let reply = client.get("/x").await;
            fast.push(started.elapsed());
            assert_turned_away(&reply, "every server down");
        }
        if sick.checks() != seen_checks {
            continue;
        }
        assert_eq!(
            sick.connections(),
            connections,
            "gatehouse connected to a server marked down"
        );
        for elapsed in fast {
            assert!(elapsed < Duration::from_millis(50), "503 took {elapsed:?}");
        }
        measured += 1;
        break;
    }
    assert_eq!(measured, 1, "no quiet window between health checks");
    assert_eq!(sick.data(), 0, "no real request reached the down server");
    assert_eq!(attempts(&running, sick.addr), 0.0);
    assert_eq!(
        attempts(&running, dead),
        0.0,
        "no connect attempt on the refused server"
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. A hanging server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_server_fails_over_within_the_response_timeout_and_its_breaker_opens() {
    let _serial = serial().await;
    const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
    let hung = HeldUpstream::start().await;
    let good = TestUpstream::named("good").await;
    let config = balanced_config("round_robin", &server_entries(&[hung.addr, good.addr])).replace(
        "balance = \"round_robin\"",
        "balance = \"round_robin\"\nresponse_timeout = \"300ms\"",
    ) + r#"
[upstream.app.breaker]
consecutive_failures = 2
open_for = "30s"
"#;
    let running = common::start_gatehouse(&config).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for n in 0..6 {
        let started = Instant::now();
        let reply = client.get(&format!("/item/{n}")).await;
        let elapsed = started.elapsed();
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET {} after {elapsed:?}: {}; hanging server got {} requests, good server {} \
             (gatehouse counts {} timeouts on it)",
            n + 1,
            describe(&reply),
            hung.arrivals(),
            good.received().len(),
            metric_sample(
                &running.metrics.render(),
                "gatehouse_upstream_requests_total",
                &[("server", &good.addr.to_string()), ("outcome", "timeout")],
            )
            .unwrap_or(0.0)
        );
        assert_eq!(reply.text(), "good");
        assert!(
            elapsed < RESPONSE_TIMEOUT + MARGIN,
            "GET {} took {elapsed:?}",
            n + 1
        );
    }
    assert_eq!(
        breaker(&running, hung.addr),
        Some(2.0),
        "hanging server's breaker open"
    );
    assert_eq!(transitions(&running, hung.addr, "open"), 1.0);
    assert_eq!(
        breaker(&running, good.addr),
        Some(0.0),
        "good server's breaker closed"
    );
    assert_eq!(
        hung.arrivals(),
        2,
        "the hanging server got requests until its breaker opened"
    );
    // With the breaker open, nothing waits on the hanging server any more.
    for n in 0..4 {
        let started = Instant::now();
        let reply = client.get(&format!("/after/{n}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
        assert!(
            started.elapsed() < RESPONSE_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(hung.arrivals(), 2);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Panic mode.

/// Three servers answering 200 to real requests, two of them failing /healthz; returns how
/// many of 30 GETs each got once the two are marked down.
async fn spread_with_two_of_three_down(upstream_extra: &str) -> [usize; 3] {
    let healthy = Switchable::start("healthy", 200, 200).await;
    let sick1 = Switchable::start("sick1", 200, 503).await;
    let sick2 = Switchable::start("sick2", 200, 503).await;
    let config = simple_config(
        &[healthy.addr, sick1.addr, sick2.addr],
        &format!("balance = \"round_robin\"\n{upstream_extra}"),
    ) + &health("100ms", 1, 1);
    let running = common::start_gatehouse(&config).await;
    wait_until("two of three servers marked down", WAIT, || {
        up(&running, healthy.addr) == Some(1.0)
            && up(&running, sick1.addr) == Some(0.0)
            && up(&running, sick2.addr) == Some(0.0)
    })
    .await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for n in 0..30 {
        let reply = client.get(&format!("/item/{n}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    }
    running.shutdown().await;
    [healthy.data(), sick1.data(), sick2.data()]
}

#[tokio::test]
async fn panic_mode_spreads_over_all_servers_when_too_few_are_healthy() {
    let _serial = serial().await;
    let spread = spread_with_two_of_three_down("panic_threshold = 0.5").await;
    assert_eq!(spread.iter().sum::<usize>(), 30);
    assert!(
        spread.iter().all(|&n| (9..=11).contains(&n)),
        "in panic mode round robin uses all three servers: {spread:?}"
    );
    let normal = spread_with_two_of_three_down("").await;
    assert_eq!(
        normal,
        [30, 0, 0],
        "without panic_threshold only the healthy server gets traffic"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. No added work on the request path.

#[tokio::test]
async fn checks_and_breakers_add_no_upstream_requests_to_real_traffic() {
    let _serial = serial().await;
    const N: usize = 60;
    let a = Switchable::start("a", 200, 200).await;
    let b = Switchable::start("b", 200, 200).await;
    let config = simple_config(&[a.addr, b.addr], "")
        + &health("50ms", 2, 3)
        + r#"
[upstream.app.breaker]
consecutive_failures = 5
failure_rate = 0.5
min_requests = 20
"#;
    let running = common::start_gatehouse(&config).await;
    wait_until("health checks running on both servers", WAIT, || {
        a.checks() >= 2 && b.checks() >= 2
    })
    .await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for n in 0..N {
        let reply = client.get(&format!("/item/{n}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", describe(&reply));
    }
    running.shutdown().await;

    let mut data: Vec<String> = Vec::new();
    let mut checks = 0;
    for (path, agent) in a.log().into_iter().chain(b.log()) {
        if path == "/healthz" {
            assert_eq!(agent.as_deref(), Some("gatehouse-health-check"));
            checks += 1;
        } else {
            assert_ne!(agent.as_deref(), Some("gatehouse-health-check"), "{path}");
            data.push(path);
        }
    }
    data.sort();
    let mut want: Vec<String> = (0..N).map(|n| format!("/item/{n}")).collect();
    want.sort();
    assert_eq!(
        data, want,
        "each real request reached an upstream exactly once"
    );
    assert_eq!(a.data() + b.data(), N);
    assert!(checks >= 4, "{checks} checks");
}

// ---------------------------------------------------------------------------------------------
// 8. /status and `gatehouse check`.

#[tokio::test]
async fn status_reports_health_and_breaker_per_server() {
    let _serial = serial().await;
    let good = Switchable::start("good", 200, 200).await;
    let down = Switchable::start("down", 200, 503).await;
    let failing = Switchable::start("failing", 500, 200).await;
    let config = simple_config(
        &[good.addr, down.addr, failing.addr],
        "balance = \"round_robin\"",
    )
    .replace("bind = \"\"", "bind = \"127.0.0.1:0\"")
        + &health("100ms", 1, 1)
        + r#"
[upstream.app.breaker]
consecutive_failures = 1
open_for = "30s"
"#;
    let running = common::start_gatehouse(&config).await;
    let admin = running.admin_addr.expect("admin listener");
    wait_until(
        "checks of all three recorded, one server down",
        WAIT,
        || {
            up(&running, down.addr) == Some(0.0)
                && checks_recorded(&running, good.addr) >= 1.0
                && checks_recorded(&running, failing.addr) >= 1.0
        },
    )
    .await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    for _ in 0..10 {
        if breaker(&running, failing.addr) == Some(2.0) {
            break;
        }
        client.get("/x").await;
    }
    assert_eq!(
        breaker(&running, failing.addr),
        Some(2.0),
        "failing's breaker open"
    );
    // Passing checks of `failing` while its breaker is open leave its open time as it is.
    let recorded = checks_recorded(&running, failing.addr);
    wait_until("two more checks of failing recorded", WAIT, || {
        checks_recorded(&running, failing.addr) >= recorded + 2.0
    })
    .await;

    let reply = common::get(admin, "/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    let status: Value = serde_json::from_slice(&reply.body).expect("/status is JSON");
    let servers = status["upstreams"]["app"]["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no servers in /status: {status}"))
        .clone();
    let server = |addr: SocketAddr| {
        servers
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .unwrap_or_else(|| panic!("{addr} not in /status: {status}"))
            .clone()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in [server(good.addr), server(down.addr), server(failing.addr)] {
        let last_check = s["health"]["last_check"]
            .as_u64()
            .unwrap_or_else(|| panic!("no last_check: {s}"));
        assert!(
            last_check.abs_diff(now) <= 5,
            "last_check {last_check}, now {now}"
        );
    }

    let g = server(good.addr);
    assert_eq!(g["health"]["up"], true, "{g}");
    assert_eq!(g["health"]["last_result"], "pass", "{g}");
    assert!(g["health"]["last_failure"].is_null(), "{g}");
    assert_eq!(g["breaker"], "closed", "{g}");

    let d = server(down.addr);
    assert_eq!(d["health"]["up"], false, "{d}");
    assert_eq!(d["health"]["last_result"], "fail: status 503", "{d}");
    assert_eq!(d["health"]["last_failure"], "status 503", "{d}");
    assert_eq!(d["breaker"], "closed", "{d}");
    assert_eq!(d["eligible"], false, "{d}");

    let f = server(failing.addr);
    assert_eq!(f["health"]["up"], true, "{f}");
    assert_eq!(f["breaker"], "open", "{f}");
    assert_eq!(f["eligible"], false, "{f}");
    let next_trial = f["breaker_next_trial_in_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no next trial for an open breaker: {f}"));
    assert!(
        (20_000..=30_000).contains(&next_trial),
        "next trial in {next_trial} ms; open_for is 30 s: {f}"
    );
    assert!(g["breaker_next_trial_in_ms"].is_null(), "{g}");
    assert!(d["breaker_next_trial_in_ms"].is_null(), "{d}");
    running.shutdown().await;
}

/// Runs `gatehouse check --config FILE` on `text`; returns (exit code, stdout, stderr, path).
fn gatehouse_check(name: &str, text: &str) -> (Option<i32>, String, String, PathBuf) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resilience-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let config = path.to_str().expect("a UTF-8 temp path");
    let outcome = common::process::run_gatehouse(&["check", "--config", config]);
    let _ = std::fs::remove_file(&path);
    (outcome.code, outcome.stdout, outcome.stderr, path)
}

#[test]
fn check_rejects_bad_resilience_values_with_their_place() {
    // (name, text added to [upstream.app], the value as written, key, message fragment)
    let cases = [
        (
            "expect-status",
            "[upstream.app.health]\nexpect_status = \"2xx\"",
            "\"2xx\"",
            "upstream.app.health.expect_status",
            "invalid status list",
        ),
        (
            "failure-rate",
            "[upstream.app.breaker]\nfailure_rate = 1.5",
            "1.5",
            "upstream.app.breaker.failure_rate",
            "between 0.0",
        ),
        (
            "half-open",
            "[upstream.app.breaker]\nhalf_open_requests = 0",
            "0",
            "upstream.app.breaker.half_open_requests",
            "at least 1",
        ),
        (
            "panic",
            "panic_threshold = 2",
            "2",
            "upstream.app.panic_threshold",
            "between 0.0",
        ),
    ];
    for (name, extra, value, key, fragment) in cases {
        let text = format!(
            "[admin]\nbind = \"\"\n\n[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:18080\"\n\n\
             [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n\n\
             [upstream.app]\nservers = [\"127.0.0.1:18001\"]\n{extra}\n"
        );
        // The value's place: on the last line of `extra`, after "key = ".
        let line = text.lines().count();
        let column = extra.lines().last().unwrap().find(" = ").unwrap() + 4;
        assert!(extra.ends_with(value));
        let (code, stdout, stderr, path) = gatehouse_check(name, &text);
        assert_eq!(code, Some(1), "{name}: stderr:\n{stderr}");
        assert!(!stdout.contains("config ok"), "{name}: stdout: {stdout}");
        let prefix = format!("{}:{line}:{column}: {key}: ", path.display());
        let reported = stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{name}: no line starting {prefix:?} in stderr:\n{stderr}"));
        assert!(
            reported.contains(fragment),
            "{name}: {reported:?} should mention {fragment:?}"
        );
    }
}

#[tokio::test]
async fn a_half_open_trial_whose_client_leaves_gives_its_slot_back() {
    // First request: 500 (opens the breaker). Second: held until released (the trial whose
    // client hangs up). Later ones: 200.
    let seen = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(Semaphore::new(0));
    let (counter, arrivals) = (Arc::clone(&seen), Arc::clone(&arrived));
    let upstream = TestUpstream::with_handler(
        "trial",
        Arc::new(move |_req: Request<Incoming>| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let arrivals = Arc::clone(&arrivals);
            Box::pin(async move {
                match n {
                    0 => Response::builder()
                        .status(500)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                    1 => {
                        arrivals.add_permits(1);
                        std::future::pending::<()>().await;
                        unreachable!("held for ever")
                    }
                    _ => Response::new(Full::new(Bytes::from_static(b"ok"))),
                }
            })
        }),
    )
    .await;
    let config = format!(
        "{}\n[upstream.app.breaker]\nconsecutive_failures = 1\nopen_for = \"200ms\"\nhalf_open_requests = 1\n",
        simple_config(&[upstream.addr], "retries = 0\nresponse_timeout = \"30s\"")
    );
    let running = common::start_gatehouse(&config).await;
    let proxy = running.listener_addrs[0];
    assert_eq!(
        common::get(proxy, "/").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    // Wait out open_for, then start the trial and hang up while it is held upstream.
    let deadline = Instant::now() + common::WAIT;
    let trial = loop {
        let client = tokio::spawn(async move { common::get(proxy, "/").await });
        if timeout(Duration::from_millis(300), arrived.acquire())
            .await
            .is_ok()
        {
            break client;
        }
        let reply = timeout(common::WAIT, client).await.unwrap().unwrap();
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "still open: {}",
            reply.text()
        );
        assert!(
            Instant::now() < deadline,
            "the breaker never let a trial through"
        );
    };
    trial.abort();
    let _ = trial.await;

    // The slot came back: the next request is the trial, reaches the server and closes it.
    let deadline = Instant::now() + common::WAIT;
    loop {
        let reply = common::get(proxy, "/").await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert!(
            Instant::now() < deadline,
            "the abandoned trial kept its slot: the breaker never let another request through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    running.shutdown().await;
}
