//! The access log, read from the real binary's stderr: one line per request with method, path,
//! status, upstream server, duration, bytes and request id, as JSON or text, or none when off.

mod common;

use common::TestUpstream;
use common::process::Process;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn config(upstream: SocketAddr, access: &str) -> String {
    format!(
        r#"
[log]
level = "info"
access = "{access}"

[admin]
bind = ""

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/api"
upstream = "app"
"#
    ) + &format!("\n[upstream.app]\nservers = [\"{upstream}\"]\n")
}

/// Runs two requests (one routed, one matching no route) and returns every stderr line.
async fn run_and_collect(
    access: &str,
    proxy_from: impl Fn(&[String]) -> Option<SocketAddr>,
) -> (Vec<String>, String) {
    let upstream = TestUpstream::named("app").await;
    let mut process = Process::spawn(&config(upstream.addr, access), &format!("access-{access}"));
    let proxy = match access {
        "json" => process.addr_logged("listening").await,
        _ => {
            // Text logs: wait for the proxy to accept.
            let deadline = Instant::now() + common::WAIT;
            loop {
                let lines = process.all_lines_so_far().await;
                if let Some(addr) = proxy_from(&lines) {
                    break addr;
                }
                assert!(Instant::now() < deadline, "no listening line: {lines:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let ok = common::get(proxy, "/api/orders?limit=2").await;
    assert_eq!(ok.status, 200);
    let request_id = ok.header("x-request-id").expect("x-request-id").to_owned();
    let missing = common::get(proxy, "/nowhere").await;
    assert_eq!(missing.status, 404);
    process.sigterm();
    let status = process.exit_by(Instant::now() + common::WAIT).await;
    assert!(status.success());
    let all = process.all_lines().await;
    (all.lines().map(str::to_owned).collect(), request_id)
}

fn text_listening_addr(lines: &[String]) -> Option<SocketAddr> {
    lines
        .iter()
        .find(|l| l.contains("listening") && l.contains("listener=public"))
        .and_then(|l| {
            let start = l.find("addr=")? + "addr=".len();
            l[start..]
                .split_whitespace()
                .next()?
                .trim_matches('"')
                .parse()
                .ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_per_request_with_every_field() {
    let (lines, request_id) = run_and_collect("json", |_| None).await;
    let access: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "gatehouse::access")
        .collect();
    assert_eq!(access.len(), 2, "one line per request: {lines:#?}");
    let ok = &access[0];
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/api/orders");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "*/api");
    assert_eq!(ok["upstream"], "app");
    assert!(
        ok["server"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{ok}"
    );
    assert!(ok["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{ok}");
    assert_eq!(ok["bytes"], 3, "the body \"app\" is 3 bytes: {ok}");
    assert_eq!(ok["request_id"], request_id.as_str());
    let missing = &access[1];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["path"], "/nowhere");
    assert_eq!(missing["server"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_log_names_method_path_status_and_request_id() {
    let (lines, request_id) = run_and_collect("text", text_listening_addr).await;
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("gatehouse::access"))
        .collect();
    assert_eq!(access.len(), 2, "{lines:#?}");
    assert!(access[0].contains("method=GET"), "{}", access[0]);
    assert!(access[0].contains("path=/api/orders"), "{}", access[0]);
    assert!(access[0].contains("status=200"), "{}", access[0]);
    assert!(access[0].contains(&request_id), "{}", access[0]);
    assert!(access[1].contains("status=404"), "{}", access[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_off_writes_no_request_lines() {
    let (lines, _) = run_and_collect("off", text_listening_addr).await;
    assert!(
        lines.iter().any(|l| l.contains("gatehouse started")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("gatehouse::access")),
        "{lines:#?}"
    );
}
