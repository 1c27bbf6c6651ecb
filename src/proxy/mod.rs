//! The request handler: route the request, pick a server, forward with rewritten headers,
//! stream the response back, and answer failures with a fast, clear 4xx/5xx.

mod access_log;
pub mod body;
mod cache_answer;
mod cached;
mod cors_answer;
mod encode;
mod exchange;
pub mod explain;
mod files;
mod forward_auth;
mod mirror;

mod local;

use crate::config::AccessLogFormat;
use crate::connection::upgrade::{self, PendingUpgrade, UpgradeSlot};
use crate::connection::{InterimSink, RequestInFlight};
use crate::headers::{self, ForwardingFields, HeaderScan, RequestIds, X_REQUEST_ID};
use crate::health::breaker::{Admission, BreakerState};
use crate::limit::{self, Decision, KeySource};
use crate::request_body::{BodyTooLarge, ClientBody, ClientBodyError, RequestBody};
use crate::route::rewrite::{self, Rewritten};
use crate::route::template::{Context as Variables, RequestView};
use crate::route::{MatchedBy, RouteRequest, host_without_port, normalize_path};
use crate::snapshot::{Route, SharedSnapshot};
use crate::trace::{AttemptEnd, RequestTrace};
use crate::upstream::balancer::Tried;
use crate::upstream::body::UpstreamBody;
use crate::upstream::http1::{self as client, Failure};
use crate::upstream::pool::{ConnectError, PoolReturn, Sender};
use crate::upstream::{ServerState, Upstream};
use body::ResponseBody;
use exchange::{Exchange, ExchangeState};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub use cached::side_key;
pub use local::local_response;

/// What the handler knows about the client connection a request came on.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// Index of the listener in the snapshot's listener list.
    pub listener: usize,
    /// The client: the peer, or the address a trusted proxy named (what the access log, rate
    /// limits and metrics go by).
    pub addr: SocketAddr,
    /// The other end of the connection: the socket's, or the source of a PROXY protocol
    /// header from a trusted balancer.
    pub peer: SocketAddr,
    /// The peer's address as the X-Forwarded-For entry this hop appends, formatted once per
    /// connection.
    pub forwarded_for: HeaderValue,
    /// The connection came over TLS (X-Forwarded-Proto: https).
    pub https: bool,
}

impl ClientInfo {
    /// A client that is its connection's peer.
    pub fn new(listener: usize, peer: SocketAddr) -> Self {
        Self {
            listener,
            addr: peer,
            peer,
            forwarded_for: headers::ip_header_value(peer.ip()),
            https: false,
        }
    }

    /// The same connection, for a request whose client a trusted proxy named.
    pub fn with_addr(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            ..self.clone()
        }
    }
}

/// The proxy shared by every connection: the snapshot in force and the request-id source.
pub struct Proxy {
    snapshot: SharedSnapshot,
    request_ids: RequestIds,
}

/// Why forwarding failed, mapped to the status the client gets.
pub(crate) enum ForwardError {
    /// No eligible server; the seconds for Retry-After.
    NoServer(u64),
    Connect(ConnectError),
    Timeout,
    /// An HTTP/2 exchange failed.
    Upstream(hyper::Error),
    /// An HTTP/1.1 exchange failed.
    Http1(client::Error),
    AmbiguousFraming,
    BodyTooLarge,
    ClientBody,
}

impl Proxy {
    pub fn new(snapshot: SharedSnapshot) -> Arc<Self> {
        Arc::new(Self {
            snapshot,
            request_ids: RequestIds::new(),
        })
    }

    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// The record of one request (for metrics and the access log) and its request id, taken
    /// from the client when acceptable, else made here and set on the request.
    fn begin(
        &self,
        client: &ClientInfo,
        parts: &mut http::request::Parts,
        snapshot: &Arc<crate::snapshot::Snapshot>,
        connection: RequestInFlight,
    ) -> (Exchange, RequestId) {
        let start = Instant::now();
        let request_id = match parts.headers.get(&X_REQUEST_ID) {
            Some(id) if headers::acceptable_request_id(id) => RequestId {
                value: id.clone(),
                in_request: true,
            },
            // One the client sent that is not kept is replaced at once.
            Some(_) => {
                let id = self.request_ids.next();
                parts.headers.insert(&X_REQUEST_ID, id.clone());
                RequestId {
                    value: id,
                    in_request: true,
                }
            }
            // A new one goes in the request when it is forwarded (`Routed::handle`).
            None => RequestId {
                value: self.request_ids.next(),
                in_request: false,
            },
        };
        // One branch when tracing is off.
        let trace = snapshot.tracing.as_ref().map(|tracing| {
            let mut trace = Box::new(tracing.begin(&mut parts.headers, start));
            if trace.sampled {
                request_attributes(&mut trace.attributes, client, parts);
            }
            trace
        });
        let exchange = Exchange::new(ExchangeState {
            start,
            method: parts.method.clone(),
            path: match snapshot.access_log {
                AccessLogFormat::Off => String::new(),
                // nginx's `$request` shows the target as sent, query included.
                AccessLogFormat::Combined => parts
                    .uri
                    .path_and_query()
                    .map_or("/", PathAndQuery::as_str)
                    .to_owned(),
                AccessLogFormat::Text | AccessLogFormat::Json => parts.uri.path().to_owned(),
            },
            client: client.addr.ip(),
            version: parts.version,
            referer_and_agent: (snapshot.access_log == AccessLogFormat::Combined).then(|| {
                Box::new((
                    parts.headers.get(header::REFERER).cloned(),
                    parts.headers.get(header::USER_AGENT).cloned(),
                ))
            }),
            status: StatusCode::OK,
            snapshot: Arc::clone(snapshot),
            route: None,
            server: None,
            request_id: request_id.value.clone(),
            in_flight: None,
            connection,
            limits: None,
            trace,
        });
        (exchange, request_id)
    }

    /// Counts and logs the answer the connection gave on its own to a request head it could
    /// not read (400, 414, 431).
    pub fn record_rejected_head(
        &self,
        client: &ClientInfo,
        version: http::Version,
        status: StatusCode,
    ) {
        exchange::record_rejected_head(&self.snapshot.load(), client.addr.ip(), version, status);
    }

    /// Answers with `respond`'s response without routing (a listener's redirect to HTTPS),
    /// counted and logged like every other answer.
    pub fn answer_locally(
        &self,
        client: &ClientInfo,
        request: Request<ClientBody>,
        connection: RequestInFlight,
        respond: impl FnOnce(&http::request::Parts, &HeaderValue) -> Response<ResponseBody>,
    ) -> Handling {
        let snapshot = self.snapshot.load_full();
        let (mut parts, _body) = request.into_parts();
        let (mut exchange, request_id) = self.begin(client, &mut parts, &snapshot, connection);
        let host = match headers::request_host(&parts) {
            Ok(host) => host,
            Err(error) => {
                return Handling::ready(exchange.local(StatusCode::BAD_REQUEST, error.message()));
            }
        };
        let mut response = respond(&parts, &host);
        response
            .headers_mut()
            .insert(&X_REQUEST_ID, request_id.value);
        exchange.status = response.status();
        response.body_mut().set_completion(exchange);
        Handling::ready(response)
    }

