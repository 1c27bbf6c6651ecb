//! Randomized tests of the codec: no input makes a parser or the decoder panic or hold more
//! than its limits; the request parser agrees with `httparse` on the syntax both check; a
//! chunked body decodes the same however it is split; heads survive encoding and parsing.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use proptest::prelude::*;

use super::body::{BodyLimits, Decoder, Framing, encode_chunk, encode_last_chunk};
use super::encode::{encode_request_head, encode_response_head, encode_response_head_raw};
use super::{
    HeadConfig, HeadError, MAX_HEADERS, Parsed, parse_request, parse_response,
    parse_response_keeping,
};

/// Pieces that heads and chunked bodies are made of, so random inputs reach deep into the
/// parsers instead of failing on their first byte.
const FRAGMENTS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"CONNECT ",
    b"OPTIONS ",
    b"/",
    b"/a?b=c",
    b"*",
    b"http://a.example/",
    b"a.example:443",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.0 204 ",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"\0",
    b"\x7f",
    b"\xff",
    b"Host: ",
    b"Host: a.example",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"Connection: ",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
    b"X_Under: 1",
    b"chunked",
    b"gzip",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"5",
    b"0",
    b"ffffffffffffffff",
    b"12345678901234567890",
    b"hello",
    b"0\r\n\r\n",
    b"X-T: 1\r\n",
];

fn fragmented() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(FRAGMENTS).prop_map(|f| f.to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

fn small_config() -> HeadConfig {
    HeadConfig {
        max_head_bytes: 1024,
        max_headers: 16,
        max_request_line: 256,
        drop_underscore_headers: false,
    }
}

/// Random bytes, random fragments, or a valid input of the kind `valid` makes with a few
/// bytes overwritten: together they reach both the first checks and the deepest states.
fn any_input(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        valid,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(|(mut input, changes)| {
            for (at, byte) in changes {
                let len = input.len();
                if let Some(slot) = input.get_mut(at % len.max(1)) {
                    *slot = byte;
                }
            }
            input
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        fragmented(),
        mutated,
    ]
}

/// A response head, mostly well formed, with framing fields that may conflict.
fn response_ish() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![
        "HTTP/1.1 200 OK",
        "HTTP/1.1 100 Continue",
        "HTTP/1.1 101 Switching Protocols",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.0 200 OK",
        "HTTP/1.1 502",
    ]);
    let framing = prop::sample::select(vec![
        "",
        "Content-Length: 5\r\n",
        "Content-Length: 5, 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Connection: close\r\n",
        "Connection: close, X-Secret\r\nX-Secret: 1\r\n",
        "Keep-Alive: timeout=5\r\nconnection: Keep-Alive\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Proxy-Connection: close\r\nTE: trailers\r\nTrailer: X-Sum\r\n",
        "DATE: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\n",
        "X-Tight:v\r\nX-Spaced:   v  \r\nX-Lf: v\nX-Empty:\r\nServer : up\r\n",
    ]);
    (status, framing, ordinary_fields()).prop_map(|(status, framing, fields)| {
        let mut s = format!("{status}\r\n{framing}");
        for (name, value) in fields {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    })
}

fn chunked_input() -> impl Strategy<Value = Vec<u8>> {
    chunked_body().prop_map(|(chunks, trailer_fields)| {
        encode_body(&chunks, &header_map(&trailer_fields)).to_vec()
    })
}

/// Feeds `input` in two pieces as a connection would, checking what each call may do.
fn feed_request(input: &[u8], cut: usize) {
    let config = small_config();
    let mut buf = BytesMut::new();
    for piece in [input.get(..cut), input.get(cut..)].into_iter().flatten() {
        buf.extend_from_slice(piece);
        let before = buf.len();
        match parse_request(&mut buf, &config) {
            Ok(Parsed::Partial) => {
                assert_eq!(buf.len(), before, "a partial parse takes nothing");
                assert!(buf.len() <= config.max_head_bytes, "partial past the limit");
            }
            Ok(Parsed::Complete(head)) => {
                assert_eq!(buf.len() + head.head_len, before);
                assert!(head.head_len <= config.max_head_bytes);
                assert!(head.headers.len() <= config.max_headers);
                return;
            }
            Err(_) => return,
        }
    }
}

fn feed_response(input: &[u8], cut: usize, method: &Method) {
    let config = small_config();
    let mut buf = BytesMut::new();
    for piece in [input.get(..cut), input.get(cut..)].into_iter().flatten() {
        buf.extend_from_slice(piece);
        let before = buf.len();
        match parse_response(&mut buf, &config, method) {
            Ok(Parsed::Partial) => assert!(buf.len() <= config.max_head_bytes),
            Ok(Parsed::Complete(head)) => {
                assert_eq!(buf.len() + head.head_len, before);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Decodes `input` split at `cuts`, keeping unconsumed bytes as a connection buffer does;
/// checks each step and returns the body, the trailers and whether it completed.
fn decode_split(
    input: &[u8],
    cuts: &[usize],
    limits: BodyLimits,
) -> Result<(Vec<u8>, Option<HeaderMap>, bool), super::BodyError> {
    let mut decoder = Decoder::new(Framing::Chunked, limits);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut last = 0;
    for cut in cuts {
        buf.extend_from_slice(input.get(last..cut).unwrap_or_default());
        last = cut;
        loop {
            let step = decoder.decode(&buf)?;
            assert!(step.consumed <= buf.len());
            assert!(step.data.end <= step.consumed);
            assert!(decoder.buffered() <= limits.max_trailer_bytes);
            body.extend_from_slice(step.data(&buf));
            let _ = buf.split_to(step.consumed);
            if step.consumed == 0 || decoder.is_done() {
                break;
            }
        }
    }
    let done = decoder.is_done();
    Ok((body, decoder.take_trailers(), done))
}

// Generators of valid heads.

fn token(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(&b"abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~"[..]),
        1..max,
    )
    .prop_map(|b| b.into_iter().map(char::from).collect())
}

fn field_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(
            &b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[..],
        ),
        0..24,
    )
    .prop_map(|b| {
        let s: String = b.into_iter().map(char::from).collect();
        // httparse trims whitespace around a value, so generate none there.
        s.trim_matches(|c| c == ' ' || c == '\t').to_string()
    })
}

/// Field names that would change framing, routing or the connection are left to the unit
/// tests; these are ordinary fields.
fn ordinary_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (token(16).prop_map(|n| format!("x-{n}")), field_value()),
        0..12,
    )
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(&b"abcXYZ019-._~!$&'()*+,;=:@/?%"[..]),
        0..40,
    )
    .prop_map(|b| {
        let s: String = b.into_iter().map(char::from).collect();
        // '%' must start a valid escape for http::Uri; keep it as one.
        format!("/{}", s.replace('%', "%20"))
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        prop::sample::select(vec![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::PATCH,
        ]),
        token(20).prop_map(
            |t| Method::from_bytes(t.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET)
        ),
    ]
    .prop_filter("CONNECT and OPTIONS have their own targets", |m| {
        *m != Method::CONNECT && *m != Method::OPTIONS
    })
}

