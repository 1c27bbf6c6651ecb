//! Reading a client's request head: `httparse` finds the syntax, then the head is judged
//! against the limits, the framing rules that stop request smuggling (RFC 9112 §6), the Host
//! rules (RFC 9112 §3.2) and the target forms (RFC 9112 §3.2.1–§3.2.4).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri, Version};

use super::body::Framing;
use super::fields::{ConnectionOptions, authority_host, is_authority, list_contains};
use super::head::{
    FieldIndex, FieldIndices, HeadConfig, HeadError, MAX_HEADERS, Parsed, REQUEST_FIELDS_ROOM,
    build_fields, diagnose_fields, head_slice, index_fields, leading_empty_lines, offset_in,
    start_line, version_like,
};

/// Which of the four forms of RFC 9112 §3.2 the request target has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`, the usual form.
    Origin,
    /// `http://authority/path`: its authority overrides Host (RFC 9112 §3.2.2).
    Absolute,
    /// `host:port`, only with CONNECT.
    Authority,
    /// `*`, only with OPTIONS.
    Asterisk,
}

/// What a request's Expect field asks for (RFC 9110 §10.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// No expectation (or one in an HTTP/1.0 request, which must be ignored).
    None,
    /// `100-continue`: the client waits for a 100 before sending the body.
    Continue,
    /// Something else, which a server may answer with 417.
    Unsupported,
}

/// A parsed and judged request head.
///
/// The header values share the head's bytes (no copy per value). If the target is in
/// absolute form, Host has been replaced by the target's authority, so everything downstream
/// sees one authority. If the same Content-Length was repeated, the map holds it once. A
/// Connection line of nothing but `close` and `keep-alive` is not in the map:
/// [`RequestHead::keep_alive`] says what it said.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub target_form: TargetForm,
    /// How the body is delimited: [`Framing::Empty`], [`Framing::Length`] or
    /// [`Framing::Chunked`]; a request never reads until close.
    pub framing: Framing,
    /// The number of bytes the head took in the buffer.
    pub head_len: usize,
    connection: ConnectionOptions,
    expectation: Expectation,
    upgrade: bool,
    underscore_headers: bool,
}

