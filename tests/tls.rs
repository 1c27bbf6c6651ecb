//! TLS end to end: rcgen-made CA and certificates, real handshakes with a rustls client.
//! SNI, ALPN, resumption, rotation on disk under load, bad files at check and reload,
//! redirect and HSTS, verified TLS to upstreams, gRPC-style trailers through HTTP/2, mTLS,
//! metrics and /status, and `gatehouse cert`.

mod common;

use common::pki::{Issued, Pki};

use bytes::Bytes;
use common::process::{Process, run_gatehouse};
use common::{TestUpstream, WAIT, metric_sample, start_gatehouse};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};

fn client_config(roots: RootCertStore, alpn: &[&str]) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

fn client_config_with_cert(roots: RootCertStore, cert: &Issued) -> Arc<ClientConfig> {
    let chain = vec![cert.der.clone()];
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let mut config = ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::clone(config)).connect(name, tcp),
    )
    .await
    .expect("handshake within the test deadline")
}

fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

/// What an HTTPS request got back.
struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

/// One request on an established TLS connection, HTTP/2 if ALPN chose it.
async fn request_on(
    stream: TlsStream<TcpStream>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, hyper::Error> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    };
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://{host}{path}"))
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn https_get(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str, path: &str) -> Answer {
    let stream = tls_connect(addr, config, name)
        .await
        .expect("TLS handshake");
    tokio::time::timeout(WAIT, request_on(stream, get(name, path)))
        .await
        .expect("answer in time")
        .expect("an HTTPS answer")
}

fn tls_listener(certs: &[&Issued], extra: &str) -> String {
    let pairs: Vec<String> = certs
        .iter()
        .map(|c| format!("{{ cert = {:?}, key = {:?} }}", c.cert, c.key))
        .collect();
    format!(
        "[[listener]]\nname = \"secure\"\nbind = \"127.0.0.1:0\"\ntls = {{ certs = [ {} ]{extra} }}\n",
        pairs.join(", ")
    )
}

fn config(listeners: &str, upstream: &str, admin: bool) -> String {
    let admin = if admin { "127.0.0.1:0" } else { "" };
    format!(
        "[admin]\nbind = \"{admin}\"\n\n{listeners}\n[[route]]\nupstream = \"app\"\n\n[upstream.app]\n{upstream}\n"
    )
}

fn servers(addr: SocketAddr) -> String {
    format!("servers = [\"{addr}\"]")
}

async fn admin_get(running: &gatehouse::app::Running, path: &str) -> String {
    common::get(running.admin_addr.expect("admin"), path)
        .await
        .text()
}

// ---------------------------------------------------------------------------------------
// An origin server over TLS or plain TCP, HTTP/1.1 or HTTP/2 (auto), answering like a gRPC
// service: the request body echoed, then trailers.

/// A body of one data frame followed by trailers.
struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

#[derive(Clone, Debug)]
struct Seen {
    version: Version,
    headers: HeaderMap,
}

struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

async fn origin(tls: Option<&Issued>) -> Origin {
    origin_verifying_clients(tls, None).await
}

