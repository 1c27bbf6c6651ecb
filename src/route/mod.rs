//! Routing: a request's listener, host, path and other parts pick a route (`router`), in its
//! normal path form (`normalize`); a route may rewrite the path (`rewrite`) and fill templates
//! with nginx's variables (`template`).

mod normalize;
pub mod rewrite;
mod router;
pub mod template;

pub(crate) use normalize::escaped_byte;
pub use normalize::{PathError, normalize_path};
pub use router::{
    Found, MatchedBy, Matchers, PathPattern, RouteEntry, RouteRequest, Router, ValueMatch,
    host_and_path_fit,
};

/// How a route's `host` matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, not `example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            HostPattern::Any
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            HostPattern::Suffix(suffix.to_ascii_lowercase())
        } else {
            HostPattern::Exact(pattern.to_ascii_lowercase())
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => exact.eq_ignore_ascii_case(host),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// The first value of query parameter `name` (compared without case, as nginx's `$arg_`), as
/// sent: not decoded.
pub fn query_arg<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// The host part of a Host header or authority: without port, brackets kept for IPv6.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn query_args_are_found_by_name() {
        assert_eq!(query_arg("a=1&page=2&page=3", "page"), Some("2"));
        assert_eq!(query_arg("a=1&PAGE=2", "page"), Some("2"));
        assert_eq!(query_arg("flag&a=1", "flag"), Some(""));
        assert_eq!(query_arg("a=1", "b"), None);
        assert_eq!(query_arg("", "b"), None);
    }
}
