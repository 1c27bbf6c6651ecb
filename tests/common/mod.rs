//! Shared test fixtures: gatehouse started in-process on ephemeral loopback ports, upstream
//! servers that record what they receive, and small HTTP clients (hyper and raw TCP).

#![allow(dead_code)]

pub mod dns;
pub mod h3;
pub mod pki;
pub mod process;
pub mod redis;

use bytes::Bytes;
use gatehouse::app::Running;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};

/// A bound on every wait in tests, so a bug shows as a failure, not a hang.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts gatehouse from TOML text (use port 0 in binds).
pub async fn start_gatehouse(toml: &str) -> Running {
    let config = gatehouse::config::load_str(Path::new("test.toml"), toml)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    Running::start(config).await.expect("gatehouse starts")
}

/// A config with one listener on port 0, no admin, one catch-all route to `servers`.
pub fn simple_config(servers: &[SocketAddr], upstream_extra: &str) -> String {
    config_with_entries(&server_entries(servers), upstream_extra)
}

/// `simple_config` with `balance` for the upstream and its `servers` entries already written
/// as TOML values (`"addr"` or `{ addr = "…", weight = N }`).
pub fn balanced_config(balance: &str, servers: &[String]) -> String {
    config_with_entries(servers, &format!("balance = \"{balance}\""))
}

/// `servers` as TOML string entries for a `servers = [...]` list.
pub fn server_entries(servers: &[SocketAddr]) -> Vec<String> {
    servers.iter().map(|s| format!("\"{s}\"")).collect()
}

fn config_with_entries(list: &[String], upstream_extra: &str) -> String {
    format!(
        r#"
[admin]
bind = ""

[log]
access = "off"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = [{}]
{upstream_extra}
"#,
        list.join(", ")
    )
}

/// What a recording upstream received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Responder = Arc<dyn Fn(&Recorded) -> Response<Full<Bytes>> + Send + Sync>;
type AsyncResponder = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A real HTTP/1.1 server on an ephemeral loopback port.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestUpstream {
    /// Answers 200 with its name as body and in `x-upstream`, recording each request.
    pub async fn named(name: &str) -> Self {
        Self::named_at(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// `named`, listening on `bind` (e.g. another loopback address on a port already in use
    /// on 127.0.0.1, for servers found by DNS).
    pub async fn named_at(name: &str, bind: SocketAddr) -> Self {
        let owned = name.to_owned();
        Self::with_responder_at(
            name,
            bind,
            Arc::new(move |_req: &Recorded| {
                Response::builder()
                    .header("x-upstream", owned.as_str())
                    .body(Full::new(Bytes::from(owned.clone())))
                    .unwrap()
            }),
        )
        .await
    }

    /// Records each request (body read whole), then answers with `responder`.
    pub async fn with_responder(name: &str, responder: Responder) -> Self {
        Self::with_responder_at(name, SocketAddr::from(([127, 0, 0, 1], 0)), responder).await
    }

    /// `with_responder`, listening on `bind`.
    pub async fn with_responder_at(name: &str, bind: SocketAddr, responder: Responder) -> Self {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = Arc::clone(&requests);
        let handler: AsyncResponder = Arc::new(move |request: Request<Incoming>| {
            let responder = Arc::clone(&responder);
            let recorded = Arc::clone(&recorded);
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let record = Recorded {
                    method: parts.method,
                    uri: parts.uri,
                    version: parts.version,
                    headers: parts.headers,
                    body,
                };
                let response = responder(&record);
                recorded.lock().unwrap().push(record);
                response
            })
        });
        let mut upstream = Self::with_handler_at(name, bind, handler).await;
        upstream.requests = requests;
        upstream
    }

    /// Serves with a raw async handler (for streaming, slow or custom behaviour).
    pub async fn with_handler(name: &str, handler: AsyncResponder) -> Self {
        Self::with_handler_at(name, SocketAddr::from(([127, 0, 0, 1], 0)), handler).await
    }

    /// `with_handler`, listening on `bind`.
    pub async fn with_handler_at(name: &str, bind: SocketAddr, handler: AsyncResponder) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = oneshot::channel();
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(pair) => pair, Err(_) => continue },
                    _ = &mut stopped => break,
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = Arc::clone(&handler);
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            requests: Arc::new(Mutex::new(Vec::new())),
            connections,
            stop: Some(stop),
        }
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An upstream that parks each request until the test releases it. Every request is counted
/// and announced on arrival, then waits for one release; releases given before a request
/// arrives are kept for the next ones. A request never released stays parked until gatehouse
/// gives up on it (for timeouts, drains and in-flight counts).
pub struct HeldUpstream {
    pub addr: SocketAddr,
    upstream: TestUpstream,
    arrived: Arc<Semaphore>,
    release: Arc<Semaphore>,
    arrivals: Arc<AtomicUsize>,
}

