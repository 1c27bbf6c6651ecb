//! The PROXY protocol header (haproxy's proxy-protocol.txt, versions 1 and 2) that a TCP load
//! balancer (haproxy `send-proxy`, AWS NLB, nginx `proxy_protocol on`) puts before the client's
//! bytes to say whom it accepted the connection from. Pure and incremental: call again with
//! more bytes after `Parsed::Incomplete`; nothing is allocated, and no header is taken longer
//! than `MAX_HEADER_LEN` (nginx's bound), so a reader never needs more room than that.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest header accepted, version 2's TLVs included (nginx's
/// `NGX_PROXY_PROTOCOL_MAX_HEADER`); version 1 lines are at most `V1_MAX_LEN`.
pub const MAX_HEADER_LEN: usize = 4096;
/// The longest version 1 line, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_LEN: usize = 16;

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer relays a client: its address and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The connection is the balancer's own (version 2 LOCAL: a health check), or the balancer
    /// does not know the client (version 1 UNKNOWN, version 2 UNSPEC or a UNIX socket): the
    /// socket's address stands.
    Local,
}

impl ProxyHeader {
    /// The client's address, when the header names one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `len` bytes long; what follows is the client's.
    Complete { header: ProxyHeader, len: usize },
    /// The bytes so far begin a header; `total` is its length once known (version 2).
    Incomplete { total: Option<usize> },
}

/// Why bytes are not a PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Neither signature: the peer speaks without a header (or is not a balancer at all).
    Missing,
    /// Longer than `V1_MAX_LEN` (version 1) or `MAX_HEADER_LEN` (version 2).
    TooLong,
    /// A version 1 line that does not follow the grammar.
    BadV1Line,
    /// A version 2 header of another version, an unknown command, family or transport, or
    /// an address block shorter than its family needs.
    BadV2Header,
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyHeaderError::Missing => "no PROXY protocol header",
            ProxyHeaderError::TooLong => "PROXY protocol header too long",
            ProxyHeaderError::BadV1Line => "malformed PROXY protocol v1 line",
            ProxyHeaderError::BadV2Header => "malformed PROXY protocol v2 header",
        })
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Reads the header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if starts_like(bytes, V2_SIGNATURE) {
        parse_v2(bytes)
    } else if starts_like(bytes, V1_PREFIX) {
        parse_v1(bytes)
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

/// Whether `bytes` and `signature` agree as far as both go.
fn starts_like(bytes: &[u8], signature: &[u8]) -> bool {
    let seen = bytes.len().min(signature.len());
    bytes[..seen] == signature[..seen]
}

fn parse_v1(bytes: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return if bytes.len() >= V1_MAX_LEN {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parsed::Incomplete { total: None })
        };
    };
    let line = std::str::from_utf8(&bytes[V1_PREFIX.len()..end])
        .map_err(|_| ProxyHeaderError::BadV1Line)?;
    let header = v1_line(line).ok_or(ProxyHeaderError::BadV1Line)?;
    Ok(Parsed::Complete {
        header,
        len: end + 2,
    })
}

/// The part of a version 1 line after `PROXY `: `TCP4 src dst sport dport`, `TCP6 …`, or
/// `UNKNOWN` with anything after it.
fn v1_line(line: &str) -> Option<ProxyHeader> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Some(ProxyHeader::Local);
    }
    let mut fields = line.split(' ');
    let family = fields.next()?;
    let (source, destination): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            fields.next()?.parse::<Ipv4Addr>().ok()?.into(),
            fields.next()?.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "TCP6" => (
            fields.next()?.parse::<Ipv6Addr>().ok()?.into(),
            fields.next()?.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    let source_port = v1_port(fields.next()?)?;
    let destination_port = v1_port(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(ProxyHeader::Proxied {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    })
}

/// A port as version 1 writes it: decimal digits, 0 to 65535.
fn v1_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(bytes: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(fixed) = bytes.get(..V2_FIXED_LEN) else {
        return Ok(Parsed::Incomplete { total: None });
    };
    let version_command = fixed[12];
    let family_transport = fixed[13];
    let address_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let total = V2_FIXED_LEN + address_len;
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::BadV2Header);
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyHeaderError::BadV2Header),
    };
    if total > MAX_HEADER_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    let Some(block) = bytes.get(V2_FIXED_LEN..total) else {
        return Ok(Parsed::Incomplete { total: Some(total) });
    };
    let header = if local {
        // A health check of the balancer's own: the address block means nothing.
        ProxyHeader::Local
    } else {
        v2_addresses(family_transport, block)?
    };
    Ok(Parsed::Complete { header, len: total })
}

