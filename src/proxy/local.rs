//! Answers gatehouse makes itself (404, 413, 502, 503, 504 …): a status, a one-line plain-text
//! body saying what happened, and nothing that could be mistaken for the upstream's answer.

use super::body::ResponseBody;
use super::exchange::Exchange;
use crate::headers::X_REQUEST_ID;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

pub fn local_response(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let text = format!("{} {reason}: {message}\n", status.as_u16());
    let mut response = Response::new(ResponseBody::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
    response
}

impl Exchange {
    /// The local answer `status` with `message`, carrying the request id, accounted for as
    /// this exchange when its body is finished.
    pub(crate) fn local(
        mut self,
        status: StatusCode,
        message: &'static str,
    ) -> Response<ResponseBody> {
        self.status = status;
        let mut response = match self.error_page(status) {
            Some(page) => page,
            None => local_response(status, message),
        };
        let headers = response.headers_mut();
        headers.insert(&X_REQUEST_ID, self.request_id.clone());
        self.add_limit_fields(headers);
        self.add_route_fields(headers);

        response.body_mut().set_completion(self);
        response
    }

    /// A response made for this exchange elsewhere (a file), with the fields every answer
    /// gatehouse makes carries, accounted for as this exchange when its body is finished.
    pub(crate) fn made(mut self, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
        self.status = response.status();
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
        headers.insert(&X_REQUEST_ID, self.request_id.clone());
        self.add_limit_fields(headers);
        self.add_route_fields(headers);
        response.body_mut().set_completion(self);
        response
    }

    /// The route's `response_headers` on an answer gatehouse makes itself for it (as nginx's
    /// `add_header … always`: HSTS on a 401 too).
    fn add_route_fields(&self, headers: &mut http::HeaderMap) {
        if let Some(route) = &self.route
            && !route.response_headers.is_empty()
        {
            route.response_headers.apply(headers);
        }
    }

    /// The configured page for `status`: the route's, else the snapshot's.
    fn error_page(&self, status: StatusCode) -> Option<Response<ResponseBody>> {
        let route_pages = self
            .route
            .as_deref()
            .map_or(&[][..], |r| &r.error_pages[..]);
        let page = route_pages
            .iter()
            .chain(&self.snapshot.error_pages)
            .find(|page| page.statuses.contains(&status))?;
        let mut response = Response::new(ResponseBody::full(page.body.clone()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, page.content_type.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
        Some(response)
    }

    /// An answer a route gives at the edge (`return`, a redirect), accounted for as this
    /// exchange.
    pub(crate) fn edge(
        mut self,
        status: StatusCode,
        location: Option<HeaderValue>,
        body: Option<String>,
        content_type: Option<HeaderValue>,
    ) -> Response<ResponseBody> {
        self.status = status;
        let body = body.unwrap_or_default();
        let has_body = !body.is_empty();
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Some(location) = location {
            headers.insert(header::LOCATION, location);
        }
        if has_body {
            headers.insert(
                header::CONTENT_TYPE,
                content_type.unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8")),
            );
        }
        headers.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
        headers.insert(&X_REQUEST_ID, self.request_id.clone());
        self.add_limit_fields(headers);
        self.add_route_fields(headers);
        response.body_mut().set_completion(self);
        response
    }
}
