//! Keep-alive connections to one upstream server: a short per-server lock around a stack of
//! idle HTTP/1.1 senders (most recently used first, so warm connections stay warm), connection
//! set-up with a timeout (TCP, then TLS for `https://` servers, then HTTP/1.1 or HTTP/2), and
//! the hand-back when a response body has been read to its end. An HTTP/2 connection is
//! shared by all requests while it lasts instead of being taken and given back.

use super::ServerState;
use super::own::OwnConnection;
use crate::request_body::RequestBody;
use crate::tls::UpstreamTls;
use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Where and how to reach one upstream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Set when the address is an IP literal, so connecting needs no name lookup.
    pub socket_addr: Option<SocketAddr>,
}

/// How connections to a server are made: TLS or not, HTTP/1.1 or HTTP/2.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    pub tls: Option<Arc<UpstreamTls>>,
    pub http2: bool,
    /// Plain-TCP HTTP/1.1 connections are driven by gatehouse's own client
    /// (`super::own`) in the request's task instead of hyper's (a prototype).
    pub own_h1: bool,
}

impl Transport {
    /// The TLS settings of an upstream with any `https://` server.
    pub fn upstream_tls(
        config: &crate::config::UpstreamConfig,
    ) -> Result<Option<Arc<UpstreamTls>>, String> {
        let any_https = config
            .servers
            .get_ref()
            .iter()
            .any(|s| crate::config::is_https_server(&s.get_ref().addr));
        if !any_https {
            return Ok(None);
        }
        UpstreamTls::build(config.tls.as_ref(), config.http2).map(|tls| Some(Arc::new(tls)))
    }

    /// Whether both make the same connections.
    fn same_as(&self, other: &Transport) -> bool {
        self.http2 == other.http2
            && self.own_h1 == other.own_h1
            && self.tls.as_ref().map(|t| t.identity) == other.tls.as_ref().map(|t| t.identity)
    }

    /// `own_h1` asks for the own HTTP/1.1 client; it applies only to plain-TCP HTTP/1.1.
    pub fn for_server(
        addr: &str,
        tls: &Option<Arc<UpstreamTls>>,
        http2: bool,
        own_h1: bool,
    ) -> Self {
        let tls = tls
            .as_ref()
            .filter(|_| crate::config::is_https_server(addr))
            .cloned();
        Self {
            own_h1: own_h1 && !http2 && tls.is_none(),
            tls,
            http2,
        }
    }
}

/// Marks a request whose client accepts trailers (`TE: trailers`), a hop-by-hop header that
/// HTTP/2 upstreams (gRPC) need to see again.
#[derive(Clone, Copy, Debug)]
pub struct AcceptsTrailers;

/// One upstream connection's request sender.
pub enum Sender {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>, Scheme),
    /// A connection the request's own task drives (`super::own`).
    Own(OwnConnection),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s, _) => s.is_closed(),
            Sender::Own(c) => c.is_closed(),
        }
    }

    pub fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s, _) => s.is_ready(),
            Sender::Own(_) => true,
        }
    }

    fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(..))
    }

    /// Sends a request with hyper; one the connection could not take comes back in the
    /// error. An own connection is not for this (see `super::own::exchange`): the request
    /// comes back unsent.
    pub async fn try_send_request(
        &mut self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, HyperSendError> {
        match self {
            Sender::Http1(s) => s
                .try_send_request(request)
                .await
                .map_err(HyperSendError::Hyper),
            Sender::Http2(s, scheme) => {
                as_http2(&mut request, scheme);
                s.try_send_request(request)
                    .await
                    .map_err(HyperSendError::Hyper)
            }
            Sender::Own(_) => Err(HyperSendError::NotHyper(request)),
        }
    }
}

/// Why hyper did not send a request.
pub enum HyperSendError {
    Hyper(TrySendError<Request<RequestBody>>),
    /// The sender is an own connection.
    NotHyper(Request<RequestBody>),
}

