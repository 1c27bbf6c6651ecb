//! The body sent to an upstream server: nothing, the client's body read whole before
//! forwarding (checked, of known length, sendable again on a retry), or the client's body
//! streamed under its size limit. Concrete, no boxing on the common paths.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The client's body went past `limits.max_body_bytes`.
#[derive(Debug)]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body larger than {} bytes", self.limit)
    }
}

impl std::error::Error for BodyTooLarge {}

/// The client's body could not be read (bad chunking, reset).
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the client's request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the client sends it: read by hyper (HTTP/2) or by the server's own
/// HTTP/1.1 connection loop, which hands over its reader boxed (only requests that have a
/// body pay for it).
pub enum ClientBody {
    Empty,
    Hyper(Incoming),
    Own(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            ClientBody::Own(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(body) => body.is_end_stream(),
            ClientBody::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(body) => body.size_hint(),
            ClientBody::Own(body) => body.size_hint(),
        }
    }
}

/// How much of a client's body is read before any server is contacted (nginx reads up to
/// its `client_body_buffer_size` the same way).
pub const PREREAD_LIMIT: usize = 16 * 1024;

/// A request body on its way to an upstream server. Kept small: it travels through the
/// upstream connection's request channel with every request, so the rare variants are boxed.
pub enum RequestBody {
    Empty,
    /// A body read whole before forwarding: checked, of known length, and sendable again.
    /// Empty `data` has been sent (or there was none).
    Buffered {
        data: Bytes,
        trailers: Option<Box<HeaderMap>>,
    },
    /// The client's body, counted against the size limit as it streams.
    Client {
        body: ClientBody,
        seen: u64,
        limit: u64,
        /// The route's `gatehouse_http_received_bytes_total`.
        received: prometheus::IntCounter,
    },
    /// A body longer than `PREREAD_LIMIT`: what was read first (counted already), then the
    /// rest as `Client`.
    Continued {
        prefix: Option<Bytes>,
        rest: Box<RequestBody>,
    },
}

impl RequestBody {
    pub fn client(body: ClientBody, limit: u64, received: &prometheus::IntCounter) -> Self {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Client {
                body,
                seen: 0,
                limit,
                received: received.clone(),
            }
        }
    }

    /// Whether the client's body is still to be read and could fit `PREREAD_LIMIT` (its
    /// length is unknown, or known and within it).
    pub fn may_preread(&self) -> bool {
        match self {
            RequestBody::Client { body, .. } => body
                .size_hint()
                .upper()
                .is_none_or(|upper| upper <= PREREAD_LIMIT as u64),
            _ => false,
        }
    }

    /// Reads what has arrived of the client's body, up to `PREREAD_LIMIT`, before any server
    /// is contacted. A body that has arrived whole (most API requests) is checked whole, so
    /// that bad chunking or an oversized body is answered without an upstream waiting for a
    /// body that never comes, and can be sent again on a retry. The read stops at the first
    /// moment nothing more is ready (one turn of the runtime without data): a client that
    /// streams its body and waits for the response (gRPC, interactive uploads) must not wait
    /// on the proxy; the rest streams on after what was read.
    pub async fn preread(self) -> Result<Self, BoxError> {
        let RequestBody::Client {
            mut body,
            mut seen,
            limit,
            received,
        } = self
        else {
            return Ok(self);
        };
        // The first chunk is kept as it came; a copy is made only when a second one follows.
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        let read = |first: Option<Bytes>, joined: BytesMut| match first {
            Some(first) => first,
            None => joined.freeze(),
        };
        let mut waited = false;
        loop {
            let polled =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match polled {
                // hyper hands over bytes it has already read one turn after they are asked
                // for: give it that turn once, then stop waiting.
                Poll::Pending if !waited => {
                    waited = true;
                    tokio::task::yield_now().await;
                    continue;
                }
                Poll::Pending => {
                    let prefix = read(first, joined);
                    let rest = RequestBody::Client {
                        body,
                        seen,
                        limit,
                        received,
                    };
                    return Ok(if prefix.is_empty() {
                        rest
                    } else {
                        RequestBody::Continued {
                            prefix: Some(prefix),
                            rest: Box::new(rest),
                        }
                    });
                }
                Poll::Ready(frame) => {
                    waited = false;
                    frame
                }
            };
            let frame = match frame {
                None => {
                    return Ok(RequestBody::Buffered {
                        data: read(first, joined),
                        trailers: None,
                    });
                }
                Some(Err(e)) => return Err(Box::new(ClientBodyError(e))),
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    return Ok(RequestBody::Buffered {
                        data: read(first, joined),
                        trailers: frame.into_trailers().ok().map(Box::new),
                    });
                }
            };
            seen += data.len() as u64;
            received.inc_by(data.len() as u64);
            if seen > limit {
                return Err(Box::new(BodyTooLarge { limit }));
            }
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                None => joined.extend_from_slice(&data),
                Some(earlier) => {
                    joined.reserve(earlier.len() + data.len());
                    joined.extend_from_slice(&earlier);
                    joined.extend_from_slice(&data);
                }
            }
            if body.is_end_stream() {
                return Ok(RequestBody::Buffered {
                    data: read(first, joined),
                    trailers: None,
                });
            }
            if seen > PREREAD_LIMIT as u64 {
                return Ok(RequestBody::Continued {
                    prefix: Some(read(first, joined)),
                    rest: Box::new(RequestBody::Client {
                        body,
                        seen,
                        limit,
                        received,
                    }),
                });
            }
        }
    }

    /// The same body again, for a retry: only one that is empty or was read whole.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Buffered { data, trailers } => Some(RequestBody::Buffered {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            RequestBody::Client { .. } | RequestBody::Continued { .. } => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Buffered { data, trailers } => {
                let frame = if data.is_empty() {
                    trailers.take().map(|trailers| Frame::trailers(*trailers))
                } else {
                    Some(Frame::data(std::mem::take(data)))
                };
                Poll::Ready(frame.map(Ok))
            }
            RequestBody::Continued { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => Pin::new(rest.as_mut()).poll_frame(cx),
            },
            RequestBody::Client {
                body,
                seen,
                limit,
                received,
            } => match ready!(Pin::new(body).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *seen += data.len() as u64;
                        received.inc_by(data.len() as u64);
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                                limit: *limit,
                            }))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Buffered { data, trailers } => data.is_empty() && trailers.is_none(),
            RequestBody::Client { body, .. } => body.is_end_stream(),
            RequestBody::Continued { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Buffered { data, .. } => SizeHint::with_exact(data.len() as u64),
            RequestBody::Client { body, .. } => body.size_hint(),
            RequestBody::Continued { prefix, rest } => {
                let before = prefix.as_ref().map_or(0, |prefix| prefix.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + before);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + before);
                }
                hint
            }
        }
    }
}
