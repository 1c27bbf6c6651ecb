//! Which responses are compressed and how their head changes: pure decisions over a status
//! and a header map, shared by responses from upstreams and from the cache.
//!
//! A response is compressed only when compressing changes nothing but its coding: a 2xx with
//! content (not 204, 205 or a 206 range), of a configured type, at least `min_length` long
//! when its length is known, not already encoded (never twice), not marked `no-transform`
//! (RFC 9110 §8.4, RFC 9111 §5.2.2.6) and not gRPC.

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use super::Encoding;

/// Media types to compress: exact `type/subtype` or a whole `type/*`, compared without case
/// and without parameters (`text/html; charset=utf-8` is `text/html`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeMatcher {
    exact: Vec<String>,
    /// Top-level types given as `type/*`, with the slash (`text/`).
    whole: Vec<String>,
}

impl TypeMatcher {
    /// Patterns as the config writes them; an invalid one is an error naming it.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut matcher = TypeMatcher::default();
        for pattern in patterns {
            let lower = pattern.trim().to_ascii_lowercase();
            let Some((top, sub)) = lower.split_once('/') else {
                return Err(format!(
                    "invalid type {pattern:?}: expected type/subtype or type/*"
                ));
            };
            let is_token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            if !is_token(top) || !(sub == "*" || is_token(sub)) {
                return Err(format!(
                    "invalid type {pattern:?}: expected type/subtype or type/*"
                ));
            }
            if sub == "*" {
                matcher.whole.push(format!("{top}/"));
            } else {
                matcher.exact.push(lower);
            }
        }
        Ok(matcher)
    }

    pub fn matches(&self, content_type: &[u8]) -> bool {
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let essence = essence.trim_ascii();
        self.exact
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t.as_bytes()))
            || self.whole.iter().any(|t| {
                essence.len() > t.len() && essence[..t.len()].eq_ignore_ascii_case(t.as_bytes())
            })
    }
}

/// Whether a response with this head would be compressed for a client that takes a coding.
pub fn eligible(
    status: StatusCode,
    headers: &HeaderMap,
    types: &TypeMatcher,
    min_length: u64,
) -> bool {
    if !status.is_success()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::PARTIAL_CONTENT
        )
    {
        return false;
    }
    if headers.contains_key(header::CONTENT_ENCODING) || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    if !types.matches(content_type.as_bytes()) || is_grpc(content_type.as_bytes()) {
        return false;
    }
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        // An unreadable length is left for the framing code to judge; it is not ours to touch.
        match std::str::from_utf8(length.as_bytes())
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
        {
            Some(length) if length >= min_length.max(1) => {}
            _ => return false,
        }
    }
    !has_no_transform(headers)
}

/// gRPC compresses its own messages and its clients refuse a Content-Encoding on the stream
/// (`application/grpc`, `application/grpc+proto`, ...), whatever `types` says.
fn is_grpc(content_type: &[u8]) -> bool {
    content_type.len() >= 16 && content_type[..16].eq_ignore_ascii_case(b"application/grpc")
}

/// `Cache-Control: no-transform` on a request or a response.
pub fn has_no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

/// Adds Accept-Encoding to Vary, once: a response that would be compressed for some clients
/// varies on it (RFC 9110 §12.5.5), whether or not this one is.
pub fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let mut existing = headers.get_all(header::VARY).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    let mut merged = Vec::new();
    for value in existing {
        for name in value.as_bytes().split(|&b| b == b',') {
            let name = name.trim_ascii();
            if name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding") {
                // Already varies on it (or on everything).
                return;
            }
            if name.is_empty() {
                continue;
            }
            if !merged.is_empty() {
                merged.extend_from_slice(b", ");
            }
            merged.extend_from_slice(name);
        }
    }
    if !merged.is_empty() {
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(b"Accept-Encoding");
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(merged)) {
        headers.insert(header::VARY, value);
    }
}

/// Turns the head of an eligible response into the head of its `encoding`d form: the coding
/// named, the length gone (the body is sent chunked, or as HTTP/2 frames), a strong ETag made
/// weak (the bytes are no longer the identity's, RFC 9110 §8.8.1), and no byte ranges offered
/// (ranges would be of the encoded bytes, which nothing here serves).
pub fn mark_encoded(headers: &mut HeaderMap, encoding: Encoding) {
    headers.insert(header::CONTENT_ENCODING, encoding.header_value());
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG)
        && let Some(weak) = weakened(etag)
    {
        headers.insert(header::ETAG, weak);
    }
}

