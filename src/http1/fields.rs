//! The field rules that decide framing and routing, shared by the request and response
//! parsers: Content-Length, Transfer-Encoding, Connection tokens and Host authorities.
//!
//! Each rule reads one field line at a time and folds it into a small accumulator, so a head is
//! judged in the same single pass that builds its `HeaderMap`.

use super::HeadError;

/// Optional whitespace as RFC 9110 §5.6.3 defines it.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// The elements of a comma-separated list, each with its surrounding whitespace removed.
/// Empty elements are yielded too: each rule decides what they mean.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Folds Content-Length field lines (RFC 9110 §8.6, RFC 9112 §6.3).
///
/// Every element must be `1*DIGIT` fitting in a u64. Repeated identical values, on several lines
/// or as a list on one line (`5, 5`), are merged into one: RFC 9110 allows this and some
/// senders do it. Any two values that differ are refused, as is any invalid element (`+5`,
/// `5 5`, `0x5`, `-1`, empty).
#[derive(Debug, Default)]
pub(crate) struct ContentLength {
    value: Option<u64>,
    /// Field lines seen.
    pub(crate) lines: usize,
    /// Values seen over all lines; more than one means the map should be merged to one line.
    elements: usize,
}

impl ContentLength {
    pub(crate) fn add_line(&mut self, line: &[u8]) -> Result<(), HeadError> {
        self.lines += 1;
        // The usual line, one number, without splitting a list.
        if let Some(n) = parse_decimal(line) {
            return self.add_value(n);
        }
        for element in list_elements(line) {
            let n = parse_decimal(element).ok_or(HeadError::InvalidContentLength)?;
            self.add_value(n)?;
        }
        Ok(())
    }

    fn add_value(&mut self, n: u64) -> Result<(), HeadError> {
        self.elements += 1;
        match self.value {
            Some(seen) if seen != n => Err(HeadError::DifferingContentLengths),
            _ => {
                self.value = Some(n);
                Ok(())
            }
        }
    }

    pub(crate) fn value(&self) -> Option<u64> {
        self.value
    }

    /// Whether the same length was given more than once and should be written once.
    pub(crate) fn needs_merging(&self) -> bool {
        self.elements > 1
    }
}

/// `1*DIGIT` as a u64, or None for anything else (sign, hex, whitespace inside, overflow).
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Transfer codings this proxy recognises as names (RFC 9112 §7 and the IANA registry).
/// Only `chunked` is decoded; the others are known so that a list naming them can be answered
/// with 501 instead of being taken for obfuscation.
fn is_known_coding(name: &[u8]) -> bool {
    const KNOWN: [&[u8]; 5] = [b"gzip", b"deflate", b"compress", b"x-gzip", b"x-compress"];
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name))
}

/// Folds Transfer-Encoding field lines (RFC 9112 §6.1, §7).
///
/// Strictness on purpose, because this field is the usual lever of request smuggling: every
/// element must be a bare token (no parameters such as `chunked;q=1`, no quotes, no empty list
/// elements such as `chunked,`), `chunked` may appear once only, and names are compared
/// without regard to case as the RFC says.
#[derive(Debug, Default)]
pub(crate) struct TransferEncoding {
    present: bool,
    codings: usize,
    chunked_seen: bool,
    last_is_chunked: bool,
    unknown: bool,
}

impl TransferEncoding {
    pub(crate) fn add_line(&mut self, line: &[u8]) -> Result<(), HeadError> {
        self.present = true;
        for element in list_elements(line) {
            if element.is_empty() || !element.iter().all(|&b| is_tchar(b)) {
                return Err(HeadError::InvalidTransferEncoding);
            }
            self.codings += 1;
            if element.eq_ignore_ascii_case(b"chunked") {
                if self.chunked_seen {
                    return Err(HeadError::ChunkedTwice);
                }
                self.chunked_seen = true;
                self.last_is_chunked = true;
            } else {
                self.unknown |= !is_known_coding(element);
                self.last_is_chunked = false;
            }
        }
        Ok(())
    }

    pub(crate) fn present(&self) -> bool {
        self.present
    }

    /// Whether `chunked` is the final coding, which is what decides framing.
    pub(crate) fn chunked_final(&self) -> bool {
        self.last_is_chunked
    }

