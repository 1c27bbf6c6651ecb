//! Reading an upstream's response head and deciding how its body is delimited, which depends
//! on the request it answers (RFC 9112 §6.3). Interim 1xx heads are reported as such so the
//! caller can pass them on and read the next head.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::HeaderMap;
use http::{Method, StatusCode, Version};

use super::body::Framing;
use super::fields::ConnectionOptions;
use super::head::{
    FieldIndices, HeadConfig, HeadError, MAX_HEADERS, Parsed, RESPONSE_FIELDS_ROOM, build_fields,
    diagnose_fields, index_fields, raw_fields, start_line, version_like,
};
use super::raw::RawFields;

/// A parsed response head. Header values share the head's bytes; a repeated identical
/// Content-Length is held once; a Connection line of nothing but `close` and `keep-alive` is
/// left out ([`ResponseHead::keep_alive`] says what it said). The reason phrase is not kept:
/// heads are written with the canonical phrase of their status.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// How the body is delimited. When Transfer-Encoding lists codings before a final
    /// `chunked`, this is [`Framing::Chunked`] and the other codings stay in the header for
    /// the caller to pass on.
    pub framing: Framing,
    /// The number of bytes the head took in the buffer.
    pub head_len: usize,
    /// The fields as bytes, when asked for and they need no editing: `headers` is then
    /// empty.
    pub raw: Option<Box<RawFields>>,
    connection: ConnectionOptions,
}

impl ResponseHead {
    /// A 1xx other than 101: pass it on to the client if wanted, then read the next head.
    pub fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }

    /// Whether the upstream connection may be reused after this response's body: not after
    /// a read-until-close body or a tunnel, not with `close`, and for HTTP/1.0 only with
    /// `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.connection.close || matches!(self.framing, Framing::UntilClose | Framing::Tunnel) {
            return false;
        }
        self.version == Version::HTTP_11 || self.connection.keep_alive
    }
}

/// Parses a response head from the front of `buf`, answering a request made with
/// `request_method`. Like [`super::parse_request`], a complete head is taken off `buf`.
///
/// Syntax is read as for requests with one allowance: whitespace between a field name and its
/// colon is removed, as RFC 9112 §5.1 tells a proxy to do with responses. Obsolete line
/// folding is refused (RFC 9112 §5.2 lets a proxy answer 502 to it).
///
/// ```
/// use bytes::BytesMut;
/// use http::Method;
/// use gatehouse::http1::{parse_response, HeadConfig, Parsed, Framing};
/// let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..]);
/// let Ok(Parsed::Complete(head)) = parse_response(&mut buf, &HeadConfig::default(), &Method::GET) else {
///     panic!("not complete");
/// };
/// assert_eq!(head.framing, Framing::Length { len: 2 });
/// assert_eq!(&buf[..], b"hi");
/// ```
pub fn parse_response(
    buf: &mut BytesMut,
    config: &HeadConfig,
    request_method: &Method,
) -> Result<Parsed<ResponseHead>, HeadError> {
    parse_response_keeping(buf, config, request_method, false)
}

