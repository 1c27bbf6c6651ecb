//! Header rewriting between client and upstream: hop-by-hop headers out (RFC 9110 §7.6.1),
//! X-Forwarded-* and Via in, a request id on both sides, and each route's own set/remove rules.
//! Edits are made in place on the message's `HeaderMap`, with prebuilt values where possible.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub use crate::http1::is_valid_host;
use std::sync::atomic::{AtomicU64, Ordering};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub static VIA_HTTP_1_0: HeaderValue = HeaderValue::from_static("1.0 gatehouse");
pub static VIA_HTTP_1_1: HeaderValue = HeaderValue::from_static("1.1 gatehouse");
pub static VIA_HTTP_2: HeaderValue = HeaderValue::from_static("2 gatehouse");
pub static VIA_HTTP_3: HeaderValue = HeaderValue::from_static("3 gatehouse");
static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");
static UPGRADE_VALUE: HeaderValue = HeaderValue::from_static("upgrade");

/// The hop-by-hop headers removed whatever Connection says (RFC 9110 §7.6.1, and the
/// de-facto Keep-Alive and Proxy-Connection).
static FIXED_HOP_BY_HOP: [&HeaderName; 8] = [
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
];

/// What one pass over a message's header names found, so that the edits after it look up
/// only headers that are there (each lookup hashes the name).
#[derive(Clone, Copy, Debug, Default)]
pub struct HeaderScan {
    /// A bit per `FIXED_HOP_BY_HOP` entry present.
    fixed_hop_by_hop: u8,
    connection: bool,
    forwarded_for: bool,
    /// X-Forwarded-Proto or X-Forwarded-Host, which gatehouse replaces.
    forwarded_other: bool,
    /// A name with `_` (see `remove_underscored`).
    pub underscored: bool,
}

const UPGRADE_BIT: u8 = 1 << 3;

impl HeaderScan {
    /// A request's scan: hop-by-hop fields, X-Forwarded-For, and names with `_`.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::scan(headers, true)
    }

    /// Whether a TE field is there.
    pub fn has_te(&self) -> bool {
        self.fixed_hop_by_hop & 1 != 0
    }

    /// A response's scan: names with `_` matter only in what goes to a back-end, so they are
    /// not looked for (a look at every name's letters).
    pub fn of_response(headers: &HeaderMap) -> Self {
        Self::scan(headers, false)
    }

    #[inline(always)]
    fn scan(headers: &HeaderMap, underscores: bool) -> Self {
        let mut scan = Self::default();
        for name in headers.keys() {
            if *name == header::CONNECTION {
                scan.connection = true;
            } else if *name == X_FORWARDED_FOR {
                scan.forwarded_for = true;
            } else if *name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST {
                scan.forwarded_other = true;
            } else if let Some(i) = FIXED_HOP_BY_HOP.iter().position(|fixed| *fixed == name) {
                scan.fixed_hop_by_hop |= 1 << i;
            } else if underscores {
                scan.underscored |= has_underscore(name.as_str().as_bytes());
            }
        }
        scan
    }
}

use crate::http1::has_underscore;

