//! gatehouse's own HTTP/1.1 server connection: request heads read with the crate's codec, each
//! request answered in the connection's own task, responses framed and written here. No
//! dispatcher between the socket and the handler, no channel for bodies: a request body is
//! read from the connection's buffer by whoever polls it (the upstream exchange, in the same
//! task), and an interim response is written by this loop before the final one.
//!
//! The stream and its read buffer sit behind one mutex shared with the body of the request in
//! flight. Only one of them uses it at a time (the loop between requests and while writing,
//! the body while it is read), so it is never contended; it is there so that the body can be
//! moved into another task (an HTTP/2 upstream's connection) and still read.

use super::settings::ListenerSettings;
use crate::connection::read::{ReadSize, poll_read_more};
use crate::connection::send_file::SendFile;
use crate::connection::spare::{give_back_write_buffer, take_write_buffer};
use crate::connection::upgrade::{Io, UpgradeSlot, Upgraded};
use crate::connection::{
    CloseReason, ConnectionControl, CountingStream, InterimSink, RequestInFlight,
};
use crate::http1::{
    self, BodyLimits, Decoder, Expectation, Framing, HeadConfig, HeadError, Parsed, RequestHead,
};
use crate::proxy::body::ResponseBody;
use crate::proxy::{ClientInfo, Proxy};
use crate::request_body::{BoxError, ClientBody};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Body data up to this size is copied behind what is already waiting to be written (the
/// head, earlier small chunks), so a small response goes out in one write; longer data is
/// written from its own buffer.
const COALESCE_LIMIT: usize = 16 * 1024;

/// The connection's stream and what has been read from it but not used yet.
struct Wire<S> {
    io: CountingStream<S>,
    read_buf: BytesMut,
    read_size: ReadSize,
    /// The body of the request in flight, as far as it has been read.
    body: BodyRead,
    /// The response head has begun to go out: no interim response may be written any more.
    responding: bool,
}

enum BodyRead {
    /// No body, or all of it read.
    Done,
    Reading(Decoder),
    /// Broken framing or a failed read: the connection cannot carry another request.
    Failed,
}

type SharedWire<S> = Arc<Mutex<Wire<S>>>;

fn lock<S>(wire: &Mutex<Wire<S>>) -> MutexGuard<'_, Wire<S>> {
    wire.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What serving one HTTP/1.1 connection needs.
pub(super) struct Http1Connection {
    pub proxy: Arc<Proxy>,
    pub client: ClientInfo,
    pub settings: Arc<ListenerSettings>,
    pub control: Arc<ConnectionControl>,
    pub head_config: HeadConfig,
    /// The peer is a trusted proxy: each request names its client (see `super::real_ip`).
    pub real_ip_from_requests: bool,
    /// Held until the connection ends, then told why it did.
    pub held: super::Connection,
}

/// How one request ended for the connection.
enum Next {
    /// Ready for the next request.
    KeepAlive,
    Close(CloseReason),
}

/// Serves requests on `stream` until either side closes it; `read_ahead` holds bytes already
/// read from it. Each request is served in the loop's own body, not in a future of its own: a
/// poll of the connection then finds the request's state one level down, not two.
pub(super) async fn serve<S: Io + SendFile>(
    stream: CountingStream<S>,
    read_ahead: BytesMut,
    connection: Http1Connection,
) {
    let wire: SharedWire<S> = Arc::new(Mutex::new(Wire {
        io: stream,
        read_buf: read_ahead,
        read_size: ReadSize::default(),
        body: BodyRead::Done,
        responding: false,
    }));
    let reason = loop {
        let next = 'request: {
            let (wire, connection) = (&wire, &connection);
            let control = &connection.control;
            let head = next_head(wire, connection).await;
            let head = match head {
                Err(reason) => break 'request Next::Close(reason),
                Ok(Err(error)) => {
                    let status = error.status();
                    tracing::debug!(client = %connection.client.addr, %error, "request head rejected");
                    connection.proxy.record_rejected_head(
                        &connection.client,
                        http::Version::HTTP_11,
                        status,
                    );
                    let _ = write_rejection(wire, &mut take_write_buffer(), status, control).await;
                    break 'request Next::Close(CloseReason::BadRequest);
                }
                Ok(Ok(head)) => head,
            };

            let in_flight = control.request_started(false);
            let busy = control.busy();
            let (request, asked) = request_from_head(head, wire, &in_flight);

            let settings = &connection.settings;
            let client = if connection.real_ip_from_requests
                && let Some(real_ip) = &settings.real_ip
            {
                real_ip.client_of(&connection.client, request.headers())
            } else {
                Cow::Borrowed(&connection.client)
            };
            // Borrowed by the future below, not moved into it: moving it would copy a ready
            // response once more.
            let mut handling = super::answer(
                &connection.proxy,
                settings,
                &client,
                request,
                in_flight,
                true,
            );
            let answer = async {
                let Ok(response) = (&mut handling).await;
                let (parts, body) = response.into_parts();
                let mut out = take_write_buffer();
                let next = write_response(wire, &mut out, parts, body, asked, control).await;
                give_back_write_buffer(out);
                next
            };
            let answer = pin!(answer);
            let next = watch_answer(wire, connection, answer).await;
            drop(busy);
            request_ended(wire, control, next)
        };
        match next {
            Next::KeepAlive => {}
            // The stream now belongs to the upgraded protocol.
            Next::Close(CloseReason::Upgraded) => break CloseReason::Upgraded,
            Next::Close(reason) => {
                close(&wire, reason).await;
                break reason;
            }
        }
    };
    connection.held.end(reason);
}

