//! Client-facing listeners: binding (SO_REUSEPORT, so a new process can take over the ports,
//! and each worker has a socket of its own), the accept loop, the TLS handshake on TLS
//! listeners, then HTTP/1.1 served by the connection loop of `http1` and HTTP/2 (ALPN `h2`, or
//! its preface on a cleartext connection) by hyper, with the configured limits, and draining
//! connections on shutdown. An `http3` listener also serves HTTP/3 over QUIC (`http3`).

mod drain;
mod http1;
pub mod http3;
pub mod real_ip;
pub mod settings;

pub use drain::{Drain, DrainWatch};
pub use settings::{ListenerSettings, SharedSettings};

use crate::connection::upgrade::{Io, Upgraded};
use crate::connection::{self, CloseReason, Connections, ReapPolicy};
use crate::http1::HeadConfig;
use crate::proxy::{ClientInfo, Proxy};
use crate::request_body::ClientBody;
use crate::snapshot::Limits;
use bytes::BytesMut;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpListener;

const ACCEPT_BACKLOG: i32 = 1024;

/// Binds a listening socket with SO_REUSEADDR and SO_REUSEPORT set.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_socket(addr)?)
}

/// `bind`, as a socket not yet registered with any runtime (to be handed to another one).
pub fn bind_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// One client-facing listener, ready to serve.
pub struct Listener {
    pub index: usize,
    pub name: String,
    pub tcp: TcpListener,
    pub open_connections: IntGauge,
    pub accepted: IntCounter,
    pub closed: Arc<ClosedConnections>,
    /// TLS, redirect and HSTS, as the config in force says.
    pub settings: SharedSettings,
}

/// A listener's `gatehouse_connections_closed_total` handles, one per reason.
pub struct ClosedConnections([IntCounter; CloseReason::ALL.len()]);

impl ClosedConnections {
    pub fn new(family: &IntCounterVec, listener: &str) -> Self {
        Self(CloseReason::ALL.map(|reason| family.with_label_values(&[listener, reason.as_str()])))
    }

    fn count(&self, reason: CloseReason) {
        self.0[reason as usize].inc();
    }
}

/// hyper's HTTP/2 server, with the limits in force (HTTP/1.1 is served by `http1`).
fn connection_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accepts connections until `drain` signals shutdown, then stops accepting; each connection
/// finishes its in-flight requests (graceful shutdown) before it closes.
pub async fn serve(listener: Listener, proxy: Arc<Proxy>, drain: DrainWatch) {
    let connections = Connections::new();
    let reaper = tokio::spawn(reap(Arc::clone(&connections), Arc::clone(&proxy)));
    // The hyper settings follow the limits of the snapshot in force, rebuilt when they change.
    let mut limits = proxy.snapshot().load().limits;
    let mut builder = Arc::new(connection_builder(&limits));
    let mut stop = drain.clone();
    let mut stopping = false;
    loop {
        let accepted = if stopping {
            // Take what the kernel already queued for this socket, then close it: with
            // SO_REUSEPORT those connections would otherwise be reset with it, while a
            // closed socket leaves new ones to the other process on the port.
            let mut ask_only = std::task::Context::from_waker(std::task::Waker::noop());
            match listener.tcp.poll_accept(&mut ask_only) {
                Poll::Ready(accepted) => accepted,
                Poll::Pending => break,
            }
        } else {
            tokio::select! {
                accepted = listener.tcp.accept() => accepted,
                () = stop.signalled() => {
                    stopping = true;
                    continue;
                }
            }
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) if stopping => {
                tracing::debug!(listener = %listener.name, error = %e, "accept failed while stopping");
                break;
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        listener.accepted.inc();
        let current = proxy.snapshot().load().limits;
        if current != limits {
            limits = current;
            builder = Arc::new(connection_builder(&limits));
        }
        // Registered here, not in the task, so that a drain right after this accept reaches it.
        let registration = connections.register();
        tokio::spawn(ConnectionTask::Starting(Box::pin(start_connection(
            stream,
            ClientInfo::new(listener.index, addr),
            listener.settings.load_full(),
            Connection {
                proxy: Arc::clone(&proxy),
                builder: Arc::clone(&builder),
                limits,
                open_connections: listener.open_connections.clone(),
                closed: Arc::clone(&listener.closed),
                registration,
                real_ip_from_requests: false,
                _client_place: None,
                _drain: drain.clone(),
            },
        ))));
    }
    let Listener { tcp, name, .. } = listener;
    drop(tcp);
    reaper.abort();
    connections.close_all();
    tracing::info!(listener = %name, "stopped accepting");
}

/// Closes connections idle past `idle_timeout` or slow to send a request head, with the
/// timeouts of the snapshot in force.
async fn reap(connections: Arc<Connections>, proxy: Arc<Proxy>) {
    loop {
        let limits = proxy.snapshot().load().limits;
        let policy = ReapPolicy::new(limits.idle_timeout, limits.header_read_timeout);
        tokio::time::sleep(policy.tick).await;
        connections.reap(&policy);
    }
}

/// What serving one accepted connection needs.
struct Connection {
    proxy: Arc<Proxy>,
    builder: Arc<http2::Builder<TokioExecutor>>,
    limits: Limits,
    open_connections: IntGauge,
    closed: Arc<ClosedConnections>,
    registration: connection::Registration,
    /// The peer is a trusted proxy whose requests name their client (see `real_ip`).
    real_ip_from_requests: bool,
    /// The client's place under the listener's per-client connection limit.
    _client_place: Option<crate::limit::InFlightGuard>,
    _drain: DrainWatch,
}

impl Connection {
    /// Counts why the connection closed. What it holds (its registration, its client's place,
    /// the drain watch) is released with it.
    fn end(self, reason: CloseReason) {
        self.closed.count(reason);
        self.open_connections.dec();
    }
}

/// A connection's serving, once started: the HTTP/1.1 loop or hyper's HTTP/2 connection.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection's task: its start (a PROXY header, the TLS handshake, the first bytes), then
/// its serving, each in a box of its own. The task's future is then two words, and every poll
/// of a served connection goes from the task through one pointer to the serving loop, instead
/// of through the state of each layer that started it: at a few hundred connections each of
/// those states is a cold cache line to load on every wake-up.
enum ConnectionTask<F> {
    Starting(Pin<Box<F>>),
    Serving(Serving),
    Ended,
}

impl<F: Future<Output = Option<Serving>>> Future for ConnectionTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Unpin: both states are boxed.
        let task = self.get_mut();
        loop {
            match task {
                ConnectionTask::Starting(start) => match ready!(start.as_mut().poll(cx)) {
                    Some(serving) => *task = ConnectionTask::Serving(serving),
                    None => {
                        *task = ConnectionTask::Ended;
                        return Poll::Ready(());
                    }
                },
                ConnectionTask::Serving(serving) => {
                    ready!(serving.as_mut().poll(cx));
                    *task = ConnectionTask::Ended;
                    return Poll::Ready(());
                }
                ConnectionTask::Ended => return Poll::Ready(()),
            }
        }
    }
}