fn header_map(fields: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// One chunk's data and the name of its extension, if it has one.
type Chunk = (Vec<u8>, Option<String>);

/// A chunked body: its chunks, then trailer fields.
fn chunked_body() -> impl Strategy<Value = (Vec<Chunk>, Vec<(String, String)>)> {
    (
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 1..200),
                prop::option::of(token(10)),
            ),
            0..8,
        ),
        prop::collection::vec(
            (token(10).prop_map(|n| format!("x-{n}")), field_value()),
            0..3,
        ),
    )
}

fn encode_body(chunks: &[Chunk], trailers: &HeaderMap) -> BytesMut {
    let mut dst = BytesMut::new();
    for (data, ext) in chunks {
        match ext {
            // Written by hand: the encoder sends no extensions, but peers do.
            Some(ext) => {
                dst.extend_from_slice(format!("{:X};{ext}=v\r\n", data.len()).as_bytes());
                dst.extend_from_slice(data);
                dst.extend_from_slice(b"\r\n");
            }
            None => encode_chunk(data, &mut dst),
        }
    }
    encode_last_chunk(Some(trailers), &mut dst);
    dst
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn request_parser_never_panics(input in any_input(request_ish()), cut in any::<usize>()) {
        feed_request(&input, cut % (input.len() + 1));
    }

    #[test]
    fn response_parser_never_panics(
        input in any_input(response_ish()),
        cut in any::<usize>(),
        head in any::<bool>(),
    ) {
        let method = if head { Method::HEAD } else { Method::GET };
        feed_response(&input, cut % (input.len() + 1), &method);
    }

    #[test]
    fn chunked_decoder_never_panics_and_stays_bounded(
        input in any_input(chunked_input()),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let limits = BodyLimits {
            max_chunk_ext_bytes: 64,
            max_trailer_bytes: 128,
            max_trailers: 4,
        };
        let _ = decode_split(&input, &cuts, limits);
        let mut decoder = Decoder::new(Framing::Chunked, limits);
        if let Ok(step) = decoder.decode(&input) {
            prop_assert!(step.consumed <= input.len());
        }
        prop_assert!(decoder.buffered() <= limits.max_trailer_bytes);
    }
}

