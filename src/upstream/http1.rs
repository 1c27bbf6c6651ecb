//! gatehouse's HTTP/1.1 client, driven in the request's own task with the crate's codec
//! (`crate::http1`): no connection task, no request channel, no cross-task wake-ups. The
//! request head, and as much of the body as is ready, goes out in one write; the response
//! head is read while the rest of the body is sent, so an early answer (a 413 during an
//! upload) comes back at once; the response body owns the connection until it ends and then
//! hands it over for reuse (`Http1Body::take_reusable`), or, after a 101, hands over the
//! stream itself (`Http1Body::take_upgrade`).
//!
//! A connection is reused only after a response read to its end, to a request sent whole,
//! with neither side asking to close and no byte left over: anything unasked-for on a
//! connection means the two sides disagree about where a message ends.

use crate::connection::InterimSink;
use crate::connection::read::{self, ReadSize};
use crate::connection::spare;
use crate::connection::upgrade::Upgraded;
use crate::headers::ForwardingFields;
use crate::http1::{self, BodyError, BodyLimits, Decoder, HeadConfig, HeadError, Parsed};
use crate::request_body::{BoxError, RequestBody};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A write buffer grown larger than this by an upload is not kept for the next request.
const KEPT_WRITE_BUFFER: usize = 16 * 1024;

/// The most request body bytes gathered before writing: frames that are ready go out in one
/// write with the head, without holding a fast client's whole upload in memory.
const GATHER_LIMIT: usize = 64 * 1024;

/// Response heads: larger than a request head may be (long Set-Cookie and CSP lines are
/// common), bounded all the same.
const RESPONSE_HEAD: HeadConfig = HeadConfig {
    max_head_bytes: 64 * 1024,
    max_headers: 100,
    max_request_line: 0,
    drop_underscore_headers: false,
};

/// An upstream connection's byte stream: TCP, or TLS over TCP for `https://` servers.
pub enum Stream {
    Plain(TcpStream),
    // Boxed: rustls' state is several KiB, and a connection is moved between the pool and
    // the requests that use it.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One HTTP/1.1 connection to a server, with the buffers and the body decoder it keeps for
/// its whole life (boxed once when connected, so handing it around moves a pointer).
pub struct Connection {
    stream: Stream,
    /// Bytes read and not used yet.
    buf: BytesMut,
    /// Bytes to write: the thread's spare buffer while a request is being written (see
    /// `connection::spare`), none between requests.
    out: BytesMut,
    /// The current response's body framing.
    decoder: Decoder,
    /// Room to make for the next read.
    read_size: ReadSize,
    /// The response timeout, one timer for the connection's whole life: moved later for each
    /// request, which costs a compare-and-swap while it is registered, where a timer per
    /// request is put into tokio's timer wheel and taken out again every time.
    response_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    pub fn new(stream: Stream) -> Box<Self> {
        Box::new(Self {
            stream,
            buf: ReadSize::buffer(),
            out: BytesMut::new(),
            decoder: Decoder::new(http1::Framing::Empty, BodyLimits::default()),
            read_size: ReadSize::default(),
            response_timer: None,
        })
    }