/// Ends a connection that closes for `reason`, other than an upgrade.
async fn close<S: Io>(wire: &SharedWire<S>, reason: CloseReason) {
    // One try at a clean end of what was written (a FIN, TLS's close_notify);
    // the stream is dropped right after either way.
    poll_fn(|cx| {
        let _ = Pin::new(&mut lock(wire).io).poll_shutdown(cx);
        Poll::Ready(())
    })
    .await;
    let unread = {
        let wire = lock(wire);
        !wire.read_buf.is_empty() || !matches!(wire.body, BodyRead::Done)
    };
    // Only after an answer the client has to read: a slow or stalled client
    // gets no more time.
    let answered = matches!(reason, CloseReason::BadRequest | CloseReason::Client);
    if answered && (unread || reason == CloseReason::BadRequest) {
        linger(wire).await;
    }
}

/// How long, and how much, a connection closed while its client may still be sending is read
/// and discarded first. Closing a socket with unread bytes makes the kernel send a reset,
/// which can destroy the answer (a 400, a 413) before the client has read it; nginx lingers
/// the same way.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

async fn linger<S: Io>(wire: &SharedWire<S>) {
    let mut discarded = 0;
    let drain = poll_fn(|cx| {
        let mut wire = lock(wire);
        let wire = &mut *wire;
        loop {
            discarded += wire.read_buf.len();
            wire.read_buf.clear();
            if discarded >= LINGER_BYTES {
                return Poll::Ready(());
            }
            match ready!(poll_read_more(
                &mut wire.io,
                &mut wire.read_buf,
                &mut wire.read_size,
                cx
            )) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
    });
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// What the head said that matters once the handler has the request.
struct Asked {
    head: bool,
    version: Version,
    keep_alive: bool,
    upgrade: Option<oneshot::Sender<Upgraded>>,
}

/// The next request's head: waits for it, unless the connection is asked to close. Err: the
/// connection closes for that reason; Ok(Err): the head was refused.
fn next_head<'a, S: Io>(
    wire: &'a SharedWire<S>,
    connection: &'a Http1Connection,
) -> impl Future<Output = Result<Result<RequestHead, HeadError>, CloseReason>> + 'a {
    let control = &connection.control;
    let mut fresh = {
        let mut wire = lock(wire);
        let wire = &mut *wire;
        wire.read_size.start_message(&mut wire.read_buf);
        !wire.read_buf.is_empty()
    };
    poll_fn(move |cx| {
        match control.close_requested(cx) {
            Some(true) => {
                return Poll::Ready(Err(control
                    .close_reason()
                    .unwrap_or(CloseReason::HeaderTimeout)));
            }
            // Drain or idle: a connection between requests closes now; one that has not
            // sent its first request yet is given it (the head timeout bounds the wait).
            Some(false) if control.has_started_requests() && lock(wire).read_buf.is_empty() => {
                return Poll::Ready(Err(control.close_reason().unwrap_or(CloseReason::Client)));
            }
            _ => {}
        }
        let mut wire = lock(wire);
        let wire = &mut *wire;
        loop {
            if fresh {
                fresh = false;
                match http1::parse_request(&mut wire.read_buf, &connection.head_config) {
                    Ok(Parsed::Complete(head)) => return Poll::Ready(Ok(Ok(head))),
                    Ok(Parsed::Partial) => {}
                    Err(error) => return Poll::Ready(Ok(Err(error))),
                }
            }
            match ready!(poll_read_more(
                &mut wire.io,
                &mut wire.read_buf,
                &mut wire.read_size,
                cx
            )) {
                Ok(0) => {
                    // The client closed; a head it left unfinished goes with it.
                    return Poll::Ready(Err(CloseReason::Client));
                }
                Ok(_) => fresh = true,
                Err(_) => return Poll::Ready(Err(CloseReason::Error)),
            }
        }
    })
}