/// A request head that is mostly well formed, with a few of its pieces swapped for something
/// that may not be.
fn request_ish() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        20 => prop::sample::select(vec!["GET", "POST", "PURGE", "OPTIONS"]).prop_map(String::from),
        1 => prop::sample::select(vec!["G(T", "", "GE T", "get"]).prop_map(String::from),
    ];
    let target = prop_oneof![
        20 => path(),
        1 => prop::sample::select(vec!["*", "http://a.example/x", "a.example:80", "/\u{7f}", "/a b", ""])
            .prop_map(String::from),
    ];
    let version = prop_oneof![
        20 => Just("HTTP/1.1"),
        1 => prop::sample::select(vec!["HTTP/1.0", "HTTP/2.0", "http/1.1", "HTTP/1.2", "HTTP/1.1 ", ""]),
    ];
    let eol = prop_oneof![
        60 => Just("\r\n"),
        1 => Just("\n"),
        1 => Just("\r"),
        1 => Just("\r\r\n"),
    ];
    let name = prop_oneof![
        40 => token(12),
        1 => prop::sample::select(vec!["", "a b", "a\u{1}", " a", "a ", "\u{0}", "a\tb"]).prop_map(String::from),
    ];
    let value = prop_oneof![
        40 => field_value(),
        1 => prop::sample::select(vec!["\u{0}", "a\rb", "\u{1b}", "\u{7f}", "\u{e9}"]).prop_map(String::from),
    ];
    (
        method,
        target,
        version,
        prop::collection::vec((name, value, eol.clone()), 0..8),
        eol.clone(),
        eol,
    )
        .prop_map(|(method, target, version, fields, line_end, head_end)| {
            let mut s = format!("{method} {target} {version}{line_end}Host: a.example{line_end}");
            for (name, value, eol) in fields {
                s.push_str(&format!("{name}: {value}{eol}"));
            }
            s.push_str(head_end);
            s.into_bytes()
        })
}

/// What `httparse` alone says of a request head.
enum Verdict {
    Accepted,
    Partial,
    Refused,
}

