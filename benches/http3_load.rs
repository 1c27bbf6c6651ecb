//! HTTP/3 against HTTP/2 and HTTP/1.1 over TLS, on the same route of the same `http3`
//! listener, with a small Rust load client (Debian's h2load is built without QUIC).
//!
//! gatehouse and a fast upstream (200-byte answers) run in this process on a thread and a
//! current-thread runtime of their own; the client runs on the main thread's. For each
//! protocol, `CONNECTIONS` connections (default 16) each keep `STREAMS` requests (default 1)
//! in flight for `DURATION` seconds (default 5), after a one-second warm-up, and the
//! requests per second, the failures and the process's CPU time per 100k requests (client
//! included: compare the columns with each other, not with other benches) are printed.
//!
//! `cargo bench --bench http3_load` (`CONNECTIONS=64 STREAMS=4 DURATION=10` to change them).
//! Without `--bench` (as `cargo test --benches` runs it) it makes a short smoke run.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    Http2,
    Http3,
}

struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's user + system CPU seconds so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime), counted from the state field (3).
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let connections = env_or("CONNECTIONS", if full { 16 } else { 2 });
    let streams = env_or("STREAMS", 1).max(1);
    let duration = Duration::from_millis(env_or("DURATION", 5) * 1000);
    let (duration, warm_up) = if full {
        (duration, Duration::from_secs(1))
    } else {
        (Duration::from_millis(300), Duration::from_millis(100))
    };

    let dir = std::env::temp_dir().join(format!("gatehouse-h3-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("a CA");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("a certificate");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, leaf.pem()).expect("cert written");
    std::fs::write(&key_file, key.serialize_pem()).expect("key written");
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");

    let (ready, addr) = std::sync::mpsc::channel();
    let config = move |upstream: SocketAddr| {
        format!(
            "[admin]\nbind = \"\"\n[log]\nlevel = \"warn\"\naccess = \"off\"\n[reload]\nwatch = false\n\
             [[listener]]\nname = \"bench\"\nbind = \"127.0.0.1:0\"\nhttp3 = true\n\
             tls = {{ certs = [ {{ cert = {:?}, key = {:?} }} ] }}\n\
             [[route]]\nupstream = \"app\"\n[upstream.app]\nservers = [\"{upstream}\"]\nkeepalive = 512\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        )
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let upstream = start_upstream().await;
            let text = config(upstream);
            let config = gatehouse::config::load_str(std::path::Path::new("bench.toml"), &text)
                .expect("bench config");
            let running = gatehouse::app::Running::start(config)
                .await
                .expect("gatehouse starts");
            let _ = ready.send(running.listener_addrs[0]);
            std::future::pending::<()>().await;
        });
    });
    let addr = addr.recv().expect("gatehouse started");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    println!(
        "{connections} connections x {streams} in flight, {:?} per protocol, over TLS 1.3 to one http3 listener",
        duration
    );
    println!(
        "{:10} {:>10} {:>8} {:>22}",
        "protocol", "req/s", "failed", "CPU-s/100k (process)"
    );
    let mut failures = 0;
    for protocol in [Protocol::Http1, Protocol::Http2, Protocol::Http3] {
        let (rate, failed, cpu) = runtime.block_on(run(
            protocol,
            addr,
            roots.clone(),
            connections,
            streams,
            warm_up,
            duration,
        ));
        failures += failed;
        println!(
            "{:10} {:>10.0} {:>8} {:>22.2}",
            format!("{protocol:?}"),
            rate,
            failed,
            cpu
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(failures, 0, "requests failed");
}

/// A fast HTTP/1.1 upstream answering 200 bytes.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("upstream binds");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move {
        let body = Bytes::from(vec![b'x'; 200]);
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn tls_config(roots: RootCertStore, alpn: &[u8]) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

fn get() -> Request<Full<Bytes>> {
    Request::get("https://localhost/bench")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// Runs one protocol's load; returns requests per second, failures, and CPU-s per 100k.
async fn run(
    protocol: Protocol,
    addr: SocketAddr,
    roots: RootCertStore,
    connections: u64,
    streams: u64,
    warm_up: Duration,
    duration: Duration,
) -> (f64, u64, f64) {
    let counts = Arc::new(Counts {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (counts, stop, roots) = (Arc::clone(&counts), Arc::clone(&stop), roots.clone());
        tasks.push(tokio::spawn(async move {
            match protocol {
                Protocol::Http1 => http1_connection(addr, roots, &counts, &stop).await,
                Protocol::Http2 => http2_connection(addr, roots, streams, &counts, &stop).await,
                Protocol::Http3 => http3_connection(addr, roots, streams, &counts, &stop).await,
            }
        }));
    }
    tokio::time::sleep(warm_up).await;
    let (ok_before, cpu_before, started) = (
        counts.ok.load(Ordering::Relaxed),
        cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(duration).await;
    let done = counts.ok.load(Ordering::Relaxed) - ok_before;
    let (elapsed, cpu) = (started.elapsed(), cpu_seconds() - cpu_before);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    (
        done as f64 / elapsed.as_secs_f64(),
        counts.failed.load(Ordering::Relaxed),
        cpu / done.max(1) as f64 * 100_000.0,
    )
}

async fn tls_stream(
    addr: SocketAddr,
    roots: RootCertStore,
    alpn: &[u8],
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(roots, alpn)));
    connector
        .connect(ServerName::try_from("localhost").ok()?, tcp)
        .await
        .ok()
}

fn note(counts: &Counts, ok: bool) {
    let counter = if ok { &counts.ok } else { &counts.failed };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn http1_connection(
    addr: SocketAddr,
    roots: RootCertStore,
    counts: &Counts,
    stop: &AtomicBool,
) {
    let Some(stream) = tls_stream(addr, roots, b"http/1.1").await else {
        return note(counts, false);
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return note(counts, false);
    };
    tokio::spawn(connection);
    while !stop.load(Ordering::Relaxed) {
        let ok = match sender.send_request(get()).await {
            Ok(response) => response.into_body().collect().await.is_ok(),
            Err(_) => false,
        };
        note(counts, ok);
        if !ok {
            return;
        }
    }
}

async fn http2_connection(
    addr: SocketAddr,
    roots: RootCertStore,
    streams: u64,
    counts: &Counts,
    stop: &AtomicBool,
) {
    let Some(stream) = tls_stream(addr, roots, b"h2").await else {
        return note(counts, false);
    };
    let Ok((sender, connection)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await
    else {
        return note(counts, false);
    };
    tokio::spawn(connection);
    let lanes = (0..streams).map(|_| {
        let mut sender = sender.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match sender.send_request(get()).await {
                    Ok(response) => response.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                note(counts, ok);
                if !ok {
                    return;
                }
            }
        }
    });
    futures_join_all(lanes).await;
}

async fn http3_connection(
    addr: SocketAddr,
    roots: RootCertStore,
    streams: u64,
    counts: &Counts,
    stop: &AtomicBool,
) {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls_config(roots, b"h3"))
        .expect("QUIC client config");
    let Ok(mut endpoint) = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))) else {
        return note(counts, false);
    };
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let Ok(connecting) = endpoint.connect(addr, "localhost") else {
        return note(counts, false);
    };
    let Ok(connection) = connecting.await else {
        return note(counts, false);
    };
    let Ok((mut driver, sender)) = h3::client::new(h3_quinn::Connection::new(connection)).await
    else {
        return note(counts, false);
    };
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let lanes = (0..streams).map(|_| {
        let mut sender = sender.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = h3_request(&mut sender).await.is_some();
                note(counts, ok);
                if !ok {
                    return;
                }
            }
        }
    });
    futures_join_all(lanes).await;
}

async fn h3_request(
    sender: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
) -> Option<()> {
    let request = Request::get("https://localhost/bench").body(()).ok()?;
    let mut stream = sender.send_request(request).await.ok()?;
    stream.finish().await.ok()?;
    let response = stream.recv_response().await.ok()?;
    while stream.recv_data().await.ok()?.is_some() {}
    response.status().is_success().then_some(())
}

/// Runs the futures together to completion (on this task: lanes of one connection).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
