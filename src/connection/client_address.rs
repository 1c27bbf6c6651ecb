//! Who the client is when trusted proxies stand in front: address ranges (`10.0.0.0/8`), and
//! the walk down a forwarding chain (X-Forwarded-For, or `for=` of RFC 7239 Forwarded) that
//! believes each hop only as far as the hop after it is trusted, as nginx's `set_real_ip_from`
//! with `real_ip_recursive on`. Pure: bytes and addresses in, an address out, no allocation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A block of addresses written as `10.0.0.0/8`, `::1/128`, or one address (`127.0.0.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix_len: u8,
}

impl IpRange {
    /// Parses CIDR notation. Host bits set below the prefix (`10.0.0.1/8`) are refused: such
    /// an entry is usually a typo for a single address or a narrower block.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            format!(
                "invalid address range {text:?}; write an address or a CIDR block, e.g. \"10.0.0.0/8\", \"127.0.0.1\", \"::1/128\""
            )
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(digits) => digits
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max && digits.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("invalid prefix length in {text:?}; it must be 0 to {max}")
                })?,
        };
        let range = Self {
            network,
            prefix_len,
        };
        let masked = range.masked(network);
        if masked != network {
            return Err(format!(
                "{text:?} has bits set past its /{prefix_len} prefix; did you mean \"{masked}/{prefix_len}\"?"
            ));
        }
        Ok(range)
    }

    /// Whether `ip` is in this block. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) counts as
    /// the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }

    /// Whether this block holds every address of its family (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix_len == 0
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask))
            }
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The proxies allowed to say who their client is (a listener's `trusted_proxies`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpRange>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpRange>) -> Self {
        Self(ranges)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy. The lists are short (a few blocks), so a scan it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(ip))
    }

    pub fn ranges(&self) -> &[IpRange] {
        &self.0
    }
}

/// One hop of a forwarding chain: the address a proxy saw its client at, with the port when
/// the entry gave one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl Hop {
    /// As a socket address (port 0 when the entry gave none).
    pub fn socket_addr(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(0))
    }
}

/// The walk down a chain, fed its entries left to right (oldest hop first): each entry is a
/// hop, or `None` for one that names no address (garbage, `unknown`, an obfuscated name).
///
/// Read from the right, starting at the peer (which the caller has found trusted): while the
/// hop reached is trusted, the entry left of it is believed. The client is the first hop that
/// is not trusted; when every hop is trusted, the leftmost; when an entry names no address,
/// the hop right of it, the last one known (nginx's choice too). Fed left to right, the answer
/// is kept as the last untrusted entry, the last entry naming no address and the entry after
/// it, so the walk needs no memory of the whole chain.
pub struct ChainWalk<'t> {
    trusted: &'t TrustedProxies,
    entries: usize,
    leftmost: Option<Hop>,
    last_untrusted: Option<(usize, Hop)>,
    last_unknown: Option<usize>,
    after_unknown: Option<Hop>,
}

impl<'t> ChainWalk<'t> {
    pub fn new(trusted: &'t TrustedProxies) -> Self {
        Self {
            trusted,
            entries: 0,
            leftmost: None,
            last_untrusted: None,
            last_unknown: None,
            after_unknown: None,
        }
    }

    pub fn push(&mut self, entry: Option<Hop>) {
        let index = self.entries;
        self.entries += 1;
        let Some(hop) = entry else {
            self.last_unknown = Some(index);
            self.after_unknown = None;
            return;
        };
        if index == 0 {
            self.leftmost = Some(hop);
        }
        if index > 0 && self.last_unknown == Some(index - 1) {
            self.after_unknown = Some(hop);
        }
        if !self.trusted.contains(hop.ip) {
            self.last_untrusted = Some((index, hop));
        }
    }

    /// The client, or `None` when the chain names none past the peer itself (no entries, or
    /// the rightmost names no address).
    pub fn client(&self) -> Option<Hop> {
        match (self.last_untrusted, self.last_unknown) {
            (Some((_, hop)), None) => Some(hop),
            (Some((untrusted, hop)), Some(unknown)) if untrusted > unknown => Some(hop),
            (_, Some(_)) => self.after_unknown,
            (None, None) => self.leftmost,
        }
    }
}