    /// Answers one request; `connection` marks it in flight on its client connection until
    /// its response is finished.
    ///
    /// What can be answered at once (a fresh cache hit, a local error) is, with no future
    /// state at all; only the rest becomes one boxed future. A request's future is moved
    /// before it is polled (into the connection's state, or hyper's for HTTP/2), so a large
    /// inline state (forwarding's is several KiB) would cost every request, cache hits
    /// included, its size in copying at each move.
    pub fn handle(
        &self,
        client: &ClientInfo,
        request: Request<ClientBody>,
        connection: RequestInFlight,
    ) -> Handling {
        let snapshot = self.snapshot.load_full();
        let (mut parts, body) = request.into_parts();
        let (
            mut exchange,
            RequestId {
                value: request_id,
                in_request: id_in_request,
            },
        ) = self.begin(client, &mut parts, &snapshot, connection);

        let host_value = match headers::request_host(&parts) {
            Ok(host) => host,
            Err(error) => {
                return Handling::ready(exchange.local(StatusCode::BAD_REQUEST, error.message()));
            }
        };
        // Routed, and forwarded, by its normal path: what the route saw is what the upstream
        // gets (an upstream that normalizes a path the proxy matched as sent could be sent
        // where no route would have let it go).
        let mut sent_uri: Option<Box<Uri>> = None;
        match normalize_path(parts.uri.path(), snapshot.limits.merge_slashes) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(path)) => match with_path(&parts.uri, path) {
                Some(uri) => sent_uri = Some(Box::new(std::mem::replace(&mut parts.uri, uri))),
                None => {
                    return Handling::ready(
                        exchange.local(StatusCode::BAD_REQUEST, "invalid request target"),
                    );
                }
            },
            Err(error) => {
                return Handling::ready(exchange.local(StatusCode::BAD_REQUEST, error.message()));
            }
        }
        let host = host_value.to_str().map(host_without_port).unwrap_or("");
        let chosen = match choose_route(&snapshot, client, host, &mut parts, &mut sent_uri) {
            Ok(Some(chosen)) => chosen,
            Ok(None) => {
                return Handling::ready(
                    exchange.local(StatusCode::NOT_FOUND, "no route for this host and path"),
                );
            }
            Err(message) => {
                return Handling::ready(exchange.local(StatusCode::INTERNAL_SERVER_ERROR, message));
            }
        };
        let route = chosen.route;
        exchange.route = Some(Arc::clone(&route));
        if let Some(edge) = chosen.edge {
            // Redirects that routing decided on go out before access and authentication, as
            // nginx's rewrite phase runs before its access phase: they tell the client nothing
            // but what the config says. A route's `return`, which may carry a body, waits.
            return Handling::ready(redirect_at_edge(exchange, edge, &parts.uri));
        }
        let location = (!chosen.captures.is_empty() || sent_uri.is_some() || chosen.rewritten)
            .then(|| {
                Box::new(LocationState {
                    captures: chosen.captures,
                    sent_uri,
                    rewritten: chosen.rewritten,
                })
            });

        // Access first, then limits: a client turned away is not counted against them.
        if !route.access.is_empty() && !route.access.permits(client.addr.ip()) {
            return Handling::ready(exchange.local(
                StatusCode::FORBIDDEN,
                "access to this route is forbidden by its rules",
            ));
        }
        // A CORS preflight is answered here, before authentication (browsers send it
        // without credentials) and without counting against limits.
        if let Some(cors) = &route.cors
            && crate::policy::cors::is_preflight(&parts.method, &parts.headers)
        {
            return Handling::ready(exchange.cors_preflight(cors, &parts.headers));
        }
        let checks_who = route.auth.is_some() || route.forward_auth.is_some();
        let admitted = Admitted {
            snapshot,
            route,
            exchange,
            request_id,
            id_in_request,
            host_value,
            location,
        };
        // A route that asks nobody who the client is goes straight on: each step passed
        // through moves the request head once more.
        if !checks_who {
            return admitted.limit_and_route(client, parts, body);
        }
        admitted.authenticate(client, parts, body)
    }
}

/// The SERVER span's attributes that the request head gives (OpenTelemetry's HTTP server
/// semantic conventions).
fn request_attributes(
    attributes: &mut Vec<crate::trace::span::Attribute>,
    client: &ClientInfo,
    parts: &http::request::Parts,
) {
    use crate::trace::span::Value;
    attributes.push(("http.request.method", Value::from(parts.method.to_string())));
    attributes.push(("url.path", Value::from(parts.uri.path().to_owned())));
    attributes.push((
        "url.scheme",
        Value::from(if client.https { "https" } else { "http" }),
    ));
    let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    if let Some(host) = host {
        attributes.push((
            "server.address",
            Value::from(host_without_port(host).to_owned()),
        ));
    }
    attributes.push(("client.address", Value::from(client.addr.ip().to_string())));
    let version = match parts.version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        Version::HTTP_09 => "0.9",
        _ => "1.1",
    };
    attributes.push(("network.protocol.version", Value::from(version)));
    if let Some(agent) = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(("user_agent.original", Value::from(agent.to_owned())));
    }
}

/// A request whose route is chosen and whose access and authentication let it in.
struct Admitted {
    snapshot: Arc<crate::snapshot::Snapshot>,
    route: Arc<Route>,
    exchange: Exchange,
    request_id: HeaderValue,
    /// The request's X-Request-Id field is `request_id` already.
    id_in_request: bool,
    host_value: HeaderValue,
    /// What routing learnt beyond the route, if anything.
    location: Option<Box<LocationState>>,
}

impl Admitted {
    /// Who the client is (Basic, then JWT; 401 with a challenge when not known), then forward
    /// auth, then limits. A slow password hash is verified off the serving thread: only a
    /// route with Basic auth, and only on a credential not seen before, waits for it.
    fn authenticate(
        self,
        client: &ClientInfo,
        mut parts: http::request::Parts,
        body: ClientBody,
    ) -> Handling {
        if let Some(auth) = &self.route.auth {
            match auth.check_or_defer(&mut parts.headers) {
                crate::auth::Step::Done(Ok(())) => {}
                crate::auth::Step::Done(Err(denial)) => {
                    return Handling::ready(self.unauthorized(denial));
                }
                crate::auth::Step::Deferred(deferred) => {
                    let auth = Arc::clone(auth);
                    let client = client.clone();
                    return Handling::Pending(Box::pin(async move {
                        let allowed = deferred.verify().await;
                        match auth.after_basic(allowed, &mut parts.headers) {
                            Ok(()) => self.forward_auth_then_limits(&client, parts, body).await,
                            Err(denial) => Ok(self.unauthorized(denial)),
                        }
                    }));
                }
            }
        }
        self.forward_auth_then_limits(client, parts, body)
    }

    fn unauthorized(self, denial: crate::auth::Denial) -> Response<ResponseBody> {
        let mut response = self
            .exchange
            .local(StatusCode::UNAUTHORIZED, denial.message);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, denial.challenge);
        response
    }

    /// Forward auth, the one step that waits on the network before limits: only a route that
    /// has it makes the request's future pending here.
    fn forward_auth_then_limits(
        self,
        client: &ClientInfo,
        parts: http::request::Parts,
        body: ClientBody,
    ) -> Handling {
        if let Some(auth) = &self.route.forward_auth {
            let auth = Arc::clone(auth);
            let client = client.clone();
            let mut parts = parts;
            return Handling::Pending(Box::pin(async move {
                let checked = forward_auth::check(
                    &auth,
                    &client,
                    &mut parts,
                    &self.host_value,
                    &self.request_id,
                    &self.route.name,
                )
                .await;
                match checked {
                    Ok(()) => self.limit_and_route(&client, parts, body).await,
                    Err(refusal) => {
                        let route = Arc::clone(&self.route);
                        let mut response = refusal.answer(self.exchange);
                        // A browser's script may read the refusal (a 401 telling it to log in).
                        if let Some(cors) = &route.cors {
                            let origin = cors.allowed_origin(&parts.headers);
                            cors.response_fields(origin.as_ref(), response.headers_mut());
                        }
                        Ok(response)
                    }
                }
            }));
        }
        self.limit_and_route(client, parts, body)
    }

    /// The route's limits, then the request routed on (at once, or after a limit's wait).
    #[inline(always)]
    fn limit_and_route(
        self,
        client: &ClientInfo,
        parts: http::request::Parts,
        body: ClientBody,
    ) -> Handling {
        if self.route.rate_limits.is_empty() {
            return self.route_on(client, parts, body, std::time::Duration::ZERO);
        }
        let source = KeySource {
            client: client.addr.ip(),
            headers: &parts.headers,
            route: &self.route.name,
        };
        let decision = self.route.rate_limits.decide(&source, limit::now_nanos());
        self.limited(client, parts, body, decision)
    }

    /// What the route's limits decided: a 429, or on (a shared limit may ask Redis first).
    fn limited(
        mut self,
        client: &ClientInfo,
        parts: http::request::Parts,
        body: ClientBody,
        decision: Decision,
    ) -> Handling {
        match decision {
            Decision::Reject {
                retry_after, held, ..
            } => {
                self.exchange.limits = held;
                let mut response = self.exchange.local(
                    StatusCode::TOO_MANY_REQUESTS,
                    "over a limit of this route; retry later",
                );
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                Handling::ready(response)
            }
            Decision::Pass { wait, held } => {
                self.exchange.limits = held;
                self.route_on(client, parts, body, wait)
            }
            Decision::Ask(pending) => {
                let client = client.clone();
                Handling::Pending(Box::pin(async move {
                    let decision = pending.await;
                    self.limited(&client, parts, body, decision).await
                }))
            }
        }
    }

    /// The request routed on, at once or after `wait` (a limit's spacing).
    #[inline(always)]
    fn route_on(
        self,
        client: &ClientInfo,
        parts: http::request::Parts,
        body: ClientBody,
        wait: std::time::Duration,
    ) -> Handling {
        let Admitted {
            snapshot,
            route,
            mut exchange,
            request_id,
            id_in_request,
            host_value,
            location,
        } = self;
        if let Some(answer) = &route.answer {
            let view = RequestView {
                method: &parts.method,
                request_uri: location
                    .as_ref()
                    .and_then(|l| l.sent_uri.as_deref())
                    .unwrap_or(&parts.uri)
                    .path_and_query()
                    .map_or("/", PathAndQuery::as_str),
                host: host_value.to_str().map(host_without_port).unwrap_or(""),
                https: client.https,
                client: client.addr.ip(),
                headers: &parts.headers,
            };
            let captures = location.as_ref().map_or(&[][..], |l| &l.captures[..]);
            return Handling::ready(answer_at_edge(
                exchange, answer, &view, &parts.uri, captures,
            ));
        }
        // A route that serves files answers here, unless `try_files … @NAME` sends the
        // request on to its upstream.
        if let Some(files) = &route.files
            && let Some(served) = files::serve(files, &parts)
        {
            if !wait.is_zero() {
                // Spaced out to the limit's rate, as a forwarded request would be.
                return Handling::Pending(Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    Ok(files::respond(exchange, served, &parts))
                }));
            }
            return Handling::ready(files::respond(exchange, served, &parts));
        }
        // A route with a split hands the request to the side it chooses (its upstream,
        // metrics and cache key from here on).
        let mut route = route;
        if let Some(split) = &route.split {
            let side = Arc::clone(split.choose(&parts, client.addr.ip()));
            exchange.route = Some(Arc::clone(&side));
            route = side;
        }
        let routed = Routed {
            snapshot,
            route,
            exchange,
            request_id,
            id_in_request,
            host_value,
            location,
        };
        if !wait.is_zero() {
            // Spaced out to the rate (a limit without `nodelay`), as nginx does.
            let client = client.clone();
            return Handling::Pending(Box::pin(async move {
                tokio::time::sleep(wait).await;
                routed.handle(&client, parts, body).await
            }));
        }
        routed.handle(client, parts, body)
    }
}

