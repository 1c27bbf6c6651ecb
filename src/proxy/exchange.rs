//! One request/response exchange as gatehouse accounts for it: when its response body is
//! finished (or abandoned), it counts the request, observes its duration, writes the access log
//! line and ends the server's in-flight count.

use super::access_log::CombinedLine;
use crate::config::AccessLogFormat;
use crate::connection::RequestInFlight;
use crate::limit::{Held, LimitFields};
use crate::snapshot::{Route, Snapshot};
use crate::trace::RequestTrace;
use crate::upstream::InFlight;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One request/response exchange, finished when its response body is: it then counts the
/// request, observes its duration, writes the access log line and ends the in-flight count.
// Boxed once when the request begins: it travels by value from the handler through the
// forwarding future into the response body, and each of those moves would otherwise copy
// the whole record.
pub(crate) struct Exchange(Box<ExchangeState>);

impl Exchange {
    pub(crate) fn new(state: ExchangeState) -> Self {
        Self(Box::new(state))
    }
}

impl std::ops::Deref for Exchange {
    type Target = ExchangeState;

    fn deref(&self) -> &ExchangeState {
        &self.0
    }
}

impl std::ops::DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut ExchangeState {
        &mut self.0
    }
}

pub(crate) struct ExchangeState {
    pub(crate) start: Instant,
    pub(crate) method: Method,
    /// The path (with the query for the combined format); empty when the access log is off.
    pub(crate) path: String,
    pub(crate) client: IpAddr,
    pub(crate) version: Version,
    /// Referer and User-Agent, kept only for the combined access log (boxed: every request's
    /// exchange is moved into its response body, and most never need these).
    pub(crate) referer_and_agent: Option<Box<(Option<HeaderValue>, Option<HeaderValue>)>>,
    pub(crate) status: StatusCode,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) server: Option<Arc<str>>,
    pub(crate) request_id: HeaderValue,
    pub(crate) in_flight: Option<InFlight>,
    /// Ends the request on its client connection when the exchange is dropped.
    pub(crate) connection: RequestInFlight,
    /// What the route's limits gave the request: fields for the response, places in
    /// concurrency limits given back when the exchange ends.
    pub(crate) limits: Option<Box<Held>>,
    /// The request's trace, when the snapshot has tracing configured.
    pub(crate) trace: Option<Box<RequestTrace>>,
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl ExchangeState {
    pub(crate) fn server_name(&self) -> &str {
        self.server.as_deref().unwrap_or("-")
    }

    /// Sets the `RateLimit-Policy` and `RateLimit` fields on the response, when there are.
    pub(crate) fn add_limit_fields(&mut self, headers: &mut HeaderMap) {
        if let Some(held) = &mut self.limits
            && let Some(LimitFields { policy, state }) = held.fields.take()
        {
            headers.insert(&RATELIMIT_POLICY, policy);
            headers.insert(&RATELIMIT, state);
        }
    }
}

/// Counts and logs the answer to a request head that could not be read: no route was chosen
/// (the route and upstream labels say `none`), and nothing of the request is known but its
/// client and the protocol of its connection.
pub(crate) fn record_rejected_head(
    snapshot: &Snapshot,
    client: IpAddr,
    version: Version,
    status: StatusCode,
) {
    snapshot.unrouted.count(version, status);
    AccessRecord {
        client,
        request: None,
        status: status.as_u16(),
        route: None,
        server: "-",
        duration_ms: 0.0,
        bytes: 0,
        complete: true,
        request_id: &HeaderValue::from_static("-"),
        trace_id: None,
        referer_and_agent: (None, None),
    }
    .write(snapshot.access_log);
}

/// One access-log line's facts, written in the configured format.
struct AccessRecord<'a> {
    client: IpAddr,
    /// Method, target and version; `None` for a head that could not be read.
    request: Option<(&'a Method, &'a str, Version)>,
    status: u16,
    route: Option<&'a Route>,
    server: &'a str,
    duration_ms: f64,
    bytes: u64,
    complete: bool,
    request_id: &'a HeaderValue,
    /// The request's trace id (hex), when it has a trace.
    trace_id: Option<&'a str>,
    referer_and_agent: (Option<&'a HeaderValue>, Option<&'a HeaderValue>),
}

