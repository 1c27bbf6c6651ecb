//! A prototype HTTP/1.1 client driven in the request's own task with gatehouse's codec
//! (`crate::http1`): no connection task, no request channel, no cross-task wake-ups. The
//! request head (and a body already in memory) goes out in one write, the response head is
//! read and parsed here, and the response body owns the connection and gives it back to the
//! pool when it ends.
//!
//! Only for plain-TCP HTTP/1.1 servers, and only when asked for (`Transport::own_h1`, from
//! `GATEHOUSE_OWN_H1_CLIENT=1` or the upstream's `own_http1_client`). Not supported here:
//! upgrades (a 101 is a 502), sending the body while reading an early response.

use super::ServerState;
use super::pool::{Generation, Sender};
use crate::connection::InterimSink;
use crate::http1::{
    self, BodyError, BodyLimits, Decoder, Framing, HeadConfig, HeadError, Parsed, ResponseHead,
};
use crate::request_body::{BodyTooLarge, BoxError, ClientBodyError, RequestBody};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether `GATEHOUSE_OWN_H1_CLIENT=1` was set, read once.
pub fn enabled_by_env() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var("GATEHOUSE_OWN_H1_CLIENT").is_ok_and(|v| v == "1" || v == "true")
    })
}

/// Room read into at a time.
const READ_CHUNK: usize = 8 * 1024;

/// One plain-TCP HTTP/1.1 connection to a server, with the read buffer it keeps for its life.
pub struct OwnConnection {
    stream: TcpStream,
    buf: BytesMut,
}

impl OwnConnection {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Whether the server closed the connection (or sent bytes nobody asked for) while it was
    /// idle. Costs no system call unless the socket was reported readable.
    pub fn is_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        loop {
            match self.stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_read_ready(cx))?;
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

/// Why an exchange on an own connection failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnError {
    #[error("upstream connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("invalid response head: {0}")]
    Head(HeadError),
    #[error("invalid response body: {0}")]
    Body(BodyError),
    #[error("101 Switching Protocols is not supported by the own HTTP/1.1 client")]
    Upgrade,
}

/// How an exchange failed.
pub enum ExchangeError {
    /// The server or the connection; `nothing_received` when no byte of a response came,
    /// so a request that can be sent again may be, on a new connection.
    Upstream {
        error: OwnError,
        nothing_received: bool,
    },
    BodyTooLarge(BodyTooLarge),
    ClientBody,
}

impl From<OwnError> for ExchangeError {
    fn from(error: OwnError) -> Self {
        ExchangeError::Upstream {
            error,
            nothing_received: false,
        }
    }
}

impl From<io::Error> for ExchangeError {
    fn from(error: io::Error) -> Self {
        OwnError::Io(error).into()
    }
}

fn body_error(error: BoxError) -> ExchangeError {
    if let Some(too_large) = error.downcast_ref::<BodyTooLarge>() {
        return ExchangeError::BodyTooLarge(BodyTooLarge {
            limit: too_large.limit,
        });
    }
    if error.is::<ClientBodyError>() {
        return ExchangeError::ClientBody;
    }
    ExchangeError::ClientBody
}

/// Whether the request's body is still whole after an attempt (so it can be sent again).
pub fn body_is_replayable(request: &Request<RequestBody>) -> bool {
    matches!(
        request.body(),
        RequestBody::Empty | RequestBody::Buffered { .. }
    )
}

/// Sends `request` on `conn` and reads the response head, passing interim responses on to
/// `interim`. An empty or buffered body is only borrowed (the request can be sent again); a
/// streaming one is consumed. The response's body owns the connection and gives it back to
/// `server`'s pool when it ends, if the response allows.
pub async fn exchange(
    mut conn: OwnConnection,
    request: &mut Request<RequestBody>,
    interim: Option<&InterimSink>,
    server: &Arc<ServerState>,
    generation: Generation,
) -> Result<Response<UpstreamBody>, ExchangeError> {
    // The request head, with its framing decided as hyper's client would: a Content-Length
    // sent by the client is kept, otherwise an exact size gets one and the rest is chunked.
    let hint = request.body().size_hint();
    let has_length = request.headers().contains_key(header::CONTENT_LENGTH);
    let empty = matches!(request.body(), RequestBody::Empty);
    let chunked = !has_length && !empty && hint.exact().is_none();
    if !has_length
        && !empty
        && let Some(len) = hint.exact()
    {
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if chunked {
        request.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let mut out = BytesMut::with_capacity(512);
    http1::encode::encode_request_head(
        request.method(),
        request.uri(),
        http::Version::HTTP_11,
        request.headers(),
        &mut out,
    );
    let streaming = match request.body() {
        RequestBody::Empty => false,
        RequestBody::Buffered { data, trailers } if trailers.is_none() || !chunked => {
            if chunked {
                http1::body::encode_chunk(data, &mut out);
                http1::body::encode_last_chunk(None, &mut out);
            } else {
                out.extend_from_slice(data);
            }
            false
        }
        _ => true,
    };
    if let Err(error) = conn.stream.write_all(&out).await {
        return Err(ExchangeError::Upstream {
            error: error.into(),
            nothing_received: true,
        });
    }
    if streaming {
        // Sequentially: the whole body, then the response. An upstream answering early (and
        // not reading the rest) stalls this until the response timeout.
        let mut body = std::mem::replace(request.body_mut(), RequestBody::Empty);
        let mut last_chunk_written = false;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(body_error)?;
            out.clear();
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) if chunked => {
                    http1::body::encode_chunk(&data, &mut out);
                    conn.stream.write_all(&out).await?;
                }
                Ok(data) => conn.stream.write_all(&data).await?,
                Err(frame) => {
                    // Trailers go out only with chunked framing; they end the body.
                    if chunked && let Ok(trailers) = frame.into_trailers() {
                        http1::body::encode_last_chunk(Some(&trailers), &mut out);
                        conn.stream.write_all(&out).await?;
                        last_chunk_written = true;
                    }
                    break;
                }
            }
        }
        if chunked && !last_chunk_written {
            out.clear();
            http1::body::encode_last_chunk(None, &mut out);
            conn.stream.write_all(&out).await?;
        }
    }
    read_response(conn, request, interim, server, generation).await
}

