//! HTTP/3 (RFC 9114) on an `http3` listener: a QUIC endpoint (quinn) on the listener's port
//! over UDP, with the listener's TLS settings (its SNI resolver, so rotation and reload apply
//! alike; ALPN `h3`), serving each request stream through the same `Proxy::handle` as HTTP/1.1
//! and HTTP/2. A drain sends GOAWAY and lets the requests in flight finish.
//!
//! Early data (0-RTT) is off unless the listener says `early_data`. Then a connection takes
//! requests before its handshake completes, and a request whose head is read before then is
//! treated as early (RFC 8470): a safe method is forwarded with `Early-Data: 1`, any other is
//! answered 425 Too Early, for the client to send again once the handshake is done. The test is
//! exact: quinn signals the handshake's completion before it hands over any stream data that
//! came after it, and a replayed ClientHello never completes a handshake.

use super::{DrainWatch, ListenerSettings, SharedSettings};
use crate::connection::{self, Connections};
use crate::proxy::body::ResponseBody;
use crate::proxy::{ClientInfo, Proxy};
use crate::request_body::{BoxError, ClientBody};
use crate::snapshot::Limits;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::future::Shared;
use h3::error::Code;
use h3::server::RequestStream;
use http::{HeaderMap, HeaderName, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::{IntCounter, IntGauge};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Request streams a client may have open at once on one connection (hyper's default for
/// HTTP/2 is 200; browsers open far fewer).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// How long a QUIC handshake may take before the connection is dropped, at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One `http3` listener's QUIC side, ready to serve.
pub struct QuicListener {
    pub index: usize,
    pub name: String,
    pub udp: std::net::UdpSocket,
    pub settings: SharedSettings,
    pub open_connections: IntGauge,
    pub requests: IntCounter,
}

/// Closes every connection of the endpoint when the accept loop ends, however it ends (an
/// abort after the drain timeout included): what the drain did not finish is cut here.
struct EndpointGuard(quinn::Endpoint);

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.close(H3_NO_ERROR, b"shutting down");
    }
}

/// The endpoint's QUIC settings: the listener's TLS, with the transport limits in force.
/// Built on `base` (the endpoint's first settings) when there is one, so that the key of its
/// address-validation tokens and the log of tokens used outlive reloads: a returning client's
/// token (RFC 9000 §8.1.3) lifts the 3× amplification limit on what may be sent before the
/// handshake completes, which early data's answers need.
fn server_config(
    settings: &ListenerSettings,
    limits: &Limits,
    base: Option<&quinn::ServerConfig>,
) -> Option<quinn::ServerConfig> {
    let crypto = settings.tls.as_ref()?.quic.clone()?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        .max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok());
    let mut config = match base {
        Some(base) => {
            let mut config = base.clone();
            config.crypto = crypto;
            config
        }
        None => quinn::ServerConfig::with_crypto(crypto),
    };
    config.transport_config(Arc::new(transport));
    Some(config)
}

/// The settings and limits a server config was built from, to rebuild it only when they change.
struct ConfigInForce {
    settings: Arc<ListenerSettings>,
    limits: Limits,
    config: Option<Arc<quinn::ServerConfig>>,
    /// The first config built: what later ones keep (token key, token log).
    base: Option<quinn::ServerConfig>,
}

impl ConfigInForce {
    fn new(settings: Arc<ListenerSettings>, limits: Limits) -> Self {
        let base = server_config(&settings, &limits, None);
        Self {
            config: base.clone().map(Arc::new),
            base,
            settings,
            limits,
        }
    }

    /// The server config in force, and whether it changed since the last call.
    fn current(
        &mut self,
        shared: &SharedSettings,
        proxy: &Proxy,
    ) -> (Option<Arc<quinn::ServerConfig>>, bool) {
        let settings = shared.load_full();
        let limits = proxy.snapshot().load().limits;
        let changed = !Arc::ptr_eq(&settings, &self.settings) || limits != self.limits;
        if changed {
            let config = server_config(&settings, &limits, self.base.as_ref());
            if self.base.is_none() {
                self.base.clone_from(&config);
            }
            self.config = config.map(Arc::new);
            self.settings = settings;
            self.limits = limits;
        }
        (self.config.clone(), changed)
    }
}