/// An origin that requires client certificates from `client_roots` when given.
async fn origin_verifying_clients(
    tls: Option<&Issued>,
    client_roots: Option<RootCertStore>,
) -> Origin {
    let acceptor = tls.map(|issued| {
        let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(gatehouse::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_roots {
            Some(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    gatehouse::tls::provider(),
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(vec![issued.der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = Arc::clone(&seen);
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let (parts, body) = request.into_parts();
                        record.lock().unwrap().push(Seen {
                            version: parts.version,
                            headers: parts.headers.clone(),
                        });
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        trailers.insert("grpc-message", "echoed".parse().unwrap());
                        let response = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(WithTrailers {
                                data: Some(body),
                                trailers: Some(trailers),
                            })
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    Origin {
        addr,
        seen,
        connections,
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sni_picks_the_certificate_by_exact_and_wildcard_names() {
    let pki = Pki::new("sni");
    let orders = pki.issue_with("orders", &["orders.example.com", "127.0.0.1"], |p| {
        p.not_after = rcgen::date_time_ymd(2031, 1, 1);
    });
    let admin = pki.issue("admin", &["admin.example.com"]);
    let shop = pki.issue("shop", &["*.shop.example.com"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(
        &tls_listener(&[&orders, &admin, &shop], ""),
        &servers(app.addr),
        true,
    ))
    .await;
    let addr = running.listener_addrs[0];
    let client = client_config(pki.roots(), &["http/1.1"]);

    for (name, expected) in [
        ("orders.example.com", &orders),
        ("admin.example.com", &admin),
        ("api.shop.example.com", &shop),
        // An IP address sends no SNI: the first certificate answers.
        ("127.0.0.1", &orders),
    ] {
        let stream = tls_connect(addr, &client, name).await.expect("handshake");
        assert!(
            peer_cert(&stream) == expected.der,
            "{name} got the wrong certificate"
        );
        let answer = request_on(stream, get(name, "/")).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{name}");
    }
    // A name no certificate has: the first one answers (and the client rightly rejects it).
    let mismatch = tls_connect(addr, &client, "unknown.example.org").await;
    assert!(
        mismatch.is_err(),
        "the first certificate is not valid for that name"
    );

    let metrics = admin_get(&running, "/metrics").await;
    let ok13 = metric_sample(
        &metrics,
        "gatehouse_tls_handshakes_total",
        &[("listener", "secure"), ("version", "1.3"), ("result", "ok")],
    );
    assert!(ok13.unwrap_or(0.0) >= 4.0, "handshakes counted: {ok13:?}");
    let failed = metric_sample(
        &metrics,
        "gatehouse_tls_handshakes_total",
        &[
            ("listener", "secure"),
            ("version", "unknown"),
            ("result", "error"),
        ],
    );
    assert_eq!(failed, Some(1.0), "the rejected handshake is counted");
    let expiry = metric_sample(
        &metrics,
        "gatehouse_tls_certificate_expiry_timestamp_seconds",
        &[("listener", "secure"), ("name", "orders.example.com")],
    );
    let expected = rcgen::date_time_ymd(2031, 1, 1).unix_timestamp() as f64;
    assert_eq!(expiry, Some(expected));
    assert!(
        metrics.contains("gatehouse_tls_handshake_duration_seconds_count{listener=\"secure\"}")
    );

    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&running, "/status").await).unwrap();
    let certs = status["certificates"]
        .as_array()
        .expect("certificates listed");
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[0]["listener"], "secure");
    assert_eq!(certs[0]["names"][0], "orders.example.com");
    assert_eq!(certs[0]["not_after"], expected as i64);
    assert_eq!(certs[2]["names"][0], "*.shop.example.com");
    running.shutdown().await;
}

#[tokio::test]
async fn alpn_serves_h2_and_http11_with_forwarded_proto_and_resumption() {
    let pki = Pki::new("alpn");
    let site = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(
        &tls_listener(&[&site], ""),
        &servers(app.addr),
        false,
    ))
    .await;
    let addr = running.listener_addrs[0];

    let h2 = client_config(pki.roots(), &["h2", "http/1.1"]);
    let stream = tls_connect(addr, &h2, "localhost").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let answer = request_on(stream, get("localhost", "/two")).await.unwrap();
    assert_eq!(
        (answer.status, answer.version),
        (StatusCode::OK, Version::HTTP_2)
    );
    assert_eq!(answer.body, "app");

    let h1 = client_config(pki.roots(), &["http/1.1"]);
    let stream = tls_connect(addr, &h1, "localhost").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = request_on(stream, get("localhost", "/one")).await.unwrap();
    assert_eq!(
        (answer.status, answer.version),
        (StatusCode::OK, Version::HTTP_11)
    );

    // The second connection of a client resumes its session (the ticket came with the first).
    let stream = tls_connect(addr, &h1, "localhost").await.unwrap();
    assert_eq!(
        stream.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    drop(stream);

    let received = app.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.headers["x-forwarded-proto"], "https");
    }
    running.shutdown().await;
}

/// Keeps replacing `path` atomically (write aside, rename over), as certbot does.
fn replace_file(from: &str, to: &str) {
    let aside = format!("{to}.new");
    std::fs::copy(from, &aside).unwrap();
    std::fs::rename(&aside, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_disk_under_load_without_a_failed_request() {
    let pki = Pki::new("rotate");
    let old = pki.issue("site", &["localhost"]);
    let new = pki.issue("next", &["localhost"]);
    // The files gatehouse reads start as the old certificate.
    let served = Issued {
        cert: pki.path("served.pem"),
        key: pki.path("served-key.pem"),
        der: old.der.clone(),
    };
    replace_file(&old.cert, &served.cert);
    replace_file(&old.key, &served.key);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(
        &tls_listener(&[&served], ""),
        &servers(app.addr),
        false,
    ))
    .await;
    let addr = running.listener_addrs[0];
    let client = client_config(pki.roots(), &["http/1.1"]);

    // A keep-alive connection made before the rotation.
    let before = tls_connect(addr, &client, "localhost").await.unwrap();
    assert!(peer_cert(&before) == old.der);
    let (mut kept, connection) = hyper::client::conn::http1::handshake(TokioIo::new(before))
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(
        kept.send_request(get("localhost", "/"))
            .await
            .unwrap()
            .status(),
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, client) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&client),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // A new handshake each time, accepting either certificate.
                    let result = match tls_connect(addr, &client, "localhost").await {
                        Ok(stream) => request_on(stream, get("localhost", "/load")).await.ok(),
                        Err(_) => None,
                    };
                    match result {
                        Some(answer) if answer.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // Load running on the old certificate first.
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok.load(Ordering::Relaxed) < 20 {
        assert!(tokio::time::Instant::now() < deadline, "load did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    replace_file(&new.key, &served.key);
    replace_file(&new.cert, &served.cert);
    // A resumed session shows the certificate it began with: look with full handshakes.
    let mut fresh = (*client_config(pki.roots(), &["http/1.1"])).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let fresh = Arc::new(fresh);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stream = tls_connect(addr, &fresh, "localhost").await.unwrap();
        if peer_cert(&stream) == new.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new handshakes never saw the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_rotation = ok.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok.load(Ordering::Relaxed) < at_rotation + 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "load stalled after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    // The connection from before still works, on its old session.
    assert_eq!(
        kept.send_request(get("localhost", "/"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation"
    );
    assert!(ok.load(Ordering::Relaxed) >= 40);
    running.shutdown().await;
}

fn check_errors(text: &str) -> String {
    match gatehouse::config::load_str(Path::new("tls.toml"), text) {
        Ok(_) => panic!("config with bad TLS files accepted"),
        Err(errors) => errors.to_string(),
    }
}

#[tokio::test]
async fn bad_certificates_and_keys_are_errors_naming_the_file() {
    let pki = Pki::new("bad");
    let good = pki.issue("good", &["localhost"]);
    let other = pki.issue("other", &["localhost"]);
    let expired = pki.issue_with("expired", &["old.example.com"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let missing = pki.path("missing.pem");
    let pair = |cert: &str, key: &str| format!("{{ cert = {cert:?}, key = {key:?} }}");
    let text = format!(
        "[[listener]]\nname = \"secure\"\nbind = \"127.0.0.1:0\"\ntls = {{ certs = [\n  {},\n  {},\n  {},\n  {},\n  {},\n] }}\n[[route]]\nupstream = \"app\"\n[upstream.app]\nservers = [\"127.0.0.1:1\"]\n",
        pair(&good.cert, &good.key),
        pair(&expired.cert, &expired.key),
        pair(&good.cert, &other.key),
        pair(&garbage, &good.key),
        pair(&missing, &good.key),
    );
    let errors = check_errors(&text);
    assert_eq!(
        errors.lines().count(),
        4,
        "one error per bad pair:\n{errors}"
    );
    let line = |n: usize| {
        errors
            .lines()
            .find(|l| l.starts_with(&format!("tls.toml:{n}:")))
            .unwrap_or_else(|| panic!("no error on line {n}:\n{errors}"))
            .to_owned()
    };
    let expired_error = line(6);
    assert!(expired_error.contains(&expired.cert) && expired_error.contains("expired"));
    let mismatch = line(7);
    assert!(mismatch.contains(&other.key) && mismatch.contains("does not belong"));
    assert!(line(8).contains(&garbage) && line(8).contains("no certificate"));
    assert!(line(9).contains(&missing));

    // The same errors from the binary's `check`.
    let file = pki.path("bad.toml");
    std::fs::write(&file, &text).unwrap();
    let outcome = run_gatehouse(&["check", "--config", &file]);
    assert_eq!(outcome.code, Some(1));
    assert!(outcome.stderr.contains(&expired.cert), "{}", outcome.stderr);

    // At reload, the old certificates keep serving: a bad config edit, then a bad file on disk.
    let served = Issued {
        cert: pki.path("served.pem"),
        key: pki.path("served-key.pem"),
        der: good.der.clone(),
    };
    replace_file(&good.cert, &served.cert);
    replace_file(&good.key, &served.key);
    let app = TestUpstream::named("app").await;
    let config_file = pki.path("gatehouse.toml");
    let good_text = config(&tls_listener(&[&served], ""), &servers(app.addr), false)
        .replace("[admin]", "[reload]\nwatch = false\n[admin]");
    std::fs::write(&config_file, &good_text).unwrap();
    let running = gatehouse::app::Running::start_file(Path::new(&config_file))
        .await
        .unwrap();
    let addr = running.listener_addrs[0];
    let client = client_config(pki.roots(), &["http/1.1"]);
    std::fs::write(&config_file, good_text.replace(&served.key, &other.key)).unwrap();
    let report = running.reloader.reload("test").await;
    assert!(!report.ok);
    assert!(report.errors[0].contains(&other.key), "{:?}", report.errors);
    assert!(peer_cert(&tls_connect(addr, &client, "localhost").await.unwrap()) == good.der);

    std::fs::write(&served.cert, "truncated by a failed renewal\n").unwrap();
    let report = running.reloader.reload_certificates("test").await;
    assert!(!report.ok);
    assert!(
        report.errors[0].contains(&served.cert),
        "{:?}",
        report.errors
    );
    let answer = https_get(addr, &client, "localhost", "/").await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "old certificate still serves"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn plain_listener_redirects_to_https_and_tls_responses_carry_hsts() {
    let pki = Pki::new("redirect");
    let site = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let listeners = format!(
        "{}hsts = \"max-age=31536000\"\n\n[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\nredirect_https = \"https://{{host}}:8443{{path}}\"\nhsts = \"max-age=31536000\"\n",
        tls_listener(&[&site], "")
    );
    let running = start_gatehouse(&config(&listeners, &servers(app.addr), true)).await;
    let (secure, plain) = (running.listener_addrs[0], running.listener_addrs[1]);

    let mut client = common::Client::connect(plain).await;
    let reply = client
        .send(
            Request::get("/orders/7?full=1")
                .header("host", "shop.example:8080")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        Some("https://shop.example:8443/orders/7?full=1")
    );
    assert_eq!(
        reply.header("strict-transport-security"),
        None,
        "never over plain HTTP"
    );
    assert!(
        app.received().is_empty(),
        "a redirect goes nowhere upstream"
    );
    assert!(
        reply.header("x-request-id").is_some(),
        "a redirect carries a request id like every answer"
    );
    // Counted like every answer (no route: route="none"), once its body has been sent.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let metrics = admin_get(&running, "/metrics").await;
        let redirects = metric_sample(
            &metrics,
            "gatehouse_http_requests_total",
            &[("route", "none"), ("code", "308")],
        );
        if redirects == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redirect not counted: {redirects:?}\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let answer = https_get(
        secure,
        &client_config(pki.roots(), &["h2"]),
        "localhost",
        "/",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers["strict-transport-security"],
        "max-age=31536000"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn upstream_tls_verifies_with_the_configured_ca_and_name_and_speaks_h2() {
    let pki = Pki::new("upstream");
    let payments = pki.issue("payments", &["payments.internal"]);
    let site = pki.issue("site", &["localhost"]);
    let backend = origin(Some(&payments)).await;
    let upstream = format!(
        "servers = [\"https://{}\"]\ntls = {{ ca = {:?}, server_name = \"payments.internal\" }}\nhttp2 = true\n",
        backend.addr,
        pki.ca_file()
    );
    let running = start_gatehouse(&config(&tls_listener(&[&site], ""), &upstream, false)).await;
    let client = client_config(pki.roots(), &["http/1.1"]);
    let answer = https_get(running.listener_addrs[0], &client, "localhost", "/pay").await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_2, "h2 negotiated by ALPN");
    running.shutdown().await;

    // Without the CA (system roots only), the test CA is unknown: 502.
    let upstream = format!(
        "servers = [\"https://{}\"]\ntls = {{ server_name = \"payments.internal\" }}\n",
        backend.addr
    );
    let running = start_gatehouse(&config(&tls_listener(&[&site], ""), &upstream, false)).await;
    let answer = https_get(running.listener_addrs[0], &client, "localhost", "/pay").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    running.shutdown().await;
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        1,
        "nothing reached it unverified"
    );
}

#[tokio::test]
async fn upstream_with_the_wrong_name_is_a_502_with_a_clear_log() {
    let pki = Pki::new("wrong-name");
    let payments = pki.issue("payments", &["payments.internal"]);
    let backend = origin(Some(&payments)).await;
    let text = format!(
        "[log]\naccess = \"json\"\n[reload]\nwatch = false\n[admin]\nbind = \"\"\n[[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"payments\"\n[upstream.payments]\nservers = [\"https://{}\"]\nretries = 0\ntls = {{ ca = {:?}, server_name = \"billing.internal\" }}\n",
        backend.addr,
        pki.ca_file()
    );
    let mut process = Process::spawn(&text, "tls-wrong-name");
    let addr = process.addr_logged("listening").await;
    let reply = common::get(addr, "/pay").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = process.all_lines_so_far().await;
        if let Some(line) = lines.iter().find(|l| l.contains("upstream request failed")) {
            assert!(line.contains("TLS handshake failed"), "{line}");
            assert!(
                line.contains("certificate not valid for name")
                    && line.contains("billing.internal"),
                "{line}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure logged:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backend.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn grpc_style_h2_request_with_trailers_passes_end_to_end() {
    let pki = Pki::new("grpc");
    let site = pki.issue("site", &["localhost"]);
    // An h2c origin (prior knowledge) behind a TLS listener speaking h2 by ALPN.
    let backend = origin(None).await;
    let upstream = format!("servers = [\"{}\"]\nhttp2 = true\n", backend.addr);
    let running = start_gatehouse(&config(&tls_listener(&[&site], ""), &upstream, false)).await;
    let client = client_config(pki.roots(), &["h2"]);
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    for _ in 0..2 {
        let stream = tls_connect(running.listener_addrs[0], &client, "localhost")
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::post("https://localhost/echo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(message.clone()))
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "echoed");
        assert_eq!(collected.to_bytes(), message);
    }
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection upstream, shared by both requests"
    );
    for request in &seen {
        assert_eq!(request.version, Version::HTTP_2);
        assert_eq!(request.headers["te"], "trailers");
        assert_eq!(request.headers["x-forwarded-proto"], "https");
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "via",
        ] {
            assert_eq!(request.headers.get_all(name).iter().count(), 1, "{name}");
        }
        assert_eq!(request.headers["via"], "2 gatehouse");
    }
    running.shutdown().await;
}

/// Whether a listener requiring client certificates turns `client` away. TLS 1.3 finishes the
/// client's side of the handshake first: the refusal shows at the latest on the request.
async fn refused(addr: SocketAddr, client: &Arc<ClientConfig>) -> bool {
    match tls_connect(addr, client, "localhost").await {
        Err(_) => true,
        Ok(stream) => tokio::time::timeout(WAIT, request_on(stream, get("localhost", "/")))
            .await
            .expect("refused in time")
            .is_err(),
    }
}

#[tokio::test]
async fn client_certificates_are_required_when_client_ca_is_set() {
    let pki = Pki::new("mtls");
    let site = pki.issue("site", &["localhost"]);
    let alice = pki.issue("alice", &["alice.clients"]);
    let stranger_pki = Pki::new("mtls-stranger");
    let stranger = stranger_pki.issue("stranger", &["stranger.clients"]);
    let app = TestUpstream::named("app").await;
    let extra = format!(", client_ca = {:?}", pki.ca_file());
    let running = start_gatehouse(&config(
        &tls_listener(&[&site], &extra),
        &servers(app.addr),
        false,
    ))
    .await;
    let addr = running.listener_addrs[0];

    let with_cert = client_config_with_cert(pki.roots(), &alice);
    assert_eq!(
        https_get(addr, &with_cert, "localhost", "/").await.status,
        StatusCode::OK
    );

    for (who, client) in [
        ("no certificate", client_config(pki.roots(), &["http/1.1"])),
        (
            "another CA's certificate",
            client_config_with_cert(pki.roots(), &stranger),
        ),
    ] {
        assert!(refused(addr, &client).await, "{who} was let in");
    }
    assert_eq!(app.received().len(), 1);
    running.shutdown().await;
}

#[test]
fn gatehouse_cert_writes_a_usable_self_signed_certificate() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-cert-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_string_lossy().into_owned();
    let outcome = run_gatehouse(&["cert", "--hosts", "localhost,127.0.0.1", "--out", &out]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
    let cert = dir.join("cert.pem").to_string_lossy().into_owned();
    let key = dir.join("key.pem").to_string_lossy().into_owned();
    let loaded = gatehouse::certs::load_pair(&cert, &key, std::time::SystemTime::now()).unwrap();
    assert_eq!(loaded.info.names, ["localhost", "127.0.0.1"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days_left = (loaded.info.not_after - now) / 86_400;
    assert!(
        (396..=397).contains(&days_left),
        "valid for {days_left} days"
    );
    assert!(loaded.info.not_before <= now);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private to its owner");
    }
}

#[test]
fn the_issue_config_checks_as_written() {
    let pki = Pki::new("as-written");
    let orders = pki.issue("orders", &["orders.example.com"]);
    let admin = pki.issue("admin", &["admin.example.com"]);
    let text = r#"
[[listener]]
name = "secure"
bind = "127.0.0.1:8443"
tls = { certs = [ { cert = "config/certs/orders.pem", key = "config/certs/orders-key.pem" },
                  { cert = "config/certs/admin.pem",  key = "config/certs/admin-key.pem" } ] }

[[listener]]
name = "plain"
bind = "127.0.0.1:8080"
redirect_https = "https://{host}:8443{path}"   # 308 to HTTPS; optional
hsts = "max-age=31536000"                      # on HTTPS responses; optional

[[route]]
upstream = "payments"

[upstream.payments]
servers = ["https://127.0.0.1:9443"]
tls = { ca = "config/certs/upstream-ca.pem", server_name = "payments.internal" }  # default: system roots, name from the address
http2 = true                                    # h2 to the upstream (ALPN, or prior knowledge for h2c)
"#
    .replace("config/certs/orders.pem", &orders.cert)
    .replace("config/certs/orders-key.pem", &orders.key)
    .replace("config/certs/admin.pem", &admin.cert)
    .replace("config/certs/admin-key.pem", &admin.key)
    .replace("config/certs/upstream-ca.pem", &pki.ca_file());
    let config = gatehouse::config::load_str(Path::new("issue.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let tls = config.listeners[0].tls.as_ref().expect("tls section");
    assert_eq!(tls.certs.get_ref().len(), 2);
    assert_eq!(tls.alpn.get_ref(), &["h2", "http/1.1"]);
    assert!(config.upstreams["payments"].http2);

    // tls on an upstream without an https:// server would be silently unused: an error.
    let plain = text.replace("https://127.0.0.1:9443", "127.0.0.1:9443");
    let errors = check_errors(&plain);
    assert!(
        errors.contains("upstream.payments.tls") && errors.contains("https://"),
        "{errors}"
    );
}

fn tls12_client(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn tls12_is_served_unless_min_version_is_13() {
    let pki = Pki::new("versions");
    let site = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let listeners = format!(
        "{}{}",
        tls_listener(&[&site], ""),
        tls_listener(&[&site], ", min_version = \"1.3\"").replace("\"secure\"", "\"strict\"")
    );
    let running = start_gatehouse(&config(&listeners, &servers(app.addr), true)).await;
    let (secure, strict) = (running.listener_addrs[0], running.listener_addrs[1]);
    let client = tls12_client(pki.roots());

    let stream = tls_connect(secure, &client, "localhost").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let answer = request_on(stream, get("localhost", "/")).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(tls_connect(strict, &client, "localhost").await.is_err());

    let metrics = admin_get(&running, "/metrics").await;
    let count = |listener: &str, version: &str, result: &str| {
        metric_sample(
            &metrics,
            "gatehouse_tls_handshakes_total",
            &[
                ("listener", listener),
                ("version", version),
                ("result", result),
            ],
        )
    };
    assert_eq!(count("secure", "1.2", "ok"), Some(1.0));
    assert_eq!(count("strict", "unknown", "error"), Some(1.0));
    running.shutdown().await;
}

#[tokio::test]
async fn upstream_client_certificate_is_presented_when_configured() {
    let pki = Pki::new("upstream-mtls");
    let payments = pki.issue("payments", &["payments.internal"]);
    let gatehouse_client = pki.issue("gatehouse-client", &["gatehouse.internal"]);
    let site = pki.issue("site", &["localhost"]);
    let backend = origin_verifying_clients(Some(&payments), Some(pki.roots())).await;
    let client = client_config(pki.roots(), &["http/1.1"]);
    let upstream = |with_cert: bool| {
        let cert = if with_cert {
            format!(
                ", cert = {:?}, key = {:?}",
                gatehouse_client.cert, gatehouse_client.key
            )
        } else {
            String::new()
        };
        format!(
            "servers = [\"https://{}\"]\nretries = 0\ntls = {{ ca = {:?}, server_name = \"payments.internal\"{cert} }}\n",
            backend.addr,
            pki.ca_file()
        )
    };

    let running =
        start_gatehouse(&config(&tls_listener(&[&site], ""), &upstream(true), false)).await;
    let answer = https_get(running.listener_addrs[0], &client, "localhost", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    running.shutdown().await;

    let running = start_gatehouse(&config(
        &tls_listener(&[&site], ""),
        &upstream(false),
        false,
    ))
    .await;
    let answer = https_get(running.listener_addrs[0], &client, "localhost", "/").await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_GATEWAY,
        "the origin wants a certificate"
    );
    running.shutdown().await;
    assert_eq!(backend.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_changed_client_ca_is_not_bypassed_by_resuming_an_earlier_session() {
    let pki = Pki::new("mtls-resume");
    let site = pki.issue("site", &["localhost"]);
    let alice = pki.issue("alice", &["alice.clients"]);
    let other_pki = Pki::new("mtls-resume-other");
    let app = TestUpstream::named("app").await;
    let config_file = pki.path("gatehouse.toml");
    let with_ca = |ca: &str| {
        config(
            &tls_listener(&[&site], &format!(", client_ca = {ca:?}")),
            &servers(app.addr),
            false,
        )
        .replace("[admin]", "[reload]\nwatch = false\n[admin]")
    };
    std::fs::write(&config_file, with_ca(&pki.ca_file())).unwrap();
    let running = gatehouse::app::Running::start_file(Path::new(&config_file))
        .await
        .unwrap();
    let addr = running.listener_addrs[0];

    // Alice's client keeps its session: its next connection would resume it.
    let alice_client = client_config_with_cert(pki.roots(), &alice);
    assert_eq!(
        https_get(addr, &alice_client, "localhost", "/")
            .await
            .status,
        StatusCode::OK
    );
    let stream = tls_connect(addr, &alice_client, "localhost").await.unwrap();
    assert_eq!(
        stream.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the session resumes while the client CA is unchanged"
    );
    drop(stream);

    // The operator withdraws the CA that signed Alice's certificate.
    std::fs::write(&config_file, with_ca(&other_pki.ca_file())).unwrap();
    let report = running.reloader.reload("test").await;
    assert!(report.ok, "{:?}", report.errors);
    assert!(
        refused(addr, &alice_client).await,
        "a session from before the CA change let Alice in"
    );
    assert_eq!(app.received().len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn a_withdrawn_upstream_ca_retires_pooled_connections_at_the_reload() {
    let pki = Pki::new("upstream-ca-change");
    let payments = pki.issue("payments", &["payments.internal"]);
    let site = pki.issue("site", &["localhost"]);
    let other = Pki::new("upstream-ca-other");
    let backend = origin(Some(&payments)).await;
    let text = |ca: &str| {
        let upstream = format!(
            "servers = [\"https://{}\"]\ntls = {{ ca = {ca:?}, server_name = \"payments.internal\" }}\nhttp2 = true\n",
            backend.addr
        );
        config(&tls_listener(&[&site], ""), &upstream, false)
            .replace("[admin]", "[reload]\nwatch = false\n[admin]")
    };
    let config_file = pki.path("gatehouse.toml");
    std::fs::write(&config_file, text(&pki.ca_file())).unwrap();
    let running = gatehouse::app::Running::start_file(Path::new(&config_file))
        .await
        .unwrap();
    let addr = running.listener_addrs[0];
    let client = client_config(pki.roots(), &["http/1.1"]);
    for _ in 0..2 {
        let answer = https_get(addr, &client, "localhost", "/pay").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "the second request went over the shared HTTP/2 connection"
    );

    // The CA that verified the upstream is withdrawn: the pooled connection, verified by it,
    // must not be used again, and a new one cannot be verified.
    std::fs::write(&config_file, text(&other.ca_file())).unwrap();
    let report = running.reloader.reload("test").await;
    assert!(report.ok, "{:?}", report.errors);
    let answer = https_get(addr, &client, "localhost", "/pay").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        2,
        "nothing reached the upstream after its CA was withdrawn"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_speaking_http_1_1_keeps_its_connection_for_the_next_requests() {
    let pki = Pki::new("upstream-h1-reuse");
    let payments = pki.issue("payments", &["payments.internal"]);
    let backend = origin(Some(&payments)).await;
    let upstream = format!(
        "servers = [\"https://{}\"]\ntls = {{ ca = {:?}, server_name = \"payments.internal\" }}\n",
        backend.addr,
        pki.ca_file()
    );
    let listener = "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\n";
    let running = start_gatehouse(&config(listener, &upstream, false)).await;
    let mut client = common::Client::connect(running.listener_addrs[0]).await;
    for i in 0..3 {
        let reply = client
            .send(
                Request::post(format!("/pay/{i}"))
                    .body(Full::new(Bytes::from(format!("payment {i}"))))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), format!("payment {i}"), "echoed over TLS");
    }
    let reply = client.get("/pay/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_11),
        "ALPN http/1.1"
    );
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "one TLS connection carried every request"
    );
    running.shutdown().await;
}