/// A request whose route is chosen and whose limits let it through.
struct Routed {
    snapshot: Arc<crate::snapshot::Snapshot>,
    route: Arc<Route>,
    exchange: Exchange,
    request_id: HeaderValue,
    /// The request's X-Request-Id field is `request_id` already.
    id_in_request: bool,
    host_value: HeaderValue,
    /// What routing learnt beyond the route, when there is anything (boxed: most requests
    /// have nothing to carry).
    location: Option<Box<LocationState>>,
}

/// Regex groups, the target as sent, and whether a rewrite changed the path.
struct LocationState {
    captures: Vec<Option<String>>,
    sent_uri: Option<Box<Uri>>,
    rewritten: bool,
}

/// The route chosen for a request, after its rewrites.
struct Chosen {
    route: Arc<Route>,
    /// The groups of the route's path regex.
    captures: Vec<Option<String>>,
    /// A redirect routing decided on.
    edge: Option<EdgeRedirect>,
    /// A rewrite of this route changed the path (and its prefix is no longer replaced).
    rewritten: bool,
}

enum EdgeRedirect {
    /// nginx's 301 from `/api` to `/api/`.
    Slash,
    /// A rewrite's `redirect` or `permanent`.
    Rewrite(StatusCode, String),
}

/// Rewrites a request may go through before it is routed for good (nginx's limit on
/// internal redirections).
const MAX_REROUTES: usize = 10;

/// Picks the route for a request, running its rewrites and routing the new path again as
/// they ask (nginx's `last`, or no flag). The path in `parts` is the final one; `sent_uri`
/// keeps the target as sent once anything changed it.
// Inlined into the handler: returning the choice through a call costs a copy of it.
#[inline]
fn choose_route(
    snapshot: &crate::snapshot::Snapshot,
    client: &ClientInfo,
    host: &str,
    parts: &mut http::request::Parts,
    sent_uri: &mut Option<Box<Uri>>,
) -> Result<Option<Chosen>, &'static str> {
    let mut rewritten = false;
    for _ in 0..=MAX_REROUTES {
        let request = RouteRequest {
            listener: client.listener,
            host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            method: &parts.method,
            headers: &parts.headers,
            client: client.addr.ip(),
        };
        let Some(found) = snapshot.router.find(&request) else {
            return Ok(None);
        };
        let route = Arc::clone(&found.entry.target);
        let (captures, edge) = match found.matched_by {
            MatchedBy::Regex(captures) => (captures, None),
            MatchedBy::SlashRedirect => (Vec::new(), Some(EdgeRedirect::Slash)),
            MatchedBy::Exact | MatchedBy::Prefix => (Vec::new(), None),
        };
        if route.rewrites.is_empty() || edge.is_some() {
            return Ok(Some(Chosen {
                route,
                captures,
                edge,
                rewritten,
            }));
        }
        let view = RequestView {
            method: &parts.method,
            request_uri: sent_uri
                .as_deref()
                .unwrap_or(&parts.uri)
                .path_and_query()
                .map_or("/", PathAndQuery::as_str),
            host,
            https: client.https,
            client: client.addr.ip(),
            headers: &parts.headers,
        };
        let (path, query, reroute) =
            match rewrite::apply(&route.rewrites, &view, parts.uri.path(), parts.uri.query()) {
                Rewritten::Unchanged => {
                    return Ok(Some(Chosen {
                        route,
                        captures,
                        edge: None,
                        rewritten,
                    }));
                }
                Rewritten::Redirect { status, location } => {
                    return Ok(Some(Chosen {
                        route,
                        captures,
                        edge: Some(EdgeRedirect::Rewrite(status, location)),
                        rewritten,
                    }));
                }
                Rewritten::Path {
                    path,
                    query,
                    reroute,
                } => (path, query, reroute),
            };
        let target = match &query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut uri_parts = parts.uri.clone().into_parts();
        uri_parts.path_and_query = Some(
            PathAndQuery::try_from(target)
                .map_err(|_| "a rewrite made an invalid request target")?,
        );
        let uri =
            Uri::from_parts(uri_parts).map_err(|_| "a rewrite made an invalid request target")?;
        let sent = std::mem::replace(&mut parts.uri, uri);
        sent_uri.get_or_insert_with(|| Box::new(sent));
        rewritten = true;
        if !reroute {
            return Ok(Some(Chosen {
                route,
                captures,
                edge: None,
                rewritten,
            }));
        }
        // Routed again: the next route's prefix applies to the new path as it is.
        rewritten = false;
    }
    Err("rewrites route the request in a cycle")
}

/// A redirect routing decided on.
fn redirect_at_edge(exchange: Exchange, edge: EdgeRedirect, uri: &Uri) -> Response<ResponseBody> {
    let (status, location) = redirect_target(edge, uri);
    match HeaderValue::try_from(location) {
        Ok(location) => exchange.edge(status, Some(location), None, None),
        Err(_) => exchange.local(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the redirect target is not a valid Location value",
        ),
    }
}

/// The status and Location of a redirect routing decided on.
fn redirect_target(edge: EdgeRedirect, uri: &Uri) -> (StatusCode, String) {
    match edge {
        EdgeRedirect::Slash => {
            let mut location = format!("{}/", uri.path());
            if let Some(query) = uri.query() {
                location.push('?');
                location.push_str(query);
            }
            (StatusCode::MOVED_PERMANENTLY, location)
        }
        EdgeRedirect::Rewrite(status, location) => (status, location),
    }
}

/// Where a route's `return` redirects a request to (for `gatehouse route`).
fn answer_parts(
    answer: &crate::config::location::Answer,
    client: &ClientInfo,
    host_value: &HeaderValue,
    parts: &http::request::Parts,
    location: &LocationState,
) -> Option<String> {
    let view = RequestView {
        method: &parts.method,
        request_uri: location
            .sent_uri
            .as_deref()
            .unwrap_or(&parts.uri)
            .path_and_query()
            .map_or("/", PathAndQuery::as_str),
        host: host_value.to_str().map(host_without_port).unwrap_or(""),
        https: client.https,
        client: client.addr.ip(),
        headers: &parts.headers,
    };
    let context = Variables {
        request: &view,
        path: parts.uri.path(),
        query: parts.uri.query(),
        captures: &location.captures,
    };
    answer.location.as_ref().map(|t| t.expand(&context))
}