/// Accepts QUIC connections until `drain` signals shutdown; then each open connection sends
/// GOAWAY and finishes its requests, and new ones are refused until this task is ended.
pub async fn serve(listener: QuicListener, proxy: Arc<Proxy>, drain: DrainWatch) {
    let settings = listener.settings.load_full();
    let limits = proxy.snapshot().load().limits;
    let mut in_force = ConfigInForce::new(settings, limits);
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        in_force.config.as_deref().cloned(),
        listener.udp,
        Arc::new(quinn::TokioRuntime),
    ) {
        Ok(endpoint) => EndpointGuard(endpoint),
        Err(e) => {
            tracing::error!(listener = %listener.name, error = %e, "cannot serve HTTP/3");
            return;
        }
    };
    let connections = Connections::new();
    let mut stop = drain.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.0.accept() => incoming,
            () = stop.signalled() => break,
        };
        let Some(incoming) = incoming else { break };
        let (config, changed) = in_force.current(&listener.settings, &proxy);
        let Some(config) = config else {
            incoming.refuse();
            continue;
        };
        // New connections get the settings in force (a rotated certificate, new limits).
        if changed {
            endpoint.0.set_server_config(Some((*config).clone()));
        }
        let connecting = match incoming.accept_with(config) {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(listener = %listener.name, error = %e, "QUIC connection refused");
                continue;
            }
        };
        let peer = connecting.remote_address();
        let connection = QuicConnection {
            proxy: Arc::clone(&proxy),
            settings: listener.settings.load_full(),
            client: ClientInfo {
                https: true,
                ..ClientInfo::new(listener.index, peer)
            },
            registration: connections.register(),
            open_connections: listener.open_connections.clone(),
            requests: listener.requests.clone(),
            drain: drain.clone(),
            head_timeout: Duration::ZERO,
        };
        tokio::spawn(connection.serve(connecting));
    }
    // Open connections are told to go away by their own watches. New ones are refused at
    // once (CONNECTION_REFUSED), rather than left to time out, until the drain is over and
    // this task is ended (which closes the endpoint and frees the port).
    drop(stop);
    drop(drain);
    tracing::info!(listener = %listener.name, "stopped accepting HTTP/3");
    while let Some(incoming) = endpoint.0.accept().await {
        incoming.refuse();
    }
}

/// What serving one QUIC connection needs.
struct QuicConnection {
    proxy: Arc<Proxy>,
    settings: Arc<ListenerSettings>,
    client: ClientInfo,
    registration: connection::Registration,
    open_connections: IntGauge,
    requests: IntCounter,
    drain: DrainWatch,
    /// `limits.header_read_timeout`: how long a request stream may take to send its head.
    head_timeout: Duration,
}

/// Whether a connection's handshake is complete; `pending` while requests may still arrive in
/// early data.
#[derive(Clone)]
struct Handshake {
    pending: Option<Shared<quinn::ZeroRttAccepted>>,
}

impl Handshake {
    const COMPLETE: Self = Self { pending: None };

    /// Checked when a request's head has been read: true once the client's Finished has been
    /// processed, so the request cannot be a replay.
    fn complete(&self) -> bool {
        self.pending.as_ref().is_none_or(|pending| {
            pending.peek().is_some() || pending.clone().now_or_never().is_some()
        })
    }
}

/// How a QUIC handshake ended.
enum HandshakeEnd {
    Done,
    Failed(quinn::ConnectionError),
    TimedOut,
}

impl QuicConnection {
    /// Counts the handshake's end in the listener's TLS metrics; false if it did not succeed.
    fn handshake_ended(&self, started: std::time::Instant, end: HandshakeEnd) -> bool {
        let tls = self.settings.tls.as_ref().map(|tls| &tls.handshakes);
        match end {
            HandshakeEnd::Done => {
                if let Some(metrics) = tls {
                    metrics.duration.observe(started.elapsed().as_secs_f64());
                    metrics.tls13.inc();
                }
                true
            }
            HandshakeEnd::Failed(e) => {
                if let Some(metrics) = tls {
                    metrics.failed.inc();
                }
                tracing::debug!(client = %self.client.addr, error = %e, "QUIC handshake failed");
                false
            }
            HandshakeEnd::TimedOut => {
                if let Some(metrics) = tls {
                    metrics.timed_out.inc();
                }
                tracing::debug!(client = %self.client.addr, "QUIC handshake timed out");
                false
            }
        }
    }