async fn read_response(
    mut conn: OwnConnection,
    request: &Request<RequestBody>,
    interim: Option<&InterimSink>,
    server: &Arc<ServerState>,
    generation: Generation,
) -> Result<Response<UpstreamBody>, ExchangeError> {
    let config = HeadConfig::default();
    let mut received_any = false;
    let head = loop {
        if !conn.buf.is_empty() {
            match http1::parse_response(&mut conn.buf, &config, request.method()) {
                Ok(Parsed::Complete(head)) => {
                    if head.is_interim() {
                        if let Some(interim) = interim
                            && let Some(bytes) =
                                crate::headers::interim_head(head.status, &head.headers)
                        {
                            interim.send(&bytes);
                        }
                        continue;
                    }
                    break head;
                }
                Ok(Parsed::Partial) => {}
                Err(error) => return Err(OwnError::Head(error).into()),
            }
        }
        match conn.read_more().await {
            Ok(0) => {
                return Err(ExchangeError::Upstream {
                    error: OwnError::Closed,
                    nothing_received: !received_any,
                });
            }
            Ok(_) => received_any = true,
            Err(error) => {
                return Err(ExchangeError::Upstream {
                    error: error.into(),
                    nothing_received: !received_any,
                });
            }
        }
    };
    if head.framing == Framing::Tunnel {
        return Err(OwnError::Upgrade.into());
    }
    let keep_alive = head.keep_alive();
    let ResponseHead {
        status,
        version,
        headers,
        framing,
        ..
    } = head;
    let body = OwnBody::new(
        conn,
        Decoder::new(framing, BodyLimits::default()),
        keep_alive.then(|| (Arc::clone(server), generation)),
    );
    let mut response = Response::new(UpstreamBody::Own(body));
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A response body read from an own connection, which it owns until the body ends.
pub struct OwnBody {
    conn: Option<OwnConnection>,
    decoder: Decoder,
    /// Where the connection goes back when the body ends; none when it must close.
    pool: Option<(Arc<ServerState>, Generation)>,
    trailers: Option<http::HeaderMap>,
}

impl OwnBody {
    fn new(
        conn: OwnConnection,
        decoder: Decoder,
        pool: Option<(Arc<ServerState>, Generation)>,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            decoder,
            pool,
            trailers: None,
        };
        if body.decoder.is_done() {
            body.release();
        }
        body
    }

    /// The body has ended: the connection goes back to the pool if the response allows and
    /// nothing unasked-for follows it.
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if let Some((server, generation)) = self.pool.take()
            && conn.buf.is_empty()
        {
            server
                .pool
                .put_back(Sender::Own(conn), generation, Instant::now());
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            if self.decoder.is_done() {
                self.trailers = self.decoder.take_trailers();
                self.release();
                return Poll::Ready(None);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode_buf(&mut conn.buf) {
                Ok(Some(data)) => {
                    if self.decoder.is_done() {
                        self.trailers = self.decoder.take_trailers();
                        self.release();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(None) if self.decoder.is_done() => continue,
                Ok(None) => {}
                Err(error) => return self.fail(OwnError::Body(error)),
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) => {
                    if let Err(error) = self.decoder.finish() {
                        return self.fail(OwnError::Body(error));
                    }
                    // Read until close: done, and the connection is not reused.
                    self.pool = None;
                }
                Ok(_) => {}
                Err(error) => return self.fail(OwnError::Io(error)),
            }
        }
    }

    fn fail(&mut self, error: OwnError) -> Poll<Option<Result<Bytes, BoxError>>> {
        self.conn = None;
        self.pool = None;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

/// An upstream response's body: hyper's (HTTP/2, TLS, or the default HTTP/1.1 client) or one
/// read by the own client.
// Inline, not boxed: a box would cost every own-client response an allocation. The size is
// what the prototype was measured with; shrinking `Decoder` is the better fix.
#[allow(clippy::large_enum_variant)]
pub enum UpstreamBody {
    Hyper(Incoming),
    Own(OwnBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e) as BoxError))),
            },
            UpstreamBody::Own(body) => {
                if let Some(trailers) = body.trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                match ready!(body.poll_data(cx)) {
                    Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(body.trailers.take().map(|t| Ok(Frame::trailers(t)))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::Own(body) => body.decoder.is_done() && body.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::Own(body) => match body.decoder.state() {
                http1::body::DecoderState::Empty => SizeHint::with_exact(0),
                http1::body::DecoderState::Length { remaining } => SizeHint::with_exact(remaining),
                _ => SizeHint::default(),
            },
        }
    }
}