/// A route's `return`.
fn answer_at_edge(
    exchange: Exchange,
    answer: &crate::config::location::Answer,
    request: &RequestView<'_>,
    uri: &Uri,
    captures: &[Option<String>],
) -> Response<ResponseBody> {
    let context = Variables {
        request,
        path: uri.path(),
        query: uri.query(),
        captures,
    };
    let location = match answer
        .location
        .as_ref()
        .map(|t| HeaderValue::try_from(t.expand(&context)))
    {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return exchange.local(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the redirect target is not a valid Location value",
            );
        }
        None => None,
    };
    let body = answer.body.as_ref().map(|t| t.expand(&context));
    exchange.edge(
        answer.status,
        location,
        body,
        Some(answer.content_type.clone()),
    )
}

impl Routed {
    /// Answers from the cache, or rewrites the request and forwards it.
    // Inlined: called from one place on the hot path, where a call would move the request
    // head once more.
    #[inline(always)]
    fn handle(
        self,
        client: &ClientInfo,
        mut parts: http::request::Parts,
        body: ClientBody,
    ) -> Handling {
        let Routed {
            snapshot,
            route,
            exchange,
            request_id,
            id_in_request,
            host_value,
            location,
        } = self;
        // A request without a body (the codec found no framing for one) has no length to
        // look up.
        let too_large = !matches!(body, ClientBody::Empty)
            && parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|length| length > route.max_body_bytes);
        if too_large {
            return Handling::ready(exchange.local(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than the limit",
            ));
        }

        // The allowed Origin the response's CORS fields answer: one branch for a route
        // without CORS.
        let cors_origin = match &route.cors {
            Some(cors) => cors.allowed_origin(&parts.headers),
            None => None,
        };
        // The coding this client takes, of those the route offers: one branch for a route
        // that compresses nothing.
        let accepted = match &route.compression {
            Some(compression) => compression.choose(&parts.headers),
            None => None,
        };

        // A fresh hit is answered before any rewriting: nothing of it goes upstream.
        if let Some(cache) = &route.cache
            && let Some(response) =
                cached::answer_if_fresh(cache, &route, accepted, &parts, &host_value)
        {
            let reply = Reply {
                route,
                exchange,
                request_id,
                client_version: parts.version,
                client_upgrade: None,
                interim: None,
                accepted,
                cors_origin,
                late_fields: None,
            };
            return Handling::ready(reply.answer_from_cache(response));
        }

        let scan = HeaderScan::of(&parts.headers);
        let asks_websocket = headers::is_websocket_upgrade(&parts.headers, &scan);
        let client_upgrade = if asks_websocket {
            let own = parts.extensions.remove::<UpgradeSlot>();
            own.and_then(|slot| slot.take()).or_else(|| {
                parts
                    .extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(PendingUpgrade::Hyper)
            })
        } else {
            None
        };
        // The request id gatehouse made goes upstream: beside the map with the forwarding
        // fields when they wait there, in the map otherwise (before anything reads it). An
        // upgrade keeps its Connection and Upgrade fields, which the upstream codec reads in
        // the map: its request stays whole there.
        let late_id = (!id_in_request).then(|| request_id.clone());
        let waits = sends_head_as_routed(&route) && client_upgrade.is_none();
        if !waits && let Some(id) = &late_id {
            parts.headers.insert(&X_REQUEST_ID, id.clone());
        }
        // Header values with variables read the request as the client sent it.
        let templated = if route.header_templates.is_empty() {
            Vec::new()
        } else {
            templated_headers(&route, &parts, client, &host_value, location.as_deref())
        };
        // Rewrite the request head for the upstream, in place.
        if scan.underscored && !snapshot.limits.underscores_in_headers {
            headers::remove_underscored(&mut parts.headers);
        }
        // Only a connection that can be handed over may ask the upstream to switch: an
        // HTTP/1.0 request (RFC 9110 §7.8) or an HTTP/2 one has its Upgrade removed, as any
        // other hop-by-hop field.
        let websocket = client_upgrade.is_some();
        // gRPC to an HTTP/2 upstream needs `TE: trailers`, hop-by-hop as it is, passed on.
        if scan.has_te()
            && parts.headers.get(header::TE).is_some_and(|te| {
                te.as_bytes()
                    .windows(8)
                    .any(|w| w.eq_ignore_ascii_case(b"trailers"))
            })
        {
            parts
                .extensions
                .insert(crate::upstream::pool::AcceptsTrailers);
        }
        headers::remove_hop_by_hop(&mut parts.headers, &scan, websocket);
        // X-Forwarded-* and Via wait beside the map for a route that reads and edits nothing
        // of the request on its way (see `ForwardingFields`).
        let late_fields = if waits {
            ForwardingFields::kept_apart(
                &scan,
                &client.forwarded_for,
                Some(&host_value),
                client.https,
                parts.version,
                late_id.clone(),
            )
        } else {
            None
        };
        if late_fields.is_none() {
            if waits && let Some(id) = late_id {
                parts.headers.insert(&X_REQUEST_ID, id);
            }
            // Room for what is added below (X-Forwarded-*, Via) in one growth.
            parts.headers.reserve(4);
            headers::add_forwarded(
                &mut parts.headers,
                &scan,
                &client.forwarded_for,
                Some(&host_value),
                client.https,
            );
            headers::add_via(&mut parts.headers, parts.version);
        }
        match &route.set_host {
            Some(set_host) => {
                parts.headers.insert(header::HOST, set_host.clone());
            }
            // The host routed by goes upstream: an absolute-form target's authority replaces
            // the client's Host (RFC 9112 §3.2.2), and HTTP/2's :authority becomes one.
            None => {
                // An HTTP/1.x request without an authority was routed by its one Host field.
                if parts.uri.authority().is_some()
                    || (matches!(parts.version, Version::HTTP_2 | Version::HTTP_3)
                        && !parts.headers.contains_key(header::HOST))
                {
                    parts.headers.insert(header::HOST, host_value.clone());
                }
            }
        }
        if !route.request_headers.is_empty() {
            route.request_headers.apply(&mut parts.headers);
        }
        for (name, value) in templated {
            match value {
                // nginx sends no field whose value comes out empty.
                Some(value) if !value.is_empty() => {
                    parts.headers.insert(name, value);
                }
                _ => {
                    parts.headers.remove(name);
                }
            }
        }
        // The cache keys requests by what the client asked for, before any rewriting.
        let original_target = route.cache.as_ref().map(|_| parts.uri.clone());
        let rewritten = location.as_ref().is_some_and(|l| l.rewritten);
        if let Some(uri) = upstream_uri(&parts.uri, &route, rewritten) {
            parts.uri = uri;
        }
        let client_version = parts.version;
        parts.version = Version::HTTP_11;
        // A copy for the route's mirror is kept as the body streams, never holding it.
        let body = match &route.mirror {
            None => body,
            Some(mirror) => {
                // The copy is a child of this request's SERVER span, not of the caller's span
                // (each attempt of the request itself names its own CLIENT span later).
                if let Some(trace) = &exchange.trace {
                    parts.headers.insert(
                        &crate::trace::TRACEPARENT,
                        crate::trace::context::traceparent(
                            &trace.trace_id,
                            &trace.span_id,
                            trace.sampled,
                        ),
                    );
                }
                mirror::tee(mirror, &parts, body, client.addr.ip())
            }
        };
        let body = RequestBody::client(body, route.max_body_bytes, &route.metrics.received_bytes);
        // HTTP/1.0 clients get no interim responses (RFC 9110 §15.2), and hyper's HTTP/2
        // server cannot send them.
        let interim =
            (client_version == Version::HTTP_11).then(|| exchange.connection.interim_sink());

        let reply = Reply {
            route,
            exchange,
            request_id,
            client_version,
            client_upgrade,
            interim,
            accepted,
            cors_origin,
            late_fields,
        };
        // Each boxed directly, not awaited inside one more async block: every level of
        // nesting copies the whole inner future once more.
        Handling::Pending(match reply.route.cache.clone() {
            Some(cache) => Box::pin(cached::serve(
                reply,
                cache,
                parts,
                body,
                host_value,
                original_target,
            )),
            None => {
                // The box first, then the future written into it: built on the stack and
                // boxed after, all 1.5 KiB of it were copied into the box, most of them
                // states it had not entered yet.
                let future = Box::write(
                    Box::new_uninit(),
                    reply.forward(Request::from_parts(parts, body)),
                );
                Box::into_pin(future)
            }
        })
    }
}