    async fn serve(mut self, connecting: quinn::Connecting) {
        let started = std::time::Instant::now();
        // With early data, the connection is served from its first flight, and the handshake
        // is awaited (with its timeout) beside the requests.
        let early = if self.settings.early_data {
            connecting.into_0rtt()
        } else {
            Err(connecting)
        };
        let (quic, handshake) = match early {
            Ok((quic, accepted)) => (
                quic,
                Handshake {
                    pending: Some(accepted.shared()),
                },
            ),
            Err(connecting) => {
                let end = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                    Ok(Ok(quic)) => Ok(quic),
                    Ok(Err(e)) => Err(HandshakeEnd::Failed(e)),
                    Err(_) => Err(HandshakeEnd::TimedOut),
                };
                match end {
                    Ok(quic) => {
                        self.handshake_ended(started, HandshakeEnd::Done);
                        (quic, Handshake::COMPLETE)
                    }
                    Err(end) => {
                        self.handshake_ended(started, end);
                        return;
                    }
                }
            }
        };
        // Held until the connection ends, as on TCP (a trusted proxy carries many clients).
        let trusted = self
            .settings
            .real_ip
            .as_ref()
            .is_some_and(|real_ip| real_ip.reads_requests_from(self.client.peer.ip()));
        let _client_place = match &self.settings.per_client {
            Some(per_client) if !trusted => match per_client.admit(self.client.addr.ip()) {
                Some(place) => Some(place),
                None => {
                    tracing::debug!(client = %self.client.addr, limit = per_client.limit, "QUIC connection refused: too many from this client");
                    quic.close(H3_EXCESSIVE_LOAD, b"too many connections from this client");
                    return;
                }
            },
            _ => None,
        };
        self.open_connections.inc();
        let limits = self.proxy.snapshot().load().limits;
        self.head_timeout = limits.header_read_timeout;
        let built = h3::server::builder()
            .max_field_section_size(u64::try_from(limits.max_header_bytes).unwrap_or(u64::MAX))
            .build(h3_quinn::Connection::new(quic.clone()))
            .await;
        match built {
            Ok(mut h3) => {
                self.serve_requests(&mut h3, &quic, handshake, started)
                    .await
            }
            Err(e) => {
                tracing::debug!(client = %self.client.addr, error = %e, "HTTP/3 setup failed")
            }
        }
        self.open_connections.dec();
    }

    /// Takes request streams until the client goes, or until a drain: then GOAWAY, the
    /// requests already taken are answered, and the connection is closed.
    async fn serve_requests(
        &mut self,
        h3: &mut H3Connection,
        quic: &quinn::Connection,
        handshake: Handshake,
        started: std::time::Instant,
    ) {
        let mut stop = self.drain.clone();
        let mut requests = tokio::task::JoinSet::new();
        let mut closing = false;
        let awaiting_handshake = handshake.pending.clone();
        let handshake_done = async {
            match awaiting_handshake {
                Some(accepted) => {
                    let deadline = tokio::time::Instant::from_std(started + HANDSHAKE_TIMEOUT);
                    match tokio::time::timeout_at(deadline, accepted).await {
                        // The value means nothing on a server; a failure closes the connection.
                        Ok(_) => match quic.close_reason() {
                            Some(e) => HandshakeEnd::Failed(e),
                            None => HandshakeEnd::Done,
                        },
                        Err(_) => HandshakeEnd::TimedOut,
                    }
                }
                None => std::future::pending().await,
            }
        };
        let mut handshake_done = std::pin::pin!(handshake_done);
        let mut handshaking = handshake.pending.is_some();
        loop {
            tokio::select! {
                end = &mut handshake_done, if handshaking => {
                    handshaking = false;
                    if !self.handshake_ended(started, end) {
                        quic.close(H3_NO_ERROR, b"handshake not completed");
                        break;
                    }
                }
                accepted = h3.accept() => match accepted {
                    Ok(Some(resolver)) => {
                        self.requests.inc();
                        let request = Request {
                            proxy: Arc::clone(&self.proxy),
                            settings: Arc::clone(&self.settings),
                            client: self.client.clone(),
                            control: Arc::clone(&self.registration.control),
                            head_timeout: self.head_timeout,
                            handshake: handshake.clone(),
                        };
                        requests.spawn(request.serve(resolver));
                    }
                    // The client closed, or went away itself.
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(client = %self.client.addr, error = %e, "HTTP/3 connection ended");
                        break;
                    }
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
                () = stop.signalled(), if !closing => {
                    closing = true;
                    // GOAWAY naming the stream after the last one taken: every request
                    // taken is answered, later ones the client knows to send elsewhere.
                    if let Err(e) = h3.shutdown(1).await {
                        tracing::debug!(client = %self.client.addr, error = %e, "HTTP/3 GOAWAY failed");
                        break;
                    }
                }
            }
            if closing && requests.is_empty() {
                // The last response's final bytes may not be acknowledged yet, and closing
                // drops what is unacknowledged: give them a few round trips (or the client
                // the chance to close first).
                let linger = (quic.rtt() * 4).clamp(LINGER_MIN, LINGER_MAX);
                let _ = tokio::time::timeout(linger, quic.closed()).await;
                quic.close(H3_NO_ERROR, b"");
                return;
            }
        }
        // The connection is gone: requests still running only finish their upstream side.
        while requests.join_next().await.is_some() {}
    }
}

