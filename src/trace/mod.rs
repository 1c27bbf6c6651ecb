//! Distributed tracing: W3C Trace Context (and B3) read from requests and written upstream,
//! one SERVER span per request and one CLIENT span per upstream attempt, exported as OTLP.
//! Nothing here runs unless the snapshot has tracing configured.

pub mod context;
pub mod export;
pub mod otlp;
pub mod span;

use context::{Parent, SpanId, TraceId};
use export::{Exporter, Target};
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::IntCounter;
use span::{Attribute, Kind, SpanRecord, Value};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
static X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A snapshot's tracing settings, with the exporter every snapshot shares.
pub struct Tracing {
    /// The share of new traces sampled.
    pub ratio: f64,
    /// Read `traceparent`.
    pub tracecontext: bool,
    /// Read `b3` and `X-B3-*`, and send `b3` upstream too.
    pub b3: bool,
    pub exporter: Arc<Exporter>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("ratio", &self.ratio)
            .field("tracecontext", &self.tracecontext)
            .field("b3", &self.b3)
            .finish_non_exhaustive()
    }
}

/// Keeps the one exporter across reloads, so that its queue, task and connection stay.
#[derive(Default)]
pub struct TraceRegistry {
    current: Mutex<Option<Arc<Exporter>>>,
}

impl TraceRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The exporter for `target` (the one in use, pointed at it), or none when tracing is off.
    pub fn get_or_create(
        &self,
        target: Option<Target>,
        dropped: &IntCounter,
    ) -> Option<Arc<Exporter>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(target) = target else {
            *current = None;
            return None;
        };
        if let Some(exporter) = current.as_ref() {
            exporter.set_target(target);
            return Some(Arc::clone(exporter));
        }
        let exporter = Arc::new(Exporter::new(target, dropped.clone()));
        *current = Some(Arc::clone(&exporter));
        Some(exporter)
    }
}

impl Tracing {
    /// The trace a request joins (its caller's) or starts, and whether it is sampled. A
    /// malformed `traceparent` starts a new trace, and its `tracestate` is not passed on.
    pub fn begin(&self, headers: &mut HeaderMap, start: Instant) -> RequestTrace {
        let mut parent = None;
        if self.tracecontext
            && let Some(value) = headers.get(&TRACEPARENT)
        {
            parent = context::parse_traceparent(value.as_bytes());
            if parent.is_none() {
                headers.remove(&TRACESTATE);
            }
        }
        if parent.is_none() && self.b3 {
            parent = read_b3(headers);
        }
        let trace_id = parent.map_or_else(context::new_trace_id, |p| p.trace_id);
        let sampled = parent
            .and_then(|p| p.sampled)
            .unwrap_or_else(|| context::sampled_by_ratio(&trace_id, self.ratio));
        let trace_state = match parent {
            Some(_) if sampled => headers.get(&TRACESTATE).cloned(),
            _ => None,
        };
        RequestTrace {
            trace_id,
            span_id: context::new_span_id(),
            parent: parent.map(|p| p.span_id),
            sampled,
            trace_state,
            b3: self.b3,
            start,
            start_unix_nanos: if sampled { unix_nanos_now() } else { 0 },
            cache_outcome: None,
            attributes: Vec::new(),
            attempts: Vec::new(),
        }
    }
}

