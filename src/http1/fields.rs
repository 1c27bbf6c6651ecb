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
        for element in list_elements(line) {
            let n = parse_decimal(element).ok_or(HeadError::InvalidContentLength)?;
            self.elements += 1;
            match self.value {
                Some(seen) if seen != n => return Err(HeadError::DifferingContentLengths),
                _ => self.value = Some(n),
            }
        }
        Ok(())
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
    pub(crate) fn add_line(&mut self, line: &[u8]) {
        for element in list_elements(line) {
            if element.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if element.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if element.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
    }
}

/// Whether a list field holds `token` as one of its elements, without regard to case.
pub(crate) fn list_contains(value: &[u8], token: &[u8]) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `reg-name` of RFC 3986 §3.2.2 (which also covers `IPv4address`): unreserved, sub-delims and
/// well-formed percent escapes. It may be empty.
fn is_reg_name(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hex = |j: usize| s.get(j).is_some_and(|c| c.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(b) || is_sub_delim(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `IP-literal` of RFC 3986 §3.2.2 without its brackets: an IPv6 address or `IPvFuture`.
fn is_ip_literal(s: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = s {
        // IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return match rest.get(digits..) {
            Some([b'.', tail @ ..]) if digits > 0 && !tail.is_empty() => tail
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':'),
            _ => false,
        };
    }
    std::str::from_utf8(s).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// `port` of RFC 3986 with a value a TCP port can have; empty is allowed (`a.example:`).
fn is_port(s: &[u8]) -> bool {
    s.is_empty() || (s.len() <= 5 && parse_decimal(s).is_some_and(|p| p <= 65535))
}

/// Whether `s` is `host [ ":" port ]` as RFC 3986 §3.2.2 defines it, the form of a Host field
/// (RFC 9110 §7.2) and of a CONNECT target. Userinfo is not part of it, so `a@b` is refused,
/// as are `a b` and `a/b`. With `require_port`, the port must be present and non-empty.
pub(crate) fn is_authority(s: &[u8], require_port: bool) -> bool {
    // The host is checked while splitting; only the port is left to judge.
    let port = match s {
        [b'[', rest @ ..] => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let (literal, after) = rest.split_at(close);
            if !is_ip_literal(literal) {
                return false;
            }
            match after {
                [b']'] => None,
                [b']', b':', port @ ..] => Some(port),
                _ => return false,
            }
        }
        _ => match s.iter().rposition(|&b| b == b':') {
            Some(colon) => {
                let (host, port) = s.split_at(colon);
                if !is_reg_name(host) {
                    return false;
                }
                port.get(1..)
            }
            None => {
                if !is_reg_name(s) {
                    return false;
                }
                None
            }
        },
    };
    match port {
        Some(port) if require_port => !port.is_empty() && is_port(port),
        Some(port) => is_port(port),
        None => !require_port,
    }
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
            b"",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:443",
            b"[v1.fe80::a+en1]",
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
