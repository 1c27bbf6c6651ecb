//! Routing: a request's listener, host and path pick a route. Hosts match exactly first, then by
//! the longest wildcard suffix (`*.example.com`), then `*`; within a host, the longest
//! `path_prefix` wins (a plain string prefix, as in nginx's `location /prefix`). Paths are
//! matched in their normal form (`normalize`).

mod normalize;

pub use normalize::{PathError, normalize_path};

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

    /// How specific a match is: exact beats longer suffixes beats shorter ones beats any.
    fn rank(&self) -> usize {
        match self {
            HostPattern::Exact(_) => usize::MAX,
            HostPattern::Suffix(s) => s.len(),
            HostPattern::Any => 0,
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

/// What the router needs of one route; `T` is whatever the caller attaches (the compiled route).
pub struct RouteEntry<T> {
    /// Index of the listener the route is limited to, if any.
    pub listener: Option<usize>,
    pub host: HostPattern,
    pub path_prefix: String,
    pub target: T,
}

pub struct Router<T> {
    /// Sorted so that the first match is the best: host rank, then prefix length, descending.
    entries: Vec<RouteEntry<T>>,
}

impl<T> Router<T> {
    pub fn new(mut entries: Vec<RouteEntry<T>>) -> Self {
        // Stable sort: among equal routes the one written first wins.
        entries.sort_by(|a, b| {
            (b.host.rank(), b.path_prefix.len()).cmp(&(a.host.rank(), a.path_prefix.len()))
        });
        Self { entries }
    }

    /// The best route for a request; `host` without its port.
    pub fn find(&self, listener: usize, host: &str, path: &str) -> Option<&RouteEntry<T>> {
        self.entries.iter().find(|entry| {
            entry.listener.is_none_or(|l| l == listener)
                && entry.host.matches(host)
                && path.starts_with(entry.path_prefix.as_str())
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = &RouteEntry<T>> {
        self.entries.iter()
    }
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

    fn entry(
        listener: Option<usize>,
        host: &str,
        prefix: &str,
        target: &'static str,
    ) -> RouteEntry<&'static str> {
        RouteEntry {
            listener,
            host: HostPattern::parse(host),
            path_prefix: prefix.into(),
            target,
        }
    }

    fn router() -> Router<&'static str> {
        Router::new(vec![
            entry(None, "*", "/", "default"),
            entry(None, "*", "/orders", "orders"),
            entry(None, "*", "/orders/archive", "archive"),
            entry(None, "api.example.com", "/", "api"),
            entry(None, "*.example.com", "/", "wild"),
            entry(None, "*.eu.example.com", "/", "eu"),
            entry(Some(1), "*", "/admin", "admin-on-1"),
        ])
    }

    fn find(
        router: &Router<&'static str>,
        listener: usize,
        host: &str,
        path: &str,
    ) -> Option<&'static str> {
        router.find(listener, host, path).map(|e| e.target)
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router();
        assert_eq!(find(&r, 0, "x", "/orders/archive/1"), Some("archive"));
        assert_eq!(find(&r, 0, "x", "/orders/1"), Some("orders"));
        assert_eq!(find(&r, 0, "x", "/menu"), Some("default"));
    }

    #[test]
    fn exact_host_beats_wildcards_and_longer_wildcards_win() {
        let r = router();
        assert_eq!(find(&r, 0, "api.example.com", "/orders"), Some("api"));
        assert_eq!(find(&r, 0, "API.Example.com", "/"), Some("api"));
        assert_eq!(find(&r, 0, "shop.example.com", "/orders"), Some("wild"));
        assert_eq!(find(&r, 0, "paris.eu.example.com", "/"), Some("eu"));
        assert_eq!(find(&r, 0, "example.com", "/"), Some("default"));
    }

    #[test]
    fn listener_limits_a_route() {
        let r = router();
        assert_eq!(find(&r, 1, "x", "/admin/x"), Some("admin-on-1"));
        assert_eq!(find(&r, 0, "x", "/admin/x"), Some("default"));
    }

    #[test]
    fn no_route_without_a_catch_all() {
        let r = Router::new(vec![entry(None, "a.com", "/", "a")]);
        assert_eq!(find(&r, 0, "b.com", "/"), None);
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