/// The client named by X-Forwarded-For `lines` (in the order received), from a trusted peer.
pub fn client_from_x_forwarded_for<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> Option<Hop> {
    let mut walk = ChainWalk::new(trusted);
    for line in lines {
        for entry in line.split(|&b| b == b',') {
            let entry = trim(entry);
            if !entry.is_empty() {
                walk.push(parse_node(entry));
            }
        }
    }
    walk.client()
}

/// The client named by the `for=` parameters of Forwarded `lines` (RFC 7239), from a trusted
/// peer. An element without `for=`, or with it twice, names no address.
pub fn client_from_forwarded<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> Option<Hop> {
    let mut walk = ChainWalk::new(trusted);
    for line in lines {
        for element in split_unquoted(line, b',') {
            if trim(element).is_empty() {
                continue;
            }
            walk.push(forwarded_for_of(element));
        }
    }
    walk.client()
}

/// The node of one Forwarded element's `for=` parameter.
fn forwarded_for_of(element: &[u8]) -> Option<Hop> {
    let mut node = None;
    let mut seen = false;
    for pair in split_unquoted(element, b';') {
        let pair = trim(pair);
        let Some(equals) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !trim(&pair[..equals]).eq_ignore_ascii_case(b"for") {
            continue;
        }
        if seen {
            // RFC 7239 §4: a parameter occurs once per element; two are not to be chosen from.
            return None;
        }
        seen = true;
        let value = trim(&pair[equals + 1..]);
        let value = match value {
            [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => inner,
            [b'"', ..] => return None,
            value => value,
        };
        node = parse_node(value);
    }
    node
}

/// A chain entry as an address: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`. An obfuscated port (`_abc`, RFC 7239 §6.3) leaves the address without
/// one; `unknown`, an obfuscated name or anything else names none.
pub fn parse_node(entry: &[u8]) -> Option<Hop> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Hop { ip, port: None });
    }
    let (ip, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?), port)
    } else {
        let (host, port) = text.rsplit_once(':')?;
        (IpAddr::V4(host.parse::<Ipv4Addr>().ok()?), Some(port))
    };
    let port = match port {
        None => None,
        Some(port) if port.starts_with('_') => None,
        Some(port) => Some(parse_port(port)?),
    };
    Some(Hop { ip, port })
}