    /// Whether an idle connection is no longer fit for a request: the server closed it, or
    /// sent bytes nobody asked for, or it failed. Costs no system call on a plain connection
    /// unless the socket was reported readable.
    pub fn is_closed(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match &mut self.stream {
            Stream::Plain(s) => {
                !matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(s) => {
                // Records that carry no data (a TLS 1.3 session ticket) are taken in and the
                // read stays pending; a close_notify, data or an error ends it. Nothing has to
                // be woken: the next request polls again.
                let mut cx = Context::from_waker(Waker::noop());
                let mut read = ReadBuf::new(&mut probe);
                Pin::new(s.as_mut())
                    .poll_read(&mut cx, &mut read)
                    .is_ready()
            }
        }
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        read::poll_read_more(&mut self.stream, &mut self.buf, &mut self.read_size, cx)
    }

    /// Writes the request head, with the body's framing decided as hyper's client decides
    /// it: a Content-Length or Transfer-Encoding already there is kept, a body that is
    /// already over gets none, one of known size a Content-Length, the rest is chunked.
    fn encode_head(
        &mut self,
        request: &Request<RequestBody>,
        fields: Option<&ForwardingFields>,
    ) -> Outgoing {
        let headers = request.headers();
        let body = request.body();
        // A request with its forwarding fields apart has no Transfer-Encoding field, and one
        // with no body needs no framing field looked up: a Content-Length it has is zero.
        let (outgoing, added) = if fields.is_some() && body.is_end_stream() {
            (Outgoing::Done, None)
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            (Outgoing::Chunked, None)
        } else if headers.contains_key(header::CONTENT_LENGTH) {
            (Outgoing::Raw, None)
        } else if body.is_end_stream() {
            (Outgoing::Done, None)
        } else {
            match body.size_hint().exact() {
                Some(len) => (Outgoing::Raw, Some(Some(len))),
                None => (Outgoing::Chunked, Some(None)),
            }
        };
        if self.out.capacity() == 0 {
            self.out = spare::take_write_buffer();
        }
        let out = &mut self.out;
        http1::encode::encode_request_head(
            request.method(),
            request.uri(),
            http::Version::HTTP_11,
            headers,
            out,
        );
        if added.is_some() || fields.is_some() {
            // In place of the head's empty line, which follows again.
            out.truncate(out.len() - 2);
            if let Some(fields) = fields {
                fields.write(out);
            }
            match added {
                Some(Some(len)) => {
                    out.put_slice(b"content-length: ");
                    put_decimal(len, out);
                    out.put_slice(b"\r\n");
                }
                Some(None) => out.put_slice(b"transfer-encoding: chunked\r\n"),
                None => {}
            }
            out.put_slice(b"\r\n");
        }
        outgoing
    }

    /// Moves the request body on: gathers the frames that are ready into the write buffer
    /// and writes it. Ready once all of it is written and flushed.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut RequestBody,
        outgoing: &mut Outgoing,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while *outgoing != Outgoing::Done && self.out.len() < GATHER_LIMIT {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(frame) => frame,
                };
                let chunked = *outgoing == Outgoing::Chunked;
                match frame {
                    None => {
                        if chunked {
                            http1::body::encode_last_chunk(None, &mut self.out);
                        }
                        *outgoing = Outgoing::Done;
                    }
                    Some(Err(error)) => return Poll::Ready(Err(SendError::Body(error))),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if chunked => http1::body::encode_chunk(&data, &mut self.out),
                        Ok(data) => self.out.extend_from_slice(&data),
                        Err(frame) => {
                            // Trailers end the body; only chunked framing can carry them.
                            let trailers = frame.into_trailers().ok();
                            if chunked {
                                http1::body::encode_last_chunk(trailers.as_ref(), &mut self.out);
                            }
                            *outgoing = Outgoing::Done;
                        }
                    },
                }
            }
            if !self.out.is_empty() {
                match ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out)) {
                    Ok(0) => {
                        return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Ok(n) => {
                        self.out.advance(n);
                        continue;
                    }
                    Err(error) => return Poll::Ready(Err(SendError::Io(error))),
                }
            }
            ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(SendError::Io)?;
            return if *outgoing == Outgoing::Done {
                spare::give_back_write_buffer(std::mem::take(&mut self.out));
                Poll::Ready(Ok(()))
            } else {
                // Waiting for the body, which will wake this task.
                Poll::Pending
            };
        }
    }

    /// Reads until a final response head, passing interim ones on to `interim`.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        interim: Option<&InterimSink>,
        received: &mut bool,
        keep_raw: bool,
    ) -> Poll<Result<http1::ResponseHead, Error>> {
        loop {
            if !self.buf.is_empty() {
                match http1::parse_response_keeping(&mut self.buf, &RESPONSE_HEAD, method, keep_raw)
                {
                    Ok(Parsed::Complete(head)) if head.is_interim() => {
                        // 100 Continue is the server's own business: the client got (or
                        // gets) its own from gatehouse when its body is read.
                        if let Some(interim) = interim
                            && let Some(bytes) =
                                crate::headers::interim_head(head.status, &head.headers)
                        {
                            interim.send(&bytes);
                        }
                        continue;
                    }
                    Ok(Parsed::Complete(head)) => return Poll::Ready(Ok(head)),
                    Ok(Parsed::Partial) => {}
                    Err(error) => return Poll::Ready(Err(Error::Head(error))),
                }
            }
            match ready!(self.poll_read_more(cx)) {
                Ok(0) => return Poll::Ready(Err(Error::Closed)),
                Ok(_) => *received = true,
                Err(error) => return Poll::Ready(Err(Error::Io(error))),
            }
        }
    }

    /// The stream after a 101, with what was read past the head.
    fn into_upgraded(self: Box<Self>) -> Upgraded {
        let Connection {
            stream, mut buf, ..
        } = *self;
        Upgraded::new(Box::new(stream), buf.split().freeze())
    }
}

