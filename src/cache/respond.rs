//! Answers from a stored response: the full response (or just its head for HEAD), 304 when the
//! client's own conditional request matches (RFC 9111 §4.3.2), 206 for a single byte range
//! (RFC 9110 §14), with `Age` (RFC 9111 §5.1) and `Cache-Status` (RFC 9211).

use super::policy;
use super::store::CachedResponse;
use crate::proxy::body::ResponseBody;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use std::time::SystemTime;

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_FIELDS: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// The client's answer from `stored`, with `cache_status` as its Cache-Status field.
pub fn respond(
    stored: &CachedResponse,
    method: &Method,
    request_headers: &HeaderMap,
    now: SystemTime,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    let age = stored.freshness.current_age(now).as_secs();
    let mut response = if policy::not_modified(request_headers, &stored.headers) {
        let mut headers = HeaderMap::with_capacity(NOT_MODIFIED_FIELDS.len() + 2);
        for name in &NOT_MODIFIED_FIELDS {
            for value in stored.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = headers;
        response
    } else {
        full_or_range(stored, method, request_headers)
    };
    let headers = response.headers_mut();
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(cache_status_name(), cache_status);
    response
}

fn full_or_range(
    stored: &CachedResponse,
    method: &Method,
    request_headers: &HeaderMap,
) -> Response<ResponseBody> {
    let len = stored.body.len() as u64;
    let range = if stored.status == StatusCode::OK && request_headers.contains_key(header::RANGE) {
        policy::byte_range(request_headers, &stored.headers, len)
    } else {
        None
    };
    let mut headers = stored.headers.clone();
    let (status, body) = match range {
        Some(Ok(range)) => {
            let (start, end) = (*range.start(), *range.end());
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            let body = stored.body.slice(start as usize..=end as usize);
            (StatusCode::PARTIAL_CONTENT, body)
        }
        Some(Err(())) => {
            headers.clear();
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
            );
            (StatusCode::RANGE_NOT_SATISFIABLE, bytes::Bytes::new())
        }
        None => (stored.status, stored.body.clone()),
    };
    let body = if *method == Method::HEAD {
        // The stored Content-Length still describes the representation.
        ResponseBody::empty()
    } else {
        ResponseBody::full(body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The RFC 9211 field.
pub fn cache_status_name() -> header::HeaderName {
    header::HeaderName::from_static("cache-status")
}

/// A Cache-Status value for this cache, e.g. `gatehouse; hit; ttl=4`.
pub fn cache_status(details: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("gatehouse; {details}"))
        .unwrap_or_else(|_| HeaderValue::from_static("gatehouse"))
}