/// Removes header names with `_`, as nginx does by default: CGI, WSGI and Rack map both `-`
/// and `_` to `_`, so a back-end behind them would read `Transfer_Encoding` or
/// `Content_Length` as framing the proxy never saw.
pub fn remove_underscored(headers: &mut HeaderMap) {
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| has_underscore(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in &underscored {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers: those named in Connection, and the fixed list. When
/// `keep_upgrade` is set (a WebSocket handshake), `Connection: upgrade` and `Upgrade` stay.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, scan: &HeaderScan, keep_upgrade: bool) {
    if scan.connection {
        remove_connection_named(headers, keep_upgrade);
        headers.remove(header::CONNECTION);
    }
    for (i, name) in FIXED_HOP_BY_HOP.iter().enumerate() {
        if scan.fixed_hop_by_hop & (1 << i) != 0 && !(keep_upgrade && **name == header::UPGRADE) {
            headers.remove(*name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, UPGRADE_VALUE.clone());
    }
}

/// Removes the headers that Connection names. "close" and "keep-alive" are connection
/// options, not header names worth a lookup (Keep-Alive goes with the fixed list anyway).
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    let tokens = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for token in tokens {
        let skip = token.is_empty()
            || token.eq_ignore_ascii_case("close")
            || token.eq_ignore_ascii_case("keep-alive")
            || (keep_upgrade && token.eq_ignore_ascii_case("upgrade"));
        if !skip && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            named.push(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
}

/// An upstream's interim (1xx) response as HTTP/1.1 bytes for the client, without its
/// hop-by-hop headers. 100 Continue is not one of them: hyper answers the client's
/// `Expect: 100-continue` itself, and 101 ends the exchange as an upgrade.
pub fn interim_head(status: http::StatusCode, headers: &HeaderMap) -> Option<Vec<u8>> {
    if !status.is_informational()
        || status == http::StatusCode::CONTINUE
        || status == http::StatusCode::SWITCHING_PROTOCOLS
    {
        return None;
    }
    let mut headers = headers.clone();
    let scan = HeaderScan::of(&headers);
    remove_hop_by_hop(&mut headers, &scan, false);
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Some(head)
}

/// Is this request a WebSocket handshake (RFC 6455 §4.1)? Only WebSocket upgrades pass;
/// `Upgrade: h2c` and others are dropped as hop-by-hop.
pub fn is_websocket_upgrade(headers: &HeaderMap, scan: &HeaderScan) -> bool {
    if !scan.connection || scan.fixed_hop_by_hop & UPGRADE_BIT == 0 {
        return false;
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        && headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Appends the client to X-Forwarded-For and sets X-Forwarded-Proto and X-Forwarded-Host.
/// Several X-Forwarded-For lines form one list (RFC 9110 §5.3); they are joined, not dropped.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    scan: &HeaderScan,
    client: &HeaderValue,
    host: Option<&HeaderValue>,
    https: bool,
) {
    let client_value = client.clone();
    let value = if !scan.forwarded_for {
        client_value
    } else {
        let mut combined = Vec::with_capacity(64);
        for line in headers.get_all(&X_FORWARDED_FOR) {
            combined.extend_from_slice(line.as_bytes());
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(client_value.as_bytes());
        HeaderValue::from_bytes(&combined).unwrap_or(client_value)
    };
    headers.insert(&X_FORWARDED_FOR, value);
    let proto = if https { &PROTO_HTTPS } else { &PROTO_HTTP };
    headers.insert(&X_FORWARDED_PROTO, proto.clone());
    if let Some(host) = host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
}

/// The fields gatehouse adds to a request it forwards when the client sent none of those they
/// replace: X-Forwarded-For, -Proto and -Host, and Via. They are kept beside the request's map
/// until it is sent: an HTTP/1.1 upstream gets them written after the client's fields
/// (`write`), which spares the four hashed inserts a map costs; anything else that needs the
/// request whole gets them put in its map (`apply`), as `add_forwarded` and `add_via` would.
/// They are kept apart only for a request whose hop-by-hop fields are gone from its map (no
/// upgrade) and that nothing else edits, so a writer that has them knows the map holds no
/// Connection, Upgrade or Transfer-Encoding field.
#[derive(Clone, Debug)]
pub struct ForwardingFields {
    forwarded_for: HeaderValue,
    proto: &'static HeaderValue,
    host: Option<HeaderValue>,
    via: &'static HeaderValue,
    /// The request id gatehouse made, when the client sent none.
    request_id: Option<HeaderValue>,
}

impl ForwardingFields {
    /// The fields for a request from `client`, or `None` when the request carries fields they
    /// would have to replace or extend: then `add_forwarded` edits its map.
    pub fn kept_apart(
        scan: &HeaderScan,
        client: &HeaderValue,
        host: Option<&HeaderValue>,
        https: bool,
        version: http::Version,
        request_id: Option<HeaderValue>,
    ) -> Option<Self> {
        if scan.forwarded_for || scan.forwarded_other {
            return None;
        }
        Some(Self {
            forwarded_for: client.clone(),
            proto: if https { &PROTO_HTTPS } else { &PROTO_HTTP },
            host: host.cloned(),
            via: via_value(version),
            request_id,
        })
    }

    /// Puts the fields in `headers`: the same map `add_forwarded` and `add_via` make.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(&X_FORWARDED_FOR, self.forwarded_for);
        headers.insert(&X_FORWARDED_PROTO, self.proto.clone());
        if let Some(host) = self.host {
            headers.insert(&X_FORWARDED_HOST, host);
        }
        headers.append(header::VIA, self.via.clone());
        if let Some(id) = self.request_id {
            headers.insert(&X_REQUEST_ID, id);
        }
    }

    /// Writes the fields as HTTP/1.1 field lines. A Via the client sent comes before, so the
    /// list reads as it would joined in a map.
    pub fn write(&self, dst: &mut bytes::BytesMut) {
        let mut line = |name_colon: &[u8], value: &HeaderValue| {
            dst.extend_from_slice(name_colon);
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        };
        line(b"x-forwarded-for: ", &self.forwarded_for);
        line(b"x-forwarded-proto: ", self.proto);
        if let Some(host) = &self.host {
            line(b"x-forwarded-host: ", host);
        }
        line(b"via: ", self.via);
        if let Some(id) = &self.request_id {
            line(b"x-request-id: ", id);
        }
    }
}

/// Why a request's host cannot be trusted; each is answered 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// Neither a Host header nor an authority in the target (RFC 9112 §3.2).
    Missing,
    /// More than one Host field line (RFC 9112 §3.2).
    Repeated,
    /// Not `host [":" port]` by RFC 3986, or with userinfo (RFC 9110 §4.2.4).
    Invalid,
    /// An HTTP/2 `:authority` and a Host header that name different hosts (RFC 9113 §8.3.1).
    Conflicting,
}

impl HostError {
    pub fn message(self) -> &'static str {
        match self {
            HostError::Missing => "request has no Host header",
            HostError::Repeated => "request has more than one Host header",
            HostError::Invalid => "request has an invalid Host",
            HostError::Conflicting => "request's :authority and Host name different hosts",
        }
    }
}

/// The host a request is for. An HTTP/2 or HTTP/3 request's `:authority` wins over a Host header, which
/// must agree with it; otherwise the one Host header. A Host header is checked even when the
/// authority is used: a request with two, or with an invalid one, is rejected whatever else
/// it says.
///
/// An HTTP/1.x request was read by the codec (`http1::request`), which has already refused
/// every Host this would refuse and put an absolute-form target's authority in Host: only its
/// Host is looked up. HTTP/2 requests (hyper's) and HTTP/3 ones (h3's) are judged here.
pub fn request_host(parts: &http::request::Parts) -> Result<HeaderValue, HostError> {
    if !matches!(parts.version, http::Version::HTTP_2 | http::Version::HTTP_3) {
        return match parts.headers.get(http::header::HOST) {
            Some(host) => Ok(host.clone()),
            None => Err(HostError::Missing),
        };
    }
    let mut lines = parts.headers.get_all(http::header::HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        return Err(HostError::Repeated);
    }
    if let Some(host) = host
        && !is_valid_host(host.as_bytes())
    {
        return Err(HostError::Invalid);
    }
    match (parts.uri.authority(), host) {
        (Some(authority), host) => {
            let scheme = parts.uri.scheme_str();
            // An absolute-form target names an http or https resource, or nothing this proxy
            // serves.
            if scheme.is_some_and(|scheme| {
                !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https")
            }) {
                return Err(HostError::Invalid);
            }
            let authority = authority.as_str();
            if !is_valid_host(authority.as_bytes()) {
                return Err(HostError::Invalid);
            }
            if let Some(host) = host
                && !same_authority(host.as_bytes(), authority.as_bytes(), scheme)
            {
                return Err(HostError::Conflicting);
            }
            HeaderValue::from_str(authority).map_err(|_| HostError::Invalid)
        }
        (None, Some(host)) => Ok(host.clone()),
        (None, None) => Err(HostError::Missing),
    }
}

/// Whether two valid `host[:port]` values name the same authority once normalized (RFC 3986
/// §6.2.2 and §6.2.3): the host compared without case, a missing or empty port read as the
/// scheme's default.
fn same_authority(a: &[u8], b: &[u8], scheme: Option<&str>) -> bool {
    let default_port: &[u8] = match scheme {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => b"443",
        _ => b"80",
    };
    let (a_host, a_port) = crate::http1::split_host_port(a);
    let (b_host, b_port) = crate::http1::split_host_port(b);
    // Compared as numbers: leading zeros do not change a port (both are valid, at most five
    // digits, by the time they get here).
    let port_of = |port: &[u8]| -> u32 {
        let port = if port.is_empty() { default_port } else { port };
        port.iter().fold(0u32, |value, &digit| {
            value
                .saturating_mul(10)
                .saturating_add(u32::from(digit.wrapping_sub(b'0')))
        })
    };
    a_host.eq_ignore_ascii_case(b_host) && port_of(a_port) == port_of(b_port)
}

/// An IP address as a header value (for X-Forwarded-For).
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let len = {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{ip}");
        cursor.position() as usize
    };
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Appends this hop to Via (RFC 9110 §7.6.3).
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    headers.append(header::VIA, via_value(version).clone());
}

fn via_value(version: http::Version) -> &'static HeaderValue {
    match version {
        http::Version::HTTP_2 => &VIA_HTTP_2,
        http::Version::HTTP_3 => &VIA_HTTP_3,
        http::Version::HTTP_10 => &VIA_HTTP_1_0,
        _ => &VIA_HTTP_1_1,
    }
}

/// Process-unique request ids: a random prefix chosen at start and a counter, as 32 hex digits.
pub struct RequestIds {
    /// The prefix's 16 hex digits, written once.
    prefix: [u8; 16],
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    pub fn new() -> Self {
        let mut prefix = [0u8; 16];
        hex_into(fastrand::u64(..), &mut prefix);
        Self {
            prefix,
            counter: AtomicU64::new(fastrand::u64(..u64::from(u32::MAX))),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = [0u8; 32];
        let (prefix, count) = out.split_at_mut(16);
        prefix.copy_from_slice(&self.prefix);
        hex_into(n, count);
        // SAFETY: lowercase hex digits only, all of which a header value may hold (checking
        // them again would cost every request that brings no id of its own).
        unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(&out)) }
    }
}

