//! Embedded demo backend: a restaurant's order API that gatehouse runs in-process (and
//! standalone via `gatehouse demo-backend`) so the proxy has something realistic to balance.
//!
//! Routes: `POST/GET /orders`, `GET/HEAD/PATCH/DELETE /orders/{id}`, `GET /healthz`,
//! `GET/POST /_demo/faults` and `GET /_demo/stats`. Every response is JSON and names its
//! backend in `x-served-by`.

mod faults;
mod store;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use faults::{Faults, InvalidErrorRate};
pub use store::{
    DEFAULT_LIMIT, InvalidOrder, MAX_LIMIT, NewOrder, Order, OrderPage, OrderStatus, OrderStore,
};

/// Largest request body accepted; anything bigger is answered with 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long [`serve`] waits for in-flight connections after shutdown before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept, so running out of file descriptors does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const CACHE_BRIEFLY: HeaderValue = HeaderValue::from_static("public, max-age=5");
const INJECTED_FAULT: &[u8] = br#"{"error":"injected fault"}"#;

const ALLOW_ORDERS: HeaderValue = HeaderValue::from_static("GET, HEAD, POST");
const ALLOW_FAULTS: HeaderValue = HeaderValue::from_static("GET, HEAD, POST");
const ALLOW_ORDER: HeaderValue = HeaderValue::from_static("GET, HEAD, PATCH, DELETE");
const ALLOW_READ_ONLY: HeaderValue = HeaderValue::from_static("GET, HEAD");

type Reply = Response<Full<Bytes>>;

/// One demo backend: a name (sent as `x-served-by`), a shared store, its own faults and its
/// own count of order requests.
#[derive(Debug)]
pub struct DemoBackend {
    pub name: String,
    pub store: Arc<OrderStore>,
    pub faults: Arc<Faults>,
    /// Requests to `/orders` and `/orders/{id}` (any method, any answer) since start; not
    /// health checks nor `/_demo/*`. Reported by `GET /_demo/stats`.
    requests: AtomicU64,
    /// Where its SERVER spans go, when tracing is configured: it continues the trace the
    /// proxy sends, so that one trace shows client, proxy and order API.
    tracing: std::sync::OnceLock<crate::trace::Tracing>,
}

/// The service name the demo backends export their spans under.
pub const SERVICE_NAME: &str = "order-api";

/// Where a demo backend's spans go: the collector at `authority` (`host:port`, over `tls`
/// when set), POSTed to `path` with `headers`, under [`SERVICE_NAME`].
pub fn export_target(
    authority: String,
    tls: Option<crate::trace::export::ExportTls>,
    path: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> crate::trace::export::Target {
    crate::trace::export::Target {
        authority,
        tls,
        path,
        headers,
        service_name: SERVICE_NAME.into(),
    }
}

/// A demo backend's tracing: the caller's `traceparent` continued (the proxy's), new traces
/// sampled at `ratio`.
pub fn tracing(ratio: f64, exporter: Arc<crate::trace::export::Exporter>) -> crate::trace::Tracing {
    crate::trace::Tracing {
        ratio,
        tracecontext: true,
        b3: false,
        exporter,
    }
}

impl DemoBackend {
    pub fn new(name: impl Into<String>, store: Arc<OrderStore>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            store,
            faults,
            requests: AtomicU64::new(0),
            tracing: std::sync::OnceLock::new(),
        })
    }

    /// Exports this backend's SERVER spans with `tracing` (set once, before serving).
    pub fn trace_to(&self, tracing: crate::trace::Tracing) {
        let _ = self.tracing.set(tracing);
    }

    /// Order requests received so far (see `GET /_demo/stats`).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serve connections from `listener` until `shutdown` resolves, then stop accepting and let