impl RequestHead {
    /// Whether the connection may carry another request after this one, from the version
    /// and the Connection options (RFC 9112 §9.3): HTTP/1.1 unless `close`, HTTP/1.0 only
    /// with `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.connection.close {
            return false;
        }
        self.version == Version::HTTP_11 || self.connection.keep_alive
    }

    /// What Expect asks for.
    pub fn expectation(&self) -> Expectation {
        self.expectation
    }

    /// The protocols asked for by an HTTP/1.1 upgrade: the Upgrade value, when Connection
    /// also names `upgrade` (RFC 9110 §7.8; ignored in HTTP/1.0 as it requires).
    pub fn upgrade(&self) -> Option<&HeaderValue> {
        if !self.upgrade || !self.connection.upgrade || self.version != Version::HTTP_11 {
            return None;
        }
        self.headers.get(header::UPGRADE)
    }

    /// Whether this is a WebSocket opening handshake (RFC 6455 §4.1).
    pub fn is_websocket(&self) -> bool {
        self.method == Method::GET
            && self
                .upgrade()
                .is_some_and(|v| list_contains(v.as_bytes(), b"websocket"))
    }

    /// Whether any field name held `_` (dropped from the map if the config said so).
    pub fn underscore_headers(&self) -> bool {
        self.underscore_headers
    }

    /// The authority to route by: the target's for absolute and authority forms, else Host.
    /// None for an HTTP/1.0 request without Host.
    pub fn authority(&self) -> Option<&str> {
        match self.target_form {
            TargetForm::Absolute | TargetForm::Authority => {
                self.uri.authority().map(|a| a.as_str())
            }
            TargetForm::Origin | TargetForm::Asterisk => {
                self.headers.get(header::HOST).and_then(|v| v.to_str().ok())
            }
        }
    }

    /// [`RequestHead::authority`] without its port.
    pub fn host(&self) -> Option<&str> {
        self.authority().map(authority_host)
    }

    /// The head as an `http::Request` without a body, for code written against `http`.
    pub fn into_request(self) -> http::Request<()> {
        let mut request = http::Request::new(());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Where the pieces of the request line sit, found by the first pass.
struct RequestLine {
    head_len: usize,
    method: Method,
    target: (u32, u32),
    version: Version,
}

/// Parses a request head from the front of `buf`, the connection's read buffer.
///
/// On [`Parsed::Complete`] the head's bytes have been taken off `buf`, which now starts with
/// the body (or the next request); on [`Parsed::Partial`] nothing is taken: read more onto
/// `buf` and call again. After an error `buf` may or may not have lost the head: answer with
/// [`HeadError::status`] and close the connection.
///
/// `httparse` reads the whole buffer again on each call, so call when new bytes have arrived,
/// not on a timer; [`HeadConfig::max_head_bytes`] bounds the work.
///
/// ```
/// use bytes::BytesMut;
/// use gatehouse::http1::{parse_request, HeadConfig, Parsed, Framing};
/// let mut buf = BytesMut::from(&b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n"[..]);
/// let Ok(Parsed::Complete(head)) = parse_request(&mut buf, &HeadConfig::default()) else {
///     panic!("not complete");
/// };
/// assert_eq!(head.uri.path(), "/x");
/// assert_eq!(head.host(), Some("a.example"));
/// assert_eq!(head.framing, Framing::Empty);
/// assert!(buf.is_empty());
/// ```
pub fn parse_request(
    buf: &mut BytesMut,
    config: &HeadConfig,
) -> Result<Parsed<RequestHead>, HeadError> {
    let mut indices = FieldIndices::new();
    let line = match scan(buf, config, &mut indices)? {
        Parsed::Partial => return Ok(Parsed::Partial),
        Parsed::Complete(line) => line,
    };
    let head = buf.split_to(line.head_len.min(buf.len())).freeze();
    build(head, line, &indices, config).map(Parsed::Complete)
}

/// The first pass: `httparse` over the buffer, limits, and the positions of everything.
fn scan(
    buf: &[u8],
    config: &HeadConfig,
    indices: &mut FieldIndices,
) -> Result<Parsed<RequestLine>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let slots = slots.get_mut(..config.header_slots()).unwrap_or_default();
    let mut request = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        slots,
    );
    match parsed {
        Ok(httparse::Status::Partial) => {
            let line_len = match (request.method, request.path, request.version) {
                (Some(method), Some(path), Some(_)) => method.len() + path.len() + 10,
                // The line is still arriving: all of the buffer after empty lines is line.
                _ => buf.len() - leading_empty_lines(buf),
            };
            if line_len > config.max_request_line {
                return Err(HeadError::RequestLineTooLong);
            }
            if buf.len() > config.max_head_bytes {
                return Err(HeadError::HeadTooLarge);
            }
            Ok(Parsed::Partial)
        }
        Ok(httparse::Status::Complete(head_len)) => {
            let (Some(method), Some(path), Some(minor)) =
                (request.method, request.path, request.version)
            else {
                return Err(HeadError::InvalidRequestLine);
            };
            // method SP target SP HTTP/1.x
            if method.len() + path.len() + 10 > config.max_request_line {
                return Err(HeadError::RequestLineTooLong);
            }
            if head_len > config.max_head_bytes {
                return Err(HeadError::HeadTooLarge);
            }
            let method =
                Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::InvalidMethod)?;
            let start = offset_in(buf, path.as_bytes());
            let target = (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(start + path.len()).unwrap_or(u32::MAX),
            );
            let version = if minor == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            index_fields(buf, request.headers, indices);
            Ok(Parsed::Complete(RequestLine {
                head_len,
                method,
                target,
                version,
            }))
        }
        Err(error) => Err(classify(buf, error, request.method.is_some())),
    }
}

