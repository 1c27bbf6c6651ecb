//! Response compression (`[compression.NAME]`, nginx's `gzip`) over real loopback sockets: each
//! coding round-trips to the upstream's bytes, Accept-Encoding's q-values choose, what must not
//! be compressed is not (identity only, already encoded, no-transform, short, other types,
//! ranges), HEAD gets GET's head, ETags are weakened and Vary merged, a slow stream is flushed
//! as it comes and a long one is not held, cache hits reuse one encoded copy per coding, HTTP/2
//! clients get the same, and /metrics, /status and reloads show it.

mod common;

use bytes::Bytes;
use common::{Client, Reply, WAIT, metric_sample};
use gatehouse::app::Running;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// The upstream.

type OriginBody = BoxBody<Bytes, Infallible>;

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
}

/// An HTTP/1.1 upstream on a loopback port answering each request with `script`.
struct Origin {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start(script: impl Fn(&Seen) -> Response<OriginBody> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(script);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, counted) = (Arc::clone(&script), Arc::clone(&counted));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (script, counted) = (Arc::clone(&script), Arc::clone(&counted));
                        async move {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let (parts, _body) = request.into_parts();
                            let seen = Seen {
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                            };
                            Ok::<_, Infallible>(script(&seen))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<OriginBody> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into()).boxed()).unwrap()
}

/// A JSON document of about `len` bytes, like the demo's order list.
fn orders(len: usize) -> Bytes {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < len {
        text.push_str(&format!(
            "{{\"id\":{i},\"customer\":\"c-{}\",\"items\":[{{\"sku\":\"widget-{}\",\"qty\":{}}}],\"status\":\"{}\"}},",
            i * 7 % 113,
            i % 37,
            i % 5 + 1,
            ["new", "paid", "shipped"][i % 3]
        ));
        i += 1;
    }
    text.push_str("{}]");
    Bytes::from(text)
}