/// in-flight connections finish (hyper_util::server::graceful::GracefulShutdown, bounded by 5 s).
///
/// Speaks HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge on the same port. Fails
/// only when the backend's name cannot be sent as a header value.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<DemoBackend>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let api = Arc::new(OrderApi::new(backend)?);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timers enforce hyper's header-read timeout and HTTP/2 keep-alive pings.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());

    info!(
        backend = %api.backend.name,
        addr = ?listener.local_addr().ok(),
        "demo backend listening"
    );
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow with every client.
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished {
                    warn!(backend = %api.backend.name, %error, "demo connection task failed");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(backend = %api.backend.name, %error, "demo backend accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%peer, %error, "could not set TCP_NODELAY");
                }
                let api = Arc::clone(&api);
                let service = service_fn(move |request| {
                    let api = Arc::clone(&api);
                    async move { Ok::<_, Infallible>(api.respond(request).await) }
                });
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    if let Err(error) = connection.await {
                        debug!(%peer, %error, "demo connection closed with an error");
                    }
                });
            }
        }
    }

    drop(listener);
    info!(
        backend = %api.backend.name,
        open = connections.len(),
        "demo backend shutting down"
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            backend = %api.backend.name,
            open = connections.len(),
            "demo connections still open after the grace period; dropping them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// The HTTP face of one backend, with the per-backend bytes prepared once.
struct OrderApi {
    backend: Arc<DemoBackend>,
    served_by: HeaderValue,
    health: Bytes,
}

/// Which resource a path names.
enum Route<'a> {
    Health,
    Faults,
    Stats,
    Orders,
    Order(&'a str),
    Unknown,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Self {
        match path {
            "/healthz" => Self::Health,
            "/_demo/faults" => Self::Faults,
            "/_demo/stats" => Self::Stats,
            "/orders" => Self::Orders,
            _ => match path.strip_prefix("/orders/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Self::Order(id),
                _ => Self::Unknown,
            },
        }
    }
}

/// The order API's SERVER span for one request.
fn export_span(
    tracing: &crate::trace::Tracing,
    mut trace: crate::trace::RequestTrace,
    parts: &Parts,
    status: StatusCode,
) {
    use crate::trace::span::Value;
    let route = match Route::of(parts.uri.path()) {
        Route::Health => "/healthz",
        Route::Faults => "/_demo/faults",
        Route::Stats => "/_demo/stats",
        Route::Orders => "/orders",
        Route::Order(_) => "/orders/{id}",
        Route::Unknown => "",
    };
    let attributes = &mut trace.attributes;
    attributes.push(("http.request.method", Value::from(parts.method.to_string())));
    attributes.push(("url.path", Value::from(parts.uri.path().to_owned())));
    attributes.push(("url.scheme", Value::from("http")));
    if !route.is_empty() {
        attributes.push(("http.route", Value::from(route)));
    }
    attributes.push((
        "http.response.status_code",
        Value::Int(i64::from(status.as_u16())),
    ));
    let error = status.is_server_error();
    if error {
        attributes.push(("error.type", Value::from(status.as_str().to_owned())));
    }
    let name = if route.is_empty() {
        parts.method.to_string()
    } else {
        format!("{} {route}", parts.method)
    };
    let spans = trace.finish(
        name,
        parts.method.as_str(),
        error,
        std::time::Instant::now(),
    );
    tracing.exporter.submit(spans);
}

impl OrderApi {
    fn new(backend: Arc<DemoBackend>) -> io::Result<Self> {
        let served_by = HeaderValue::from_str(&backend.name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backend name {:?} cannot be sent as an x-served-by header",
                    backend.name
                ),
            )
        })?;
        let health = serde_json::to_vec(&Health {
            status: "ok",
            backend: &backend.name,
        })
        .map_err(io::Error::other)?;
        Ok(Self {
            backend,
            served_by,
            health: Bytes::from(health),
        })
    }

    async fn respond(&self, request: Request<Incoming>) -> Reply {
        let (mut parts, body) = request.into_parts();
        let traced = self.backend.tracing.get().map(|tracing| {
            let trace = tracing.begin(&mut parts.headers, std::time::Instant::now());
            (tracing, trace)
        });
        let mut reply = self.dispatch(&parts, body).await;
        if let Some((tracing, trace)) = traced
            && trace.sampled
        {
            export_span(tracing, trace, &parts, reply.status());
        }
        let headers = reply.headers_mut();
        headers.insert(SERVED_BY, self.served_by.clone());
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        if parts.method == Method::HEAD {
            // HEAD must advertise the length GET would send, without sending the body.
            let length = reply.body().size_hint().exact().unwrap_or(0);
            reply
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            *reply.body_mut() = Full::new(Bytes::new());
        }
        reply
    }

    async fn dispatch(&self, parts: &Parts, body: Incoming) -> Reply {
        let route = Route::of(parts.uri.path());
        let method = &parts.method;
        match route {
            Route::Health => match *method {
                Method::GET | Method::HEAD if !self.backend.faults.healthy() => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unhealthy (set by /_demo/faults)",
                ),
                Method::GET | Method::HEAD => reply(StatusCode::OK, self.health.clone()),
                _ => method_not_allowed(parts, ALLOW_READ_ONLY),
            },
            Route::Faults => match *method {
                Method::GET | Method::HEAD => self.faults_report(),
                Method::POST => self.change_faults(parts, body).await,
                _ => method_not_allowed(parts, ALLOW_FAULTS),
            },
            Route::Stats => match *method {
                Method::GET | Method::HEAD => json(
                    StatusCode::OK,
                    &StatsReport {
                        requests: self.backend.requests(),
                    },
                ),
                _ => method_not_allowed(parts, ALLOW_READ_ONLY),
            },
            Route::Orders => {
                self.backend.count_request();
                if let Some(fault) = self.injected_fault().await {
                    return fault;
                }
                match *method {
                    Method::GET | Method::HEAD => self.list_orders(parts.uri.query()),
                    Method::POST => self.create_order(parts, body).await,
                    _ => method_not_allowed(parts, ALLOW_ORDERS),
                }
            }
            Route::Order(id) => {
                self.backend.count_request();
                if let Some(fault) = self.injected_fault().await {
                    return fault;
                }
                match *method {
                    Method::GET | Method::HEAD => self.show_order(id),
                    Method::PATCH => self.change_status(id, parts, body).await,
                    Method::DELETE => self.delete_order(id),
                    _ => method_not_allowed(parts, ALLOW_ORDER),
                }
            }
            Route::Unknown => error(
                StatusCode::NOT_FOUND,
                &format!("no route for {}", parts.uri.path()),
            ),
        }
    }

    /// Applies this backend's faults: the added latency first, then maybe an injected 500.
    async fn injected_fault(&self) -> Option<Reply> {
        let faults = &self.backend.faults;
        let latency = faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        faults.roll_injected_error().then(|| {
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(INJECTED_FAULT),
            )
        })
    }

    fn list_orders(&self, query: Option<&str>) -> Reply {
        let (limit, offset) = match page_bounds(query) {
            Ok(bounds) => bounds,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        let page = self.backend.store.list(limit, offset);
        cacheable(json(
            StatusCode::OK,
            &PageBody {
                orders: Snapshots(&page.orders),
                total: page.total,
                limit,
                offset,
            },
        ))
    }

    fn show_order(&self, id: &str) -> Reply {
        match order_id(id).and_then(|id| self.backend.store.get(id)) {
            Some(order) => cacheable(json(StatusCode::OK, &*order)),
            None => order_not_found(id),
        }
    }

    async fn create_order(&self, parts: &Parts, body: Incoming) -> Reply {
        let body = match read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        let draft = match parse_new_order(&body) {
            Ok(draft) => draft,
            Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
        };
        match self.backend.store.create(draft, unix_now()) {
            Ok(order) => {
                let mut created = json(StatusCode::CREATED, &*order);
                if let Ok(location) = HeaderValue::try_from(format!("/orders/{}", order.id)) {
                    created.headers_mut().insert(header::LOCATION, location);
                }
                created
            }
            Err(invalid) => error(StatusCode::UNPROCESSABLE_ENTITY, &invalid.to_string()),
        }
    }

    async fn change_status(&self, id: &str, parts: &Parts, body: Incoming) -> Reply {
        let body = match read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        let status = match parse_status_change(&body) {
            Ok(change) => change.status,
            Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
        };
        match order_id(id).and_then(|id| self.backend.store.set_status(id, status)) {
            Some(order) => json(StatusCode::OK, &*order),
            None => order_not_found(id),
        }
    }

    fn delete_order(&self, id: &str) -> Reply {
        match order_id(id).and_then(|id| self.backend.store.delete(id)) {
            Some(_) => reply(StatusCode::NO_CONTENT, Bytes::new()),
            None => order_not_found(id),
        }
    }

    fn faults_report(&self) -> Reply {
        let faults = &self.backend.faults;
        json(
            StatusCode::OK,
            &FaultsReport {
                latency: humantime::format_duration(faults.latency()).to_string(),
                error_rate: faults.error_rate(),
                healthy: faults.healthy(),
            },
        )
    }

    async fn change_faults(&self, parts: &Parts, body: Incoming) -> Reply {
        let body = match read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        let change = match parse_faults_change(&body) {
            Ok(change) => change,
            Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
        };
        // Check both knobs before touching either, so a rejected request changes nothing.
        let latency = match change.latency.as_deref().map(humantime::parse_duration) {
            None => None,
            Some(Ok(latency)) => Some(latency),
            Some(Err(reason)) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("latency must be a duration such as \"250ms\" or \"2s\": {reason}"),
                );
            }
        };
        let faults = &self.backend.faults;
        if let Some(rate) = change.error_rate
            && let Err(invalid) = faults.set_error_rate(rate)
        {
            return error(StatusCode::UNPROCESSABLE_ENTITY, &invalid.to_string());
        }
        if let Some(latency) = latency {
            faults.set_latency(latency);
        }
        if let Some(healthy) = change.healthy {
            faults.set_healthy(healthy);
        }
        info!(backend = %self.backend.name, ?faults, "demo faults changed");
        self.faults_report()
    }
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    backend: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct PageBody<'a> {
    orders: Snapshots<'a>,
    total: usize,
    limit: usize,
    offset: usize,
}

