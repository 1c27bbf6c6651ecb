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
    max_idle: usize,
    idle_timeout: Duration,
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

/// A connection taken from the pool (or new), to be given back with `PoolReturn`.
pub struct Checkout {
    pub sender: SendRequest<RequestBody>,
    pub reused: bool,
}

impl Pool {
    pub fn new(endpoint: Endpoint, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            endpoint,
            idle: Mutex::new(VecDeque::with_capacity(max_idle.min(1024))),
            max_idle,
            idle_timeout,
        }
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
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if entry.sender.is_closed() || now.duration_since(entry.since) >= self.idle_timeout {
                continue;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// An idle connection, or a new one made within `connect_timeout`.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Checkout, ConnectError> {
        if let Some(sender) = self.take_idle(Instant::now()) {
            return Ok(Checkout {
                sender,
                reused: true,
            });
        }
        let sender = self.connect(connect_timeout).await?;
        Ok(Checkout {
            sender,
            reused: false,
        })
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
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
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