/// Names the rule behind an `httparse` error.
fn classify(buf: &[u8], error: httparse::Error, method_done: bool) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => diagnose_fields(buf, HeadError::InvalidHeaderName),
        httparse::Error::HeaderValue => diagnose_fields(buf, HeadError::InvalidHeaderValue),
        httparse::Error::NewLine => diagnose_fields(buf, HeadError::InvalidRequestLine),
        httparse::Error::Token if !method_done => HeadError::InvalidMethod,
        _ => classify_request_line(start_line(buf)),
    }
}

/// Tells a version this codec does not speak from a request line that is simply broken.
fn classify_request_line(line: &[u8]) -> HeadError {
    if line.starts_with(b"PRI * HTTP/2.0") {
        return HeadError::Http2Preface;
    }
    if line.contains(&b'\r') {
        return HeadError::BareCr;
    }
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(target), None, None) if !target.is_empty() => HeadError::Http09,
        (Some(_), Some(target), Some(version), None) if !target.is_empty() => {
            match version_like(version) {
                // The version is fine, so the target is what broke the line.
                Some((1, 0 | 1)) => HeadError::InvalidTarget,
                Some(_) => HeadError::UnsupportedVersion,
                None => HeadError::InvalidVersion,
            }
        }
        _ => HeadError::InvalidRequestLine,
    }
}