/// Serialises shared order snapshots as a plain array (serde's `rc` feature is not enabled).
struct Snapshots<'a>(&'a [Arc<Order>]);

impl Serialize for Snapshots<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|order| &**order))
    }
}

#[derive(Serialize)]
struct FaultsReport {
    latency: String,
    error_rate: f64,
    healthy: bool,
}

#[derive(Serialize)]
struct StatsReport {
    requests: u64,
}

#[derive(Deserialize)]
struct StatusChange {
    status: OrderStatus,
}

#[derive(Deserialize)]
struct FaultsChange {
    latency: Option<String>,
    error_rate: Option<f64>,
    healthy: Option<bool>,
}

/// Reads the whole body, refusing with 413 past [`MAX_BODY_BYTES`].
async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, Reply> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    };
    // A declared length lets us refuse before reading anything.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(cause) if cause.is::<LengthLimitError>() => Err(too_large()),
        Err(cause) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("could not read request body: {cause}"),
        )),
    }
}

/// Parses a new order, explaining shape errors by field name; emptiness is the store's call.
fn parse_new_order(body: &[u8]) -> Result<NewOrder, String> {
    serde_json::from_slice(body).map_err(|cause| {
        explain(body, &cause, |object| {
            match object.get("customer") {
                None | Some(Value::Null) => return Some("customer is required".to_owned()),
                Some(Value::String(_)) => {}
                Some(_) => return Some("customer must be a string".to_owned()),
            }
            match object.get("items") {
                None | Some(Value::Null) => Some("items is required".to_owned()),
                Some(Value::Array(items)) => items
                    .iter()
                    .position(|item| !item.is_string())
                    .map(|index| format!("items[{index}] must be a string")),
                Some(_) => Some("items must be a list of strings".to_owned()),
            }
        })
    })
}

