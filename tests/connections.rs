//! Client connection lifetime: keep-alive connections are reused, idle ones are closed after
//! `idle_timeout` (and not before), busy ones are kept, stalled ones are cut, and each is
//! counted while open.

mod common;

use common::{Client, TestUpstream, metric_sample, read_until_closed, send_raw, simple_config};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const IDLE: Duration = Duration::from_millis(400);

async fn start() -> (gatehouse::app::Running, TestUpstream) {
    let upstream = TestUpstream::named("app").await;
    let config = format!(
        "{}\n[limits]\nidle_timeout = \"400ms\"\n",
        simple_config(&[upstream.addr], "")
    );
    (common::start_gatehouse(&config).await, upstream)
}

/// Waits until the peer closes `stream`; returns how long that took from `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    read_until_closed(stream, common::WAIT).await;
    since.elapsed()
}

fn open_connections(running: &gatehouse::app::Running) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_open_connections",
        &[("listener", "test")],
    )
    .unwrap_or(-1.0)
}

#[tokio::test]
async fn idle_keep_alive_connection_closes_after_idle_timeout() {
    let (running, _upstream) = start().await;
    let mut stream = send_raw(
        running.listener_addrs[0],
        b"GET / HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await;
    let mut response = [0u8; 512];
    let n = stream.read(&mut response).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    assert_eq!(open_connections(&running), 1.0);
    let after = closed_after(&mut stream, answered).await;
    assert!(
        after >= IDLE - Duration::from_millis(120),
        "closed too early: {after:?}"
    );
    assert!(after < IDLE * 2, "closed too late: {after:?}");
    let deadline = Instant::now() + common::WAIT;
    while open_connections(&running) != 0.0 {
        assert!(Instant::now() < deadline, "gauge never went back to 0");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn busy_connection_outlives_idle_timeout_and_is_reused() {
    let (running, upstream) = start().await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    let started = Instant::now();
    // Requests every 100 ms for three idle timeouts, all on one connection.
    while started.elapsed() < IDLE * 3 {
        assert_eq!(client.get("/").await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled upstream connection serves every request"
    );
    assert_eq!(open_connections(&running), 1.0);
}

#[tokio::test]
async fn keep_alive_outlives_header_read_timeout_when_idle_timeout_is_longer() {
    // hyper's own header timer would close a waiting keep-alive connection at 300 ms.
    let upstream = TestUpstream::named("app").await;
    let config = format!(
        "{}\n[limits]\nidle_timeout = \"5s\"\nheader_read_timeout = \"300ms\"\n",
        simple_config(&[upstream.addr], "")
    );
    let running = common::start_gatehouse(&config).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    assert_eq!(client.get("/").await.status, 200);
    // Three header timeouts of quiet, well inside idle_timeout.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        client.get("/again").await.status,
        200,
        "same connection still usable"
    );
    assert_eq!(open_connections(&running), 1.0);
}

#[tokio::test]
async fn a_response_that_stalls_mid_body_is_cut_after_idle_timeout() {
    // The upstream sends its head and half its body, then nothing, for ever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf of it")
                    .await;
                std::future::pending::<()>().await;
            });
        }
    });
    let config = format!(
        "{}\n[limits]\nidle_timeout = \"400ms\"\n",
        simple_config(&[upstream], "response_timeout = \"30s\"")
    );
    let running = common::start_gatehouse(&config).await;
    let mut stream = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(common::WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the stalled response is cut, not left hanging");
    let after = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("half of it"),
        "the client got what came, then the cut: {text}"
    );
    assert!(after >= IDLE, "cut before idle_timeout: {after:?}");
    assert!(after < IDLE * 3, "cut too late: {after:?}");
}