impl HeldUpstream {
    /// Answers each released request 200 with the body `released`.
    pub async fn start() -> Self {
        Self::answering("held", "released").await
    }

    /// Answers each released request 200 with its name as body and in `x-upstream`, like
    /// `TestUpstream::named`.
    pub async fn named(name: &'static str) -> Self {
        Self::answering(name, name).await
    }

    async fn answering(name: &'static str, body: &'static str) -> Self {
        let arrived = Arc::new(Semaphore::new(0));
        let release = Arc::new(Semaphore::new(0));
        let arrivals = Arc::new(AtomicUsize::new(0));
        let (on_arrival, gate, count) = (
            Arc::clone(&arrived),
            Arc::clone(&release),
            Arc::clone(&arrivals),
        );
        let upstream = TestUpstream::with_handler(
            name,
            Arc::new(move |_request| {
                let (arrived, gate, count) = (
                    Arc::clone(&on_arrival),
                    Arc::clone(&gate),
                    Arc::clone(&count),
                );
                Box::pin(async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    arrived.add_permits(1);
                    gate.acquire().await.expect("release gate open").forget();
                    Response::builder()
                        .header("x-upstream", name)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap()
                })
            }),
        )
        .await;
        Self {
            addr: upstream.addr,
            upstream,
            arrived,
            release,
            arrivals,
        }
    }

    /// Waits (at most `WAIT`) for the next request not yet waited for to arrive.
    pub async fn wait_arrival(&self) {
        tokio::time::timeout(WAIT, self.arrived.acquire())
            .await
            .expect("the request reaches the upstream")
            .expect("arrival count open")
            .forget();
    }

    /// Lets one parked request (or the next to arrive) answer.
    pub fn release_one(&self) {
        self.release.add_permits(1);
    }

    /// How many requests have arrived so far, released or still parked.
    pub fn arrivals(&self) -> usize {
        self.arrivals.load(Ordering::SeqCst)
    }

    /// How many arrivals `wait_arrival` has not consumed yet.
    pub fn arrivals_not_waited_for(&self) -> usize {
        self.arrived.available_permits()
    }
}

/// A response with its body read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to gatehouse");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Self { sender, addr }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Reply {
        let mut request = request;
        if !request.headers().contains_key(http::header::HOST) {
            request
                .headers_mut()
                .insert(http::header::HOST, self.addr.to_string().parse().unwrap());
        }
        tokio::time::timeout(WAIT, async {
            self.sender.ready().await.expect("connection ready");
            let response = self.sender.send_request(request).await.expect("response");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("response body").to_bytes();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
        .await
        .expect("reply within the test deadline")
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Request::get(path).body(Full::new(Bytes::new())).unwrap())
            .await
    }
}

/// The start of a config with one public listener on an ephemeral port, no admin listener
/// and no access log: tests add routes and upstreams after it.
pub const ONE_LISTENER: &str = r#"
[admin]
bind = ""

[log]
access = "off"

[[listener]]
name = "public"
bind = "127.0.0.1:0"
"#;

/// A one-off request for `host` on a new connection, with an empty body.
pub async fn send_to_host(
    addr: SocketAddr,
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Client::connect(addr)
        .await
        .send(request.body(Full::new(Bytes::new())).unwrap())
        .await
}

/// A one-off GET on a new connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::connect(addr).await.get(path).await
}