fn parse_status_change(body: &[u8]) -> Result<StatusChange, String> {
    serde_json::from_slice(body).map_err(|cause| {
        explain(body, &cause, |object| match object.get("status") {
            None | Some(Value::Null) => Some("status is required".to_owned()),
            Some(_) => Some(
                "status must be one of \"pending\", \"preparing\", \"ready\", \"delivered\""
                    .to_owned(),
            ),
        })
    })
}

fn parse_faults_change(body: &[u8]) -> Result<FaultsChange, String> {
    serde_json::from_slice(body).map_err(|cause| {
        explain(body, &cause, |object| {
            if object
                .get("latency")
                .is_some_and(|v| !v.is_string() && !v.is_null())
            {
                return Some("latency must be a duration string such as \"250ms\"".to_owned());
            }
            if object
                .get("error_rate")
                .is_some_and(|v| !v.is_number() && !v.is_null())
            {
                return Some("error_rate must be a number between 0 and 1".to_owned());
            }
            if object
                .get("healthy")
                .is_some_and(|v| !v.is_boolean() && !v.is_null())
            {
                return Some("healthy must be true or false".to_owned());
            }
            None
        })
    })
}

/// Turns a typed-parse failure into a message naming the field. Only the failure path pays for
/// the second, untyped parse that finds which field is wrong; that parse also decides whether
/// the JSON itself is broken, since serde_json reports some type mismatches (a number where an
/// enum belongs) as syntax errors.
fn explain(
    body: &[u8],
    cause: &serde_json::Error,
    field_problem: impl FnOnce(&serde_json::Map<String, Value>) -> Option<String>,
) -> String {
    if cause.is_eof() {
        return format!("body is not valid JSON: {cause}");
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => {
            field_problem(&object).unwrap_or_else(|| format!("invalid body: {cause}"))
        }
        Ok(_) => "body must be a JSON object".to_owned(),
        Err(cause) => format!("body is not valid JSON: {cause}"),
    }
}

