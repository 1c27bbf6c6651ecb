//! The client's address behind load balancers, on real sockets through the real binary, whose
//! access log says whom each request was taken from: X-Forwarded-For and Forwarded believed
//! only from trusted peers, the PROXY protocol v1 and v2 (before HTTP/1.1, HTTP/2 and a TLS
//! handshake), a missing or malformed PROXY header closing the connection, a reload changing
//! the trusted ranges for new connections, and `gatehouse check` on bad ranges.

mod common;

use bytes::Bytes;
use common::process::{Process, run_gatehouse};
use common::{Reply, TestUpstream, WAIT, metric_sample};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(upstream: SocketAddr, listener: &str) -> String {
    format!(
        r#"
[log]
level = "info"
access = "json"

[admin]
bind = "127.0.0.1:0"

[reload]
watch = false

[limits]
header_read_timeout = "1s"

[[listener]]
name = "edge"
bind = "127.0.0.1:0"
{listener}

[[route]]
upstream = "app"

[upstream.app]
servers = ["{upstream}"]
"#
    )
}

/// The real binary with one listener, and the upstream behind it.
struct Edge {
    process: Process,
    proxy: SocketAddr,
    admin: SocketAddr,
    upstream: TestUpstream,
}

impl Edge {
    async fn start(test: &str, listener: &str) -> Self {
        let upstream = TestUpstream::named("app").await;
        let mut process =
            Process::spawn(&config(upstream.addr, listener), &format!("real-ip-{test}"));
        let proxy = process.addr_logged("listening").await;
        let admin = process.addr_logged("admin listening").await;
        Self {
            process,
            proxy,
            admin,
            upstream,
        }
    }

