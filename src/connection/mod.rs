//! Client connection control: what a connection and its requests share (requests in flight,
//! byte counts, the interim-response queue, why it closed), and the open connections of one
//! listener, watched from outside so that each connection pays one atomic check per wake-up
//! instead of polling timers: the drain on shutdown asks
//! them all to close, and a reaper closes those idle past `idle_timeout` and those taking
//! longer than `header_read_timeout` to send a request head.
//!
//! Beside it, the pure rules of who a connection's client is behind proxies: `client_address`
//! (trusted ranges, the X-Forwarded-For and Forwarded chains) and `proxy_protocol` (the PROXY
//! header a TCP balancer sends first).

use atomic_waker::AtomicWaker;
use slab::Slab;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub mod client_address;
mod interim;
pub mod proxy_protocol;
pub mod read;
pub mod send_file;
pub mod spare;
pub mod upgrade;

use interim::InterimQueue;

/// Why a client connection ended: the `reason` of `gatehouse_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client closed it, or asked for it to close after a response.
    Client,
    /// Idle past `idle_timeout` between requests.
    IdleTimeout,
    /// A request head (or the first byte, or the TLS handshake) slower than
    /// `header_read_timeout`.
    HeaderTimeout,
    /// A request in flight with no byte moving either way for `idle_timeout`.
    Stalled,
    /// Closed by a drain: shutdown, or its listener removed by a reload.
    Shutdown,
    /// A request head that could not be read, answered 4xx (or not at all, e.g. an HTTP/2
    /// preface on an HTTP/1.1-only connection).
    BadRequest,
    /// The TLS handshake failed.
    TlsHandshake,
    /// A read or write failed (reset by the peer, a protocol error).
    Error,
    /// Handed over to a protocol it switched to (WebSocket): its HTTP ends, its tunnel goes on.
    Upgraded,
    /// A listener with `proxy_protocol = true` got no PROXY protocol header, or a malformed
    /// one, before anything else.
    ProxyProtocol,
    /// Its client already had `max_connections_per_client` connections open on the listener.
    ClientLimit,
}

impl CloseReason {
    /// Every reason, in the order of their discriminants.
    pub const ALL: [CloseReason; 11] = [
        CloseReason::Client,
        CloseReason::IdleTimeout,
        CloseReason::HeaderTimeout,
        CloseReason::Stalled,
        CloseReason::Shutdown,
        CloseReason::BadRequest,
        CloseReason::TlsHandshake,
        CloseReason::Error,
        CloseReason::Upgraded,
        CloseReason::ProxyProtocol,
        CloseReason::ClientLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Stalled => "stalled",
            CloseReason::Shutdown => "shutdown",
            CloseReason::BadRequest => "bad_request",
            CloseReason::TlsHandshake => "tls_handshake",
            CloseReason::Error => "error",
            CloseReason::Upgraded => "upgraded",
            CloseReason::ProxyProtocol => "proxy_protocol",
            CloseReason::ClientLimit => "client_limit",
        }
    }
}

/// What the registry and one connection share. `requests` and `bytes_read` are written only
/// by the connection's own task (plain load + store); `in_flight` also by HTTP/2 streams'
/// tasks (atomic add and subtract). The reaper reads them all.
pub struct ConnectionControl {
    /// Finish what is in flight, then close (drain, idle).
    close: AtomicBool,
    /// Close now (a request head too slow to arrive).
    abort: AtomicBool,
    /// Why `close` or `abort` was asked for: a `CloseReason` as its index in `ALL`, or
    /// `NO_REASON` (then the connection's own ending says why).
    close_reason: AtomicU8,
    waker: AtomicWaker,
    requests: AtomicU64,
    in_flight: AtomicU32,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// `bytes_read` when the last request in flight finished: bytes past it start a new head.
    bytes_when_idle: AtomicU64,
    http2: AtomicBool,
    // The reaper's own bookkeeping.
    requests_seen: AtomicU64,
    idle_ticks: AtomicU32,
    head_ticks: AtomicU32,
    /// Bytes moved either way at the reaper's last look, and looks in a row without any.
    progress_seen: AtomicU64,
    stall_ticks: AtomicU32,
    interim: InterimQueue,
}

const NO_REASON: u8 = u8::MAX;

impl Default for ConnectionControl {
    fn default() -> Self {
        Self {
            close: AtomicBool::default(),
            abort: AtomicBool::default(),
            close_reason: AtomicU8::new(NO_REASON),
            waker: AtomicWaker::default(),
            requests: AtomicU64::default(),
            in_flight: AtomicU32::default(),
            bytes_read: AtomicU64::default(),
            bytes_written: AtomicU64::default(),
            bytes_when_idle: AtomicU64::default(),
            http2: AtomicBool::default(),
            requests_seen: AtomicU64::default(),
            idle_ticks: AtomicU32::default(),
            head_ticks: AtomicU32::default(),
            progress_seen: AtomicU64::default(),
            stall_ticks: AtomicU32::default(),
            interim: InterimQueue::default(),
        }
    }
}