/// RFC 9114 §8.1: closing with no error, and for a peer generating excessive load.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);
const H3_EXCESSIVE_LOAD: quinn::VarInt = quinn::VarInt::from_u32(0x107);
/// How long a draining connection waits, once its requests are answered, before it closes.
const LINGER_MIN: Duration = Duration::from_millis(100);
const LINGER_MAX: Duration = Duration::from_secs(2);

type H3Connection = h3::server::Connection<h3_quinn::Connection, Bytes>;
type H3Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
type H3Send = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type H3Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type H3Recv = RequestStream<h3_quinn::RecvStream, Bytes>;

/// One request stream.
struct Request {
    proxy: Arc<Proxy>,
    settings: Arc<ListenerSettings>,
    client: ClientInfo,
    control: Arc<connection::ConnectionControl>,
    head_timeout: Duration,
    handshake: Handshake,
}

impl Request {
    async fn serve(self, resolver: H3Resolver) {
        // A stream that never sends its head would hold one of the connection's stream
        // places until the connection goes idle.
        let resolved = tokio::time::timeout(self.head_timeout, resolver.resolve_request()).await;
        let (request, mut stream) = match resolved {
            Ok(Ok(resolved)) => resolved,
            // h3 has answered (431) or reset the stream already.
            Ok(Err(e)) => {
                tracing::debug!(client = %self.client.addr, error = %e, "HTTP/3 request refused");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %self.client.addr, "HTTP/3 request head timed out");
                return;
            }
        };
        if let Some(name) = connection_specific_field(request.headers()) {
            // RFC 9114 §4.2: a malformed request, a stream error.
            tracing::debug!(client = %self.client.addr, field = %name, "HTTP/3 request with a connection-specific field refused");
            stream.stop_stream(Code::H3_MESSAGE_ERROR);
            stream.stop_sending(Code::H3_MESSAGE_ERROR);
            self.proxy.record_rejected_head(
                &self.client,
                http::Version::HTTP_3,
                http::StatusCode::BAD_REQUEST,
            );
            return;
        }
        let client = match &self.settings.real_ip {
            Some(real_ip) if real_ip.reads_requests_from(self.client.peer.ip()) => {
                real_ip.client_of(&self.client, request.headers())
            }
            _ => std::borrow::Cow::Borrowed(&self.client),
        };
        // RFC 8470 §5: a request in early data may be a replay; only a safe one goes on, and
        // marked so that the upstream can refuse it too.
        let in_early_data = !self.handshake.complete();
        if in_early_data && !request.method().is_safe() {
            self.too_early(&client, request, stream).await;
            return;
        }
        let mut request = request;
        if in_early_data {
            request
                .headers_mut()
                .insert(&EARLY_DATA, http::HeaderValue::from_static("1"));
        }
        let (mut send, mut recv) = stream.split();
        // A GET or HEAD without Content-Length nearly always ends with its head, but the
        // stream's end may come in a later packet: it is awaited (within the head timeout),
        // so that the request goes upstream without a body rather than with an empty chunked
        // one. Other methods go on at once, their bodies streamed as they come.
        let awaits_end = matches!(*request.method(), http::Method::GET | http::Method::HEAD)
            && !request.headers().contains_key(header::CONTENT_LENGTH);
        let first = if awaits_end {
            first_data_within(&mut recv, self.head_timeout).await
        } else {
            first_data(&mut recv)
        };
        let body = match first {
            FirstData::Ended => ClientBody::Empty,
            FirstData::Some(first) => {
                ClientBody::Own(Box::pin(H3Body::new(recv, first, request.headers())))
            }
            FirstData::Failed(e) => {
                tracing::debug!(client = %self.client.addr, error = %e, "HTTP/3 request body failed");
                return;
            }
        };
        let request = request.map(|()| body);
        let in_flight = self.control.request_started(true);
        // Alt-Svc is for clients on TCP: this one is on HTTP/3 already.
        let handling = super::answer(
            &self.proxy,
            &self.settings,
            &client,
            request,
            in_flight,
            false,
        );
        let Ok(response) = handling.await;
        if let Err(e) = respond(&mut send, response).await {
            tracing::debug!(client = %client.addr, error = %e, "HTTP/3 response not finished");
        }
    }

    /// 425 Too Early (RFC 8470 §5.2) for a request that must not be processed in early data;
    /// its body is not read.
    async fn too_early(
        &self,
        client: &ClientInfo,
        request: http::Request<()>,
        mut stream: H3Stream,
    ) {
        tracing::debug!(client = %client.addr, method = %request.method(), "HTTP/3 request in early data answered 425");
        let request = request.map(|()| ClientBody::Empty);
        let in_flight = self.control.request_started(true);
        let handling = self
            .proxy
            .answer_locally(client, request, in_flight, |_, _| {
                crate::proxy::local_response(
                    http::StatusCode::TOO_EARLY,
                    "sent in early data: send it again once the handshake is complete",
                )
            });
        let Ok(response) = handling.await;
        stream.stop_sending(Code::H3_NO_ERROR);
        let (mut send, _recv) = stream.split();
        if let Err(e) = respond(&mut send, response).await {
            tracing::debug!(client = %client.addr, error = %e, "HTTP/3 response not finished");
        }
    }
}

