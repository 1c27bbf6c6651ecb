//! Keep-alive connections to one upstream server: a short per-server lock around a stack of
//! idle HTTP/1.1 connections (most recently used first, so warm connections stay warm),
//! connection set-up with a timeout (TCP, then TLS for `https://` servers, then HTTP/2's
//! handshake where it is spoken), and the hand-back when a response body has been read to its
//! end. An HTTP/2 connection is shared by all requests while it lasts instead of being taken
//! and given back.

use super::ServerState;
use super::http1::{Connection, Stream};
use crate::request_body::RequestBody;
use crate::tls::UpstreamTls;
use crate::workers;
use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http2};
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
            && self.tls.as_ref().map(|t| t.identity) == other.tls.as_ref().map(|t| t.identity)
    }

    pub fn for_server(addr: &str, tls: &Option<Arc<UpstreamTls>>, http2: bool) -> Self {
        Self {
            tls: tls
                .as_ref()
                .filter(|_| crate::config::is_https_server(addr))
                .cloned(),
            http2,
        }
    }
}

/// Marks a request whose client accepts trailers (`TE: trailers`), a hop-by-hop header that
/// HTTP/2 upstreams (gRPC) need to see again.
#[derive(Clone, Copy, Debug)]
pub struct AcceptsTrailers;

/// One upstream connection: an HTTP/1.1 connection that a request takes for its exchange,
/// or a handle on a shared HTTP/2 connection.
pub enum Sender {
    Http1(Box<Connection>),
    Http2(Http2Sender),
}

impl Sender {
    /// Whether the connection can no longer take a request.
    pub fn is_closed(&mut self) -> bool {
        match self {
            Sender::Http1(c) => c.is_closed(),
            Sender::Http2(s) => s.send.is_closed(),
        }
    }
}

/// A handle on an HTTP/2 connection (hyper's), with the scheme its requests carry.
#[derive(Clone)]
pub struct Http2Sender {
    send: http2::SendRequest<RequestBody>,
    scheme: Scheme,
}

impl Http2Sender {
    /// Sends a request; one the connection could not take comes back in the error.
    pub async fn try_send_request(
        &mut self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        as_http2(&mut request, &self.scheme);
        self.send.try_send_request(request).await
    }
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

fn lock(slot: &Mutex<VecDeque<Idle>>) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct Pool {
    endpoint: Endpoint,
    transport: ArcSwap<Transport>,
    /// Idle connections, one list per worker (see `crate::workers`): with thread per core a
    /// connection is only used by the worker whose runtime drives it.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
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
            idle: (0..workers::count())
                .map(|_| Mutex::new(VecDeque::with_capacity(max_idle.min(1024))))
                .collect(),
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
        // Bumped first: a connection given back after this is refused, and one given back
        // before it is cleared below (under the same lock it was pushed with).
        self.generation.fetch_add(1, Ordering::AcqRel);
        for slot in &self.idle {
            lock(slot).clear();
        }
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout_nanos.load(Ordering::Relaxed))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|slot| lock(slot).len()).sum()
    }

    /// The calling worker's idle connections.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // `workers::count()` slots, at least one, were made with the pool.
        let slot = workers::current().min(self.idle.len().saturating_sub(1));
        lock(&self.idle[slot])
    }

    /// An idle connection that is still open and not too old at `now`, if any.
    pub fn take_idle(&self, now: Instant) -> Option<(Sender, Generation)> {
        let idle_timeout = self.idle_timeout();
        let mut idle = self.lock();
        let generation = self.generation.load(Ordering::Acquire);
        while let Some(mut entry) = idle.pop_back() {
            if now.duration_since(entry.since) >= idle_timeout || entry.sender.is_closed() {
                continue;
            }
            match &entry.sender {
                Sender::Http1(_) => return Some((entry.sender, generation)),
                Sender::Http2(shared) => {
                    // Shared, not taken: it stays for the next request, freshly stamped.
                    let shared = Sender::Http2(shared.clone());
                    idle.push_back(Idle {
                        sender: entry.sender,
                        since: now,
                    });
                    return Some((shared, generation));
                }
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
        let sender = Box::pin(self.connect_unpooled(connect_timeout)).await?;
        if let Sender::Http2(shared) = &sender {
            self.put_back_shared(Sender::Http2(shared.clone()), generation);
        }
        Ok((sender, generation))
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
                None => Ok((Stream::Plain(stream), transport.http2)),
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
                    Ok((Stream::Tls(Box::new(stream)), h2))
                }
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout)??;
        let (stream, http2) = connected;
        if !http2 {
            return Ok(Sender::Http1(Connection::new(stream)));
        }
        let scheme = if transport.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        handshake_http2(stream, scheme).await
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
        idle.retain_mut(|entry| !entry.sender.is_closed());
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

    /// Keeps an HTTP/1.1 connection whose last response has been read completely (at `now`).
    /// Whether it is still open is checked when it is taken again.
    pub fn put_back(&self, conn: Box<Connection>, generation: Generation, now: Instant) {
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        if max_idle == 0 {
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
        idle.push_back(Idle {
            sender: Sender::Http1(conn),
            since: now,
        });
    }
}

/// Where an HTTP/1.1 connection goes back once the response on it has been read to its end;
/// dropped unused, the connection stays closed (its response was abandoned or broken).
pub struct PoolReturn {
    generation: Generation,
    server: Arc<ServerState>,
}

impl PoolReturn {
    pub fn new(generation: Generation, server: Arc<ServerState>) -> Self {
        Self { generation, server }
    }

    pub fn release(self, conn: Box<Connection>, now: Instant) {
        self.server.pool.put_back(conn, self.generation, now);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// HTTP/2's handshake on a connected stream; hyper's connection task runs until it closes.
async fn handshake_http2(stream: Stream, scheme: Scheme) -> Result<Sender, ConnectError> {
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(Sender::Http2(Http2Sender { send, scheme }))
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