impl AccessRecord<'_> {
    fn write(&self, format: AccessLogFormat) {
        match format {
            AccessLogFormat::Off => {}
            AccessLogFormat::Combined => {
                if !tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
                    return;
                }
                let line = CombinedLine {
                    client: self.client,
                    time: SystemTime::now(),
                    request: self.request,
                    status: self.status,
                    body_bytes_sent: self.bytes,
                    referer: self.referer_and_agent.0,
                    user_agent: self.referer_and_agent.1,
                    request_id: self.request_id,
                    trace_id: self.trace_id,
                }
                .render();
                tracing::info!(target: "gatehouse::access", "{line}");
            }
            AccessLogFormat::Text | AccessLogFormat::Json => tracing::info!(
                target: "gatehouse::access",
                client = %self.client,
                method = %self.request.map_or("-", |(method, _, _)| method.as_str()),
                path = %self.request.map_or("-", |(_, path, _)| path),
                status = self.status,
                route = self.route.map_or("-", |r| &*r.name),
                upstream = self.route.map_or("-", |r| &*r.upstream.name),
                server = self.server,
                duration_ms = self.duration_ms,
                bytes = self.bytes,
                complete = self.complete,
                request_id = self.request_id.to_str().unwrap_or("-"),
                trace_id = self.trace_id,
            ),
        }
    }
}

impl ExchangeState {
    /// Counts the request, observes its duration, writes the access log line and ends the
    /// in-flight count; called once, when the response body is finished or abandoned.
    pub(crate) fn complete(&mut self, bytes_sent: u64, finished: bool, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        let metrics = match &self.route {
            Some(route) => &route.metrics,
            None => &self.snapshot.unrouted,
        };
        metrics.count(self.version, self.status);
        metrics.duration.observe(elapsed.as_secs_f64());
        metrics.sent_bytes.inc_by(bytes_sent);
        self.in_flight = None;
        let trace_id = match self.trace.take() {
            Some(trace) => {
                let trace_id = (self.snapshot.access_log != AccessLogFormat::Off)
                    .then(|| trace.trace_id_hex());
                self.export_trace(*trace, now);
                trace_id
            }
            None => None,
        };
        if self.snapshot.access_log == AccessLogFormat::Off {
            return;
        }
        let referer_and_agent = match self.referer_and_agent.as_deref() {
            Some((referer, user_agent)) => (referer.as_ref(), user_agent.as_ref()),
            None => (None, None),
        };
        AccessRecord {
            client: self.client,
            request: Some((&self.method, &self.path, self.version)),
            status: self.status.as_u16(),
            route: self.route.as_deref(),
            server: self.server_name(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            bytes: bytes_sent,
            complete: finished,
            request_id: &self.request_id,
            trace_id: trace_id.as_deref(),
            referer_and_agent,
        }
        .write(self.snapshot.access_log);
    }

    /// Hands the request's spans to the exporter, if it is sampled: the SERVER span with what
    /// the request met on its way (route, status, cache, limits, access), and its attempts.
    fn export_trace(&self, mut trace: RequestTrace, now: Instant) {
        let Some(tracing) = &self.snapshot.tracing else {
            return;
        };
        if !trace.sampled {
            return;
        }
        let status = self.status.as_u16();
        // gatehouse's own 429 or 403 came without any attempt upstream; the same status from
        // the upstream is the upstream's.
        let answered_here = !trace.went_upstream();
        let attributes = &mut trace.attributes;
        attributes.push(("http.response.status_code", i64::from(status).into()));
        let name = match &self.route {
            Some(route) => {
                let template = if route.path.is_empty() {
                    route.path_prefix.clone()
                } else {
                    route.path.clone()
                };
                let name = format!("{} {template}", self.method);
                attributes.push(("http.route", template.into()));
                attributes.push(("gatehouse.route", route.name.to_string().into()));
                attributes.push(("gatehouse.upstream", route.upstream.name.to_string().into()));
                if route.cache.is_some() {
                    let outcome = trace.cache_outcome.unwrap_or("miss");
                    attributes.push(("gatehouse.cache.outcome", outcome.into()));
                }
                if !route.rate_limits.is_empty() {
                    let decision = if status == 429 && answered_here {
                        "rejected"
                    } else {
                        "passed"
                    };
                    attributes.push(("gatehouse.rate_limit.decision", decision.into()));
                }
                if !route.access.is_empty() {
                    let decision = if status == 403 && answered_here {
                        "denied"
                    } else {
                        "allowed"
                    };
                    attributes.push(("gatehouse.access.decision", decision.into()));
                }
                name
            }
            None => self.method.to_string(),
        };
        let error = status >= 500;
        if error {
            attributes.push(("error.type", status.to_string().into()));
        }
        let spans = trace.finish(name, self.method.as_str(), error, now);
        tracing.exporter.submit(spans);
    }
}