/// Writes `n` in decimal.
fn put_decimal(mut n: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// How the request body goes out, and whether it is all in the write buffer yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    /// As it comes (a Content-Length frames it).
    Raw,
    Chunked,
    /// All of it (with its last chunk) is in the write buffer or written.
    Done,
}

enum SendError {
    Io(io::Error),
    Body(BoxError),
}

/// What went wrong with the server or the connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("invalid response head: {0}")]
    Head(HeadError),
    #[error("invalid response body: {0}")]
    Body(BodyError),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnexpectedUpgrade,
}

/// How an exchange is run, beyond the request.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// Where the upstream's interim (1xx) responses go.
    pub interim: Option<&'a InterimSink>,
    /// A response head that needs no editing may come as bytes (see `exchange`).
    pub keep_raw: bool,
    /// When the response head must have arrived ([`Failure::Timeout`] after).
    pub deadline: Option<tokio::time::Instant>,
    /// Forwarding fields not in the request's map, written after its fields.
    pub fields: Option<&'a ForwardingFields>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The server or the connection; `nothing_received` when no byte of a response came, so a
    /// request that can be sent again may be, on a new connection.
    Upstream {
        error: Error,
        nothing_received: bool,
    },
    /// The request's own body could not be read (too large, or the client's stream failed).
    RequestBody(BoxError),
    /// No response head by the deadline.
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Upstream { error, .. } => write!(f, "{error}"),
            Failure::RequestBody(error) => write!(f, "request body: {error}"),
            Failure::Timeout => f.write_str("response timeout"),
        }
    }
}

