//! An upstream response's body: read by gatehouse's HTTP/1.1 client, or by hyper's HTTP/2
//! client.

use super::http1::{Connection, Http1Body};
use crate::connection::upgrade::Upgraded;
use crate::request_body::BoxError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub enum UpstreamBody {
    Http1(Http1Body),
    Http2(Incoming),
}

impl UpstreamBody {
    /// After a 101: the upstream connection as a byte stream, once.
    pub fn take_upgrade(&mut self) -> Option<Upgraded> {
        match self {
            UpstreamBody::Http1(body) => body.take_upgrade(),
            UpstreamBody::Http2(_) => None,
        }
    }

    /// The HTTP/1.1 response head's fields kept as bytes, if they were, to add to.
    pub fn raw_mut(&mut self) -> Option<&mut crate::http1::RawFields> {
        match self {
            UpstreamBody::Http1(body) => body.raw_mut(),
            UpstreamBody::Http2(_) => None,
        }
    }

    /// An HTTP/1.1 response head's fields kept as bytes, once (`http1::exchange`).
    pub fn take_raw(&mut self) -> Option<Box<crate::http1::RawFields>> {
        match self {
            UpstreamBody::Http1(body) => body.take_raw(),
            UpstreamBody::Http2(_) => None,
        }
    }

    /// The HTTP/1.1 connection, once the body has ended and the connection may carry another
    /// request.
    pub fn take_reusable(&mut self) -> Option<Box<Connection>> {
        match self {
            UpstreamBody::Http1(body) => body.take_reusable(),
            UpstreamBody::Http2(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Http2(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e) as BoxError))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(body) => body.is_end_stream(),
            UpstreamBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(body) => body.size_hint(),
            UpstreamBody::Http2(body) => body.size_hint(),
        }
    }
}
