//! Request mirroring (`[route.mirror]`, nginx's `mirror`, Envoy's request mirroring): a copy of
//! a request, as it goes upstream, sent to a shadow upstream whose answer is read and thrown
//! away.
//!
//! The client's body is never held for the copy: it streams to the main upstream as it comes,
//! and the tee keeps the chunks as they pass (reference-counted, not copied) up to the mirror's
//! `max_body_bytes`. The copy is sent once the body has been read whole, on its own task; its
//! failures are only counted. At most `max_in_flight` copies are outstanding (buffering or
//! sending): past it, new ones are dropped, so a slow or dead shadow costs bounded memory and
//! nothing of the client's time.

use super::body::ResponseBody;
use super::{Forwarded, forward};
use crate::headers::X_REQUEST_ID;
use crate::request_body::{BoxError, ClientBody, RequestBody};
use crate::upstream::split::{Mirror, MirrorSlot};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// What the copy is sent with: the request head as it goes to the main upstream.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client: IpAddr,
}

/// The client's body, with a copy of it kept for `mirror` when the request is mirrored (the
/// body as it is otherwise). `parts` is the request as it goes upstream.
pub(super) fn tee(
    mirror: &Arc<Mirror>,
    parts: &http::request::Parts,
    body: ClientBody,
    client: IpAddr,
) -> ClientBody {
    // A protocol switch (WebSocket) is a conversation, not a request to copy.
    if !mirror.sampled() || parts.headers.contains_key(header::UPGRADE) {
        return body;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > mirror.max_body_bytes) {
        mirror.skipped.inc();
        return body;
    }
    let Some(slot) = mirror.try_start() else {
        return body;
    };
    let mut headers = parts.headers.clone();
    // The copy's framing is its own (a buffered body of known length), and it never waits
    // for a go-ahead.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::EXPECT);
    let head = Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers,
        client,
    };
    if body.is_end_stream() {
        send(slot, head, Bytes::new());
        return body;
    }
    ClientBody::Own(Box::pin(Tee {
        inner: body,
        copy: Some(Copy {
            slot,
            head,
            chunks: Vec::new(),
            seen: 0,
        }),
    }))
}

/// The client's body passing through, with what is kept of it for the copy.
struct Tee {
    inner: ClientBody,
    /// `None` once the copy is sent or given up.
    copy: Option<Copy>,
}

struct Copy {
    slot: MirrorSlot,
    head: Head,
    chunks: Vec<Bytes>,
    seen: u64,
}

impl Tee {
    fn keep(&mut self, data: &Bytes) {
        let Some(copy) = &mut self.copy else {
            return;
        };
        copy.seen += data.len() as u64;
        if copy.seen > copy.slot.mirror().max_body_bytes {
            self.give_up();
        } else if !data.is_empty() {
            copy.chunks.push(data.clone());
        }
    }

    /// The body was read whole: the copy goes.
    fn finish(&mut self) {
        let Some(Copy {
            slot, head, chunks, ..
        }) = self.copy.take()
        else {
            return;
        };
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                for chunk in &chunks {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        };
        send(slot, head, body);
    }

    /// The copy cannot be whole (too large, or the body failed or was left unread).
    fn give_up(&mut self) {
        if let Some(copy) = self.copy.take() {
            copy.slot.mirror().skipped.inc();
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            None => this.finish(),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Some(Err(_)) => this.give_up(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// Sends the copy on its own task, bounded in time, and counts how it went.
fn send(slot: MirrorSlot, head: Head, body: Bytes) {
    tokio::spawn(async move {
        let mirror = Arc::clone(slot.mirror());
        let upstream = &mirror.upstream;
        // Bounded: a shadow that stalls mid-body must give its place back.
        let limit = upstream.connect_timeout + upstream.response_timeout * 2;
        match tokio::time::timeout(limit, exchange(&mirror, head, body)).await {
            Ok(true) => mirror.sent.inc(),
            Ok(false) | Err(_) => mirror.failed.inc(),
        }
        drop(slot);
    });
}

/// One copy sent, its answer read to the end and dropped; whether an answer came.
async fn exchange(mirror: &Mirror, head: Head, body: Bytes) -> bool {
    let body = if body.is_empty() {
        RequestBody::Empty
    } else {
        RequestBody::Buffered {
            data: body,
            trailers: None,
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = head.headers;
    let upstream = &mirror.upstream;
    let key = upstream.key_hash(request.uri(), request.headers(), Some(head.client));
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or(HeaderValue::from_static("-"));
    let mut chosen = None;
    let sent = forward(
        upstream,
        &mut chosen,
        None,
        &mut request,
        &mut None,
        key,
        Instant::now(),
        &request_id,
        None,
        false,
    )
    .await;
    let Ok(Forwarded {
        response,
        pool_return,
        in_flight,
    }) = sent
    else {
        return false;
    };
    // Read to the end, so that the connection goes back to the pool.
    let mut body = ResponseBody::upstream(response.into_body(), pool_return);
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    drop(in_flight);
    true
}
