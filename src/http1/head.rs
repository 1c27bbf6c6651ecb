//! What reading a request head and a response head have in common: limits, the error
//! vocabulary with the status each error answers, the first pass over `httparse`'s output, and
//! building the `HeaderMap` from the head's bytes without copying the values.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::fields::{ConnectionOptions, ContentLength, TransferEncoding, is_authority, is_tchar};
use super::raw::{RawField, RawFields, RawName, classify};

/// The most header fields a head may hold whatever [`HeadConfig::max_headers`] says: the
/// parser keeps their positions on the stack.
pub const MAX_HEADERS: usize = 128;

/// The outcome of feeding the bytes received so far to a parser.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The head is not complete yet: read more bytes onto the same buffer and call again.
    Partial,
    /// The head is complete; its bytes have been taken off the front of the buffer.
    Complete(T),
}

/// Limits and policies for reading one head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadConfig {
    /// The most bytes a head may take, start line and final empty line included (431 beyond).
    pub max_head_bytes: usize,
    /// The most header fields (431 beyond); values above [`MAX_HEADERS`] count as it.
    pub max_headers: usize,
    /// The most bytes of a request line, without its line ending (414 beyond).
    pub max_request_line: usize,
    /// Leave out of the map any request header whose name holds `_`, as nginx does with
    /// `underscores_in_headers off`: such names are often mapped onto `-` by CGI-style
    /// backends, so `X_User` could pose as `X-User`. Their presence is reported either way.
    pub drop_underscore_headers: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            max_head_bytes: 32 * 1024,
            max_headers: 100,
            max_request_line: 8 * 1024,
            drop_underscore_headers: false,
        }
    }
}

impl HeadConfig {
    pub(crate) fn header_slots(&self) -> usize {
        self.max_headers.min(MAX_HEADERS)
    }
}

/// Why a head was refused. Each variant is one rule; [`HeadError::status`] is the answer a
/// client gets for a bad request head. A bad response head from an upstream is answered with
/// 502 whatever the variant. After any error the connection must not be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head did not end within `max_head_bytes`.
    #[error("head larger than max_head_bytes")]
    HeadTooLarge,
    /// More header fields than `max_headers`.
    #[error("more header fields than max_headers")]
    TooManyHeaders,
    /// The request line is longer than `max_request_line`.
    #[error("request line longer than max_request_line")]
    RequestLineTooLong,
    /// The method is not a token.
    #[error("invalid method")]
    InvalidMethod,
    /// The request target has bytes a URI may not hold, or a form its method does not allow.
    #[error("invalid request target")]
    InvalidTarget,
    /// The request line is not `method SP target SP version`.
    #[error("malformed request line")]
    InvalidRequestLine,
    /// The version is not `HTTP/` DIGIT `.` DIGIT.
    #[error("malformed HTTP version")]
    InvalidVersion,
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1.
    #[error("HTTP version not supported on an HTTP/1.1 connection")]
    UnsupportedVersion,
    /// The HTTP/2 connection preface, sent to an HTTP/1.1-only listener.
    #[error("HTTP/2 connection preface on an HTTP/1.1 connection")]
    Http2Preface,
    /// A request line without a version, as HTTP/0.9 sent.
    #[error("HTTP/0.9 request")]
    Http09,
    /// The status line of a response is malformed.
    #[error("malformed status line")]
    InvalidStatusLine,
    /// A field line starting with whitespace: obsolete line folding (RFC 9112 §5.2).
    #[error("obsolete line folding")]
    ObsFold,
    /// A CR not followed by LF.
    #[error("bare CR in head")]
    BareCr,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    #[error("whitespace between field name and colon")]
    WhitespaceBeforeColon,
    /// A field name with a byte outside `tchar`, or no colon.
    #[error("invalid field name")]
    InvalidHeaderName,
    /// A field value with NUL, DEL or another control byte.
    #[error("invalid field value")]
    InvalidHeaderValue,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.1).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthAndTransferEncoding,
    /// A Content-Length element that is not `1*DIGIT` within a u64.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Content-Length values that differ.
    #[error("differing Content-Length values")]
    DifferingContentLengths,
    /// A request whose final transfer coding is not chunked (RFC 9112 §6.3).
    #[error("final transfer coding is not chunked")]
    TransferEncodingNotChunked,
    /// `chunked` applied more than once.
    #[error("chunked applied more than once")]
    ChunkedTwice,
    /// A Transfer-Encoding element that is empty, not a token, or has parameters.
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A request with transfer codings besides `chunked`, which this proxy does not decode.
    #[error("transfer coding not implemented")]
    UnsupportedTransferCoding,
    /// Transfer-Encoding in an HTTP/1.0 message, whose framing must be taken as faulty
    /// (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// An HTTP/1.1 request without Host (RFC 9112 §3.2).
    #[error("missing Host")]
    MissingHost,
    /// More than one Host field line.
    #[error("more than one Host")]
    MultipleHosts,
    /// A Host value that is not `host [":" port]` of RFC 3986.
    #[error("invalid Host")]
    InvalidHost,
}

