//! The body that goes back to the client, concrete (no boxing): the upstream's body, returning
//! its connection to the pool when it ends and stored in a cache as it streams where asked,
//! or a short local answer, and either of them compressed on the way where the route asks.
//! What goes upstream is `crate::request_body`.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::exchange::Exchange;
use crate::cache::fill::Fill;
use crate::compress::body::CompressError;
use crate::compress::{CompressedBody, Encoder, KeptCopy};
use crate::request_body::BoxError;
use crate::upstream::body::UpstreamBody;
use crate::upstream::pool::PoolReturn;

/// A response body on its way to the client.
pub struct ResponseBody {
    kind: ResponseKind,
    bytes_sent: u64,
    completion: Option<Exchange>,
    /// Set when the response is also being stored in a cache.
    fill: Option<Box<Fill>>,
}

enum ResponseKind {
    Upstream {
        body: UpstreamBody,
        pool_return: Option<PoolReturn>,
    },
    Full(Option<Bytes>),
    /// A file's ranges, read in chunks as they go out (boxed: most bodies are not files).
    File(Box<crate::files::FileBody>),
    /// Another response body (its pool return and cache fill inside it, seeing the identity
    /// bytes) going through an encoder; this one counts what the client is sent.
    Compressed(Box<CompressedBody<ResponseBody>>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: ResponseKind::Full(if bytes.is_empty() { None } else { Some(bytes) }),
            bytes_sent: 0,
            completion: None,
            fill: None,
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A file streamed from disk.
    pub fn file(body: crate::files::FileBody) -> Self {
        Self {
            kind: ResponseKind::File(Box::new(body)),
            bytes_sent: 0,
            completion: None,
            fill: None,
        }
    }

    pub fn upstream(body: UpstreamBody, pool_return: Option<PoolReturn>) -> Self {
        let mut response = Self {
            kind: ResponseKind::Upstream { body, pool_return },
            bytes_sent: 0,
            completion: None,
            fill: None,
        };
        response.release_if_done(&mut None);
        response
    }

    /// This body, compressed as it streams; `counters` are the bytes in and out of the
    /// encoder, `copy` keeps the encoded body whole for a cache. Called before
    /// `set_completion`, so that what is counted as sent is what the client receives.
    pub fn compressed(
        self,
        encoder: Encoder,
        counters: (prometheus::IntCounter, prometheus::IntCounter),
        copy: Option<KeptCopy>,
    ) -> Self {
        let mut compressed = CompressedBody::new(self, encoder, Some(counters));
        if let Some(copy) = copy {
            compressed.keep_copy(copy);
        }
        Self {
            kind: ResponseKind::Compressed(Box::new(compressed)),
            bytes_sent: 0,
            completion: None,
            fill: None,
        }
    }

    /// The upstream response head's fields kept as bytes, once: the head to pass on, with
    /// the response's own map holding only what gatehouse adds.
    pub fn take_raw_fields(&mut self) -> Option<Box<crate::http1::RawFields>> {
        match &mut self.kind {
            ResponseKind::Upstream { body, .. } => body.take_raw(),
            _ => None,
        }
    }

    /// Whether this is a file's body (then `take_file_range` may give it to the connection).
    pub fn is_file(&self) -> bool {
        matches!(self.kind, ResponseKind::File(_))
    }

    /// A file body that is one range of one file, taken out for the connection to send by
    /// itself (`sendfile`); `sent_elsewhere` then says how that went.
    pub fn take_file_range(&mut self) -> Option<crate::files::FileRange> {
        match &mut self.kind {
            ResponseKind::File(body) if self.fill.is_none() => body.take_single_range(),
            _ => None,
        }
    }

    /// Counts the bytes of a range from `take_file_range` that reached the client, and ends
    /// the exchange (complete or cut short).
    pub fn sent_elsewhere(&mut self, bytes: u64, finished: bool) {
        self.bytes_sent += bytes;
        self.finish(finished, &mut None);
    }

    /// Stores the body in a cache as it streams.
    pub fn set_fill(&mut self, fill: Fill) {
        if self.is_end_stream() {
            fill.finish();
        } else {
            self.fill = Some(Box::new(fill));
        }
    }

    pub(crate) fn set_completion(&mut self, completion: Exchange) {
        self.completion = Some(completion);
        if self.is_end_stream() {
            self.finish(true, &mut None);
        }
    }

    /// An upstream body that has ended gives its connection back to the pool, if the
    /// connection may carry another request.
    fn release_if_done(&mut self, now: &mut Option<Instant>) {
        if let ResponseKind::Upstream { body, pool_return } = &mut self.kind
            && body.is_end_stream()
            && let Some(pool_return) = pool_return.take()
            && let Some(conn) = body.take_reusable()
        {
            pool_return.release(conn, *now.get_or_insert_with(Instant::now));
        }
    }

    fn finish(&mut self, finished: bool, now: &mut Option<Instant>) {
        if let Some(mut completion) = self.completion.take() {
            completion.complete(
                self.bytes_sent,
                finished,
                *now.get_or_insert_with(Instant::now),
            );
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish(false, &mut None);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            ResponseKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseKind::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ResponseKind::File(body) => Pin::new(body.as_mut())
                .poll_frame(cx)
                .map_err(BoxError::from),
            ResponseKind::Compressed(body) => {
                Pin::new(body.as_mut())
                    .poll_frame(cx)
                    .map_err(|error| match error {
                        CompressError::Inner(error) => error,
                        CompressError::Encoder(error) => BoxError::from(error),
                    })
            }
        };
        // One clock read serves both the pool's idle stamp and the request's duration.
        let mut now = None;
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_sent += data.len() as u64;
                    if let Some(fill) = &mut this.fill
                        && !fill.push(data)
                    {
                        this.fill = None;
                    }
                }
                this.release_if_done(&mut now);
                if this.is_end_stream() {
                    if let Some(fill) = this.fill.take() {
                        fill.finish();
                    }
                    this.finish(true, &mut now);
                }
            }
            Poll::Ready(None) => {
                this.release_if_done(&mut now);
                if let Some(fill) = this.fill.take() {
                    fill.finish();
                }
                this.finish(true, &mut now);
            }
            Poll::Ready(Some(Err(_))) => {
                // A broken upstream connection must not go back to the pool.
                if let ResponseKind::Upstream { pool_return, .. } = &mut this.kind {
                    pool_return.take();
                }
                this.fill = None;
                this.finish(false, &mut now);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Full(bytes) => bytes.is_none(),
            ResponseKind::Upstream { body, .. } => body.is_end_stream(),
            ResponseKind::File(body) => body.is_end_stream(),
            ResponseKind::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseKind::Upstream { body, .. } => body.size_hint(),
            ResponseKind::File(body) => body.size_hint(),
            ResponseKind::Compressed(body) => body.size_hint(),
        }
    }
}
