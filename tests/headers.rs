//! What crosses gatehouse in each direction: hop-by-hop headers dropped, X-Forwarded-*, Via and
//! X-Request-Id added, Host kept, HTTP/2 clients bridged to HTTP/1.1 upstreams, extension
//! methods with bodies, and WebSocket upgrades joined byte for byte.

mod common;

use bytes::Bytes;
use common::{Client, Recorded, TestUpstream, WAIT};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn proxy_to(upstream: &TestUpstream) -> gatehouse::app::Running {
    common::start_gatehouse(&common::simple_config(&[upstream.addr], "")).await
}

/// The only request `upstream` received.
fn only_request(upstream: &TestUpstream) -> Recorded {
    let received = upstream.received();
    assert_eq!(received.len(), 1, "exactly one request upstream");
    received.into_iter().next().unwrap()
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn assert_absent(headers: &HeaderMap, names: &[&str]) {
    for name in names {
        assert!(
            !headers.contains_key(*name),
            "{name} must not be forwarded: {headers:?}"
        );
    }
}

#[tokio::test]
async fn request_hop_by_hop_headers_are_removed_and_a_chunked_body_is_reframed() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;

    let request = "POST /hop HTTP/1.1\r\n\
        Host: shop.test\r\n\
        Connection: close, x-secret\r\n\
        Connection: X-Other\r\n\
        x-secret: 1\r\n\
        x-other: 2\r\n\
        Keep-Alive: timeout=5, max=100\r\n\
        TE: trailers\r\n\
        Trailer: x-checksum\r\n\
        Proxy-Connection: keep-alive\r\n\
        Transfer-Encoding: Chunked\r\n\
        x-kept: yes\r\n\
        \r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = common::raw_exchange(gatehouse.listener_addrs[0], request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let seen = only_request(&upstream);
    assert_eq!(seen.body, "hello world");
    assert_absent(
        &seen.headers,
        &[
            "connection",
            "x-secret",
            "x-other",
            "keep-alive",
            "te",
            "trailer",
            "proxy-connection",
        ],
    );
    // The body is framed anew for the upstream hop; the client's own Transfer-Encoding header
    // (spelled "Chunked") is not what went upstream.
    let te = values(&seen.headers, "transfer-encoding");
    assert!(te.is_empty() || te == ["chunked"], "{te:?}");
    assert_eq!(seen.headers["x-kept"], "yes");
}

#[tokio::test]
async fn an_h2c_upgrade_request_is_forwarded_without_its_upgrade_headers() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;

    let request = "GET /h2c HTTP/1.1\r\n\
        Host: shop.test\r\n\
        Connection: Upgrade, HTTP2-Settings, close\r\n\
        Upgrade: h2c\r\n\
        HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
        \r\n";
    let response = common::raw_exchange(gatehouse.listener_addrs[0], request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("app"), "{response}");

    let seen = only_request(&upstream);
    assert_absent(&seen.headers, &["connection", "upgrade", "http2-settings"]);
}

