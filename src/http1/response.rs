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
    FieldIndex, FieldIndices, HeadConfig, HeadError, MAX_HEADERS, Parsed, build_fields,
    diagnose_fields, index_fields, start_line, version_like,
};

/// A parsed response head. Header values share the head's bytes; a repeated identical
/// Content-Length is held once. The reason phrase is not kept: heads are written with the
/// canonical phrase of their status.
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
    let mut indices: FieldIndices = [FieldIndex::default(); MAX_HEADERS];
    let (head_len, code, minor, fields) = {
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
                let fields = index_fields(buf, response.headers, &mut indices);
                (head_len, code, minor, fields)
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
    let indices = indices.get(..fields).unwrap_or_default();
    let (headers, facts) = build_fields(&head, indices, false)?;

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