/// `"x"` → `W/"x"`; `None` when already weak or not an entity tag.
pub fn weakened(etag: &HeaderValue) -> Option<HeaderValue> {
    let bytes = etag.as_bytes();
    if !bytes.starts_with(b"\"") {
        return None;
    }
    let mut weak = Vec::with_capacity(bytes.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(bytes);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(weak)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> TypeMatcher {
        TypeMatcher::new(["application/json", "text/*"]).expect("valid types")
    }

    fn head(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn types_match_exactly_or_by_top_level_type() {
        let types = json();
        assert!(types.matches(b"application/json"));
        assert!(types.matches(b"Application/JSON; charset=utf-8"));
        assert!(types.matches(b"text/html"));
        assert!(types.matches(b" text/css ;x=y"));
        assert!(!types.matches(b"text/"));
        assert!(!types.matches(b"image/png"));
        assert!(!types.matches(b"application/jsonp"));
        assert!(!types.matches(b""));
    }

    #[test]
    fn bad_type_patterns_are_refused() {
        for bad in ["json", "*/*", "text/", "/json", "te xt/html", "text/ht ml"] {
            assert!(TypeMatcher::new([bad]).is_err(), "{bad}");
        }
        assert!(TypeMatcher::new(["image/svg+xml", "TEXT/*"]).is_ok());
    }

    #[test]
    fn a_typed_2xx_with_content_is_eligible() {
        let types = json();
        let ok = head(&[
            ("content-type", "application/json"),
            ("content-length", "300"),
        ]);
        assert!(eligible(StatusCode::OK, &ok, &types, 256));
        assert!(eligible(StatusCode::CREATED, &ok, &types, 256));
        // Length unknown (streamed): the minimum cannot be judged, so it does not refuse.
        let streamed = head(&[("content-type", "text/plain")]);
        assert!(eligible(StatusCode::OK, &streamed, &types, 256));
    }

    #[test]
    fn what_is_never_compressed() {
        let types = json();
        let base = [
            ("content-type", "application/json"),
            ("content-length", "300"),
        ];
        let with = |extra: (&str, &str)| {
            let mut fields = base.to_vec();
            fields.push(extra);
            head(&fields)
        };
        let plain = head(&base);
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::RESET_CONTENT,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::NOT_FOUND,
            StatusCode::MOVED_PERMANENTLY,
        ] {
            assert!(!eligible(status, &plain, &types, 256), "{status}");
        }
        for extra in [
            ("content-encoding", "gzip"),
            ("content-encoding", "identity"),
            ("content-range", "bytes 0-299/1000"),
            ("cache-control", "max-age=60, No-Transform"),
        ] {
            assert!(
                !eligible(StatusCode::OK, &with(extra), &types, 256),
                "{extra:?}"
            );
        }
        let small = head(&[
            ("content-type", "application/json"),
            ("content-length", "255"),
        ]);
        assert!(!eligible(StatusCode::OK, &small, &types, 256));
        let empty = head(&[
            ("content-type", "application/json"),
            ("content-length", "0"),
        ]);
        assert!(!eligible(StatusCode::OK, &empty, &types, 0));
        let odd = head(&[
            ("content-type", "application/json"),
            ("content-length", "x"),
        ]);
        assert!(!eligible(StatusCode::OK, &odd, &types, 0));
        let untyped = head(&[("content-length", "300")]);
        assert!(!eligible(StatusCode::OK, &untyped, &types, 256));
        let image = head(&[("content-type", "image/png"), ("content-length", "300")]);
        assert!(!eligible(StatusCode::OK, &image, &types, 256));
        let everything = TypeMatcher::new(["application/*"]).expect("types");
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC-web",
        ] {
            let head = head(&[("content-type", grpc)]);
            assert!(!eligible(StatusCode::OK, &head, &everything, 0), "{grpc}");
        }
    }

    #[test]
    fn vary_gains_accept_encoding_once() {
        let mut none = HeaderMap::new();
        vary_on_accept_encoding(&mut none);
        assert_eq!(none.get(header::VARY).expect("vary"), "Accept-Encoding");
        vary_on_accept_encoding(&mut none);
        assert_eq!(none.get_all(header::VARY).iter().count(), 1);

        let mut other = head(&[("vary", "Origin"), ("vary", "Accept-Language, ")]);
        vary_on_accept_encoding(&mut other);
        let values: Vec<_> = other.get_all(header::VARY).iter().collect();
        assert_eq!(values, ["Origin, Accept-Language, Accept-Encoding"]);

        for already in ["accept-encoding", "Origin, ACCEPT-ENCODING", "*"] {
            let mut headers = head(&[("vary", already)]);
            vary_on_accept_encoding(&mut headers);
            assert_eq!(headers.get(header::VARY).expect("vary"), already);
        }
    }

    #[test]
    fn the_encoded_head_names_the_coding_and_drops_the_length() {
        let mut headers = head(&[
            ("content-type", "application/json"),
            ("content-length", "300"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
        ]);
        mark_encoded(&mut headers, Encoding::Brotli);
        assert_eq!(headers.get(header::CONTENT_ENCODING).expect("coding"), "br");
        assert!(!headers.contains_key(header::CONTENT_LENGTH));
        assert!(!headers.contains_key(header::ACCEPT_RANGES));
        assert_eq!(headers.get(header::ETAG).expect("etag"), "W/\"v1\"");
        let mut weak = head(&[("etag", "W/\"v1\"")]);
        mark_encoded(&mut weak, Encoding::Gzip);
        assert_eq!(weak.get(header::ETAG).expect("etag"), "W/\"v1\"");
    }
}