/// `Early-Data` (RFC 8470 §5.1).
static EARLY_DATA: HeaderName = HeaderName::from_static("early-data");

/// Fields that mean something for one connection only, which HTTP/3 forbids (RFC 9114 §4.2):
/// a request carrying one is malformed. TE is allowed with the value "trailers" alone.
fn connection_specific_field(headers: &HeaderMap) -> Option<&'static str> {
    static FORBIDDEN: [(&HeaderName, &str); 4] = [
        (&header::CONNECTION, "connection"),
        (&header::TRANSFER_ENCODING, "transfer-encoding"),
        (&header::UPGRADE, "upgrade"),
        (&crate::headers::KEEP_ALIVE, "keep-alive"),
    ];
    if let Some((_, name)) = FORBIDDEN
        .iter()
        .find(|(name, _)| headers.contains_key(*name))
    {
        return Some(name);
    }
    if headers.contains_key(&crate::headers::PROXY_CONNECTION) {
        return Some("proxy-connection");
    }
    let te_other_than_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|value| !value.as_bytes().eq_ignore_ascii_case(b"trailers"));
    te_other_than_trailers.then_some("te")
}

/// The response's fields that HTTP/3 forbids (RFC 9114 §4.2), should an upstream or a local
/// answer carry one.
fn remove_connection_specific(headers: &mut HeaderMap) {
    for name in [
        &header::CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &crate::headers::KEEP_ALIVE,
        &crate::headers::PROXY_CONNECTION,
        &header::TE,
    ] {
        headers.remove(name);
    }
}

