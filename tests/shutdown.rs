//! Graceful shutdown, of the real binary on SIGTERM and in-process through `Running::shutdown`:
//! new connections are refused at once, in-flight requests still complete, and the process
//! exits within `shutdown_grace`.

mod common;

use common::process::Process;
use common::{HeldUpstream, read_until_closed, send_raw};
use gatehouse::app::Running;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

fn config(upstream: SocketAddr, shutdown_grace: &str) -> String {
    format!(
        r#"
[log]
level = "info"
access = "json"

[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"

[upstream.app]
servers = ["{upstream}"]
response_timeout = "30s"

[limits]
shutdown_grace = "{shutdown_grace}"
"#
    )
}

/// gatehouse in-process in front of `upstream` with `shutdown_grace`, and the admin listener
/// on port 0 when `admin` is set.
async fn start_in_process(upstream: SocketAddr, shutdown_grace: &str, admin: bool) -> Running {
    let mut text = common::simple_config(&[upstream], "");
    if admin {
        text = text.replace("[admin]\nbind = \"\"", "[admin]\nbind = \"127.0.0.1:0\"");
    }
    text.push_str(&format!(
        "\n[limits]\nshutdown_grace = \"{shutdown_grace}\"\n"
    ));
    common::start_gatehouse(&text).await
}

/// A request whose upstream never answers (until released), sent on a raw connection.
async fn send_stuck_request(proxy: SocketAddr) -> TcpStream {
    send_raw(proxy, b"GET /stuck HTTP/1.1\r\nHost: test\r\n\r\n").await
}

/// Polls until connecting to `addr` is refused; panics if it still accepts after `limit`.
async fn wait_refused(addr: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return started.elapsed();
            }
            Err(e) if e.kind() != std::io::ErrorKind::ConnectionReset => {
                panic!("unexpected connect error: {e}")
            }
            // Accepted into a backlog that is being closed, or still accepted: try again.
            Err(_) | Ok(_) => {
                assert!(
                    started.elapsed() < limit,
                    "{addr} still accepts connections {limit:?} after shutdown began"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_finishes_in_flight_and_exits_zero() {
    let held = HeldUpstream::start().await;
    let grace = Duration::from_secs(5);
    let mut process = Process::spawn(&config(held.addr, "5s"), "shutdown-drain");
    let proxy = process.addr_logged("listening").await;
    let admin = process.addr_logged("admin listening").await;
    assert_eq!(common::get(admin, "/readyz").await.status, StatusCode::OK);

    let in_flight = tokio::spawn(common::get(proxy, "/slow"));
    held.wait_arrival().await;

    process.sigterm();
    let signalled = Instant::now();
    let refused_after = wait_refused(proxy, Duration::from_secs(2)).await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request must wait for its upstream"
    );
    assert!(process.is_running(), "exited with a request in flight");

    held.release_one();
    let reply = timeout(common::WAIT, in_flight)
        .await
        .expect("in-flight reply in time")
        .expect("in-flight task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "released");

    let status = process.exit_by(signalled + grace).await;
    assert!(status.success(), "exit status {status:?}");
    let log = process.all_lines().await;
    assert!(log.contains("shutdown complete"), "stderr:\n{log}");
    assert!(refused_after < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stuck_request_exits_when_shutdown_grace_runs_out() {
    let held = HeldUpstream::start().await;
    let mut process = Process::spawn(&config(held.addr, "1s"), "shutdown-grace");
    let proxy = process.addr_logged("listening").await;

    let mut client = send_stuck_request(proxy).await;
    held.wait_arrival().await;

    process.sigterm();
    let signalled = Instant::now();
    process
        .exit_by(signalled + Duration::from_secs(1) + Duration::from_secs(3))
        .await;
    let exited_after = signalled.elapsed();
    assert!(
        exited_after >= Duration::from_millis(900),
        "exited after {exited_after:?}, before shutdown_grace (1s) ran out"
    );

    // The stuck client is disconnected, without a made-up success.
    let got = read_until_closed(&mut client, common::WAIT).await;
    assert!(
        !String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let log = process.all_lines().await;
    assert!(log.contains("grace period over"), "stderr:\n{log}");
}

#[tokio::test]
async fn running_shutdown_waits_for_the_in_flight_request() {
    let held = HeldUpstream::start().await;
    let running = start_in_process(held.addr, "5s", false).await;
    let proxy = running.listener_addrs[0];

    let in_flight = tokio::spawn(common::get(proxy, "/slow"));
    held.wait_arrival().await;

    let shutdown = tokio::spawn(running.shutdown());
    wait_refused(proxy, Duration::from_secs(2)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with a request in flight"
    );
    assert!(!in_flight.is_finished());

    held.release_one();
    let reply = timeout(common::WAIT, in_flight).await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "released");
    let drained = timeout(common::WAIT, shutdown)
        .await
        .expect("shutdown finishes once the request is done")
        .unwrap();
    assert!(drained, "shutdown reports that everything drained");
}

#[tokio::test]
async fn running_shutdown_gives_up_after_shutdown_grace() {
    let held = HeldUpstream::start().await;
    let running = start_in_process(held.addr, "300ms", false).await;
    let proxy = running.listener_addrs[0];

    let _client = send_stuck_request(proxy).await;
    held.wait_arrival().await;

    let started = Instant::now();
    let drained = timeout(common::WAIT, running.shutdown())
        .await
        .expect("shutdown returns after the grace period");
    let took = started.elapsed();
    assert!(!drained, "a request was still in flight");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "shutdown took {took:?} with a 300ms grace"
    );
}

#[tokio::test]
async fn readyz_answers_503_while_draining() {
    // README, Operations: "`/readyz` answers 503 while draining", so that a load balancer in
    // front stops sending traffic while in-flight requests finish.
    let held = HeldUpstream::start().await;
    let running = start_in_process(held.addr, "5s", true).await;
    let proxy = running.listener_addrs[0];
    let admin = running.admin_addr.expect("admin listener");
    assert_eq!(common::get(admin, "/readyz").await.status, StatusCode::OK);

    let in_flight = tokio::spawn(common::get(proxy, "/slow"));
    held.wait_arrival().await;
    let shutdown = tokio::spawn(running.shutdown());
    wait_refused(proxy, Duration::from_secs(2)).await;
    assert!(!shutdown.is_finished(), "still draining");

    let mut stream = match TcpStream::connect(admin).await {
        Ok(stream) => stream,
        Err(e) => panic!("the admin listener is gone while draining ({e}): /readyz cannot say 503"),
    };
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = timeout(common::WAIT, stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 503"),
        "/readyz while draining: {response:?}"
    );

    held.release_one();
    let reply = timeout(common::WAIT, in_flight).await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(timeout(common::WAIT, shutdown).await.unwrap().unwrap());
}
