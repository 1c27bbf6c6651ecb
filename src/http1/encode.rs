//! Writing heads: a request head to an upstream and a response head (final or interim) to a
//! client, into the connection's write buffer with one reservation and no formatting.
//!
//! Field names are written as the map holds them, which is lowercase for every name that came
//! through `HeaderName` (HTTP/1.1 names are case-insensitive, so this is correct), except in a
//! response head passed on from its raw bytes, which keeps the upstream's case.
//! Values cannot hold CR or LF (`HeaderValue` refuses them), so nothing written here can split
//! a head.

use bytes::{BufMut, BytesMut};
use http::header::HeaderMap;
use http::{Method, StatusCode, Uri, Version};

use super::RawFields;

fn version_bytes(version: Version) -> &'static [u8] {
    if version == Version::HTTP_10 {
        b"HTTP/1.0"
    } else {
        b"HTTP/1.1"
    }
}

/// Room reserved up front for a head: most fit, and a connection's write buffer, reused from
/// message to message, has it already. A longer head grows the buffer as it is written;
/// measuring the fields first (a second pass over the map) cost more than it saved.
const HEAD_ROOM: usize = 512;

/// Writes each field as `name: value CRLF`, without the empty line that ends a head.
pub fn encode_fields(headers: &HeaderMap, dst: &mut BytesMut) {
    dst.reserve(HEAD_ROOM);
    write_fields(headers, dst);
}

fn write_fields(headers: &HeaderMap, dst: &mut BytesMut) {
    for (name, value) in headers {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
}

/// The request target to send upstream: the authority for CONNECT, `*` for the asterisk
/// form, otherwise the origin form (path and query; `/` if the URI has no path).
fn request_target<'a>(method: &Method, uri: &'a Uri) -> &'a str {
    if *method == Method::CONNECT
        && let Some(authority) = uri.authority()
    {
        return authority.as_str();
    }
    match uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => pq.as_str(),
        _ => "/",
    }
}

/// Writes a request head: request line, fields, empty line. HTTP/2 and later versions are
/// written as HTTP/1.1, the version this codec speaks.
pub fn encode_request_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    dst: &mut BytesMut,
) {
    let target = request_target(method, uri);
    let method = method.as_str().as_bytes();
    dst.reserve(method.len() + target.len() + 12 + HEAD_ROOM);
    dst.put_slice(method);
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(version_bytes(version));
    dst.put_slice(b"\r\n");
    write_fields(headers, dst);
    dst.put_slice(b"\r\n");
}

/// Whole HTTP/1.1 status lines for the statuses a proxy sends most, so they are one copy.
fn common_status_line(status: StatusCode) -> Option<&'static [u8]> {
    Some(match status.as_u16() {
        100 => b"HTTP/1.1 100 Continue\r\n",
        101 => b"HTTP/1.1 101 Switching Protocols\r\n",
        200 => b"HTTP/1.1 200 OK\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        206 => b"HTTP/1.1 206 Partial Content\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\n",
        _ => return None,
    })
}

fn encode_status_line(status: StatusCode, version: Version, dst: &mut BytesMut) {
    if version != Version::HTTP_10
        && let Some(line) = common_status_line(status)
    {
        dst.put_slice(line);
        return;
    }
    dst.put_slice(version_bytes(version));
    dst.put_u8(b' ');
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.put_slice(b"\r\n");
}

/// Writes a response head with the canonical reason phrase of its status (empty for codes
/// without one). Also right for interim 1xx heads.
pub fn encode_response_head(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    dst: &mut BytesMut,
) {
    dst.reserve(48 + HEAD_ROOM);
    encode_status_line(status, version, dst);
    write_fields(headers, dst);
    dst.put_slice(b"\r\n");
}

/// Writes a response head from an upstream's fields kept as bytes ([`RawFields`]) and the
/// fields a proxy adds (`added`): the upstream's end-to-end fields in their order and case
/// (Content-Length only if `content_length`), leaving out any that `added` or the kept head's
/// own added fields replace, then those, then `added`. Every name in `added` replaces the
/// upstream's fields of that name except Via, which a proxy appends to (RFC 9110 §7.6.3).
pub fn encode_response_head_raw(
    status: StatusCode,
    version: Version,
    raw: &RawFields,
    content_length: bool,
    added: &HeaderMap,
    dst: &mut BytesMut,
) {
    // The names `added` replaces, gathered once: a proxy adds two or three.
    let mut replacing: [&[u8]; 8] = [&[]; 8];
    let mut count = 0;
    for name in added.keys() {
        let name = name.as_str().as_bytes();
        if name != b"via" {
            if let Some(slot) = replacing.get_mut(count) {
                *slot = name;
            }
            count += 1;
        }
    }
    let replaced = |name: &[u8]| {
        if raw.replaces(name) {
            return true;
        }
        if count > replacing.len() {
            return !name.eq_ignore_ascii_case(b"via") && added.contains_key(name_str(name));
        }
        replacing[..count]
            .iter()
            .any(|added| added.len() == name.len() && added.eq_ignore_ascii_case(name))
    };
    dst.reserve(48 + HEAD_ROOM);
    encode_status_line(status, version, dst);
    raw.write_end_to_end(content_length, replaced, dst);
    raw.write_added(dst);
    write_fields(added, dst);
    dst.put_slice(b"\r\n");
}

/// A field name from a head as the `&str` a map lookup takes (names are tokens, so ASCII;
/// anything else finds nothing).
fn name_str(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or("")
}