/// A request being answered: at once, or by a future (boxed, so that moving this is cheap).
// The ready response stays inline: boxing it would cost a cache hit an allocation to save a
// few hundred bytes of copying.
#[allow(clippy::large_enum_variant)]
pub enum Handling {
    Ready(Option<Response<ResponseBody>>),
    Pending(Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>),
}

impl Handling {
    pub fn ready(response: Response<ResponseBody>) -> Self {
        Handling::Ready(Some(response))
    }

    /// The same answer with `name: value` set on the response.
    pub fn with_header(self, name: header::HeaderName, value: &HeaderValue) -> Self {
        match self {
            Handling::Ready(mut response) => {
                if let Some(response) = &mut response {
                    response.headers_mut().insert(name, value.clone());
                }
                Handling::Ready(response)
            }
            Handling::Pending(future) => {
                let value = value.clone();
                Handling::Pending(Box::pin(async move {
                    let mut response = future.await?;
                    response.headers_mut().insert(name, value);
                    Ok(response)
                }))
            }
        }
    }
}

impl Future for Handling {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Handling::Ready(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // hyper never polls a finished future; if it did, this is the honest answer.
                None => Poll::Pending,
            },
            Handling::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// A request's id, and whether the request's own X-Request-Id field holds it.
struct RequestId {
    value: HeaderValue,
    in_request: bool,
}

/// What a request needs once it has been routed and rewritten, to turn what comes back (an
/// upstream response, a failure, a stored response) into the client's response.
pub(crate) struct Reply {
    route: Arc<Route>,
    exchange: Exchange,
    request_id: HeaderValue,
    client_version: Version,
    client_upgrade: Option<PendingUpgrade>,
    /// Where the upstream's interim responses go; none for HTTP/1.0 and HTTP/2 clients.
    interim: Option<InterimSink>,
    /// The coding the client takes of those the route's compression offers.
    accepted: Option<crate::compress::Encoding>,
    /// The request's Origin, when the route's CORS policy allows it.
    cors_origin: Option<HeaderValue>,
    /// The forwarding fields not yet in the request's map.
    late_fields: Option<ForwardingFields>,
}

/// Whether nothing reads or edits the request's fields between routing and sending: no
/// header rules, templates, mirror or cache, and no hashing by a header. Then the fields
/// gatehouse adds may wait beside the map (`ForwardingFields`).
fn sends_head_as_routed(route: &Route) -> bool {
    route.request_headers.is_empty()
        && route.header_templates.is_empty()
        && route.mirror.is_none()
        && route.cache.is_none()
        && !route.upstream.hashes_by_header()
}

impl Reply {
    /// Sends the request to the route's upstream, noting which server took it.
    /// `keep_raw`: the upstream's response head may come back as bytes (see
    /// `passes_head_on`).
    // A plain fn returning an async block, not an `async fn`: an async fn keeps each argument
    // twice in its future and copies it once more when first polled.
    #[allow(clippy::manual_async_fn)]
    fn send<'a>(
        &'a mut self,
        request: &'a mut Request<RequestBody>,
        keep_raw: bool,
    ) -> impl Future<Output = Result<Forwarded, ForwardError>> + Send + 'a {
        async move {
            let mut started = self.exchange.start;
            // A client that asked to be told to go on (`Expect: 100-continue`) is told so only
            // when its body is read: not before a server is known to take it.
            if request.body().may_preread() && !request.headers().contains_key(header::EXPECT) {
                let body = std::mem::replace(request.body_mut(), RequestBody::Empty);
                // Boxed: its state would otherwise sit in every request's future, bodiless or not.
                *request.body_mut() = Box::pin(body.preread()).await.map_err(|error| {
                    if error.is::<BodyTooLarge>() {
                        ForwardError::BodyTooLarge
                    } else {
                        ForwardError::ClientBody
                    }
                })?;
                // The upstream's response_timeout starts once it can be sent the request.
                started = Instant::now();
            }
            // Read from the request as it goes upstream: after the route's header rules and path
            // rewrite, so the key is what the servers see too.
            let key = self.route.upstream.key_hash(
                request.uri(),
                request.headers(),
                Some(self.exchange.client),
            );
            let exchange = &mut *self.exchange;
            forward(
                &self.route.upstream,
                &mut exchange.server,
                exchange.trace.as_deref_mut(),
                request,
                &mut self.late_fields,
                key,
                started,
                &self.request_id,
                self.interim.as_ref(),
                keep_raw,
            )
            .await
        }
    }

    /// Whether the upstream's response head goes to the client with nothing edited but its
    /// hop-by-hop fields left out and gatehouse's own added: then it is passed on from its
    /// bytes (`http1::RawFields`), with no map built. Not for HTTP/2 and HTTP/3 clients (their
    /// heads are written from a map), upgrades, or routes whose policies read or edit the
    /// response's fields (cache, compression, CORS, response header rules).
    fn passes_head_on(&self) -> bool {
        let route = &self.route;
        !matches!(self.client_version, Version::HTTP_2 | Version::HTTP_3)
            && self.client_upgrade.is_none()
            && route.cache.is_none()
            && route.compression.is_none()
            && route.cors.is_none()
            && route.response_headers.is_empty()
    }

    /// Forwards the request and answers with what the upstream says (or the failure).
    // Not an `async fn`, for the reason given at `send`.
    #[allow(clippy::manual_async_fn)]
    fn forward(
        mut self,
        mut request: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
        async move {
            let interim = self.interim.clone();
            // In a block of its own: what it holds is not kept across the wait below.
            let response = {
                let keep_raw = self.passes_head_on();
                let sent = self.send(&mut request, keep_raw).await;
                drop(request);
                match sent {
                    Ok(forwarded) => self.answer_upstream(forwarded, None),
                    Err(error) => self.failure(error),
                }
            };
            // Only a response with interim responses still queued waits, in a future of its
            // own: the common one is not kept in this future's state on its way out.
            match interim.filter(InterimSink::is_pending) {
                Some(interim) => Ok(after_interim(interim, response).await),
                None => Ok(response),
            }
        }
    }

    /// The client's response from an upstream response, optionally stored as it streams.
    fn answer_upstream(
        mut self,
        forwarded: Forwarded,
        fill: Option<crate::cache::fill::Fill>,
    ) -> Response<ResponseBody> {
        let Forwarded {
            mut response,
            pool_return,
            in_flight,
        } = forwarded;
        self.exchange.in_flight = Some(in_flight);
        let upgrade_upstream = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            response
                .body_mut()
                .take_upgrade()
                .map(PendingUpgrade::Ready)
        } else {
            None
        };
        let (mut parts, mut upstream_body) = response.into_parts();
        let keep_upgrade = upgrade_upstream.is_some() && self.client_upgrade.is_some();
        let scan = HeaderScan::of_response(&parts.headers);
        headers::remove_hop_by_hop(&mut parts.headers, &scan, keep_upgrade);
        match upstream_body.raw_mut() {
            // A head passed on from its bytes takes gatehouse's fields beside them.
            Some(raw) => {
                raw.add(&header::VIA, headers::VIA_HTTP_1_1.clone(), false);
                raw.add(&X_REQUEST_ID, self.request_id, true);
            }
            None => {
                headers::add_via(&mut parts.headers, Version::HTTP_11);
                parts.headers.insert(&X_REQUEST_ID, self.request_id);
            }
        }
        self.exchange.add_limit_fields(&mut parts.headers);
        if let Some(cors) = &self.route.cors {
            cors.response_fields(self.cors_origin.as_ref(), &mut parts.headers);
        }
        if !self.route.response_headers.is_empty() {
            self.route.response_headers.apply(&mut parts.headers);
        }
        parts.version = self.client_version;
        if let (Some(upstream_side), Some(client_side)) =
            (upgrade_upstream, self.client_upgrade.take())
        {
            self.exchange.connection.upgraded();
            tokio::spawn(upgrade::bridge(client_side, upstream_side));
        }
        self.exchange.status = parts.status;
        let mut body = ResponseBody::upstream(upstream_body, pool_return);
        // A response stored as it streams keeps its encoded body too, if it is compressed.
        let stored = match (&self.route.compression, &fill) {
            (Some(_), Some(fill)) => Some(fill.stored()),
            _ => None,
        };
        if let Some(fill) = fill {
            body.set_fill(fill);
        }
        if let Some(compression) = &self.route.compression {
            body = encode::upstream(
                compression,
                self.accepted,
                &self.exchange.method,
                &mut parts,
                body,
                stored,
            );
        }
        body.set_completion(self.exchange);
        Response::from_parts(parts, body)
    }

    /// The client's response from a stored one (built by `cache_answer`).
    fn answer_from_cache(mut self, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
        if let Some(trace) = &mut self.exchange.trace
            && trace.sampled
        {
            trace.cache_outcome = Some(cache_outcome(response.headers()));
        }
        let headers = response.headers_mut();
        headers.insert(&X_REQUEST_ID, self.request_id);
        self.exchange.add_limit_fields(headers);
        if let Some(cors) = &self.route.cors {
            cors.response_fields(self.cors_origin.as_ref(), headers);
        }
        if !self.route.response_headers.is_empty() {
            self.route.response_headers.apply(headers);
        }
        *response.version_mut() = self.client_version;
        self.exchange.status = response.status();
        self.exchange.server = None;
        response.body_mut().set_completion(self.exchange);
        response
    }

    /// A response gatehouse makes itself.
    fn exchange_local(self, status: StatusCode, message: &'static str) -> Response<ResponseBody> {
        self.exchange.local(status, message)
    }

    /// The client's response when forwarding failed.
    fn failure(self, error: ForwardError) -> Response<ResponseBody> {
        let upstream = &self.route.upstream;
        let (status, message) = error.answer();
        match &error {
            ForwardError::BodyTooLarge | ForwardError::ClientBody => {}
            ForwardError::NoServer(_) => {
                tracing::warn!(upstream = %upstream.name, request_id = self.request_id.to_str().unwrap_or("-"), reason = %no_server_reason(upstream), "no eligible upstream server")
            }
            _ => {
                tracing::warn!(upstream = %upstream.name, server = self.exchange.server_name(), error = %error, request_id = self.request_id.to_str().unwrap_or("-"), "upstream request failed")
            }
        }
        let mut response = self.exchange.local(status, message);
        if let ForwardError::NoServer(seconds) = error {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Why no server of `upstream` could take a request, for the log line that says so.
fn no_server_reason(upstream: &Upstream) -> String {
    let (mut down, mut open, mut full) = (0, 0, 0);
    for server in &upstream.servers {
        if !server.health.is_up() {
            down += 1;
        } else if server.breaker.state() == BreakerState::Open {
            open += 1;
        } else if upstream.max_connections > 0 && server.in_flight() >= upstream.max_connections {
            full += 1;
        }
    }
    format!(
        "of {} servers, {down} down, {open} with the breaker open, {full} at max_connections",
        upstream.servers.len()
    )
}

impl ForwardError {
    /// The status and one-line message the client gets.
    fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            ForwardError::NoServer(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no upstream server is available",
            ),
            ForwardError::Connect(ConnectError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "timed out connecting to the upstream server",
            ),
            ForwardError::Connect(_) => (
                StatusCode::BAD_GATEWAY,
                "could not connect to the upstream server",
            ),
            ForwardError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream server did not answer in time",
            ),
            ForwardError::AmbiguousFraming => (
                StatusCode::BAD_GATEWAY,
                "the upstream server sent a response with ambiguous framing",
            ),
            ForwardError::Upstream(_) | ForwardError::Http1(_) => (
                StatusCode::BAD_GATEWAY,
                "the upstream server sent an invalid response",
            ),
            ForwardError::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than the limit",
            ),
            ForwardError::ClientBody => (
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ),
        }
    }
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::NoServer(_) => f.write_str("no eligible server"),
            ForwardError::Connect(e) => write!(f, "{e}"),
            ForwardError::Timeout => f.write_str("response timeout"),
            ForwardError::Upstream(e) => write!(f, "upstream error: {e}"),
            ForwardError::Http1(e) => write!(f, "upstream error: {e}"),
            ForwardError::AmbiguousFraming => {
                f.write_str("response with both Content-Length and Transfer-Encoding")
            }
            ForwardError::BodyTooLarge => f.write_str("request body too large"),
            ForwardError::ClientBody => f.write_str("client body unreadable"),
        }
    }
}

