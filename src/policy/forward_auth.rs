//! Forward authentication, the parts that are pure: the head of the check sent to the
//! authentication service, what its status means, the headers copied from its answer, and
//! the short, bounded memory of admissions by a key of the request. The proxy sends the check.

use crate::config::{ForwardAuthConfig, KeyPart};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use prometheus::IntCounter;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Admissions remembered at most, per route (past it the least used are forgotten).
const CACHE_ENTRIES: usize = 10_000;

pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A compiled `[forward_auth.NAME]` as one route uses it.
pub struct ForwardAuth {
    pub name: String,
    pub upstream: String,
    pub uri: PathAndQuery,
    pub request_headers: Vec<HeaderName>,
    pub copy_headers: Vec<HeaderName>,
    pub timeout: Duration,
    pub cache_for: Duration,
    cache_key: Vec<KeyPart>,
    cache: Option<quick_cache::sync::Cache<Box<[u8]>, Arc<Admission>>>,
    pub outcomes: Outcomes,
}

/// The route's counters, by outcome.
pub struct Outcomes {
    pub allowed: IntCounter,
    pub denied: IntCounter,
    pub error: IntCounter,
    pub cached: IntCounter,
}

/// A remembered admission: the headers to copy, and until when it holds.
#[derive(Debug)]
pub struct Admission {
    pub copies: Vec<(HeaderName, HeaderValue)>,
    pub until: Instant,
}

/// What the authentication service's status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the request goes on.
    Allow,
    /// 401 or 403: the client gets the service's answer.
    Deny,
    /// Anything else: the client gets 500.
    Error,
}

pub fn verdict(status: StatusCode) -> Verdict {
    if status.is_success() {
        Verdict::Allow
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        Verdict::Deny
    } else {
        Verdict::Error
    }
}

/// The headers of the service's 401/403 that reach the client (with its body).
pub const DENIAL_HEADERS: [HeaderName; 4] = [
    header::WWW_AUTHENTICATE,
    header::LOCATION,
    header::CONTENT_TYPE,
    header::SET_COOKIE,
];

/// What the check knows of the client's request.
pub struct Original<'a> {
    pub method: &'a Method,
    /// The request target as routed (normal path, query).
    pub uri: &'a str,
    pub headers: &'a HeaderMap,
    pub host: &'a HeaderValue,
    /// The connection's peer as this hop's X-Forwarded-For entry.
    pub peer: &'a HeaderValue,
    pub https: bool,
}

impl ForwardAuth {
    /// Compiles a validated `[forward_auth.NAME]` with the route's counters.
    pub fn compile(
        name: &str,
        settings: &ForwardAuthConfig,
        outcomes: Outcomes,
    ) -> Result<Self, String> {
        let names = |list: &[toml::Spanned<String>]| -> Result<Vec<HeaderName>, String> {
            list.iter()
                .map(|h| {
                    HeaderName::from_bytes(h.get_ref().as_bytes())
                        .map_err(|_| format!("{:?} is not a header name", h.get_ref()))
                })
                .collect()
        };
        let cache_key = settings.cache_parts()?;
        let cache_for = settings.cache_for.0;
        let cache = (!cache_for.is_zero() && !cache_key.is_empty())
            .then(|| quick_cache::sync::Cache::new(CACHE_ENTRIES));
        Ok(Self {
            name: name.to_owned(),
            upstream: settings.upstream.get_ref().clone(),
            uri: PathAndQuery::try_from(settings.uri.get_ref().as_str())
                .map_err(|e| format!("uri: {e}"))?,
            request_headers: names(&settings.request_headers)?,
            copy_headers: names(&settings.copy_headers)?,
            timeout: settings.timeout.0,
            cache_for,
            cache_key,
            cache,
            outcomes,
        })
    }

    /// The header map of the check: the configured client headers, the X-Original-* and
    /// X-Forwarded-* fields, and `Host` (the client's).
    pub fn check_headers(&self, original: &Original<'_>) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.request_headers.len() + 6);
        for name in &self.request_headers {
            for value in original.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::HOST, original.host.clone());
        headers.insert(
            X_ORIGINAL_METHOD,
            HeaderValue::from_str(original.method.as_str())
                .unwrap_or(HeaderValue::from_static("GET")),
        );
        if let Ok(uri) = HeaderValue::from_str(original.uri) {
            headers.insert(X_ORIGINAL_URI, uri);
        }
        // The chain the request came with and this hop's peer, as on the forwarded request
        // (nginx's $proxy_add_x_forwarded_for).
        let before: Vec<&[u8]> = original
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter(|v| !v.is_empty())
            .map(HeaderValue::as_bytes)
            .collect();
        let chain = if before.is_empty() {
            Some(original.peer.clone())
        } else {
            let mut chain = before.join(&b", "[..]);
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(original.peer.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        };
        if let Some(chain) = chain {
            headers.insert(X_FORWARDED_FOR, chain);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if original.https { "https" } else { "http" }),
        );
        headers.insert(X_FORWARDED_HOST, original.host.clone());
        headers
    }