/// The second pass: the map, the target and the rules about what the fields mean.
fn build(
    head: Bytes,
    line: RequestLine,
    indices: &[FieldIndex],
    config: &HeadConfig,
) -> Result<RequestHead, HeadError> {
    let target = head_slice(&head, line.target).ok_or(HeadError::InvalidTarget)?;
    let (target_form, uri) = parse_target(&line.method, target)?;
    let (mut headers, facts) = build_fields(
        &head,
        indices,
        config.drop_underscore_headers,
        REQUEST_FIELDS_ROOM,
    )?;

    if facts.hosts == 0 && line.version == Version::HTTP_11 {
        return Err(HeadError::MissingHost);
    }
    if target_form == TargetForm::Absolute
        && let Some(authority) = uri.authority()
    {
        let value =
            HeaderValue::from_str(authority.as_str()).map_err(|_| HeadError::InvalidTarget)?;
        headers.insert(header::HOST, value);
    }

    let te = &facts.transfer_encoding;
    let framing = if te.present() {
        if line.version == Version::HTTP_10 {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if facts.content_length.lines > 0 {
            return Err(HeadError::ContentLengthAndTransferEncoding);
        }
        if !te.chunked_final() {
            return Err(HeadError::TransferEncodingNotChunked);
        }
        if te.other_codings() {
            return Err(HeadError::UnsupportedTransferCoding);
        }
        Framing::Chunked
    } else {
        match facts.content_length.value() {
            None | Some(0) => Framing::Empty,
            Some(len) => Framing::Length { len },
        }
    };

    let expectation = if line.version == Version::HTTP_10 {
        Expectation::None
    } else if facts.expect_other {
        Expectation::Unsupported
    } else if facts.expect_continue {
        Expectation::Continue
    } else {
        Expectation::None
    };

    Ok(RequestHead {
        method: line.method,
        uri,
        version: line.version,
        headers,
        target_form,
        framing,
        head_len: head.len(),
        connection: facts.connection,
        expectation,
        upgrade: facts.upgrade,
        underscore_headers: facts.underscore,
    })
}

/// Parses the target without copying it and checks its form against the method.
fn parse_target(method: &Method, target: Bytes) -> Result<(TargetForm, Uri), HeadError> {
    let form = match target.first() {
        Some(b'/') => TargetForm::Origin,
        Some(b'*') if target.len() == 1 => TargetForm::Asterisk,
        _ if *method == Method::CONNECT => TargetForm::Authority,
        _ => TargetForm::Absolute,
    };
    let allowed = match form {
        TargetForm::Authority => is_authority(&target, true),
        TargetForm::Asterisk => *method == Method::OPTIONS,
        TargetForm::Origin => *method != Method::CONNECT,
        TargetForm::Absolute => true,
    };
    if !allowed {
        return Err(HeadError::InvalidTarget);
    }
    let uri = Uri::from_maybe_shared(target).map_err(|_| HeadError::InvalidTarget)?;
    if form == TargetForm::Absolute {
        // Only http and https are proxied; userinfo in an http(s) URI is an error
        // (RFC 9110 §4.2.4), and the authority must be one Host could carry.
        let scheme_ok = uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
        let authority_ok = uri
            .authority()
            .is_some_and(|a| !a.as_str().is_empty() && is_authority(a.as_str().as_bytes(), false));
        if !scheme_ok || !authority_ok {
            return Err(HeadError::InvalidTarget);
        }
    }
    Ok((form, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(bytes: &[u8], config: &HeadConfig) -> Result<RequestHead, HeadError> {
        let mut buf = BytesMut::from(bytes);
        match parse_request(&mut buf, config)? {
            Parsed::Complete(head) => Ok(head),
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn parse(bytes: &[u8]) -> Result<RequestHead, HeadError> {
        parse_with(bytes, &HeadConfig::default())
    }

    fn reject(bytes: &[u8]) -> HeadError {
        match parse(bytes) {
            Ok(head) => panic!("accepted: {head:?}"),
            Err(error) => error,
        }
    }

    /// A request with Host and the given extra field lines.
    fn with_fields(fields: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: a.example\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn simple_get() {
        let mut buf = BytesMut::from(
            &b"GET /a?b=c HTTP/1.1\r\nHost: a.example:8080\r\nAccept: */*\r\n\r\nNEXT"[..],
        );
        let Ok(Parsed::Complete(head)) = parse_request(&mut buf, &HeadConfig::default()) else {
            panic!("not complete");
        };
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/a?b=c");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers["accept"], "*/*");
        assert_eq!(head.target_form, TargetForm::Origin);
        assert_eq!(head.framing, Framing::Empty);
        assert_eq!(head.authority(), Some("a.example:8080"));
        assert_eq!(head.host(), Some("a.example"));
        assert!(head.keep_alive());
        assert_eq!(head.head_len, 58);
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn partial_until_complete_byte_by_byte() {
        let input = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let mut buf = BytesMut::new();
        for (i, &b) in input.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            match parse_request(&mut buf, &HeadConfig::default()) {
                Ok(Parsed::Partial) => assert!(i < input.len() - 4, "partial at {i}"),
                Ok(Parsed::Complete(head)) => {
                    assert_eq!(i, input.len() - 4);
                    assert_eq!(head.framing, Framing::Length { len: 3 });
                    assert!(buf.is_empty());
                    return;
                }
                Err(e) => panic!("error at {i}: {e}"),
            }
        }
        panic!("never complete");
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let head = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.uri, "/");
    }

    #[test]
    fn bare_lf_line_endings_accepted() {
        let head = parse(b"GET / HTTP/1.1\nHost: a\nX: y\n\n").unwrap();
        assert_eq!(head.headers["x"], "y");
    }

    #[test]
    fn body_framing_from_content_length() {
        let head = parse(&with_fields("Content-Length: 10\r\n")).unwrap();
        assert_eq!(head.framing, Framing::Length { len: 10 });
        let head = parse(&with_fields("Content-Length: 0\r\n")).unwrap();
        assert_eq!(head.framing, Framing::Empty);
        let head = parse(&with_fields("Transfer-Encoding: chunked\r\n")).unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    // Content-Length rules.

    #[test]
    fn smuggle_cl_and_te() {
        let e = reject(&with_fields(
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ));
        assert_eq!(e, HeadError::ContentLengthAndTransferEncoding);
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn smuggle_te_and_cl() {
        let e = reject(&with_fields(
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ));
        assert_eq!(e, HeadError::ContentLengthAndTransferEncoding);
    }

    #[test]
    fn smuggle_differing_content_lengths() {
        let e = reject(&with_fields("Content-Length: 5\r\nContent-Length: 6\r\n"));
        assert_eq!(e, HeadError::DifferingContentLengths);
    }

    #[test]
    fn smuggle_differing_content_lengths_in_list() {
        let e = reject(&with_fields("Content-Length: 5, 6\r\n"));
        assert_eq!(e, HeadError::DifferingContentLengths);
    }

    #[test]
    fn identical_content_lengths_merged() {
        let head = parse(&with_fields(
            "Content-Length: 5\r\nContent-Length: 5, 5\r\n",
        ))
        .unwrap();
        assert_eq!(head.framing, Framing::Length { len: 5 });
        let values: Vec<_> = head.headers.get_all("content-length").iter().collect();
        assert_eq!(values, ["5"]);
    }

    #[test]
    fn smuggle_content_length_plus_sign() {
        let e = reject(&with_fields("Content-Length: +5\r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_content_length_inner_space() {
        let e = reject(&with_fields("Content-Length: 5 5\r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_content_length_hex() {
        let e = reject(&with_fields("Content-Length: 0x5\r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_content_length_empty() {
        let e = reject(&with_fields("Content-Length: \r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_content_length_negative() {
        let e = reject(&with_fields("Content-Length: -1\r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_content_length_overflow() {
        let e = reject(&with_fields("Content-Length: 18446744073709551616\r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_content_length_trailing_comma() {
        let e = reject(&with_fields("Content-Length: 5,\r\n"));
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    // Transfer-Encoding rules.

    #[test]
    fn smuggle_te_chunked_twice() {
        let e = reject(&with_fields("Transfer-Encoding: chunked, chunked\r\n"));
        assert_eq!(e, HeadError::ChunkedTwice);
    }

    #[test]
    fn smuggle_te_chunked_on_two_lines() {
        let e = reject(&with_fields(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ));
        assert_eq!(e, HeadError::ChunkedTwice);
    }

    #[test]
    fn smuggle_te_xchunked() {
        let e = reject(&with_fields("Transfer-Encoding: xchunked\r\n"));
        assert_eq!(e, HeadError::TransferEncodingNotChunked);
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn smuggle_te_chunked_with_parameter() {
        let e = reject(&with_fields("Transfer-Encoding: chunked;q=1\r\n"));
        assert_eq!(e, HeadError::InvalidTransferEncoding);
        let e = reject(&with_fields("Transfer-Encoding: chunked ; q=1\r\n"));
        assert_eq!(e, HeadError::InvalidTransferEncoding);
    }

    #[test]
    fn smuggle_te_not_final() {
        let e = reject(&with_fields("Transfer-Encoding: chunked, gzip\r\n"));
        assert_eq!(e, HeadError::TransferEncodingNotChunked);
    }

    #[test]
    fn smuggle_te_identity() {
        let e = reject(&with_fields("Transfer-Encoding: identity\r\n"));
        assert_eq!(e, HeadError::TransferEncodingNotChunked);
    }

    #[test]
    fn smuggle_te_empty_element() {
        let e = reject(&with_fields("Transfer-Encoding: chunked,\r\n"));
        assert_eq!(e, HeadError::InvalidTransferEncoding);
        let e = reject(&with_fields("Transfer-Encoding: , chunked\r\n"));
        assert_eq!(e, HeadError::InvalidTransferEncoding);
    }

    #[test]
    fn smuggle_te_empty_value() {
        let e = reject(&with_fields("Transfer-Encoding: \r\n"));
        assert_eq!(e, HeadError::InvalidTransferEncoding);
    }

    #[test]
    fn smuggle_te_quoted() {
        let e = reject(&with_fields("Transfer-Encoding: \"chunked\"\r\n"));
        assert_eq!(e, HeadError::InvalidTransferEncoding);
    }

    #[test]
    fn smuggle_te_vertical_tab() {
        let e = reject(&with_fields("Transfer-Encoding: chunked\x0b\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderValue);
    }

    #[test]
    fn smuggle_te_in_http10() {
        let e = reject(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(e, HeadError::TransferEncodingInHttp10);
    }

    #[test]
    fn te_surrounding_whitespace_is_ows() {
        let head = parse(&with_fields("Transfer-Encoding: \t chunked \t\r\n")).unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn te_case_insensitive() {
        let head = parse(&with_fields("Transfer-Encoding: ChUnKeD\r\n")).unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn te_other_codings_not_implemented() {
        let e = reject(&with_fields("Transfer-Encoding: gzip, chunked\r\n"));
        assert_eq!(e, HeadError::UnsupportedTransferCoding);
        assert_eq!(e.status(), 501);
    }

    // Field syntax.

    #[test]
    fn smuggle_space_before_colon() {
        let e = reject(&with_fields("Transfer-Encoding : chunked\r\n"));
        assert_eq!(e, HeadError::WhitespaceBeforeColon);
    }

    #[test]
    fn smuggle_tab_before_colon() {
        let e = reject(&with_fields("Content-Length\t: 5\r\n"));
        assert_eq!(e, HeadError::WhitespaceBeforeColon);
    }

    #[test]
    fn smuggle_obs_fold() {
        let e = reject(&with_fields("X-A: a\r\n chunked\r\n"));
        assert_eq!(e, HeadError::ObsFold);
        let e = reject(&with_fields("Transfer-Encoding:\r\n\tchunked\r\n"));
        assert_eq!(e, HeadError::ObsFold);
    }

    #[test]
    fn smuggle_space_before_first_field() {
        let e = reject(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n");
        assert_eq!(e, HeadError::ObsFold);
    }

    #[test]
    fn smuggle_bare_cr_in_value() {
        let e = reject(&with_fields("X-A: a\rTransfer-Encoding: chunked\r\n"));
        assert_eq!(e, HeadError::BareCr);
    }

    #[test]
    fn smuggle_bare_cr_in_request_line() {
        let e = reject(b"GET / HTTP/1.1\rHost: a\r\n\r\n");
        assert_eq!(e, HeadError::BareCr);
    }

    #[test]
    fn smuggle_nul_in_value() {
        let e = reject(&with_fields("X-A: a\0b\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderValue);
    }

    #[test]
    fn smuggle_control_in_value() {
        let e = reject(&with_fields("X-A: a\x1bb\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderValue);
        let e = reject(&with_fields("X-A: a\x7fb\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderValue);
    }

    #[test]
    fn smuggle_control_in_name() {
        let e = reject(&with_fields("X\x01A: a\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderName);
        let e = reject(&with_fields("X\0A: a\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderName);
    }

    #[test]
    fn smuggle_invalid_token_in_name() {
        let e = reject(&with_fields("X(A): a\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderName);
        let e = reject(&with_fields("X-A\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderName);
        let e = reject(&with_fields(": a\r\n"));
        assert_eq!(e, HeadError::InvalidHeaderName);
    }

    #[test]
    fn obs_text_in_value_accepted() {
        let head = parse(&with_fields("X-A: caf\u{e9}\r\n")).unwrap();
        assert_eq!(head.headers["x-a"].as_bytes(), "caf\u{e9}".as_bytes());
    }

    // Host and targets.

    #[test]
    fn smuggle_multiple_hosts() {
        let e = reject(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        assert_eq!(e, HeadError::MultipleHosts);
        let e = reject(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n");
        assert_eq!(e, HeadError::MultipleHosts);
    }

    #[test]
    fn smuggle_host_with_space() {
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            HeadError::InvalidHost
        );
    }

    #[test]
    fn smuggle_host_with_slash() {
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            HeadError::InvalidHost
        );
    }

    #[test]
    fn smuggle_host_with_userinfo() {
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"),
            HeadError::InvalidHost
        );
    }

    #[test]
    fn smuggle_host_list() {
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"),
            HeadError::InvalidHost
        );
    }

    #[test]
    fn host_forms_accepted() {
        for host in ["a.example", "a.example:80", "127.0.0.1:8080", "[::1]:443"] {
            let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let head = parse(input.as_bytes()).unwrap();
            assert_eq!(head.authority(), Some(host));
        }
        // An empty Host names no host to route by: refused, as nginx does.
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nHost: \r\n\r\n"),
            HeadError::InvalidHost
        );
        let head = parse(b"GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n").unwrap();
        assert_eq!(head.host(), Some("[::1]"));
    }

    #[test]
    fn missing_host_http11() {
        let e = reject(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
        assert_eq!(e, HeadError::MissingHost);
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn missing_host_http10_accepted() {
        let head = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.version, Version::HTTP_10);
        assert_eq!(head.authority(), None);
    }

    #[test]
    fn absolute_form_authority_wins() {
        let head =
            parse(b"GET http://a.example:8080/x?y HTTP/1.1\r\nHost: b.example\r\n\r\n").unwrap();
        assert_eq!(head.target_form, TargetForm::Absolute);
        assert_eq!(head.authority(), Some("a.example:8080"));
        assert_eq!(head.host(), Some("a.example"));
        assert_eq!(head.headers["host"], "a.example:8080");
        assert_eq!(head.uri.path(), "/x");
    }

    #[test]
    fn absolute_form_https_accepted() {
        let head = parse(b"GET HTTPS://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap();
        assert_eq!(head.authority(), Some("a.example"));
    }

    #[test]
    fn smuggle_absolute_form_userinfo() {
        let e = reject(b"GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn absolute_form_other_scheme_refused() {
        let e = reject(b"GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn absolute_form_still_needs_valid_host() {
        let e = reject(b"GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n");
        assert_eq!(e, HeadError::InvalidHost);
    }

    #[test]
    fn connect_authority_form() {
        let head = parse(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n").unwrap();
        assert_eq!(head.target_form, TargetForm::Authority);
        assert_eq!(head.authority(), Some("a.example:443"));
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn connect_needs_port() {
        let e = reject(b"CONNECT a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn connect_origin_form_refused() {
        let e = reject(b"CONNECT /x HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn authority_form_without_connect_refused() {
        let e = reject(b"GET a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn options_asterisk() {
        let head = parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.target_form, TargetForm::Asterisk);
        let e = reject(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn invalid_target_bytes() {
        let e = reject(b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
        let e = reject(b"GET /a\xffb HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(e, HeadError::InvalidTarget);
    }

    #[test]
    fn utf8_target_accepted() {
        let head = parse("GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes()).unwrap();
        assert_eq!(head.uri.path(), "/caf\u{e9}");
    }

    #[test]
    fn invalid_method() {
        assert_eq!(
            reject(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::InvalidMethod
        );
        let head = parse(b"PURGE / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.method.as_str(), "PURGE");
    }

    #[test]
    fn malformed_request_lines() {
        assert_eq!(
            reject(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::InvalidRequestLine
        );
        assert_eq!(
            reject(b"GET / b HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::InvalidRequestLine
        );
        assert_eq!(
            reject(b"GET / HTTP/x\r\nHost: a\r\n\r\n"),
            HeadError::InvalidVersion
        );
        assert_eq!(
            reject(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
            HeadError::InvalidRequestLine
        );
    }

    // Versions.

    #[test]
    fn http2_preface_refused() {
        let e = reject(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(e, HeadError::Http2Preface);
        assert_eq!(e.status(), 505);
    }

    #[test]
    fn http2_and_3_versions_refused() {
        let e = reject(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n");
        assert_eq!(e, HeadError::UnsupportedVersion);
        assert_eq!(e.status(), 505);
        assert_eq!(
            reject(b"GET / HTTP/3\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
    }

    #[test]
    fn http_1_2_refused() {
        assert_eq!(
            reject(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
    }

    #[test]
    fn http09_refused() {
        let e = reject(b"GET /\r\n");
        assert_eq!(e, HeadError::Http09);
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn lowercase_version_refused() {
        assert_eq!(
            reject(b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            HeadError::InvalidVersion
        );
    }

    // Limits.

    #[test]
    fn head_too_large_while_partial() {
        let config = HeadConfig {
            max_head_bytes: 64,
            ..HeadConfig::default()
        };
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX: "[..]);
        buf.extend_from_slice(&[b'a'; 64]);
        let e = parse_request(&mut buf, &config).unwrap_err();
        assert_eq!(e, HeadError::HeadTooLarge);
        assert_eq!(e.status(), 431);
    }

    #[test]
    fn head_too_large_when_complete() {
        let config = HeadConfig {
            max_head_bytes: 64,
            ..HeadConfig::default()
        };
        let input = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(64));
        assert_eq!(
            parse_with(input.as_bytes(), &config).unwrap_err(),
            HeadError::HeadTooLarge
        );
    }

    #[test]
    fn too_many_headers() {
        let config = HeadConfig {
            max_headers: 3,
            ..HeadConfig::default()
        };
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(parse_with(ok, &config).is_ok());
        let bad = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let e = parse_with(bad, &config).unwrap_err();
        assert_eq!(e, HeadError::TooManyHeaders);
        assert_eq!(e.status(), 431);
    }

    #[test]
    fn max_headers_capped() {
        let config = HeadConfig {
            max_headers: 10_000,
            ..HeadConfig::default()
        };
        let mut input = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS {
            input.push_str(&format!("X-{i}: v\r\n"));
        }
        input.push_str("\r\n");
        assert_eq!(
            parse_with(input.as_bytes(), &config).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn request_line_too_long_while_partial() {
        let config = HeadConfig {
            max_request_line: 32,
            ..HeadConfig::default()
        };
        let mut buf = BytesMut::from(&b"GET /"[..]);
        buf.extend_from_slice(&[b'a'; 40]);
        let e = parse_request(&mut buf, &config).unwrap_err();
        assert_eq!(e, HeadError::RequestLineTooLong);
        assert_eq!(e.status(), 414);
    }

    #[test]
    fn request_line_too_long_before_head_ends() {
        let config = HeadConfig {
            max_request_line: 32,
            ..HeadConfig::default()
        };
        let input = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "a".repeat(19));
        let mut buf = BytesMut::from(input.as_bytes());
        let e = parse_request(&mut buf, &config).unwrap_err();
        assert_eq!(e, HeadError::RequestLineTooLong);
    }

    #[test]
    fn request_line_too_long_when_complete() {
        let config = HeadConfig {
            max_request_line: 32,
            ..HeadConfig::default()
        };
        // "GET /" + 18 bytes + " HTTP/1.1" is 32 bytes.
        let fits = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(18));
        assert!(parse_with(fits.as_bytes(), &config).is_ok());
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(19));
        assert_eq!(
            parse_with(long.as_bytes(), &config).unwrap_err(),
            HeadError::RequestLineTooLong
        );
    }

    // What the caller is told.

    #[test]
    fn underscore_headers_flagged() {
        let head = parse(&with_fields("X_User: a\r\n")).unwrap();
        assert!(head.underscore_headers());
        assert_eq!(head.headers["x_user"], "a");
        let config = HeadConfig {
            drop_underscore_headers: true,
            ..HeadConfig::default()
        };
        let head = parse_with(&with_fields("X_User: a\r\nX-User: b\r\n"), &config).unwrap();
        assert!(head.underscore_headers());
        assert!(head.headers.get("x_user").is_none());
        assert_eq!(head.headers["x-user"], "b");
        assert!(
            !parse(&with_fields("X-User: b\r\n"))
                .unwrap()
                .underscore_headers()
        );
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let case = |input: &[u8]| parse(input).unwrap().keep_alive();
        assert!(case(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!case(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!case(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"
        ));
        assert!(!case(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(case(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!case(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    #[test]
    fn expect_continue() {
        let head = parse(&with_fields(
            "Expect: 100-Continue\r\nContent-Length: 3\r\n",
        ))
        .unwrap();
        assert_eq!(head.expectation(), Expectation::Continue);
        let head = parse(&with_fields("Expect: something\r\n")).unwrap();
        assert_eq!(head.expectation(), Expectation::Unsupported);
        let head = parse(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!(head.expectation(), Expectation::None);
        assert_eq!(
            parse(&with_fields("")).unwrap().expectation(),
            Expectation::None
        );
    }

    #[test]
    fn websocket_upgrade() {
        let head = parse(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.upgrade().unwrap(), "websocket");
        assert!(head.is_websocket());
        let head = parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(head.upgrade().is_none());
        let head = parse(b"GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
        assert!(head.upgrade().is_none());
    }

    #[test]
    fn into_request_keeps_parts() {
        let head = parse(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let request = head.into_request();
        assert_eq!(request.method(), Method::DELETE);
        assert_eq!(request.uri(), "/x");
        assert_eq!(request.headers()["host"], "a");
    }
}
