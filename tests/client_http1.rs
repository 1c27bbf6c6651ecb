//! The client side of an HTTP/1.1 connection, over raw sockets: keep-alive and pipelining
//! (bodies included), HTTP/1.0 clients, HEAD, response framing (length, chunked, until close),
//! Date on every response, and a connection whose request body was not read being closed.

mod common;

use bytes::Bytes;
use common::{Recorded, TestUpstream, WAIT};
use http::Response;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// One response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    version: u8,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads responses from a connection, keeping bytes past each one for the next.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// More bytes onto the buffer; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; `head_request` when it answers a HEAD (no body follows).
    async fn response(&mut self, head_request: bool) -> RawResponse {
        let (version, status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).unwrap() {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (parsed.version.unwrap(), parsed.code.unwrap(), headers, len);
            }
            assert!(
                self.fill().await,
                "closed before a whole head: {:?}",
                self.buf
            );
        };
        self.buf.drain(..head_len);
        let mut response = RawResponse {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || status / 100 == 1 {
            return response;
        }
        if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "closed inside a body");
            }
            response.body = self.buf.drain(..len).collect();
        } else if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "closed inside a chunk size");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "closed inside a chunk");
                }
                let chunk: Vec<u8> = self.buf.drain(..line_end + 2 + size + 2).collect();
                if size == 0 {
                    break;
                }
                response
                    .body
                    .extend_from_slice(&chunk[line_end + 2..line_end + 2 + size]);
            }
        } else {
            while self.fill().await {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    /// Whether the server closed the connection (nothing more comes).
    async fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

async fn connect(addr: SocketAddr, bytes: &[u8]) -> Reader {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    Reader::new(stream)
}

/// An upstream that answers with the request's method, path and body.
async fn echo_upstream() -> TestUpstream {
    TestUpstream::with_responder(
        "echo",
        Arc::new(|request: &Recorded| {
            let text = format!(
                "{} {} {}",
                request.method,
                request.uri.path(),
                String::from_utf8_lossy(&request.body)
            );
            Response::new(Full::new(Bytes::from(text)))
        }),
    )
    .await
}

async fn proxy_to(upstream: &TestUpstream) -> gatehouse::app::Running {
    common::start_gatehouse(&common::simple_config(&[upstream.addr], "")).await
}

#[tokio::test]
async fn pipelined_requests_with_bodies_are_answered_in_order_on_one_connection() {
    let upstream = echo_upstream().await;
    let gatehouse = proxy_to(&upstream).await;
    let mut reader = connect(
        gatehouse.listener_addrs[0],
        b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          PUT /three HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
          \r\nGET /four HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let expected = [
        "GET /one ",
        "POST /two hello",
        "PUT /three abcde",
        "GET /four ",
    ];
    for want in expected {
        let response = reader.response(false).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(String::from_utf8_lossy(&response.body), want);
    }
    // Still open for more.
    reader
        .stream
        .write_all(b"GET /five HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let response = reader.response(false).await;
    assert_eq!(String::from_utf8_lossy(&response.body), "GET /five ");
    assert_eq!(upstream.received().len(), 5);
}

#[tokio::test]
async fn http_1_0_clients_get_http_1_0_answers_and_keep_alive_only_when_they_ask() {
    let upstream = echo_upstream().await;
    let gatehouse = proxy_to(&upstream).await;
    let addr = gatehouse.listener_addrs[0];

    let mut reader = connect(addr, b"GET /plain HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let response = reader.response(false).await;
    assert_eq!((response.version, response.status), (0, 200));
    assert_eq!(String::from_utf8_lossy(&response.body), "GET /plain ");
    assert!(
        reader.is_closed().await,
        "HTTP/1.0 without keep-alive closes"
    );

    let mut reader = connect(
        addr,
        b"GET /kept HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    let response = reader.response(false).await;
    assert_eq!(response.header("connection"), Some("keep-alive"));
    reader
        .stream
        .write_all(b"GET /again HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let response = reader.response(false).await;
    assert_eq!(String::from_utf8_lossy(&response.body), "GET /again ");
    assert!(reader.is_closed().await);
}

/// An upstream that answers every request on a connection with a chunked body of three
/// parts, written as raw bytes.
async fn chunked_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while common::read_head(&mut stream).await.is_some() {
                    let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        6\r\nfirst,\r\n7\r\nsecond,\r\n5\r\nthird\r\n0\r\n\r\n";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_of_unknown_length_is_chunked_for_http_1_1_and_ends_with_the_connection_for_http_1_0()
 {
    let upstream = chunked_upstream().await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[upstream], "")).await;
    let addr = gatehouse.listener_addrs[0];

    let mut reader = connect(addr, b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let response = reader.response(false).await;
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.body, b"first,second,third");

    let mut reader = connect(addr, b"GET /s HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let response = reader.response(false).await;
    assert_eq!(response.header("transfer-encoding"), None);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.body, b"first,second,third");
}

#[tokio::test]
async fn head_is_answered_with_its_length_and_no_body_and_the_connection_goes_on() {
    let upstream = echo_upstream().await;
    let gatehouse = proxy_to(&upstream).await;
    let mut reader = connect(
        gatehouse.listener_addrs[0],
        b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let head = reader.response(true).await;
    assert_eq!(head.status, 200);
    // The upstream answers HEAD with the length of "HEAD /h ".
    assert_eq!(head.header("content-length"), Some("8"), "{head:?}");
    let after = reader.response(false).await;
    assert_eq!(String::from_utf8_lossy(&after.body), "GET /after ");
}

#[tokio::test]
async fn every_response_carries_a_date_and_local_answers_too() {
    let upstream = echo_upstream().await;
    let gatehouse = common::start_gatehouse(&format!(
        "{}\n[[route]]\nhost = \"other.test\"\npath_prefix = \"/only\"\nupstream = \"app\"\n",
        common::simple_config(&[upstream.addr], "")
    ))
    .await;
    let mut reader = connect(
        gatehouse.listener_addrs[0],
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n",
    )
    .await;
    let proxied = reader.response(false).await;
    assert!(proxied.header("date").is_some(), "{proxied:?}");
    let local = reader.response(false).await;
    assert!(local.header("date").is_some(), "{local:?}");
    let date = local.header("date").unwrap_or_default();
    assert!(
        httpdate::parse_http_date(date).is_ok(),
        "an IMF-fixdate: {date}"
    );
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_after_the_answer() {
    let upstream = echo_upstream().await;
    let gatehouse = common::start_gatehouse(&format!(
        "{}\n[limits]\nmax_body_bytes = \"1KiB\"\n",
        common::simple_config(&[upstream.addr], "")
    ))
    .await;
    // Announced over the limit: answered 413 without reading it, and what follows on the
    // connection (the body) is never taken for a request.
    let mut reader = connect(
        gatehouse.listener_addrs[0],
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let response = reader.response(false).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(reader.is_closed().await);
    assert!(upstream.received().is_empty());
}

fn closed_count(metrics: &str, reason: &str) -> f64 {
    common::metric_sample(
        metrics,
        "gatehouse_connections_closed_total",
        &[("listener", "test"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

fn open_count(metrics: &str) -> f64 {
    common::metric_sample(
        metrics,
        "gatehouse_open_connections",
        &[("listener", "test")],
    )
    .unwrap_or(-1.0)
}

/// A connection with a small receive window, so that a client that does not read blocks
/// gatehouse's writes early.
async fn small_window_client(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_client_that_stops_reading_a_cache_hit_is_cut_as_stalled() {
    // A cache hit's body is one frame: handed over at once, then written to a client that
    // does not read. The connection stays busy until the write is done, so the reaper cuts
    // it as stalled instead of leaving it open as idle.
    let upstream = TestUpstream::with_responder(
        "big",
        Arc::new(|_request: &Recorded| {
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(Full::new(Bytes::from(vec![b'x'; 8 << 20])))
                .unwrap()
        }),
    )
    .await;
    let running = common::start_gatehouse(&format!(
        r#"
[admin]
bind = ""
[log]
access = "off"
[limits]
idle_timeout = "1s"
header_read_timeout = "1s"
[[listener]]
name = "test"
bind = "127.0.0.1:0"
[[route]]
path_prefix = "/"
upstream = "app"
cache = "c"
[upstream.app]
servers = ["{}"]
[cache.c]
max_size = "64MiB"
max_object_size = "16MiB"
"#,
        upstream.addr
    ))
    .await;
    let addr = running.listener_addrs[0];
    let mut filler = connect(
        addr,
        b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(filler.response(false).await.body.len(), 8 << 20);
    let mut stuck = small_window_client(addr).await;
    stuck
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let metrics = running.metrics.render();
        if closed_count(&metrics, "stalled") == 1.0 {
            assert_eq!(open_count(&metrics), 0.0, "{metrics}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still open 10 s after an idle_timeout of 1 s: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(stuck);
}

#[tokio::test]
async fn a_connection_closed_by_a_drain_after_its_answer_counts_as_shutdown() {
    let held = common::HeldUpstream::start().await;
    let running = common::start_gatehouse(&format!(
        "{}\n[limits]\nshutdown_grace = \"5s\"\n",
        common::simple_config(&[held.addr], "")
    ))
    .await;
    let metrics = Arc::clone(&running.metrics);
    let mut reader = connect(
        running.listener_addrs[0],
        b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    held.wait_arrival().await;
    let shutdown = tokio::spawn(running.shutdown());
    held.release_one();
    assert_eq!(reader.response(false).await.status, 200);
    assert!(reader.is_closed().await);
    assert!(timeout(WAIT, shutdown).await.unwrap().unwrap());
    let text = metrics.render();
    let listener = common::metric_sample(
        &text,
        "gatehouse_connections_closed_total",
        &[("reason", "shutdown")],
    );
    assert_eq!(listener, Some(1.0), "{text}");
    let by_client = common::metric_sample(
        &text,
        "gatehouse_connections_closed_total",
        &[("reason", "client")],
    );
    assert_eq!(by_client.unwrap_or(0.0), 0.0, "{text}");
}

/// An upstream that agrees to any upgrade asked of it, and records the heads it read.
async fn agreeing_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Some(head) = common::read_head(&mut stream).await {
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let reply: &[u8] = if head.contains("upgrade: websocket") {
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    seen.lock().unwrap().push(head);
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn an_http_1_0_upgrade_request_is_forwarded_without_its_upgrade_and_gets_no_101() {
    // RFC 9110 §7.8: Upgrade means nothing in HTTP/1.0, and a 1xx must not reach an HTTP/1.0
    // client: the request goes on as a plain one, never as a switch of protocol.
    let (upstream, heads) = agreeing_upstream().await;
    let running = common::start_gatehouse(&common::simple_config(&[upstream], "")).await;
    let mut reader = connect(
        running.listener_addrs[0],
        b"GET /ws HTTP/1.0\r\nHost: t\r\nConnection: upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let response = reader.response(false).await;
    assert_eq!(response.status, 200, "{response:?}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("upgrade"), "{:?}", heads[0]);
}