    /// The headers of an admitting answer that go onto the request.
    pub fn copies(&self, answer: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        self.copy_headers
            .iter()
            .flat_map(|name| {
                answer
                    .get_all(name)
                    .iter()
                    .map(move |v| (name.clone(), v.clone()))
            })
            .collect()
    }

    /// Removes the client's own copies of the copied headers (a client must not say who it
    /// is), then sets the service's.
    pub fn apply_copies(&self, request: &mut HeaderMap, copies: &[(HeaderName, HeaderValue)]) {
        for name in &self.copy_headers {
            request.remove(name);
        }
        for (name, value) in copies {
            request.append(name.clone(), value.clone());
        }
    }

    /// The request's cache key, if admissions are remembered and the request has one (a
    /// missing header or cookie makes none: such requests are always checked).
    pub fn cache_key(&self, client: IpAddr, headers: &HeaderMap) -> Option<Box<[u8]>> {
        self.cache.as_ref()?;
        let mut key = Vec::with_capacity(64);
        let mut empty = true;
        for part in &self.cache_key {
            // Each part is tagged and length-prefixed, so that parts never run together.
            let mut push = |tag: u8, bytes: &[u8]| {
                key.push(tag);
                key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                key.extend_from_slice(bytes);
            };
            match part {
                KeyPart::ClientIp => {
                    empty = false;
                    match client.to_canonical() {
                        IpAddr::V4(v4) => push(4, &v4.octets()),
                        IpAddr::V6(v6) => push(6, &v6.octets()),
                    }
                }
                KeyPart::Header(name) => {
                    let mut any = false;
                    for value in headers.get_all(name) {
                        any |= !value.is_empty();
                        push(b'h', value.as_bytes());
                    }
                    if !any {
                        return None;
                    }
                    empty = false;
                }
                KeyPart::Cookie(name) => match crate::http1::cookie(headers, name) {
                    Some(value) if !value.is_empty() => {
                        empty = false;
                        push(b'c', value);
                    }
                    _ => return None,
                },
                KeyPart::Route => return None,
            }
        }
        (!empty).then(|| key.into_boxed_slice())
    }

    /// A remembered admission for `key`, still valid at `now`.
    pub fn remembered(&self, key: &[u8], now: Instant) -> Option<Arc<Admission>> {
        let cache = self.cache.as_ref()?;
        let admission = cache.get(key)?;
        if admission.until > now {
            Some(admission)
        } else {
            cache.remove(key);
            None
        }
    }

    pub fn remember(&self, key: Box<[u8]>, copies: Vec<(HeaderName, HeaderValue)>, now: Instant) {
        if let Some(cache) = &self.cache {
            cache.insert(
                key,
                Arc::new(Admission {
                    copies,
                    until: now + self.cache_for,
                }),
            );
        }
    }

