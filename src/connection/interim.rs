//! Interim (1xx) responses from an upstream, passed on to an HTTP/1.1 client before its final
//! response. The upstream exchange queues them here, possibly from another task (an HTTP/2
//! upstream's connection); the client connection's loop (`server::http1`) writes the queue
//! whenever it is woken while a request is in flight, and always before the final response's
//! head, which is held back until the queue is written (see `InterimSink::written`).

use atomic_waker::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// More than this waiting (a misbehaving upstream sending 1xx after 1xx to a client that
/// does not read) and further interim responses are dropped: they are advisory.
const MAX_QUEUED_BYTES: usize = 64 * 1024;

/// The interim responses of one client connection waiting to be written.
#[derive(Default)]
pub struct InterimQueue {
    /// Set while `bytes` holds anything: the one check each flush pays.
    pending: AtomicBool,
    bytes: Mutex<Vec<u8>>,
    /// The request waiting for the queue to be written before its final response.
    written: AtomicWaker,
}

impl InterimQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn push(&self, head: &[u8]) -> bool {
        let mut bytes = self.lock();
        if bytes.len() + head.len() > MAX_QUEUED_BYTES {
            return false;
        }
        bytes.extend_from_slice(head);
        self.pending.store(true, Ordering::Release);
        true
    }

    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Writes what is queued to `stream`; ready once nothing is left. Called only before the
    /// final response's head has begun, so the bytes go out in order.
    pub fn poll_write_to<S: AsyncWrite>(
        &self,
        mut stream: Pin<&mut S>,
        cx: &mut Context<'_>,
        mut on_written: impl FnMut(usize),
    ) -> Poll<io::Result<()>> {
        let mut bytes = self.lock();
        while !bytes.is_empty() {
            match stream.as_mut().poll_write(cx, &bytes) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    on_written(n);
                    bytes.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.store(false, Ordering::Release);
        drop(bytes);
        self.written.wake();
        Poll::Ready(Ok(()))
    }

    /// Ready once nothing is queued; otherwise registers the task to be woken when the queue
    /// has been written.
    pub(super) fn poll_written(&self, cx: &Context<'_>) -> Poll<()> {
        if !self.is_pending() {
            return Poll::Ready(());
        }
        self.written.register(cx.waker());
        if self.is_pending() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