    /// The client the access log names for the request with `request_id`.
    async fn logged_client(&mut self, request_id: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.process.all_lines_so_far().await;
            let found = lines
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| {
                    line["target"] == "gatehouse::access" && line["request_id"] == request_id
                });
            if let Some(line) = found {
                return line["client"].as_str().expect("a client field").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no access log line for {request_id}:\n{}",
                lines.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The X-Forwarded-For the upstream received with the request `request_id`.
    fn forwarded_for_upstream(&self, request_id: &str) -> String {
        let received = self.upstream.received();
        let request = received
            .iter()
            .find(|r| {
                r.headers
                    .get("x-request-id")
                    .is_some_and(|v| v == request_id)
            })
            .unwrap_or_else(|| panic!("the upstream got no request {request_id}"));
        let lines: Vec<&str> = request
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        lines.join(", ")
    }

    async fn closed_for(&self, reason: &str) -> f64 {
        let metrics = common::get(self.admin, "/metrics").await.text();
        metric_sample(
            &metrics,
            "gatehouse_connections_closed_total",
            &[("listener", "edge"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    }

    /// Waits until `reason` has counted `at_least` closed connections.
    async fn wait_closed_for(&self, reason: &str, at_least: f64) {
        let deadline = Instant::now() + WAIT;
        while self.closed_for(reason).await < at_least {
            assert!(
                Instant::now() < deadline,
                "no {at_least} connections closed for {reason}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrites the config with `listener` and reloads it through the admin listener.
    async fn reload(&mut self, listener: &str) {
        std::fs::write(
            self.process.config_path(),
            config(self.upstream.addr, listener),
        )
        .unwrap();
        let mut admin = common::Client::connect(self.admin).await;
        let reply = admin
            .send(
                Request::post("/reload")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let report: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(report["changed"], true, "{report}");
    }
}

/// A GET with `X-Request-Id: request_id` and `headers`.
fn request(request_id: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get("/orders")
        .header("host", "shop.example")
        .header("x-request-id", request_id);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

/// One HTTP/1.1 request on `stream` (whatever came before it on the wire).
async fn http1_on<S>(stream: S, request: Request<Full<Bytes>>) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    reply(tokio::time::timeout(WAIT, sender.send_request(request)).await).await
}

/// One HTTP/2 request on `stream`.
async fn h2_on<S>(stream: S, request: Request<Full<Bytes>>) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    reply(tokio::time::timeout(WAIT, sender.send_request(request)).await).await
}

async fn reply(
    response: Result<
        Result<http::Response<hyper::body::Incoming>, hyper::Error>,
        tokio::time::error::Elapsed,
    >,
) -> Reply {
    let response = response.expect("a reply in time").expect("a response");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("the body").to_bytes(),
    }
}

async fn connect_with(proxy: SocketAddr, header: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(header).await.unwrap();
    stream
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol v2 PROXY command over TCP, with `tlvs` after the addresses.
fn v2_header(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("one family per header"),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block.extend_from_slice(tlvs);
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, family]);
    header.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    header.extend_from_slice(&block);
    header
}

/// A PROXY protocol v2 LOCAL command (a balancer's health check).
fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_trusted_peer_x_forwarded_for_names_the_client() {
    let mut edge = Edge::start("xff-trusted", r#"trusted_proxies = ["127.0.0.1/32"]"#).await;
    let mut client = common::Client::connect(edge.proxy).await;
    let forwarded = [("x-forwarded-for", "198.51.100.9, 203.0.113.7")];
    assert_eq!(client.send(request("xff-1", &forwarded)).await.status, 200);
    // The rightmost untrusted entry is the client; the upstream gets the chain with this hop's
    // peer appended, as nginx's $proxy_add_x_forwarded_for.
    assert_eq!(edge.logged_client("xff-1").await, "203.0.113.7");
    assert_eq!(
        edge.forwarded_for_upstream("xff-1"),
        "198.51.100.9, 203.0.113.7, 127.0.0.1"
    );
    // The next request on the same connection names its own client.
    assert_eq!(client.send(request("xff-2", &[])).await.status, 200);
    assert_eq!(edge.logged_client("xff-2").await, "127.0.0.1");
    // Over HTTP/2 alike.
    let stream = TcpStream::connect(edge.proxy).await.unwrap();
    let h2 = h2_on(
        stream,
        request("xff-h2", &[("x-forwarded-for", "192.0.2.44")]),
    )
    .await;
    assert_eq!(h2.status, 200);
    assert_eq!(edge.logged_client("xff-h2").await, "192.0.2.44");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_trusted_peer_forwarded_names_the_client() {
    let listener = r#"trusted_proxies = ["127.0.0.1"]
real_ip_header = "forwarded""#;
    let mut edge = Edge::start("forwarded", listener).await;
    let forwarded = [
        ("forwarded", "for=198.51.100.9"),
        ("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https"),
        ("x-forwarded-for", "192.0.2.1"),
    ];
    let reply = common::Client::connect(edge.proxy)
        .await
        .send(request("fwd-1", &forwarded))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(edge.logged_client("fwd-1").await, "2001:db8:cafe::17");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_an_untrusted_peer_nothing_changes_the_client() {
    let listener = r#"trusted_proxies = ["10.0.0.0/8"]
proxy_protocol = true"#;
    let mut edge = Edge::start("untrusted", listener).await;
    // 127.0.0.1 is not trusted: neither its PROXY header nor its X-Forwarded-For is believed.
    let stream = connect_with(edge.proxy, b"PROXY TCP4 10.1.1.1 127.0.0.1 4000 80\r\n").await;
    let spoofed = [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.8"),
    ];
    assert_eq!(
        http1_on(stream, request("spoof-1", &spoofed)).await.status,
        200
    );
    assert_eq!(edge.logged_client("spoof-1").await, "127.0.0.1");
    // The received chain still goes upstream, with the real peer after it.
    assert_eq!(
        edge.forwarded_for_upstream("spoof-1"),
        "203.0.113.7, 127.0.0.1"
    );
    let stream = connect_with(
        edge.proxy,
        &v2_header(
            "10.2.2.2:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
            &[],
        ),
    )
    .await;
    assert_eq!(
        h2_on(stream, request("spoof-h2", &spoofed)).await.status,
        200
    );
    assert_eq!(edge.logged_client("spoof-h2").await, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let listener = r#"trusted_proxies = ["127.0.0.1"]
proxy_protocol = true
real_ip_header = "proxy_protocol""#;
    let mut edge = Edge::start("proxy-protocol", listener).await;
    let destination: SocketAddr = "127.0.0.1:80".parse().unwrap();

    let stream = connect_with(edge.proxy, b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 80\r\n").await;
    // Only the PROXY header is read: an X-Forwarded-For from the client changes nothing.
    let asked = request("pp-v1", &[("x-forwarded-for", "203.0.113.7")]);
    assert_eq!(http1_on(stream, asked).await.status, 200);
    assert_eq!(edge.logged_client("pp-v1").await, "192.0.2.7");
    assert_eq!(
        edge.forwarded_for_upstream("pp-v1"),
        "203.0.113.7, 192.0.2.7"
    );

    let stream = connect_with(edge.proxy, b"PROXY TCP6 2001:db8::7 ::1 4711 80\r\n").await;
    assert_eq!(http1_on(stream, request("pp-v1-6", &[])).await.status, 200);
    assert_eq!(edge.logged_client("pp-v1-6").await, "2001:db8::7");

    // Version 2 with a TLV (AWS's VPC endpoint id), then HTTP/2 by prior knowledge.
    let tlv = b"\xea\x00\x0d\x01vpce-0123456";
    let header = v2_header("198.51.100.23:40000".parse().unwrap(), destination, tlv);
    let stream = connect_with(edge.proxy, &header).await;
    assert_eq!(h2_on(stream, request("pp-v2", &[])).await.status, 200);
    assert_eq!(edge.logged_client("pp-v2").await, "198.51.100.23");
    assert_eq!(edge.forwarded_for_upstream("pp-v2"), "198.51.100.23");

    // A balancer's health check (LOCAL) and UNKNOWN keep the socket's address.
    let stream = connect_with(edge.proxy, &v2_local()).await;
    assert_eq!(http1_on(stream, request("pp-local", &[])).await.status, 200);
    assert_eq!(edge.logged_client("pp-local").await, "127.0.0.1");
    let stream = connect_with(edge.proxy, b"PROXY UNKNOWN\r\n").await;
    assert_eq!(
        http1_on(stream, request("pp-unknown", &[])).await.status,
        200
    );
    assert_eq!(edge.logged_client("pp-unknown").await, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_protocol_source_is_asked_about_x_forwarded_for_next() {
    // A CDN (192.0.2.0/24) in front of a TCP balancer (127.0.0.1) that speaks the PROXY
    // protocol: the balancer names the CDN, the CDN's X-Forwarded-For names the client.
    let listener = r#"trusted_proxies = ["127.0.0.1", "192.0.2.0/24"]
proxy_protocol = true"#;
    let mut edge = Edge::start("proxy-then-xff", listener).await;
    let stream = connect_with(edge.proxy, b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 80\r\n").await;
    let asked = request("chain-1", &[("x-forwarded-for", "203.0.113.7")]);
    assert_eq!(http1_on(stream, asked).await.status, 200);
    assert_eq!(edge.logged_client("chain-1").await, "203.0.113.7");
    assert_eq!(
        edge.forwarded_for_upstream("chain-1"),
        "203.0.113.7, 192.0.2.7"
    );
    // A PROXY source outside the ranges is the client, whatever its header says.
    let stream = connect_with(
        edge.proxy,
        b"PROXY TCP4 198.51.100.1 127.0.0.1 56324 80\r\n",
    )
    .await;
    let asked = request("chain-2", &[("x-forwarded-for", "203.0.113.7")]);
    assert_eq!(http1_on(stream, asked).await.status, 200);
    assert_eq!(edge.logged_client("chain-2").await, "198.51.100.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_proxy_header_closes_the_connection() {
    let listener = r#"trusted_proxies = ["127.0.0.1"]
proxy_protocol = true"#;
    let edge = Edge::start("proxy-malformed", listener).await;
    let refused: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        b"PROXY TCP4 192.0.2.777 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c",
    ];
    for bytes in refused {
        let mut stream = connect_with(edge.proxy, bytes).await;
        let answer = common::read_until_closed(&mut stream, WAIT).await;
        assert!(answer.is_empty(), "no answer, just the close: {answer:?}");
    }
    edge.wait_closed_for("proxy_protocol", 4.0).await;
    // A header that never ends is cut at header_read_timeout.
    let mut stream = connect_with(edge.proxy, b"PROXY TCP4 192.0.2.7").await;
    let started = Instant::now();
    assert!(
        common::read_until_closed(&mut stream, WAIT)
            .await
            .is_empty()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    edge.wait_closed_for("header_timeout", 1.0).await;
    assert_eq!(edge.upstream.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_trusted_proxies_of_new_connections() {
    let mut edge = Edge::start("reload", r#"trusted_proxies = ["10.0.0.0/8"]"#).await;
    let forwarded = [("x-forwarded-for", "203.0.113.7")];
    let mut before = common::Client::connect(edge.proxy).await;
    assert_eq!(
        before.send(request("reload-1", &forwarded)).await.status,
        200
    );
    assert_eq!(edge.logged_client("reload-1").await, "127.0.0.1");

    edge.reload(r#"trusted_proxies = ["10.0.0.0/8", "127.0.0.0/8"]"#)
        .await;
    let mut after = common::Client::connect(edge.proxy).await;
    assert_eq!(
        after.send(request("reload-2", &forwarded)).await.status,
        200
    );
    assert_eq!(edge.logged_client("reload-2").await, "203.0.113.7");
    // A connection open before keeps the listener's settings it started with.
    assert_eq!(
        before.send(request("reload-3", &forwarded)).await.status,
        200
    );
    assert_eq!(edge.logged_client("reload-3").await, "127.0.0.1");

    // And back: trusting nothing, the listener reads no header at all.
    edge.reload("").await;
    let mut last = common::Client::connect(edge.proxy).await;
    assert_eq!(last.send(request("reload-4", &forwarded)).await.status, 200);
    assert_eq!(edge.logged_client("reload-4").await, "127.0.0.1");
}

// ---------------------------------------------------------------------------------------
// PROXY protocol before a TLS handshake.

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use std::path::PathBuf;
    use tokio_rustls::TlsConnector;

    /// A CA and a certificate for `localhost` it signed, written as PEM files; the client
    /// config that trusts the CA.
    fn pki(test: &str) -> (String, String, Arc<ClientConfig>) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("real-ip-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let mut client = ClientConfig::builder_with_provider(gatehouse::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        (
            cert_file.to_string_lossy().into_owned(),
            key_file.to_string_lossy().into_owned(),
            Arc::new(client),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_header_comes_before_the_tls_handshake() {
        let (cert, key, client) = pki("tls");
        let listener = format!(
            r#"trusted_proxies = ["127.0.0.1"]
proxy_protocol = true
tls = {{ certs = [ {{ cert = "{cert}", key = "{key}" }} ] }}"#
        );
        let mut edge = Edge::start("tls", &listener).await;
        let destination: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let header = v2_header(
            "[2001:db8::9]:443".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
            &[],
        );
        for (id, header, expected) in [
            (
                "tls-v1",
                b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 443\r\n".to_vec(),
                "192.0.2.7",
            ),
            ("tls-v2", header, "2001:db8::9"),
            (
                "tls-v2-4",
                v2_header("198.51.100.5:1".parse().unwrap(), destination, &[]),
                "198.51.100.5",
            ),
        ] {
            let stream = connect_with(edge.proxy, &header).await;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = tokio::time::timeout(
                WAIT,
                TlsConnector::from(Arc::clone(&client)).connect(name, stream),
            )
            .await
            .expect("a handshake in time")
            .expect("a handshake");
            // ALPN h2: HTTP/2 over TLS.
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            assert_eq!(h2_on(tls, request(id, &[])).await.status, 200);
            assert_eq!(edge.logged_client(id).await, expected);
        }
        // Without the header, the TLS ClientHello is not one.
        let stream = TcpStream::connect(edge.proxy).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let refused = tokio::time::timeout(WAIT, TlsConnector::from(client).connect(name, stream))
            .await
            .expect("an answer in time");
        assert!(refused.is_err(), "a handshake without the PROXY header");
        edge.wait_closed_for("proxy_protocol", 1.0).await;
    }
}

// ---------------------------------------------------------------------------------------
// The config check.

#[test]
fn check_reports_bad_ranges_and_proxy_protocol_without_trusted_proxies() {
    let text = r#"[admin]
bind = ""

[[listener]]
name = "edge"
bind = "127.0.0.1:0"
trusted_proxies = ["10.0.0.0/8", "10.0.0.1/8", "bogus"]

[[listener]]
name = "nlb"
bind = "127.0.0.1:0"
proxy_protocol = true

[[listener]]
name = "plain"
bind = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]
real_ip_header = "proxy_protocol"

[[listener]]
name = "typo"
bind = "127.0.0.1:0"
real_ip_header = "x-real-ip"

[[route]]
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:1"]
"#;
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("real-ip-check-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let outcome = run_gatehouse(&["check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    let place = |marker: &str| {
        let offset = text.find(marker).unwrap();
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |p| p + 1) + 1;
        format!("{}:{line}:{column}", path.display())
    };
    let stderr = &outcome.stderr;
    for (at, says) in [
        (
            place("\"10.0.0.1/8\""),
            "listener[0].trusted_proxies[1]: \"10.0.0.1/8\" has bits set past its /8 prefix; did you mean \"10.0.0.0/8\"?",
        ),
        (
            place("\"bogus\""),
            "listener[0].trusted_proxies[2]: invalid address range \"bogus\"",
        ),
        (
            place("true"),
            "listener[1].proxy_protocol: a PROXY protocol header is only believed from trusted_proxies",
        ),
        (
            place("\"proxy_protocol\""),
            "listener[2].real_ip_header: \"proxy_protocol\" needs proxy_protocol = true",
        ),
    ] {
        assert!(
            stderr.contains(&format!("{at}: {says}")),
            "missing {at}: {says}\nin:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&place("\"x-real-ip\"")) && stderr.contains("x-forwarded-for"),
        "an unknown header is refused where it is written, with the choices:\n{stderr}"
    );
}

#[test]
fn the_readme_example_passes_the_check() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("### Behind a load balancer")
        .expect("the README section")
        .1;
    let example = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a toml example in the section")
        .0;
    let text = format!(
        "[admin]\nbind = \"\"\n{example}\n[[route]]\nupstream = \"app\"\n\n[upstream.app]\nservers = [\"127.0.0.1:1\"]\n"
    );
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("real-ip-readme-{}.toml", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let outcome = run_gatehouse(&["check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(outcome.code, Some(0), "{text}\n{}", outcome.stderr);
}
