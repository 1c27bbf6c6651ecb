//! Cache keys, and the keys an unsafe request invalidates (RFC 9111 §4.4): its target, and a
//! Location or Content-Location on the same origin, resolved as RFC 3986 §5.2 says.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode, Uri};

/// §4.4: URIs an unsafe request invalidates when its response is 2xx/3xx: the target URI, plus Location and Content-Location when same-origin (same host as the request's; compare authority case-insensitively, relative references resolved against the target). Returned as cache keys built by `cache_key`.
///
/// Keys carry no scheme, so "same origin" compares the authority only (without default ports,
/// as [`cache_key`] does): an `http:` Location on an `https` request names the same key. URIs
/// of any other scheme, or on another host, are never invalidated — that is what stops one
/// origin from flushing another's entries (§4.4). Relative references resolve as in RFC 3986
/// §5.2, dot segments removed; fragments are dropped.
pub fn invalidation_targets(
    method: &Method,
    status: StatusCode,
    request_host: &str,
    request_uri: &Uri,
    response_headers: &HeaderMap,
) -> Vec<String> {
    // §4.4: unsafe includes methods whose safety is unknown; "non-error" is 2xx and 3xx.
    if method.is_safe() || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let path = request_uri.path();
    // Authority-form (CONNECT) and asterisk-form targets name no cacheable resource.
    if !path.starts_with('/') {
        return Vec::new();
    }
    let query = request_uri.query();
    let mut targets = vec![key_with_query(request_host, path, query)];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(reference) = response_headers
            .get(&name)
            .and_then(|value| value.to_str().ok())
        else {
            continue;
        };
        if let Some(key) = resolve_same_origin(reference, request_host, path, query)
            && !targets.contains(&key)
        {
            targets.push(key);
        }
    }
    targets
}

/// RFC 9110 §9.3.3: whether the response's Content-Location names the request's own target,
/// resolved against it as §4.4 resolves it for invalidation (same origin, dot segments removed,
/// fragment dropped). One Content-Location only: two could name two resources.
pub fn content_location_is_target(
    request_host: &str,
    request_uri: &Uri,
    response_headers: &HeaderMap,
) -> bool {
    let path = request_uri.path();
    if !path.starts_with('/') {
        return false;
    }
    let mut lines = response_headers.get_all(CONTENT_LOCATION).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some(reference) = value.to_str().ok().filter(|r| !r.trim().is_empty()) else {
        return false;
    };
    let query = request_uri.query();
    resolve_same_origin(reference, request_host, path, query)
        .is_some_and(|key| key == key_with_query(request_host, path, query))
}

/// The cache key of `reference` resolved against the target, if it is on the same origin.
fn resolve_same_origin(
    reference: &str,
    request_host: &str,
    base_path: &str,
    base_query: Option<&str>,
) -> Option<String> {
    let reference = reference.trim();
    let reference = reference.split_once('#').map_or(reference, |(r, _)| r);

    // RFC 3986 §3.1: a scheme is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) before a ':'
    // that comes before any '/', '?' (a colon after them is part of a relative path).
    let scheme_end = reference
        .find([':', '/', '?'])
        .filter(|&i| reference.as_bytes()[i] == b':');
    let after_scheme = match scheme_end {
        Some(colon) => {
            let scheme = &reference[..colon];
            if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
                return None;
            }
            // `http:path` without an authority is not a usable same-origin reference.
            Some(reference[colon + 1..].strip_prefix("//")?)
        }
        None => reference.strip_prefix("//"),
    };
    if let Some(rest) = after_scheme {
        // Network-path reference: authority, then an absolute (or empty) path.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if !host_key(host).eq_ignore_ascii_case(host_key(request_host)) {
            return None;
        }
        let (path, query) = split_query(path_and_query);
        let path = if path.is_empty() { "/" } else { path };
        return Some(key_with_query(
            request_host,
            &remove_dot_segments(path),
            query,
        ));
    }

    // RFC 3986 §5.2.2, same authority.
    let (path, query) = split_query(reference);
    if path.is_empty() {
        return Some(key_with_query(
            request_host,
            base_path,
            query.or(base_query),
        ));
    }
    let path = if path.starts_with('/') {
        remove_dot_segments(path)
    } else {
        // §5.2.3 merge: the base path up to and including its last '/'.
        let directory = base_path.rfind('/').map_or("", |i| &base_path[..=i]);
        remove_dot_segments(&format!("{directory}{path}"))
    };
    Some(key_with_query(request_host, &path, query))
}