fn read_b3(headers: &HeaderMap) -> Option<Parent> {
    if let Some(single) = headers.get(&B3) {
        return context::parse_b3_single(single.as_bytes());
    }
    context::parse_b3_multi(
        headers.get(&X_B3_TRACE_ID)?.as_bytes(),
        headers.get(&X_B3_SPAN_ID)?.as_bytes(),
        headers.get(&X_B3_SAMPLED).map(HeaderValue::as_bytes),
        headers.get(&X_B3_FLAGS).map(HeaderValue::as_bytes),
    )
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One request's trace: its SERVER span's ids and its upstream attempts so far.
pub struct RequestTrace {
    pub trace_id: TraceId,
    /// The SERVER span's id.
    pub span_id: SpanId,
    /// The caller's span, when the request carried one.
    pub parent: Option<SpanId>,
    pub sampled: bool,
    pub trace_state: Option<HeaderValue>,
    b3: bool,
    start: Instant,
    start_unix_nanos: u64,
    /// How the cache answered (`hit`, `revalidated`, `stale`), when it did; `None` is a miss.
    pub cache_outcome: Option<&'static str>,
    /// The SERVER span's attributes, gathered as the request goes (sampled requests only).
    pub attributes: Vec<Attribute>,
    attempts: Vec<Attempt>,
}

/// One upstream attempt: a CLIENT span.
struct Attempt {
    span_id: SpanId,
    server: Arc<str>,
    number: u32,
    start: Instant,
    end: Option<Instant>,
    status: Option<u16>,
    error: Option<&'static str>,
}

/// How an attempt ended.
pub enum AttemptEnd {
    Status(u16),
    /// `error.type`: `connection_refused`, `connect_timeout`, `timeout`, …
    Error(&'static str),
}

impl RequestTrace {
    /// The trace id as hex, for the access log.
    pub fn trace_id_hex(&self) -> String {
        context::to_hex(&self.trace_id)
    }

    /// Starts attempt `number` on `server`: its CLIENT span, and the fields that name it as
    /// the parent of what the upstream does, set in `headers`.
    /// Whether the request went upstream (sampled requests only: unsampled ones record no
    /// attempts).
    pub fn went_upstream(&self) -> bool {
        !self.attempts.is_empty()
    }

    pub fn start_attempt(&mut self, server: &Arc<str>, number: u32, headers: &mut HeaderMap) {
        let span_id = context::new_span_id();
        headers.insert(
            &TRACEPARENT,
            context::traceparent(&self.trace_id, &span_id, self.sampled),
        );
        if self.b3 {
            headers.insert(
                &B3,
                context::b3_single(&self.trace_id, &span_id, self.sampled),
            );
            for name in [
                &X_B3_TRACE_ID,
                &X_B3_SPAN_ID,
                &X_B3_PARENT_SPAN_ID,
                &X_B3_SAMPLED,
                &X_B3_FLAGS,
            ] {
                headers.remove(name);
            }
        }
        if self.sampled {
            self.attempts.push(Attempt {
                span_id,
                server: Arc::clone(server),
                number,
                start: Instant::now(),
                end: None,
                status: None,
                error: None,
            });
        }
    }

    /// Ends the attempt started last.
    pub fn end_attempt(&mut self, end: AttemptEnd) {
        if let Some(attempt) = self.attempts.last_mut() {
            attempt.end = Some(Instant::now());
            match end {
                AttemptEnd::Status(status) => attempt.status = Some(status),
                AttemptEnd::Error(error) => attempt.error = Some(error),
            }
        }
    }

    fn unix_nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        self.start_unix_nanos
            .saturating_add(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The finished spans: the SERVER span `name` with its attributes (ended at `end`;
    /// `error` sets its status), and a CLIENT span per attempt under it. An attempt whose
    /// response streamed back ends with the request.
    pub fn finish(self, name: String, method: &str, error: bool, end: Instant) -> Vec<SpanRecord> {
        let trace_state = self
            .trace_state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let end_nanos = self.unix_nanos(end);
        let mut spans = Vec::with_capacity(1 + self.attempts.len());
        for attempt in &self.attempts {
            let (host, port) = match attempt.server.rsplit_once(':') {
                Some((host, port)) => (host, port.parse::<i64>().ok()),
                None => (&*attempt.server, None),
            };
            let mut attributes: Vec<Attribute> = vec![
                ("http.request.method", Value::from(method.to_owned())),
                ("server.address", Value::from(host.to_owned())),
                (
                    "gatehouse.upstream.attempt",
                    Value::Int(i64::from(attempt.number)),
                ),
            ];
            if let Some(port) = port {
                attributes.push(("server.port", Value::Int(port)));
            }
            let mut failed = false;
            if let Some(status) = attempt.status {
                attributes.push(("http.response.status_code", Value::Int(i64::from(status))));
                if status >= 500 {
                    attributes.push(("error.type", Value::from(status.to_string())));
                    failed = true;
                }
            }
            if let Some(error_type) = attempt.error {
                attributes.push(("error.type", Value::from(error_type)));
                failed = true;
            }
            let ended = match (attempt.end, attempt.status) {
                // The response streamed back until the request ended.
                (_, Some(_)) | (None, _) => end_nanos,
                (Some(at), None) => self.unix_nanos(at),
            };
            spans.push(SpanRecord {
                trace_id: self.trace_id,
                span_id: attempt.span_id,
                parent_span_id: Some(self.span_id),
                trace_state: trace_state.clone(),
                name: method.to_owned(),
                kind: Kind::Client,
                start_unix_nanos: self.unix_nanos(attempt.start),
                end_unix_nanos: ended.max(self.unix_nanos(attempt.start)),
                attributes,
                error: failed,
            });
        }
        spans.insert(
            0,
            SpanRecord {
                trace_id: self.trace_id,
                span_id: self.span_id,
                parent_span_id: self.parent,
                trace_state,
                name,
                kind: Kind::Server,
                start_unix_nanos: self.start_unix_nanos,
                end_unix_nanos: end_nanos,
                attributes: self.attributes,
                error,
            },
        );
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    fn tracing(ratio: f64, b3: bool) -> Tracing {
        let target = Target {
            authority: "127.0.0.1:4318".into(),
            tls: None,
            path: "/v1/traces".into(),
            headers: Vec::new(),
            service_name: "gatehouse".into(),
        };
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        Tracing {
            ratio,
            tracecontext: true,
            b3,
            exporter: Arc::new(Exporter::new(target, dropped)),
        }
    }

    #[test]
    fn continues_a_callers_trace_and_parents_the_upstream_on_the_attempt() {
        let mut headers = HeaderMap::new();
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        headers.insert(&TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let mut trace = tracing(0.0, false).begin(&mut headers, Instant::now());
        assert!(
            trace.sampled,
            "the caller's sampled flag wins over the ratio"
        );
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context::to_hex(&trace.parent.unwrap()), "00f067aa0ba902b7");
        trace.start_attempt(&Arc::from("127.0.0.1:8081"), 1, &mut headers);
        let sent = context::parse_traceparent(headers[&TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(sent.trace_id, trace.trace_id);
        trace.end_attempt(AttemptEnd::Error("connection_refused"));
        trace.start_attempt(&Arc::from("127.0.0.1:8082"), 2, &mut headers);
        let second = context::parse_traceparent(headers[&TRACEPARENT].as_bytes()).unwrap();
        assert_ne!(second.span_id, sent.span_id, "each attempt is its own span");
        trace.end_attempt(AttemptEnd::Status(200));
        let spans = trace.finish("GET /".into(), "GET", false, Instant::now());
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].trace_state, "congo=t61rcWkgMzE");
        assert_eq!(spans[1].span_id, sent.span_id);
        assert_eq!(spans[2].span_id, second.span_id);
        assert!(spans[1].error && !spans[2].error);
        assert!(
            spans[1..]
                .iter()
                .all(|s| s.parent_span_id == Some(spans[0].span_id))
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace_without_the_old_state() {
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, HeaderValue::from_static("00-nonsense"));
        headers.insert(&TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let trace = tracing(1.0, false).begin(&mut headers, Instant::now());
        assert!(trace.parent.is_none() && trace.sampled);
        assert!(headers.get(&TRACESTATE).is_none());
    }

    #[test]
    fn an_unsampled_trace_records_no_attempt_but_still_propagates() {
        let mut headers = HeaderMap::new();
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let mut trace = tracing(1.0, true).begin(&mut headers, Instant::now());
        assert!(!trace.sampled);
        trace.start_attempt(&Arc::from("127.0.0.1:8081"), 1, &mut headers);
        assert!(headers[&TRACEPARENT].as_bytes().ends_with(b"-00"));
        assert!(headers[&B3].as_bytes().ends_with(b"-0"));
        assert!(trace.attempts.is_empty());
    }

    #[test]
    fn b3_is_read_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(
            &X_B3_TRACE_ID,
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
        );
        headers.insert(&X_B3_SPAN_ID, HeaderValue::from_static("e457b5a2e4d86bd1"));
        headers.insert(&X_B3_SAMPLED, HeaderValue::from_static("1"));
        let trace = tracing(0.0, true).begin(&mut headers, Instant::now());
        assert_eq!(trace.trace_id_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(trace.sampled);
        let ignored = tracing(0.0, false).begin(&mut headers, Instant::now());
        assert!(ignored.parent.is_none() && !ignored.sampled);
    }
}