fn httparse_verdict(input: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Complete(_)) => Verdict::Accepted,
        Ok(httparse::Status::Partial) => Verdict::Partial,
        Err(_) => Verdict::Refused,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Where `httparse` refuses, so does this parser, with a syntax error; where it accepts,
    /// this parser may refuse only for a rule beyond syntax (framing, Host, limits) or for a
    /// target that `http::Uri` finds stricter than `httparse` does.
    #[test]
    fn request_syntax_agrees_with_httparse(input in request_ish()) {
        let config = HeadConfig {
            max_head_bytes: usize::MAX,
            max_headers: MAX_HEADERS,
            max_request_line: usize::MAX,
            drop_underscore_headers: false,
        };
        let mut buf = BytesMut::from(&input[..]);
        let ours = parse_request(&mut buf, &config);
        match (httparse_verdict(&input), ours) {
            (Verdict::Refused, Err(e)) => prop_assert!(e.is_syntax(), "{e:?}"),
            (Verdict::Refused, Ok(_)) => prop_assert!(false, "httparse refused, we did not"),
            (Verdict::Partial, ours) => prop_assert!(matches!(ours, Ok(Parsed::Partial))),
            (Verdict::Accepted, Ok(parsed)) => prop_assert!(matches!(parsed, Parsed::Complete(_))),
            (Verdict::Accepted, Err(e)) => {
                prop_assert!(!e.is_syntax() || e == HeadError::InvalidTarget, "{e:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chunked_body_decodes_the_same_however_split(
        (chunks, trailer_fields) in chunked_body(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let trailers = header_map(&trailer_fields);
        let input = encode_body(&chunks, &trailers);
        let expected: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.clone()).collect();
        let limits = BodyLimits::default();
        let (whole, whole_trailers, done) = decode_split(&input, &[], limits).unwrap();
        prop_assert!(done);
        prop_assert_eq!(&whole, &expected);
        let (split, split_trailers, done) = decode_split(&input, &cuts, limits).unwrap();
        prop_assert!(done);
        prop_assert_eq!(&split, &expected);
        prop_assert_eq!(&whole_trailers, &split_trailers);
        let expected_trailers = (!trailers.is_empty()).then_some(trailers);
        prop_assert_eq!(whole_trailers, expected_trailers);
    }

    #[test]
    fn request_head_round_trip(
        method in method(),
        path in path(),
        http10 in any::<bool>(),
        fields in ordinary_fields(),
        length in prop::option::of(1u64..1_000_000),
    ) {
        let version = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        let mut headers = header_map(&fields);
        headers.insert("host", HeaderValue::from_static("a.example:8080"));
        if let Some(length) = length {
            headers.insert("content-length", HeaderValue::from(length));
        }
        let uri: http::Uri = path.parse().unwrap();
        let mut dst = BytesMut::new();
        encode_request_head(&method, &uri, version, &headers, &mut dst);
        let encoded_len = dst.len();
        let text = String::from_utf8_lossy(&dst).into_owned();
        let Ok(Parsed::Complete(parsed)) = parse_request(&mut dst, &HeadConfig::default()) else {
            return Err(TestCaseError::fail(format!("not parsed back: {text:?}")));
        };
        prop_assert_eq!(parsed.head_len, encoded_len);
        prop_assert_eq!(&parsed.method, &method);
        prop_assert_eq!(&parsed.uri, &uri);
        prop_assert_eq!(parsed.version, version);
        prop_assert_eq!(&parsed.headers, &headers);
        let framing = match length {
            Some(len) => Framing::Length { len },
            None => Framing::Empty,
        };
        prop_assert_eq!(parsed.framing, framing);
    }

    #[test]
    fn response_head_round_trip(
        code in 100u16..600,
        http10 in any::<bool>(),
        fields in ordinary_fields(),
    ) {
        let status = StatusCode::from_u16(code).unwrap();
        let version = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        let headers = header_map(&fields);
        let mut dst = BytesMut::new();
        encode_response_head(status, version, &headers, &mut dst);
        let text = String::from_utf8_lossy(&dst).into_owned();
        let Ok(Parsed::Complete(parsed)) =
            parse_response(&mut dst, &HeadConfig::default(), &Method::GET)
        else {
            return Err(TestCaseError::fail(format!("not parsed back: {text:?}")));
        };
        prop_assert!(dst.is_empty());
        prop_assert_eq!(parsed.status, status);
        prop_assert_eq!(parsed.version, version);
        prop_assert_eq!(&parsed.headers, &headers);
    }

    /// A head kept as bytes says what the map says: the same verdict, framing and
    /// connection reuse, and the same end-to-end fields, before and after being written out.
    #[test]
    fn raw_fields_agree_with_the_map(input in any_input(response_ish()), head in any::<bool>()) {
        let method = if head { Method::HEAD } else { Method::GET };
        let config = HeadConfig::default();
        let mapped = parse_response(&mut BytesMut::from(&input[..]), &config, &method);
        let kept = parse_response_keeping(&mut BytesMut::from(&input[..]), &config, &method, true);
        match (mapped, kept) {
            (Ok(Parsed::Complete(mapped)), Ok(Parsed::Complete(kept))) => {
                prop_assert_eq!(mapped.status, kept.status);
                prop_assert_eq!(mapped.version, kept.version);
                prop_assert_eq!(mapped.framing, kept.framing);
                prop_assert_eq!(mapped.head_len, kept.head_len);
                prop_assert_eq!(mapped.keep_alive(), kept.keep_alive());
                let Some(raw) = kept.raw else {
                    prop_assert_eq!(&mapped.headers, &kept.headers);
                    return Ok(());
                };
                prop_assert!(kept.headers.is_empty());
                let mut end_to_end = mapped.headers.clone();
                for name in mapped.headers.keys() {
                    if crate::http1::raw::is_hop_by_hop(name.as_str().as_bytes()) {
                        end_to_end.remove(name);
                    }
                }
                prop_assert_eq!(&raw.to_map(), &end_to_end);
                prop_assert_eq!(
                    raw.content_length(),
                    mapped.headers.get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                );
                let mut written = BytesMut::new();
                encode_response_head_raw(kept.status, kept.version, &raw, true, &HeaderMap::new(), &mut written);
                let Ok(Parsed::Complete(again)) = parse_response(&mut written, &config, &Method::GET) else {
                    return Err(TestCaseError::fail("written head not read back"));
                };
                prop_assert_eq!(&again.headers, &end_to_end);
            }
            (Ok(Parsed::Partial), Ok(Parsed::Partial)) => {}
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => return Err(TestCaseError::fail(format!("{a:?} against {b:?}"))),
        }
    }
}