fn split_query(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    }
}

fn key_with_query(host: &str, path: &str, query: Option<&str>) -> String {
    let mut key = cache_key(host, path);
    if let Some(query) = query {
        key.push('?');
        key.push_str(query);
    }
    key
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    let pop_segment = |output: &mut String| {
        let cut = output.rfind('/').unwrap_or(0);
        output.truncate(cut);
    };
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop_segment(&mut output);
        } else if input == "/.." {
            input = "/";
            pop_segment(&mut output);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let skip = usize::from(input.starts_with('/'));
            let end = input[skip..].find('/').map_or(input.len(), |i| i + skip);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// A host (or authority) without a default or empty port: keys carry no scheme, so both
/// schemes' default ports are dropped.
fn host_key(host: &str) -> &str {
    for default in [":80", ":443", ":"] {
        if let Some(bare) = host.strip_suffix(default)
            && !bare.is_empty()
            && (bare.ends_with(']') || !bare.contains(':'))
        {
            return bare;
        }
    }
    host
}

/// The primary cache key of a request: lower-cased host (no default port) + path-and-query exactly as sent (no normalization beyond that).
///
/// Default ports are 80 and 443 alike, as the key does not say which scheme was used; an IPv6
/// literal keeps its brackets (`[::1]:80` → `[::1]`).
pub fn cache_key(host: &str, path_and_query: &str) -> String {
    let host = host_key(host);
    let mut key = String::with_capacity(host.len() + path_and_query.len());
    key.push_str(host);
    key.make_ascii_lowercase();
    key.push_str(path_and_query);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::directives::fixtures::headers;

    // ---- Content-Location of a POST ----

    fn names_target(uri: &str, content_location: &[&str]) -> bool {
        let fields: Vec<_> = content_location
            .iter()
            .map(|value| ("content-location", *value))
            .collect();
        content_location_is_target("Example.com", &uri.parse().unwrap(), &headers(&fields))
    }

    #[test]
    fn content_location_names_the_target_when_it_resolves_to_it() {
        for same in [
            "/orders/7",
            "http://example.com/orders/7",
            "https://EXAMPLE.com:443/orders/7",
            "//example.com/orders/7",
            "7",
            "./7",
            "../orders/7",
            "/orders/x/../7#top",
        ] {
            assert!(names_target("/orders/7", &[same]), "{same}");
        }
        assert!(names_target("/search?q=a", &["/search?q=a"]));
        for other in [
            "/orders/8",
            "/orders/7/",
            "/Orders/7",
            "http://other.example/orders/7",
            "ftp://example.com/orders/7",
            "/orders/7?x=1",
            "",
            " ",
        ] {
            assert!(!names_target("/orders/7", &[other]), "{other:?}");
        }
        assert!(!names_target("/orders/7", &[]));
        assert!(
            !names_target("/orders/7", &["/orders/7", "/orders/7"]),
            "two fields are not one location"
        );
        assert!(!names_target("/search?q=a", &["/search?q=b"]));
    }

    // ---- Invalidation ----

    fn invalidated(
        method: Method,
        status: u16,
        uri: &str,
        response: &[(&str, &str)],
    ) -> Vec<String> {
        invalidation_targets(
            &method,
            StatusCode::from_u16(status).unwrap(),
            "Example.com",
            &uri.parse().unwrap(),
            &headers(response),
        )
    }

    #[test]
    fn only_successful_unsafe_requests_invalidate() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(invalidated(method, 200, "/a", &[]).is_empty());
        }
        for status in [101, 304, 400, 404, 500, 503] {
            if status == 304 {
                // 3xx is "non-error" (§4.4).
                assert_eq!(
                    invalidated(Method::POST, status, "/a", &[]),
                    ["example.com/a"]
                );
            } else {
                assert!(
                    invalidated(Method::POST, status, "/a", &[]).is_empty(),
                    "{status}"
                );
            }
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            purge,
        ] {
            assert_eq!(
                invalidated(method, 204, "/a?x=1", &[]),
                ["example.com/a?x=1"]
            );
        }
        assert_eq!(invalidated(Method::POST, 303, "/a", &[]), ["example.com/a"]);
    }

    #[test]
    fn the_target_of_an_absolute_form_request() {
        assert_eq!(
            invalidated(Method::POST, 200, "http://example.com/p?q", &[]),
            ["example.com/p?q"]
        );
        assert_eq!(
            invalidated(Method::POST, 200, "http://example.com?q", &[]),
            ["example.com/?q"]
        );
    }

    #[test]
    fn location_and_content_location_on_the_same_origin() {
        let with = |field: &'static str, value: &'static str| {
            invalidated(Method::POST, 201, "/dir/items?x", &[(field, value)])
        };
        for (value, key) in [
            ("/items/7", "example.com/items/7"),
            ("7", "example.com/dir/7"),
            ("./7?v=1", "example.com/dir/7?v=1"),
            ("../up", "example.com/up"),
            ("../../../up", "example.com/up"),
            ("?y", "example.com/dir/items?y"),
            ("/a/b/../c/./d#frag", "example.com/a/c/d"),
            ("http://EXAMPLE.com/abs", "example.com/abs"),
            ("https://example.com:443/abs", "example.com/abs"),
            ("http://example.com:80", "example.com/"),
            ("//example.com/net?q", "example.com/net?q"),
            ("http://user@example.com/who", "example.com/who"),
        ] {
            assert_eq!(
                with("location", value),
                ["example.com/dir/items?x", key],
                "Location: {value}"
            );
            assert_eq!(
                with("content-location", value),
                ["example.com/dir/items?x", key],
                "Content-Location: {value}"
            );
        }
    }

    #[test]
    fn other_origins_are_never_invalidated() {
        for value in [
            "http://other.example/x",
            "//other.example/x",
            "http://example.com:8080/x",
            "http://example.com.evil/x",
            "mailto:someone@example.com",
            "ftp://example.com/x",
            "http:relative",
        ] {
            assert_eq!(
                invalidated(Method::POST, 201, "/a", &[("location", value)]),
                ["example.com/a"],
                "{value}"
            );
        }
    }

    #[test]
    fn invalidation_targets_are_not_repeated() {
        assert_eq!(
            invalidated(
                Method::PUT,
                200,
                "/a",
                &[
                    ("location", "/a"),
                    ("content-location", "http://example.com/a")
                ]
            ),
            ["example.com/a"]
        );
        assert_eq!(
            invalidated(
                Method::PUT,
                200,
                "/a",
                &[("location", "/b"), ("content-location", "/b")]
            ),
            ["example.com/a", "example.com/b"]
        );
        // A bare fragment or empty reference is the target itself.
        assert_eq!(
            invalidated(Method::PUT, 200, "/a?x", &[("location", "#frag")]),
            ["example.com/a?x"]
        );
        assert_eq!(
            invalidated(Method::PUT, 200, "/a?x", &[("content-location", "")]),
            ["example.com/a?x"]
        );
    }

    #[test]
    fn connect_and_asterisk_targets_invalidate_nothing() {
        assert!(invalidated(Method::CONNECT, 200, "example.com:443", &[]).is_empty());
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/a/."), "/a/");
        assert_eq!(remove_dot_segments("/../x"), "/x");
        assert_eq!(remove_dot_segments("/a/..b/.c"), "/a/..b/.c");
    }

    // ---- Cache keys ----

    #[test]
    fn cache_keys_lower_case_the_host_and_drop_default_ports() {
        assert_eq!(cache_key("Example.COM", "/P?Q=A"), "example.com/P?Q=A");
        assert_eq!(cache_key("example.com:80", "/"), "example.com/");
        assert_eq!(cache_key("example.com:443", "/"), "example.com/");
        assert_eq!(cache_key("example.com:", "/"), "example.com/");
        assert_eq!(cache_key("example.com:8080", "/"), "example.com:8080/");
        assert_eq!(cache_key("[::1]:80", "/x"), "[::1]/x");
        assert_eq!(cache_key("[::1]", "/x"), "[::1]/x");
        assert_eq!(cache_key("[::1]:8443", "/x"), "[::1]:8443/x");
        assert_eq!(
            cache_key("example.com", "/a/../b%2F?x"),
            "example.com/a/../b%2F?x"
        );
    }
}