/// `n` as 16 lowercase hex digits into `out`.
fn hex_into(n: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().take(16).enumerate() {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// A client's X-Request-Id is kept when it is reasonable: short and printable.
pub fn acceptable_request_id(value: &HeaderValue) -> bool {
    (1..=200).contains(&value.len()) && value.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

/// A route's compiled set/remove rules.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn compile(rules: &crate::config::HeaderRules) -> Self {
        Self {
            set: rules
                .set
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_str(value.get_ref()).ok()?,
                    ))
                })
                .collect(),
            remove: rules
                .remove
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.get_ref().as_bytes()).ok())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_fields_written_as_lines_say_what_the_map_edits_say() {
        let client = HeaderValue::from_static("192.0.2.1");
        let host = HeaderValue::from_static("shop.example");
        for https in [false, true] {
            let request = headers(&[("host", "shop.example"), ("via", "1.0 edge")]);
            let scan = HeaderScan::of(&request);
            let fields = ForwardingFields::kept_apart(
                &scan,
                &client,
                Some(&host),
                https,
                http::Version::HTTP_11,
                Some(HeaderValue::from_static("0123456789abcdef01234567")),
            )
            .expect("nothing to replace");
            let mut edited = request.clone();
            add_forwarded(&mut edited, &scan, &client, Some(&host), https);
            add_via(&mut edited, http::Version::HTTP_11);
            edited.insert(
                &X_REQUEST_ID,
                HeaderValue::from_static("0123456789abcdef01234567"),
            );
            let mut applied = request.clone();
            fields.clone().apply(&mut applied);
            assert_eq!(applied, edited);

            // The lines read back after the request's own give the same fields.
            let mut lines = bytes::BytesMut::new();
            fields.write(&mut lines);
            let mut read_back = request.clone();
            for line in std::str::from_utf8(&lines)
                .unwrap()
                .split_terminator("\r\n")
            {
                let (name, value) = line.split_once(": ").unwrap();
                read_back.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            assert_eq!(read_back, edited);
        }
    }

    #[test]
    fn forwarding_fields_stay_in_the_map_when_the_client_sent_some() {
        let client = HeaderValue::from_static("192.0.2.1");
        for sent in ["x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-host"] {
            let scan = HeaderScan::of(&headers(&[(sent, "x")]));
            let kept = ForwardingFields::kept_apart(
                &scan,
                &client,
                None,
                false,
                http::Version::HTTP_11,
                None,
            );
            assert!(kept.is_none(), "{sent}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn parts(version: http::Version, target: &str, hosts: &[&str]) -> http::request::Parts {
        let mut request = http::Request::get(target).version(version);
        for host in hosts {
            request = request.header(http::header::HOST, *host);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_values_follow_rfc_3986() {
        for good in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:",
            "127.0.0.1",
            "[::1]",
            "[::1]:443",
            "[2001:db8::7]",
            "[::ffff:1.2.3.4]:8080",
            "a:65535",
            "a:00080",
            "a-b_c~d.e",
            "%41bc",
            "x!$&'()*+,;=",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "a b",
            "a/b",
            "a@b",
            "user@example.com",
            "a:b",
            "a:80:90",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:a",
            "[zz]",
            "[...]",
            "[1.2.3.4]",
            "a:65536",
            "a:123456",
            "a:99999999999999999999",
            "%4",
            "%zz",
            "a\tb",
            "é",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    /// RFC 3986's `host [":" port]` written the plain way, to check the table-driven one.
    fn reference_is_valid_host(value: &[u8]) -> bool {
        let text = match std::str::from_utf8(value) {
            Ok(text) => text,
            Err(_) => return false,
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((literal, after)) = rest.split_once(']') else {
                return false;
            };
            if literal.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            match after.strip_prefix(':') {
                Some(port) => ("[]", port),
                None if after.is_empty() => ("[]", ""),
                None => return false,
            }
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, port),
                None => (text, ""),
            }
        };
        let port_ok = port.is_empty()
            || port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok();
        if !port_ok || host.is_empty() {
            return false;
        }
        if host == "[]" {
            return true;
        }
        let bytes = host.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i] as char;
            if c == '%' {
                let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            if !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=".contains(c)) {
                return false;
            }
            i += 1;
        }
        true
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn the_word_wise_underscore_search_finds_what_contains_finds(
            name in proptest::collection::vec(
                proptest::sample::select(b"_-az09".to_vec()),
                0..40,
            )
        ) {
            proptest::prop_assert_eq!(has_underscore(&name), name.contains(&b'_'));
        }

        #[test]
        fn host_validation_agrees_with_the_plain_reference(
            value in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"aZ09-._~!$&'()*+,;=:%[]@/ \t\x00\xff".to_vec()),
                    proptest::num::u8::ANY,
                ],
                0..24,
            )
        ) {
            proptest::prop_assert_eq!(
                is_valid_host(&value),
                reference_is_valid_host(&value),
                "{:?}",
                String::from_utf8_lossy(&value)
            );
        }
    }

    #[test]
    fn an_http2_request_has_one_valid_host_at_most() {
        let none = parts(http::Version::HTTP_2, "/x", &[]);
        assert_eq!(request_host(&none), Err(HostError::Missing));
        let two = parts(http::Version::HTTP_2, "/x", &["a.example", "b.example"]);
        assert_eq!(request_host(&two), Err(HostError::Repeated));
        let same_twice = parts(http::Version::HTTP_2, "/x", &["a.example", "a.example"]);
        assert_eq!(request_host(&same_twice), Err(HostError::Repeated));
        let spaced = parts(http::Version::HTTP_2, "https://a.example/x", &["a b"]);
        assert_eq!(request_host(&spaced), Err(HostError::Invalid));
        let userinfo = parts(http::Version::HTTP_2, "https://u@a.example/c", &[]);
        assert_eq!(request_host(&userinfo), Err(HostError::Invalid));
        let other_scheme = parts(http::Version::HTTP_2, "ftp://a.example/c", &[]);
        assert_eq!(request_host(&other_scheme), Err(HostError::Invalid));
    }

    #[test]
    fn an_http1_head_read_by_the_codec_is_taken_at_its_host() {
        // The codec refused bad and repeated Hosts and moved an absolute-form authority into
        // Host (see `http1::request`'s tests): what is left is looked up, not judged again.
        let ok = parts(http::Version::HTTP_11, "/x", &["a.example:81"]);
        assert_eq!(request_host(&ok).unwrap(), "a.example:81");
        let http10 = parts(http::Version::HTTP_10, "/x", &[]);
        assert_eq!(request_host(&http10), Err(HostError::Missing));
    }

    #[test]
    fn an_http2_authority_and_host_must_agree() {
        let agree = parts(http::Version::HTTP_2, "https://a.example/c", &["A.example"]);
        assert_eq!(request_host(&agree).unwrap(), "a.example");
        let alone = parts(http::Version::HTTP_2, "https://a.example/c", &[]);
        assert_eq!(request_host(&alone).unwrap(), "a.example");
        let differ = parts(http::Version::HTTP_2, "https://a.example/c", &["b.example"]);
        assert_eq!(request_host(&differ), Err(HostError::Conflicting));
        // Compared as RFC 3986 §6.2 normalizes: the default port may be written or not.
        let default_port = parts(
            http::Version::HTTP_2,
            "https://a.example:443/c",
            &["a.example"],
        );
        assert_eq!(request_host(&default_port).unwrap(), "a.example:443");
        let empty_port = parts(http::Version::HTTP_2, "http://a.example/c", &["A.EXAMPLE:"]);
        assert_eq!(request_host(&empty_port).unwrap(), "a.example");
        let other_port = parts(
            http::Version::HTTP_2,
            "https://a.example/c",
            &["a.example:8443"],
        );
        assert_eq!(request_host(&other_port), Err(HostError::Conflicting));
        let host_only = parts(http::Version::HTTP_2, "/c", &["b.example"]);
        assert_eq!(request_host(&host_only).unwrap(), "b.example");
    }

    #[test]
    fn names_with_underscores_are_found_and_removed() {
        let mut map = headers(&[
            ("content_length", "5"),
            ("x-a", "1"),
            ("transfer_encoding", "chunked"),
            ("transfer_encoding", "again"),
            ("x_b", "2"),
        ]);
        let scan = HeaderScan::of(&map);
        assert!(scan.underscored);
        remove_underscored(&mut map);
        assert_eq!(map.len(), 1, "{map:?}");
        assert!(map.contains_key("x-a"));
        assert!(!HeaderScan::of(&map).underscored);
    }

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        let scan = HeaderScan::of(&map);
        remove_hop_by_hop(&mut map, &scan, false);
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map["x-kept"], "yes");
    }

    #[test]
    fn websocket_upgrade_keeps_upgrade_headers_only() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        let scan = HeaderScan::of(&map);
        assert!(is_websocket_upgrade(&map, &scan));
        remove_hop_by_hop(&mut map, &scan, true);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
        assert!(!map.contains_key("keep-alive"));
        let h2c = headers(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(!is_websocket_upgrade(&h2c, &HeaderScan::of(&h2c)));
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(!is_websocket_upgrade(
            &no_connection,
            &HeaderScan::of(&no_connection)
        ));
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut map = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let client = ip_header_value("127.0.0.1".parse().unwrap());
        let scan = HeaderScan::of(&map);
        add_forwarded(
            &mut map,
            &scan,
            &client,
            Some(&HeaderValue::from_static("shop")),
            false,
        );
        assert_eq!(map["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "shop");
        let mut fresh = HeaderMap::new();
        let scan = HeaderScan::of(&fresh);
        add_forwarded(
            &mut fresh,
            &scan,
            &ip_header_value("::1".parse().unwrap()),
            None,
            true,
        );
        assert_eq!(fresh["x-forwarded-for"], "::1");
        assert_eq!(fresh["x-forwarded-proto"], "https");
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
        // The prefix, then the counter: consecutive ids differ by one in their last digits.
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a[..16], b[..16]);
        let (na, nb) = (
            u64::from_str_radix(&a[16..], 16).unwrap(),
            u64::from_str_radix(&b[16..], 16).unwrap(),
        );
        assert_eq!(nb, na.wrapping_add(1));
        let mut out = [0u8; 16];
        hex_into(0x0123_4567_89ab_cdef, &mut out);
        assert_eq!(&out, b"0123456789abcdef");
    }
}