#[tokio::test]
async fn forwarding_headers_are_added_and_host_is_kept() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;

    let reply = client
        .send(
            Request::get("/fwd")
                .header("host", "Shop.Example:8443")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "spoofed.example")
                .header("via", "1.0 edge")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);

    let seen = only_request(&upstream);
    assert_eq!(values(&seen.headers, "host"), ["Shop.Example:8443"]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(values(&seen.headers, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        ["Shop.Example:8443"]
    );
    let via = values(&seen.headers, "via").join(", ");
    assert!(via.starts_with("1.0 edge"), "earlier hops kept: {via}");
    assert!(via.contains("1.1 gatehouse"), "this hop added: {via}");
    assert_eq!(seen.version, http::Version::HTTP_11);

    // A client without X-Forwarded-For starts the list.
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    client.get("/fresh").await;
    let fresh = &upstream.received()[1];
    assert_eq!(values(&fresh.headers, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&fresh.headers, "x-forwarded-proto"), ["http"]);
    let listener = gatehouse.listener_addrs[0].to_string();
    assert_eq!(values(&fresh.headers, "x-forwarded-host"), [listener]);
    assert_eq!(values(&fresh.headers, "via"), ["1.1 gatehouse"]);

    // The response tells the client too.
    let reply = client.get("/again").await;
    let via = reply.headers.get_all("via").iter().count();
    assert!(via >= 1, "{:?}", reply.headers);
    assert!(reply.header("via").unwrap().contains("gatehouse"));
}

#[tokio::test]
async fn an_x_forwarded_for_list_over_several_lines_is_kept_whole() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;

    // Several header lines of one field are one comma-separated list (RFC 9110 §5.3): every
    // earlier hop must survive, with this client appended last.
    client
        .send(
            Request::get("/multi")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-forwarded-for", "198.51.100.9, 192.0.2.1")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let seen = only_request(&upstream);
    assert_eq!(
        values(&seen.headers, "x-forwarded-for").join(", "),
        "203.0.113.7, 198.51.100.9, 192.0.2.1, 127.0.0.1"
    );
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_kept_when_sent() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;

    let first = client.get("/one").await;
    let second = client.get("/two").await;
    let generated_1 = first
        .header("x-request-id")
        .expect("id returned")
        .to_owned();
    let generated_2 = second
        .header("x-request-id")
        .expect("id returned")
        .to_owned();
    assert!(!generated_1.is_empty());
    assert_ne!(generated_1, generated_2, "each request has its own id");

    let sent = client
        .send(
            Request::get("/three")
                .header("x-request-id", "client-chosen-42")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(sent.header("x-request-id"), Some("client-chosen-42"));

    let received = upstream.received();
    assert_eq!(values(&received[0].headers, "x-request-id"), [generated_1]);
    assert_eq!(values(&received[1].headers, "x-request-id"), [generated_2]);
    assert_eq!(
        values(&received[2].headers, "x-request-id"),
        ["client-chosen-42"]
    );
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed_before_the_client() {
    let upstream = TestUpstream::with_responder(
        "app",
        Arc::new(|_req: &Recorded| {
            Response::builder()
                .header("connection", "x-foo, x-bar")
                .header("x-foo", "1")
                .header("x-bar", "2")
                .header("keep-alive", "timeout=5, max=100")
                .header("proxy-connection", "keep-alive")
                .header("trailer", "x-checksum")
                .header("upgrade", "h2c")
                .header("x-kept", "yes")
                .body(Full::new(Bytes::from_static(b"body")))
                .unwrap()
        }),
    )
    .await;
    let gatehouse = proxy_to(&upstream).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;

    let reply = client.get("/resp").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "body");
    assert_absent(
        &reply.headers,
        &[
            "x-foo",
            "x-bar",
            "keep-alive",
            "proxy-connection",
            "trailer",
            "upgrade",
        ],
    );
    for connection in values(&reply.headers, "connection") {
        assert!(
            !connection.contains("x-foo") && !connection.contains("x-bar"),
            "{connection}"
        );
    }
    assert_eq!(reply.header("x-kept"), Some("yes"));
    // The connection stays usable.
    assert_eq!(client.get("/again").await.text(), "body");
}

#[tokio::test]
async fn an_http2_client_reaches_an_http1_upstream_with_a_host_header() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;
    let addr = gatehouse.listener_addrs[0];

    let reply = common::get_h2(addr, "/over-h2?q=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "app");
    assert!(reply.header("x-request-id").is_some());

    let seen = only_request(&upstream);
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.uri, "/over-h2?q=1", "origin-form upstream");
    assert_eq!(values(&seen.headers, "host"), [addr.to_string()]);
    assert_eq!(
        values(&seen.headers, "x-forwarded-host"),
        [addr.to_string()]
    );
    let via = values(&seen.headers, "via").join(", ");
    assert!(via.contains("2 gatehouse"), "{via}");
}

#[tokio::test]
async fn extension_methods_are_forwarded_with_their_bodies() {
    let upstream = TestUpstream::named("app").await;
    let gatehouse = proxy_to(&upstream).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;

    let purge_body = Bytes::from_static(b"purge these keys: a, b, c");
    let reply = client
        .send(
            Request::builder()
                .method("PURGE")
                .uri("/cache/item")
                .body(Full::new(purge_body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);

    let report_body: Bytes = (0..200_000u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let reply = client
        .send(
            Request::builder()
                .method("REPORT")
                .uri("/calendar")
                .header("content-type", "application/xml")
                .body(Full::new(report_body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);

    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].method.as_str(), "PURGE");
    assert_eq!(received[0].uri, "/cache/item");
    assert_eq!(received[0].body, purge_body);
    assert_eq!(received[1].method.as_str(), "REPORT");
    assert_eq!(received[1].body.len(), report_body.len());
    assert!(received[1].body == report_body, "REPORT body intact");
}

/// Reads from `stream` until the end of an HTTP head (`\r\n\r\n`); returns the head and any
/// bytes after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = stream.read(&mut chunk).await.expect("read head");
        assert!(
            n > 0,
            "connection closed before the head ended: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An upstream that accepts WebSocket handshakes with 101 and then echoes every byte.
async fn echo_websocket_upstream(seen: Arc<Mutex<Vec<HeaderMap>>>) -> TestUpstream {
    TestUpstream::with_handler(
        "ws",
        Arc::new(move |mut request: Request<hyper::body::Incoming>| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                seen.lock().unwrap().push(request.headers().clone());
                let on_upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let Ok(upgraded) = on_upgrade.await else {
                        return;
                    };
                    let mut io = hyper_util::rt::TokioIo::new(upgraded);
                    let mut buf = [0u8; 4096];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_bridged_both_ways() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = echo_websocket_upstream(Arc::clone(&seen)).await;
    let gatehouse = proxy_to(&upstream).await;
    let addr: SocketAddr = gatehouse.listener_addrs[0];

    timeout(WAIT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"GET /chat HTTP/1.1\r\n\
                  Host: chat.test\r\n\
                  Connection: keep-alive, Upgrade\r\n\
                  Upgrade: websocket\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\
                  \r\n",
            )
            .await
            .unwrap();
        let (head, early) = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
        assert!(
            lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        assert!(early.is_empty(), "nothing before the client speaks");

        // Several round trips, including one larger than one read.
        for message in [
            b"ping".to_vec(),
            b"\x81\x05hello".to_vec(),
            vec![0xA5u8; 100_000],
        ] {
            stream.write_all(&message).await.unwrap();
            let mut echoed = vec![0u8; message.len()];
            stream.read_exact(&mut echoed).await.expect("echo arrives");
            assert!(echoed == message, "echo of {} bytes intact", message.len());
        }
    })
    .await
    .expect("WebSocket exchange within the deadline");

    let headers = seen.lock().unwrap().clone();
    assert_eq!(headers.len(), 1);
    let upgrade_headers = &headers[0];
    assert_eq!(values(upgrade_headers, "upgrade"), ["websocket"]);
    assert!(
        values(upgrade_headers, "connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{upgrade_headers:?}"
    );
    assert_eq!(
        values(upgrade_headers, "sec-websocket-key"),
        ["dGhlIHNhbXBsZSBub25jZQ=="]
    );
    assert_eq!(values(upgrade_headers, "host"), ["chat.test"]);
    // The HTTP connection ended by the switch is counted as such, not as a client close.
    let upgraded = || {
        common::metric_sample(
            &gatehouse.metrics.render(),
            "gatehouse_connections_closed_total",
            &[("reason", "upgraded")],
        )
    };
    let deadline = std::time::Instant::now() + WAIT;
    while upgraded() != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "upgraded closes: {:?}",
            upgraded()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped_unless_allowed() {
    let request = "POST /u HTTP/1.1\r\n\
        Host: shop.test\r\n\
        Content-Length: 2\r\n\
        Content_Length: 40\r\n\
        Transfer_Encoding: chunked\r\n\
        X_Custom: 1\r\n\
        X-Custom: 2\r\n\
        Connection: close\r\n\
        \r\n\
        ok";
    for (allowed, expected) in [
        (false, vec![]),
        (
            true,
            vec![
                ("content_length", "40"),
                ("transfer_encoding", "chunked"),
                ("x_custom", "1"),
            ],
        ),
    ] {
        let upstream = TestUpstream::named("app").await;
        let config = common::simple_config(&[upstream.addr], "")
            + &format!("\n[limits]\nunderscores_in_headers = {allowed}\n");
        let gatehouse = common::start_gatehouse(&config).await;
        let response = common::raw_exchange(gatehouse.listener_addrs[0], request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{response:?}");
        let seen = only_request(&upstream);
        assert_eq!(seen.body, "ok", "framed by Content-Length alone");
        assert_eq!(values(&seen.headers, "x-custom"), ["2"]);
        let underscored: Vec<(&str, &str)> = seen
            .headers
            .iter()
            .filter(|(name, _)| name.as_str().contains('_'))
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        assert_eq!(underscored, expected, "allowed = {allowed}");
    }
}

/// An upstream on a raw socket that answers every request on a connection with `response`.
async fn fixed_upstream(response: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while common::read_head(&mut stream).await.is_some() {
                    if stream.write_all(response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Lines of `head` whose name is `name`, compared without case.
fn lines_named<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

#[tokio::test]
async fn an_upstream_head_is_passed_on_in_its_own_case_with_gatehouses_fields() {
    let upstream = fixed_upstream(
        b"HTTP/1.1 200 OK\r\nServer: Up\r\nX-Request-Id: from-upstream\r\nVia: 1.1 origin\r\n\
          Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\
          X-Mixed-Case: Kept\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[upstream], "")).await;
    let mut stream = TcpStream::connect(gatehouse.listener_addrs[0])
        .await
        .unwrap();
    for round in 0..2 {
        stream
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: client-7\r\n\r\n")
            .await
            .unwrap();
        let mut got = timeout(WAIT, common::read_head(&mut stream))
            .await
            .unwrap()
            .expect("a response head");
        while !got.ends_with(b"hi") {
            let mut more = [0u8; 64];
            let n = timeout(WAIT, stream.read(&mut more))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed mid-body");
            got.extend_from_slice(&more[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{round}: {head}");
        // The upstream's fields in its own case and order.
        assert!(head.contains("\r\nServer: Up\r\n"), "{head}");
        assert!(head.contains("\r\nX-Mixed-Case: Kept\r\n"), "{head}");
        assert_eq!(
            lines_named(head, "date"),
            ["Date: Sun, 06 Nov 1994 08:49:37 GMT"]
        );
        assert_eq!(lines_named(head, "content-length"), ["Content-Length: 2"]);
        // Hop-by-hop fields stay on the upstream's side.
        assert!(lines_named(head, "keep-alive").is_empty(), "{head}");
        assert!(lines_named(head, "proxy-connection").is_empty(), "{head}");
        assert!(lines_named(head, "connection").is_empty(), "{head}");
        // gatehouse's request id replaces the upstream's; its Via joins the upstream's.
        assert_eq!(
            lines_named(head, "x-request-id"),
            ["x-request-id: client-7"]
        );
        assert_eq!(
            lines_named(head, "via"),
            ["Via: 1.1 origin", "via: 1.1 gatehouse"]
        );
    }
}