/// [`parse_response`], keeping a final head's fields as bytes ([`ResponseHead::raw`])
/// instead of building the map when `keep_raw` is set and the fields need no editing but
/// leaving out their hop-by-hop ones. Interim and 101 heads always get the map.
pub fn parse_response_keeping(
    buf: &mut BytesMut,
    config: &HeadConfig,
    request_method: &Method,
    keep_raw: bool,
) -> Result<Parsed<ResponseHead>, HeadError> {
    let mut indices = FieldIndices::new();
    let (head_len, code, minor) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let slots = slots.get_mut(..config.header_slots()).unwrap_or_default();
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .allow_spaces_after_header_name_in_responses(true)
            .parse_response_with_uninit_headers(&mut response, buf, slots);
        match parsed {
            Ok(httparse::Status::Partial) => {
                if buf.len() > config.max_head_bytes {
                    return Err(HeadError::HeadTooLarge);
                }
                return Ok(Parsed::Partial);
            }
            Ok(httparse::Status::Complete(head_len)) => {
                if head_len > config.max_head_bytes {
                    return Err(HeadError::HeadTooLarge);
                }
                let (Some(code), Some(minor)) = (response.code, response.version) else {
                    return Err(HeadError::InvalidStatusLine);
                };
                index_fields(buf, response.headers, &mut indices);
                (head_len, code, minor)
            }
            Err(error) => return Err(classify(buf, error)),
        }
    };
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::InvalidStatusLine)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let head = buf.split_to(head_len.min(buf.len())).freeze();
    let indices = indices.as_slice();
    let kept = if keep_raw && !status.is_informational() {
        raw_fields(&head, indices)?
    } else {
        None
    };
    let (headers, facts, raw) = match kept {
        Some((raw, facts)) => (HeaderMap::new(), facts, Some(raw)),
        None => {
            let (headers, facts) = build_fields(&head, indices, false, RESPONSE_FIELDS_ROOM)?;
            (headers, facts, None)
        }
    };

    let te = &facts.transfer_encoding;
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Tunnel
    } else if status.is_informational()
        || *request_method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if *request_method == Method::CONNECT && status.is_success() {
        Framing::Tunnel
    } else if te.present() {
        if version == Version::HTTP_10 {
            return Err(HeadError::TransferEncodingInHttp10);
        }
        if facts.content_length.lines > 0 {
            return Err(HeadError::ContentLengthAndTransferEncoding);
        }
        if te.chunked_final() {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match facts.content_length.value() {
            Some(0) => Framing::Empty,
            Some(len) => Framing::Length { len },
            None => Framing::UntilClose,
        }
    };

    Ok(Parsed::Complete(ResponseHead {
        status,
        version,
        headers,
        framing,
        head_len: head.len(),
        raw,
        connection: facts.connection,
    }))
}