/// Sends `request` on `conn` and reads the final response head, passing interim responses on
/// to `options.interim`, within `options.deadline`. The request's body is read through its
/// `Body` implementation; a body that is to be sent again on failure must be copied before
/// (`RequestBody::try_clone`). The response's body owns the connection. With
/// `options.keep_raw`, a response head that needs no editing comes with an empty map and its
/// fields as bytes in the body (`Http1Body::take_raw`), for a caller that passes it on as it
/// is.
pub async fn exchange(
    mut conn: Box<Connection>,
    request: &mut Request<RequestBody>,
    options: Options<'_>,
) -> Result<Response<Http1Body>, Failure> {
    let Options {
        interim,
        keep_raw,
        deadline,
        fields,
    } = options;
    if let Some(deadline) = deadline {
        match &mut conn.response_timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => conn.response_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
    conn.read_size.start_message(&mut conn.buf);
    let mut outgoing = conn.encode_head(request, fields);
    // A request with its forwarding fields apart has no hop-by-hop field in its map.
    let (asked_upgrade, close) = match fields {
        Some(_) => (false, false),
        None => (
            request.headers().contains_key(header::UPGRADE),
            asks_to_close(request.headers()),
        ),
    };
    let method = request.method().clone();
    let body = request.body_mut();
    let mut received = false;
    let mut write_error = None;
    let mut sent = false;
    let polled = std::future::poll_fn(|cx| {
        if !sent && write_error.is_none() {
            match conn.poll_send(cx, body, &mut outgoing) {
                Poll::Ready(Ok(())) => sent = true,
                Poll::Ready(Err(SendError::Body(error))) => {
                    return Poll::Ready(Err(Failure::RequestBody(error)));
                }
                // The server may have answered before it stopped reading (a 413 and close):
                // that answer is already here if it was sent, and wins over the error.
                Poll::Ready(Err(SendError::Io(error))) => write_error = Some(error),
                Poll::Pending => {}
            }
        }
        let head = conn.poll_head(cx, &method, interim, &mut received, keep_raw);
        match (head, write_error.take()) {
            (Poll::Ready(Ok(head)), _) => Poll::Ready(Ok(head)),
            (Poll::Pending, None) => {
                let timed_out = deadline.is_some()
                    && conn
                        .response_timer
                        .as_mut()
                        .is_some_and(|timer| timer_fired(timer, cx));
                if timed_out {
                    Poll::Ready(Err(Failure::Timeout))
                } else {
                    Poll::Pending
                }
            }
            (Poll::Ready(Err(error)), Some(write)) if !received => {
                let error = match error {
                    Error::Closed | Error::Io(_) => Error::Io(write),
                    other => other,
                };
                Poll::Ready(Err(Failure::Upstream {
                    error,
                    nothing_received: true,
                }))
            }
            (Poll::Pending, Some(write)) => Poll::Ready(Err(Failure::Upstream {
                error: Error::Io(write),
                nothing_received: !received,
            })),
            (Poll::Ready(Err(error)), _) => Poll::Ready(Err(Failure::Upstream {
                error,
                nothing_received: !received,
            })),
        }
    })
    .await;
    let head = polled?;
    if conn.out.capacity() > KEPT_WRITE_BUFFER {
        conn.out = BytesMut::new();
    }
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        if !asked_upgrade {
            return Err(Failure::Upstream {
                error: Error::UnexpectedUpgrade,
                nothing_received: false,
            });
        }
        let mut response = Response::new(Http1Body::upgrade(conn));
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        return Ok(response);
    }
    // An answer before the whole request went out leaves the connection mid-request.
    let reusable = sent && !close && head.keep_alive();
    conn.decoder = Decoder::new(head.framing, BodyLimits::default());
    // The codec left room in the map for the fields the proxy and a cache add.
    let headers = head.headers;
    let mut body = Http1Body::new(conn, reusable);
    body.raw = head.raw;
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Whether the response timer has fired. A task whose reads and writes above used up its
/// cooperative budget would be told Pending by the timer too, every time, while an upstream
/// that never stops sending (interim responses in a loop) kept it busy: as tokio's own
/// `timeout` does, the timer is then polled outside the budget.
fn timer_fired(timer: &mut Pin<Box<tokio::time::Sleep>>, cx: &mut Context<'_>) -> bool {
    if tokio::task::coop::has_budget_remaining() {
        timer.as_mut().poll(cx).is_ready()
    } else {
        std::pin::pin!(tokio::task::coop::unconstrained(timer.as_mut()))
            .poll(cx)
            .is_ready()
    }
}

/// Whether the request's Connection field holds `close`.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// A response body read from an upstream connection, which it owns until the body ends.
pub struct Http1Body {
    /// None once the body failed or its connection was handed over.
    conn: Option<Box<Connection>>,
    /// The connection may carry another request once the body has ended.
    reusable: bool,
    /// A 101: no body, the connection is the upgraded stream.
    upgrade: bool,
    /// A chunked body's trailers, read and not yet handed out.
    trailers: Option<Box<HeaderMap>>,
    /// The error that ended the body, handed out at the next poll (see `fail`).
    failed: Option<BoxError>,
    /// The response head's fields, when kept as bytes (see `exchange`).
    raw: Option<Box<http1::RawFields>>,
}

impl Http1Body {
    fn new(conn: Box<Connection>, reusable: bool) -> Self {
        Self {
            conn: Some(conn),
            reusable,
            upgrade: false,
            trailers: None,
            failed: None,
            raw: None,
        }
    }

    fn upgrade(conn: Box<Connection>) -> Self {
        Self {
            conn: Some(conn),
            reusable: false,
            upgrade: true,
            trailers: None,
            failed: None,
            raw: None,
        }
    }

    /// After a 101: the connection as a byte stream, once.
    pub fn take_upgrade(&mut self) -> Option<Upgraded> {
        if !self.upgrade {
            return None;
        }
        self.conn.take().map(Connection::into_upgraded)
    }

    /// The response head's fields kept as bytes, once (see `exchange`).
    pub fn raw_mut(&mut self) -> Option<&mut http1::RawFields> {
        self.raw.as_deref_mut()
    }

    pub fn take_raw(&mut self) -> Option<Box<http1::RawFields>> {
        self.raw.take()
    }

    /// The connection, once the body has ended cleanly and it may carry another request.
    pub fn take_reusable(&mut self) -> Option<Box<Connection>> {
        let conn = self.conn.as_ref()?;
        // Bytes after the body's end are bytes nobody asked for.
        if !self.reusable || !conn.decoder.is_done() || !conn.buf.is_empty() {
            return None;
        }
        self.conn.take()
    }

    /// Ends the body with `error`, one turn later: hyper's HTTP/2 server writes out what it
    /// holds (the head, data already given) only when the body is pending, and an error cuts
    /// the stream at once. What the upstream did send reaches the client before the cut.
    fn fail(
        &mut self,
        error: Error,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.failed = Some(Box::new(error));
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*trailers))));
        }
        if this.upgrade {
            return Poll::Ready(None);
        }
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            if conn.decoder.is_done() {
                return Poll::Ready(None);
            }
            match conn.decoder.decode_buf(&mut conn.buf) {
                Ok(data) => {
                    if conn.decoder.is_done() {
                        // Held here so that the body does not look ended before they are out.
                        this.trailers = conn.decoder.take_trailers().map(Box::new);
                    }
                    match data {
                        Some(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        None if conn.decoder.is_done() => {
                            return Poll::Ready(
                                this.trailers.take().map(|t| Ok(Frame::trailers(*t))),
                            );
                        }
                        None => {}
                    }
                }
                Err(error) => return this.fail(Error::Body(error), cx),
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) => match conn.decoder.finish() {
                    // A body read until the connection closed: done, and not reusable.
                    Ok(()) => this.reusable = false,
                    Err(error) => return this.fail(Error::Body(error), cx),
                },
                Ok(_) => {}
                Err(error) => return this.fail(Error::Io(error), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.trailers.is_some() {
            return false;
        }
        match &self.conn {
            None => self.failed.is_none(),
            Some(_) if self.upgrade => true,
            Some(conn) => conn.decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.conn {
            Some(conn) if !self.upgrade => match conn.decoder.state() {
                http1::body::DecoderState::Empty => SizeHint::with_exact(0),
                http1::body::DecoderState::Length { remaining } => SizeHint::with_exact(remaining),
                _ => SizeHint::default(),
            },
            _ => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(n, &mut out);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn close_is_found_among_connection_options() {
        let mut headers = HeaderMap::new();
        assert!(!asks_to_close(&headers));
        headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
        assert!(!asks_to_close(&headers));
        headers.append(header::CONNECTION, "x-a, Close ".parse().unwrap());
        assert!(asks_to_close(&headers));
    }
}
