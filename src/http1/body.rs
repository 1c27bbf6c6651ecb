//! Body framing: an incremental decoder for Content-Length, chunked and read-until-close bodies
//! that hands out the body's bytes as ranges of the input (no copy), and the chunked encoder.
//!
//! Chunked framing is read strictly (RFC 9112 §7.1): every line ends in CRLF, a bare LF or a
//! bare CR is an error, the CRLF after each chunk's data must be there, chunk sizes have at
//! most 16 hex digits, extensions and trailers are bounded. Disagreeing with a neighbour about
//! where a body ends is what request smuggling exploits, so anything unusual is refused rather
//! than guessed at.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// How a message's body is delimited, as decided from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly `len` bytes.
    Length { len: u64 },
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
    /// After a 101 or a 2xx to CONNECT the connection carries opaque bytes both ways; a
    /// decoder treats this as [`Framing::UntilClose`].
    Tunnel,
}

/// Bounds on what a decoder keeps or tolerates besides the body's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The most chunk-extension bytes over the whole body. Extensions are skipped, never
    /// kept, but a body of one-byte chunks with long extensions would otherwise cost far
    /// more to read than it carries.
    pub max_chunk_ext_bytes: u64,
    /// The most bytes of the trailer section (its field lines and the final CRLF), which is
    /// the only thing the decoder buffers.
    pub max_trailer_bytes: usize,
    /// The most trailer fields.
    pub max_trailers: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_chunk_ext_bytes: 16 * 1024,
            max_trailer_bytes: 16 * 1024,
            max_trailers: 32,
        }
    }
}

/// The most trailer fields whatever [`BodyLimits::max_trailers`] says.
const MAX_TRAILERS: usize = 64;

/// The most hex digits of a chunk size: 16 fill a u64.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// Why a body could not be read. After any of these the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A chunk-size line without hex digits, or with something other than an extension after.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// More than 16 hex digits of chunk size.
    #[error("chunk size has more than 16 hex digits")]
    ChunkSizeTooLong,
    /// Chunk extensions over `max_chunk_ext_bytes`.
    #[error("chunk extensions longer than max_chunk_ext_bytes")]
    ChunkExtensionTooLong,
    /// A control byte inside a chunk extension.
    #[error("invalid chunk extension")]
    InvalidChunkExtension,
    /// An LF not preceded by CR in chunked framing.
    #[error("bare LF in chunked framing")]
    BareLf,
    /// A CR not followed by LF in chunked framing.
    #[error("bare CR in chunked framing")]
    BareCr,
    /// Chunk data did not end where its size said: the CRLF after it is missing.
    #[error("chunk data longer than its size")]
    ChunkDataTooLong,
    /// The trailer section is over `max_trailer_bytes`.
    #[error("trailer section larger than max_trailer_bytes")]
    TrailersTooLarge,
    /// More trailer fields than `max_trailers`.
    #[error("more trailer fields than max_trailers")]
    TooManyTrailers,
    /// A malformed trailer field.
    #[error("invalid trailer field")]
    InvalidTrailers,
    /// The connection ended before the body did.
    #[error("connection closed before the body ended")]
    PrematureEof,
    /// The decoder already failed; it reads nothing more.
    #[error("body decoder used after an error")]
    Failed,
}

/// Where a chunked decoder is within the framing (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Reading the hex digits of a chunk size; `digits` counted so far.
    Size { size: u64, digits: u8 },
    /// Whitespace after the size, which may only lead to an extension (`BWS ";"`).
    SizeWs { size: u64 },
    /// Inside a chunk extension, skipped up to the CR.
    Ext { size: u64 },
    /// The CR ending the size line was read; the LF must follow.
    SizeLf { size: u64 },
    /// Inside chunk data with `remaining` bytes to go.
    Data { remaining: u64 },
    /// Chunk data is over; its CR must follow.
    DataCr,
    /// Chunk data and its CR are over; the LF must follow.
    DataLf,
    /// After the last chunk, at the start of a trailer line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// The CR ending a trailer line was read; the LF must follow.
    TrailerLf,
    /// The CR of the final empty line was read; the LF must follow.
    EndLf,
    /// The body is complete.
    Done,
}