fn classify(buf: &[u8], error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => diagnose_fields(buf, HeadError::InvalidHeaderName),
        httparse::Error::HeaderValue => diagnose_fields(buf, HeadError::InvalidHeaderValue),
        httparse::Error::NewLine => diagnose_fields(buf, HeadError::InvalidStatusLine),
        httparse::Error::Version => {
            let line = start_line(buf);
            let version = line.split(|&b| b == b' ').next().unwrap_or_default();
            match version_like(version) {
                Some((1, 0 | 1)) | None => HeadError::InvalidStatusLine,
                Some(_) => HeadError::UnsupportedVersion,
            }
        }
        _ => HeadError::InvalidStatusLine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_for(method: Method, bytes: &[u8]) -> Result<ResponseHead, HeadError> {
        let mut buf = BytesMut::from(bytes);
        match parse_response(&mut buf, &HeadConfig::default(), &method)? {
            Parsed::Complete(head) => Ok(head),
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn parse(bytes: &[u8]) -> Result<ResponseHead, HeadError> {
        parse_for(Method::GET, bytes)
    }

    fn framing(bytes: &[u8]) -> Framing {
        parse(bytes).unwrap().framing
    }

    fn keep(bytes: &[u8]) -> ResponseHead {
        let mut buf = BytesMut::from(bytes);
        match parse_response_keeping(&mut buf, &HeadConfig::default(), &Method::GET, true) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_head_is_kept_as_bytes_without_its_hop_by_hop_fields() {
        let head = keep(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
              Content-Length: 2\r\nX-Mixed-Case: v\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nhi",
        );
        assert!(head.headers.is_empty());
        assert!(head.keep_alive());
        let raw = head.raw.expect("kept");
        assert_eq!(raw.content_length(), Some(2));
        assert!(raw.has_date());
        let fields: Vec<(&[u8], &[u8])> = raw.end_to_end(true).collect();
        assert_eq!(
            fields,
            [
                (&b"Server"[..], &b"up"[..]),
                (b"Content-Length", b"2"),
                (b"X-Mixed-Case", b"v"),
                (b"Date", b"Sun, 06 Nov 1994 08:49:37 GMT"),
            ]
        );
        assert_eq!(
            raw.end_to_end(false).count(),
            3,
            "Content-Length left out on request"
        );
    }

    #[test]
    fn heads_that_need_editing_get_a_map() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ] {
            let head = keep(bytes);
            assert!(head.raw.is_none(), "{}", String::from_utf8_lossy(bytes));
            assert!(!head.headers.is_empty());
        }
        // Refused as the map refuses.
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert_eq!(
            parse_response_keeping(&mut buf, &HeadConfig::default(), &Method::GET, true).err(),
            Some(HeadError::DifferingContentLengths)
        );
    }

    #[test]
    fn content_length_response() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..]);
        let Ok(Parsed::Complete(head)) =
            parse_response(&mut buf, &HeadConfig::default(), &Method::GET)
        else {
            panic!("not complete");
        };
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, Framing::Length { len: 5 });
        assert_eq!(head.head_len, 38);
        assert!(head.keep_alive());
        assert!(!head.is_interim());
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn partial_response() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(matches!(
            parse_response(&mut buf, &HeadConfig::default(), &Method::GET),
            Ok(Parsed::Partial)
        ));
        assert_eq!(buf.len(), 27);
    }

    #[test]
    fn interim_responses() {
        let head = parse(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        assert!(head.is_interim());
        assert_eq!(head.framing, Framing::Empty);
        let head = parse(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n").unwrap();
        assert!(head.is_interim());
        assert_eq!(head.headers["link"], "</a.css>");
    }

    #[test]
    fn switching_protocols_is_a_tunnel() {
        let head =
            parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .unwrap();
        assert!(!head.is_interim());
        assert_eq!(head.framing, Framing::Tunnel);
        assert!(!head.keep_alive());
    }

    #[test]
    fn head_response_has_no_body() {
        let head = parse_for(
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.framing, Framing::Empty);
        let head = parse_for(
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn no_content_and_not_modified_have_no_body() {
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
            Framing::Empty
        );
    }

    #[test]
    fn connect_success_is_a_tunnel() {
        let head = parse_for(
            Method::CONNECT,
            b"HTTP/1.1 200 Connection Established\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.framing, Framing::Tunnel);
        let head = parse_for(
            Method::CONNECT,
            b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.framing, Framing::Length { len: 2 });
    }

    #[test]
    fn chunked_response() {
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
        );
    }

    #[test]
    fn te_not_chunked_final_reads_until_close() {
        let head = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive());
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            Framing::UntilClose
        );
    }

    #[test]
    fn no_length_reads_until_close() {
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Framing::Empty
        );
    }

    #[test]
    fn smuggle_response_cl_and_te() {
        let e =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err();
        assert_eq!(e, HeadError::ContentLengthAndTransferEncoding);
    }

    #[test]
    fn smuggle_response_differing_content_lengths() {
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
            .unwrap_err();
        assert_eq!(e, HeadError::DifferingContentLengths);
    }

    #[test]
    fn smuggle_response_invalid_content_length() {
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n").unwrap_err();
        assert_eq!(e, HeadError::InvalidContentLength);
    }

    #[test]
    fn smuggle_response_chunked_twice() {
        let e =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n").unwrap_err();
        assert_eq!(e, HeadError::ChunkedTwice);
    }

    #[test]
    fn smuggle_response_te_in_http10() {
        let e = parse(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err();
        assert_eq!(e, HeadError::TransferEncodingInHttp10);
    }

    #[test]
    fn identical_response_content_lengths_merged() {
        let head =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Length { len: 3 });
        assert_eq!(head.headers.get_all("content-length").iter().count(), 1);
    }

    #[test]
    fn smuggle_response_obs_fold() {
        let e = parse(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n").unwrap_err();
        assert_eq!(e, HeadError::ObsFold);
    }

    #[test]
    fn space_before_colon_removed_in_responses() {
        let head = parse(b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Length { len: 2 });
        assert_eq!(head.headers["content-length"], "2");
    }

    #[test]
    fn bad_status_lines() {
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1200 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(
                e,
                HeadError::InvalidStatusLine,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(e.status(), 502);
        }
    }

    #[test]
    fn missing_reason_phrase_accepted() {
        let head = parse(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(head.status, StatusCode::OK);
    }

    #[test]
    fn unsupported_response_version() {
        assert_eq!(
            parse(b"HTTP/2 200\r\n\r\n").unwrap_err(),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            parse(b"HTTP/2.0 200 OK\r\n\r\n").unwrap_err(),
            HeadError::UnsupportedVersion
        );
    }

    #[test]
    fn response_keep_alive() {
        assert!(
            !parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
        assert!(
            !parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
        assert!(
            parse(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
    }

    #[test]
    fn response_limits() {
        let config = HeadConfig {
            max_head_bytes: 32,
            max_headers: 1,
            ..HeadConfig::default()
        };
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"[..]);
        assert_eq!(
            parse_response(&mut buf, &config, &Method::GET).unwrap_err(),
            HeadError::TooManyHeaders
        );
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 0123456789012345678901234567"[..]);
        assert_eq!(
            parse_response(&mut buf, &config, &Method::GET).unwrap_err(),
            HeadError::HeadTooLarge
        );
    }
}
