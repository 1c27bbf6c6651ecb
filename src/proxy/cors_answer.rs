//! The answer to a CORS preflight, made at the edge: 204 with the route's Access-Control-Allow-*
//! fields when the origin is allowed, 204 without them when it is not (as Envoy answers
//! preflights it does not match when it does not forward them); the upstream never sees it.

use super::body::ResponseBody;
use super::exchange::Exchange;
use crate::headers::X_REQUEST_ID;
use crate::policy::cors::Cors;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

impl Exchange {
    pub(crate) fn cors_preflight(
        mut self,
        cors: &Cors,
        request: &HeaderMap,
    ) -> Response<ResponseBody> {
        let origin = cors.allowed_origin(request);
        if origin.is_some() {
            cors.preflights_allowed.inc();
        } else {
            cors.preflights_denied.inc();
            tracing::debug!(
                cors = %cors.name,
                origin = ?request.get(header::ORIGIN),
                "CORS preflight from an origin the route does not allow"
            );
        }
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        cors.preflight_fields(origin.as_ref(), headers);
        headers.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
        headers.insert(&X_REQUEST_ID, self.request_id.clone());
        self.add_limit_fields(headers);
        self.status = StatusCode::NO_CONTENT;
        response.body_mut().set_completion(self);
        response
    }
}