/// The request a head asks for, its body read from the connection by whoever polls it, and
/// what the response must heed.
fn request_from_head<S: Io>(
    head: RequestHead,
    wire: &SharedWire<S>,
    in_flight: &RequestInFlight,
) -> (http::Request<ClientBody>, Asked) {
    let expect_continue = head.expectation() == Expectation::Continue;
    let mut asked = Asked {
        head: head.method == Method::HEAD,
        version: head.version,
        keep_alive: head.keep_alive(),
        upgrade: None,
    };
    let framing = head.framing;
    let wants_upgrade = head.upgrade().is_some();
    let mut request = head.into_request();
    if wants_upgrade {
        let (sender, receiver) = oneshot::channel();
        asked.upgrade = Some(sender);
        request.extensions_mut().insert(UpgradeSlot::new(receiver));
    }
    let body = match framing {
        Framing::Empty | Framing::Length { len: 0 } => ClientBody::Empty,
        framing => {
            lock(wire).body = BodyRead::Reading(Decoder::new(framing, BodyLimits::default()));
            ClientBody::Own(Box::pin(OwnBody {
                wire: Arc::clone(wire),
                continue_sink: expect_continue.then(|| in_flight.interim_sink()),
            }))
        }
    };
    (request.map(|()| body), asked)
}

/// Drives `answer` (the handler's response, then its writing) while watching the connection:
/// cut at once when asked to abort (a stalled exchange), interim responses written as they
/// come, before the final one, and a client that leaves noticed.
fn watch_answer<'a, S: Io>(
    wire: &'a SharedWire<S>,
    connection: &'a Http1Connection,
    mut answer: Pin<&'a mut impl Future<Output = Next>>,
) -> impl Future<Output = Next> + 'a {
    let control = &connection.control;
    // Registered again on every poll: a wake-up (an interim response queued) uses the
    // registration up.
    poll_fn(move |cx| {
        if control.close_requested(cx) == Some(true) {
            return Poll::Ready(Next::Close(
                control.close_reason().unwrap_or(CloseReason::Stalled),
            ));
        }
        {
            let mut wire = lock(wire);
            let wire = &mut *wire;
            if !wire.responding && control.interim_pending() {
                // Writes queued interim responses (see `CountingStream::poll_flush`); a
                // failure shows again when the response is written.
                let _ = Pin::new(&mut wire.io).poll_flush(cx);
            }
            // Once its body is read, a client that closes its side has left: its request is
            // abandoned (nginx's 499), which frees its upstream connection and any breaker
            // trial it held. Bytes of a pipelined next request are kept, within the head limit.
            while matches!(wire.body, BodyRead::Done)
                && wire.read_buf.len() < connection.head_config.max_head_bytes
            {
                match poll_read_more(&mut wire.io, &mut wire.read_buf, &mut wire.read_size, cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Next::Close(CloseReason::Client)),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Next::Close(CloseReason::Error)),
                    Poll::Pending => break,
                }
            }
        }
        answer.as_mut().poll(cx)
    })
}

/// Whether the connection can carry another request once one has been answered.
fn request_ended<S>(wire: &SharedWire<S>, control: &ConnectionControl, next: Next) -> Next {
    let mut wire = lock(wire);
    wire.responding = false;
    control.note_head_started(wire.read_buf.len());
    match (next, &wire.body) {
        (Next::KeepAlive, BodyRead::Done) => Next::KeepAlive,
        // The request body was not read to its end: what follows on the connection cannot be
        // told apart from it.
        (Next::KeepAlive, _) => Next::Close(CloseReason::Client),
        (Next::Close(reason), _) => Next::Close(reason),
    }
}

