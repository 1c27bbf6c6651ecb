//! What to answer for a file that was found: the validators it gets, the conditional
//! request's verdict (412, 304) and the ranges asked for (206, 416), in the order of
//! RFC 9110 §13.2.2, with the precompressed sibling chosen by Accept-Encoding. Pure: the
//! validation and range rules are the cache's (`cache::policy`), applied to the file's
//! validators as the cache applies them to a stored response's.

use crate::cache::policy::{byte_ranges, not_modified, precondition_failed};
use crate::compress::{Encoding, negotiate};
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE,
    DATE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::time::{SystemTime, UNIX_EPOCH};

/// What is known of the file to send.
pub struct FileFacts {
    pub len: u64,
    /// Of the file asked for (a precompressed sibling has the type of what it encodes).
    pub content_type: HeaderValue,
    /// Set when a precompressed sibling is sent.
    pub encoding: Option<Encoding>,
    /// ETag and Last-Modified, made once with the facts (a file kept in memory answers
    /// without formatting them again).
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
}

impl FileFacts {
    pub fn new(
        len: u64,
        modified: SystemTime,
        content_type: HeaderValue,
        encoding: Option<Encoding>,
    ) -> Self {
        Self {
            len,
            content_type,
            encoding,
            etag: etag(len, modified),
            last_modified: http_date(modified),
        }
    }
}

/// The route's settings that shape every file answer.
pub struct Shape<'a> {
    pub cache_control: Option<&'a HeaderValue>,
    /// The route offers precompressed siblings: answers vary by Accept-Encoding.
    pub varies: bool,
    pub max_ranges: usize,
}

/// One piece of a response body: bytes made here, or a range of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(Bytes),
    File(RangeInclusive<u64>),
}

/// The answer for a found file.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body (empty for 304, 412, 416 and HEAD).
    pub parts: Vec<Part>,
    /// The body's length, also for HEAD (Content-Length of what GET would send).
    pub len: u64,
}

/// The extension of a precompressed sibling.
pub fn sibling_suffix(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Gzip => ".gz",
        Encoding::Brotli => ".br",
        Encoding::Zstd => ".zst",
    }
}

