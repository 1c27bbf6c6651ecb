//! Config hot reload and zero-downtime binary upgrade over real loopback servers: reloads under
//! keep-alive load fail no request and apply from each connection's next request, bad edits
//! change nothing and are reported, the file watch reloads once per editor save or ConfigMap
//! swap, long-lived state survives a reload, listeners come and go, SIGHUP reloads the real
//! binary (and does not kill it when it comes early), and a second process takes the ports over
//! from the first on SIGTERM without failing a keep-alive request or a new connection.

mod common;

use bytes::Bytes;
use common::process::Process;
use common::{Client, HeldUpstream, KillableUpstream, Reply, TestUpstream, WAIT, metric_sample};
use gatehouse::app::Running;
use gatehouse::reload::config_hash;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// Files, ports and the admin endpoints.

/// A fresh directory for one test's config files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port free right now (bound on port 0, then released).
fn free_port() -> u16 {
    common::unclaimed_port()
}

/// The 1-based number of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config text"))
        + 1
}

async fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    let reply = common::get(admin, path).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text());
    reply
}

async fn status_of(admin: SocketAddr) -> Value {
    serde_json::from_slice(&admin_get(admin, "/status").await.body).expect("/status is JSON")
}

async fn metrics_of(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics").await.text()
}

/// `POST /reload`: the status and the JSON report.
async fn post_reload(admin: SocketAddr) -> (StatusCode, Value) {
    let mut client = Client::connect(admin).await;
    let reply = client
        .send(
            Request::post("/reload")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let report = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("POST /reload answered non-JSON ({e}): {}", reply.text()));
    (reply.status, report)
}

/// Reloads through `Reloader::reload` or `POST /reload` (by `via_admin`); returns the report as
/// JSON, with `ok` matching the HTTP status.
async fn reload(running: &Running, via_admin: bool) -> Value {
    if via_admin {
        let (status, report) = post_reload(running.admin_addr.expect("admin listener")).await;
        let ok = report["ok"].as_bool().expect("report.ok");
        let want = if ok {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_eq!(status, want, "POST /reload status for {report}");
        report
    } else {
        serde_json::to_value(running.reloader.reload("test").await).unwrap()
    }
}

fn assert_applied(report: &Value) {
    assert_eq!(report["ok"], true, "reload failed: {report}");
    assert_eq!(report["changed"], true, "reload saw no change: {report}");
}

/// A reload counter from /metrics (`result` is `ok` or `error`).
fn reloads_metric(metrics: &str, result: &str) -> f64 {
    metric_sample(
        metrics,
        "gatehouse_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or_else(|| panic!("no gatehouse_config_reloads_total{{result={result:?}}}"))
}

/// Polls until connecting to `addr` is refused.
async fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections {WAIT:?} after its listener was removed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keep-alive load.

/// How a request on a load connection went wrong.
#[derive(Debug)]
enum Failure {
    /// The connection was found closed before the request could be written.
    NotSent(String),
    /// No response head came (the connection was closed or reset before it).
    NoResponse(String),
    /// A response started but did not finish, or nothing came in time.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSent(why) => write!(f, "not sent: {why}"),
            Self::NoResponse(why) => write!(f, "no response: {why}"),
            Self::Broken(why) => write!(f, "broken response: {why}"),
        }
    }
}

