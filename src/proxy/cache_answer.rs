//! Answers from a stored response: the full response (or just its head for HEAD), 304 when the
//! client's own conditional request matches (RFC 9111 §4.3.2), 206 for a single byte range
//! (RFC 9110 §14), with `Age` (RFC 9111 §5.1) and `Cache-Status` (RFC 9211).

use super::body::ResponseBody;
use super::encode::HitEncoding;
use crate::cache::policy;
use crate::cache::store::CachedResponse;
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

/// The client's answer from `stored`, with `cache_status` as its Cache-Status field, in the
/// coding `encoding` picks where the route compresses.
pub fn respond(
    stored: &CachedResponse,
    method: &Method,
    request_headers: &HeaderMap,
    now: SystemTime,
    cache_status: HeaderValue,
    encoding: Option<&HitEncoding<'_>>,
) -> Response<ResponseBody> {
    let age = stored.freshness.current_age(now).as_secs();
    let mut response = if policy::not_modified(
        request_headers,
        &stored.headers,
        stored.freshness.response_time,
    ) {
        let mut headers = HeaderMap::with_capacity(NOT_MODIFIED_FIELDS.len() + 2);
        for name in &NOT_MODIFIED_FIELDS {
            for value in stored.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(encoding) = encoding {
            encoding.apply(stored, StatusCode::NOT_MODIFIED, &mut headers);
        }
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = headers;
        response
    } else {
        full_or_range(stored, method, request_headers, encoding)
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
    encoding: Option<&HitEncoding<'_>>,
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
        None => {
            let encoded = encoding.and_then(|e| e.apply(stored, stored.status, &mut headers));
            (
                stored.status,
                encoded.unwrap_or_else(|| stored.body.clone()),
            )
        }
    };
    let body = if *method == Method::HEAD {
        // The stored (or encoded) Content-Length still describes the representation.
        ResponseBody::empty()
    } else {
        ResponseBody::full(body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A 206 of `range` (absolute positions, inside `piece`) from a stored piece.
pub fn respond_piece(
    stored: &CachedResponse,
    piece: policy::Piece,
    range: std::ops::RangeInclusive<u64>,
    now: SystemTime,
    cache_status: HeaderValue,
) -> Response<ResponseBody> {
    let (start, end) = (*range.start(), *range.end());
    let mut headers = stored.headers.clone();
    let content_range = match piece.complete_length {
        Some(length) => format!("bytes {start}-{end}/{length}"),
        None => format!("bytes {start}-{end}/*"),
    };
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&content_range)
            .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    let offset = |position: u64| usize::try_from(position - piece.first).unwrap_or(usize::MAX);
    let body = stored
        .body
        .get(offset(start)..=offset(end))
        .map(|bytes| stored.body.slice_ref(bytes))
        .unwrap_or_default();
    headers.insert(
        header::AGE,
        HeaderValue::from(stored.freshness.current_age(now).as_secs()),
    );
    headers.insert(cache_status_name(), cache_status);
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    *response.headers_mut() = headers;
    response
}

/// The RFC 9211 field.
pub fn cache_status_name() -> header::HeaderName {
    header::HeaderName::from_static("cache-status")
}

/// `gatehouse; hit; ttl=N`, the value of every fresh hit, built without the formatting
/// machinery (it is on the hit path).
pub fn hit_status(ttl: u64) -> HeaderValue {
    const PREFIX: &[u8] = b"gatehouse; hit; ttl=";
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = ttl;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut value = Vec::with_capacity(PREFIX.len() + digits.len() - start);
    value.extend_from_slice(PREFIX);
    value.extend_from_slice(&digits[start..]);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
        .unwrap_or_else(|_| HeaderValue::from_static("gatehouse; hit"))
}

/// A Cache-Status value for this cache, e.g. `gatehouse; fwd=miss; stored`.
pub fn cache_status(details: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("gatehouse; {details}"))
        .unwrap_or_else(|_| HeaderValue::from_static("gatehouse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_status_writes_the_ttl() {
        assert_eq!(hit_status(0), "gatehouse; hit; ttl=0");
        assert_eq!(hit_status(4), "gatehouse; hit; ttl=4");
        assert_eq!(hit_status(86400), "gatehouse; hit; ttl=86400");
        assert_eq!(
            hit_status(u64::MAX),
            format!("gatehouse; hit; ttl={}", u64::MAX).as_str()
        );
    }
}
