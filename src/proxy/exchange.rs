//! One request/response exchange as gatehouse accounts for it: when its response body is
//! finished (or abandoned), it counts the request, observes its duration, writes the access log
//! line and ends the server's in-flight count.

use super::headers::X_REQUEST_ID;
use super::local_response;
use crate::config::AccessLogFormat;
use crate::server::RequestInFlight;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::InFlight;
use http::header::HeaderValue;
use http::{Method, Response, StatusCode};
use std::sync::Arc;
use std::time::Instant;

use super::body::ResponseBody;

/// One request/response exchange, finished when its response body is: it then counts the
/// request, observes its duration, writes the access log line and ends the in-flight count.
pub(crate) struct Exchange {
    pub(crate) start: Instant,
    pub(crate) method: Method,
    pub(crate) path: String,
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

    pub(crate) fn local(
        mut self,
        status: StatusCode,
        message: &'static str,
    ) -> Response<ResponseBody> {
        self.status = status;
        let mut response = local_response(status, message);
        response
            .headers_mut()
            .insert(&X_REQUEST_ID, self.request_id.clone());

        response.body_mut().set_completion(self);
        response
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
        self.in_flight = None;
        if self.snapshot.access_log != AccessLogFormat::Off {
            tracing::info!(
                target: "gatehouse::access",
                method = %self.method,
                path = %self.path,
                status = self.status.as_u16(),
                route = self.route.as_ref().map_or("-", |r| &*r.name),
                upstream = self.route.as_ref().map_or("-", |r| &*r.upstream.name),
                server = self.server_name(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes = bytes_sent,
                complete = finished,
                request_id = self.request_id.to_str().unwrap_or("-"),
            );
        }
    }
}
