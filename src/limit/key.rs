//! What a limit counts requests by, compiled from its `key`, and the per-request hash of it.
//! The hash is keyed by a secret drawn at start, so that clients cannot aim many keys at one
//! slot of the table.

use crate::config::KeyPart;
use http::HeaderMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;

/// What a request offers to key it by.
pub struct KeySource<'a> {
    pub client: IpAddr,
    pub headers: &'a HeaderMap,
    pub route: &'a str,
}

#[derive(Debug)]
pub struct RequestKey {
    parts: Vec<KeyPart>,
    ipv6_prefix: u8,
    secret: RandomState,
}

impl RequestKey {
    pub fn new(parts: Vec<KeyPart>, ipv6_prefix: u8) -> Self {
        Self {
            parts,
            ipv6_prefix: ipv6_prefix.clamp(1, 128),
            secret: RandomState::new(),
        }
    }

    /// The request's key, or `None` when every part of it is empty (a missing header or
    /// cookie): such requests are not limited, as in nginx.
    pub fn hash(&self, source: &KeySource<'_>) -> Option<u64> {
        self.hash_with(source, self.secret.build_hasher())
    }

    /// The key as every process computes it (no secret): what a shared limit names its key
    /// by in Redis. SHA-1 (not for secrecy: a hash that stays the same across builds and
    /// machines).
    pub fn stable_hash(&self, source: &KeySource<'_>) -> Option<u64> {
        self.hash_with(source, StableHasher(sha1::Sha1::default()))
    }

    #[inline(always)]
    fn hash_with<H: Hasher>(&self, source: &KeySource<'_>, mut hasher: H) -> Option<u64> {
        let mut empty = true;
        for (index, part) in self.parts.iter().enumerate() {
            // Parts are told apart, so that ("ab", "c") and ("a", "bc") differ.
            hasher.write_usize(index);
            match part {
                KeyPart::ClientIp => {
                    empty = false;
                    match source.client.to_canonical() {
                        IpAddr::V4(v4) => hasher.write(&v4.octets()),
                        IpAddr::V6(v6) => {
                            let bits = u128::from(v6);
                            let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                            hasher.write_u128(bits & mask);
                        }
                    }
                }
                KeyPart::Route => {
                    empty = false;
                    hasher.write(source.route.as_bytes());
                }
                KeyPart::Header(name) => {
                    for value in source.headers.get_all(name) {
                        empty &= value.is_empty();
                        hasher.write(value.as_bytes());
                        hasher.write_u8(0xff);
                    }
                }
                KeyPart::Cookie(name) => {
                    if let Some(value) = crate::http1::cookie(source.headers, name) {
                        empty &= value.is_empty();
                        hasher.write(value);
                    }
                }
            }
        }
        (!empty).then(|| hasher.finish())
    }
}