/// HTTP/2 wants the target in absolute form (`:scheme`, `:authority`) and no
/// connection-specific headers.
fn as_http2(request: &mut Request<RequestBody>, scheme: &Scheme) {
    *request.version_mut() = Version::HTTP_2;
    let authority = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(scheme.clone());
    if parts.authority.is_none() {
        parts.authority = authority;
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Without an authority the request keeps its Host header (and hyper reports the error).
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
        request.headers_mut().remove(http::header::HOST);
    }
    let accepts_trailers = request.extensions().get::<AcceptsTrailers>().is_some();
    let headers = request.headers_mut();
    headers.remove(http::header::CONNECTION);
    if accepts_trailers {
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Which transport settings a connection was made with (see `Pool::set_transport`).
pub type Generation = u64;

pub struct Pool {
    endpoint: Endpoint,
    transport: ArcSwap<Transport>,
    idle: Mutex<VecDeque<Idle>>,
    /// Bumped (under the idle lock) whenever `transport` really changes: connections of an
    /// older generation are not pooled again.
    generation: AtomicU64,
    /// Settings a reload may change (`keepalive`, `keepalive_timeout`).
    max_idle: AtomicUsize,
    idle_timeout_nanos: AtomicU64,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(io::Error),
    Handshake(hyper::Error),
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl Pool {
    pub fn new(endpoint: Endpoint, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            endpoint,
            transport: ArcSwap::from_pointee(Transport::default()),
            idle: Mutex::new(VecDeque::with_capacity(max_idle.min(1024))),
            generation: AtomicU64::new(0),
            max_idle: AtomicUsize::new(max_idle),
            idle_timeout_nanos: AtomicU64::new(nanos(idle_timeout)),
        }
    }

    /// Applies reloaded settings; connections already idle follow them from their next use.
    pub fn configure(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.store(max_idle, Ordering::Relaxed);
        self.idle_timeout_nanos
            .store(nanos(idle_timeout), Ordering::Relaxed);
    }

    /// Sets how connections are made. Unchanged settings are kept as they are (with their
    /// TLS sessions). Changed ones retire the connections made the old way: idle ones close
    /// now, busy ones when their response ends — a busy server would otherwise keep using
    /// them for ever (a withdrawn CA, no h2).
    pub fn set_transport(&self, transport: Transport) {
        if self.transport.load().same_as(&transport) {
            return;
        }
        self.transport.store(Arc::new(transport));
        let mut idle = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        idle.clear();
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout_nanos.load(Ordering::Relaxed))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection that is still open and not too old at `now`, if any.
    pub fn take_idle(&self, now: Instant) -> Option<(Sender, Generation)> {
        let idle_timeout = self.idle_timeout();
        let mut idle = self.lock();
        let generation = self.generation.load(Ordering::Acquire);
        while let Some(entry) = idle.pop_back() {
            if entry.sender.is_closed() || now.duration_since(entry.since) >= idle_timeout {
                continue;
            }
            if let Sender::Http2(sender, scheme) = &entry.sender {
                // Shared, not taken: it stays for the next request, freshly stamped.
                let shared = Sender::Http2(sender.clone(), scheme.clone());
                idle.push_back(Idle {
                    sender: entry.sender,
                    since: now,
                });
                return Some((shared, generation));
            }
            if entry.sender.is_ready() {
                return Some((entry.sender, generation));
            }
        }
        None
    }

    /// A new connection, bypassing the idle ones.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
    ) -> Result<(Sender, Generation), ConnectError> {
        // Read before the transport: a change in between marks this connection old (it is
        // then not pooled), never an old connection new.
        let generation = self.generation.load(Ordering::Acquire);
        // Boxed: the TLS and HTTP/2 handshakes' state is tens of KiB, and inline it would be
        // part of every request's future (moved, so copied, several times per request) even
        // though a pooled connection never runs it.
        if self.transport.load().own_h1 {
            // Boxed like the handshakes: kept out of every request's future.
            let conn = Box::pin(self.connect_own(connect_timeout)).await?;
            return Ok((Sender::Own(conn), generation));
        }
        let sender = Box::pin(self.connect_unpooled(connect_timeout)).await?;
        if let Sender::Http2(shared, scheme) = &sender {
            self.put_back_shared(Sender::Http2(shared.clone(), scheme.clone()), generation);
        }
        Ok((sender, generation))
    }

    /// A plain TCP connection for the own HTTP/1.1 client.
    async fn connect_own(&self, connect_timeout: Duration) -> Result<OwnConnection, ConnectError> {
        let stream = tokio::time::timeout(connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        Ok(OwnConnection::new(stream))
    }

    /// A new connection that stays out of the pool (health checks).
    pub async fn connect_unpooled(
        &self,
        connect_timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let transport = self.transport.load_full();
        // TCP and TLS together within connect_timeout.
        let connected = tokio::time::timeout(connect_timeout, async {
            let stream = self.connect_tcp().await.map_err(ConnectError::Io)?;
            let _ = stream.set_nodelay(true);
            match &transport.tls {
                None => Ok((Conn::Plain(stream), transport.http2)),
                Some(tls) => {
                    let name = tls
                        .name_for(&self.endpoint.host)
                        .map_err(ConnectError::Tls)?;
                    let stream = tls
                        .connector
                        .connect(name, stream)
                        .await
                        .map_err(|e| ConnectError::Tls(e.to_string()))?;
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    Ok((Conn::Tls(Box::new(stream)), h2))
                }
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout)??;
        let (conn, http2) = connected;
        let scheme = if transport.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        match conn {
            Conn::Plain(stream) => handshake(stream, http2, scheme).await,
            Conn::Tls(stream) => handshake(*stream, http2, scheme).await,
        }
    }

    /// Keeps a new HTTP/2 connection for the requests that follow.
    fn put_back_shared(&self, sender: Sender, generation: Generation) {
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        if max_idle == 0 {
            return;
        }
        let mut idle = self.lock();
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        idle.retain(|entry| !entry.sender.is_closed());
        while idle.len() >= max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect_tcp(&self) -> io::Result<TcpStream> {
        match self.endpoint.socket_addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port)).await,
        }
    }

    /// Keeps a connection whose last response has been read completely (at `now`).
    pub fn put_back(&self, sender: Sender, generation: Generation, now: Instant) {
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        // An HTTP/2 sender is a handle on a connection that stays in the pool anyway.
        if sender.is_closed() || max_idle == 0 || sender.is_http2() {
            return;
        }
        let mut idle = self.lock();
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        while idle.len() >= max_idle {
            // Drop the oldest: the newest is the warmest.
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }
}

/// Gives a connection back to its pool once the response on it has been read to its end;
/// dropping it unreleased closes the connection instead (its response was abandoned).
pub struct PoolReturn {
    sender: Option<Sender>,
    generation: Generation,
    server: Arc<ServerState>,
}

impl PoolReturn {
    pub fn new(sender: Sender, generation: Generation, server: Arc<ServerState>) -> Self {
        Self {
            sender: Some(sender),
            generation,
            server,
        }
    }

    pub fn release(mut self, now: Instant) {
        if let Some(sender) = self.sender.take() {
            self.server.pool.put_back(sender, self.generation, now);
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The HTTP handshake on a connected stream; its connection task runs until it closes.
async fn handshake<S>(stream: S, http2: bool, scheme: Scheme) -> Result<Sender, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(Sender::Http2(sender, scheme));
    }
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Sender::Http1(sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request's future holds `connect`'s: it must stay small whatever the handshakes
    /// need (they are boxed).
    #[test]
    fn the_connect_future_stays_small() {
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 1,
            socket_addr: None,
        };
        let pool = Pool::new(endpoint, 1, Duration::from_secs(1));
        let connect = pool.connect(Duration::from_secs(1));
        assert!(
            std::mem::size_of_val(&connect) <= 128,
            "connect future is {} bytes",
            std::mem::size_of_val(&connect)
        );
        let unpooled = pool.connect_unpooled(Duration::from_secs(1));
        assert!(
            std::mem::size_of_val(&unpooled) > 1024,
            "the test measures something"
        );
    }
}