    /// Whether the list holds anything besides a single `chunked`.
    pub(crate) fn other_codings(&self) -> bool {
        self.codings > 1 || self.unknown
    }
}

/// The Connection options that matter to the codec (RFC 9110 §7.6.1), compared without case.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    pub(crate) upgrade: bool,
}

impl ConnectionOptions {
    /// Notes the options of one Connection line; returns whether it held nothing but `close`
    /// and `keep-alive` (then `close` and `keep_alive` say all it said).
    pub(crate) fn add_line(&mut self, line: &[u8]) -> bool {
        // The usual lines, told without splitting a list.
        if line.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return true;
        }
        if line.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return true;
        }
        let mut only_options = true;
        for element in list_elements(line) {
            if element.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if element.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                only_options = false;
                if element.eq_ignore_ascii_case(b"upgrade") {
                    self.upgrade = true;
                }
            }
        }
        only_options
    }
}

/// Whether a list field holds `token` as one of its elements, without regard to case.
pub(crate) fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token))
}

/// What a byte may be in a Host value outside brackets, as bit flags to OR together: a
/// name byte (unreserved or sub-delim, RFC 3986) adds nothing.
const COLON: u8 = 1;
const PERCENT: u8 = 2;
const INVALID: u8 = 4;

static HOST_BYTES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let name = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < name.len() {
        table[name[i] as usize] = 0;
        i += 1;
    }
    table[b':' as usize] = COLON;
    table[b'%' as usize] = PERCENT;
    table
};

/// `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal in brackets, or a
/// non-empty reg-name (which covers IPv4 addresses), then an optional port of digits.
/// Userinfo is refused with the `@` that no host may contain. One OR per byte over a table
/// for the usual name; a port, percent-encodings and IP literals take a slower path.
pub fn is_valid_host(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return is_ip_literal_host(value);
    }
    let flags = value
        .iter()
        .fold(0u8, |flags, &byte| flags | HOST_BYTES[usize::from(byte)]);
    if flags & INVALID != 0 {
        return false;
    }
    let (name, port) = match flags & COLON {
        0 => (value, &[][..]),
        _ => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &[][..]),
        },
    };
    !name.is_empty()
        && is_valid_port(port)
        && (flags & PERCENT == 0 || percent_encodings_are_whole(name))
}

/// Every `%` is followed by two hex digits.
fn percent_encodings_are_whole(name: &[u8]) -> bool {
    let mut rest = name;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let hex = |i: usize| rest.get(at + i).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(1) && hex(2)) {
            return false;
        }
        rest = &rest[at + 3..];
    }
    true
}

/// `[` an IPv6 address `]`, then an optional `:port`.
fn is_ip_literal_host(value: &[u8]) -> bool {
    let Some(close) = value.iter().position(|&b| b == b']') else {
        return false;
    };
    let literal_ok = std::str::from_utf8(&value[1..close])
        .is_ok_and(|literal| literal.parse::<std::net::Ipv6Addr>().is_ok());
    literal_ok
        && match &value[close + 1..] {
            [] => true,
            [b':', port @ ..] => is_valid_port(port),
            _ => false,
        }
}

/// A port: at most five digits, at most 65535 (an empty one stands for the default).
fn is_valid_port(port: &[u8]) -> bool {
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port
            .iter()
            .fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'))
            <= 65535
}

/// The value of cookie `name` in a request's Cookie fields (RFC 6265 §5.4), from any of them:
/// HTTP/2 may split one into several (RFC 9113 §8.2.3).
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|field| field.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|&b| b == b'=')?;
            (pair[..at].trim_ascii() == name.as_bytes()).then(|| pair[at + 1..].trim_ascii())
        })
}

/// Whether a header name has `_`. Names are short, so a loop without an early exit beats
/// `memchr`, whose setup costs more than the search (measured on the proxy path: 0.4k
/// instructions more per request) and a word-at-a-time search, whose tail copy becomes a
/// `memcpy` call.
pub fn has_underscore(name: &[u8]) -> bool {
    name.iter()
        .fold(false, |found, &byte| found | (byte == b'_'))
}

/// Whether `s` is `host [ ":" port ]` (see `is_valid_host`), the form of a Host field and of
/// a CONNECT target; with `require_port`, the port must be present and non-empty.
pub(crate) fn is_authority(s: &[u8], require_port: bool) -> bool {
    if !is_valid_host(s) {
        return false;
    }
    !require_port || !split_host_port(s).1.is_empty()
}