/// One keep-alive HTTP/1.1 connection of a load task; errors are returned, not panicked on.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// Requests answered on it so far (a reused connection may have been closed as idle).
    answered: usize,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr} timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            answered: 0,
        })
    }

    async fn get(&mut self, path: &str) -> Result<Reply, Failure> {
        let request = Request::get(path)
            .header(http::header::HOST, "reload.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let sender = &mut self.sender;
        let outcome = timeout(WAIT, async move {
            sender
                .ready()
                .await
                .map_err(|e| Failure::NotSent(format!("connection closed: {e}")))?;
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => {
                    let sent = e.take_message().is_none();
                    let why = e.into_error().to_string();
                    return Err(if sent {
                        Failure::NoResponse(why)
                    } else {
                        Failure::NotSent(why)
                    });
                }
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Failure::Broken(format!("response body cut: {e}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
        .unwrap_or_else(|_| Err(Failure::Broken(format!("no reply within {WAIT:?}"))));
        if outcome.is_ok() {
            self.answered += 1;
        }
        outcome
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The config generation as the load sees it: `begun` moves when the test starts a reload,
/// `applied` once that reload has returned. A request sent after `applied` reached `g` and
/// answered before `begun` moved past `g` ran wholly under generation `g`; one that overlapped
/// a reload may see either side of it, never an older config.
#[derive(Default)]
struct Generation {
    begun: AtomicUsize,
    applied: AtomicUsize,
}

impl Generation {
    fn begin(&self, g: usize) {
        self.begun.store(g, Ordering::SeqCst);
    }

    fn applied(&self, g: usize) {
        self.applied.store(g, Ordering::SeqCst);
    }

    fn current(&self) -> usize {
        self.applied.load(Ordering::SeqCst)
    }
}

/// Which upstream names may answer `path` under config generation `g`.
type Expect = Arc<dyn Fn(usize, &str) -> BTreeSet<&'static str> + Send + Sync>;

/// What one strict load task saw.
#[derive(Default)]
struct LoadReport {
    requests: usize,
    failures: Vec<String>,
    /// Generations under which a whole request ran (sent and answered with no reload between).
    generations: BTreeSet<usize>,
}

/// Keep-alive load that tolerates nothing: every request must be answered 200 by an upstream
/// `expect` allows under a generation current while it ran, and gatehouse must not close the
/// connection.
struct StrictLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<LoadReport>>,
}

impl StrictLoad {
    fn start(
        addr: SocketAddr,
        tasks: usize,
        paths: &'static [&'static str],
        generation: Arc<Generation>,
        expect: Expect,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|task| {
                let (stop, generation, expect) = (
                    Arc::clone(&stop),
                    Arc::clone(&generation),
                    Arc::clone(&expect),
                );
                tokio::spawn(strict_task(task, addr, paths, generation, expect, stop))
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the tasks and returns their reports.
    async fn finish(self) -> Vec<LoadReport> {
        self.stop.store(true, Ordering::SeqCst);
        let mut reports = Vec::new();
        for task in self.tasks {
            reports.push(
                timeout(WAIT, task)
                    .await
                    .expect("a load task stops")
                    .expect("a load task does not panic"),
            );
        }
        reports
    }
}

/// Panics with the failures of `reports`, if any; returns the request count.
fn assert_no_failures(reports: &[LoadReport]) -> usize {
    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    let requests: usize = reports.iter().map(|r| r.requests).sum();
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    requests
}

async fn strict_task(
    task: usize,
    addr: SocketAddr,
    paths: &'static [&'static str],
    generation: Arc<Generation>,
    expect: Expect,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut report = LoadReport::default();
    // A bound of its own, in case the test never says stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = match Conn::open(addr).await {
        Ok(conn) => conn,
        Err(e) => {
            report.failures.push(format!("task {task}: {e}"));
            return report;
        }
    };
    let mut pace = tokio::time::interval(Duration::from_millis(4));
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        pace.tick().await;
        let path = paths[n % paths.len()];
        n += 1;
        let first = generation.applied.load(Ordering::SeqCst);
        let result = conn.get(path).await;
        let last = generation.begun.load(Ordering::SeqCst);
        report.requests += 1;
        let during = format!("task {task}, request {n} GET {path} under config {first}..={last}");
        match result {
            Err(failure) => {
                report.failures.push(format!("{during}: {failure}"));
                match Conn::open(addr).await {
                    Ok(fresh) => conn = fresh,
                    Err(e) => {
                        report.failures.push(format!("task {task}: reconnect: {e}"));
                        return report;
                    }
                }
            }
            Ok(reply) => {
                let who = reply.text();
                let allowed: BTreeSet<&str> =
                    (first..=last).flat_map(|g| expect(g, path)).collect();
                if reply.status != StatusCode::OK {
                    report
                        .failures
                        .push(format!("{during}: status {} body {who:?}", reply.status));
                } else if !allowed.contains(who.as_str()) {
                    report.failures.push(format!(
                        "{during}: answered by {who:?}, the config allows {allowed:?}"
                    ));
                } else if first == last {
                    report.generations.insert(first);
                }
                if reply.header("connection") == Some("close") || conn.is_closed() {
                    report.failures.push(format!(
                        "{during}: gatehouse closed the keep-alive connection"
                    ));
                    match Conn::open(addr).await {
                        Ok(fresh) => conn = fresh,
                        Err(e) => {
                            report.failures.push(format!("task {task}: reconnect: {e}"));
                            return report;
                        }
                    }
                }
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------
// 1. Reloads under load.

/// Upstream names and addresses, by name.
type Upstreams = BTreeMap<&'static str, SocketAddr>;

async fn named_upstreams(names: &[&'static str]) -> (Vec<TestUpstream>, Upstreams) {
    let mut servers = Vec::new();
    let mut addrs = Upstreams::new();
    for name in names {
        let server = TestUpstream::named(name).await;
        addrs.insert(*name, server.addr);
        servers.push(server);
    }
    (servers, addrs)
}

/// The servers of upstream `alpha` under generation `g`: alternating between {a, b} and
/// {c, d}, with alternating weights.
fn alpha_servers(g: usize) -> &'static [(&'static str, u32)] {
    match g % 4 {
        0 => &[("a", 1), ("b", 1)],
        1 => &[("c", 1)],
        2 => &[("a", 4), ("b", 1)],
        _ => &[("c", 1), ("d", 3)],
    }
}

/// Generation `g` of a reload test's config: `plain_config` with `body`, marked by a first
/// comment line so that every generation's file differs.
fn generation_config(g: usize, body: &str) -> String {
    format!("# generation {g}{}", plain_config(body))
}

/// Generation `g` of the config of the reload-under-load test: `/a` goes to `alpha`, `/b` to
/// `beta` (server e) in even generations and to `alpha` in odd ones.
fn churn_config(g: usize, up: &Upstreams) -> String {
    let alpha: Vec<String> = alpha_servers(g)
        .iter()
        .map(|(name, weight)| format!("{{ addr = \"{}\", weight = {weight} }}", up[name]))
        .collect();
    let b_upstream = if g.is_multiple_of(2) { "beta" } else { "alpha" };
    generation_config(
        g,
        &format!(
            r#"[[route]]
path_prefix = "/a"
upstream = "alpha"

[[route]]
path_prefix = "/b"
upstream = "{b_upstream}"

[upstream.alpha]
balance = "weighted_round_robin"
servers = [{}]

[upstream.beta]
servers = ["{}"]
"#,
            alpha.join(", "),
            up["e"]
        ),
    )
}

fn churn_expect(g: usize, path: &str) -> BTreeSet<&'static str> {
    let alpha = || alpha_servers(g).iter().map(|(name, _)| *name).collect();
    match path {
        "/a" => alpha(),
        _ if g.is_multiple_of(2) => BTreeSet::from(["e"]),
        _ => alpha(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_nothing_and_apply_from_the_next_request() {
    let (_servers, up) = named_upstreams(&["a", "b", "c", "d", "e"]).await;
    let dir = scratch_dir("churn");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, churn_config(0, &up)).unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let generation = Arc::new(Generation::default());
    let load = StrictLoad::start(
        proxy,
        8,
        &["/a", "/b"],
        Arc::clone(&generation),
        Arc::new(churn_expect),
    );
    const RELOADS: usize = 20;
    for g in 1..=RELOADS {
        // Each generation carries load for a while (pacing, not waiting for an outcome).
        tokio::time::sleep(Duration::from_millis(230)).await;
        std::fs::write(&path, churn_config(g, &up)).unwrap();
        generation.begin(g);
        let report = reload(&running, g % 2 == 1).await;
        assert_applied(&report);
        assert_eq!(report["hash"], config_hash(&churn_config(g, &up)));
        generation.applied(g);
    }
    tokio::time::sleep(Duration::from_millis(230)).await;
    let reports = load.finish().await;
    let requests = assert_no_failures(&reports);
    for (task, report) in reports.iter().enumerate() {
        let missing: Vec<usize> = (0..=RELOADS)
            .filter(|g| !report.generations.contains(g))
            .collect();
        assert!(
            missing.is_empty(),
            "connection {task} sent no request wholly under config generations {missing:?} \
             ({} requests)",
            report.requests
        );
    }
    assert!(requests > 8 * 2 * (RELOADS + 1), "only {requests} requests");

    let status = status_of(admin).await;
    let config = &status["config"];
    assert_eq!(config["reloads_ok"], RELOADS as u64, "{config}");
    assert_eq!(config["reloads_failed"], 0, "{config}");
    assert_eq!(config["last_error"], Value::Null, "{config}");
    let final_hash = config_hash(&churn_config(RELOADS, &up));
    assert_eq!(config["hash"], final_hash.as_str(), "{config}");
    let metrics = metrics_of(admin).await;
    assert_eq!(reloads_metric(&metrics, "ok"), RELOADS as f64);
    assert_eq!(reloads_metric(&metrics, "error"), 0.0);
    assert_eq!(
        metric_sample(&metrics, "gatehouse_config_info", &[("hash", &final_hash)]),
        Some(1.0),
        "gatehouse_config_info names the config in force"
    );
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("gatehouse_config_info{"))
            .count(),
        1,
        "one gatehouse_config_info series"
    );
    let last_success = metric_sample(
        &metrics,
        "gatehouse_config_last_reload_success_timestamp_seconds",
        &[],
    )
    .expect("last success timestamp");
    assert!(last_success >= started_at as f64, "{last_success}");
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Bad edits under load.

/// Generation `g` of the bad-edit test's config: `/` and `/p` go to server a in even
/// generations and to b in odd ones. `extra` is appended.
fn flip_config(g: usize, up: &Upstreams, extra: &str) -> String {
    let target = if g.is_multiple_of(2) { "ua" } else { "ub" };
    generation_config(
        g,
        &format!(
            r#"[[route]]
path_prefix = "/"
upstream = "{target}"

[upstream.ua]
servers = ["{}"]

[upstream.ub]
servers = ["{}"]
{extra}"#,
            up["a"], up["b"]
        ),
    )
}

fn flip_expect(g: usize, _path: &str) -> BTreeSet<&'static str> {
    BTreeSet::from([if g.is_multiple_of(2) { "a" } else { "b" }])
}

/// A kind of bad edit: how to make the file bad, and what its error must say.
struct BadEdit {
    kind: &'static str,
    /// Substrings the error must contain.
    expect: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_edits_under_load_change_nothing_are_reported_and_the_next_good_edit_applies() {
    let (_servers, up) = named_upstreams(&["a", "b"]).await;
    let dir = scratch_dir("bad-edits");
    let path = dir.join("gatehouse.toml");
    let shown = path.display().to_string();
    std::fs::write(&path, flip_config(0, &up, "")).unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");

    let generation = Arc::new(Generation::default());
    let load = StrictLoad::start(
        proxy,
        8,
        &["/", "/p"],
        Arc::clone(&generation),
        Arc::new(flip_expect),
    );

    // A port someone else holds (no SO_REUSEPORT, so gatehouse cannot share it), and a free one
    // that a failed reload must not leave bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let spare_port = free_port();

    let kinds = [
        "syntax",
        "validation",
        "port taken",
        "directory",
        "dangling symlink",
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let g = generation.current();
        // Each bad edit also flips the route, so a partly applied one shows in the load.
        let intended = flip_config(g + 1, &up, "");
        let edit = match kind {
            "syntax" => {
                let text = format!("{intended}\n[upstream.half\nservers = []\n");
                std::fs::write(&path, &text).unwrap();
                BadEdit {
                    kind,
                    expect: vec![format!("{shown}:{}:", line_of(&text, "[upstream.half"))],
                }
            }
            "validation" => {
                let text = intended
                    .replace("upstream = \"ua\"", "upstream = \"nope\"")
                    .replace("upstream = \"ub\"", "upstream = \"nope\"");
                std::fs::write(&path, &text).unwrap();
                BadEdit {
                    kind,
                    expect: vec![
                        format!("{shown}:{}:", line_of(&text, "upstream = \"nope\"")),
                        "nope".into(),
                    ],
                }
            }
            "port taken" => {
                let text = flip_config(
                    g + 1,
                    &up,
                    &format!(
                        "\n[[listener]]\nname = \"spare\"\nbind = \"127.0.0.1:{spare_port}\"\n\
                         \n[[listener]]\nname = \"taken\"\nbind = \"127.0.0.1:{taken_port}\"\n"
                    ),
                );
                std::fs::write(&path, &text).unwrap();
                BadEdit {
                    kind,
                    expect: vec![
                        shown.clone(),
                        "\"taken\"".into(),
                        format!("127.0.0.1:{taken_port}"),
                    ],
                }
            }
            "directory" => {
                std::fs::remove_file(&path).unwrap();
                std::fs::create_dir(&path).unwrap();
                BadEdit {
                    kind,
                    expect: vec![shown.clone(), "cannot read config file".into()],
                }
            }
            _ => {
                std::fs::remove_file(&path).unwrap();
                std::os::unix::fs::symlink(dir.join("gone.toml"), &path).unwrap();
                BadEdit {
                    kind,
                    expect: vec![shown.clone(), "cannot read config file".into()],
                }
            }
        };

        let report = reload(&running, i % 2 == 0).await;
        assert_eq!(report["ok"], false, "{}: {report}", edit.kind);
        assert_eq!(report["changed"], false, "{}: {report}", edit.kind);
        let errors = report["errors"].as_array().expect("errors").clone();
        assert!(!errors.is_empty(), "{}: {report}", edit.kind);
        let joined: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
        let joined = joined.join("\n");
        for want in &edit.expect {
            assert!(
                joined.contains(want.as_str()),
                "{}: the reload errors lack {want:?}:\n{joined}",
                edit.kind
            );
        }

        let status = status_of(admin).await;
        let config = &status["config"];
        let last_error = config["last_error"].as_str().unwrap_or_default();
        for want in &edit.expect {
            assert!(
                last_error.contains(want.as_str()),
                "{}: /status config.last_error lacks {want:?}: {config}",
                edit.kind
            );
        }
        assert!(config["last_error_at"].as_u64().is_some(), "{config}");
        assert_eq!(config["reloads_failed"], i as u64 + 1, "{config}");
        assert_eq!(config["reloads_ok"], i as u64, "{config}");
        let in_force = config_hash(&flip_config(g, &up, ""));
        assert_eq!(config["hash"], in_force.as_str(), "{}: {config}", edit.kind);
        let metrics = metrics_of(admin).await;
        assert_eq!(
            reloads_metric(&metrics, "error"),
            i as f64 + 1.0,
            "{}",
            edit.kind
        );
        assert_eq!(reloads_metric(&metrics, "ok"), i as f64);
        assert_eq!(
            metric_sample(&metrics, "gatehouse_config_info", &[("hash", &in_force)]),
            Some(1.0)
        );
        // The old behaviour, on a new connection too.
        assert_eq!(
            common::get(proxy, "/").await.text(),
            flip_expect(g, "/").first().copied().unwrap()
        );
        if edit.kind == "port taken" {
            wait_refused(SocketAddr::from(([127, 0, 0, 1], spare_port))).await;
            let listeners = running.reloader.listener_addrs().await;
            assert_eq!(listeners.len(), 1, "{listeners:?}");
        }

        // The next good edit applies.
        if path.is_dir() {
            std::fs::remove_dir(&path).unwrap();
        } else if path.is_symlink() || !path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        std::fs::write(&path, &intended).unwrap();
        generation.begin(g + 1);
        let report = reload(&running, i % 2 == 1).await;
        assert_applied(&report);
        generation.applied(g + 1);
        assert_eq!(
            common::get(proxy, "/").await.text(),
            flip_expect(g + 1, "/").first().copied().unwrap(),
            "after the good edit following the {} error",
            edit.kind
        );
        // Let the load run on the new config for a while (pacing).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(taken);

    let reports = load.finish().await;
    assert_no_failures(&reports);
    let last = kinds.len();
    for (task, report) in reports.iter().enumerate() {
        let missing: Vec<usize> = (0..=last)
            .filter(|g| !report.generations.contains(g))
            .collect();
        assert!(
            missing.is_empty(),
            "connection {task} missed generations {missing:?}"
        );
    }
    let config = &status_of(admin).await["config"];
    assert_eq!(config["reloads_ok"], last as u64, "{config}");
    assert_eq!(config["reloads_failed"], last as u64, "{config}");
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. The file watch.

const DEBOUNCE: Duration = Duration::from_millis(50);

/// A config watched with a 50ms debounce, `/` routed to `server`.
fn watched_config(server: SocketAddr, tag: &str) -> String {
    format!(
        r#"# {tag}
[admin]
bind = ""

[log]
access = "off"

[reload]
watch = true
debounce = "50ms"

[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"

[upstream.app]
servers = ["{server}"]
"#
    )
}

/// Waits until `reloads_ok` reaches `want`, then checks that it stays there (and that nothing
/// failed) for several debounce periods after the watcher has settled.
async fn assert_exactly_reloads(running: &Running, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = running.reloader.status();
        assert!(
            status.reloads_ok <= want,
            "more reloads than edits: {status:?}"
        );
        if status.reloads_ok == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload {WAIT:?} after the edit: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let quiet_until = Instant::now() + DEBOUNCE * 6;
    while Instant::now() < quiet_until {
        let status = running.reloader.status();
        assert_eq!(
            status.reloads_ok, want,
            "a second reload for one edit: {status:?}"
        );
        assert_eq!(status.reloads_failed, 0, "{status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// gatehouse started from the watched file at `path` (first generation: server a), and a
/// keep-alive client connection that has been answered by a.
async fn start_watched(path: &Path) -> (Running, Client) {
    let running = Running::start_file(path).await.expect("gatehouse starts");
    let mut client = Client::connect(running.listener_addrs[0]).await;
    assert_eq!(client.get("/").await.text(), "a");
    (running, client)
}

/// The one edit to `watched_config(up["b"], "second")` made exactly one reload, to that
/// config, and the same keep-alive connection now reaches b.
async fn assert_reloaded_once_to_b(running: &Running, client: &mut Client, up: &Upstreams) {
    assert_exactly_reloads(running, 1).await;
    assert_eq!(
        running.reloader.status().hash,
        config_hash(&watched_config(up["b"], "second"))
    );
    assert_eq!(
        client.get("/").await.text(),
        "b",
        "the same keep-alive connection"
    );
}

#[tokio::test]
async fn an_editor_style_rename_reloads_exactly_once() {
    let (_servers, up) = named_upstreams(&["a", "b"]).await;
    let dir = scratch_dir("watch-editor");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, watched_config(up["a"], "first")).unwrap();
    let (running, mut client) = start_watched(&path).await;

    // Write a temp file beside it, flush it, rename it over the config.
    let temp = dir.join(".gatehouse.toml.swp");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp).unwrap();
        file.write_all(watched_config(up["b"], "second").as_bytes())
            .unwrap();
        file.sync_all().unwrap();
    }
    std::fs::rename(&temp, &path).unwrap();

    assert_reloaded_once_to_b(&running, &mut client, &up).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_reloads_exactly_once() {
    let (_servers, up) = named_upstreams(&["a", "b"]).await;
    let dir = scratch_dir("watch-configmap");
    // What the kubelet makes of a ConfigMap volume.
    let first = "..2026_11_27_10_00_00.000000001";
    std::fs::create_dir(dir.join(first)).unwrap();
    std::fs::write(
        dir.join(first).join("gatehouse.toml"),
        watched_config(up["a"], "first"),
    )
    .unwrap();
    std::os::unix::fs::symlink(first, dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gatehouse.toml", dir.join("gatehouse.toml")).unwrap();
    let path = dir.join("gatehouse.toml");
    let (running, mut client) = start_watched(&path).await;

    // The kubelet's update: a new timestamped dir, `..data_tmp` pointing at it renamed over
    // `..data`, then the old dir removed.
    let second = "..2026_11_27_10_05_00.000000002";
    std::fs::create_dir(dir.join(second)).unwrap();
    std::fs::write(
        dir.join(second).join("gatehouse.toml"),
        watched_config(up["b"], "second"),
    )
    .unwrap();
    std::os::unix::fs::symlink(second, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(first)).unwrap();

    assert_reloaded_once_to_b(&running, &mut client, &up).await;
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. State kept across a reload.

/// A config with an admin listener, no watch, and `body` (routes and upstreams).
fn plain_config(body: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access = "off"

[reload]
watch = false

[[listener]]
name = "main"
bind = "127.0.0.1:0"

{body}"#
    )
}

#[tokio::test]
async fn a_server_down_by_health_checks_stays_down_across_a_reload_that_keeps_it() {
    let good = TestUpstream::named("good").await;
    let sick = TestUpstream::with_responder(
        "sick",
        Arc::new(|request: &common::Recorded| {
            let status = if request.uri.path() == "/healthz" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(b"sick")))
                .unwrap()
        }),
    )
    .await;
    let config = |sick_weight: u32, extra_route: &str| {
        plain_config(&format!(
            r#"{extra_route}
[[route]]
upstream = "app"

[upstream.app]
balance = "weighted_round_robin"
servers = ["{}", {{ addr = "{}", weight = {sick_weight} }}]

[upstream.app.health]
path = "/healthz"
interval = "300ms"
timeout = "1s"
unhealthy_threshold = 1
healthy_threshold = 2
"#,
            good.addr, sick.addr
        ))
    };
    let dir = scratch_dir("health-kept");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, config(1, "")).unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");
    let sick_addr = sick.addr.to_string();
    let up_gauge = |metrics: &str| {
        metric_sample(
            metrics,
            "gatehouse_upstream_server_up",
            &[("upstream", "app"), ("server", &sick_addr)],
        )
    };
    let deadline = Instant::now() + WAIT;
    while up_gauge(&metrics_of(admin).await) != Some(0.0) {
        assert!(Instant::now() < deadline, "the sick server never went down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served_by_sick = || {
        sick.received()
            .iter()
            .filter(|r| r.uri.path() != "/healthz")
            .count()
    };
    let before = served_by_sick();

    // A reload that keeps the server (a new route, a new weight for it).
    std::fs::write(
        &path,
        config(
            3,
            "[[route]]\npath_prefix = \"/extra\"\nupstream = \"app\"\n",
        ),
    )
    .unwrap();
    assert_applied(&reload(&running, true).await);

    assert_eq!(
        up_gauge(&metrics_of(admin).await),
        Some(0.0),
        "gauge after the reload"
    );
    let status = status_of(admin).await;
    let servers = status["upstreams"]["app"]["servers"]
        .as_array()
        .expect("servers");
    let entry = servers
        .iter()
        .find(|s| s["addr"] == sick_addr.as_str())
        .expect("the sick server in /status");
    assert_eq!(entry["health"]["up"], false, "{entry}");
    assert_eq!(entry["eligible"], false, "{entry}");
    assert_eq!(entry["weight"], 3, "{entry}");
    let mut client = Client::connect(proxy).await;
    for path in ["/", "/extra"].iter().cycle().take(20) {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "good", "GET {path} right after the reload");
    }
    assert_eq!(served_by_sick(), before, "traffic reached the down server");
    running.shutdown().await;
}

#[tokio::test]
async fn an_unchanged_cache_keeps_its_entries_across_a_reload() {
    let origin = TestUpstream::with_responder(
        "origin",
        Arc::new(|request: &common::Recorded| {
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from(format!(
                    "body of {}",
                    request.uri.path()
                ))))
                .unwrap()
        }),
    )
    .await;
    let config = |extra_route: &str| {
        plain_config(&format!(
            r#"{extra_route}
[[route]]
upstream = "app"
cache = "c"

[upstream.app]
servers = ["{}"]

[cache.c]
max_size = "1MiB"
max_object_size = "64KiB"
"#,
            origin.addr
        ))
    };
    let dir = scratch_dir("cache-kept");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, config("")).unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let mut client = Client::connect(running.listener_addrs[0]).await;
    let cache_status = |reply: &Reply| reply.header("cache-status").unwrap_or("").to_owned();

    let miss = client.get("/item").await;
    assert_eq!(miss.text(), "body of /item");
    let hit = client.get("/item").await;
    assert!(
        cache_status(&hit).starts_with("gatehouse; hit"),
        "second GET: {}",
        cache_status(&hit)
    );

    std::fs::write(
        &path,
        config("[[route]]\npath_prefix = \"/other\"\nupstream = \"app\"\n"),
    )
    .unwrap();
    assert_applied(&reload(&running, false).await);

    let after = client.get("/item").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.text(), "body of /item");
    assert!(
        cache_status(&after).starts_with("gatehouse; hit"),
        "GET right after the reload: Cache-Status {:?}",
        cache_status(&after)
    );
    let fetched = origin
        .received()
        .iter()
        .filter(|r| r.uri.path() == "/item")
        .count();
    assert_eq!(fetched, 1, "the origin was asked again after the reload");
    running.shutdown().await;
}

#[tokio::test]
async fn a_removed_upstreams_health_checks_stop_and_its_series_go() {
    let main = TestUpstream::named("main").await;
    let old = KillableUpstream::named("old").await;
    let interval = Duration::from_millis(100);
    let with_old = format!(
        r#"
[[route]]
path_prefix = "/old"
upstream = "old"

[upstream.old]
servers = ["{}"]

[upstream.old.health]
path = "/healthz"
interval = "100ms"
timeout = "1s"
"#,
        old.addr
    );
    let config = |extra: &str| {
        plain_config(&format!(
            "[[route]]\nupstream = \"main\"\n\n[upstream.main]\nservers = [\"{}\"]\n{extra}",
            main.addr
        ))
    };
    let dir = scratch_dir("health-stops");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, config(&with_old)).unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let probes = || -> Vec<Instant> {
        old.arrivals()
            .into_iter()
            .filter(|a| a.path == "/healthz")
            .map(|a| a.at)
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while probes().len() < 2 {
        assert!(Instant::now() < deadline, "the old server is never probed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A real request too, so that the server has a pooled connection.
    assert_eq!(common::get(proxy, "/old/x").await.text(), "old");
    let admin = running.admin_addr.expect("admin listener");
    let old_label = format!("server=\"{}\"", old.addr);
    let old_series = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&old_label))
            .map(str::to_owned)
            .collect()
    };
    let before = old_series(&metrics_of(admin).await);
    for family in [
        "gatehouse_upstream_requests_total",
        "gatehouse_upstream_server_up",
        "gatehouse_health_checks_total",
        "gatehouse_circuit_breaker_state",
    ] {
        assert!(
            before.iter().any(|l| l.starts_with(family)),
            "no {family} series for the old server:\n{before:?}"
        );
    }

    std::fs::write(&path, config("")).unwrap();
    assert_applied(&reload(&running, false).await);
    let reloaded = Instant::now();
    assert_eq!(common::get(proxy, "/old/x").await.text(), "main");
    // Its metric series go with it (kept, they would pile up with every address that ever
    // existed, and its last `up` value would keep alerts firing).
    let after = old_series(&metrics_of(admin).await);
    assert!(
        after.is_empty(),
        "the removed server still has series:\n{}",
        after.join("\n")
    );

    // Watch a few intervals; a probe already under way at the reload may still land in the
    // first one.
    tokio::time::sleep(interval * 6).await;
    let late: Vec<Duration> = probes()
        .into_iter()
        .filter(|at| *at > reloaded + interval)
        .map(|at| at - reloaded)
        .collect();
    assert!(
        late.is_empty(),
        "the removed upstream's server was still probed {} times, at {late:?} after the reload",
        late.len()
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Listeners added and removed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_and_one_removed_under_load() {
    let (_servers, up) = named_upstreams(&["m", "n"]).await;
    let held = HeldUpstream::named("held").await;
    let before = plain_config(&format!(
        r#"
[[listener]]
name = "old"
bind = "127.0.0.1:0"

[[route]]
listener = "old"
path_prefix = "/held"
upstream = "uh"

[[route]]
upstream = "um"

[upstream.um]
servers = ["{}"]

[upstream.uh]
servers = ["{}"]
response_timeout = "30s"
"#,
        up["m"], held.addr
    ));
    let after = plain_config(&format!(
        r#"
[[listener]]
name = "new"
bind = "127.0.0.1:0"

[[route]]
listener = "new"
upstream = "un"

[[route]]
upstream = "um"

[upstream.um]
servers = ["{}"]

[upstream.un]
servers = ["{}"]
"#,
        up["m"], up["n"]
    ));
    let dir = scratch_dir("listeners");
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, &before).unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let listeners: BTreeMap<String, SocketAddr> = running
        .reloader
        .listener_addrs()
        .await
        .into_iter()
        .collect();
    let (main, old) = (listeners["main"], listeners["old"]);

    let load = StrictLoad::start(
        main,
        8,
        &["/", "/held"],
        Arc::new(Generation::default()),
        Arc::new(|_, _| BTreeSet::from(["m"])),
    );
    // A request in flight on the listener about to go.
    let mut on_old = Conn::open(old).await.expect("connect to the old listener");
    let in_flight = tokio::spawn(async move { on_old.get("/held/slow").await });
    held.wait_arrival().await;

    std::fs::write(&path, &after).unwrap();
    assert_applied(&reload(&running, true).await);

    let now: BTreeMap<String, SocketAddr> = running
        .reloader
        .listener_addrs()
        .await
        .into_iter()
        .collect();
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        ["main", "new"],
        "listeners after the reload: {now:?}"
    );
    assert_eq!(now["main"], main, "the kept listener kept its socket");
    let fresh = now["new"];
    assert_eq!(common::get(fresh, "/anything").await.text(), "n");
    assert_eq!(common::get(main, "/anything").await.text(), "m");
    wait_refused(old).await;

    assert!(
        !in_flight.is_finished(),
        "the in-flight request waits for its upstream"
    );
    held.release_one();
    let reply = timeout(WAIT, in_flight)
        .await
        .expect("the in-flight request finishes")
        .expect("its task")
        .expect("the in-flight request on the removed listener is answered");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "held");

    // Some more load on the kept listener after the change (pacing).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reports = load.finish().await;
    assert_no_failures(&reports);
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6 and 7. The real binary: upgrade by a second process, SIGHUP.

/// A config for the real binary: JSON logs without access lines, `/` to `upstream`, replies
/// tagged with `x-gatehouse` = `tag`.
fn process_config(listen: &str, admin: &str, upstream: SocketAddr, tag: &str) -> String {
    format!(
        r#"
[log]
level = "info,gatehouse::access=off"
access = "json"

[admin]
bind = "{admin}"

[reload]
watch = false

[[listener]]
name = "public"
bind = "{listen}"

[[route]]
upstream = "app"

[route.response_headers]
set = {{ x-gatehouse = "{tag}" }}

[upstream.app]
servers = ["{upstream}"]

[limits]
shutdown_grace = "5s"
"#
    )
}

/// Polls the admin `/readyz` of `process` until it answers 200.
async fn wait_ready(process: &mut Process, admin: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        if !process.is_running() {
            panic!(
                "gatehouse exited before it was ready:\n{}",
                process.all_lines().await
            );
        }
        if let Ok(Ok(mut conn)) = timeout(Duration::from_secs(1), Conn::open(admin)).await
            && let Ok(reply) = conn.get("/readyz").await
            && reply.status == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{admin}/readyz not ready in time:\n{}",
            process.all_lines_so_far().await.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an upgrade load task saw: each answered request's tag and when it was answered.
#[derive(Default)]
struct UpgradeReport {
    answered: Vec<(Instant, String)>,
    failures: Vec<String>,
    /// Requests moved to a new connection because the server had closed the idle one before
    /// they could be written.
    not_sent: usize,
    /// GETs written on a reused keep-alive connection the server closed before answering,
    /// sent again on a new one (the idle-close race every HTTP/1.1 client handles this way).
    resent: usize,
}

/// Keep-alive load as a well-behaved HTTP/1.1 client makes it: a connection the server closes
/// (`Connection: close`, or closed while idle) is replaced; a GET that got no response on a
/// *reused* connection is sent once more on a new one (RFC 9112 §9.3.1, as Go's and
/// hyper-util's clients do). Everything else — a refused or reset new connection, a failure
/// on a new connection, a bad status — is a failure.
async fn upgrade_task(addr: SocketAddr, stop: Arc<AtomicBool>) -> UpgradeReport {
    let mut report = UpgradeReport::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn: Option<Conn> = None;
    let mut pace = tokio::time::interval(Duration::from_millis(4));
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        pace.tick().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if conn.as_ref().is_none_or(Conn::is_closed) {
                conn = match Conn::open(addr).await {
                    Ok(fresh) => Some(fresh),
                    Err(e) => {
                        report.failures.push(e);
                        break;
                    }
                };
            }
            let current = conn.as_mut().unwrap();
            let reused = current.answered > 0;
            match current.get("/").await {
                Ok(reply) => {
                    if reply.status != StatusCode::OK || reply.text() != "app" {
                        report.failures.push(format!(
                            "status {} body {:?}",
                            reply.status,
                            reply.text()
                        ));
                    } else {
                        let tag = reply.header("x-gatehouse").unwrap_or("?").to_owned();
                        report.answered.push((Instant::now(), tag));
                    }
                    if reply.header("connection") == Some("close") {
                        conn = None;
                    }
                    break;
                }
                Err(Failure::NotSent(_)) if reused && attempt == 1 => {
                    report.not_sent += 1;
                    conn = None;
                }
                Err(Failure::NoResponse(_)) if reused && attempt == 1 => {
                    report.resent += 1;
                    conn = None;
                }
                Err(failure) => {
                    report.failures.push(format!(
                        "attempt {attempt} on a {} connection: {failure}",
                        if reused { "reused" } else { "new" }
                    ));
                    conn = None;
                    break;
                }
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_takes_over_the_ports_without_a_failed_request() {
    let app = TestUpstream::named("app").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (admin_old, admin_new) = (free_port(), free_port());
    let proxy: SocketAddr = listen.parse().unwrap();
    let admin_old_addr = SocketAddr::from(([127, 0, 0, 1], admin_old));
    let admin_new_addr = SocketAddr::from(([127, 0, 0, 1], admin_new));

    let mut old = Process::spawn(
        &process_config(&listen, &admin_old_addr.to_string(), app.addr, "old"),
        "reload-upgrade-old",
    );
    wait_ready(&mut old, admin_old_addr).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(upgrade_task(proxy, Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new binary on the same listener port (SO_REUSEPORT), its own admin port.
    let mut new = Process::spawn(
        &process_config(&listen, &admin_new_addr.to_string(), app.addr, "new"),
        "reload-upgrade-new",
    );
    wait_ready(&mut new, admin_new_addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    old.sigterm();
    let signalled = Instant::now();
    let exit = old.exit_by(signalled + Duration::from_secs(8)).await;
    let exited = Instant::now();
    assert!(
        exit.success(),
        "the old process exit status {exit:?}:\n{}",
        old.all_lines().await
    );
    // The load goes on against the new process alone (pacing).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(
            timeout(WAIT, task)
                .await
                .expect("a load task stops")
                .expect("a load task does not panic"),
        );
    }
    assert!(new.is_running(), "the new process stays up");

    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    let answered: usize = reports.iter().map(|r| r.answered.len()).sum();
    let resent: usize = reports.iter().map(|r| r.resent).sum();
    assert!(
        failures.is_empty(),
        "{} requests failed ({answered} answered, {resent} resent after an idle close); \
         first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (task, report) in reports.iter().enumerate() {
        let before: Vec<&str> = report
            .answered
            .iter()
            .filter(|(at, _)| *at < signalled)
            .map(|(_, tag)| tag.as_str())
            .collect();
        assert!(
            before.contains(&"old"),
            "task {task} never reached the old process"
        );
        let after: Vec<&str> = report
            .answered
            .iter()
            .filter(|(at, _)| *at > exited)
            .map(|(_, tag)| tag.as_str())
            .collect();
        assert!(
            after.len() >= 10,
            "task {task}: only {} requests answered after the old process exited",
            after.len()
        );
        assert!(
            after.iter().all(|tag| *tag == "new"),
            "task {task} answered by {after:?} after the old process exited"
        );
    }
    let log = old.all_lines().await;
    assert!(
        log.contains("shutdown complete"),
        "old process stderr:\n{log}"
    );
    assert_eq!(
        common::get(admin_new_addr, "/readyz").await.status,
        StatusCode::OK
    );
    new.sigterm();
    let exit = new.exit_by(Instant::now() + Duration::from_secs(8)).await;
    assert!(exit.success(), "{exit:?}");
}

/// One connection per request, as fast as it goes, until `stop`: every failure, and the number
/// of connections opened.
async fn fresh_connection_task(addr: SocketAddr, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut opened, mut failures) = (0, Vec::new());
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        opened += 1;
        match Conn::open(addr).await {
            Ok(mut conn) => match conn.get("/").await {
                Ok(reply) if reply.status == StatusCode::OK => {}
                Ok(reply) => failures.push(format!("status {}", reply.status)),
                Err(failure) => failures.push(format!("on a new connection: {failure}")),
            },
            Err(e) => failures.push(e),
        }
        tokio::task::yield_now().await;
    }
    (opened, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_opened_during_port_handoffs_are_served() {
    // Connections still in the old process's accept queue when it closes its socket are
    // moved to the new process only with this (Linux >= 5.14); the README's upgrade procedure
    // asks for it, and .ci/run sets it. Without it the guarantee is weaker, and so is what
    // this test asserts (see the end).
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .is_ok_and(|value| value.trim() == "1");
    eprintln!(
        "net.ipv4.tcp_migrate_req is {}: checking the {} guarantee",
        u8::from(migrate),
        if migrate {
            "lossless handoff"
        } else {
            "bounded-resets-per-handoff"
        }
    );
    const TASKS: usize = 4;
    const HANDOFFS: usize = 6;
    let app = TestUpstream::named("app").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let proxy: SocketAddr = listen.parse().unwrap();
    let start = |round: usize| {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let process = Process::spawn(
            &process_config(&listen, &admin.to_string(), app.addr, &format!("p{round}")),
            &format!("reload-handoff-{round}"),
        );
        (process, admin)
    };
    let (mut current, admin) = start(0);
    wait_ready(&mut current, admin).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| tokio::spawn(fresh_connection_task(proxy, Arc::clone(&stop))))
        .collect();
    // Several handoffs, each a chance for a connection to land on a closing listener.
    for round in 1..=HANDOFFS {
        let (mut next, admin) = start(round);
        wait_ready(&mut next, admin).await;
        current.sigterm();
        let exit = current
            .exit_by(Instant::now() + Duration::from_secs(8))
            .await;
        assert!(exit.success(), "process {} exit status {exit:?}", round - 1);
        current = next;
    }
    // Connections keep coming to the last process alone for a moment (pacing).
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let mut opened = 0;
    let mut failures = Vec::new();
    for task in tasks {
        let (n, failed) = timeout(WAIT, task)
            .await
            .expect("a load task stops")
            .expect("a load task does not panic");
        opened += n;
        failures.extend(failed);
    }
    // A SYN that reaches the old socket in the instant the kernel takes it out of the
    // SO_REUSEPORT group is answered with a reset, migration or not (seen: 1 in 1,642 once, in
    // a clean-clone CI run; 0 in most runs). Only passing the listening socket itself to the
    // new process (not done) would close that window, so such connect resets are tolerated
    // at up to 1 in 1,000; any other failure — a connection accepted and then dropped, a
    // request unanswered — is not.
    let (connect_resets, others): (Vec<_>, Vec<_>) = failures
        .iter()
        .partition(|f| f.starts_with("connect to") && f.contains("reset by peer"));
    let report = || {
        format!(
            "{} of {opened} new connections opened across {HANDOFFS} handoffs failed:\n{}",
            failures.len(),
            failures.join("\n")
        )
    };
    eprintln!("{}", report());
    if migrate {
        assert!(
            others.is_empty() && connect_resets.len() * 1000 <= opened,
            "{}",
            report()
        );
    } else {
        // Without migration, connections the kernel had queued on the old socket when it
        // closed are reset before any answer. Each load task has one connection at a time,
        // so at most TASKS are lost per handoff; an answer that is wrong or cut is never
        // tolerated.
        let (unanswered, wrong): (Vec<&String>, Vec<&String>) = others.iter().partition(|f| {
            f.starts_with("on a new connection: not sent")
                || f.starts_with("on a new connection: no response")
        });
        assert!(
            wrong.is_empty() && connect_resets.len() + unanswered.len() <= TASKS * HANDOFFS,
            "{}",
            report()
        );
    }
    current.sigterm();
    let exit = current
        .exit_by(Instant::now() + Duration::from_secs(8))
        .await;
    assert!(exit.success(), "{exit:?}");
}

fn describe_exit(exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match exit.signal() {
        Some(1) => "killed by signal 1, SIGHUP".into(),
        Some(signal) => format!("killed by signal {signal}"),
        None => format!("{exit}"),
    }
}

/// A shell waiting for a PID on its stdin to send it SIGHUP with its builtin `kill`: the signal
/// leaves within microseconds of `send`, with no fork and exec of a `kill` binary in between.
struct Hangup(std::process::Child);

impl Hangup {
    fn armed() -> Self {
        let child = std::process::Command::new("sh")
            .args(["-c", "read pid && kill -HUP \"$pid\""])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        Self(child)
    }

    async fn send(mut self, pid: u32) {
        use std::io::Write;
        let mut stdin = self.0.stdin.take().expect("sh stdin");
        writeln!(stdin, "{pid}").expect("write the pid");
        drop(stdin);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                assert!(status.success(), "kill -HUP {pid} failed: {status:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sh did not send the SIGHUP in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Hangup {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A SIGHUP that arrives as soon as the process says it is listening (a config-management
/// reload racing a start) must not kill it: several processes, each signalled at once.
#[tokio::test]
async fn sighup_right_after_start_does_not_kill_the_process() {
    let app = TestUpstream::named("app").await;
    let mut processes = Vec::new();
    for round in 0..6 {
        let mut process = Process::spawn(
            &process_config("127.0.0.1:0", "127.0.0.1:0", app.addr, "only"),
            &format!("reload-early-hup-{round}"),
        );
        let hangup = Hangup::armed();
        process.addr_logged("listening").await;
        hangup.send(process.pid()).await;
        processes.push(process);
    }
    for (round, process) in processes.iter_mut().enumerate() {
        // A process killed by the signal is gone by the time the next line is (not) written.
        let deadline = Instant::now() + WAIT;
        let admin = loop {
            let lines = process.all_lines_so_far().await;
            if let Some(addr) = lines.iter().find_map(|line| {
                let json: Value = serde_json::from_str(line).ok()?;
                (json["message"] == "admin listening")
                    .then(|| json["addr"].as_str()?.parse().ok())?
            }) {
                break addr;
            }
            if !process.is_running() {
                let exit = process.exit_by(Instant::now()).await;
                panic!(
                    "process {round} died ({}) of a SIGHUP sent right after it logged \
                     \"listening\"; stderr:\n{}",
                    describe_exit(exit),
                    lines.join("\n")
                );
            }
            assert!(Instant::now() < deadline, "no admin address logged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if !process.is_running() {
            let exit = process.exit_by(Instant::now()).await;
            panic!(
                "process {round} died ({}) of a SIGHUP sent right after it logged \"listening\"",
                describe_exit(exit)
            );
        }
        wait_ready(process, admin).await;
        assert!(process.is_running(), "process {round} is still up");
        process.sigterm();
        let exit = process
            .exit_by(Instant::now() + Duration::from_secs(8))
            .await;
        assert!(exit.success(), "process {round}: {exit:?}");
    }
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let (_servers, up) = named_upstreams(&["a", "b"]).await;
    let config = |server: &str| process_config("127.0.0.1:0", "127.0.0.1:0", up[server], "only");
    let mut process = Process::spawn(&config("a"), "reload-sighup");
    let proxy = process.addr_logged("listening").await;
    let admin = process.addr_logged("admin listening").await;
    wait_ready(&mut process, admin).await;
    let mut client = Client::connect(proxy).await;
    assert_eq!(client.get("/").await.text(), "a");

    std::fs::write(process.config_path(), config("b")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &process.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");

    let deadline = Instant::now() + WAIT;
    loop {
        let shown = &status_of(admin).await["config"];
        if shown["reloads_ok"] == 1 {
            assert_eq!(shown["hash"], config_hash(&config("b")).as_str(), "{shown}");
            break;
        }
        assert_eq!(shown["reloads_failed"], 0, "{shown}");
        assert!(
            Instant::now() < deadline,
            "no reload after SIGHUP: {shown}\n{}",
            process.all_lines_so_far().await.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client.get("/").await.text(),
        "b",
        "the same keep-alive connection"
    );
    assert!(process.is_running());
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = process.all_lines_so_far().await;
        if lines
            .iter()
            .any(|l| l.contains("config reloaded") && l.contains("SIGHUP"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no \"config reloaded\" log line with trigger SIGHUP:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.sigterm();
    let exit = process
        .exit_by(Instant::now() + Duration::from_secs(8))
        .await;
    assert!(exit.success(), "{exit:?}");
}
