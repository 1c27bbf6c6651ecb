//! Client-facing listeners: binding (SO_REUSEPORT, so a new process can take over the ports),
//! the accept loop, hyper serving HTTP/1.1 and HTTP/2 (prior knowledge) with the configured
//! limits, and draining connections on shutdown.

mod drain;

pub use drain::{Drain, DrainWatch};

use crate::proxy::{ClientInfo, Proxy};
use crate::snapshot::Limits;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounter, IntGauge};
use socket2::{Domain, Protocol, Socket, Type};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

const ACCEPT_BACKLOG: i32 = 1024;

/// Binds a listening socket with SO_REUSEADDR and SO_REUSEPORT set.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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
    TcpListener::from_std(socket.into())
}

/// One client-facing listener, ready to serve.
pub struct Listener {
    pub index: usize,
    pub name: String,
    pub tcp: TcpListener,
    pub open_connections: IntGauge,
    pub accepted: IntCounter,
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A request head that does not fit in the read buffer is answered 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accepts connections until `drain` signals shutdown, then stops accepting; each connection
/// finishes its in-flight requests (graceful shutdown) before it closes.
pub async fn serve(listener: Listener, proxy: Arc<Proxy>, limits: Limits, drain: DrainWatch) {
    let builder = Arc::new(connection_builder(&limits));
    let mut stop = drain.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            () = stop.signalled() => break,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        listener.accepted.inc();
        let client = ClientInfo::new(listener.index, addr);
        let gauge = listener.open_connections.clone();
        tokio::spawn(serve_connection(
            stream,
            client,
            Arc::clone(&proxy),
            Arc::clone(&builder),
            limits,
            gauge,
            drain.clone(),
        ));
    }
    tracing::info!(listener = %listener.name, "stopped accepting");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    client: ClientInfo,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    open_connections: IntGauge,
    mut drain: DrainWatch,
) {
    // The first request must start within header_read_timeout too: hyper's own timer only
    // starts once protocol detection has read a byte, so a silent client would otherwise
    // hold its connection until idle_timeout.
    // (`readable()` may report ready spuriously, so peek at a real byte.)
    let mut first_byte = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first_byte)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let idle_timeout = limits.idle_timeout;
    open_connections.inc();
    let client_addr = client.addr;
    let born = Instant::now();
    // Milliseconds since `born` at which the latest request started.
    let last_request = Arc::new(AtomicU64::new(0));
    let service = {
        let last_request = Arc::clone(&last_request);
        service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            let client = client.clone();
            let since_born = born.elapsed().as_millis() as u64;
            last_request.store(since_born, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(proxy.handle(client, request).await) }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let idle_check = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle_check);
    let stop = drain.signalled();
    tokio::pin!(stop);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %client_addr, error = %e, "client connection ended with an error");
                }
                break;
            }
            () = &mut stop, if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut idle_check, if !closing => {
                let idle_since = born + Duration::from_millis(last_request.load(Ordering::Relaxed));
                let deadline = idle_since + idle_timeout;
                if Instant::now() >= deadline {
                    // Graceful: a response still streaming is finished before the close.
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                } else {
                    idle_check.as_mut().reset(deadline);
                }
            }
        }
    }
    open_connections.dec();
}
