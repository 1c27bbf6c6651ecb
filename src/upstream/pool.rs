//! Keep-alive connections to one upstream server: a short per-server lock around a stack of
//! idle HTTP/1.1 senders (most recently used first, so warm connections stay warm), connection
//! set-up with a timeout, and the hand-back when a response body has been read to its end.

use super::ServerState;
use crate::proxy::body::RequestBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Where and how to reach one upstream server.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Set when the address is an IP literal, so connecting needs no name lookup.
    pub socket_addr: Option<SocketAddr>,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

pub struct Pool {
    endpoint: Endpoint,
    idle: Mutex<VecDeque<Idle>>,
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
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake failed: {e}"),
        }
    }
}

impl Pool {
    pub fn new(endpoint: Endpoint, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            endpoint,
            idle: Mutex::new(VecDeque::with_capacity(max_idle.min(1024))),
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
    pub fn take_idle(&self, now: Instant) -> Option<SendRequest<RequestBody>> {
        let idle_timeout = self.idle_timeout();
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if entry.sender.is_closed() || now.duration_since(entry.since) >= idle_timeout {
                continue;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// A new connection, bypassing the idle ones.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
    ) -> Result<SendRequest<RequestBody>, ConnectError> {
        let stream = tokio::time::timeout(connect_timeout, self.connect_tcp())
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
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
        Ok(sender)
    }

    async fn connect_tcp(&self) -> io::Result<TcpStream> {
        match self.endpoint.socket_addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port)).await,
        }
    }

    /// Keeps a connection whose last response has been read completely (at `now`).
    pub fn put_back(&self, sender: SendRequest<RequestBody>, now: Instant) {
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        if sender.is_closed() || max_idle == 0 {
            return;
        }
        let mut idle = self.lock();
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
    sender: Option<SendRequest<RequestBody>>,
    server: Arc<ServerState>,
}

impl PoolReturn {
    pub fn new(sender: SendRequest<RequestBody>, server: Arc<ServerState>) -> Self {
        Self {
            sender: Some(sender),
            server,
        }
    }

    pub fn release(mut self, now: Instant) {
        if let Some(sender) = self.sender.take() {
            self.server.pool.put_back(sender, now);
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
