//! HTTP/3 end to end: an `http3` TLS listener served over QUIC on real UDP loopback sockets,
//! driven by the h3 + h3-quinn client trusting the test's own CA. Forwarding, streamed bodies
//! both ways, the cache, Alt-Svc on the TCP side, malformed requests, reload under load,
//! certificate rotation, graceful shutdown, metrics and the config check.

mod common;

use common::pki::{Issued, Pki};

use bytes::{Buf, Bytes, BytesMut};
use common::{HeldUpstream, TestUpstream, WAIT, metric_sample, start_gatehouse};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;

/// One `http3` listener with `cert`, an admin listener, one route to `upstream` (`route_extra`
/// added to the route, `extra` to the file).
fn config(cert: &Issued, upstream: SocketAddr, route_extra: &str, extra: &str) -> String {
    common::h3::http3_config(cert, upstream, "", route_extra, extra)
}

// ---------------------------------------------------------------------------------------
// An HTTP/3 client: quinn + h3, trusting the test CA.

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

struct H3Client {
    send: SendRequest,
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

async fn h3_connect(addr: SocketAddr, roots: RootCertStore) -> Result<H3Client, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // Every connection a full handshake, so that it shows the certificate in force.
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connecting = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?;
    let connection = timeout(WAIT, connecting)
        .await
        .map_err(|_| "QUIC handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    Ok(H3Client {
        send,
        connection,
        _endpoint: endpoint,
    })
}

/// What an HTTP/3 request got back.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
}

impl H3Client {
    /// Sends `request` with `body` sent in 16 KiB DATA frames, and reads the answer whole.
    async fn send(&mut self, request: Request<()>, body: &[u8]) -> Result<Answer, String> {
        let exchange = async {
            let mut stream = self
                .send
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            for chunk in body.chunks(16 * 1024) {
                stream
                    .send_data(Bytes::copy_from_slice(chunk))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            stream.finish().await.map_err(|e| e.to_string())?;
            let response = stream.recv_response().await.map_err(|e| e.to_string())?;
            let mut received = BytesMut::new();
            while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
                received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            Ok(Answer {
                status: response.status(),
                headers: response.headers().clone(),
                body: received.freeze(),
            })
        };
        timeout(WAIT, exchange)
            .await
            .map_err(|_| "no answer in time".to_owned())?
    }

    async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.send(request("GET", path).body(()).unwrap(), b"").await
    }

    fn peer_certificate(&self) -> CertificateDer<'static> {
        let identity = self.connection.peer_identity().expect("a server identity");
        let chain = identity
            .downcast::<Vec<CertificateDer<'static>>>()
            .expect("a certificate chain");
        chain[0].clone()
    }
}

async fn metrics_of(running: &gatehouse::app::Running) -> String {
    common::get(running.admin_addr.expect("admin"), "/metrics")
        .await
        .text()
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_over_http3_reaches_the_upstream_with_forwarding_fields_and_is_counted() {
    let pki = Pki::new("get");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&cert, app.addr, "", "")).await;
    let addr = running.listener_addrs[0];

    let mut client = h3_connect(addr, pki.roots()).await.unwrap();
    let answer = client.get("/hello?x=1").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"app");
    assert!(answer.header("x-request-id").is_some(), "a request id");
    assert_eq!(
        answer.header("alt-svc"),
        None,
        "no Alt-Svc over HTTP/3 itself"
    );

    let seen = app.received();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(
        upstream.uri.path_and_query().unwrap().as_str(),
        "/hello?x=1"
    );
    let header = |name: &str| upstream.headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(header("x-forwarded-proto"), Some("https"));
    assert_eq!(header("via"), Some("3 gatehouse"));
    assert_eq!(header("host"), Some("localhost"));
    assert_eq!(header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header("x-request-id"), answer.header("x-request-id"));
    // A GET's stream ends with its head: no body goes upstream.
    assert_eq!(header("transfer-encoding"), None);
    assert!(upstream.body.is_empty());

    let metrics = metrics_of(&running).await;
    let listener = [("listener", "quic")];
    assert_eq!(
        metric_sample(&metrics, "gatehouse_http3_requests_total", &listener),
        Some(1.0)
    );
    assert_eq!(
        metric_sample(&metrics, "gatehouse_http3_open_connections", &listener),
        Some(1.0)
    );
    // Answered on the same path as every other request, counted with its protocol.
    assert_eq!(
        metric_sample(
            &metrics,
            "gatehouse_http_requests_total",
            &[("code", "200"), ("protocol", "HTTP/3")]
        ),
        Some(1.0),
        "metrics:\n{metrics}"
    );

    // The connection gauge falls when the client goes.
    client.connection.close(quinn::VarInt::from_u32(0), b"done");
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = metrics_of(&running).await;
        if metric_sample(&metrics, "gatehouse_http3_open_connections", &listener) == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the HTTP/3 connection stayed counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