/// `uri` with its path replaced by `path` (its query kept).
fn with_path(uri: &Uri, mut path: String) -> Option<Uri> {
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path).ok()?);
    Uri::from_parts(parts).ok()
}

/// The values of the route's request headers that have variables.
fn templated_headers(
    route: &Route,
    parts: &http::request::Parts,
    client: &ClientInfo,
    host_value: &HeaderValue,
    location: Option<&LocationState>,
) -> Vec<(header::HeaderName, Option<HeaderValue>)> {
    let sent = location.and_then(|l| l.sent_uri.as_deref());
    let request_uri = sent
        .unwrap_or(&parts.uri)
        .path_and_query()
        .map_or("/", PathAndQuery::as_str)
        .to_owned();
    let view = RequestView {
        method: &parts.method,
        request_uri: &request_uri,
        host: host_value.to_str().map(host_without_port).unwrap_or(""),
        https: client.https,
        client: client.addr.ip(),
        headers: &parts.headers,
    };
    let context = Variables {
        request: &view,
        path: parts.uri.path(),
        query: parts.uri.query(),
        captures: location.map_or(&[], |l| l.captures.as_slice()),
    };
    route
        .header_templates
        .iter()
        .map(|(name, template)| {
            let value = HeaderValue::try_from(template.expand(&context)).ok();
            (name.clone(), value)
        })
        .collect()
}

/// The request target for the upstream: origin-form, with the route's prefix stripped or
/// replaced if asked (unless a rewrite already made the path: then it goes as it is, as
/// nginx's `proxy_pass` with a URI does after `rewrite … break`). `None` when the client's
/// target can be sent as it is.
fn upstream_uri(uri: &Uri, route: &Route, rewritten: bool) -> Option<Uri> {
    let path_and_query = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    if let Some(replacement) = &route.replace_prefix
        && !rewritten
        && let Some(rest) = path_and_query.strip_prefix(route.path_prefix.as_str())
    {
        return Uri::try_from(format!("{replacement}{rest}")).ok();
    }
    if route.strip_prefix && route.path_prefix.len() > 1 && !rewritten {
        let rest = path_and_query
            .strip_prefix(route.path_prefix.as_str())
            .unwrap_or(path_and_query);
        let rewritten = if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        };
        return Uri::try_from(rewritten).ok();
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Uri::try_from(path_and_query).ok();
    }
    None
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// An upstream's response head, with what keeps its connection and in-flight count.
pub(crate) struct Forwarded {
    response: Response<UpstreamBody>,
    pool_return: Option<PoolReturn>,
    in_flight: crate::upstream::InFlight,
}

/// A request kept to send it again on another server after an HTTP/2 attempt failed in
/// flight (hyper's client takes the request; gatehouse's HTTP/1.1 codec only borrows it, so
/// HTTP/1.1 attempts copy nothing): only for idempotent requests whose body is empty or was
/// read whole before forwarding (at most `PREREAD_LIMIT`), and only where a retry is possible
/// at all (a cloned header map costs a few hundred instructions).
struct ReplayableHead {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    /// Empty, or read whole before the first attempt.
    body: RequestBody,
}

/// Puts the body of a failed HTTP/1.1 attempt's request back, to send it once more: the
/// codec took only its body. Whether there was one to put back.
fn handed_back(request: &mut Request<RequestBody>, body: Option<RequestBody>) -> bool {
    match body {
        Some(body) => {
            *request.body_mut() = body;
            true
        }
        None => false,
    }
}

