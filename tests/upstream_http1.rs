//! gatehouse's HTTP/1.1 client against real upstreams, through the proxy: keep-alive reuse,
//! chunked responses, request bodies, interim responses, bodiless responses.

mod common;

use bytes::Bytes;
use common::{Client, TestUpstream, WAIT};
use http::Request;
use http_body_util::Full;
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