/// An upstream that answers with the request's body, as received.
async fn echo_upstream() -> TestUpstream {
    TestUpstream::with_handler(
        "echo",
        Arc::new(|request| {
            Box::pin(async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                Response::new(Full::new(body))
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_streams_up_and_back_byte_for_byte() {
    let pki = Pki::new("stream");
    let cert = pki.issue("site", &["localhost"]);
    let echo = echo_upstream().await;
    let running = start_gatehouse(&config(&cert, echo.addr, "", "")).await;
    let mut client = h3_connect(running.listener_addrs[0], pki.roots())
        .await
        .unwrap();
    let sent: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // With its length, and without (streamed to the upstream as it comes).
    for length in [true, false] {
        let mut head = request("POST", "/upload");
        if length {
            head = head.header("content-length", sent.len());
        }
        let answer = client.send(head.body(()).unwrap(), &sent).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "content-length: {length}");
        assert_eq!(answer.body.len(), sent.len());
        assert!(answer.body[..] == sent[..], "the body came back changed");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_stream_ends_after_its_head_goes_upstream_without_a_body() {
    let pki = Pki::new("late-fin");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&cert, app.addr, "", "")).await;
    let mut client = h3_connect(running.listener_addrs[0], pki.roots())
        .await
        .unwrap();

    // The head now, the stream's end a while later (as when it comes in another packet).
    let mut stream = client
        .send
        .send_request(request("GET", "/late").body(()).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        app.received().is_empty(),
        "not forwarded before the stream's end"
    );
    stream.finish().await.unwrap();
    let response = timeout(WAIT, stream.recv_response())
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let seen = app.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get("transfer-encoding"), None);
    assert_eq!(seen[0].headers.get("content-length"), None);
    assert!(seen[0].body.is_empty());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_response_is_served_over_http3() {
    let pki = Pki::new("cache");
    let cert = pki.issue("site", &["localhost"]);
    let origin = TestUpstream::with_responder(
        "origin",
        Arc::new(|_| {
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from_static(b"stored")))
                .unwrap()
        }),
    )
    .await;
    let cache = "[cache.c]\nmax_size = \"1MiB\"\nmax_object_size = \"64KiB\"\n";
    let running = start_gatehouse(&config(&cert, origin.addr, "cache = \"c\"", cache)).await;
    let mut client = h3_connect(running.listener_addrs[0], pki.roots())
        .await
        .unwrap();
    let first = client.get("/page").await.unwrap();
    assert_eq!(&first.body[..], b"stored");
    let second = client.get("/page").await.unwrap();
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(&second.body[..], b"stored");
    let status = second.header("cache-status").unwrap_or_default();
    assert!(status.contains("hit"), "Cache-Status {status:?}");
    assert_eq!(origin.received().len(), 1, "the second came from the cache");
    running.shutdown().await;
}

/// One HTTPS request over TCP with ALPN `alpn`, HTTP/2 or HTTP/1.1.
async fn tcp_get(addr: SocketAddr, roots: RootCertStore, alpn: &str) -> (http::Version, HeaderMap) {
    tcp_get_path(addr, roots, alpn, "/").await
}

/// A GET of `path` over HTTPS on TCP with `alpn`, which must answer 200: the version and
/// fields it came with.
async fn tcp_get_path(
    addr: SocketAddr,
    roots: RootCertStore,
    alpn: &str,
    path: &str,
) -> (http::Version, HeaderMap) {
    let mut tls = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let get = Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = if alpn == "h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(get).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(get).await.unwrap()
    };
    assert_eq!(response.status(), StatusCode::OK);
    (response.version(), response.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_advertises_http3_on_the_tcp_responses_of_that_listener_only() {
    let pki = Pki::new("altsvc");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let other = format!(
        "[[listener]]\nname = \"tcp-only\"\nbind = \"127.0.0.1:0\"\ntls = {{ certs = [ {{ cert = {:?}, key = {:?} }} ] }}\n",
        cert.cert, cert.key
    );
    let running = start_gatehouse(&config(&cert, app.addr, "", &other)).await;
    let (quic, tcp_only) = (running.listener_addrs[0], running.listener_addrs[1]);
    let expected = format!("h3=\":{}\"; ma=86400", quic.port());
    for (alpn, version) in [
        ("h2", http::Version::HTTP_2),
        ("http/1.1", http::Version::HTTP_11),
    ] {
        let (seen, headers) = tcp_get(quic, pki.roots(), alpn).await;
        assert_eq!(seen, version);
        assert_eq!(
            headers.get("alt-svc").map(|v| v.to_str().unwrap()),
            Some(expected.as_str()),
            "{alpn}"
        );
        let (_, headers) = tcp_get(tcp_only, pki.roots(), alpn).await;
        assert_eq!(
            headers.get("alt-svc"),
            None,
            "{alpn} on a listener without http3"
        );
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_connection_specific_field_is_refused_as_malformed() {
    let pki = Pki::new("malformed");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&cert, app.addr, "", "")).await;
    let mut client = h3_connect(running.listener_addrs[0], pki.roots())
        .await
        .unwrap();
    for (name, value) in [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let refused = client
            .send(
                request("GET", "/").header(name, value).body(()).unwrap(),
                b"",
            )
            .await;
        let error = match refused {
            Ok(answer) => panic!("{name} answered {}", answer.status),
            Err(error) => error,
        };
        assert!(
            error.contains("H3_MESSAGE_ERROR") || error.contains("0x10e"),
            "{name}: {error}"
        );
    }
    assert!(app.received().is_empty(), "nothing malformed went upstream");
    // TE: trailers is allowed, and the connection still serves.
    let fine = client
        .send(
            request("GET", "/")
                .header("te", "trailers")
                .body(())
                .unwrap(),
            b"",
        )
        .await
        .unwrap();
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(app.received().len(), 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_http3_load_fail_no_request() {
    let pki = Pki::new("reload");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let text = |n: usize| {
        config(
            &cert,
            app.addr,
            &format!("response_headers = {{ set = {{ \"x-generation\" = \"{n}\" }} }}"),
            "",
        )
    };
    let running = start_gatehouse(&text(0)).await;
    let addr = running.listener_addrs[0];

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failures, roots) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
            pki.roots(),
        );
        let mut client = h3_connect(addr, roots).await.unwrap();
        load.push(tokio::spawn(async move {
            // Bounded: stops when told, or after this many requests.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.get("/load").await {
                    Ok(answer) if answer.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(answer) => failures.lock().unwrap().push(answer.status.to_string()),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    let path = Path::new("test.toml");
    for generation in 1..=5 {
        let before = ok.load(Ordering::Relaxed);
        let report = running
            .reloader
            .reload_text("test", path, &text(generation))
            .await;
        assert!(report.ok, "reload {generation}: {:?}", report.errors);
        // Requests keep being answered after each reload, by the new config.
        let deadline = Instant::now() + WAIT;
        while ok.load(Ordering::Relaxed) < before + 10 {
            assert!(
                Instant::now() < deadline,
                "load stalled after reload {generation}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut client = h3_connect(addr, pki.roots()).await.unwrap();
    let answer = client.get("/after").await.unwrap();
    assert_eq!(answer.header("x-generation"), Some("5"));
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    assert!(ok.load(Ordering::Relaxed) >= 50);
    running.shutdown().await;
}

fn replace_file(from: &str, to: &str) {
    let aside = format!("{to}.new");
    std::fs::copy(from, &aside).unwrap();
    std::fs::rename(&aside, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_is_shown_by_new_quic_connections() {
    let pki = Pki::new("rotate");
    let old = pki.issue("old", &["localhost"]);
    let new = pki.issue("new", &["localhost"]);
    let served = Issued {
        cert: pki.path("served.pem"),
        key: pki.path("served-key.pem"),
        der: old.der.clone(),
    };
    replace_file(&old.cert, &served.cert);
    replace_file(&old.key, &served.key);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&served, app.addr, "", "")).await;
    let addr = running.listener_addrs[0];
    let mut before = h3_connect(addr, pki.roots()).await.unwrap();
    assert!(before.peer_certificate() == old.der);

    replace_file(&new.key, &served.key);
    replace_file(&new.cert, &served.cert);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut fresh = h3_connect(addr, pki.roots()).await.unwrap();
        if fresh.peer_certificate() == new.der {
            assert_eq!(fresh.get("/").await.unwrap().status, StatusCode::OK);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new QUIC connections never saw the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection from before keeps serving.
    assert_eq!(before.get("/").await.unwrap().status, StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_finishes_the_request_in_flight() {
    let pki = Pki::new("shutdown");
    let cert = pki.issue("site", &["localhost"]);
    let held = HeldUpstream::start().await;
    let running = start_gatehouse(&config(
        &cert,
        held.addr,
        "",
        "[limits]\nshutdown_grace = \"5s\"\n",
    ))
    .await;
    let addr = running.listener_addrs[0];
    let mut client = h3_connect(addr, pki.roots()).await.unwrap();
    let connection = client.connection.clone();
    // The client is handed back, kept open: dropping it would close the connection itself.
    let in_flight = tokio::spawn(async move { (client.get("/slow").await, client) });
    held.wait_arrival().await;

    let shutdown = tokio::spawn(running.shutdown());
    // New QUIC connections are refused once the drain has begun.
    let deadline = Instant::now() + WAIT;
    while h3_connect(addr, pki.roots()).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting QUIC connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with a request in flight"
    );
    assert!(!in_flight.is_finished());

    held.release_one();
    let (answer, _client) = timeout(WAIT, in_flight).await.unwrap().unwrap();
    let answer = answer.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"released");
    let drained = timeout(WAIT, shutdown)
        .await
        .expect("shutdown finishes once the request is done")
        .unwrap();
    assert!(drained, "everything drained");
    // The connection was closed by the server, without error, once its request was answered.
    match timeout(WAIT, connection.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(0x100),
                "H3_NO_ERROR"
            );
        }
        other => panic!("closed by {other}"),
    }
}

#[test]
fn http3_without_tls_is_a_config_error_naming_its_place() {
    let text = "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\nhttp3 = true\n\n[[route]]\nupstream = \"app\"\n\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n";
    let error = match gatehouse::config::load_str(Path::new("h3.toml"), text) {
        Ok(_) => panic!("http3 without tls accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("h3.toml:4:9"), "{error}");
    assert!(error.contains("listener[0].http3"), "{error}");
    assert!(error.contains("tls"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_past_max_header_bytes_gets_431_and_an_idle_connection_is_closed() {
    let pki = Pki::new("limits");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let limits = "[limits]\nmax_header_bytes = \"8KiB\"\nidle_timeout = \"400ms\"\n";
    let running = start_gatehouse(&config(&cert, app.addr, "", limits)).await;
    let mut client = h3_connect(running.listener_addrs[0], pki.roots())
        .await
        .unwrap();
    let big = "x".repeat(12 * 1024);
    // The limit is advertised in SETTINGS (max field section size): a client that has them
    // already refuses to send the head; one that sends it anyway gets 431.
    let sent = client
        .send(
            request("GET", "/").header("x-big", big).body(()).unwrap(),
            b"",
        )
        .await;
    match sent {
        Ok(answer) => assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(refused) => assert!(
            refused.contains("max size: 8192"),
            "refused for another reason: {refused}"
        ),
    }
    let small = client.get("/").await.unwrap();
    assert_eq!(small.status, StatusCode::OK, "the connection still serves");
    assert_eq!(app.received().len(), 1);

    // Then nothing: the server closes the connection after idle_timeout.
    let started = Instant::now();
    let closed = timeout(WAIT, client.connection.closed()).await.unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::TimedOut),
        "closed by {closed}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_removed_by_a_reload_finishes_its_http3_request_then_closes() {
    let pki = Pki::new("removed");
    let cert = pki.issue("site", &["localhost"]);
    let held = HeldUpstream::start().await;
    let with_quic = config(&cert, held.addr, "", "");
    let running = start_gatehouse(&with_quic).await;
    let addr = running.listener_addrs[0];
    let mut client = h3_connect(addr, pki.roots()).await.unwrap();
    let connection = client.connection.clone();
    let in_flight = tokio::spawn(async move { (client.get("/slow").await, client) });
    held.wait_arrival().await;

    // The same config with a plain listener in place of the HTTP/3 one.
    let without = with_quic
        .replace("name = \"quic\"", "name = \"plain\"")
        .replace("http3 = true\n", "")
        .lines()
        .filter(|line| !line.starts_with("tls = "))
        .collect::<Vec<_>>()
        .join("\n");
    let report = running
        .reloader
        .reload_text("test", Path::new("test.toml"), &without)
        .await;
    assert!(report.ok, "{:?}", report.errors);
    assert!(!in_flight.is_finished());
    held.release_one();
    let (answer, _client) = timeout(WAIT, in_flight).await.unwrap().unwrap();
    let answer = answer.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"released");
    match timeout(WAIT, connection.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(0x100),
                "H3_NO_ERROR"
            );
        }
        other => panic!("closed by {other}"),
    }
    // The port no longer takes QUIC connections.
    let deadline = Instant::now() + WAIT;
    while h3_connect(addr, pki.roots()).await.is_ok() {
        assert!(Instant::now() < deadline, "still serving HTTP/3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Raw bytes on a request stream and on a unidirectional stream, frame by frame wrong: each
/// ends as a stream or connection error, no panic, and the listener serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_end_in_errors_never_a_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let pki = Pki::new("fuzz");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&cert, app.addr, "", "")).await;
    let addr = running.listener_addrs[0];

    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00, 0x01, 0x00],             // DATA before HEADERS
        vec![0x01, 0x05, 0xff, 0xff, 0xff], // HEADERS with a broken field section
        vec![0x01, 0x3f],                   // HEADERS longer than the stream
        vec![0x04, 0x00],                   // SETTINGS on a request stream
        vec![0x07, 0x01, 0x00],             // GOAWAY on a request stream
        vec![0x21, 0x00, 0x01, 0x00],       // a reserved frame type, then nothing
        vec![0xff; 64],                     // a varint as long as it gets
        vec![0x01, 0x02, 0x00, 0x00],       // an empty field section: no pseudo-fields
    ];
    let mut rng = fastrand::Rng::with_seed(9114);
    for _ in 0..24 {
        let len = rng.usize(1..300);
        cases.push((0..len).map(|_| rng.u8(..)).collect());
    }
    for (i, bytes) in cases.iter().enumerate() {
        let client = h3_connect(addr, pki.roots()).await.unwrap();
        let quic = client.connection.clone();
        // On a request stream.
        if let Ok((mut send, mut recv)) = quic.open_bi().await {
            let _ = send.write_all(bytes).await;
            let _ = send.finish();
            let _ = timeout(WAIT, recv.read_to_end(64 * 1024)).await;
        }
        // On a unidirectional stream of an unknown or control type.
        if let Ok(mut uni) = quic.open_uni().await {
            let _ = uni.write_all(bytes).await;
            let _ = uni.finish();
        }
        drop(client);
        let mut check = h3_connect(addr, pki.roots()).await.unwrap();
        let answer = check
            .get("/")
            .await
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(answer.status, StatusCode::OK, "case {i}");
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic while serving");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_dropped_at_the_head_timeout_and_clients_are_held_to_their_connections()
{
    let pki = Pki::new("silent");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let text = config(
        &cert,
        app.addr,
        "",
        "[limits]\nheader_read_timeout = \"300ms\"\n",
    )
    .replace(
        "http3 = true\n",
        "http3 = true\nmax_connections_per_client = 1\n",
    );
    let running = start_gatehouse(&text).await;
    let addr = running.listener_addrs[0];
    let mut client = h3_connect(addr, pki.roots()).await.unwrap();

    // A request stream that starts a HEADERS frame and sends no more of it ends, without an
    // answer, after the timeout.
    let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
    send.write_all(&[0x01, 0x20]).await.unwrap();
    let started = Instant::now();
    let read = timeout(WAIT, recv.read_to_end(1024))
        .await
        .expect("the silent stream was ended");
    assert!(
        !matches!(read, Ok(ref bytes) if !bytes.is_empty()),
        "{read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(client.get("/").await.unwrap().status, StatusCode::OK);

    // A second connection from the same client is closed at once.
    let second = h3_connect(addr, pki.roots()).await;
    let refused = match second {
        Err(e) => e,
        Ok(second) => match timeout(WAIT, second.connection.closed()).await.unwrap() {
            quinn::ConnectionError::ApplicationClosed(close) => close.error_code.to_string(),
            other => other.to_string(),
        },
    };
    assert!(
        refused.contains("263") || refused.contains("0x107") || refused.contains("EXCESSIVE"),
        "{refused}"
    );
    // The first still serves; once it is gone, a new one is let in.
    assert_eq!(client.get("/").await.unwrap().status, StatusCode::OK);
    client.connection.close(quinn::VarInt::from_u32(0x100), b"");
    drop(client);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut again) = h3_connect(addr, pki.roots()).await
            && let Ok(answer) = again.get("/").await
        {
            assert_eq!(answer.status, StatusCode::OK);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
}

/// The real binary: an HTTP/3 request is in the combined access log as `HTTP/3.0`, and
/// SIGTERM drains the QUIC listener and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_http3_requests_and_exits_cleanly_on_sigterm() {
    let pki = Pki::new("binary");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let text = config(&cert, app.addr, "", "")
        .replace(
            "access = \"off\"",
            "access = \"combined\"\nlevel = \"info\"",
        )
        .replace("bind = \"127.0.0.1:0\"\n\n[log]", "bind = \"\"\n\n[log]");
    let mut process = common::process::Process::spawn(&text, "h3-binary");
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        let lines = process.all_lines_so_far().await;
        let found = lines
            .iter()
            .find(|l| l.contains("listening") && l.contains("listener=quic"))
            .and_then(|l| {
                let start = l.find("addr=")? + "addr=".len();
                l[start..]
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .parse::<SocketAddr>()
                    .ok()
            });
        if let Some(addr) = found {
            break addr;
        }
        assert!(Instant::now() < deadline, "no listening line: {lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = h3_connect(addr, pki.roots()).await.unwrap();
    let answer = client.get("/logged?q=1").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let request_id = answer.header("x-request-id").unwrap().to_owned();
    process.sigterm();
    let status = process.exit_by(std::time::Instant::now() + WAIT).await;
    assert!(status.success(), "{status:?}");
    let stdout = process.stdout_lines();
    let line = stdout
        .iter()
        .find(|l| l.contains(&request_id))
        .unwrap_or_else(|| panic!("no access line for {request_id}: {stdout:?}"));
    assert!(
        line.contains("\"GET /logged?q=1 HTTP/3.0\" 200 3"),
        "{line}"
    );
}

/// An HTTP/2 cleartext origin answering like a gRPC service: the request body echoed, then
/// trailers; it records the versions it was spoken to in.
async fn grpc_origin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<http::Version>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&versions);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            seen.lock().unwrap().push(request.version());
                            let body = request.into_body().collect().await?.to_bytes();
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let frames = vec![
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(body)),
                                Ok(hyper::body::Frame::trailers(trailers)),
                            ];
                            let body = http_body_util::StreamBody::new(futures_stream(frames));
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(body)
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, versions)
}

/// The frames as a stream, one by one.
fn futures_stream<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
    struct Items<T>(std::collections::VecDeque<T>);
    impl<T: Unpin> futures_core::Stream for Items<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Items(items.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_style_call_over_http3_reaches_an_http2_upstream_with_trailers_back() {
    let pki = Pki::new("grpc");
    let cert = pki.issue("site", &["localhost"]);
    let (origin, versions) = grpc_origin().await;
    let text = config(&cert, origin, "", "").replace(
        &format!("servers = [\"{origin}\"]\n"),
        &format!("servers = [\"{origin}\"]\nhttp2 = true\n"),
    );
    let running = start_gatehouse(&text).await;
    let mut client = h3_connect(running.listener_addrs[0], pki.roots())
        .await
        .unwrap();
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let call = async {
        let request = request("POST", "/echo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut stream = client.send.send_request(request).await.unwrap();
        stream.send_data(message.clone()).await.unwrap();
        stream.finish().await.unwrap();
        let response = stream.recv_response().await.unwrap();
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let trailers = stream.recv_trailers().await.unwrap();
        (response, body.freeze(), trailers)
    };
    let (response, body, trailers) = timeout(WAIT, call).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(body, message);
    let trailers = trailers.expect("trailers arrive over HTTP/3");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(*versions.lock().unwrap(), [http::Version::HTTP_2]);
    running.shutdown().await;
}

/// `config/examples/modern.toml` as shipped, with its certificate paths pointed at one made
/// here, its fixed ports swapped for free ones and its static directory found from the tree:
/// the order API over HTTP/3, HTTP/2 and plain HTTP/1.1, the files under /static/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modern_example_serves_the_api_and_its_files_over_http3_and_tcp() {
    let pki = Pki::new("modern");
    let cert = pki.issue("modern", &["localhost"]);
    let tree = env!("CARGO_MANIFEST_DIR");
    let mut text = include_str!("../config/examples/modern.toml")
        .replace("config/certs/cert.pem", &cert.cert)
        .replace("config/certs/key.pem", &cert.key)
        .replace(
            "\"config/examples/static\"",
            &format!("\"{tree}/config/examples/static\""),
        );
    for fixed in ["8080", "8443", "9090"] {
        text = text.replace(&format!("127.0.0.1:{fixed}"), "127.0.0.1:0");
    }
    for backend in ["8001", "8002", "8003"] {
        text = text.replace(
            &format!("127.0.0.1:{backend}"),
            &format!("127.0.0.1:{}", common::unclaimed_port()),
        );
    }
    let running = start_gatehouse(&text).await;
    let (plain, secure) = (running.listener_addrs[0], running.listener_addrs[1]);

    let mut client = h3_connect(secure, pki.roots()).await.unwrap();
    let orders = client.get("/orders").await.unwrap();
    assert_eq!(orders.status, StatusCode::OK);
    assert!(
        orders.header("x-served-by").is_some(),
        "from a demo backend"
    );
    let page = client.get("/static/").await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    let index = std::fs::read(format!("{tree}/config/examples/static/index.html")).unwrap();
    assert_eq!(page.body, index);
    assert_eq!(page.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(
        page.header("strict-transport-security"),
        Some("max-age=300")
    );

    let (version, headers) = tcp_get_path(secure, pki.roots(), "h2", "/orders").await;
    assert_eq!(version, http::Version::HTTP_2);
    let expected = format!("h3=\":{}\"; ma=86400", secure.port());
    assert_eq!(
        headers.get("alt-svc").map(|v| v.to_str().unwrap()),
        Some(expected.as_str())
    );
    let reply = common::get(plain, "/static/style.css").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/css"));
    assert_eq!(common::get(plain, "/orders").await.status, StatusCode::OK);
    running.shutdown().await;
}