/// Starts serving an accepted connection: its PROXY header, the limit per client, the first
/// byte or the TLS handshake, then which protocol it speaks. None: it ended before that.
async fn start_connection(
    mut stream: tokio::net::TcpStream,
    mut client: ClientInfo,
    settings: Arc<ListenerSettings>,
    mut connection: Connection,
) -> Option<Serving> {
    let limits = connection.limits;
    // A PROXY header, a TLS handshake and the first byte of a request all count toward the
    // first request's header_read_timeout.
    let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
    if let Some(real_ip) = &settings.real_ip {
        if real_ip.proxy_protocol {
            let socket_peer = client.peer;
            let read = tokio::time::timeout_at(deadline, real_ip::read_proxy_header(&mut stream));
            match read.await {
                Ok(Ok(header)) => {
                    let peer = real_ip.peer_after(socket_peer, &header);
                    if peer != socket_peer {
                        client = ClientInfo::new(client.listener, peer);
                    }
                }
                Ok(Err(failure)) => {
                    if let real_ip::ProxyHeaderFailure::Refused(error) = failure {
                        real_ip.note_refused(socket_peer, error);
                    }
                    connection.closed.count(failure.close_reason());
                    return None;
                }
                Err(_) => {
                    connection.closed.count(CloseReason::HeaderTimeout);
                    return None;
                }
            }
        }
        connection.real_ip_from_requests = real_ip.reads_requests_from(client.peer.ip());
    }
    // Held until the connection ends. A trusted proxy whose requests name their clients
    // carries many clients on its connections: it is not one client.
    if let Some(per_client) = &settings.per_client
        && !connection.real_ip_from_requests
    {
        match per_client.admit(client.addr.ip()) {
            Some(place) => connection._client_place = Some(place),
            None => {
                tracing::debug!(client = %client.addr, limit = per_client.limit, "connection refused: too many from this client");
                connection.closed.count(CloseReason::ClientLimit);
                return None;
            }
        }
    }
    let Some(tls) = &settings.tls else {
        // The first request must start within header_read_timeout too: a client that never
        // sends a byte would otherwise hold its connection until idle_timeout. (`readable()`
        // may report ready spuriously, so peek at a real byte.)
        let mut first_byte = [0u8; 1];
        let silent = match tokio::time::timeout_at(deadline, stream.peek(&mut first_byte)).await {
            Ok(Ok(n)) if n > 0 => None,
            Ok(Ok(_)) => Some(CloseReason::Client),
            Ok(Err(_)) => Some(CloseReason::Error),
            Err(_) => Some(CloseReason::HeaderTimeout),
        };
        return match silent {
            Some(reason) => {
                connection.closed.count(reason);
                None
            }
            None => start_http(stream, client, settings, connection, false).await,
        };
    };
    // The handshake is the start of the first request: it gets header_read_timeout too.
    let started = std::time::Instant::now();
    let metrics = &tls.handshakes;
    match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            metrics.duration.observe(started.elapsed().as_secs_f64());
            match stream.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => metrics.tls12.inc(),
                _ => metrics.tls13.inc(),
            }
            // A TLS-ALPN-01 validation ends with its handshake (RFC 8737 §3).
            if stream.get_ref().1.alpn_protocol() == Some(crate::tls::challenge::ACME_TLS_ALPN) {
                connection.closed.count(CloseReason::Client);
                return None;
            }
            client.https = true;
            let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            start_http(stream, client, settings, connection, alpn_h2).await
        }
        Ok(Err(e)) => {
            metrics.failed.inc();
            connection.closed.count(CloseReason::TlsHandshake);
            tracing::debug!(client = %client.addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.timed_out.inc();
            connection.closed.count(CloseReason::HeaderTimeout);
            tracing::debug!(client = %client.addr, "TLS handshake timed out");
            None
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/2 (ALPN `h2`, or its preface on a plain connection) from HTTP/1.1, and returns
/// the connection's serving: hyper for HTTP/2, gatehouse's own loop for HTTP/1.1.
async fn start_http<S: Io + crate::connection::send_file::SendFile + 'static>(
    stream: S,
    client: ClientInfo,
    settings: Arc<ListenerSettings>,
    connection: Connection,
    alpn_h2: bool,
) -> Option<Serving> {
    let https = client.https;
    connection.open_connections.inc();
    let control = Arc::clone(&connection.registration.control);
    let mut stream = connection::CountingStream::new(stream, Arc::clone(&control));
    let mut read_ahead = BytesMut::new();
    let sniffed = if alpn_h2 {
        Ok(true)
    } else {
        let limit = connection.limits.header_read_timeout;
        sniff_h2_preface(&mut stream, &mut read_ahead, limit, !https).await
    };
    let http2 = match sniffed {
        Ok(http2) => http2,
        Err(reason) => {
            connection.end(reason);
            return None;
        }
    };
    if http2 {
        let stream = Upgraded::new(Box::new(stream), read_ahead.freeze());
        return Some(Box::pin(async move {
            let reason = serve_hyper(stream, client, settings, &connection).await;
            connection.end(reason);
        }));
    }
    let limits = connection.limits;
    let head_config = HeadConfig {
        max_head_bytes: limits.max_header_bytes.max(8192),
        drop_underscore_headers: !limits.underscores_in_headers,
        ..HeadConfig::default()
    };
    Some(Box::pin(http1::serve(
        stream,
        read_ahead,
        http1::Http1Connection {
            proxy: Arc::clone(&connection.proxy),
            client,
            settings,
            control,
            head_config,
            real_ip_from_requests: connection.real_ip_from_requests,
            held: connection,
        },
    )))
}

/// Reads the first bytes of a connection into `read_ahead`, as many as it takes to tell
/// whether they are the HTTP/2 preface: one read for nearly every plain connection (its first
/// byte is known to be there), and otherwise reads within `limit` (the first request's head
/// timeout) while they could still be the preface.
async fn sniff_h2_preface<S: Io>(
    stream: &mut S,
    read_ahead: &mut BytesMut,
    limit: Duration,
    first_byte_seen: bool,
) -> Result<bool, CloseReason> {
    if first_byte_seen && let Some(http2) = read_and_decide(stream, read_ahead).await? {
        return Ok(http2);
    }
    let more = async {
        loop {
            if let Some(http2) = read_and_decide(stream, read_ahead).await? {
                return Ok(http2);
            }
        }
    };
    tokio::time::timeout(limit, more)
        .await
        .unwrap_or(Err(CloseReason::HeaderTimeout))
}

/// One read onto `read_ahead`, then whether it holds the HTTP/2 preface (None: can't tell yet).
async fn read_and_decide<S: Io>(
    stream: &mut S,
    read_ahead: &mut BytesMut,
) -> Result<Option<bool>, CloseReason> {
    use tokio::io::AsyncReadExt;
    if read_ahead.capacity() - read_ahead.len() < 1024 {
        read_ahead.reserve(8 * 1024);
    }
    match stream.read_buf(read_ahead).await {
        // Closed before a whole preface: the HTTP/1.1 loop sees the end and says why.
        Ok(0) => return Ok(Some(false)),
        Ok(_) => {}
        Err(_) => return Err(CloseReason::Error),
    }
    let seen = read_ahead.len().min(H2_PREFACE.len());
    Ok(if read_ahead[..seen] != H2_PREFACE[..seen] {
        Some(false)
    } else if seen == H2_PREFACE.len() {
        Some(true)
    } else {
        None
    })
}

/// Serves an HTTP/2 connection with hyper; returns why it closed.
async fn serve_hyper<S: Io>(
    stream: S,
    client: ClientInfo,
    settings: Arc<ListenerSettings>,
    connection: &Connection,
) -> CloseReason {
    let proxy = Arc::clone(&connection.proxy);
    let registration = &connection.registration;
    let peer = client.addr;
    let control = Arc::clone(&registration.control);
    let real_ip_from_requests = connection.real_ip_from_requests;
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let request = request.map(ClientBody::Hyper);
        let in_flight = control.request_started(request.version() == http::Version::HTTP_2);
        let client = if real_ip_from_requests && let Some(real_ip) = &settings.real_ip {
            real_ip.client_of(&client, request.headers())
        } else {
            std::borrow::Cow::Borrowed(&client)
        };
        answer(&proxy, &settings, &client, request, in_flight, true)
    });
    let connection = connection
        .builder
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    let result = std::future::poll_fn(|cx| {
        match registration.control.close_requested(cx) {
            // A request head too slow to arrive: drop the connection now.
            Some(true) => return Poll::Ready(Ok(())),
            // Drain or idle: finish what is in flight, then close. A connection that has not
            // yet sent its first request is given it (closing it now could cut a request
            // already on the wire); the head timeout bounds the wait.
            Some(false) if !closing && registration.control.has_started_requests() => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        connection.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(()) => registration
            .control
            .close_reason()
            .unwrap_or(CloseReason::Client),
        Err(error) => {
            tracing::debug!(client = %peer, %error, "HTTP/2 connection ended with an error");
            registration
                .control
                .close_reason()
                .unwrap_or(CloseReason::Error)
        }
    }
}

/// How a listener answers one request, whatever its protocol: a pending ACME HTTP-01
/// challenge, else its redirect to HTTPS, else the proxy's answer with the listener's own
/// fields (HSTS, and Alt-Svc where `advertise_http3`: on TCP, not over HTTP/3 itself).
fn answer(
    proxy: &Proxy,
    settings: &ListenerSettings,
    client: &ClientInfo,
    request: hyper::Request<ClientBody>,
    in_flight: crate::connection::RequestInFlight,
    advertise_http3: bool,
) -> crate::proxy::Handling {
    if let Some(answers) = &settings.acme_http
        && let Some(answer) = acme_answer(answers, request.uri().path())
    {
        return proxy.answer_locally(client, request, in_flight, |_, _| answer);
    }
    if let Some(redirect) = &settings.redirect {
        return proxy.answer_locally(client, request, in_flight, |request, host| {
            redirect_response(redirect, request, host)
        });
    }
    let handling = proxy.handle(client, request, in_flight);
    let handling = match &settings.hsts {
        Some(hsts) => handling.with_header(http::header::STRICT_TRANSPORT_SECURITY, hsts),
        None => handling,
    };
    match settings.alt_svc.as_ref().filter(|_| advertise_http3) {
        Some(alt_svc) => handling.with_header(http::header::ALT_SVC, alt_svc),
        None => handling,
    }
}

/// The key authorization of a pending HTTP-01 challenge, answered before routing and before
/// a redirect to HTTPS. Only a path under the well-known prefix looks at the pending tokens.
fn acme_answer(
    answers: &crate::tls::challenge::Http01Answers,
    path: &str,
) -> Option<hyper::Response<crate::proxy::body::ResponseBody>> {
    if !path.starts_with(crate::tls::challenge::HTTP01_PREFIX) {
        return None;
    }
    let key_authorization = answers.answer(path)?;
    let mut response = crate::proxy::local_response(http::StatusCode::OK, "");
    *response.body_mut() = crate::proxy::body::ResponseBody::full(key_authorization);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

/// The 308 of a `redirect_https` listener, to the host the request was for.
fn redirect_response(
    redirect: &crate::config::RedirectTemplate,
    request: &http::request::Parts,
    host: &http::HeaderValue,
) -> hyper::Response<crate::proxy::body::ResponseBody> {
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = host
        .to_str()
        .ok()
        .map(crate::route::host_without_port)
        .and_then(|host| http::HeaderValue::from_str(&redirect.location(host, path)).ok());
    let Some(location) = location else {
        return crate::proxy::local_response(http::StatusCode::BAD_REQUEST, "invalid Host header");
    };
    let mut response = crate::proxy::local_response(
        http::StatusCode::PERMANENT_REDIRECT,
        "this site is served over HTTPS",
    );
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    response
}