/// The decoder's state: one variant per framing, with the chunked one nested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderState {
    /// No body, or a body read to its end.
    Empty,
    /// A Content-Length body with `remaining` bytes to go.
    Length { remaining: u64 },
    /// A chunked body.
    Chunked { state: ChunkState },
    /// A body that ends when the connection does.
    UntilClose,
    /// An error was returned; nothing more is read.
    Failed,
}

/// One call's progress: `consumed` bytes of the input were used, and the body bytes among
/// them, if any, are `input[data]`. Framing bytes are consumed but are never in `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: Range<usize>,
}

impl Step {
    /// The body bytes of this step within the same input.
    pub fn data<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        input.get(self.data.clone()).unwrap_or_default()
    }
}

/// An incremental body decoder for one message.
///
/// ```
/// use gatehouse::http1::{Decoder, Framing, BodyLimits};
/// let mut decoder = Decoder::new(Framing::Chunked, BodyLimits::default());
/// let input = b"5\r\nhello\r\n0\r\n\r\n";
/// let step = decoder.decode(input).unwrap();
/// assert_eq!(step.data(input), b"hello");
/// let rest = &input[step.consumed..];
/// let step = decoder.decode(rest).unwrap();
/// assert_eq!(step.consumed, rest.len());
/// assert!(decoder.is_done());
/// ```
#[derive(Debug)]
pub struct Decoder {
    state: DecoderState,
    limits: BodyLimits,
    ext_bytes: u64,
    /// The trailer section as received, kept only if there is one.
    trailer_buf: BytesMut,
    trailers: Option<HeaderMap>,
}