/// Sends the response: its head, its body as it comes, its trailers, then the end of stream.
async fn respond(send: &mut H3Send, response: Response<ResponseBody>) -> Result<(), BoxError> {
    let (mut parts, mut body) = response.into_parts();
    remove_connection_specific(&mut parts.headers);
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    send.send_data(data).await?;
                }
            }
            Err(frame) => {
                if let Ok(mut trailers) = frame.into_trailers() {
                    remove_connection_specific(&mut trailers);
                    send.send_trailers(trailers).await?;
                    return Ok(());
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}

enum FirstData {
    /// The stream ended with its head: no body (most GETs, sent with the head in one packet).
    Ended,
    /// A body follows (or may): what has arrived of it already, if anything.
    Some(Option<Bytes>),
    Failed(h3::error::StreamError),
}

/// Looks, without waiting, at what follows the request's head: a request whose stream ended
/// with it goes on without a body, as an HTTP/2 request with END_STREAM on its HEADERS does.
fn first_data(recv: &mut H3Recv) -> FirstData {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match recv.poll_recv_data(&mut cx) {
        Poll::Ready(Ok(None)) => after_the_data(recv),
        Poll::Ready(Ok(Some(mut data))) => {
            FirstData::Some(Some(data.copy_to_bytes(data.remaining())))
        }
        Poll::Ready(Err(e)) => FirstData::Failed(e),
        Poll::Pending => FirstData::Some(None),
    }
}

/// A request whose DATA frames ended before any came: ended, unless trailers follow (rare;
/// they still need reading).
fn after_the_data(recv: &mut H3Recv) -> FirstData {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match recv.poll_recv_trailers(&mut cx) {
        Poll::Ready(Ok(None)) => FirstData::Ended,
        _ => FirstData::Some(None),
    }
}

/// `first_data`, waiting up to `limit` for the first DATA frame or the stream's end.
async fn first_data_within(recv: &mut H3Recv, limit: Duration) -> FirstData {
    let arrived = tokio::time::timeout(limit, std::future::poll_fn(|cx| recv.poll_recv_data(cx)));
    match arrived.await {
        Ok(Ok(None)) => after_the_data(recv),
        Ok(Ok(Some(mut data))) => FirstData::Some(Some(data.copy_to_bytes(data.remaining()))),
        Ok(Err(e)) => FirstData::Failed(e),
        Err(_) => FirstData::Some(None),
    }
}

/// A request body read from its HTTP/3 stream: DATA frames, then trailers.
struct H3Body {
    recv: H3Recv,
    first: Option<Bytes>,
    state: BodyState,
    /// Content-Length, when the request gave one.
    length: Option<u64>,
}

#[derive(PartialEq, Eq)]
enum BodyState {
    Data,
    Trailers,
    Done,
}

impl H3Body {
    fn new(recv: H3Recv, first: Option<Bytes>, headers: &HeaderMap) -> Self {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Self {
            recv,
            first,
            state: BodyState::Data,
            length,
        }
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.state == BodyState::Data {
            match this.recv.poll_recv_data(cx) {
                Poll::Ready(Ok(Some(mut data))) => {
                    let data = data.copy_to_bytes(data.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Ok(None)) => this.state = BodyState::Trailers,
                Poll::Ready(Err(e)) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if this.state == BodyState::Trailers {
            let trailers = std::task::ready!(this.recv.poll_recv_trailers(cx));
            this.state = BodyState::Done;
            return Poll::Ready(match trailers {
                Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                Ok(None) => None,
                Err(e) => Some(Err(Box::new(e))),
            });
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// Binds the UDP socket of an `http3` listener on the address its TCP side is bound to.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn connection_specific_fields_are_found_and_te_trailers_is_allowed() {
        assert_eq!(
            connection_specific_field(&fields(&[("accept", "*/*")])),
            None
        );
        assert_eq!(
            connection_specific_field(&fields(&[("te", "trailers")])),
            None
        );
        assert_eq!(
            connection_specific_field(&fields(&[("te", "Trailers")])),
            None
        );
        assert_eq!(
            connection_specific_field(&fields(&[("te", "gzip")])),
            Some("te")
        );
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            assert_eq!(
                connection_specific_field(&fields(&[(name, "x")])),
                Some(name),
                "{name}"
            );
        }
    }

    #[test]
    fn connection_specific_fields_leave_responses() {
        let mut map = fields(&[
            ("connection", "close"),
            ("keep-alive", "5"),
            ("content-type", "a/b"),
        ]);
        remove_connection_specific(&mut map);
        assert_eq!(map.len(), 1);
        assert!(map.contains_key(header::CONTENT_TYPE));
    }
}