/// The answer to a head that could not be read, before closing.
async fn write_rejection<S: Io>(
    wire: &SharedWire<S>,
    out: &mut BytesMut,
    status: StatusCode,
    control: &ConnectionControl,
) -> io::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::DATE, date::now());
    out.clear();
    http1::encode::encode_response_head(status, Version::HTTP_11, &headers, out);
    // No request is in flight: a client that does not read its 400 is cut by the head
    // timeout's abort, which this write must heed.
    let mut write = pin!(write_out(wire, out));
    poll_fn(|cx| {
        if control.close_requested(cx) == Some(true) {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        write.as_mut().poll(cx)
    })
    .await
}

/// How the response body is delimited toward the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// Nothing is written, whatever the body holds (HEAD, 1xx, 204, 304).
    Nothing,
    Length(u64),
    Chunked,
    UntilClose,
}

// A plain fn returning an async block, not an `async fn`: an async fn keeps each argument
// twice in its future and copies it once more when first polled.
#[allow(clippy::manual_async_fn)]
fn write_response<'a, S: Io + SendFile>(
    wire: &'a SharedWire<S>,
    out: &'a mut BytesMut,
    mut parts: http::response::Parts,
    mut body: ResponseBody,
    mut asked: Asked,
    control: &'a ConnectionControl,
) -> impl Future<Output = Next> + 'a {
    async move {
        // An upstream's head passed on from its bytes: `parts.headers` holds only what
        // gatehouse adds to it.
        let mut raw = body.take_raw_fields();
        let mut status = parts.status;
        if status.is_informational()
            && !(status == StatusCode::SWITCHING_PROTOCOLS && asked.upgrade.is_some())
        {
            // A 1xx is never a final answer, and a switch nobody asked for must not be agreed
            // to: the client would take what follows for another protocol (RFC 9110 §15.2).
            tracing::debug!(%status, "an interim status as the final answer; answering 502");
            status = StatusCode::BAD_GATEWAY;
            parts.headers.clear();
            raw = None;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            asked.keep_alive = false;
            body = ResponseBody::empty();
        }
        let headers = &mut parts.headers;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS && asked.upgrade.is_some();
        let no_body = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let length_allowed = !(status.is_informational() || status == StatusCode::NO_CONTENT);
        if !length_allowed {
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::TRANSFER_ENCODING);
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| {
                raw.as_ref()
                    .filter(|_| length_allowed)
                    .and_then(|raw| raw.content_length())
            });
        // A request body not read to its end by now leaves the connection unusable (what
        // follows cannot be told apart from it), so the client is told it closes.
        let body_read = matches!(lock(wire).body, BodyRead::Done);
        let mut keep_alive = asked.keep_alive && !switching && body_read && !control.is_closing();
        let sending = if asked.head || no_body {
            Sending::Nothing
        } else if let Some(len) = declared {
            Sending::Length(len)
        } else if let Some(len) = body.size_hint().exact() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Sending::Length(len)
        } else if asked.version == Version::HTTP_11 {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Sending::Chunked
        } else {
            keep_alive = false;
            Sending::UntilClose
        };
        if sending != Sending::Chunked {
            headers.remove(header::TRANSFER_ENCODING);
        }
        if !switching {
            if !keep_alive {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            } else if asked.version == Version::HTTP_10 {
                headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            }
        }
        if !headers.contains_key(header::DATE) && !raw.as_ref().is_some_and(|raw| raw.has_date()) {
            headers.insert(header::DATE, date::now());
        }
        // Interim responses still queued go first; none may follow once the head is on its way.
        let flushed = poll_fn(|cx| {
            let mut wire = lock(wire);
            let polled = Pin::new(&mut wire.io).poll_flush(cx);
            if polled.is_ready() {
                wire.responding = true;
            }
            polled
        })
        .await;
        if flushed.is_err() {
            return Next::Close(CloseReason::Error);
        }
        let version = if asked.version == Version::HTTP_10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        out.clear();
        match &raw {
            Some(raw) => http1::encode::encode_response_head_raw(
                status,
                version,
                raw,
                length_allowed,
                headers,
                out,
            ),
            None => http1::encode::encode_response_head(status, version, headers, out),
        }

        if switching {
            if write_out(wire, out).await.is_err() {
                return Next::Close(CloseReason::Error);
            }
            // The rest of the connection belongs to the upgraded protocol.
            let read_ahead = std::mem::take(&mut lock(wire).read_buf).freeze();
            let upgraded = Upgraded::new(Box::new(WireIo(Arc::clone(wire))), read_ahead);
            if let Some(sender) = asked.upgrade.take() {
                let _ = sender.send(upgraded);
            }
            drop(body);
            return Next::Close(CloseReason::Upgraded);
        }

        match send_body(wire, out, &mut body, sending).await {
            Ok(()) if keep_alive => Next::KeepAlive,
            // Closed as asked (a drain, an idle close) or as the client or the framing wanted.
            Ok(()) => Next::Close(control.close_reason().unwrap_or(CloseReason::Client)),
            Err(reason) => Next::Close(reason),
        }
    }
}