/// The interim response a server sends to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn request_head_origin_form() {
        let mut dst = BytesMut::new();
        let uri: Uri = "http://a.example/x?y=1".parse().unwrap();
        encode_request_head(
            &Method::GET,
            &uri,
            Version::HTTP_11,
            &map(&[("host", "a.example"), ("accept", "*/*")]),
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            b"GET /x?y=1 HTTP/1.1\r\nhost: a.example\r\naccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn request_head_connect_and_asterisk() {
        let mut dst = BytesMut::new();
        let uri: Uri = "a.example:443".parse().unwrap();
        encode_request_head(
            &Method::CONNECT,
            &uri,
            Version::HTTP_11,
            &HeaderMap::new(),
            &mut dst,
        );
        assert_eq!(&dst[..], b"CONNECT a.example:443 HTTP/1.1\r\n\r\n");
        dst.clear();
        let uri: Uri = "*".parse().unwrap();
        encode_request_head(
            &Method::OPTIONS,
            &uri,
            Version::HTTP_10,
            &HeaderMap::new(),
            &mut dst,
        );
        assert_eq!(&dst[..], b"OPTIONS * HTTP/1.0\r\n\r\n");
    }

    #[test]
    fn response_heads() {
        let mut dst = BytesMut::new();
        encode_response_head(
            StatusCode::OK,
            Version::HTTP_11,
            &map(&[("content-length", "2")]),
            &mut dst,
        );
        assert_eq!(&dst[..], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
        dst.clear();
        encode_response_head(
            StatusCode::IM_A_TEAPOT,
            Version::HTTP_10,
            &HeaderMap::new(),
            &mut dst,
        );
        assert_eq!(&dst[..], b"HTTP/1.0 418 I'm a teapot\r\n\r\n");
        dst.clear();
        let odd = StatusCode::from_u16(599).unwrap();
        encode_response_head(odd, Version::HTTP_11, &HeaderMap::new(), &mut dst);
        assert_eq!(&dst[..], b"HTTP/1.1 599 \r\n\r\n");
    }

    #[test]
    fn interim_head() {
        let mut dst = BytesMut::new();
        encode_response_head(
            StatusCode::from_u16(103).unwrap(),
            Version::HTTP_11,
            &map(&[("link", "</a.css>; rel=preload")]),
            &mut dst,
        );
        assert_eq!(
            &dst[..],
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
        );
    }

    /// A response head read with its fields kept as bytes.
    fn kept_head(bytes: &[u8]) -> Box<RawFields> {
        let mut buf = BytesMut::from(bytes);
        let Ok(crate::http1::Parsed::Complete(head)) = crate::http1::parse_response_keeping(
            &mut buf,
            &crate::http1::HeadConfig::default(),
            &Method::GET,
            true,
        ) else {
            panic!("not parsed");
        };
        head.raw.expect("kept as bytes")
    }

    #[test]
    fn fields_added_to_a_raw_head_replace_or_extend_the_upstreams() {
        static X_ID: http::HeaderName = http::HeaderName::from_static("x-id");
        let mut raw = kept_head(
            b"HTTP/1.1 200 OK\r\nVia: 1.0 origin\r\nX-ID: old\r\nx-id: older\r\nContent-Length: 0\r\n\r\n",
        );
        raw.add(
            &http::header::VIA,
            HeaderValue::from_static("1.1 gatehouse"),
            false,
        );
        raw.add(&X_ID, HeaderValue::from_static("new"), true);
        let mut dst = BytesMut::new();
        let limit = map(&[("ratelimit", "r=1")]);
        encode_response_head_raw(
            StatusCode::OK,
            Version::HTTP_11,
            &raw,
            true,
            &limit,
            &mut dst,
        );
        assert_eq!(
            String::from_utf8(dst.to_vec()).unwrap(),
            "HTTP/1.1 200 OK\r\nVia: 1.0 origin\r\nContent-Length: 0\r\n\
             via: 1.1 gatehouse\r\nx-id: new\r\nratelimit: r=1\r\n\r\n"
        );
    }

    #[test]
    fn a_raw_head_keeps_its_case_and_gives_way_to_added_fields() {
        let raw = kept_head(
            b"HTTP/1.1 200 OK\r\nServer: Up\r\nVia: 1.0 origin\r\nX-Id: old\r\nKeep-Alive: 5\r\nContent-Length: 2\r\n\r\nhi",
        );
        let expected = "HTTP/1.1 200 OK\r\nServer: Up\r\nVia: 1.0 origin\r\nContent-Length: 2\r\n";
        // Few added names (gathered up front) and many (looked up in the map): the same.
        for extra in [0, 10] {
            let mut added = map(&[("via", "1.1 gatehouse"), ("x-id", "new")]);
            for i in 0..extra {
                added.insert(
                    http::HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                );
            }
            let mut dst = BytesMut::new();
            encode_response_head_raw(
                StatusCode::OK,
                Version::HTTP_11,
                &raw,
                true,
                &added,
                &mut dst,
            );
            let text = String::from_utf8(dst.to_vec()).unwrap();
            assert!(text.starts_with(expected), "{text}");
            assert!(
                text.contains("via: 1.1 gatehouse\r\nx-id: new\r\n"),
                "{text}"
            );
            assert!(
                !text.contains("old") && !text.contains("Keep-Alive"),
                "{text}"
            );
            assert!(text.ends_with("\r\n\r\n"));
        }
    }
}