/// SHA-1 behind `Hasher`, with integers written little-endian whatever the machine.
struct StableHasher(sha1::Sha1);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        use sha1::Digest as _;
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
    fn write(&mut self, bytes: &[u8]) {
        use sha1::Digest as _;
        self.0.update(bytes);
    }
    fn write_usize(&mut self, n: usize) {
        self.write(&(n as u64).to_le_bytes());
    }
    fn write_u128(&mut self, n: u128) {
        self.write(&n.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn source<'a>(client: &str, headers: &'a HeaderMap) -> KeySource<'a> {
        KeySource {
            client: client.parse().unwrap(),
            headers,
            route: "api",
        }
    }

    #[test]
    fn client_addresses_key_apart_and_ipv6_by_prefix() {
        let none = HeaderMap::new();
        let by_ip = RequestKey::new(vec![KeyPart::ClientIp], 128);
        let a = by_ip.hash(&source("192.0.2.1", &none));
        assert_eq!(a, by_ip.hash(&source("192.0.2.1", &none)));
        assert_ne!(a, by_ip.hash(&source("192.0.2.2", &none)));
        assert_eq!(a, by_ip.hash(&source("::ffff:192.0.2.1", &none)));
        assert_ne!(
            by_ip.hash(&source("2001:db8::1", &none)),
            by_ip.hash(&source("2001:db8::2", &none))
        );
        let by_64 = RequestKey::new(vec![KeyPart::ClientIp], 64);
        assert_eq!(
            by_64.hash(&source("2001:db8:0:1::1", &none)),
            by_64.hash(&source("2001:db8:0:1:ffff::2", &none))
        );
        assert_ne!(
            by_64.hash(&source("2001:db8:0:1::1", &none)),
            by_64.hash(&source("2001:db8:0:2::1", &none))
        );
    }

    #[test]
    fn headers_and_cookies_key_requests_and_their_absence_does_not() {
        let by_header = RequestKey::new(
            vec![KeyPart::Header(http::HeaderName::from_static("x-api-key"))],
            128,
        );
        let by_cookie = RequestKey::new(vec![KeyPart::Cookie("session".into())], 128);
        let mut headers = HeaderMap::new();
        assert_eq!(by_header.hash(&source("192.0.2.1", &headers)), None);
        assert_eq!(by_cookie.hash(&source("192.0.2.1", &headers)), None);
        headers.insert("x-api-key", HeaderValue::from_static("k1"));
        headers.append("cookie", HeaderValue::from_static("theme=dark; session=s1"));
        let first = by_header.hash(&source("192.0.2.1", &headers));
        assert!(first.is_some());
        // The client's address is not part of this key.
        assert_eq!(first, by_header.hash(&source("192.0.2.9", &headers)));
        let cookie_key = by_cookie.hash(&source("192.0.2.1", &headers));
        assert!(cookie_key.is_some());
        headers.insert("cookie", HeaderValue::from_static("session=s2"));
        assert_ne!(cookie_key, by_cookie.hash(&source("192.0.2.1", &headers)));
        headers.insert("cookie", HeaderValue::from_static("sessionx=s1; a=session"));
        assert_eq!(by_cookie.hash(&source("192.0.2.1", &headers)), None);
    }

    #[test]
    fn combined_keys_need_every_part_to_match() {
        let combined = RequestKey::new(
            vec![
                KeyPart::ClientIp,
                KeyPart::Header(http::HeaderName::from_static("x-user")),
            ],
            128,
        );
        let mut alice = HeaderMap::new();
        alice.insert("x-user", HeaderValue::from_static("alice"));
        let mut bob = HeaderMap::new();
        bob.insert("x-user", HeaderValue::from_static("bob"));
        let a1 = combined.hash(&source("192.0.2.1", &alice));
        assert_ne!(a1, combined.hash(&source("192.0.2.1", &bob)));
        assert_ne!(a1, combined.hash(&source("192.0.2.2", &alice)));
        // The address alone still keys a request without the header.
        assert!(
            combined
                .hash(&source("192.0.2.1", &HeaderMap::new()))
                .is_some()
        );
        let route = RequestKey::new(vec![KeyPart::Route], 128);
        assert_eq!(
            route.hash(&source("192.0.2.1", &alice)),
            route.hash(&source("192.0.2.2", &bob))
        );
    }

    #[test]
    fn the_stable_hash_is_the_same_in_every_process_and_keys_apart() {
        let headers = HeaderMap::new();
        let one = RequestKey::new(vec![KeyPart::ClientIp], 128);
        let other = RequestKey::new(vec![KeyPart::ClientIp], 128);
        let a = source("192.0.2.1", &headers);
        let b = source("192.0.2.2", &headers);
        assert_eq!(one.stable_hash(&a), other.stable_hash(&a));
        assert_ne!(one.stable_hash(&a), one.stable_hash(&b));
        // Pinned: a change would split the count of replicas running different builds.
        assert_eq!(one.stable_hash(&a), Some(2_907_734_265_163_623_537));
    }
}