/// The address block of a version 2 PROXY command; whatever follows the addresses (TLVs) is
/// skipped.
fn v2_addresses(family_transport: u8, block: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    const UNSPEC: u8 = 0x0;
    const INET: u8 = 0x1;
    const INET6: u8 = 0x2;
    const UNIX: u8 = 0x3;
    const STREAM: u8 = 0x1;
    let bad = ProxyHeaderError::BadV2Header;
    match (family_transport >> 4, family_transport & 0x0f) {
        (UNSPEC, _) => Ok(ProxyHeader::Local),
        // Only a stream can stand for this TCP connection.
        (INET | INET6 | UNIX, transport) if transport != STREAM => Err(bad),
        (UNIX, _) => {
            if block.len() < 216 {
                return Err(bad);
            }
            Ok(ProxyHeader::Local)
        }
        (INET, _) => {
            let a = block.get(..12).ok_or(bad)?;
            let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (INET6, _) => {
            let a = block.get(..36).ok_or(bad)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => Err(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    /// A version 2 header as a balancer writes it (`tlvs` after the addresses).
    fn v2(command: u8, header: &ProxyHeader, tlvs: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        let family = match header {
            ProxyHeader::Proxied {
                source,
                destination,
            } => {
                match (source.ip(), destination.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        block.extend_from_slice(&s.octets());
                        block.extend_from_slice(&d.octets());
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        block.extend_from_slice(&s.octets());
                        block.extend_from_slice(&d.octets());
                    }
                    _ => panic!("one family per header"),
                }
                block.extend_from_slice(&source.port().to_be_bytes());
                block.extend_from_slice(&destination.port().to_be_bytes());
                if source.is_ipv4() { 0x11 } else { 0x21 }
            }
            ProxyHeader::Local => 0x00,
        };
        block.extend_from_slice(tlvs);
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&block);
        bytes
    }

    fn v1(header: &ProxyHeader) -> Vec<u8> {
        match header {
            ProxyHeader::Proxied {
                source,
                destination,
            } => format!(
                "PROXY {} {} {} {} {}\r\n",
                if source.is_ipv4() { "TCP4" } else { "TCP6" },
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes(),
            ProxyHeader::Local => b"PROXY UNKNOWN\r\n".to_vec(),
        }
    }

    fn complete(bytes: &[u8]) -> (ProxyHeader, usize) {
        match parse(bytes) {
            Ok(Parsed::Complete { header, len }) => (header, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_lines_name_the_client() {
        let mut bytes =
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n".to_vec();
        let (header, len) = complete(&bytes);
        assert_eq!(header, proxied("192.0.2.7:56324", "198.51.100.1:443"));
        assert_eq!(header.source(), Some(addr("192.0.2.7:56324")));
        assert_eq!(&bytes[len..], b"GET / HTTP/1.1\r\n");
        bytes = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n".to_vec();
        assert_eq!(
            complete(&bytes),
            (
                proxied("[2001:db8::7]:65535", "[2001:db8::1]:80"),
                bytes.len()
            )
        );
    }

    #[test]
    fn v1_unknown_keeps_the_socket_address() {
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (ProxyHeader::Local, 15));
        let line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(complete(line), (ProxyHeader::Local, line.len()));
        assert_eq!(ProxyHeader::Local.source(), None);
    }

    #[test]
    fn v1_lines_off_the_grammar_are_refused() {
        for line in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 1\r\n",
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
            b"PROXY TCP4 192.0.2.777 198.51.100.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY TCP4 \xff 198.51.100.1 1 2\r\n",
        ] {
            assert_eq!(
                parse(line),
                Err(ProxyHeaderError::BadV1Line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn a_v1_line_without_its_end_within_107_bytes_is_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&line), Ok(Parsed::Incomplete { total: None }));
        line.push(b'x');
        assert_eq!(parse(&line), Err(ProxyHeaderError::TooLong));
        // A line whose CRLF is the 106th and 107th byte is still one.
        line.truncate(V1_MAX_LEN - 2);
        line.extend_from_slice(b"\r\n");
        assert_eq!(complete(&line), (ProxyHeader::Local, V1_MAX_LEN));
    }

    #[test]
    fn v2_proxy_over_ipv4_and_ipv6_names_the_client() {
        let header = proxied("192.0.2.7:56324", "198.51.100.1:443");
        let mut bytes = v2(1, &header, &[]);
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(complete(&bytes), (header, 28));
        let header = proxied("[2001:db8::7]:1", "[2001:db8::1]:443");
        assert_eq!(complete(&v2(1, &header, &[])), (header, 52));
    }

    #[test]
    fn v2_tlvs_are_skipped_within_the_bound() {
        let header = proxied("192.0.2.7:56324", "198.51.100.1:443");
        // AWS's VPC endpoint id TLV (0xEA), then padding (NOOP, 0x04).
        let tlvs = b"\xea\x00\x0d\x01vpce-0123456\x04\x00\x02\x00\x00";
        let bytes = v2(1, &header, tlvs);
        assert_eq!(complete(&bytes), (header, bytes.len()));
        let padding = vec![0u8; MAX_HEADER_LEN - 28];
        assert_eq!(complete(&v2(1, &header, &padding)).1, MAX_HEADER_LEN);
        let too_much = vec![0u8; MAX_HEADER_LEN - 27];
        assert_eq!(
            parse(&v2(1, &header, &too_much)[..16]),
            Err(ProxyHeaderError::TooLong),
            "refused from its length alone, before the bytes arrive"
        );
    }

    #[test]
    fn v2_local_and_unspec_keep_the_socket_address() {
        let health_check = v2(0, &proxied("10.0.0.1:1", "10.0.0.2:2"), &[]);
        assert_eq!(complete(&health_check).0, ProxyHeader::Local);
        assert_eq!(
            complete(&v2(1, &ProxyHeader::Local, &[])).0,
            ProxyHeader::Local
        );
    }

    #[test]
    fn v2_headers_off_the_specification_are_refused() {
        let good = v2(1, &proxied("192.0.2.7:1", "198.51.100.1:2"), &[]);
        let with = |at: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[at] = byte;
            bytes
        };
        for bad in [
            with(12, 0x11), // version 1 in a version 2 header
            with(12, 0x22), // command 2
            with(13, 0x12), // INET over DGRAM
            with(13, 0x41), // family 4
            with(15, 11),   // an IPv4 block one byte short
        ] {
            assert_eq!(parse(&bad), Err(ProxyHeaderError::BadV2Header), "{bad:?}");
        }
    }

    #[test]
    fn anything_else_has_no_header() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PRI * HTTP/2.0\r\n",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
        ] {
            assert_eq!(parse(bytes), Err(ProxyHeaderError::Missing), "{bytes:?}");
        }
    }

    #[test]
    fn a_beginning_waits_for_more() {
        assert_eq!(parse(b""), Ok(Parsed::Incomplete { total: None }));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete { total: None }));
        assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Incomplete { total: None }));
        let v2 = v2(1, &proxied("192.0.2.7:1", "198.51.100.1:2"), &[]);
        assert_eq!(parse(&v2[..20]), Ok(Parsed::Incomplete { total: Some(28) }));
    }

    fn header() -> impl Strategy<Value = ProxyHeader> {
        let v4 = (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>(),
        )
            .prop_map(|(s, sp, d, dp)| ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::from(s), sp),
                destination: SocketAddr::new(IpAddr::from(d), dp),
            });
        let v6 = (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
        )
            .prop_map(|(s, sp, d, dp)| ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::from(s), sp),
                destination: SocketAddr::new(IpAddr::from(d), dp),
            });
        prop_oneof![4 => v4, 4 => v6, 1 => Just(ProxyHeader::Local)]
    }

    /// A header as some balancer writes it: version 1, or version 2 with TLVs.
    fn encoded() -> impl Strategy<Value = (ProxyHeader, Vec<u8>)> {
        (
            header(),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(header, version_2, tlvs)| {
                let bytes = if version_2 {
                    v2(1, &header, &tlvs)
                } else {
                    v1(&header)
                };
                (header, bytes)
            })
    }

    /// Random bytes, bytes behind a signature, and real headers with a few bytes changed.
    fn any_input() -> impl Strategy<Value = Vec<u8>> {
        let behind_signature = (
            prop::sample::select(vec![
                V1_PREFIX.to_vec(),
                b"PROXY TCP4 ".to_vec(),
                b"PROXY TCP6 ".to_vec(),
                V2_SIGNATURE.to_vec(),
            ]),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(signature, rest)| [signature, rest].concat());
        let mutated = (
            encoded(),
            prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        )
            .prop_map(|((_, mut bytes), changes)| {
                for (at, byte) in changes {
                    let len = bytes.len();
                    bytes[at % len] = byte;
                }
                bytes
            });
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            behind_signature,
            mutated,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// No input panics the parser, and whatever it answers stays within the input and the
        /// bound: a reader never needs more than `MAX_HEADER_LEN` bytes of room.
        #[test]
        fn no_input_panics_or_claims_past_the_bound(input in any_input(), cut in any::<usize>()) {
            for bytes in [&input[..], &input[..cut % (input.len() + 1)]] {
                match parse(bytes) {
                    Ok(Parsed::Complete { len, .. }) => {
                        prop_assert!(len <= bytes.len() && len <= MAX_HEADER_LEN);
                    }
                    Ok(Parsed::Incomplete { total }) => {
                        prop_assert!(bytes.len() < MAX_HEADER_LEN);
                        if let Some(total) = total {
                            prop_assert!(bytes.len() < total && total <= MAX_HEADER_LEN);
                        }
                    }
                    Err(_) => {}
                }
            }
        }

        /// Every header a balancer writes reads back as what it said, with the client's bytes
        /// after it left alone, and every beginning of it waits for more rather than failing.
        #[test]
        fn headers_read_back_and_their_beginnings_wait(
            (header, bytes) in encoded(),
            after in prop::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut stream = bytes.clone();
            stream.extend_from_slice(&after);
            prop_assert_eq!(parse(&stream), Ok(Parsed::Complete { header, len: bytes.len() }));
            for end in 0..bytes.len() {
                prop_assert!(
                    matches!(parse(&bytes[..end]), Ok(Parsed::Incomplete { .. })),
                    "{:?} of {:?}", end, bytes
                );
            }
        }
    }
}