impl ReplayableHead {
    /// A copy of the request (its head, and its body if it was read whole) for an attempt
    /// that consumes it; `None` when its body cannot be sent twice.
    fn keep(request: &Request<RequestBody>) -> Option<Self> {
        Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            body: request.body().try_clone()?,
        })
    }

    fn request(self) -> Request<RequestBody> {
        let mut request = Request::new(self.body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

/// `response` once the interim responses passed on so far are written: they go out before
/// the final response, which is written only after this request's future is done.
async fn after_interim(
    interim: InterimSink,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    interim.written().await;
    response
}

/// Sends the request to an eligible server of `upstream`. Idempotent requests are tried on
/// another server (up to `retries`) after a connect failure, and — when their body is empty
/// or was read whole before forwarding — after a broken connection or a response timeout too.
/// `key` is the request's hash for consistent hashing (`Upstream::key_hash`). The request is
/// borrowed, not taken: the caller's future holds it once, where each level taking it by value
/// kept a copy of its own (a coroutine keeps its arguments' slots for its whole life).
// Not an `async fn`, for the reason given at `Reply::send`.
#[allow(clippy::manual_async_fn)]
#[allow(clippy::too_many_arguments)]
fn forward<'a>(
    upstream: &'a Upstream,
    chosen: &'a mut Option<Arc<str>>,
    mut trace: Option<&'a mut RequestTrace>,
    request: &'a mut Request<RequestBody>,
    fields: &'a mut Option<ForwardingFields>,
    key: Option<u64>,
    started: Instant,
    request_id: &'a HeaderValue,
    interim: Option<&'a InterimSink>,
    keep_raw: bool,
) -> impl Future<Output = Result<Forwarded, ForwardError>> + Send + 'a {
    async move {
        let retryable = is_idempotent(request.method());
        // Whether a request that met a failure in flight may go again (to another server):
        // each attempt then leaves it in place, with its body again if that can be sent twice.
        let replayable = retryable && upstream.retries > 0 && upstream.servers.len() >= 2;
        let panic = upstream.in_panic(started);
        let mut tried = Tried::default();
        let Some(mut claim) = claim_server(upstream, &mut tried, key, started, panic) else {
            return Err(ForwardError::NoServer(upstream.retry_after_secs(started)));
        };
        let mut attempt_start = started;
        let mut retries = 0u32;
        upstream.retry_budget.record_request(started);
        loop {
            let server = &upstream.servers[claim.index];
            *chosen = Some(Arc::clone(&server.addr));
            // Each attempt is a CLIENT span of its own, the parent of what the server does.
            if let Some(trace) = trace.as_mut() {
                trace.start_attempt(&server.addr, retries + 1, request.headers_mut());
            }
            let result = send_to_server(
                server,
                upstream,
                &mut *request,
                &mut *fields,
                replayable,
                attempt_start,
                request_id,
                interim,
                keep_raw,
            )
            .await;
            if let Some(trace) = trace.as_mut() {
                trace.end_attempt(attempt_end(&result));
            }
            record_verdict(server, claim.pass, &result);
            record_reachability(server, &result);
            let (error, sendable) = match result {
                Ok((response, pool_return)) => {
                    return Ok(Forwarded {
                        response,
                        pool_return,
                        in_flight: claim.in_flight,
                    });
                }
                Err(failure) => failure,
            };
            // A retry needs the request again and a server not tried yet; otherwise the client
            // gets this server's failure (502/504), not a misleading "no server available".
            let again = retryable && retries < upstream.retries && may_go_again(&error, sendable);
            let next = again
                .then(|| claim_server(upstream, &mut tried, key, started, panic))
                .flatten();
            let Some(next) = next else {
                return Err(error);
            };
            // The budget is asked last, so that only real retries spend it.
            if !upstream.retry_budget.try_retry(Instant::now()) {
                upstream.retries_refused.inc();
                tracing::debug!(upstream = %upstream.name, server = %server.addr, error = %error, request_id = request_id.to_str().unwrap_or("-"), "retry refused: the upstream's retry budget is spent");
                return Err(error);
            }
            // Debug, not warn: during an outage every request to the dead server retries, and
            // the metrics (retries, connect errors) and the health and breaker transitions
            // already say so once.
            tracing::debug!(upstream = %upstream.name, server = %server.addr, error = %error, request_id = request_id.to_str().unwrap_or("-"), "retrying on another server");
            retries += 1;
            upstream.retries_total.inc();
            // Each attempt gets the whole response_timeout; the first starts with the request.
            attempt_start = Instant::now();
            claim = next;
        }
    }
}

/// How an attempt ended, for its CLIENT span: the status, or the failure's `error.type`.
fn attempt_end(result: &SendResult) -> AttemptEnd {
    let error = match result {
        Ok((response, _)) => return AttemptEnd::Status(response.status().as_u16()),
        Err((error, _)) => error,
    };
    let is_reset = |kind: std::io::ErrorKind| {
        matches!(
            kind,
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionAborted
        )
    };
    AttemptEnd::Error(match error {
        ForwardError::Connect(ConnectError::Timeout) => "connect_timeout",
        ForwardError::Connect(ConnectError::Io(e))
            if e.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            "connection_refused"
        }
        ForwardError::Connect(ConnectError::Tls(_)) => "tls_error",
        ForwardError::Connect(_) => "connect_error",
        ForwardError::Timeout => "timeout",
        ForwardError::Http1(client::Error::Closed) => "connection_reset",
        ForwardError::Http1(client::Error::Io(e)) if is_reset(e.kind()) => "connection_reset",
        ForwardError::Upstream(e) if e.is_closed() || e.is_incomplete_message() => {
            "connection_reset"
        }
        ForwardError::Http1(_) | ForwardError::Upstream(_) | ForwardError::AmbiguousFraming => {
            "invalid_response"
        }
        ForwardError::NoServer(_) => "no_server",
        ForwardError::BodyTooLarge => "body_too_large",
        ForwardError::ClientBody => "client_body",
    })
}

/// What a stored response's Cache-Status says of how the cache answered: fresh, after a 304
/// from the upstream, or stale in place of an upstream that failed.
fn cache_outcome(headers: &http::HeaderMap) -> &'static str {
    let status = headers
        .get(cache_answer::cache_status_name())
        .map_or(&b""[..], HeaderValue::as_bytes);
    let has = |part: &[u8]| status.windows(part.len()).any(|w| w == part);
    if has(b"stale-if-error") {
        "stale"
    } else if has(b"fwd-status=304") {
        "revalidated"
    } else {
        "hit"
    }
}

/// A server that took a request: its in-flight count and, outside panic mode, its breaker's
/// admission.
struct Claim<'a> {
    index: usize,
    in_flight: crate::upstream::InFlight,
    pass: Option<crate::health::circuit::Pass<'a>>,
}

/// Picks an eligible server not tried yet that has room (`max_connections`) and whose breaker
/// admits the request, skipping those that filled up or ran out of trial slots since the pick.
fn claim_server<'a>(
    upstream: &'a Upstream,
    tried: &mut Tried,
    key: Option<u64>,
    now: Instant,
    panic: bool,
) -> Option<Claim<'a>> {
    loop {
        let index = upstream.pick(*tried, now, panic, key)?;
        tried.insert(index);
        let server = &upstream.servers[index];
        let Some(in_flight) = server.try_start_request(upstream.max_connections) else {
            continue;
        };
        let pass = (!panic).then(|| server.breaker.admit(now));
        if pass
            .as_ref()
            .is_some_and(|p| p.admission() == Admission::Rejected)
        {
            continue;
        }
        return Some(Claim {
            index,
            in_flight,
            pass,
        });
    }
}

/// Tells the server's ejection whether the attempt reached it: a refused connect counts
/// toward ejecting it, an answer clears the count.
fn record_reachability(server: &ServerState, result: &SendResult) {
    match result {
        Ok(_) => server.ejection.record_success(),
        Err((ForwardError::Connect(ConnectError::Io(error)), _))
            if matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) =>
        {
            if let Some(time) = server.ejection.record_refused(Instant::now()) {
                tracing::warn!(upstream = %server.upstream, server = %server.addr, ejected_for = ?time, error = %error, "server ejected after refused connects in a row");
            }
        }
        Err(_) => {}
    }
}

/// Tells the server's breaker what the attempt said about it.
fn record_verdict(
    server: &ServerState,
    pass: Option<crate::health::circuit::Pass<'_>>,
    result: &SendResult,
) {
    let Some(pass) = pass else {
        return;
    };
    if !server.breaker.is_enabled() {
        return;
    }
    match verdict(result) {
        Verdict::Success => pass.record(None, Instant::now()),
        Verdict::Failure(why) => pass.record(Some(&why), Instant::now()),
        // Dropping the pass gives a trial slot back.
        Verdict::Neutral => drop(pass),
    }
}

/// Whether the request may go to another server after `error`: after a failed connect, a
/// broken connection or a timeout, when the attempt left it `sendable` (see `SendResult`).
fn may_go_again(error: &ForwardError, sendable: bool) -> bool {
    sendable
        && matches!(
            error,
            ForwardError::Connect(_)
                | ForwardError::Timeout
                | ForwardError::Upstream(_)
                | ForwardError::Http1(_)
        )
}

/// What an attempt says about the server, for its breaker.
enum Verdict {
    Success,
    Failure(String),
    /// Says nothing about the server: the client's own body was too large or unreadable.
    Neutral,
}

