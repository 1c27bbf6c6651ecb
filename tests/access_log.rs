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

/// Starts the binary with `access` and waits for its proxy listener (from the text log).
async fn start_text_logged(config_text: &str, name: &str) -> (Process, SocketAddr) {
    let mut process = Process::spawn(config_text, name);
    let deadline = Instant::now() + common::WAIT;
    loop {
        let lines = process.all_lines_so_far().await;
        if let Some(addr) = text_listening_addr(&lines) {
            return (process, addr);
        }
        assert!(Instant::now() < deadline, "no listening line: {lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_access_log_is_nginx_combined_on_stdout_with_the_request_id() {
    let upstream = TestUpstream::named("app").await;
    let (mut process, proxy) =
        start_text_logged(&config(upstream.addr, "combined"), "access-combined").await;
    let mut client = common::Client::connect(proxy).await;
    let request = http::Request::get("/api/orders?limit=2")
        .header("referer", "http://shop.example/cart")
        .header("user-agent", "curl/8.5.0 \"quoted\"")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let ok = client.send(request).await;
    assert_eq!(ok.status, 200);
    let request_id = ok.header("x-request-id").expect("x-request-id").to_owned();
    let missing = common::get(proxy, "/nowhere").await;
    assert_eq!(missing.status, 404);
    process.sigterm();
    let status = process.exit_by(Instant::now() + common::WAIT).await;
    assert!(status.success());
    let stderr = process.all_lines().await;
    let stdout = process.stdout_lines();
    assert_eq!(stdout.len(), 2, "one stdout line per request: {stdout:#?}");
    // 127.0.0.1 - - [27/Nov/2026:23:09:41 +0000] "GET /api/orders?limit=2 HTTP/1.1" 200 3 "referer" "agent" "id"
    let line = &stdout[0];
    let (head, rest) = line.split_once(" [").expect("[time]");
    assert_eq!(head, "127.0.0.1 - -", "{line}");
    let (time, rest) = rest.split_once("] ").expect("[time]");
    assert_eq!(time.len(), "27/Nov/2026:23:09:41 +0000".len(), "{line}");
    assert!(
        time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "{line}"
    );
    assert_eq!(
        rest,
        format!(
            "\"GET /api/orders?limit=2 HTTP/1.1\" 200 3 \"http://shop.example/cart\" \"curl/8.5.0 \\x22quoted\\x22\" \"{request_id}\""
        ),
        "{line}"
    );
    assert!(
        stdout[1].contains("\"GET /nowhere HTTP/1.1\" 404 ") && stdout[1].contains("\"-\" \"-\""),
        "{}",
        stdout[1]
    );
    assert!(
        !stderr.contains("gatehouse::access") && stderr.contains("gatehouse started"),
        "access lines only on stdout, the rest on stderr:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_logs_its_upstream_server_reason_and_request_id() {
    let refused = common::refused_addr().await;
    let mut process = Process::spawn(&config(refused, "json"), "access-failure");
    let proxy = process.addr_logged("listening").await;
    let failed = common::get(proxy, "/api/orders").await;
    assert_eq!(failed.status, 502);
    let request_id = failed
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    process.sigterm();
    let status = process.exit_by(Instant::now() + common::WAIT).await;
    assert!(status.success());
    let lines: Vec<serde_json::Value> = process
        .all_lines()
        .await
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of_request: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["request_id"] == request_id.as_str())
        .collect();
    let failure = of_request
        .iter()
        .find(|l| l["message"] == "upstream request failed")
        .unwrap_or_else(|| panic!("no failure line for {request_id}: {lines:#?}"));
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["upstream"], "app");
    assert_eq!(failure["server"], refused.to_string().as_str());
    assert!(
        failure["error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("refused")),
        "the reason: {failure}"
    );
    let access = of_request
        .iter()
        .find(|l| l["target"] == "gatehouse::access")
        .expect("the access line carries the same request id");
    assert_eq!(access["status"], 502);
}

/// With `[tracing]`, the access line names the request's trace id beside its request id, in
/// the JSON and the text format alike.
async fn traced_access_line(access: &str) -> String {
    let upstream = TestUpstream::named("app").await;
    // Spans are dropped (nobody listens there); the log does not depend on the export.
    let collector = common::refused_addr().await;
    let text = config(upstream.addr, access)
        + &format!("\n[tracing]\nendpoint = \"http://{collector}\"\n");
    let mut process = Process::spawn(&text, &format!("access-traced-{access}"));
    let proxy = if access == "json" {
        process.addr_logged("listening").await
    } else {
        let deadline = Instant::now() + common::WAIT;
        loop {
            let lines = process.all_lines_so_far().await;
            if let Some(addr) = text_listening_addr(&lines) {
                break addr;
            }
            assert!(Instant::now() < deadline, "no listening line: {lines:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let request = http::Request::get("/api/orders")
        .header("host", "example.test")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let mut client = common::Client::connect(proxy).await;
    assert_eq!(client.send(request).await.status, 200);
    process.sigterm();
    let status = process.exit_by(Instant::now() + common::WAIT).await;
    assert!(status.success());
    let all = process.all_lines().await;
    all.lines()
        .find(|l| l.contains("gatehouse::access"))
        .unwrap_or_else(|| panic!("no access line: {all}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_id_is_logged_beside_the_request_id() {
    let json = traced_access_line("json").await;
    let line: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{json}"
    );
    assert!(line["request_id"].is_string(), "{json}");
    let text = traced_access_line("text").await;
    assert!(
        text.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""),
        "{text}"
    );
}