impl HeadError {
    /// The status to answer a client whose request head failed this way.
    pub fn status(self) -> StatusCode {
        use HeadError::*;
        match self {
            HeadTooLarge | TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestLineTooLong => StatusCode::URI_TOO_LONG,
            UnsupportedVersion | Http2Preface => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            InvalidStatusLine => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether this is a syntax error of the kind `httparse` itself detects (start line and
    /// field syntax), as opposed to a limit or a rule about what the fields mean.
    pub fn is_syntax(self) -> bool {
        use HeadError::*;
        matches!(
            self,
            InvalidMethod
                | InvalidTarget
                | InvalidRequestLine
                | InvalidVersion
                | UnsupportedVersion
                | Http2Preface
                | Http09
                | InvalidStatusLine
                | ObsFold
                | BareCr
                | WhitespaceBeforeColon
                | InvalidHeaderName
                | InvalidHeaderValue
        )
    }
}

/// Where a field's name and value sit in the head, kept between `httparse`'s pass (which
/// borrows the buffer) and building the map (which owns the frozen head).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FieldIndex {
    pub(crate) name: (u32, u32),
    pub(crate) value: (u32, u32),
}

/// Filled as the fields are indexed, never zeroed first: a head has a few fields, the room is
/// for `MAX_HEADERS`, and zeroing all of it cost more than indexing a typical head.
pub(crate) type FieldIndices = arrayvec::ArrayVec<FieldIndex, MAX_HEADERS>;

/// Offset of `part` inside `base`; `part` is always a subslice handed out by `httparse`.
pub(crate) fn offset_in(base: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize)
}

fn span(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = offset_in(base, part);
    // Heads longer than u32 are refused by the size limit long before; saturate regardless.
    let start = u32::try_from(start).unwrap_or(u32::MAX);
    let end = start.saturating_add(u32::try_from(part.len()).unwrap_or(u32::MAX));
    (start, end)
}

/// Records where each parsed field sits (`httparse` hands out at most `MAX_HEADERS`).
pub(crate) fn index_fields(base: &[u8], fields: &[httparse::Header<'_>], out: &mut FieldIndices) {
    out.clear();
    for field in fields {
        let index = FieldIndex {
            name: span(base, field.name.as_bytes()),
            value: span(base, field.value),
        };
        if out.try_push(index).is_err() {
            break;
        }
    }
}

/// A sub-range of the frozen head as `Bytes`, or None if the range does not fit (which would
/// mean a bug, never a panic).
pub(crate) fn head_slice(head: &Bytes, (start, end): (u32, u32)) -> Option<Bytes> {
    let (start, end) = (start as usize, end as usize);
    (start <= end && end <= head.len()).then(|| head.slice(start..end))
}

/// What the fields of a head say about framing, routing and the connection, gathered while
/// the map is built.
#[derive(Debug, Default)]
pub(crate) struct FieldFacts {
    pub(crate) content_length: ContentLength,
    pub(crate) transfer_encoding: TransferEncoding,
    pub(crate) connection: ConnectionOptions,
    pub(crate) hosts: usize,
    pub(crate) expect_continue: bool,
    pub(crate) expect_other: bool,
    pub(crate) upgrade: bool,
    pub(crate) underscore: bool,
}

/// What `FieldFacts::observe` says about keeping a field in the map.
#[derive(PartialEq, Eq)]
enum Keep {
    Field,
    /// A Connection line of nothing but `close` and `keep-alive`: hop-by-hop, fully told by
    /// `keep_alive()`, so left out (a proxy would only remove it again).
    OptionsOnly,
}

impl FieldFacts {
    fn observe(&mut self, name: &HeaderName, value: &[u8]) -> Result<Keep, HeadError> {
        if name == header::CONTENT_LENGTH {
            self.content_length.add_line(value)?;
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding.add_line(value)?;
        } else if name == header::CONNECTION {
            if self.connection.add_line(value) && !value.trim_ascii().is_empty() {
                return Ok(Keep::OptionsOnly);
            }
        } else if name == header::HOST {
            self.hosts += 1;
            if self.hosts > 1 {
                return Err(HeadError::MultipleHosts);
            }
            if !is_authority(value, false) {
                return Err(HeadError::InvalidHost);
            }
        } else if name == header::EXPECT {
            for element in value.split(|&b| b == b',') {
                let element = element.trim_ascii();
                if element.eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                } else if !element.is_empty() {
                    self.expect_other = true;
                }
            }
        } else if name == header::UPGRADE {
            self.upgrade = true;
        }
        Ok(Keep::Field)
    }
}

/// A field value as `httparse` handed it over. httparse accepts in a value exactly the bytes
/// `HeaderValue` does (HTAB, SP through `~`, obs-text 0x80-0xFF; RFC 9110 §5.5), so checking
/// them again would read every value twice for nothing: about 500 instructions per proxied
/// request. Debug builds check anyway.
fn field_value(value: Bytes) -> Result<HeaderValue, HeadError> {
    let valid = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
    if cfg!(debug_assertions) && !value.iter().all(valid) {
        return Err(HeadError::InvalidHeaderValue);
    }
    // SAFETY: every byte is one `HeaderValue` accepts (httparse refused the rest, see above;
    // `bad_value_bytes_are_refused_by_httparse` pins it), which is all this asks.
    Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(value) })
}

