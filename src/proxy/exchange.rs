//! One request/response exchange as gatehouse accounts for it: when its response body is
//! finished (or abandoned), it counts the request, observes its duration, writes the access log
//! line and ends the server's in-flight count.

use super::access_log::CombinedLine;
use crate::config::AccessLogFormat;
use crate::connection::RequestInFlight;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::InFlight;
use http::header::HeaderValue;
use http::{Method, StatusCode, Version};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One request/response exchange, finished when its response body is: it then counts the
/// request, observes its duration, writes the access log line and ends the in-flight count.
pub(crate) struct Exchange {
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
}

impl Exchange {
    pub(crate) fn server_name(&self) -> &str {
        self.server.as_deref().unwrap_or("-")
    }
}

/// Counts and logs the answer to a request head that could not be read: no route was chosen
/// (the route and upstream labels say `none`), and nothing of the request is known but its
/// client.
pub(crate) fn record_rejected_head(snapshot: &Snapshot, client: IpAddr, status: StatusCode) {
    snapshot.unrouted.count(status);
    match snapshot.access_log {
        AccessLogFormat::Off => {}
        AccessLogFormat::Combined => {
            if !tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
                return;
            }
            let line = CombinedLine {
                client,
                time: SystemTime::now(),
                request: None,
                status: status.as_u16(),
                body_bytes_sent: 0,
                referer: None,
                user_agent: None,
                request_id: &HeaderValue::from_static("-"),
            }
            .render();
            tracing::info!(target: "gatehouse::access", "{line}");
        }
        AccessLogFormat::Text | AccessLogFormat::Json => tracing::info!(
            target: "gatehouse::access",
            client = %client,
            method = "-",
            path = "-",
            status = status.as_u16(),
            route = "-",
            upstream = "-",
            server = "-",
            duration_ms = 0.0,
            bytes = 0u64,
            complete = true,
            request_id = "-",
        ),
    }
}

impl Exchange {
    /// Counts the request, observes its duration, writes the access log line and ends the
    /// in-flight count; called once, when the response body is finished or abandoned.
    pub(crate) fn complete(&mut self, bytes_sent: u64, finished: bool, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        let metrics = match &self.route {
            Some(route) => &route.metrics,
            None => &self.snapshot.unrouted,
        };
        metrics.count(self.status);
        metrics.duration.observe(elapsed.as_secs_f64());
        metrics.sent_bytes.inc_by(bytes_sent);
        self.in_flight = None;
        match self.snapshot.access_log {
            AccessLogFormat::Off => {}
            AccessLogFormat::Combined => self.log_combined(bytes_sent),
            AccessLogFormat::Text | AccessLogFormat::Json => {
                self.log_fields(bytes_sent, finished, elapsed.as_secs_f64() * 1000.0)
            }
        }
    }

    fn log_combined(&self, bytes_sent: u64) {
        if !tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
            return;
        }
        let (referer, user_agent) = match self.referer_and_agent.as_deref() {
            Some((referer, user_agent)) => (referer.as_ref(), user_agent.as_ref()),
            None => (None, None),
        };
        let line = CombinedLine {
            client: self.client,
            time: SystemTime::now(),
            request: Some((&self.method, &self.path, self.version)),
            status: self.status.as_u16(),
            body_bytes_sent: bytes_sent,
            referer,
            user_agent,
            request_id: &self.request_id,
        }
        .render();
        tracing::info!(target: "gatehouse::access", "{line}");
    }

    fn log_fields(&self, bytes_sent: u64, finished: bool, duration_ms: f64) {
        tracing::info!(
            target: "gatehouse::access",
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            route = self.route.as_ref().map_or("-", |r| &*r.name),
            upstream = self.route.as_ref().map_or("-", |r| &*r.upstream.name),
            server = self.server_name(),
            duration_ms,
            bytes = bytes_sent,
            complete = finished,
            request_id = self.request_id.to_str().unwrap_or("-"),
        );
    }
}
