//! gatehouse's HTTP/1.1 client against real upstreams, through the proxy: keep-alive reuse,
//! chunked responses, request bodies, interim responses, bodiless responses.

mod common;

use bytes::Bytes;
use common::{Client, TestUpstream, WAIT};
use http::Request;
use http_body_util::Full;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn keep_alive_reuses_one_upstream_connection() {
    let upstream = TestUpstream::named("a").await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[upstream.addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    for i in 0..5 {
        let reply = client.get(&format!("/n/{i}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "a");
        assert_eq!(reply.header("x-upstream"), Some("a"));
    }
    // A HEAD and a fresh client connection reuse it too.
    let reply = client
        .send(Request::head("/h").body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    let reply = common::get(gatehouse.listener_addrs[0], "/other").await;
    assert_eq!(reply.text(), "a");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    let received = upstream.received();
    assert_eq!(received.len(), 7);
    assert_eq!(received[3].uri.path(), "/n/3");
    assert!(received[0].headers.contains_key("x-forwarded-for"));
}

#[tokio::test]
async fn posts_bodies_small_and_streamed() {
    let upstream = TestUpstream::with_responder(
        "echo",
        Arc::new(|recorded: &common::Recorded| {
            http::Response::new(Full::new(Bytes::from(format!(
                "{} {}",
                recorded.body.len(),
                recorded
                    .headers
                    .get("content-length")
                    .map_or("-", |v| v.to_str().unwrap())
            ))))
        }),
    )
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[upstream.addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    let reply = client
        .send(
            Request::post("/small")
                .body(Full::new(Bytes::from_static(b"payload")))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "7 7");
    // Larger than the pre-read limit: streamed to the upstream as it comes.
    let big = Bytes::from(vec![b'x'; 200_000]);
    let reply = client
        .send(Request::post("/big").body(Full::new(big)).unwrap())
        .await;
    assert_eq!(reply.text(), "200000 200000");
    let received = upstream.received();
    assert_eq!(&received[0].body[..], b"payload");
    assert!(received[1].body.iter().all(|b| *b == b'x'));
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);

    // A chunked upload of unknown length goes upstream with a length (pre-read whole).
    let request = "POST /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let response = common::raw_exchange(gatehouse.listener_addrs[0], request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("5 5"), "{response}");
}

/// A raw upstream answering every request on a connection with `responses` in turn (one per
/// request head), counting connections.
async fn raw_upstream(responses: Vec<&'static [u8]>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let responses = responses.clone();
            tokio::spawn(serve_raw(stream, responses));
        }
    });
    (addr, connections)
}

async fn serve_raw(mut stream: TcpStream, responses: Vec<&'static [u8]>) {
    let mut buf = Vec::new();
    let mut answered = 0;
    loop {
        let mut chunk = [0u8; 4096];
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let response = responses[answered % responses.len()];
            answered += 1;
            // Split in two writes so the client sees partial reads.
            let half = response.len() / 2;
            stream.write_all(&response[..half]).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            stream.write_all(&response[half..]).await.unwrap();
        }
    }
}

#[tokio::test]
async fn chunked_and_interim_responses_over_one_connection() {
    let (addr, connections) = raw_upstream(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        // A 304's Content-Length describes the body it stands for: none follows.
        b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 10\r\n\r\n",
    ])
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    for _ in 0..2 {
        let reply = client.get("/chunked").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello world");
        let reply = client.get("/hints").await;
        assert_eq!(reply.text(), "ok");
        let reply = client.get("/none").await;
        assert_eq!(reply.status, 204);
        let reply = client.get("/same").await;
        assert_eq!(reply.status, 304);
        assert!(reply.body.is_empty());
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // The chunks pass on as they came.
    let raw = common::raw_exchange(
        gatehouse.listener_addrs[0],
        b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        raw.contains("\r\nhello\r\n") && raw.contains("\r\n world\r\n"),
        "{raw}"
    );
}

#[tokio::test]
async fn a_connection_the_server_closes_is_not_reused() {
    let (addr, connections) = raw_upstream(vec![
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    ])
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    for _ in 0..3 {
        let reply = tokio::time::timeout(WAIT, client.get("/")).await.unwrap();
        assert_eq!(reply.text(), "abc");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

/// A raw upstream that hands each connection it accepts, numbered from 0, to `serve`; returns
/// its address and the number of connections accepted.
async fn scripted_upstream<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let index = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(index, stream));
        }
    });
    (addr, connections)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads from `stream` onto `got` until it holds `needle` after `from`; the offset past it.