/// A 5xx answer is a failure of the server; a client's own bad body is neither.
fn verdict(result: &SendResult) -> Verdict {
    match result {
        Ok((response, _)) if response.status().is_server_error() => {
            Verdict::Failure(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(_) => Verdict::Success,
        Err((ForwardError::BodyTooLarge | ForwardError::ClientBody, _)) => Verdict::Neutral,
        Err((error, _)) => Verdict::Failure(error.to_string()),
    }
}

/// An attempt's response, or its failure and whether the request, as the attempt left it in
/// place, may be sent again: one that never left (a failed connect), or one whose body could
/// be put back after a broken connection or a timeout.
type SendResult = Result<(Response<UpstreamBody>, Option<PoolReturn>), (ForwardError, bool)>;

/// One attempt on one server. On a connect failure the request stays in place unsent.
// Not an `async fn`, for the reason given at `Reply::send`.
#[allow(clippy::manual_async_fn, clippy::too_many_arguments)]
fn send_to_server<'a>(
    server: &'a Arc<ServerState>,
    upstream: &'a Upstream,
    request: &'a mut Request<RequestBody>,
    fields: &'a mut Option<ForwardingFields>,
    replayable: bool,
    started: Instant,
    request_id: &'a HeaderValue,
    interim: Option<&'a InterimSink>,
    keep_raw: bool,
) -> impl Future<Output = SendResult> + Send + 'a {
    async move {
        // `started` (when the request arrived) stands for the send time on a pooled connection:
        // the difference is a few instructions, and it spares a clock read per request.
        let mut sent_at = started;
        let deadline = tokio::time::Instant::from_std(started) + upstream.response_timeout;
        let mut fresh_connection = false;
        loop {
            // After a pooled connection failed, the one retry goes on a new connection.
            let pooled = if fresh_connection {
                None
            } else {
                server.pool.take_idle(started)
            };
            let (sender, generation) = match pooled {
                Some(pooled) => pooled,
                None => {
                    fresh_connection = true;
                    match server.pool.connect(upstream.connect_timeout).await {
                        Ok(connected) => {
                            sent_at = Instant::now();
                            connected
                        }
                        Err(e) => {
                            match e {
                                ConnectError::Timeout => server.metrics.timeout.inc(),
                                _ => server.metrics.connect_error.inc(),
                            }
                            return Err((ForwardError::Connect(e), true));
                        }
                    }
                }
            };
            let conn = match sender {
                Sender::Http1(conn) => conn,
                Sender::Http2(sender) => {
                    // hyper writes the head from the map alone.
                    if let Some(fields) = fields.take() {
                        fields.apply(request.headers_mut());
                    }
                    let attempt = Http2Attempt {
                        server,
                        deadline,
                        sent_at,
                        request_id,
                        may_resend: !fresh_connection,
                    };
                    // Boxed: hyper's HTTP/2 request future is over a kilobyte, and inline it would
                    // sit in every request's forwarding future, HTTP/1.1 ones included.
                    // hyper takes the request: a copy is kept to send again, if it may be (boxed,
                    // for the same reason).
                    let replay = if replayable {
                        ReplayableHead::keep(request).map(Box::new)
                    } else {
                        None
                    };
                    let taken = std::mem::replace(request, Request::new(RequestBody::Empty));
                    match Box::pin(attempt.send(sender, taken)).await {
                        Ok(Err((error, false)))
                            if matches!(
                                error,
                                ForwardError::Timeout | ForwardError::Upstream(_)
                            ) =>
                        {
                            let sendable = match replay {
                                Some(replay) => {
                                    *request = replay.request();
                                    true
                                }
                                None => false,
                            };
                            return Err((error, sendable));
                        }
                        Ok(result) => return result,
                        Err(unsent) => {
                            *request = unsent;
                            fresh_connection = true;
                            continue;
                        }
                    }
                }
            };
            // A pooled connection may have been closed by the server just as it was taken: a
            // request that may be sent twice, with a body that can be, goes again on a new one
            // if nothing of an answer came.
            let spare = if fresh_connection || !is_idempotent(request.method()) {
                None
            } else {
                request.body().try_clone()
            };
            // The body again, put back after a failure in flight.
            let again = if replayable {
                request.body().try_clone()
            } else {
                None
            };
            let options = client::Options {
                interim,
                keep_raw,
                deadline: Some(deadline),
                fields: fields.as_ref(),
            };
            let failure = match client::exchange(conn, request, options).await {
                Ok(response) => {
                    observe_response(server, response.status(), sent_at);
                    let pool_return = PoolReturn::new(generation, Arc::clone(server));
                    return Ok((response.map(UpstreamBody::Http1), Some(pool_return)));
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::Upstream {
                    nothing_received: true,
                    ..
                } if spare.is_some() => {
                    if let Some(body) = spare {
                        *request.body_mut() = body;
                    }
                    fresh_connection = true;
                }
                Failure::Upstream { error, .. } => {
                    server.metrics.error.inc();
                    let error = match error {
                        client::Error::Head(
                            crate::http1::HeadError::ContentLengthAndTransferEncoding,
                        ) => ForwardError::AmbiguousFraming,
                        error => ForwardError::Http1(error),
                    };
                    return Err((error, handed_back(request, again)));
                }
                Failure::Timeout => {
                    server.metrics.timeout.inc();
                    return Err((ForwardError::Timeout, handed_back(request, again)));
                }
                Failure::RequestBody(error) => {
                    if let Some(cause) = error.downcast_ref::<BodyTooLarge>() {
                        tracing::debug!(
                            limit = cause.limit,
                            request_id = request_id.to_str().unwrap_or("-"),
                            "request body too large"
                        );
                        return Err((ForwardError::BodyTooLarge, false));
                    }
                    return Err((ForwardError::ClientBody, false));
                }
            }
        }
    }
}

/// Counts a response head in the server's latency and outcome metrics.
fn observe_response(server: &ServerState, status: StatusCode, sent_at: Instant) {
    let latency = sent_at.elapsed();
    server.observe_latency(latency);
    server
        .metrics
        .response_duration
        .observe(latency.as_secs_f64());
    if status.is_server_error() {
        server.metrics.http_5xx.inc();
    } else {
        server.metrics.ok.inc();
    }
}

/// One attempt on a shared HTTP/2 connection (hyper's client).
struct Http2Attempt<'a> {
    server: &'a Arc<ServerState>,
    deadline: tokio::time::Instant,
    sent_at: Instant,
    request_id: &'a HeaderValue,
    /// The connection came from the pool: a request it never took may go on a new one.
    may_resend: bool,
}

impl Http2Attempt<'_> {
    /// The attempt's result, or the request back when a pooled connection that was closing
    /// never took it (safe to send again on a new connection, whatever its method).
    async fn send(
        self,
        mut sender: crate::upstream::pool::Http2Sender,
        request: Request<RequestBody>,
    ) -> Result<SendResult, Request<RequestBody>> {
        let server = self.server;
        let outcome =
            tokio::time::timeout_at(self.deadline, sender.try_send_request(request)).await;
        let mut error = match outcome {
            Err(_elapsed) => {
                server.metrics.timeout.inc();
                return Ok(Err((ForwardError::Timeout, false)));
            }
            Ok(Ok(response)) => {
                if has_ambiguous_framing(response.headers()) {
                    // Passing it on would let the client see a Content-Length that does not
                    // frame what follows.
                    server.metrics.error.inc();
                    return Ok(Err((ForwardError::AmbiguousFraming, false)));
                }
                observe_response(server, response.status(), self.sent_at);
                return Ok(Ok((response.map(UpstreamBody::Http2), None)));
            }
            Ok(Err(error)) => error,
        };
        if self.may_resend
            && let Some(unsent) = error.take_message()
        {
            return Err(unsent);
        }
        let error = error.into_error();
        if let Some(cause) = find_cause::<BodyTooLarge>(&error) {
            tracing::debug!(
                limit = cause.limit,
                request_id = self.request_id.to_str().unwrap_or("-"),
                "request body too large"
            );
            return Ok(Err((ForwardError::BodyTooLarge, false)));
        }
        if find_cause::<ClientBodyError>(&error).is_some() {
            return Ok(Err((ForwardError::ClientBody, false)));
        }
        server.metrics.error.inc();
        Ok(Err((ForwardError::Upstream(error), false)))
    }
}

/// A message with both Transfer-Encoding and Content-Length (RFC 9112 §6.3): the sender is
/// broken or hostile, and no framing of it can be trusted.
fn has_ambiguous_framing(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH)
}

fn find_cause<E: std::error::Error + 'static>(error: &hyper::Error) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<E>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}