    /// Admissions remembered now (for /status).
    pub fn remembered_count(&self) -> usize {
        self.cache.as_ref().map_or(0, quick_cache::sync::Cache::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counter() -> IntCounter {
        IntCounter::new("c", "c").unwrap()
    }

    fn auth(text: &str) -> ForwardAuth {
        let settings: ForwardAuthConfig = toml::from_str(text).unwrap();
        let outcomes = Outcomes {
            allowed: counter(),
            denied: counter(),
            error: counter(),
            cached: counter(),
        };
        ForwardAuth::compile("sso", &settings, outcomes).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn statuses() {
        assert_eq!(verdict(StatusCode::OK), Verdict::Allow);
        assert_eq!(verdict(StatusCode::NO_CONTENT), Verdict::Allow);
        assert_eq!(verdict(StatusCode::UNAUTHORIZED), Verdict::Deny);
        assert_eq!(verdict(StatusCode::FORBIDDEN), Verdict::Deny);
        for status in [302, 404, 429, 500, 503] {
            assert_eq!(
                verdict(StatusCode::from_u16(status).unwrap()),
                Verdict::Error
            );
        }
    }

    #[test]
    fn the_check_carries_the_chosen_headers_and_the_original_request() {
        let auth = auth(
            "upstream = \"a\"\nuri = \"/check?x=1\"\nrequest_headers = [\"authorization\", \"cookie\"]",
        );
        let client = headers(&[
            ("authorization", "Bearer t"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-secret", "no"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        let host = HeaderValue::from_static("shop.test");
        let peer = HeaderValue::from_static("192.0.2.9");
        let check = auth.check_headers(&Original {
            method: &Method::DELETE,
            uri: "/orders/1?force=1",
            headers: &client,
            host: &host,
            peer: &peer,
            https: true,
        });
        assert_eq!(check["authorization"], "Bearer t");
        assert_eq!(check.get_all("cookie").iter().count(), 2);
        assert!(!check.contains_key("x-secret"));
        assert_eq!(check["x-original-method"], "DELETE");
        assert_eq!(check["x-original-uri"], "/orders/1?force=1");
        assert_eq!(check["x-forwarded-for"], "198.51.100.7, 192.0.2.9");
        assert_eq!(check["x-forwarded-proto"], "https");
        assert_eq!(check["x-forwarded-host"], "shop.test");
        assert_eq!(check["host"], "shop.test");
        assert_eq!(auth.uri.as_str(), "/check?x=1");
    }

    #[test]
    fn copies_replace_what_the_client_sent() {
        let auth = auth("upstream = \"a\"\ncopy_headers = [\"x-user\", \"x-roles\"]");
        let answer = headers(&[("x-user", "alice"), ("x-other", "no")]);
        let copies = auth.copies(&answer);
        assert_eq!(copies.len(), 1);
        let mut request = headers(&[
            ("x-user", "mallory"),
            ("x-roles", "admin"),
            ("accept", "*/*"),
        ]);
        auth.apply_copies(&mut request, &copies);
        assert_eq!(request["x-user"], "alice");
        assert!(
            !request.contains_key("x-roles"),
            "a client's claim stays out"
        );
        assert_eq!(request["accept"], "*/*");
    }

    #[test]
    fn cache_keys_and_expiry() {
        let auth = auth(
            "upstream = \"a\"\ncache_for = \"1s\"\ncache_key = [\"header:authorization\", \"cookie:sid\"]",
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = auth.cache_key(ip, &headers(&[("authorization", "A"), ("cookie", "sid=1")]));
        let b = auth.cache_key(ip, &headers(&[("authorization", "B"), ("cookie", "sid=1")]));
        assert!(a.is_some() && b.is_some() && a != b);
        // "A" + "1b" and "A1" + "b" do not meet.
        let c = auth.cache_key(
            ip,
            &headers(&[("authorization", "A1"), ("cookie", "sid=b")]),
        );
        let d = auth.cache_key(
            ip,
            &headers(&[("authorization", "A"), ("cookie", "sid=1b")]),
        );
        assert_ne!(c, d);
        // A missing part: never cached.
        assert_eq!(
            auth.cache_key(ip, &headers(&[("authorization", "A")])),
            None
        );

        let now = Instant::now();
        let key = a.unwrap();
        auth.remember(
            key.clone(),
            vec![(
                HeaderName::from_static("x-user"),
                HeaderValue::from_static("u"),
            )],
            now,
        );
        assert!(
            auth.remembered(&key, now + Duration::from_millis(999))
                .is_some()
        );
        assert!(
            auth.remembered(&key, now + Duration::from_secs(1))
                .is_none()
        );
        assert!(
            auth.remembered(&key, now).is_none(),
            "an expired entry is forgotten"
        );

        let uncached = super::tests::auth("upstream = \"a\"");
        assert_eq!(
            uncached.cache_key(ip, &headers(&[("authorization", "A")])),
            None
        );
    }

    proptest! {
        #[test]
        fn no_request_headers_panic_the_check(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 0..4)) {
            let auth = auth("upstream = \"a\"\nrequest_headers = [\"authorization\"]\ncache_for = \"1s\"\ncache_key = [\"header:authorization\", \"cookie:sid\", \"client_ip\"]");
            let mut map = HeaderMap::new();
            for value in values {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.append(header::AUTHORIZATION, value.clone());
                    map.append(header::COOKIE, value.clone());
                    map.append(X_FORWARDED_FOR, value);
                }
            }
            let host = HeaderValue::from_static("h");
            let _ = auth.check_headers(&Original { method: &Method::GET, uri: "/", headers: &map, host: &host, peer: &host, https: false });
            let _ = auth.cache_key("::1".parse().unwrap(), &map);
        }
    }
}
