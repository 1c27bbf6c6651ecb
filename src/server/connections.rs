//! The open client connections of one listener, watched from outside so that each connection
//! pays one atomic check per wake-up instead of polling timers: the drain on shutdown asks
//! them all to close, and a reaper closes those idle past `idle_timeout` and those taking
//! longer than `header_read_timeout` to send a request head.

use atomic_waker::AtomicWaker;
use slab::Slab;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::interim::{InterimQueue, InterimSink};

/// What the registry and one connection share. `requests` and `bytes_read` are written only
/// by the connection's own task (plain load + store); `in_flight` also by HTTP/2 streams'
/// tasks (atomic add and subtract). The reaper reads them all.
#[derive(Default)]
pub struct ConnectionControl {
    /// Finish what is in flight, then close (drain, idle).
    close: AtomicBool,
    /// Close now (a request head too slow to arrive).
    abort: AtomicBool,
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

    /// Whether a request has arrived on this connection yet.
    pub fn has_started_requests(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Whether the connection should finish gracefully (`Some(false)`) or close at once
    /// (`Some(true)`); registers the task to be woken when that is decided.
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

    pub(super) fn interim(&self) -> &InterimQueue {
        &self.interim
    }

    /// Wakes the connection's task (if it is waiting) to look at its state again.
    pub(super) fn wake(&self) {
        self.waker.wake();
    }

    fn request_close(&self) {
        self.close.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn request_abort(&self) {
        self.abort.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// One request in flight on a connection; dropping it ends it.
pub struct RequestInFlight(Arc<ConnectionControl>);

impl RequestInFlight {
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
            control.request_close();
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
                    control.request_abort();
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
                    control.request_abort();
                }
                continue;
            }
            let ticks = control.idle_ticks.fetch_add(1, Ordering::Relaxed) + 1;
            if ticks > policy.idle_ticks {
                control.request_close();
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
        drop(a);
        assert_eq!(connections.len(), 1);
    }
}