/// Parses `limit` and `offset`, ignoring other parameters.
fn page_bounds(query: Option<&str>) -> Result<(usize, usize), String> {
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = digits(value)
                    .filter(|limit| *limit <= MAX_LIMIT)
                    .ok_or_else(|| format!("limit must be an integer from 0 to {MAX_LIMIT}"))?;
            }
            "offset" => {
                offset = digits(value)
                    .ok_or_else(|| "offset must be a non-negative integer".to_owned())?;
            }
            _ => {}
        }
    }
    Ok((limit, offset))
}

/// Plain decimal digits only: `str::parse` would also take a leading `+`.
fn digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn order_id(text: &str) -> Option<u64> {
    digits(text)
}

fn order_not_found(id: &str) -> Reply {
    error(StatusCode::NOT_FOUND, &format!("order {id} not found"))
}

fn method_not_allowed(parts: &Parts, allow: HeaderValue) -> Reply {
    let mut refusal = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!(
            "method {} is not allowed on {}",
            parts.method,
            parts.uri.path()
        ),
    );
    refusal.headers_mut().insert(header::ALLOW, allow);
    refusal
}

fn cacheable(mut response: Reply) -> Reply {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, CACHE_BRIEFLY);
    response
}

fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &ErrorBody { error: message })
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => reply(status, Bytes::from(body)),
        Err(cause) => {
            warn!(%cause, "could not encode demo response");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(br#"{"error":"could not encode response"}"#),
            )
        }
    }
}

fn reply(status: StatusCode, body: Bytes) -> Reply {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_by_path() {
        assert!(matches!(Route::of("/healthz"), Route::Health));
        assert!(matches!(Route::of("/_demo/faults"), Route::Faults));
        assert!(matches!(Route::of("/_demo/stats"), Route::Stats));
        assert!(matches!(Route::of("/orders"), Route::Orders));
        assert!(matches!(Route::of("/orders/12"), Route::Order("12")));
        assert!(matches!(Route::of("/orders/abc"), Route::Order("abc")));
        for unknown in ["/", "/orders/", "/orders/1/items", "/orderss", "/healthz/"] {
            assert!(matches!(Route::of(unknown), Route::Unknown), "{unknown}");
        }
    }

    #[test]
    fn page_bounds_default_and_reject_bad_numbers() {
        assert_eq!(page_bounds(None), Ok((DEFAULT_LIMIT, 0)));
        assert_eq!(page_bounds(Some("limit=5&offset=10")), Ok((5, 10)));
        assert_eq!(page_bounds(Some("x=1&limit=100")), Ok((100, 0)));
        for bad in [
            "limit=101",
            "limit=-1",
            "limit=",
            "limit=+5",
            "offset=x",
            "offset",
        ] {
            assert!(page_bounds(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn order_ids_are_plain_digits() {
        assert_eq!(order_id("42"), Some(42));
        assert_eq!(order_id("+42"), None);
        assert_eq!(order_id("99999999999999999999999"), None);
    }
}