impl Decoder {
    pub fn new(framing: Framing, limits: BodyLimits) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length { len: 0 } => DecoderState::Empty,
            Framing::Length { len } => DecoderState::Length { remaining: len },
            Framing::Chunked => DecoderState::Chunked {
                state: ChunkState::Size { size: 0, digits: 0 },
            },
            Framing::UntilClose | Framing::Tunnel => DecoderState::UntilClose,
        };
        Self {
            state,
            limits,
            ext_bytes: 0,
            trailer_buf: BytesMut::new(),
            trailers: None,
        }
    }

    pub fn state(&self) -> DecoderState {
        self.state
    }

    /// Whether the body has ended; bytes after it belong to the next message.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            DecoderState::Empty
                | DecoderState::Chunked {
                    state: ChunkState::Done
                }
        )
    }

    /// Bytes the decoder holds on to: only a trailer section being received, never more than
    /// [`BodyLimits::max_trailer_bytes`].
    pub fn buffered(&self) -> usize {
        self.trailer_buf.len()
    }

    /// The trailer fields of a chunked body, once it is done (None if it had none).
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }

    /// Reads framing from `input` until it finds body bytes (returned as a range, and the
    /// call stops right after them), the input runs out, or the body ends. Call again with
    /// the bytes after `consumed` plus whatever arrives next.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let result = self.decode_inner(input);
        if result.is_err() {
            self.state = DecoderState::Failed;
        }
        result
    }

    /// [`Decoder::decode`] over a connection buffer: takes the consumed bytes off its front and
    /// returns the body bytes among them without copying, or None if this step had none
    /// (more input is needed, or the body is done).
    pub fn decode_buf(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BodyError> {
        let step = self.decode(buf)?;
        let consumed = step.consumed.min(buf.len());
        let mut taken = buf.split_to(consumed);
        if step.data.is_empty() || step.data.end > consumed {
            return Ok(None);
        }
        let _framing = taken.split_to(step.data.start);
        taken.truncate(step.data.len());
        Ok(Some(taken.freeze()))
    }

    /// The connection reached its end: fine for a read-until-close body or one already done,
    /// an error for a Content-Length or chunked body cut short.
    pub fn finish(&mut self) -> Result<(), BodyError> {
        match self.state {
            DecoderState::UntilClose => {
                self.state = DecoderState::Empty;
                Ok(())
            }
            _ if self.is_done() => Ok(()),
            DecoderState::Failed => Err(BodyError::Failed),
            _ => {
                self.state = DecoderState::Failed;
                Err(BodyError::PrematureEof)
            }
        }
    }

    fn decode_inner(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        match self.state {
            DecoderState::Empty => Ok(Step {
                consumed: 0,
                data: 0..0,
            }),
            DecoderState::Failed => Err(BodyError::Failed),
            DecoderState::UntilClose => Ok(Step {
                consumed: input.len(),
                data: 0..input.len(),
            }),
            DecoderState::Length { remaining } => {
                let n = clamp_len(remaining, input.len());
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    DecoderState::Empty
                } else {
                    DecoderState::Length { remaining: left }
                };
                Ok(Step {
                    consumed: n,
                    data: 0..n,
                })
            }
            DecoderState::Chunked { state } => self.decode_chunked(state, input),
        }
    }

    fn decode_chunked(&mut self, mut state: ChunkState, input: &[u8]) -> Result<Step, BodyError> {
        let mut pos = 0;
        let mut data = 0..0;
        while let Some(&b) = input.get(pos) {
            match state {
                ChunkState::Size { size, digits } => {
                    if let Some(d) = hex_value(b) {
                        if digits >= MAX_CHUNK_SIZE_DIGITS {
                            return Err(BodyError::ChunkSizeTooLong);
                        }
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(BodyError::ChunkSizeTooLong)?;
                        state = ChunkState::Size {
                            size,
                            digits: digits + 1,
                        };
                    } else if digits == 0 {
                        return Err(BodyError::InvalidChunkSize);
                    } else {
                        state = match b {
                            b'\r' => ChunkState::SizeLf { size },
                            b';' => ChunkState::Ext { size },
                            b' ' | b'\t' => ChunkState::SizeWs { size },
                            b'\n' => return Err(BodyError::BareLf),
                            _ => return Err(BodyError::InvalidChunkSize),
                        };
                    }
                    pos += 1;
                }
                ChunkState::SizeWs { size } => {
                    state = match b {
                        b' ' | b'\t' => state,
                        b';' => ChunkState::Ext { size },
                        _ => return Err(BodyError::InvalidChunkSize),
                    };
                    pos += 1;
                }
                ChunkState::Ext { size } => {
                    // Skip to the CR in one go, checking the bytes on the way.
                    let rest = input.get(pos..).unwrap_or_default();
                    let run = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n' || is_ext_ctl(c))
                        .unwrap_or(rest.len());
                    self.ext_bytes = self.ext_bytes.saturating_add(run as u64);
                    if self.ext_bytes > self.limits.max_chunk_ext_bytes {
                        return Err(BodyError::ChunkExtensionTooLong);
                    }
                    pos += run;
                    match rest.get(run) {
                        Some(b'\r') => {
                            state = ChunkState::SizeLf { size };
                            pos += 1;
                        }
                        Some(b'\n') => return Err(BodyError::BareLf),
                        Some(_) => return Err(BodyError::InvalidChunkExtension),
                        None => {}
                    }
                }
                ChunkState::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(BodyError::BareCr);
                    }
                    pos += 1;
                    state = if size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data { remaining: size }
                    };
                }
                ChunkState::Data { remaining } => {
                    let avail = input.len() - pos;
                    let n = clamp_len(remaining, avail);
                    data = pos..pos + n;
                    pos += n;
                    let left = remaining - n as u64;
                    state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining: left }
                    };
                    // Hand these bytes out before reading further framing.
                    break;
                }
                ChunkState::DataCr => {
                    match b {
                        b'\r' => {}
                        b'\n' => return Err(BodyError::BareLf),
                        _ => return Err(BodyError::ChunkDataTooLong),
                    }
                    pos += 1;
                    state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(BodyError::BareCr);
                    }
                    pos += 1;
                    state = ChunkState::Size { size: 0, digits: 0 };
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => {
                        pos += 1;
                        state = ChunkState::EndLf;
                    }
                    b'\n' => return Err(BodyError::BareLf),
                    _ => state = ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => {
                    let rest = input.get(pos..).unwrap_or_default();
                    let run = rest
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(rest.len());
                    self.keep_trailer_bytes(rest.get(..run).unwrap_or_default())?;
                    pos += run;
                    match rest.get(run) {
                        Some(b'\r') => {
                            pos += 1;
                            state = ChunkState::TrailerLf;
                        }
                        Some(_) => return Err(BodyError::BareLf),
                        None => {}
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(BodyError::BareCr);
                    }
                    pos += 1;
                    self.keep_trailer_bytes(b"\r\n")?;
                    state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(BodyError::BareCr);
                    }
                    pos += 1;
                    self.parse_trailers()?;
                    state = ChunkState::Done;
                }
                ChunkState::Done => break,
            }
        }
        self.state = DecoderState::Chunked { state };
        Ok(Step {
            consumed: pos,
            data,
        })
    }

    fn keep_trailer_bytes(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        // Two bytes are kept back for the final CRLF that completes the section.
        if self.trailer_buf.len() + bytes.len() + 2 > self.limits.max_trailer_bytes {
            return Err(BodyError::TrailersTooLarge);
        }
        self.trailer_buf.extend_from_slice(bytes);
        Ok(())
    }

    fn parse_trailers(&mut self) -> Result<(), BodyError> {
        if self.trailer_buf.is_empty() {
            return Ok(());
        }
        self.trailer_buf.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
        let slots = self.limits.max_trailers.min(MAX_TRAILERS);
        let fields = fields.get_mut(..slots).unwrap_or_default();
        let parsed = match httparse::parse_headers(&self.trailer_buf, fields) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            Err(httparse::Error::TooManyHeaders) => return Err(BodyError::TooManyTrailers),
            _ => return Err(BodyError::InvalidTrailers),
        };
        let mut map = HeaderMap::with_capacity(parsed.len());
        for field in parsed.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| BodyError::InvalidTrailers)?;
            let value =
                HeaderValue::from_bytes(field.value).map_err(|_| BodyError::InvalidTrailers)?;
            if !NOT_IN_TRAILERS.contains(&name) {
                map.append(name, value);
            }
        }
        self.trailers = Some(map);
        self.trailer_buf = BytesMut::new();
        Ok(())
    }
}