/// The codings to look for, best first, for this request: the client's most wanted of those
/// offered, then the next, while any is acceptable. `offered` is in the route's order.
pub fn wanted_encodings(request: &HeaderMap, offered: &[Option<Encoding>; 3]) -> Vec<Encoding> {
    let mut left = *offered;
    let mut wanted = Vec::new();
    while let Some(encoding) = negotiate(
        request
            .get_all(ACCEPT_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
        &left,
    ) {
        wanted.push(encoding);
        for slot in &mut left {
            if *slot == Some(encoding) {
                *slot = None;
            }
        }
    }
    wanted
}

/// The strong ETag of a file, as nginx makes it: modification time and length, in hex.
pub fn etag(len: u64, modified: SystemTime) -> HeaderValue {
    let seconds = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut tag = String::with_capacity(24);
    let _ = write!(tag, "\"{seconds:x}-{len:x}\"");
    HeaderValue::try_from(tag).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::try_from(httpdate::fmt_http_date(time))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The answer to `method` with `request`'s fields for the file; `now` is when it is made, and
/// `boundary` separates the parts of a multipart answer.
pub fn answer(
    method: &Method,
    request: &HeaderMap,
    file: &FileFacts,
    shape: &Shape<'_>,
    now: SystemTime,
    boundary: &str,
) -> Answer {
    let mut headers = HeaderMap::with_capacity(10);
    headers.insert(ETAG, file.etag.clone());
    headers.insert(LAST_MODIFIED, file.last_modified.clone());
    if let Some(cache_control) = shape.cache_control {
        headers.insert(CACHE_CONTROL, cache_control.clone());
    }
    if shape.varies {
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let empty = |status: StatusCode, headers: HeaderMap| Answer {
        status,
        headers,
        parts: Vec::new(),
        len: 0,
    };
    // The validators as the cache's rules read them, for a request that asks anything of
    // them (most do not); Date lets If-Range trust a Last-Modified at least a second old as
    // strong (RFC 9110 §8.8.2.2).
    let conditional = [
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        RANGE,
    ]
    .iter()
    .any(|name| request.contains_key(name));
    let current = conditional.then(|| {
        let mut current = headers.clone();
        current.insert(DATE, http_date(now));
        current
    });
    if let Some(current) = &current {
        if precondition_failed(request, current) {
            return empty(StatusCode::PRECONDITION_FAILED, headers);
        }
        if not_modified(request, current, now) {
            return empty(StatusCode::NOT_MODIFIED, headers);
        }
    }
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(encoding) = file.encoding {
        headers.insert(CONTENT_ENCODING, encoding.header_value());
    }
    headers.insert(CONTENT_TYPE, file.content_type.clone());
    // §14.2: only GET has range semantics.
    let ranges = match &current {
        Some(current) if *method == Method::GET => {
            byte_ranges(request, current, file.len, shape.max_ranges)
        }
        _ => None,
    };
    match ranges {
        None => Answer {
            status: StatusCode::OK,
            headers,
            parts: whole(file.len),
            len: file.len,
        },
        Some(Err(())) => {
            headers.remove(CONTENT_TYPE);
            headers.remove(CONTENT_ENCODING);
            headers.insert(CONTENT_RANGE, content_range(None, file.len));
            empty(StatusCode::RANGE_NOT_SATISFIABLE, headers)
        }
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let range = ranges[0].clone();
            headers.insert(CONTENT_RANGE, content_range(Some(&range), file.len));
            Answer {
                status: StatusCode::PARTIAL_CONTENT,
                headers,
                len: range.end() - range.start() + 1,
                parts: vec![Part::File(range)],
            }
        }
        Some(Ok(ranges)) => {
            let (parts, len) = multipart(&ranges, file.len, &file.content_type, boundary);
            let mut content_type = String::with_capacity(48);
            let _ = write!(content_type, "multipart/byteranges; boundary={boundary}");
            if let Ok(value) = HeaderValue::try_from(content_type) {
                headers.insert(CONTENT_TYPE, value);
            }
            Answer {
                status: StatusCode::PARTIAL_CONTENT,
                headers,
                parts,
                len,
            }
        }
    }
}

fn whole(len: u64) -> Vec<Part> {
    match len.checked_sub(1) {
        Some(last) => vec![Part::File(0..=last)],
        None => Vec::new(),
    }
}

/// `bytes first-last/len`, or `bytes */len` for an unsatisfiable request (§14.4).
fn content_range(range: Option<&RangeInclusive<u64>>, len: u64) -> HeaderValue {
    let mut value = String::with_capacity(40);
    let _ = match range {
        Some(range) => write!(value, "bytes {}-{}/{len}", range.start(), range.end()),
        None => write!(value, "bytes */{len}"),
    };
    HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("bytes */0"))
}

/// The parts of a multipart/byteranges body (RFC 9110 §14.6) and its length.
pub fn multipart(
    ranges: &[RangeInclusive<u64>],
    len: u64,
    content_type: &HeaderValue,
    boundary: &str,
) -> (Vec<Part>, u64) {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut total = 0u64;
    for (i, range) in ranges.iter().enumerate() {
        let mut head = BytesMut::with_capacity(128);
        if i > 0 {
            head.put_slice(b"\r\n");
        }
        head.put_slice(b"--");
        head.put_slice(boundary.as_bytes());
        head.put_slice(b"\r\nContent-Type: ");
        head.put_slice(content_type.as_bytes());
        head.put_slice(b"\r\nContent-Range: ");
        head.put_slice(content_range(Some(range), len).as_bytes());
        head.put_slice(b"\r\n\r\n");
        total += head.len() as u64 + (range.end() - range.start() + 1);
        parts.push(Part::Text(head.freeze()));
        parts.push(Part::File(range.clone()));
    }
    let mut tail = BytesMut::with_capacity(boundary.len() + 8);
    tail.put_slice(b"\r\n--");
    tail.put_slice(boundary.as_bytes());
    tail.put_slice(b"--\r\n");
    total += tail.len() as u64;
    parts.push(Part::Text(tail.freeze()));
    (parts, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MODIFIED: u64 = 1_700_000_000;

    fn facts(len: u64) -> FileFacts {
        FileFacts::new(
            len,
            UNIX_EPOCH + Duration::from_secs(MODIFIED),
            HeaderValue::from_static("text/plain"),
            None,
        )
    }

    fn ask(method: Method, fields: &[(&str, &str)], len: u64) -> Answer {
        let mut request = HeaderMap::new();
        for (name, value) in fields {
            request.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let shape = Shape {
            cache_control: None,
            varies: false,
            max_ranges: 4,
        };
        let now = UNIX_EPOCH + Duration::from_secs(MODIFIED + 100);
        answer(&method, &request, &facts(len), &shape, now, "B")
    }

    fn get(fields: &[(&str, &str)]) -> Answer {
        ask(Method::GET, fields, 100)
    }

    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn a_plain_get_is_the_whole_file_with_validators() {
        let answer = get(&[]);
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.parts, vec![Part::File(0..=99)]);
        assert_eq!(answer.len, 100);
        let tag = format!("\"{MODIFIED:x}-64\"");
        assert_eq!(answer.headers[ETAG], tag.as_str());
        assert_eq!(answer.headers[LAST_MODIFIED], date(MODIFIED).as_str());
        assert_eq!(answer.headers[ACCEPT_RANGES], "bytes");
        assert_eq!(ask(Method::GET, &[], 0).parts, vec![]);
    }

    #[test]
    fn conditions_in_the_rfc_order() {
        let tag = format!("\"{MODIFIED:x}-64\"");
        assert_eq!(get(&[("if-none-match", &tag)]).status, 304);
        assert_eq!(get(&[("if-none-match", "\"other\"")]).status, 200);
        assert_eq!(get(&[("if-modified-since", &date(MODIFIED))]).status, 304);
        assert_eq!(
            get(&[("if-modified-since", &date(MODIFIED - 1))]).status,
            200
        );
        assert_eq!(get(&[("if-match", "\"other\"")]).status, 412);
        assert_eq!(get(&[("if-match", &tag)]).status, 200);
        assert_eq!(
            get(&[("if-unmodified-since", &date(MODIFIED - 1))]).status,
            412
        );
        // If-Match is checked before If-None-Match.
        assert_eq!(
            get(&[("if-match", "\"other\""), ("if-none-match", &tag)]).status,
            412
        );
        let not_modified = get(&[("if-none-match", &tag)]);
        assert!(not_modified.parts.is_empty());
        assert_eq!(not_modified.headers[ETAG], tag.as_str());
    }

    #[test]
    fn ranges_single_several_and_unsatisfiable() {
        let one = get(&[("range", "bytes=10-19")]);
        assert_eq!(one.status, 206);
        assert_eq!(one.headers[CONTENT_RANGE], "bytes 10-19/100");
        assert_eq!(one.parts, vec![Part::File(10..=19)]);
        assert_eq!(one.len, 10);

        let none = get(&[("range", "bytes=200-")]);
        assert_eq!(none.status, 416);
        assert_eq!(none.headers[CONTENT_RANGE], "bytes */100");

        let head = ask(Method::HEAD, &[("range", "bytes=0-1")], 100);
        assert_eq!(head.status, 200, "HEAD has no range semantics");

        let two = get(&[("range", "bytes=0-1,-2")]);
        assert_eq!(two.status, 206);
        assert_eq!(
            two.headers[CONTENT_TYPE],
            "multipart/byteranges; boundary=B"
        );
        let mut body = Vec::new();
        for part in &two.parts {
            match part {
                Part::Text(text) => body.extend_from_slice(text),
                Part::File(range) => {
                    body.extend((*range.start()..=*range.end()).map(|i| b'a' + (i % 26) as u8))
                }
            }
        }
        assert_eq!(body.len() as u64, two.len);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/100\r\n\r\nab\
             \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 98-99/100\r\n\r\nuv\
             \r\n--B--\r\n"
        );
        let tag = format!("\"{MODIFIED:x}-64\"");
        assert_eq!(
            get(&[("range", "bytes=0-1"), ("if-range", "\"old\"")]).status,
            200
        );
        assert_eq!(
            get(&[("range", "bytes=0-1"), ("if-range", &tag)]).status,
            206
        );
    }

    #[test]
    fn encodings_wanted_in_the_clients_order_then_the_routes() {
        let offered = [
            Some(Encoding::Brotli),
            Some(Encoding::Zstd),
            Some(Encoding::Gzip),
        ];
        let mut request = HeaderMap::new();
        request.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        assert_eq!(
            wanted_encodings(&request, &offered),
            vec![Encoding::Brotli, Encoding::Gzip]
        );
        request.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=1, br;q=0.5"),
        );
        assert_eq!(
            wanted_encodings(&request, &offered),
            vec![Encoding::Gzip, Encoding::Brotli]
        );
        request.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        assert!(wanted_encodings(&request, &offered).is_empty());
        assert!(wanted_encodings(&HeaderMap::new(), &offered).is_empty());
    }
}