/// 1 to 5 decimal digits, at most 65535.
fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// `bytes` split at each `separator` outside a quoted string.
fn split_unquoted(bytes: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in current.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == separator && !quoted {
                rest = Some(&current[i + 1..]);
                return Some(&current[..i]);
            }
        }
        rest = None;
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| IpRange::parse(r).unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn xff(lines: &[&str], trusted: &TrustedProxies) -> Option<IpAddr> {
        client_from_x_forwarded_for(lines.iter().map(|l| l.as_bytes()), trusted).map(|h| h.ip)
    }

    fn forwarded(lines: &[&str], trusted: &TrustedProxies) -> Option<Hop> {
        client_from_forwarded(lines.iter().map(|l| l.as_bytes()), trusted)
    }

    #[test]
    fn ranges_parse_cidr_and_single_addresses() {
        let range = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(range.contains(ip("10.255.0.1")));
        assert!(!range.contains(ip("11.0.0.1")));
        assert!(!range.contains(ip("::1")), "another family never matches");
        let single = IpRange::parse("127.0.0.1").unwrap();
        assert!(single.contains(ip("127.0.0.1")));
        assert!(!single.contains(ip("127.0.0.2")));
        let v6 = IpRange::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(IpRange::parse("::1/128").unwrap().contains(ip("::1")));
        let everything = IpRange::parse("0.0.0.0/0").unwrap();
        assert!(everything.is_everything());
        assert!(everything.contains(ip("203.0.113.9")));
        assert!(IpRange::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert_eq!(
            IpRange::parse(" 192.168.0.0/16 ").unwrap().to_string(),
            "192.168.0.0/16"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_matches_its_ipv4_block() {
        let range = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(range.contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        for (text, says) in [
            ("10.0.0.0/33", "prefix length"),
            ("::/129", "prefix length"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0/8", "invalid address range"),
            ("localhost", "invalid address range"),
            ("", "invalid address range"),
            ("10.0.0.1/8", "did you mean \"10.0.0.0/8\""),
            ("2001:db8::1/32", "did you mean \"2001:db8::/32\""),
        ] {
            let error = IpRange::parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn x_forwarded_for_gives_the_rightmost_untrusted_entry() {
        let lb = trusted(&["10.0.0.0/8"]);
        // A client's own entry (spoofed) stays left of what the trusted proxy appended.
        assert_eq!(
            xff(&["1.1.1.1, 203.0.113.7, 10.0.0.2"], &lb),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(xff(&["203.0.113.7"], &lb), Some(ip("203.0.113.7")));
        // Several lines are one list, in order.
        assert_eq!(
            xff(&["1.1.1.1", "203.0.113.7,10.0.0.3", "10.0.0.2"], &lb),
            Some(ip("203.0.113.7"))
        );
    }

    #[test]
    fn x_forwarded_for_of_only_trusted_hops_gives_the_leftmost() {
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(xff(&["10.0.0.9, 10.0.0.2"], &lb), Some(ip("10.0.0.9")));
    }

    #[test]
    fn an_empty_chain_names_no_one_past_the_peer() {
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(xff(&[], &lb), None);
        assert_eq!(xff(&[""], &lb), None);
        assert_eq!(xff(&[" , ,"], &lb), None);
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_address_known() {
        let lb = trusted(&["10.0.0.0/8"]);
        // The rightmost entry is garbage: the peer stays the client.
        assert_eq!(xff(&["203.0.113.7, bogus"], &lb), None);
        assert_eq!(xff(&["203.0.113.7, unknown"], &lb), None);
        // Garbage behind a trusted hop: that hop is as far as the chain can be believed.
        assert_eq!(
            xff(&["203.0.113.7, junk, 10.0.0.2"], &lb),
            Some(ip("10.0.0.2"))
        );
        // Garbage left of the untrusted client: never reached.
        assert_eq!(
            xff(&["junk, 203.0.113.7, 10.0.0.2"], &lb),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(xff(&["999.1.1.1, 10.0.0.2"], &lb), Some(ip("10.0.0.2")));
        assert_eq!(xff(&["\u{e9}t\u{e9}, 10.0.0.2"], &lb), Some(ip("10.0.0.2")));
    }

    #[test]
    fn x_forwarded_for_entries_may_carry_ports_and_brackets() {
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            xff(&["203.0.113.7:4711, 10.0.0.2"], &lb),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(xff(&["[2001:db8::7]:4711"], &lb), Some(ip("2001:db8::7")));
        assert_eq!(xff(&["2001:db8::7"], &lb), Some(ip("2001:db8::7")));
        assert_eq!(xff(&["[2001:db8::7]"], &lb), Some(ip("2001:db8::7")));
        assert_eq!(xff(&["203.0.113.7:99999"], &lb), None);
        assert_eq!(xff(&["[2001:db8::7]x"], &lb), None);
    }

    #[test]
    fn forwarded_takes_for_of_each_element_from_the_right() {
        let lb = trusted(&["10.0.0.0/8", "2001:db8:cafe::/48"]);
        assert_eq!(
            forwarded(
                &["for=192.0.2.60;proto=http;by=203.0.113.43, for=10.0.0.2"],
                &lb
            ),
            Some(Hop {
                ip: ip("192.0.2.60"),
                port: None
            })
        );
        // Names and values are case-insensitive and may be quoted.
        assert_eq!(
            forwarded(&["For=\"198.51.100.17\";proto=https"], &lb).map(|h| h.ip),
            Some(ip("198.51.100.17"))
        );
    }

    #[test]
    fn forwarded_ipv6_comes_bracketed_and_quoted_with_a_port() {
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            forwarded(&["for=\"[2001:db8:cafe::17]:4711\""], &lb),
            Some(Hop {
                ip: ip("2001:db8:cafe::17"),
                port: Some(4711)
            })
        );
        assert_eq!(
            forwarded(&["for=\"[2001:db8:cafe::17]\", for=10.1.1.1"], &lb).map(|h| h.ip),
            Some(ip("2001:db8:cafe::17"))
        );
    }

    #[test]
    fn forwarded_obfuscated_and_unknown_nodes_name_no_address() {
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(forwarded(&["for=_hidden"], &lb), None);
        assert_eq!(forwarded(&["for=unknown"], &lb), None);
        assert_eq!(
            forwarded(&["for=203.0.113.7, for=_gazonk, for=10.0.0.2"], &lb).map(|h| h.ip),
            Some(ip("10.0.0.2"))
        );
        // An obfuscated port leaves the address known.
        assert_eq!(
            forwarded(&["for=\"203.0.113.7:_abc\""], &lb),
            Some(Hop {
                ip: ip("203.0.113.7"),
                port: None
            })
        );
    }

    #[test]
    fn forwarded_elements_without_one_for_name_no_address() {
        let lb = trusted(&["10.0.0.0/8"]);
        assert_eq!(forwarded(&["proto=https;by=10.0.0.1"], &lb), None);
        assert_eq!(forwarded(&["for=203.0.113.7;for=198.51.100.1"], &lb), None);
        // A quoted comma or semicolon does not split the element.
        assert_eq!(
            forwarded(&["by=\"a,b;c\";for=203.0.113.7"], &lb).map(|h| h.ip),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(forwarded(&["for=\"203.0.113.7"], &lb), None);
        assert_eq!(forwarded(&["for=\"20\\3.0.113.7\""], &lb), None);
    }

    #[test]
    fn nothing_is_believed_past_an_untrusted_hop() {
        // Only loopback is trusted: a chain whose rightmost entry is not loopback ends there,
        // whatever stands left of it.
        let local = trusted(&["127.0.0.1"]);
        assert_eq!(
            xff(&["127.0.0.1, 198.51.100.1, 203.0.113.7"], &local),
            Some(ip("203.0.113.7"))
        );
    }

    /// Chain entries as written by proxies and by clients who make things up.
    fn entry() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
            any::<[u8; 16]>().prop_map(|b| format!("[{}]:80", std::net::Ipv6Addr::from(b))),
            prop::sample::select(vec![
                "10.0.0.1",
                "10.9.9.9",
                "unknown",
                "_x",
                "\"",
                "\\",
                ";",
                "=",
                "for=",
                "[",
                "]",
                ":",
                "",
                " ",
                "[::1",
                "1.2.3.4:",
                "1.2.3.4:_p",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,12}",
        ]
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(entry(), 0..12).prop_map(|e| e.join(", ").into_bytes()),
            prop::collection::vec(entry(), 0..12).prop_map(|e| {
                e.iter()
                    .map(|e| format!("for={e};proto=http"))
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes()
            }),
            prop::collection::vec(any::<u8>(), 0..256),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// No header panics the walk, and whatever it names is an entry of the chain that is
        /// not behind an untrusted hop.
        #[test]
        fn chains_never_panic_and_name_an_entry_of_their_own(
            lines in prop::collection::vec(line(), 0..4),
        ) {
            let lb = trusted(&["10.0.0.0/8"]);
            let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            for client in [
                client_from_x_forwarded_for(lines.iter().copied(), &lb),
                client_from_forwarded(lines.iter().copied(), &lb),
            ] {
                // An address is only ever taken from the header's own text (checked for
                // IPv4: IPv6 may be written in another, equal form).
                if let Some(Hop { ip: IpAddr::V4(v4), .. }) = client {
                    let joined = lines.concat();
                    let text = v4.to_string();
                    prop_assert!(
                        joined.windows(text.len()).any(|w| w == text.as_bytes()),
                        "{text} not in {joined:?}"
                    );
                }
            }
        }

        /// Fed directly, the walk agrees with the plain right-to-left reading.
        #[test]
        fn the_walk_agrees_with_reading_from_the_right(
            entries in prop::collection::vec(
                prop::option::weighted(0.8, prop::sample::select(vec![
                    "10.0.0.1", "10.0.0.2", "203.0.113.7", "198.51.100.1",
                ])),
                0..10,
            ),
        ) {
            let lb = trusted(&["10.0.0.0/8"]);
            let hops: Vec<Option<Hop>> = entries
                .iter()
                .map(|e| e.map(|e| Hop { ip: ip(e), port: None }))
                .collect();
            let mut walk = ChainWalk::new(&lb);
            for hop in &hops {
                walk.push(*hop);
            }
            // From the right: the peer (trusted) first, then each entry while trusted.
            let mut reached: Option<Hop> = None;
            for hop in hops.iter().rev() {
                if reached.is_some_and(|r| !lb.contains(r.ip)) {
                    break;
                }
                match hop {
                    Some(hop) => reached = Some(*hop),
                    None => break,
                }
            }
            prop_assert_eq!(walk.client(), reached);
        }
    }
}