/// A one-off HTTP/2 (prior knowledge) request.
pub async fn get_h2(addr: SocketAddr, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let uri = format!("http://{addr}{path}");
    let response = tokio::time::timeout(
        WAIT,
        sender.send_request(Request::get(uri).body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("h2 reply in time")
    .expect("h2 response");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Reads from `stream` until a whole request or response head (up to its blank line) has
/// arrived; `None` when the peer closes first. What follows the head may come with it.
pub async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// Writes raw bytes and reads until the server closes or `WAIT` passes; for malformed input.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a connection and writes `bytes` (a request or part of one), leaving the connection
/// open for the test to read from or stall on.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the peer closes the connection (EOF or error) and returns what came; panics if
/// it is still open after `limit`.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("connection still open after {limit:?}"));
    got
}

/// A loopback address that refuses connections (bound, then closed).
pub async fn refused_addr() -> SocketAddr {
    // Bound but never listening: connections are refused, and the port stays ours, so another
    // test binding port 0 in parallel cannot be handed it (as it could a released port).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Kept open until the test process ends.
    std::mem::forget(socket);
    addr
}

/// A port to write into a config for a process to bind later: free now, and outside the
/// kernel's ephemeral range, so that tests binding port 0 in parallel are never given it
/// in the meantime.
pub fn unclaimed_port() -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_100));
    for _ in 0..200 {
        let port = fastrand::u16(low..high);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range {low}..{high}");
}

/// The value of one sample in Prometheus text `exposition`: the first line of family `name`
/// whose labels include every `(label, value)` pair given (in any order); `None` if none does.
pub fn metric_sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (family, label_text) = match series.split_once('{') {
                Some((family, rest)) => (family, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let matches = family == name
                && labels.iter().all(|(label, want)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{label}=\"{want}\""))
                });
            if matches { value.parse().ok() } else { None }
        })
}

/// One request as a `KillableUpstream` received it, with when it arrived.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: std::time::Instant,
    pub path: String,
    pub user_agent: Option<String>,
}

/// An upstream that can be killed like a crashed process — listener closed and every open
/// connection dropped — and restarted on the same address. It answers 200 with its name as
/// body and in `x-upstream`, and logs every request it receives across restarts.
pub struct KillableUpstream {
    pub addr: SocketAddr,
    pub name: String,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    connections: Arc<AtomicUsize>,
    serving: Option<Serving>,
}

/// The accept loop and the connection tasks of a running `KillableUpstream`.
struct Serving {
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl KillableUpstream {
    pub async fn named(name: &str) -> Self {
        let listener = Self::bind("127.0.0.1:0".parse().unwrap()).expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let mut upstream = Self {
            addr,
            name: name.to_owned(),
            arrivals: Arc::default(),
            connections: Arc::default(),
            serving: None,
        };
        upstream.serve(listener);
        upstream
    }

    /// A listener that can take over an address whose old connections are in TIME_WAIT.
    fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    fn serve(&mut self, listener: TcpListener) {
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let tasks = Arc::clone(&connections);
        let arrivals = Arc::clone(&self.arrivals);
        let counter = Arc::clone(&self.connections);
        let name = self.name.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let arrivals = Arc::clone(&arrivals);
                let name = name.clone();
                let task = tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let arrivals = Arc::clone(&arrivals);
                        let name = name.clone();
                        async move {
                            arrivals.lock().unwrap().push(Arrival {
                                at: std::time::Instant::now(),
                                path: request.uri().path().to_owned(),
                                user_agent: request
                                    .headers()
                                    .get(http::header::USER_AGENT)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned),
                            });
                            let _ = request.into_body().collect().await;
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("x-upstream", name.as_str())
                                    .body(Full::new(Bytes::from(name)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut open = tasks.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        });
        self.serving = Some(Serving {
            accept,
            connections,
        });
    }

    /// Closes the listener and every open connection, and returns once they are closed.
    pub async fn kill(&mut self) {
        let Some(serving) = self.serving.take() else {
            return;
        };
        serving.accept.abort();
        let _ = tokio::time::timeout(WAIT, serving.accept)
            .await
            .expect("the accept loop stops");
        let open = std::mem::take(&mut *serving.connections.lock().unwrap());
        for task in &open {
            task.abort();
        }
        for task in open {
            let _ = tokio::time::timeout(WAIT, task)
                .await
                .expect("a connection task stops");
        }
    }

    /// Listens again on the same address (after `kill`).
    pub fn restart(&mut self) {
        assert!(self.serving.is_none(), "restart of a running upstream");
        let listener = Self::bind(self.addr).expect("rebind the same address");
        self.serve(listener);
    }

    /// Every request received so far, in arrival order, across restarts.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Connections accepted so far, across restarts.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for KillableUpstream {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.accept.abort();
            for task in serving.connections.lock().unwrap().iter() {
                task.abort();
            }
        }
    }
}
