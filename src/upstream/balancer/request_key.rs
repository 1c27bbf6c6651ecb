//! The key a request is hashed by for consistent hashing, read from its head as configured by
//! `hash_key`: pure, allocation-free, and run only for upstreams that hash.

use super::consistent_hash::hash_bytes;
use crate::config::HashKey;
use std::net::IpAddr;

/// The hash of `request`'s key, or `None` when the request has none (no such header or cookie,
/// an empty one, or no client for `client_ip`: gatehouse's own cache refreshes): such a request
/// is balanced round robin rather than all sent to the one server the empty key hashes to.
pub fn key_hash(
    key: &HashKey,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    client: Option<IpAddr>,
) -> Option<u64> {
    let bytes: &[u8] = match key {
        HashKey::ClientIp => return client.map(ip_hash),
        HashKey::Header(name) => headers.get(name)?.as_bytes(),
        HashKey::Cookie(name) => crate::http1::cookie(headers, name)?,
        HashKey::Path => uri.path().as_bytes(),
        HashKey::Uri => uri
            .path_and_query()
            .map_or(uri.path(), |target| target.as_str())
            .as_bytes(),
    };
    (!bytes.is_empty()).then(|| hash_bytes(bytes))
}

/// An IPv4 client is the same key whether it came over IPv4 or as an IPv4-mapped IPv6 address
/// (a dual-stack listener).
fn ip_hash(client: IpAddr) -> u64 {
    match client.to_canonical() {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn hash(key: &str, request: &http::request::Parts) -> Option<u64> {
        key_hash(
            &HashKey::parse(key).unwrap(),
            &request.uri,
            &request.headers,
            "10.1.2.3".parse().ok(),
        )
    }

    #[test]
    fn a_header_key_is_its_first_value() {
        let alice = parts("/", &[("x-user", "alice")]);
        assert_eq!(hash("header:X-User", &alice), Some(hash_bytes(b"alice")));
        let twice = parts("/", &[("x-user", "alice"), ("x-user", "bob")]);
        assert_eq!(hash("header:x-user", &twice), Some(hash_bytes(b"alice")));
        assert_eq!(hash("header:x-user", &parts("/", &[])), None);
        assert_eq!(hash("header:x-user", &parts("/", &[("x-user", "")])), None);
    }

    #[test]
    fn a_cookie_key_is_found_in_any_cookie_field() {
        let request = parts(
            "/",
            &[
                ("cookie", "theme=dark; session=abc123"),
                ("cookie", "lang=en"),
            ],
        );
        assert_eq!(
            hash("cookie:session", &request),
            Some(hash_bytes(b"abc123"))
        );
        assert_eq!(hash("cookie:lang", &request), Some(hash_bytes(b"en")));
        // A name is matched whole, not as a prefix or suffix of another.
        assert_eq!(hash("cookie:sess", &request), None);
        assert_eq!(hash("cookie:ion", &request), None);
        assert_eq!(
            hash("cookie:session", &parts("/", &[("cookie", "session=")])),
            None
        );
        assert_eq!(hash("cookie:session", &parts("/", &[])), None);
    }

    #[test]
    fn path_leaves_out_the_query_and_uri_keeps_it() {
        let a = parts("/orders/7?page=1", &[]);
        let b = parts("/orders/7?page=2", &[]);
        assert_eq!(hash("path", &a), hash("path", &b));
        assert_eq!(hash("path", &a), Some(hash_bytes(b"/orders/7")));
        assert_ne!(hash("uri", &a), hash("uri", &b));
        assert_eq!(hash("uri", &a), Some(hash_bytes(b"/orders/7?page=1")));
    }

    #[test]
    fn an_ipv4_client_is_one_key_over_either_stack() {
        let request = parts("/", &[]);
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let key = HashKey::ClientIp;
        assert_eq!(
            key_hash(&key, &request.uri, &request.headers, Some(v4)),
            key_hash(&key, &request.uri, &request.headers, Some(mapped))
        );
        assert_ne!(
            key_hash(&key, &request.uri, &request.headers, Some(v4)),
            key_hash(
                &key,
                &request.uri,
                &request.headers,
                "192.0.2.8".parse().ok()
            )
        );
        assert_eq!(
            key_hash(&key, &request.uri, &request.headers, None),
            None,
            "no client, no key"
        );
    }
}