/// Room left in a request's header map for what a proxy adds before forwarding it
/// (X-Forwarded-For, -Proto, -Host, Via, X-Request-Id, a route's own fields): a map that
/// grows rehashes every field it holds.
pub const REQUEST_FIELDS_ROOM: usize = 8;

/// Room left in a response's header map for what a proxy or a cache adds (Via,
/// X-Request-Id, Date, Age, Cache-Status).
pub const RESPONSE_FIELDS_ROOM: usize = 5;

/// Builds the map from the indexed fields of a frozen head, sharing the head's bytes, with
/// `room` fields to spare.
pub(crate) fn build_fields(
    head: &Bytes,
    indices: &[FieldIndex],
    drop_underscore: bool,
    room: usize,
) -> Result<(HeaderMap, FieldFacts), HeadError> {
    let mut map = HeaderMap::with_capacity(indices.len() + room);
    let mut facts = FieldFacts::default();
    for index in indices {
        let name = head
            .get(index.name.0 as usize..index.name.1 as usize)
            .ok_or(HeadError::InvalidHeaderName)?;
        let (name, underscore) = match known_name(name) {
            Some(known) => (known, false),
            None => (
                HeaderName::from_bytes(name).map_err(|_| HeadError::InvalidHeaderName)?,
                super::fields::has_underscore(name),
            ),
        };
        let value = head_slice(head, index.value).ok_or(HeadError::InvalidHeaderValue)?;
        if facts.observe(&name, &value)? == Keep::OptionsOnly {
            continue;
        }
        if underscore {
            facts.underscore = true;
            if drop_underscore {
                continue;
            }
        }
        let value = field_value(value)?;
        map.try_append(name, value)
            .map_err(|_| HeadError::TooManyHeaders)?;
    }
    if facts.content_length.needs_merging()
        && let Some(n) = facts.content_length.value()
    {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok((map, facts))
}

/// The fields of a frozen response head kept as bytes ([`RawFields`]), judged by the same
/// rules as [`build_fields`]. `None` when the fields must be edited beyond leaving out
/// hop-by-hop ones, which a map does: a Connection line naming other fields, a Content-Length
/// given more than once, transfer codings besides `chunked`.
pub(crate) fn raw_fields(
    head: &Bytes,
    indices: &[FieldIndex],
) -> Result<Option<(Box<RawFields>, FieldFacts)>, HeadError> {
    let mut fields = Vec::with_capacity(indices.len());
    let mut facts = FieldFacts::default();
    let mut date = false;
    for index in indices {
        let name = head
            .get(index.name.0 as usize..index.name.1 as usize)
            .ok_or(HeadError::InvalidHeaderName)?;
        let value = || {
            head.get(index.value.0 as usize..index.value.1 as usize)
                .ok_or(HeadError::InvalidHeaderValue)
        };
        // The same rules as `FieldFacts::observe`, for the names they read in a response.
        let kind = classify(name);
        match kind {
            RawName::EndToEnd | RawName::HopByHop => {}
            RawName::ContentLength => facts.content_length.add_line(value()?)?,
            RawName::TransferEncoding => facts.transfer_encoding.add_line(value()?)?,
            RawName::Connection => {
                let value = value()?;
                if !facts.connection.add_line(value) || value.trim_ascii().is_empty() {
                    // It names fields to remove, which the map's hop-by-hop removal does.
                    return Ok(None);
                }
            }
            RawName::Date => date = true,
            RawName::NeedsMap => return Ok(None),
        }
        fields.push(RawField::new(head, index.name, index.value, kind));
    }
    let te = &facts.transfer_encoding;
    if facts.content_length.needs_merging() || (te.present() && te.other_codings()) {
        return Ok(None);
    }
    let content_length = facts.content_length.value();
    Ok(Some((
        Box::new(RawFields::new(head.clone(), fields, content_length, date)),
        facts,
    )))
}

/// The names most heads carry, each with its lowercase spelling. Found by length and first
/// letter, then one comparison, where `HeaderName::from_bytes` lowercases and classifies
/// every name (about 150 instructions each) and the underscore search reads it once more.
/// None has a `_`.
static KNOWN_NAMES: [(&[u8], HeaderName); 34] = [
    (b"date", header::DATE),
    (b"host", header::HOST),
    (b"etag", header::ETAG),
    (b"vary", header::VARY),
    (b"server", header::SERVER),
    (b"accept", header::ACCEPT),
    (b"cookie", header::COOKIE),
    (b"expect", header::EXPECT),
    (b"origin", header::ORIGIN),
    (b"pragma", header::PRAGMA),
    (b"expires", header::EXPIRES),
    (b"referer", header::REFERER),
    (b"upgrade", header::UPGRADE),
    (b"trailer", header::TRAILER),
    (b"location", header::LOCATION),
    (b"if-match", header::IF_MATCH),
    (b"if-range", header::IF_RANGE),
    (b"connection", header::CONNECTION),
    (b"user-agent", header::USER_AGENT),
    (b"set-cookie", header::SET_COOKIE),
    (b"content-type", header::CONTENT_TYPE),
    (b"x-request-id", HeaderName::from_static("x-request-id")),
    (b"cache-control", header::CACHE_CONTROL),
    (b"last-modified", header::LAST_MODIFIED),
    (b"authorization", header::AUTHORIZATION),
    (b"accept-ranges", header::ACCEPT_RANGES),
    (b"if-none-match", header::IF_NONE_MATCH),
    (b"content-length", header::CONTENT_LENGTH),
    (b"accept-encoding", header::ACCEPT_ENCODING),
    (b"accept-language", header::ACCEPT_LANGUAGE),
    (
        b"x-forwarded-for",
        HeaderName::from_static("x-forwarded-for"),
    ),
    (b"content-encoding", header::CONTENT_ENCODING),
    (b"transfer-encoding", header::TRANSFER_ENCODING),
    (b"if-modified-since", header::IF_MODIFIED_SINCE),
];

/// `name` as one of `KNOWN_NAMES`, if it is one. `name` must be a token (as `httparse`
/// leaves it): then setting the 0x20 bit lowercases letters and changes no other byte a
/// known name has into one it has.
fn known_name(name: &[u8]) -> Option<HeaderName> {
    debug_assert!(
        name.iter().all(|&b| is_tchar(b)),
        "httparse passes tokens only"
    );
    let first = name.first()? | 0x20;
    let candidates: &[usize] = match (name.len(), first) {
        (4, b'd') => &[0],
        (4, b'h') => &[1],
        (4, b'e') => &[2],
        (4, b'v') => &[3],
        (6, b's') => &[4],
        (6, b'a') => &[5],
        (6, b'c') => &[6],
        (6, b'e') => &[7],
        (6, b'o') => &[8],
        (6, b'p') => &[9],
        (7, b'e') => &[10],
        (7, b'r') => &[11],
        (7, b'u') => &[12],
        (7, b't') => &[13],
        (8, b'l') => &[14],
        (8, b'i') => &[15, 16],
        (10, b'c') => &[17],
        (10, b'u') => &[18],
        (10, b's') => &[19],
        (12, b'c') => &[20],
        (12, b'x') => &[21],
        (13, b'c') => &[22],
        (13, b'l') => &[23],
        (13, b'a') => &[24, 25],
        (13, b'i') => &[26],
        (14, b'c') => &[27],
        (15, b'a') => &[28, 29],
        (15, b'x') => &[30],
        (16, b'c') => &[31],
        (17, b't') => &[32],
        (17, b'i') => &[33],
        _ => return None,
    };
    candidates.iter().find_map(|&i| {
        let (lowercase, known) = KNOWN_NAMES.get(i)?;
        let same = name
            .iter()
            .zip(lowercase.iter())
            .fold(true, |same, (&byte, &low)| same & (byte | 0x20 == low));
        same.then(|| known.clone())
    })
}

/// Leading empty lines, which a recipient ignores before a start line (RFC 9112 §2.2).
pub(crate) fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// The first line of the head (after any empty lines), without its line ending.
pub(crate) fn start_line(buf: &[u8]) -> &[u8] {
    let buf = buf.get(leading_empty_lines(buf)..).unwrap_or_default();
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf.get(..end).unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `v` is `HTTP/` DIGIT [ `.` DIGIT ]: something that means to be a version, as
/// opposed to garbage; returns its major and minor digits.
pub(crate) fn version_like(v: &[u8]) -> Option<(u8, u8)> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((major - b'0', minor - b'0'))
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => Some((major - b'0', 0)),
        _ => None,
    }
}