/// Fields whose meaning is needed before the content (framing, routing, connection options,
/// content description, request controls and credentials): a sender must not put them in
/// trailers (RFC 9110 §6.5.1), and one that does must not have them read as if it had sent
/// them in the head, so they are dropped.
static NOT_IN_TRAILERS: [http::header::HeaderName; 34] = [
    // Framing and routing.
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::TRAILER,
    http::header::HOST,
    http::header::CONNECTION,
    http::header::TE,
    http::header::UPGRADE,
    http::header::FORWARDED,
    http::header::MAX_FORWARDS,
    // How to process the content.
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    http::header::CONTENT_RANGE,
    http::header::CONTENT_LOCATION,
    // Request controls and conditionals.
    http::header::CACHE_CONTROL,
    http::header::EXPECT,
    http::header::RANGE,
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
    // Credentials and challenges.
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::WWW_AUTHENTICATE,
    http::header::PROXY_AUTHENTICATE,
    http::header::SET_COOKIE,
    http::header::COOKIE,
    // Response control data.
    http::header::AGE,
    http::header::DATE,
    http::header::EXPIRES,
    http::header::LOCATION,
    http::header::RETRY_AFTER,
    http::header::VARY,
    http::header::PRAGMA,
];

/// `min(remaining, avail)` as a usize without a lossy cast.
fn clamp_len(remaining: u64, avail: usize) -> usize {
    usize::try_from(remaining).map_or(avail, |r| r.min(avail))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Control bytes other than HTAB, which no extension (token, quoted-string) may hold.
fn is_ext_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Writes a chunk size line: the size in lowercase hex and CRLF. Follow it with exactly `len`
/// bytes of data and [`CHUNK_END`]. `len` must not be 0, which would be the last chunk.
pub fn encode_chunk_head(len: u64, dst: &mut BytesMut) {
    let mut digits = [0u8; 16];
    let count = (16 - len.leading_zeros() / 4).max(1) as usize;
    for (i, slot) in digits.iter_mut().take(count).enumerate() {
        let shift = 4 * (count - 1 - i);
        *slot = b"0123456789abcdef"[((len >> shift) & 0xf) as usize];
    }
    dst.reserve(count + 2);
    dst.put_slice(digits.get(..count).unwrap_or_default());
    dst.put_slice(b"\r\n");
}

/// The CRLF that ends each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// Writes one whole chunk. Nothing is written for empty data, which would end the body.
pub fn encode_chunk(data: &[u8], dst: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    dst.reserve(data.len() + 20);
    encode_chunk_head(data.len() as u64, dst);
    dst.put_slice(data);
    dst.put_slice(CHUNK_END);
}

/// Writes the last chunk and the trailer section (empty if `trailers` is None or empty).
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, dst: &mut BytesMut) {
    dst.put_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        super::encode::encode_fields(trailers, dst);
    }
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked() -> Decoder {
        Decoder::new(Framing::Chunked, BodyLimits::default())
    }

    /// Decodes all of `input`, returning the body and how many bytes were consumed.
    fn decode_all(decoder: &mut Decoder, input: &[u8]) -> Result<(Vec<u8>, usize), BodyError> {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let step = decoder.decode(rest)?;
            body.extend_from_slice(step.data(rest));
            pos += step.consumed;
            if step.consumed == 0 {
                return Ok((body, pos));
            }
        }
    }

    fn chunked_error(input: &[u8]) -> BodyError {
        decode_all(&mut chunked(), input).unwrap_err()
    }

    #[test]
    fn length_body() {
        let mut d = Decoder::new(Framing::Length { len: 5 }, BodyLimits::default());
        let step = d.decode(b"hel").unwrap();
        assert_eq!(
            step,
            Step {
                consumed: 3,
                data: 0..3
            }
        );
        assert_eq!(d.state(), DecoderState::Length { remaining: 2 });
        let step = d.decode(b"loNEXT").unwrap();
        assert_eq!(
            step,
            Step {
                consumed: 2,
                data: 0..2
            }
        );
        assert!(d.is_done());
        assert_eq!(d.decode(b"NEXT").unwrap().consumed, 0);
        assert!(d.finish().is_ok());
    }

    #[test]
    fn length_body_premature_eof() {
        let mut d = Decoder::new(Framing::Length { len: 5 }, BodyLimits::default());
        d.decode(b"hel").unwrap();
        assert_eq!(d.finish(), Err(BodyError::PrematureEof));
        assert_eq!(d.decode(b"lo"), Err(BodyError::Failed));
    }

    #[test]
    fn empty_and_zero_length() {
        for framing in [Framing::Empty, Framing::Length { len: 0 }] {
            let mut d = Decoder::new(framing, BodyLimits::default());
            assert!(d.is_done());
            assert_eq!(d.decode(b"GET").unwrap().consumed, 0);
            assert!(d.finish().is_ok());
        }
    }

    #[test]
    fn until_close_body() {
        for framing in [Framing::UntilClose, Framing::Tunnel] {
            let mut d = Decoder::new(framing, BodyLimits::default());
            assert_eq!(
                d.decode(b"abc").unwrap(),
                Step {
                    consumed: 3,
                    data: 0..3
                }
            );
            assert!(!d.is_done());
            assert!(d.finish().is_ok());
            assert!(d.is_done());
        }
    }

    #[test]
    fn chunked_body() {
        let mut d = chunked();
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
        let (body, consumed) = decode_all(&mut d, input).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(consumed, input.len() - 4);
        assert!(d.is_done());
        assert!(d.take_trailers().is_none());
        assert!(d.finish().is_ok());
    }

    #[test]
    fn chunked_one_step_yields_one_data_range() {
        let mut d = chunked();
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let step = d.decode(input).unwrap();
        assert_eq!(
            step,
            Step {
                consumed: 6,
                data: 3..6
            }
        );
        let step = d.decode(&input[6..]).unwrap();
        assert_eq!(
            step,
            Step {
                consumed: 7,
                data: 5..7
            }
        );
        let step = d.decode(&input[13..]).unwrap();
        assert_eq!(step.consumed, 7);
        assert!(step.data.is_empty());
        assert!(d.is_done());
    }

    #[test]
    fn chunked_byte_by_byte() {
        let input = b"a;x=y\r\n0123456789\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = chunked();
        let mut body = Vec::new();
        let mut buf = BytesMut::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(data) = d.decode_buf(&mut buf).unwrap() {
                body.extend_from_slice(&data);
            }
        }
        assert_eq!(body, b"0123456789!");
        assert!(d.is_done());
        assert!(buf.is_empty());
        assert_eq!(d.take_trailers().unwrap()["x-t"], "1");
    }

    #[test]
    fn decode_buf_shares_the_buffer() {
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\nNEXT"[..]);
        let start = buf.as_ptr() as usize;
        let mut d = chunked();
        let data = d.decode_buf(&mut buf).unwrap().unwrap();
        assert_eq!(&data[..], b"hello");
        assert_eq!(data.as_ptr() as usize, start + 3);
        assert!(d.decode_buf(&mut buf).unwrap().is_none());
        assert!(d.is_done());
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn chunk_size_hex_and_leading_zeros() {
        let (body, _) = decode_all(&mut chunked(), b"000A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(body.len(), 10);
    }

    #[test]
    fn chunk_size_sixteen_digits_accepted() {
        let mut d = chunked();
        let step = d.decode(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(step.data(b"ffffffffffffffff\r\nab"), b"ab");
        assert_eq!(
            d.state(),
            DecoderState::Chunked {
                state: ChunkState::Data {
                    remaining: u64::MAX - 2
                }
            }
        );
    }

    #[test]
    fn smuggle_chunk_size_overflow() {
        assert_eq!(
            chunked_error(b"10000000000000000\r\n"),
            BodyError::ChunkSizeTooLong
        );
        assert_eq!(
            chunked_error(b"00000000000000001\r\n"),
            BodyError::ChunkSizeTooLong
        );
    }

    #[test]
    fn smuggle_chunk_size_invalid() {
        assert_eq!(chunked_error(b"g\r\n"), BodyError::InvalidChunkSize);
        assert_eq!(chunked_error(b"\r\n"), BodyError::InvalidChunkSize);
        assert_eq!(chunked_error(b";ext\r\n"), BodyError::InvalidChunkSize);
        assert_eq!(chunked_error(b"-1\r\n"), BodyError::InvalidChunkSize);
        assert_eq!(chunked_error(b"0x5\r\n"), BodyError::InvalidChunkSize);
        assert_eq!(chunked_error(b"+5\r\n"), BodyError::InvalidChunkSize);
    }

    #[test]
    fn smuggle_chunk_size_trailing_whitespace() {
        assert_eq!(
            chunked_error(b"5 \r\nhello\r\n"),
            BodyError::InvalidChunkSize
        );
        assert_eq!(
            chunked_error(b"5\t\r\nhello\r\n"),
            BodyError::InvalidChunkSize
        );
        assert_eq!(
            chunked_error(b"5 5\r\nhello\r\n"),
            BodyError::InvalidChunkSize
        );
    }

    #[test]
    fn whitespace_before_extension_accepted() {
        let (body, _) =
            decode_all(&mut chunked(), b"5 \t; a=\"b c\"\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn smuggle_chunk_size_bare_lf() {
        assert_eq!(chunked_error(b"5\nhello\r\n0\r\n\r\n"), BodyError::BareLf);
        assert_eq!(chunked_error(b"5;a=b\nhello\r\n"), BodyError::BareLf);
    }

    #[test]
    fn smuggle_chunk_size_bare_cr() {
        assert_eq!(chunked_error(b"5\rhello\r\n"), BodyError::BareCr);
    }

    #[test]
    fn smuggle_chunk_data_bare_lf() {
        assert_eq!(chunked_error(b"5\r\nhello\n0\r\n\r\n"), BodyError::BareLf);
        assert_eq!(chunked_error(b"5\r\nhello\r0\r\n\r\n"), BodyError::BareCr);
    }

    #[test]
    fn smuggle_chunk_data_too_long() {
        assert_eq!(
            chunked_error(b"3\r\nhello\r\n0\r\n\r\n"),
            BodyError::ChunkDataTooLong
        );
    }

    #[test]
    fn smuggle_last_chunk_bare_lf() {
        assert_eq!(chunked_error(b"0\r\n\n"), BodyError::BareLf);
        assert_eq!(chunked_error(b"0\n\n"), BodyError::BareLf);
        assert_eq!(chunked_error(b"0\r\n\rX"), BodyError::BareCr);
    }

    #[test]
    fn smuggle_chunk_extension_control_byte() {
        assert_eq!(
            chunked_error(b"5;a\0b\r\nhello\r\n"),
            BodyError::InvalidChunkExtension
        );
    }

    #[test]
    fn smuggle_chunk_extensions_too_long() {
        let limits = BodyLimits {
            max_chunk_ext_bytes: 8,
            ..BodyLimits::default()
        };
        let mut d = Decoder::new(Framing::Chunked, limits);
        assert!(decode_all(&mut d, b"1;abcdefgh\r\na\r\n").is_ok());
        assert_eq!(
            decode_all(&mut d, b"1;b\r\na\r\n"),
            Err(BodyError::ChunkExtensionTooLong)
        );
        let mut d = Decoder::new(Framing::Chunked, limits);
        let long = [b'x'; 100];
        assert_eq!(
            d.decode(b"1;"),
            Ok(Step {
                consumed: 2,
                data: 0..0
            })
        );
        assert_eq!(d.decode(&long), Err(BodyError::ChunkExtensionTooLong));
    }

    #[test]
    fn trailers_parsed() {
        let mut d = chunked();
        let input = b"1\r\na\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\nNEXT";
        let (body, consumed) = decode_all(&mut d, input).unwrap();
        assert_eq!(body, b"a");
        assert_eq!(consumed, input.len() - 4);
        let trailers = d.take_trailers().unwrap();
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(trailers["x-other"], "1");
    }

    #[test]
    fn smuggle_framing_and_routing_fields_in_trailers_are_dropped() {
        let mut d = chunked();
        let input = b"1\r\na\r\n0\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\
                      Host: evil.example\r\nX-Checksum: abc\r\n\r\n";
        decode_all(&mut d, input).unwrap();
        let trailers = d.take_trailers().unwrap();
        assert_eq!(trailers.len(), 1, "{trailers:?}");
        assert_eq!(trailers["x-checksum"], "abc");
    }

    #[test]
    fn smuggle_trailers_too_large() {
        let limits = BodyLimits {
            max_trailer_bytes: 16,
            ..BodyLimits::default()
        };
        let mut d = Decoder::new(Framing::Chunked, limits);
        assert!(decode_all(&mut d, b"0\r\nX-A: 1234567\r\n\r\n").is_ok());
        let mut d = Decoder::new(Framing::Chunked, limits);
        assert_eq!(
            decode_all(&mut d, b"0\r\nX-A: 12345678\r\n\r\n"),
            Err(BodyError::TrailersTooLarge)
        );
        // Bounded while the section is still arriving, too.
        let mut d = Decoder::new(Framing::Chunked, limits);
        assert_eq!(
            d.decode(b"0\r\nX-A: 0123456789abcdef"),
            Err(BodyError::TrailersTooLarge)
        );
    }

    #[test]
    fn smuggle_too_many_trailers() {
        let limits = BodyLimits {
            max_trailers: 2,
            ..BodyLimits::default()
        };
        let mut d = Decoder::new(Framing::Chunked, limits);
        assert_eq!(
            decode_all(&mut d, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
            Err(BodyError::TooManyTrailers)
        );
    }

    #[test]
    fn smuggle_trailer_bare_lf() {
        assert_eq!(chunked_error(b"0\r\nX-A: 1\n\r\n"), BodyError::BareLf);
        assert_eq!(chunked_error(b"0\r\nX-A: 1\rX\r\n\r\n"), BodyError::BareCr);
    }

    #[test]
    fn smuggle_invalid_trailer() {
        assert_eq!(
            chunked_error(b"0\r\nX A: 1\r\n\r\n"),
            BodyError::InvalidTrailers
        );
        assert_eq!(
            chunked_error(b"0\r\n folded\r\n\r\n"),
            BodyError::InvalidTrailers
        );
        assert_eq!(
            chunked_error(b"0\r\nX-A: \x01\r\n\r\n"),
            BodyError::InvalidTrailers
        );
    }

    #[test]
    fn chunked_premature_eof() {
        for cut in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"5\r\nhello\r\n0\r\n",
            b"",
        ] {
            let mut d = chunked();
            decode_all(&mut d, cut).unwrap();
            assert_eq!(d.finish(), Err(BodyError::PrematureEof), "{cut:?}");
        }
    }

    #[test]
    fn errors_are_final() {
        let mut d = chunked();
        assert_eq!(d.decode(b"x"), Err(BodyError::InvalidChunkSize));
        assert_eq!(d.state(), DecoderState::Failed);
        assert_eq!(d.decode(b"5\r\nhello\r\n"), Err(BodyError::Failed));
        assert_eq!(d.finish(), Err(BodyError::Failed));
    }

    #[test]
    fn chunk_head_hex() {
        let head = |n: u64| {
            let mut dst = BytesMut::new();
            encode_chunk_head(n, &mut dst);
            dst
        };
        assert_eq!(&head(1)[..], b"1\r\n");
        assert_eq!(&head(10)[..], b"a\r\n");
        assert_eq!(&head(0x1000)[..], b"1000\r\n");
        assert_eq!(&head(u64::MAX)[..], b"ffffffffffffffff\r\n");
    }

    #[test]
    fn chunked_encoding_round_trip() {
        let mut dst = BytesMut::new();
        encode_chunk(b"hello", &mut dst);
        encode_chunk(b"", &mut dst);
        encode_chunk(&[b'x'; 300], &mut dst);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("42"));
        encode_last_chunk(Some(&trailers), &mut dst);
        assert!(dst.starts_with(b"5\r\nhello\r\n12c\r\n"));
        assert!(dst.ends_with(b"0\r\nx-sum: 42\r\n\r\n"));
        let mut d = chunked();
        let (body, consumed) = decode_all(&mut d, &dst).unwrap();
        assert_eq!(body.len(), 305);
        assert_eq!(consumed, dst.len());
        assert_eq!(d.take_trailers().unwrap()["x-sum"], "42");

        let mut dst = BytesMut::new();
        encode_last_chunk(None, &mut dst);
        assert_eq!(&dst[..], b"0\r\n\r\n");
    }
}