/// The upstream of most tests: `/orders` a 20 KB JSON list (strong ETag, Vary: Origin),
/// `/small` 100 bytes of JSON, `/image` a PNG type, `/encoded` already gzip, `/no-transform`
/// with that directive, and a 206 for any request with a Range.
async fn typical_origin() -> Origin {
    Origin::start(|seen| {
        let json = [("content-type", "application/json")];
        if seen.headers.contains_key("range") {
            return respond(
                206,
                &[
                    ("content-type", "application/json"),
                    ("content-range", "bytes 0-9/20000"),
                ],
                orders(20_000).slice(0..10),
            );
        }
        match seen.path.as_str() {
            "/orders" => respond(
                200,
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("etag", "\"v1\""),
                    ("vary", "Origin"),
                    ("accept-ranges", "bytes"),
                ],
                orders(20_000),
            ),
            "/small" => respond(200, &json, orders(100).slice(0..100)),
            "/image" => respond(200, &[("content-type", "image/png")], orders(20_000)),
            "/encoded" => respond(
                200,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                ],
                Bytes::from_static(b"not really gzip, and not to be touched"),
            ),
            "/no-transform" => respond(
                200,
                &[
                    ("content-type", "application/json"),
                    ("cache-control", "public, no-transform"),
                ],
                orders(20_000),
            ),
            _ => respond(404, &[("content-type", "text/plain")], "no such thing"),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// gatehouse in front of it.

const COMPRESSION: &str = r#"[compression.web]
types = ["application/json", "text/*"]
min_length = "256B"
encodings = ["zstd", "br", "gzip"]
"#;

fn config(upstream: SocketAddr, route_extra: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access = "off"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
name = "web"
path_prefix = "/"
upstream = "app"
compression = "web"
{route_extra}

[upstream.app]
servers = ["{upstream}"]

{COMPRESSION}
{extra}
"#
    )
}

async fn start(upstream: &Origin) -> (Running, Client) {
    let running = common::start_gatehouse(&config(upstream.addr, "", "")).await;
    let client = Client::connect(running.listener_addrs[0]).await;
    (running, client)
}

async fn get_accepting(client: &mut Client, path: &str, accept: Option<&str>) -> Reply {
    request(client, Method::GET, path, accept, &[]).await
}

async fn request(
    client: &mut Client,
    method: Method,
    path: &str,
    accept: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(accept) = accept {
        builder = builder.header("accept-encoding", accept);
    }
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    client
        .send(builder.body(Full::new(Bytes::new())).unwrap())
        .await
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gzip decodes");
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("brotli decodes");
        }
        "zstd" => out = zstd::stream::decode_all(data).expect("zstd decodes"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

fn counter(running: &Running, name: &str, encoding: &str) -> f64 {
    metric_sample(
        &running.metrics.render(),
        name,
        &[("route", "web"), ("encoding", encoding)],
    )
    .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn each_coding_round_trips_to_the_upstreams_bytes() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    for coding in ["gzip", "br", "zstd"] {
        let reply = get_accepting(&mut client, "/orders", Some(coding)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some(coding));
        assert_eq!(
            reply.header("content-length"),
            None,
            "{coding}: sent chunked"
        );
        assert_eq!(reply.header("accept-ranges"), None);
        assert_eq!(decode(coding, &reply.body), orders(20_000), "{coding}");
        assert!(
            reply.body.len() < 20_000 / 4,
            "{coding}: {} bytes",
            reply.body.len()
        );
        assert_eq!(
            counter(&running, "gatehouse_compressed_responses_total", coding),
            1.0
        );
        assert_eq!(
            counter(&running, "gatehouse_compression_input_bytes_total", coding),
            orders(20_000).len() as f64
        );
        assert_eq!(
            counter(&running, "gatehouse_compression_output_bytes_total", coding),
            reply.body.len() as f64
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn q_values_choose_the_coding() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    for (accept, expected) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("br;q=0.5, gzip;q=0.9", "gzip"),
        ("zstd;q=0, *", "br"),
        ("gzip;q=0.5, identity;q=0.5", "gzip"),
        ("x-gzip", "gzip"),
    ] {
        let reply = get_accepting(&mut client, "/orders", Some(accept)).await;
        assert_eq!(reply.header("content-encoding"), Some(expected), "{accept}");
        assert_eq!(decode(expected, &reply.body), orders(20_000));
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_client_taking_no_offered_coding_gets_identity_that_varies() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    for accept in [
        Some("identity"),
        None,
        Some("deflate"),
        Some("gzip;q=0"),
        Some("*;q=0"),
        Some("gzip;q=0.5, identity"),
    ] {
        let reply = get_accepting(&mut client, "/orders", accept).await;
        assert_eq!(reply.header("content-encoding"), None, "{accept:?}");
        assert_eq!(reply.body, orders(20_000));
        assert_eq!(
            reply.header("content-length"),
            Some(orders(20_000).len().to_string().as_str())
        );
        assert_eq!(reply.header("vary"), Some("Origin, Accept-Encoding"));
        assert_eq!(
            reply.header("etag"),
            Some("\"v1\""),
            "strong while unchanged"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn what_must_not_be_compressed_is_passed_on_as_it_is() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    let accept = Some("gzip, br, zstd");

    let encoded = get_accepting(&mut client, "/encoded", accept).await;
    assert_eq!(
        encoded.header("content-encoding"),
        Some("gzip"),
        "never twice"
    );
    assert_eq!(&encoded.body[..], b"not really gzip, and not to be touched");
    assert_eq!(encoded.header("vary"), None);

    let no_transform = get_accepting(&mut client, "/no-transform", accept).await;
    assert_eq!(no_transform.header("content-encoding"), None);
    assert_eq!(no_transform.body, orders(20_000));

    // A client may ask the same: RFC 9111 §5.2.1.6.
    let asked = request(
        &mut client,
        Method::GET,
        "/orders",
        accept,
        &[("cache-control", "no-transform")],
    )
    .await;
    assert_eq!(asked.header("content-encoding"), None);
    assert_eq!(asked.body, orders(20_000));
    assert_eq!(asked.header("vary"), Some("Origin, Accept-Encoding"));

    let small = get_accepting(&mut client, "/small", accept).await;
    assert_eq!(small.header("content-encoding"), None, "below min_length");
    assert_eq!(small.header("content-length"), Some("100"));
    assert_eq!(
        small.header("vary"),
        None,
        "short whatever the client takes"
    );

    let image = get_accepting(&mut client, "/image", accept).await;
    assert_eq!(
        image.header("content-encoding"),
        None,
        "not a configured type"
    );
    assert_eq!(image.body, orders(20_000));

    let missing = get_accepting(&mut client, "/missing", accept).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-encoding"), None, "not a 2xx");

    for coding in ["gzip", "br", "zstd"] {
        assert_eq!(
            counter(&running, "gatehouse_compressed_responses_total", coding),
            0.0
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_range_request_answered_with_206_is_not_compressed() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    let reply = request(
        &mut client,
        Method::GET,
        "/orders",
        Some("gzip"),
        &[("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.header("content-range"), Some("bytes 0-9/20000"));
    assert_eq!(reply.body, orders(20_000).slice(0..10));
    running.shutdown().await;
}

#[tokio::test]
async fn head_gets_the_head_get_gets_without_a_body() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    let get = get_accepting(&mut client, "/orders", Some("br")).await;
    let head = request(&mut client, Method::HEAD, "/orders", Some("br"), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in [
        "content-encoding",
        "content-length",
        "vary",
        "etag",
        "content-type",
        "accept-ranges",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(head.header("content-encoding"), Some("br"));
    assert_eq!(
        head.header("content-length"),
        None,
        "no length: GET's is not known"
    );
    // The client connection is still in step: another request gets its own answer.
    let again = get_accepting(&mut client, "/small", Some("br")).await;
    assert_eq!(again.header("content-length"), Some("100"));
    running.shutdown().await;
}

#[tokio::test]
async fn a_strong_etag_is_weakened_and_vary_merged() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    let reply = get_accepting(&mut client, "/orders", Some("gzip")).await;
    assert_eq!(reply.header("etag"), Some("W/\"v1\""));
    let vary: Vec<_> = reply.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Origin, Accept-Encoding"]);
    running.shutdown().await;
}

/// A body fed from a channel: pending while the test sends nothing.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// An upstream whose one response streams what the test feeds it, chunk by chunk.
async fn fed_origin(capacity: usize) -> (Origin, mpsc::Sender<Bytes>) {
    let (sender, receiver) = mpsc::channel::<Bytes>(capacity);
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let origin = Origin::start(move |_| {
        let receiver = receiver
            .lock()
            .unwrap()
            .take()
            .expect("one streamed response");
        Response::builder()
            .header("content-type", "text/plain")
            .body(Fed(receiver).boxed())
            .unwrap()
    })
    .await;
    (origin, sender)
}

/// Sends a request on a raw hyper connection and returns the response, body unread.
async fn open_response(addr: SocketAddr, path: &str, accept: &str) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "test")
        .header("accept-encoding", accept)
        .body(Full::new(Bytes::new()))
        .unwrap();
    timeout(WAIT, sender.send_request(request))
        .await
        .expect("head in time")
        .expect("response")
}

#[tokio::test]
async fn a_slow_stream_is_flushed_as_it_comes() {
    let (origin, feed) = fed_origin(4).await;
    let (running, client) = start(&origin).await;
    drop(client);
    let first = Bytes::from(b"first line of a slow stream\n".repeat(20));
    feed.send(first.clone()).await.unwrap();
    let response = open_response(running.listener_addrs[0], "/stream", "gzip").await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut body = response.into_body();
    // The upstream has sent one chunk and waits: what gatehouse sends must already decode to it.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().len() < first.len() {
        let frame = timeout(WAIT, body.frame())
            .await
            .expect("compressed bytes before the upstream sends more")
            .expect("a frame")
            .expect("not an error");
        if let Ok(data) = frame.into_data() {
            decoder.write_all(&data).unwrap();
            decoder.flush().unwrap();
        }
    }
    assert_eq!(decoder.get_ref()[..], first[..]);
    let second = Bytes::from_static(b"and the last one\n");
    feed.send(second.clone()).await.unwrap();
    drop(feed);
    while let Some(frame) = timeout(WAIT, body.frame()).await.expect("in time") {
        if let Ok(data) = frame.expect("not an error").into_data() {
            decoder.write_all(&data).unwrap();
        }
    }
    let all = decoder.finish().unwrap();
    assert_eq!(all, [first, second].concat());
    running.shutdown().await;
}

/// `len` bytes that do not compress (xorshift), in text clothing.
fn noise(seed: &mut u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

#[tokio::test]
async fn a_64_mib_stream_is_compressed_without_holding_it() {
    const CHUNK: usize = 256 * 1024;
    const TOTAL: usize = 64 * 1024 * 1024;
    let (origin, feed) = fed_origin(1).await;
    let (running, client) = start(&origin).await;
    drop(client);
    let sent = Arc::new(AtomicU64::new(0));
    let (feeder_sent, mut seed) = (Arc::clone(&sent), 0x9e37_79b9_7f4a_7c15u64);
    let feeder = tokio::spawn(async move {
        let mut expected = Vec::new();
        let mut at = 0;
        while at < TOTAL {
            let chunk = noise(&mut seed, CHUNK);
            // Only a digest of what was sent is kept, not the body.
            expected.push(crc(&chunk));
            if feed.send(chunk).await.is_err() {
                break;
            }
            at += CHUNK;
            feeder_sent.store(at as u64, Ordering::SeqCst);
        }
        expected
    });
    let response = open_response(running.listener_addrs[0], "/stream", "zstd").await;
    assert_eq!(response.headers()["content-encoding"], "zstd");
    // The client reads nothing for a while: gatehouse must not read the upstream's body ahead
    // into memory, so the upstream is held back by the full sockets well before the end.
    let mut last = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let stalled_at = sent.load(Ordering::SeqCst);
    assert!(
        stalled_at < (TOTAL / 2) as u64,
        "the upstream got {stalled_at} bytes out while the client read nothing"
    );
    // Now read it all, decoding as it comes (nothing kept but digests).
    let mut body = response.into_body();
    let mut decoder = zstd::stream::write::Decoder::new(Digests::default()).unwrap();
    let mut received = 0u64;
    while let Some(frame) = timeout(WAIT, body.frame()).await.expect("in time") {
        if let Ok(data) = frame.expect("not an error").into_data() {
            received += data.len() as u64;
            decoder.write_all(&data).unwrap();
        }
    }
    decoder.flush().unwrap();
    let digests = decoder.into_inner();
    let expected = feeder.await.unwrap();
    assert_eq!(digests.total, TOTAL as u64);
    assert_eq!(digests.per_chunk(CHUNK), expected);
    assert!(received > 0);
    running.shutdown().await;
}

fn crc(data: &[u8]) -> u32 {
    let mut hasher = flate2::Crc::new();
    hasher.update(data);
    hasher.sum()
}

/// Takes decoded bytes and keeps a CRC of each CHUNK-sized piece.
#[derive(Default)]
struct Digests {
    total: u64,
    pending: Vec<u8>,
    done: Vec<u32>,
}

impl Digests {
    fn per_chunk(mut self, chunk: usize) -> Vec<u32> {
        assert!(self.pending.len() <= chunk);
        if !self.pending.is_empty() {
            self.done.push(crc(&self.pending));
        }
        self.done
    }
}

impl Write for Digests {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        const CHUNK: usize = 256 * 1024;
        self.total += data.len() as u64;
        self.pending.extend_from_slice(data);
        while self.pending.len() >= CHUNK {
            let rest = self.pending.split_off(CHUNK);
            self.done.push(crc(&self.pending));
            self.pending = rest;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn cache_hits_reuse_one_encoded_copy_per_coding() {
    let origin = typical_origin().await;
    let config = config(
        origin.addr,
        "cache = \"c\"",
        "[cache.c]\nmax_size = \"4MiB\"\nmax_object_size = \"1MiB\"\ndefault_ttl = \"60s\"\n",
    );
    let running = common::start_gatehouse(&config).await;
    let mut client = Client::connect(running.listener_addrs[0]).await;
    let body = orders(20_000);

    // The miss: compressed on the way, the identity body stored and the encoded one with it.
    let miss = get_accepting(&mut client, "/orders", Some("gzip")).await;
    assert_eq!(miss.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &miss.body), body);
    let input_after_miss = counter(&running, "gatehouse_compression_input_bytes_total", "gzip");
    assert_eq!(input_after_miss, body.len() as f64);

    // Hits: served the miss's own encoded body, kept with the stored response.
    let weight_with_copy = cache_bytes(&running);
    assert!(
        weight_with_copy >= (body.len() + miss.body.len()) as u64,
        "the encoded copy counts in the cache's size: {weight_with_copy}"
    );
    for i in 0..5 {
        let hit = get_accepting(&mut client, "/orders", Some("gzip")).await;
        assert!(
            hit.header("cache-status")
                .is_some_and(|s| s.contains("hit")),
            "{:?}",
            hit.header("cache-status")
        );
        assert_eq!(hit.header("content-encoding"), Some("gzip"));
        assert_eq!(hit.header("vary"), Some("Origin, Accept-Encoding"));
        assert_eq!(hit.header("etag"), Some("W/\"v1\""));
        assert_eq!(
            hit.header("content-length"),
            Some(hit.body.len().to_string().as_str()),
            "a stored copy has a known length"
        );
        assert_eq!(hit.body, miss.body, "hit {i}: the miss's bytes");
    }
    assert_eq!(
        counter(&running, "gatehouse_compression_input_bytes_total", "gzip"),
        input_after_miss,
        "five hits, no compression"
    );
    assert_eq!(
        counter(&running, "gatehouse_compressed_responses_total", "gzip"),
        6.0
    );

    // Another coding is compressed at its first hit and kept; identity is the stored body.
    for _ in 0..3 {
        let br = get_accepting(&mut client, "/orders", Some("br")).await;
        assert_eq!(decode("br", &br.body), body);
    }
    assert_eq!(
        counter(&running, "gatehouse_compression_input_bytes_total", "br"),
        body.len() as f64
    );
    assert!(cache_bytes(&running) > weight_with_copy, "and counts too");
    let plain = get_accepting(&mut client, "/orders", None).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, body);
    assert_eq!(plain.header("vary"), Some("Origin, Accept-Encoding"));
    assert_eq!(plain.header("etag"), Some("\"v1\""));

    // HEAD from the cache: GET's head, including the copy's length.
    let head = request(&mut client, Method::HEAD, "/orders", Some("gzip"), &[]).await;
    let get = get_accepting(&mut client, "/orders", Some("gzip")).await;
    assert!(head.body.is_empty());
    for name in ["content-encoding", "content-length", "vary", "etag"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    // A conditional request with the weak tag gets a 304 that says what the 200 says.
    let not_modified = request(
        &mut client,
        Method::GET,
        "/orders",
        Some("gzip"),
        &[("if-none-match", "W/\"v1\"")],
    )
    .await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some("W/\"v1\""));
    assert_eq!(not_modified.header("vary"), Some("Origin, Accept-Encoding"));
    // A range from the cache is of the identity body, not compressed.
    let range = request(
        &mut client,
        Method::GET,
        "/orders",
        Some("gzip"),
        &[("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
    assert_eq!(range.body, body.slice(0..10));

    assert_eq!(
        origin.requests.load(Ordering::SeqCst),
        1,
        "all from the cache"
    );
    running.shutdown().await;
}

fn cache_bytes(running: &Running) -> u64 {
    running
        .caches
        .all()
        .into_iter()
        .find(|c| &*c.name == "c")
        .expect("cache c")
        .store
        .bytes()
}

#[tokio::test]
async fn http2_clients_get_the_same() {
    let origin = typical_origin().await;
    let (running, client) = start(&origin).await;
    drop(client);
    let stream = TcpStream::connect(running.listener_addrs[0]).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    for coding in ["gzip", "br", "zstd"] {
        let request = Request::get(format!("http://{}/orders", running.listener_addrs[0]))
            .header("accept-encoding", coding)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = timeout(WAIT, sender.send_request(request))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["content-encoding"], coding);
        assert!(!response.headers().contains_key("content-length"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(decode(coding, &body), orders(20_000));
    }
    running.shutdown().await;
}

#[tokio::test]
async fn status_shows_each_routes_compression() {
    let origin = typical_origin().await;
    let (running, mut client) = start(&origin).await;
    get_accepting(&mut client, "/orders", Some("br")).await;
    let admin = running.admin_addr.expect("admin listener");
    let status: serde_json::Value =
        serde_json::from_slice(&common::get(admin, "/status").await.body).unwrap();
    let route = &status["routes"][0];
    assert_eq!(route["compression"]["name"], "web");
    let encodings = route["compression"]["encodings"].as_array().unwrap();
    let br = encodings.iter().find(|e| e["encoding"] == "br").unwrap();
    assert_eq!(br["responses"], 1);
    assert_eq!(br["level"], 4);
    assert_eq!(br["bytes_in"], orders(20_000).len());
    let metrics = common::get(admin, "/metrics").await.text();
    assert!(
        metrics.contains(r#"gatehouse_compressed_responses_total{encoding="br",route="web"} 1"#),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_reload_changes_what_is_offered() {
    let origin = typical_origin().await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("compression-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gatehouse.toml");
    let port = common::unclaimed_port();
    let write = |text: String| {
        let text = text.replacen(
            "name = \"test\"\nbind = \"127.0.0.1:0\"",
            &format!("name = \"test\"\nbind = \"127.0.0.1:{port}\""),
            1,
        );
        std::fs::write(&path, text).unwrap();
    };
    write(config(origin.addr, "", ""));
    let running = Running::start_file(&path).await.expect("gatehouse starts");
    let mut client = Client::connect(running.listener_addrs[0]).await;
    let reply = get_accepting(&mut client, "/orders", Some("gzip, br")).await;
    assert_eq!(reply.header("content-encoding"), Some("br"));

    // Only gzip now, at its highest level.
    write(config(origin.addr, "", "").replace(
        "encodings = [\"zstd\", \"br\", \"gzip\"]",
        "encodings = [\"gzip\"]\ngzip_level = 9",
    ));
    let report = running.reloader.reload("test").await;
    assert!(report.ok && report.changed, "{:?}", report.errors);
    let reply = get_accepting(&mut client, "/orders", Some("gzip, br")).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &reply.body), orders(20_000));

    // A bad setting is refused with its place, and the one in force stays.
    write(config(origin.addr, "", "").replace("min_length = \"256B\"", "min_length = \"lots\""));
    let report = running.reloader.reload("test").await;
    assert!(!report.ok);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("compression.web.min_length")),
        "{:?}",
        report.errors
    );
    let reply = get_accepting(&mut client, "/orders", Some("gzip, br")).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));

    // Compression taken off the route.
    write(config(origin.addr, "", "").replace("compression = \"web\"\n", ""));
    let report = running.reloader.reload("test").await;
    assert!(report.ok && report.changed, "{:?}", report.errors);
    let reply = get_accepting(&mut client, "/orders", Some("gzip, br")).await;
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.header("vary"), Some("Origin"));
    running.shutdown().await;
}

#[tokio::test]
async fn an_http10_client_gets_the_compressed_body_delimited_by_close() {
    let origin = typical_origin().await;
    let (running, client) = start(&origin).await;
    drop(client);
    let mut stream = common::send_raw(
        running.listener_addrs[0],
        b"GET /orders HTTP/1.0\r\nHost: test\r\nAccept-Encoding: gzip\r\n\r\n",
    )
    .await;
    let answer = common::read_until_closed(&mut stream, WAIT).await;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"),
        "{head}"
    );
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        !head.contains("transfer-encoding"),
        "no chunking for HTTP/1.0: {head}"
    );
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(decode("gzip", &answer[split + 4..]), orders(20_000));
    running.shutdown().await;
}