/// Streams the response body behind the head already in `out`, framed as `sending` says.
/// Data is held back only while more is ready at once: when the body has to wait, what is
/// buffered goes out first.
async fn send_body<S: Io + SendFile>(
    wire: &SharedWire<S>,
    out: &mut BytesMut,
    body: &mut ResponseBody,
    sending: Sending,
) -> Result<(), CloseReason> {
    if let Sending::Length(len) = sending
        && body.is_file()
        && lock(wire).io.can_send_file()
        && let Some(range) = body.take_file_range()
    {
        return send_file_body(wire, out, body, range, len).await;
    }
    let mut left = match sending {
        Sending::Length(len) => len,
        _ => u64::MAX,
    };
    let mut body = Pin::new(body);
    loop {
        let polled = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                write_out(wire, out).await.map_err(|_| CloseReason::Error)?;
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                // The upstream failed mid-body: the client must not see a clean end.
                tracing::debug!(%error, "response body failed");
                let _ = write_out(wire, out).await;
                return Err(CloseReason::Error);
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let (Sending::Chunked, Ok(trailers)) = (sending, frame.into_trailers()) {
                    http1::body::encode_last_chunk(Some(&trailers), out);
                    write_out(wire, out).await.map_err(|_| CloseReason::Error)?;
                    return Ok(());
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        match sending {
            Sending::Nothing => continue,
            Sending::Length(_) => {
                if data.len() as u64 > left {
                    tracing::debug!("response body longer than its Content-Length");
                    return Err(CloseReason::Error);
                }
                left -= data.len() as u64;
                put_data(wire, out, data).await?;
            }
            Sending::Chunked => {
                http1::body::encode_chunk_head(data.len() as u64, out);
                put_data(wire, out, data).await?;
                out.extend_from_slice(http1::body::CHUNK_END);
            }
            Sending::UntilClose => put_data(wire, out, data).await?,
        }
    }
    if sending == Sending::Chunked {
        http1::body::encode_last_chunk(None, out);
    }
    write_out(wire, out).await.map_err(|_| CloseReason::Error)?;
    match sending {
        Sending::Length(_) if left > 0 => {
            tracing::debug!("response body shorter than its Content-Length");
            Err(CloseReason::Error)
        }
        _ => Ok(()),
    }
}

/// A file's range behind the head in `out`, sent by the kernel from the page cache.
async fn send_file_body<S: Io + SendFile>(
    wire: &SharedWire<S>,
    out: &mut BytesMut,
    body: &mut ResponseBody,
    range: crate::files::FileRange,
    len: u64,
) -> Result<(), CloseReason> {
    let mut sent = 0;
    lock(wire).io.cork(true);
    let outcome = async {
        write_out(wire, out).await?;
        while sent < range.len {
            let offset = range.offset + sent;
            let left = range.len - sent;
            let n = poll_fn(|cx| lock(wire).io.poll_send_file(cx, &range.file, offset, left));
            match n.await? {
                // The file shrank since it was opened: the client must not see a clean end.
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => sent += n as u64,
            }
        }
        Ok::<_, io::Error>(())
    }
    .await;
    lock(wire).io.cork(false);
    let finished = outcome.is_ok() && sent == len;
    body.sent_elsewhere(sent, finished);
    if finished {
        Ok(())
    } else {
        tracing::debug!(sent, len, "file body not sent whole");
        Err(CloseReason::Error)
    }
}

/// Adds `data` to what goes out: copied behind `out` when small, else written on its own.
async fn put_data<S: Io>(
    wire: &SharedWire<S>,
    out: &mut BytesMut,
    data: Bytes,
) -> Result<(), CloseReason> {
    if out.len() + data.len() <= COALESCE_LIMIT {
        out.extend_from_slice(&data);
        return Ok(());
    }
    write_out(wire, out).await.map_err(|_| CloseReason::Error)?;
    write_all(wire, &data).await.map_err(|_| CloseReason::Error)
}

/// Writes and empties `out`.
async fn write_out<S: Io>(wire: &SharedWire<S>, out: &mut BytesMut) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    write_all(wire, out).await?;
    out.clear();
    Ok(())
}