/// Finds, after `httparse` refused a field line, which rule the head broke, so that the error
/// names it. Walks the lines after the start line; `fallback` is used if none is found.
pub(crate) fn diagnose_fields(buf: &[u8], fallback: HeadError) -> HeadError {
    let buf = buf.get(leading_empty_lines(buf)..).unwrap_or_default();
    let mut lines = buf.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        if first.contains(&b'\r') {
            return HeadError::BareCr;
        }
    }
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.contains(&b'\r') {
            return HeadError::BareCr;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return HeadError::ObsFold;
        }
        let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
        let rest = line.get(name_len..).unwrap_or_default();
        match rest {
            _ if name_len == 0 => return HeadError::InvalidHeaderName,
            [b':', value @ ..] => {
                if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    return HeadError::InvalidHeaderValue;
                }
            }
            [b' ' | b'\t', ..] if rest.trim_ascii_start().starts_with(b":") => {
                return HeadError::WhitespaceBeforeColon;
            }
            _ => return HeadError::InvalidHeaderName,
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `field_value` trusts httparse to have refused every byte `HeaderValue` refuses: each
    /// of the 256 bytes inside a value, in a request and in a response, is accepted by both
    /// or refused by the parse.
    #[test]
    fn connection_lines_of_only_close_and_keep_alive_stay_out_of_the_map() {
        use crate::http1::{parse_request, parse_response};
        use bytes::BytesMut;
        let request = |connection: &str| {
            let text = format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: {connection}\r\n\r\n");
            match parse_request(&mut BytesMut::from(text.as_bytes()), &HeadConfig::default()) {
                Ok(Parsed::Complete(head)) => head,
                other => panic!("{connection}: {other:?}"),
            }
        };
        let kept = request("keep-alive");
        assert!(kept.keep_alive() && !kept.headers.contains_key(header::CONNECTION));
        let closed = request("Close");
        assert!(!closed.keep_alive() && !closed.headers.contains_key(header::CONNECTION));
        // Other tokens name fields a proxy must remove: the line stays for it to read.
        let naming = request("keep-alive, x-secret");
        assert_eq!(naming.headers[header::CONNECTION], "keep-alive, x-secret");
        let upgrade = request("Upgrade");
        assert_eq!(upgrade.headers[header::CONNECTION], "Upgrade");
        let mut text = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let Ok(Parsed::Complete(response)) =
            parse_response(&mut text, &HeadConfig::default(), &http::Method::GET)
        else {
            panic!("a response head");
        };
        assert!(!response.keep_alive() && !response.headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn bad_value_bytes_are_refused_by_httparse() {
        use crate::http1::{parse_request, parse_response};
        use bytes::BytesMut;
        for byte in 0..=255u8 {
            if byte == b'\r' || byte == b'\n' {
                continue; // line structure, not value bytes
            }
            let header_value_ok = HeaderValue::from_bytes(&[b'a', byte, b'b']).is_ok();
            let mut request = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX-V: a"[..]);
            request.extend_from_slice(&[byte]);
            request.extend_from_slice(b"b\r\n\r\n");
            let parsed = parse_request(&mut request, &HeadConfig::default());
            match parsed {
                Ok(Parsed::Complete(head)) => {
                    assert!(header_value_ok, "request accepted byte {byte:#04x}");
                    assert_eq!(head.headers["x-v"].as_bytes(), [b'a', byte, b'b']);
                }
                _ => assert!(!header_value_ok, "request refused byte {byte:#04x}"),
            }
            let mut response = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-V: a"[..]);
            response.extend_from_slice(&[byte]);
            response.extend_from_slice(b"b\r\nContent-Length: 0\r\n\r\n");
            let parsed = parse_response(&mut response, &HeadConfig::default(), &http::Method::GET);
            match parsed {
                Ok(Parsed::Complete(head)) => {
                    assert!(header_value_ok, "response accepted byte {byte:#04x}");
                    assert_eq!(head.headers["x-v"].as_bytes(), [b'a', byte, b'b']);
                }
                _ => assert!(!header_value_ok, "response refused byte {byte:#04x}"),
            }
        }
    }

    #[test]
    fn known_names_are_the_names_from_bytes_would_give() {
        for name in [
            "date",
            "Host",
            "ETAG",
            "vary",
            "Server",
            "accept",
            "cookie",
            "expect",
            "origin",
            "pragma",
            "expires",
            "referer",
            "upgrade",
            "trailer",
            "location",
            "if-match",
            "if-range",
            "Connection",
            "user-agent",
            "set-cookie",
            "Content-Type",
            "x-request-id",
            "cache-control",
            "last-modified",
            "authorization",
            "accept-ranges",
            "if-none-match",
            "Content-Length",
            "accept-encoding",
            "accept-language",
            "X-Forwarded-For",
            "content-encoding",
            "Transfer-Encoding",
            "if-modified-since",
        ] {
            let known = known_name(name.as_bytes()).unwrap_or_else(|| panic!("{name} known"));
            assert_eq!(
                Some(known),
                HeaderName::from_bytes(name.as_bytes()).ok(),
                "{name}"
            );
        }
        for other in ["dates", "x-custom", "content_type", "hosts", "a", ""] {
            assert_eq!(known_name(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(HeadError::HeadTooLarge.status(), 431);
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
        assert_eq!(HeadError::RequestLineTooLong.status(), 414);
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        assert_eq!(HeadError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(HeadError::ObsFold.status(), 400);
    }

    #[test]
    fn version_shapes() {
        assert_eq!(version_like(b"HTTP/2.0"), Some((2, 0)));
        assert_eq!(version_like(b"HTTP/3"), Some((3, 0)));
        assert_eq!(version_like(b"HTTP/1.2"), Some((1, 2)));
        assert_eq!(version_like(b"http/1.1"), None);
        assert_eq!(version_like(b"HTTP/11"), None);
    }

    #[test]
    fn start_line_skips_empty_lines() {
        assert_eq!(
            start_line(b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n"),
            b"GET / HTTP/1.1"
        );
        assert_eq!(start_line(b"GET /"), b"GET /");
    }
}