async fn read_through(
    stream: &mut TcpStream,
    got: &mut Vec<u8>,
    from: usize,
    needle: &[u8],
) -> usize {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(at) = find(&got[from..], needle) {
                return from + at + needle.len();
            }
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} in {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(got)
        )
    })
}

const WEBSOCKET_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: ws.test\r\n\
    Connection: Upgrade\r\n\
    Upgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn an_upgrade_joins_client_and_backend_both_ways_with_the_bytes_sent_along_the_101() {
    let (addr, _) = scripted_upstream(|_, mut stream| async move {
        let head = common::read_head(&mut stream)
            .await
            .expect("a request head");
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
        // The first frame goes in the same write as the 101 head.
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\
                  hello-from-backend;",
            )
            .await
            .unwrap();
        // Then every byte back, upper-cased, so an echo cannot be mistaken for a reflection
        // inside gatehouse.
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let upper = buf[..n].to_ascii_uppercase();
                    if stream.write_all(&upper).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = TcpStream::connect(gatehouse.listener_addrs[0])
        .await
        .unwrap();
    client.write_all(WEBSOCKET_REQUEST).await.unwrap();
    let mut got = Vec::new();
    let head_end = read_through(&mut client, &mut got, 0, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    let early = read_through(&mut client, &mut got, head_end, b"hello-from-backend;").await;
    for round in ["ping-1", "ping-2"] {
        client.write_all(round.as_bytes()).await.unwrap();
        read_through(
            &mut client,
            &mut got,
            early,
            round.to_uppercase().as_bytes(),
        )
        .await;
    }
    // The client's end of its side ends the backend's, which closes in turn.
    client.shutdown().await.unwrap();
    let rest = common::read_until_closed(&mut client, WAIT).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_502() {
    let (addr, _) = scripted_upstream(|_, mut stream| async move {
        if common::read_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await;
            let _ = common::read_until_closed(&mut stream, WAIT).await;
        }
    })
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let reply = common::get(gatehouse.listener_addrs[0], "/plain").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
}

#[tokio::test]
async fn an_early_answer_during_an_upload_comes_back_at_once_and_its_connection_is_not_reused() {
    let (addr, connections) = scripted_upstream(|index, mut stream| async move {
        let Some(head) = common::read_head(&mut stream).await else {
            return;
        };
        if index == 0 {
            assert!(head.starts_with(b"POST /upload "));
            // Answered at once, and the rest of the body never read: the connection stays
            // open as a server that is slow to close would leave it.
            stream
                .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
                .await
                .unwrap();
            std::future::pending::<()>().await;
        }
        assert!(
            head.starts_with(b"GET /after "),
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        let _ = common::read_until_closed(&mut stream, WAIT).await;
    })
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    // 8 MiB announced, 256 KiB sent, and the client waits for an answer before sending more.
    let mut client = TcpStream::connect(gatehouse.listener_addrs[0])
        .await
        .unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 8388608\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&vec![b'u'; 256 * 1024]).await.unwrap();
    let mut got = Vec::new();
    let head_end = read_through(&mut client, &mut got, 0, b"\r\n\r\n").await;
    assert!(
        got.starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    read_through(&mut client, &mut got, head_end, b"too large").await;

    // The upload left that connection mid-request: the next request gets a new one.
    let reply = common::get(gatehouse.listener_addrs[0], "/after").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// An upstream that answers each request on a connection with `response`, then closes.
async fn answering_then_closing(response: &'static [u8]) -> SocketAddr {
    let (addr, _) = scripted_upstream(move |_, mut stream| async move {
        if common::read_head(&mut stream).await.is_some() {
            let _ = stream.write_all(response).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    addr
}

#[tokio::test]
async fn bad_status_lines_and_oversized_heads_are_502() {
    let oversized: &'static [u8] = {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        head.extend_from_slice(&vec![b'a'; 70 * 1024]);
        head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        head.leak()
    };
    for response in [
        &b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        oversized,
    ] {
        let addr = answering_then_closing(response).await;
        let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
        let reply = common::get(gatehouse.listener_addrs[0], "/").await;
        let shown = String::from_utf8_lossy(&response[..response.len().min(40)]).into_owned();
        assert_eq!(reply.status, 502, "{shown}: {}", reply.text());
        gatehouse.shutdown().await;
    }
}

/// A GET over raw TCP, read until gatehouse closes the connection.
async fn raw_get_until_closed(gatehouse: SocketAddr) -> String {
    let mut client = common::send_raw(gatehouse, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = common::read_until_closed(&mut client, WAIT).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_body_cut_short_by_a_close_is_cut_short_for_the_client() {
    // Shorter than its Content-Length.
    let addr =
        answering_then_closing(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b").await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let text = raw_get_until_closed(gatehouse.listener_addrs[0]).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 100"),
        "{head}"
    );
    assert!(body.len() < 100, "{body:?}");
    gatehouse.shutdown().await;

    // Closed inside a chunk: the client's chunked body never gets its last chunk.
    let addr = answering_then_closing(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nabc",
    )
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let text = raw_get_until_closed(gatehouse.listener_addrs[0]).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("hello"), "{body:?}");
    assert!(!body.ends_with("0\r\n\r\n"), "a clean end: {body:?}");
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn an_http_1_0_response_without_length_is_read_until_the_close() {
    let addr = answering_then_closing(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the close",
    )
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    let reply = client.get("/old").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "read until the close");
    // And the next one on a new upstream connection.
    let reply = client.get("/old").await;
    assert_eq!(reply.text(), "read until the close");
}

#[tokio::test]
async fn bytes_after_a_complete_response_never_reach_another_response() {
    // Each answer carries a second, unasked-for response behind it.
    let (addr, connections) = raw_upstream(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nLEAKED",
    ])
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    for _ in 0..3 {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3, "none reused");
}

/// An upstream whose first connection answers one request, then reads the next request head
/// and closes without a word (as a server closing an idle connection just as a request goes
/// out); later connections answer every request. Counts request heads and answers.
async fn closing_its_first_idle_connection() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let heads = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(AtomicUsize::new(0));
    let (seen, answered) = (Arc::clone(&heads), Arc::clone(&answers));
    let (addr, _) = scripted_upstream(move |index, mut stream| {
        let (seen, answered) = (Arc::clone(&seen), Arc::clone(&answered));
        async move {
            let mut served = 0;
            while common::read_head(&mut stream).await.is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
                if index == 0 && served == 1 {
                    return;
                }
                served += 1;
                answered.fetch_add(1, Ordering::SeqCst);
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    (addr, heads, answers)
}

fn upstream_outcome(gatehouse: &gatehouse::app::Running, server: SocketAddr, outcome: &str) -> f64 {
    common::metric_sample(
        &gatehouse.metrics.render(),
        "gatehouse_upstream_requests_total",
        &[
            ("upstream", "app"),
            ("server", &server.to_string()),
            ("outcome", outcome),
        ],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_get_on_a_pooled_connection_the_server_closed_goes_again_on_a_new_one() {
    let (addr, heads, answers) = closing_its_first_idle_connection().await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    assert_eq!(client.get("/first").await.text(), "ok");
    let reply = client.get("/second").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "ok");
    assert_eq!(
        heads.load(Ordering::SeqCst),
        3,
        "sent on the pooled connection, then again"
    );
    assert_eq!(answers.load(Ordering::SeqCst), 2);
    // One answer per request in the server's accounting: the lost connection is no failure.
    assert_eq!(upstream_outcome(&gatehouse, addr, "ok"), 2.0);
    assert_eq!(upstream_outcome(&gatehouse, addr, "error"), 0.0);
}

#[tokio::test]
async fn a_post_on_a_pooled_connection_the_server_closed_is_not_sent_again() {
    let (addr, heads, answers) = closing_its_first_idle_connection().await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    assert_eq!(client.get("/first").await.text(), "ok");
    let reply = client
        .send(
            Request::post("/orders")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(heads.load(Ordering::SeqCst), 2);
    assert_eq!(answers.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_used() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let closed_tx = std::sync::Mutex::new(Some(closed_tx));
    let answers = Arc::new(AtomicUsize::new(0));
    let answered = Arc::clone(&answers);
    let (addr, connections) = scripted_upstream(move |index, mut stream| {
        let answered = Arc::clone(&answered);
        let closed = if index == 0 {
            closed_tx.lock().unwrap().take()
        } else {
            None
        };
        async move {
            while common::read_head(&mut stream).await.is_some() {
                answered.fetch_add(1, Ordering::SeqCst);
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                if let Some(closed) = closed {
                    // A keep-alive timeout on the server's side.
                    stream.shutdown().await.unwrap();
                    drop(stream);
                    let _ = closed.send(());
                    return;
                }
            }
        }
    })
    .await;
    let gatehouse = common::start_gatehouse(&common::simple_config(&[addr], "")).await;
    let mut client = Client::connect(gatehouse.listener_addrs[0]).await;
    assert_eq!(client.get("/first").await.text(), "ok");
    closed_rx.await.unwrap();
    let reply = client.get("/second").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        answers.load(Ordering::SeqCst),
        2,
        "each request answered once"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(upstream_outcome(&gatehouse, addr, "error"), 0.0);
}