/// `host[:port]` as its host (an IP literal keeps its brackets) and its port, empty when
/// there is none or it is written empty.
pub fn split_host_port(authority: &[u8]) -> (&[u8], &[u8]) {
    let host_end = match authority.first() {
        Some(b'[') => authority
            .iter()
            .position(|&b| b == b']')
            .map_or(authority.len(), |i| i + 1),
        _ => authority
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(authority.len()),
    };
    let (host, rest) = authority.split_at(host_end);
    (host, rest.get(1..).unwrap_or_default())
}

/// The host part of an authority, without its port (brackets of an IP literal kept).
pub(crate) fn authority_host(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(colon) => authority.get(..colon).unwrap_or(authority),
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        let one = |v: &[u8]| {
            let mut cl = ContentLength::default();
            cl.add_line(v).map(|()| cl.value())
        };
        assert_eq!(one(b"0"), Ok(Some(0)));
        assert_eq!(one(b"007"), Ok(Some(7)));
        assert_eq!(one(b"5, 5"), Ok(Some(5)));
        assert_eq!(one(b"18446744073709551615"), Ok(Some(u64::MAX)));
        for bad in [
            &b"+5"[..],
            b"-1",
            b"5 5",
            b"0x5",
            b"",
            b"5,",
            b",5",
            b"5.0",
            b"18446744073709551616",
        ] {
            assert_eq!(one(bad), Err(HeadError::InvalidContentLength), "{bad:?}");
        }
        assert_eq!(one(b"5, 6"), Err(HeadError::DifferingContentLengths));
    }

    #[test]
    fn transfer_encoding_lists() {
        let te = |lines: &[&[u8]]| {
            let mut te = TransferEncoding::default();
            for l in lines {
                te.add_line(l)?;
            }
            Ok::<_, HeadError>((te.chunked_final(), te.other_codings()))
        };
        assert_eq!(te(&[b"chunked"]), Ok((true, false)));
        assert_eq!(te(&[b"CHUNKED"]), Ok((true, false)));
        assert_eq!(te(&[b"gzip, chunked"]), Ok((true, true)));
        assert_eq!(te(&[b"gzip", b"chunked"]), Ok((true, true)));
        assert_eq!(te(&[b"chunked, gzip"]), Ok((false, true)));
        assert_eq!(te(&[b"xchunked"]), Ok((false, true)));
        assert_eq!(te(&[b"chunked, chunked"]), Err(HeadError::ChunkedTwice));
        assert_eq!(te(&[b"chunked", b"chunked"]), Err(HeadError::ChunkedTwice));
        for bad in [
            &b"chunked;q=1"[..],
            b"chunked,",
            b",chunked",
            b"\"chunked\"",
            b"chunked\x0b",
        ] {
            assert_eq!(
                te(&[bad]),
                Err(HeadError::InvalidTransferEncoding),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn authorities() {
        for good in [
            &b"a.example"[..],
            b"a.example:8080",
            b"a.example:",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:443",
            b"xn--bcher-kva.example",
            b"a%20b",
        ] {
            assert!(is_authority(good, false), "{good:?}");
        }
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"a@b",
            b"a.example:99999",
            b"a.example:80a",
            b"[::1",
            b"[zz]",
            b"[::1]x",
            b"a%2",
            b"a:b:c",
            b"",
            b"[v1.fe80::a+en1]",
        ] {
            assert!(!is_authority(bad, false), "{bad:?}");
        }
        assert!(is_authority(b"a.example:443", true));
        assert!(!is_authority(b"a.example", true));
        assert!(!is_authority(b"a.example:", true));
        assert_eq!(authority_host("a.example:80"), "a.example");
        assert_eq!(authority_host("[::1]:80"), "[::1]");
        assert_eq!(authority_host("a.example"), "a.example");
    }

    #[test]
    fn connection_tokens() {
        let mut c = ConnectionOptions::default();
        c.add_line(b"Keep-Alive, Upgrade");
        assert!(c.keep_alive && c.upgrade && !c.close);
        c.add_line(b"CLOSE");
        assert!(c.close);
        assert!(list_contains(b"foo, 100-Continue", b"100-continue"));
    }
}