async fn write_all<S: Io>(wire: &SharedWire<S>, mut bytes: &[u8]) -> io::Result<()> {
    poll_fn(|cx| {
        let mut wire = lock(wire);
        while !bytes.is_empty() {
            match ready!(Pin::new(&mut wire.io).poll_write(cx, bytes)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes = &bytes[n..],
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // TLS holds records until flushed; a plain socket has nothing to flush.
        Pin::new(&mut wire.io).poll_flush(cx)
    })
    .await
}

/// The body of the request in flight, read from the connection's buffer and stream.
struct OwnBody<S> {
    wire: SharedWire<S>,
    /// For `Expect: 100-continue`: where the 100 goes when the body is first asked for.
    continue_sink: Option<InterimSink>,
}

impl<S: Io> Body for OwnBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut wire = lock(&this.wire);
        let wire = &mut *wire;
        if let Some(sink) = this.continue_sink.take()
            && wire.read_buf.is_empty()
            && !wire.responding
        {
            // The client waits for this before it sends the body (RFC 9110 §10.1.1).
            sink.send(http1::encode::CONTINUE);
        }
        loop {
            let BodyRead::Reading(decoder) = &mut wire.body else {
                return Poll::Ready(match wire.body {
                    BodyRead::Failed => Some(Err("request body unreadable".into())),
                    _ => None,
                });
            };
            if !wire.read_buf.is_empty() {
                match decoder.decode_buf(&mut wire.read_buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => {}
                    Err(error) => {
                        wire.body = BodyRead::Failed;
                        return Poll::Ready(Some(Err(Box::new(error))));
                    }
                }
            }
            if decoder.is_done() {
                let trailers = decoder.take_trailers();
                wire.body = BodyRead::Done;
                return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
            }
            if !wire.read_buf.is_empty() {
                continue;
            }
            match ready!(poll_read_more(
                &mut wire.io,
                &mut wire.read_buf,
                &mut wire.read_size,
                cx
            )) {
                Ok(0) => {
                    let error = decoder.finish().err();
                    wire.body = BodyRead::Failed;
                    return Poll::Ready(Some(Err(match error {
                        Some(error) => Box::new(error),
                        None => "request body cut short".into(),
                    })));
                }
                Ok(_) => {}
                Err(error) => {
                    wire.body = BodyRead::Failed;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(lock(&self.wire).body, BodyRead::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &lock(&self.wire).body {
            BodyRead::Reading(decoder) => match decoder.state() {
                http1::body::DecoderState::Length { remaining } => SizeHint::with_exact(remaining),
                _ => SizeHint::default(),
            },
            _ => SizeHint::with_exact(0),
        }
    }
}

/// The connection's stream after a 101, shared with nothing else by then.
struct WireIo<S>(SharedWire<S>);

impl<S: Io> AsyncRead for WireIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_read(cx, buf)
    }
}

impl<S: Io> AsyncWrite for WireIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut lock(&self.0).io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_shutdown(cx)
    }
}

/// The Date field, formatted once per second per thread.
mod date {
    use http::HeaderValue;
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((0, None)) };
    }

    pub fn now() -> HeaderValue {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            match &cached.1 {
                Some(value) if cached.0 == second => value.clone(),
                _ => {
                    let value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                        .unwrap_or_else(|_| HeaderValue::from_static(""));
                    *cached = (second, Some(value.clone()));
                    value
                }
            }
        })
    }
}