fn bump64(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

impl ConnectionControl {
    /// A request head has arrived; the returned guard marks it finished when dropped (when
    /// its response has been sent or abandoned).
    pub fn request_started(self: &Arc<Self>, http2: bool) -> RequestInFlight {
        bump64(&self.requests, 1);
        // HTTP/2 streams end on other tasks (and threads): a real read-modify-write.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        RequestInFlight(Arc::clone(self))
    }

    /// Marks the connection busy (as a request in flight does, without counting a request)
    /// until the guard is dropped: an HTTP/1.1 connection stays busy until the last byte of
    /// its response is written, even when the response body (which carries the request's own
    /// guard) has handed over its last frame before, so that a client that stops reading is
    /// cut as stalled rather than left open as idle.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy {
            _in_flight: RequestInFlight(Arc::clone(self)),
        }
    }

    /// Whether a request has arrived on this connection yet.
    pub fn has_started_requests(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Whether the connection should finish gracefully (`Some(false)`) or close at once
    /// (`Some(true)`); registers the task to be woken when that is decided.
    #[inline]
    pub fn close_requested(&self, cx: &Context<'_>) -> Option<bool> {
        let decided = || {
            if self.abort.load(Ordering::Acquire) {
                Some(true)
            } else if self.close.load(Ordering::Acquire) {
                Some(false)
            } else {
                None
            }
        };
        if let Some(decision) = decided() {
            return Some(decision);
        }
        self.waker.register(cx.waker());
        decided()
    }

    /// Between requests: the last `unread` bytes read are the start of the next request head
    /// (pipelined, or arriving), so the head timeout covers them rather than the idle one.
    pub fn note_head_started(&self, unread: usize) {
        if unread > 0 && self.in_flight.load(Ordering::Relaxed) == 0 {
            let read = self.bytes_read.load(Ordering::Relaxed);
            self.bytes_when_idle
                .store(read.saturating_sub(unread as u64), Ordering::Relaxed);
        }
    }

    /// Whether interim responses wait to be written to this connection.
    pub fn interim_pending(&self) -> bool {
        self.interim.is_pending()
    }

    /// Whether the connection has been asked to close, without waiting to be told.
    pub fn is_closing(&self) -> bool {
        self.close.load(Ordering::Acquire) || self.abort.load(Ordering::Acquire)
    }

    pub(super) fn interim(&self) -> &InterimQueue {
        &self.interim
    }

    /// Wakes the connection's task (if it is waiting) to look at its state again.
    pub(super) fn wake(&self) {
        self.waker.wake();
    }

    /// Why the connection was asked to close, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::ALL
            .get(usize::from(self.close_reason.load(Ordering::Acquire)))
            .copied()
    }

    fn note_reason(&self, reason: CloseReason) {
        // The first reason stands: a connection idle-closed and then drained closed as idle.
        let _ = self.close_reason.compare_exchange(
            NO_REASON,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn request_close(&self, reason: CloseReason) {
        self.note_reason(reason);
        self.close.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn request_abort(&self, reason: CloseReason) {
        self.note_reason(reason);
        self.abort.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// One request in flight on a connection; dropping it ends it.
pub struct RequestInFlight(Arc<ConnectionControl>);

/// A connection kept busy (see `ConnectionControl::busy`); dropping it ends that.
pub struct Busy {
    _in_flight: RequestInFlight,
}

impl RequestInFlight {
    /// The request switched its connection to another protocol (101): the connection's HTTP
    /// ends when its response does.
    pub fn upgraded(&self) {
        self.0.note_reason(CloseReason::Upgraded);
    }

    /// Where this request's interim (1xx) responses go, for an HTTP/1.1 client.
    pub fn interim_sink(&self) -> InterimSink {
        InterimSink::new(Arc::clone(&self.0))
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let control = &self.0;
        let left = control
            .in_flight
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        if left == 0 {
            let read = control.bytes_read.load(Ordering::Relaxed);
            control.bytes_when_idle.store(read, Ordering::Relaxed);
        }
    }
}

/// Where a request's interim responses go: its client connection's queue.
#[derive(Clone)]
pub struct InterimSink(Arc<ConnectionControl>);

impl InterimSink {
    fn new(control: Arc<ConnectionControl>) -> Self {
        Self(control)
    }

    /// Queues one serialized interim response and wakes the connection to write it.
    pub fn send(&self, head: &[u8]) {
        if self.0.interim().push(head) {
            self.0.wake();
        } else {
            tracing::debug!("interim response dropped: the client is not reading them");
        }
    }

    /// Whether interim responses are queued and not yet written.
    pub fn is_pending(&self) -> bool {
        self.0.interim().is_pending()
    }

    /// Waits until every queued interim response is written (at once if none is queued).
    pub async fn written(&self) {
        // The connection's loop writes the queue when woken by `send`, before it polls this
        // request again.
        let queue = self.0.interim();
        std::future::poll_fn(|cx| queue.poll_written(cx)).await;
    }
}

pin_project_lite::pin_project! {
    /// A client stream that counts the bytes read from it, so the reaper can tell a
    /// connection receiving a request head from an idle one.
    pub struct CountingStream<S> {
        #[pin]
        inner: S,
        control: Arc<ConnectionControl>,
    }
}

impl<S> CountingStream<S> {
    pub fn new(inner: S, control: Arc<ConnectionControl>) -> Self {
        Self { inner, control }
    }
}

impl<S: AsyncRead> AsyncRead for CountingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            bump64(&this.control.bytes_read, read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for CountingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            bump64(&this.control.bytes_written, *written as u64);
        }
        polled
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &polled {
            bump64(&this.control.bytes_written, *written as u64);
        }
        polled
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if this.control.interim.is_pending() {
            let bytes_written = &this.control.bytes_written;
            std::task::ready!(
                this.control
                    .interim
                    .poll_write_to(this.inner.as_mut(), cx, |n| bump64(bytes_written, n as u64),)
            )?;
        }
        this.inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[derive(Default)]
pub struct Connections {
    open: Mutex<Slab<Arc<ConnectionControl>>>,
}

/// A connection's place in the registry; dropping it unregisters the connection.
pub struct Registration {
    connections: Arc<Connections>,
    key: usize,
    pub control: Arc<ConnectionControl>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        if open.contains(self.key) {
            open.remove(self.key);
        }
    }
}

/// The reaper's limits, in ticks.
#[derive(Clone, Copy, Debug)]
pub struct ReapPolicy {
    pub tick: Duration,
    idle_ticks: u32,
    head_ticks: u32,
}

impl ReapPolicy {
    /// Looks four times per shorter timeout: each closes between its timeout and a quarter
    /// of the shorter one later.
    pub fn new(idle_timeout: Duration, header_read_timeout: Duration) -> Self {
        let tick = (idle_timeout.min(header_read_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(15));
        let ticks = |timeout: Duration| {
            (timeout.as_nanos() / tick.as_nanos()).clamp(1, u128::from(u32::MAX)) as u32
        };
        Self {
            tick,
            idle_ticks: ticks(idle_timeout),
            head_ticks: ticks(header_read_timeout),
        }
    }
}

impl Connections {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Arc<ConnectionControl>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(self: &Arc<Self>) -> Registration {
        let control = Arc::new(ConnectionControl::default());
        let key = self.lock().insert(Arc::clone(&control));
        Registration {
            connections: Arc::clone(self),
            key,
            control,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every open connection to finish what it is doing and close.
    pub fn close_all(&self) {
        for (_, control) in self.lock().iter() {
            control.request_close(CloseReason::Shutdown);
        }
    }

    /// One look of the reaper, made every `policy.tick`.
    pub fn reap(&self, policy: &ReapPolicy) {
        for (_, control) in self.lock().iter() {
            let requests = control.requests.load(Ordering::Relaxed);
            let new_request = requests != control.requests_seen.swap(requests, Ordering::Relaxed);
            let busy = control.in_flight.load(Ordering::Relaxed) > 0;
            if new_request || busy {
                control.idle_ticks.store(0, Ordering::Relaxed);
                control.head_ticks.store(0, Ordering::Relaxed);
                // A request in flight with no byte moving either way for idle_timeout (an
                // upstream that stalls mid-body, a client that stopped reading) is cut, as
                // nginx's proxy_read_timeout / send_timeout would: never a hang.
                let progress = control.bytes_read.load(Ordering::Relaxed)
                    + control.bytes_written.load(Ordering::Relaxed);
                let moved = progress != control.progress_seen.swap(progress, Ordering::Relaxed);
                if new_request || moved {
                    control.stall_ticks.store(0, Ordering::Relaxed);
                } else if control.stall_ticks.fetch_add(1, Ordering::Relaxed) + 1
                    > policy.idle_ticks
                {
                    control.request_abort(CloseReason::Stalled);
                }
                continue;
            }
            control.stall_ticks.store(0, Ordering::Relaxed);
            // HTTP/1.1 bytes past the last finished request are a request head on its way.
            // (HTTP/2 sends frames such as PING between requests; its idle rule suffices.)
            let receiving_head = !control.http2.load(Ordering::Relaxed)
                && control.bytes_read.load(Ordering::Relaxed)
                    > control.bytes_when_idle.load(Ordering::Relaxed);
            if receiving_head {
                // The first tick may come right after the head began: one more than the
                // timeout's worth of ticks makes sure it is never cut early.
                let ticks = control.head_ticks.fetch_add(1, Ordering::Relaxed) + 1;
                if ticks > policy.head_ticks {
                    control.request_abort(CloseReason::HeaderTimeout);
                }
                continue;
            }
            let ticks = control.idle_ticks.fetch_add(1, Ordering::Relaxed) + 1;
            if ticks > policy.idle_ticks {
                control.request_close(CloseReason::IdleTimeout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn policy() -> ReapPolicy {
        // Tick 125 ms: idle after 8 quiet ticks, head timeout after 4.
        ReapPolicy::new(Duration::from_secs(1), Duration::from_millis(500))
    }

    #[test]
    fn close_reasons_are_listed_in_discriminant_order() {
        for (index, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason:?}");
        }
    }

    #[test]
    fn ticks_follow_the_shorter_timeout() {
        let policy = ReapPolicy::new(Duration::from_secs(60), Duration::from_secs(10));
        assert_eq!(policy.tick, Duration::from_millis(2500));
        assert_eq!((policy.idle_ticks, policy.head_ticks), (24, 4));
    }

    #[test]
    fn idle_connections_close_after_enough_quiet_ticks() {
        let connections = Connections::new();
        let quiet = connections.register();
        let busy = connections.register();
        let policy = ReapPolicy::new(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..4 {
            drop(busy.control.request_started(false));
            connections.reap(&policy);
            assert_eq!(quiet.control.close_requested(&cx()), None);
        }
        drop(busy.control.request_started(false));
        connections.reap(&policy);
        assert_eq!(
            quiet.control.close_requested(&cx()),
            Some(false),
            "graceful close"
        );
        assert_eq!(quiet.control.close_reason(), Some(CloseReason::IdleTimeout));
        assert_eq!(busy.control.close_reason(), None);
        assert_eq!(busy.control.close_requested(&cx()), None);
    }

    #[test]
    fn a_request_in_flight_moving_bytes_is_never_idle() {
        let connections = Connections::new();
        let conn = connections.register();
        let _long_download = conn.control.request_started(false);
        for _ in 0..20 {
            bump64(&conn.control.bytes_written, 16 * 1024); // the download keeps flowing
            connections.reap(&policy());
        }
        assert_eq!(conn.control.close_requested(&cx()), None);
    }

    #[test]
    fn a_slow_request_head_is_aborted_at_the_header_timeout() {
        let connections = Connections::new();
        let conn = connections.register();
        drop(conn.control.request_started(false));
        bump64(&conn.control.bytes_read, 10); // half a head arrives, then nothing
        connections.reap(&policy()); // sees the request
        for _ in 0..4 {
            connections.reap(&policy());
            assert_eq!(conn.control.close_requested(&cx()), None);
        }
        connections.reap(&policy()); // past four ticks of head: 500 ms for sure
        assert_eq!(conn.control.close_requested(&cx()), Some(true));
        assert_eq!(
            conn.control.close_reason(),
            Some(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn http2_frames_between_requests_are_not_a_slow_head() {
        let connections = Connections::new();
        let conn = connections.register();
        drop(conn.control.request_started(true));
        bump64(&conn.control.bytes_read, 17); // a PING
        for _ in 0..3 {
            connections.reap(&policy());
        }
        assert_eq!(conn.control.close_requested(&cx()), None);
    }

    #[test]
    fn a_request_with_no_bytes_moving_for_idle_timeout_is_cut() {
        let connections = Connections::new();
        let conn = connections.register();
        let policy = ReapPolicy::new(Duration::from_secs(1), Duration::from_secs(1));
        let _in_flight = conn.control.request_started(false);
        bump64(&conn.control.bytes_written, 100); // the head and some body went out
        connections.reap(&policy); // sees the request and the bytes
        for _ in 0..4 {
            connections.reap(&policy);
            assert_eq!(conn.control.close_requested(&cx()), None);
        }
        connections.reap(&policy);
        assert_eq!(conn.control.close_requested(&cx()), Some(true));
        assert_eq!(conn.control.close_reason(), Some(CloseReason::Stalled));
    }

    #[test]
    fn close_all_reaches_every_connection_and_drop_unregisters() {
        let connections = Connections::new();
        let a = connections.register();
        let b = connections.register();
        assert_eq!(connections.len(), 2);
        connections.close_all();
        assert_eq!(a.control.close_requested(&cx()), Some(false));
        assert_eq!(b.control.close_requested(&cx()), Some(false));
        assert_eq!(a.control.close_reason(), Some(CloseReason::Shutdown));
        drop(a);
        assert_eq!(connections.len(), 1);
    }
}
