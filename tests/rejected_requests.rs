//! Requests refused before they could be routed leave a trace like every other answer: one
//! access-log line and one count under `route="none"`, and every connection that ends is
//! counted by why it ended, including those closed without a request.

mod common;

use common::process::Process;
use common::{TestUpstream, WAIT, metric_sample, raw_exchange, unclaimed_port};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config(upstream: SocketAddr, listen: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"
[log]
level = "info"
access = "json"

[admin]
bind = "{admin}"

[limits]
max_header_bytes = "8KiB"
header_read_timeout = "400ms"
idle_timeout = "400ms"

[[listener]]
name = "public"
bind = "{listen}"

[[route]]
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = ["{upstream}"]
"#
    )
}

struct Gatehouse {
    process: Process,
    listen: SocketAddr,
    admin: SocketAddr,
}

async fn start(name: &str) -> (Gatehouse, TestUpstream) {
    let upstream = TestUpstream::named("app").await;
    let listen = SocketAddr::from(([127, 0, 0, 1], unclaimed_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], unclaimed_port()));
    let mut process = Process::spawn(&config(upstream.addr, listen, admin), name);
    process.addr_logged("listening").await;
    let deadline = Instant::now() + WAIT;
    while common::get(admin, "/readyz").await.status != 200 {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (
        Gatehouse {
            process,
            listen,
            admin,
        },
        upstream,
    )
}

impl Gatehouse {
    /// SIGTERM, and a clean exit in time.
    async fn stop(mut self) {
        self.process.sigterm();
        let exit = self.process.exit_by(Instant::now() + WAIT).await;
        assert!(exit.success(), "{exit:?}");
    }

    async fn metrics(&self) -> String {
        common::get(self.admin, "/metrics").await.text()
    }

    /// Polls /metrics until `name{labels}` reaches `want` (or fails at `WAIT`), returning the
    /// exposition it was seen in.
    async fn wait_for_sample(&self, name: &str, labels: &[(&str, &str)], want: f64) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.metrics().await;
            let value = metric_sample(&text, name, labels).unwrap_or(0.0);
            if value >= want {
                assert_eq!(value, want, "{name}{labels:?} overshot");
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {value}, want {want}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The access-log lines written so far (JSON, target gatehouse::access).
    async fn access_lines(&mut self) -> Vec<serde_json::Value> {
        self.process
            .all_lines_so_far()
            .await
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "gatehouse::access")
            .collect()
    }
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_head_refused_gets_one_access_line_and_one_count() {
    let (mut gatehouse, upstream) = start("rejected-heads").await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    let refused: Vec<(&str, Vec<u8>, u16)> = vec![
        ("head over max_header_bytes", huge.into_bytes(), 431),
        (
            "bad request line",
            b"GET /a b c HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bad header name",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "obfuscated Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "unsupported version",
            b"GET / HTTP/3.0\r\nHost: a\r\n\r\n".to_vec(),
            505,
        ),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (what, request, code) in &refused {
        let response = raw_exchange(gatehouse.listen, request).await;
        assert_eq!(status_of(&response), *code, "{what}: {response:?}");
    }
    // And one the proxy itself refuses after the head was read: it was always logged.
    let too_large = raw_exchange(
        gatehouse.listen,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&too_large), 413);
    assert!(
        upstream.received().is_empty(),
        "nothing reaches the upstream"
    );

    let unrouted_400 = [("route", "none"), ("upstream", "none"), ("code", "400")];
    let text = gatehouse
        .wait_for_sample("gatehouse_http_requests_total", &unrouted_400, 5.0)
        .await;
    let unrouted_431 = [("route", "none"), ("upstream", "none"), ("code", "431")];
    assert_eq!(
        metric_sample(&text, "gatehouse_http_requests_total", &unrouted_431),
        Some(1.0),
        "{text}"
    );
    gatehouse
        .wait_for_sample(
            "gatehouse_connections_closed_total",
            &[("listener", "public"), ("reason", "bad_request")],
            7.0,
        )
        .await;

    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let lines = gatehouse.access_lines().await;
        if lines.len() > refused.len() {
            break lines;
        }
        assert!(Instant::now() < deadline, "access lines: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        lines.len(),
        refused.len() + 1,
        "one line per answer: {lines:#?}"
    );
    let unreadable: Vec<_> = lines.iter().filter(|l| l["method"] == "-").collect();
    assert_eq!(unreadable.len(), refused.len(), "{lines:#?}");
    let mut statuses: Vec<u64> = unreadable
        .iter()
        .map(|l| l["status"].as_u64().unwrap_or(0))
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 400, 400, 400, 400, 431, 505]);
    for line in &unreadable {
        assert_eq!(line["path"], "-", "{line}");
        assert_eq!(line["route"], "-", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    gatehouse.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_without_an_answer_are_counted_by_reason() {
    let (mut gatehouse, _upstream) = start("closed-connections").await;
    let reason = |reason: &'static str| [("listener", "public"), ("reason", reason)];

    // Silent from the start: cut at header_read_timeout.
    let silent = TcpStream::connect(gatehouse.listen).await.unwrap();
    // Half a head, then nothing: cut at header_read_timeout too.
    let mut slow = TcpStream::connect(gatehouse.listen).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    // One request answered, then quiet: closed at idle_timeout.
    let mut idle = common::Client::connect(gatehouse.listen).await;
    assert_eq!(idle.get("/").await.status, 200);
    // Opened and closed by the client before sending anything.
    drop(TcpStream::connect(gatehouse.listen).await.unwrap());

    gatehouse
        .wait_for_sample(
            "gatehouse_connections_closed_total",
            &reason("header_timeout"),
            2.0,
        )
        .await;
    gatehouse
        .wait_for_sample(
            "gatehouse_connections_closed_total",
            &reason("idle_timeout"),
            1.0,
        )
        .await;
    // The readiness polls and /metrics scrapes go to the admin listener, not this one.
    let text = gatehouse
        .wait_for_sample("gatehouse_connections_closed_total", &reason("client"), 1.0)
        .await;
    for other in [
        "bad_request",
        "stalled",
        "error",
        "tls_handshake",
        "shutdown",
        "upgraded",
    ] {
        assert_eq!(
            metric_sample(&text, "gatehouse_connections_closed_total", &reason(other)),
            Some(0.0),
            "{other}:\n{text}"
        );
    }
    let lines = gatehouse.access_lines().await;
    assert_eq!(
        lines.len(),
        1,
        "only the answered request is logged: {lines:#?}"
    );
    drop((silent, slow));
    gatehouse.stop().await;
}
