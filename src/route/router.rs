//! The compiled router. Routes are grouped by host pattern; a request tries the group of its
//! exact host, then wildcard groups from the longest suffix, then `*`, and stays with the first
//! group that has a route for it. Within a group, nginx's location order:
//!
//! 1. an exact path (`path_exact`, nginx `location =`);
//! 2. nginx's redirect of `/api` to `/api/` for a prefix route that asks for it;
//! 3. the longest prefix, if it is marked `prefix_stops_regex` (nginx `^~`);
//! 4. regexes in the order written (nginx `~`, `~*`);
//! 5. the longest prefix.
//!
//! A route's other matchers (listener, methods, headers, query, client ranges) filter each
//! candidate: one that fails them is passed over and the search goes on. Exact paths and
//! prefixes are found without scanning (a hash map; a sorted list searched by bisection); a
//! group's regexes run as one `RegexSet` when they are few, else in order, each passed over by
//! its literal prefix where it has one.

use super::HostPattern;
use crate::connection::client_address::IpRange;
use http::{HeaderMap, HeaderName, Method};
use regex::{Regex, RegexSet};
use std::collections::HashMap;
use std::net::IpAddr;

/// How a route's path matches.
#[derive(Clone, Debug)]
pub enum PathPattern {
    Exact(String),
    Prefix { prefix: String, stops_regex: bool },
    Regex(Regex),
}

impl PathPattern {
    pub fn prefix(prefix: &str) -> Self {
        Self::Prefix {
            prefix: prefix.to_owned(),
            stops_regex: false,
        }
    }

    /// How the config wrote it, for /status and `gatehouse route`.
    pub fn describe(&self) -> String {
        match self {
            Self::Exact(path) => format!("= {path}"),
            Self::Prefix {
                prefix,
                stops_regex: true,
            } => format!("^~ {prefix}"),
            Self::Prefix { prefix, .. } => prefix.clone(),
            Self::Regex(regex) => format!("~ {}", regex.as_str()),
        }
    }
}

/// A condition on a header's or a query parameter's value.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// Present (`true`) or absent (`false`).
    Present(bool),
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: Option<&[u8]>) -> bool {
        match self {
            Self::Present(present) => value.is_some() == *present,
            Self::Exact(expected) => value == Some(expected.as_bytes()),
            Self::Regex(regex) => {
                value.is_some_and(|v| std::str::from_utf8(v).is_ok_and(|v| regex.is_match(v)))
            }
        }
    }
}

/// What a route asks of a request besides its host and path.
#[derive(Clone, Debug, Default)]
pub struct Matchers {
    /// Index of the listener the route is limited to.
    pub listener: Option<usize>,
    /// Methods it takes; empty takes all.
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    /// Client ranges it takes; empty takes all.
    pub clients: Vec<IpRange>,
}

impl Matchers {
    fn is_empty(&self) -> bool {
        self.listener.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
            && self.query.is_empty()
            && self.clients.is_empty()
    }

    /// The first matcher the request fails, named for `gatehouse route`; `None` if it passes.
    pub fn failure(&self, request: &RouteRequest<'_>) -> Option<&'static str> {
        if self.listener.is_some_and(|l| l != request.listener) {
            return Some("another listener");
        }
        if !self.methods.is_empty() && !self.methods.contains(request.method) {
            return Some("method");
        }
        for (name, value) in &self.headers {
            // Every field of that name counts: a repeated header matches if any value does.
            let mut values = request.headers.get_all(name).iter().peekable();
            let ok = match value {
                ValueMatch::Present(present) => values.peek().is_some() == *present,
                _ => values.any(|v| value.matches(Some(v.as_bytes()))),
            };
            if !ok {
                return Some("header");
            }
        }
        for (name, value) in &self.query {
            let found = request.query.and_then(|q| super::query_arg(q, name));
            if !value.matches(found.map(str::as_bytes)) {
                return Some("query");
            }
        }
        if !self.clients.is_empty() && !self.clients.iter().any(|r| r.contains(request.client)) {
            return Some("client address");
        }
        None
    }
}

/// One route as the router sees it; `T` is what the caller attaches (the compiled route).
pub struct RouteEntry<T> {
    pub host: HostPattern,
    pub path: PathPattern,
    pub matchers: Matchers,
    /// Answer a request for the prefix without its trailing `/` with a 301 to it.
    pub slash_redirect: bool,
    pub target: T,
}

/// What of a request the router reads.
pub struct RouteRequest<'a> {
    pub listener: usize,
    /// Without port.
    pub host: &'a str,
    /// In normal form, without query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub client: IpAddr,
}

/// How the chosen route matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    Exact,
    /// A prefix route's own path without its trailing slash: answer with a redirect to it.
    SlashRedirect,
    Prefix,
    /// A regex, with the texts of its groups (index 0, the whole match).
    Regex(Vec<Option<String>>),
}

pub struct Found<'a, T> {
    pub entry: &'a RouteEntry<T>,
    /// The route's place in the order written.
    pub index: usize,
    pub matched_by: MatchedBy,
}

/// The text a path must start with for `pattern` to match it, when the pattern is anchored at
/// the start and begins with literal text (`^/users/(\d+)` → `/users/`): a regex route is
/// passed over by one comparison on paths that do not start so, as most of many do not.
fn required_prefix(pattern: &str) -> Option<String> {
    use regex_syntax::hir::{HirKind, Look};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    if !matches!(parts.first()?.kind(), HirKind::Look(Look::Start)) {
        return None;
    }
    let mut prefix = Vec::new();
    for part in &parts[1..] {
        match part.kind() {
            HirKind::Literal(literal) => prefix.extend_from_slice(&literal.0),
            _ => break,
        }
    }
    String::from_utf8(prefix).ok().filter(|p| !p.is_empty())
}

/// Up to this many regexes in a group run as one `RegexSet`.
const FEW_REGEXES: usize = 32;

/// The routes of one host pattern.
#[derive(Default)]
struct Group {
    exact: HashMap<Box<str>, Vec<usize>>,
    /// Prefix route's path without its trailing slash → routes redirecting it.
    slash: HashMap<Box<str>, Vec<usize>>,
    /// Distinct prefixes in byte order, each with its routes in the order written.
    prefixes: Vec<(Box<str>, Vec<usize>)>,
    regexes: Option<RegexSet>,
    regex_routes: Vec<usize>,
    /// What each regex route's path must start with, if known (`required_prefix`).
    regex_prefixes: Vec<Option<String>>,
}

pub struct Router<T> {
    entries: Vec<RouteEntry<T>>,
    /// Whether each route has matchers beyond host and path (by index), read on every
    /// candidate.
    conditional: Vec<bool>,
    /// The one group, when every route is a prefix on any host: then a lookup is one
    /// bisection (the common config pays nothing for what it does not use).
    prefixes_only: Option<usize>,
    groups: Vec<Group>,
    exact_hosts: HashMap<Box<str>, usize>,
    /// `.example.com` → group of `*.example.com`.
    suffix_hosts: HashMap<Box<str>, usize>,
    any_host: Option<usize>,
}

impl<T> Router<T> {
    /// Compiles the routes; `entries` in the order written (the order that breaks ties).
    /// Fails only if the regexes together exceed the regex engine's size limit.
    pub fn new(entries: Vec<RouteEntry<T>>) -> Result<Self, String> {
        let mut groups: Vec<Group> = Vec::new();
        let mut exact_hosts: HashMap<Box<str>, usize> = HashMap::new();
        let mut suffix_hosts: HashMap<Box<str>, usize> = HashMap::new();
        let mut any_host = None;
        let mut regex_sources: Vec<Vec<&str>> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let next = groups.len();
            let group = match &entry.host {
                HostPattern::Any => *any_host.get_or_insert(next),
                HostPattern::Exact(host) => {
                    *exact_hosts.entry(host.as_str().into()).or_insert(next)
                }
                HostPattern::Suffix(suffix) => {
                    *suffix_hosts.entry(suffix.as_str().into()).or_insert(next)
                }
            };
            if group == next {
                groups.push(Group::default());
                regex_sources.push(Vec::new());
            }
            let routes = &mut groups[group];
            match &entry.path {
                PathPattern::Exact(path) => routes
                    .exact
                    .entry(path.as_str().into())
                    .or_default()
                    .push(index),
                PathPattern::Prefix { prefix, .. } => {
                    match routes
                        .prefixes
                        .binary_search_by(|(p, _)| p.as_ref().cmp(prefix.as_str()))
                    {
                        Ok(at) => routes.prefixes[at].1.push(index),
                        Err(at) => routes
                            .prefixes
                            .insert(at, (prefix.as_str().into(), vec![index])),
                    }
                    if entry.slash_redirect
                        && let Some(bare) = prefix.strip_suffix('/').filter(|b| !b.is_empty())
                    {
                        routes.slash.entry(bare.into()).or_default().push(index);
                    }
                }
                PathPattern::Regex(regex) => {
                    routes.regex_routes.push(index);
                    routes.regex_prefixes.push(required_prefix(regex.as_str()));
                    regex_sources[group].push(regex.as_str());
                }
            }
        }
        // Among routes of one path, those with conditions come first (in the order written):
        // a route without any must not shadow one that asks for a header on the same path.
        let conditional = |index: &usize| entries[*index].matchers.is_empty();
        for group in &mut groups {
            for routes in group.exact.values_mut().chain(group.slash.values_mut()) {
                routes.sort_by_key(conditional);
            }
            for (_, routes) in &mut group.prefixes {
                routes.sort_by_key(conditional);
            }
        }
        for (group, sources) in groups.iter_mut().zip(regex_sources) {
            if !sources.is_empty() {
                group.regexes = Some(RegexSet::new(sources).map_err(|e| e.to_string())?);
            }
        }
        let prefixes_only = any_host.filter(|&group| {
            let routes: &Group = &groups[group];
            groups.len() == 1
                && routes.exact.is_empty()
                && routes.slash.is_empty()
                && routes.regexes.is_none()
        });
        Ok(Self {
            conditional: entries.iter().map(|e| !e.matchers.is_empty()).collect(),
            entries,
            groups,
            exact_hosts,
            suffix_hosts,
            any_host,
            prefixes_only,
        })
    }

    /// The route for a request.
    pub fn find(&self, request: &RouteRequest<'_>) -> Option<Found<'_, T>> {
        if let Some(group) = self.prefixes_only {
            let index = self.longest_prefix(&self.groups[group], request)?;
            return Some(self.found(index, MatchedBy::Prefix));
        }
        if self.exact_hosts.is_empty() && self.suffix_hosts.is_empty() {
            return self.find_in(self.groups.get(self.any_host?)?, request);
        }
        let lowered;
        let host = if request.host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = request.host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            request.host
        };
        if let Some(&group) = self.exact_hosts.get(host)
            && let Some(found) = self.find_in(&self.groups[group], request)
        {
            return Some(found);
        }
        if !self.suffix_hosts.is_empty() {
            // Longest suffix first: `.b.example.com` before `.example.com`.
            for (at, _) in host.match_indices('.') {
                if let Some(&group) = self.suffix_hosts.get(&host[at..])
                    && at > 0
                    && let Some(found) = self.find_in(&self.groups[group], request)
                {
                    return Some(found);
                }
            }
        }
        self.find_in(self.groups.get(self.any_host?)?, request)
    }

    fn find_in<'a>(&'a self, group: &'a Group, request: &RouteRequest<'_>) -> Option<Found<'a, T>> {
        let path = request.path;
        if !group.exact.is_empty()
            && let Some(index) = group
                .exact
                .get(path)
                .and_then(|routes| self.first_passing(routes, request))
        {
            return Some(self.found(index, MatchedBy::Exact));
        }
        if !group.slash.is_empty()
            && let Some(index) = group
                .slash
                .get(path)
                .and_then(|routes| self.first_passing(routes, request))
        {
            return Some(self.found(index, MatchedBy::SlashRedirect));
        }
        let prefix = self.longest_prefix(group, request);
        if let Some(index) = prefix
            && matches!(
                self.entries[index].path,
                PathPattern::Prefix {
                    stops_regex: true,
                    ..
                }
            )
        {
            return Some(self.found(index, MatchedBy::Prefix));
        }
        if let Some(regexes) = &group.regexes {
            // A few regexes run as one set; many, one by one behind their literal prefixes
            // (a set of hundreds outgrows the regex engine's fast automata).
            let few = group.regex_routes.len() <= FEW_REGEXES;
            let matched = few.then(|| regexes.matches(path));
            for (at, &index) in group.regex_routes.iter().enumerate() {
                let entry = &self.entries[index];
                let PathPattern::Regex(regex) = &entry.path else {
                    continue;
                };
                let fits = match &matched {
                    Some(set) => set.matched(at),
                    None => {
                        group.regex_prefixes[at]
                            .as_deref()
                            .is_none_or(|p| path.starts_with(p))
                            && regex.is_match(path)
                    }
                };
                if !fits {
                    continue;
                }
                if self.conditional[index] && entry.matchers.failure(request).is_some() {
                    continue;
                }
                let PathPattern::Regex(regex) = &entry.path else {
                    continue;
                };
                let captures = regex
                    .captures(path)
                    .map(|c| c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect())
                    .unwrap_or_default();
                return Some(self.found(index, MatchedBy::Regex(captures)));
            }
        }
        prefix.map(|index| self.found(index, MatchedBy::Prefix))
    }

    /// The route of the longest prefix of the path whose other matchers pass.
    fn longest_prefix(&self, group: &Group, request: &RouteRequest<'_>) -> Option<usize> {
        let prefixes = &group.prefixes;
        let mut key = request.path;
        // One prefix (the shipped config's `/`): no search.
        if let [(only, routes)] = prefixes.as_slice() {
            return key
                .starts_with(only.as_ref())
                .then(|| self.first_passing(routes, request))
                .flatten();
        }
        loop {
            // The greatest prefix ≤ key in byte order: if it is not a prefix of key, no prefix
            // of key is longer than what the two share, so the search goes on from there.
            let at = prefixes.partition_point(|(p, _)| p.as_bytes() <= key.as_bytes());
            let (candidate, routes) = prefixes.get(at.checked_sub(1)?)?;
            if key.starts_with(candidate.as_ref()) {
                if let Some(index) = self.first_passing(routes, request) {
                    return Some(index);
                }
                // Every route of this prefix is passed over: shorter prefixes next.
                key = &key[..candidate.len().checked_sub(1)?];
            } else {
                let shared = candidate
                    .bytes()
                    .zip(key.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                key = &key[..shared];
            }
        }
    }

    fn first_passing(&self, routes: &[usize], request: &RouteRequest<'_>) -> Option<usize> {
        routes.iter().copied().find(|&index| {
            !self.conditional[index] || self.entries[index].matchers.failure(request).is_none()
        })
    }

    fn found(&self, index: usize, matched_by: MatchedBy) -> Found<'_, T> {
        Found {
            entry: &self.entries[index],
            index,
            matched_by,
        }
    }

    /// The routes in the order written.
    pub fn entries(&self) -> std::slice::Iter<'_, RouteEntry<T>> {
        self.entries.iter()
    }
}

/// Whether `entry`'s host and path, ignoring its other matchers, fit a request: what
/// `gatehouse route` lists as the candidates a chosen route beat.
pub fn host_and_path_fit<T>(entry: &RouteEntry<T>, host: &str, path: &str) -> bool {
    entry.host.matches(host)
        && match &entry.path {
            PathPattern::Exact(exact) => exact == path,
            PathPattern::Prefix { prefix, .. } => {
                path.starts_with(prefix.as_str())
                    || (entry.slash_redirect && prefix.strip_suffix('/') == Some(path))
            }
            PathPattern::Regex(regex) => regex.is_match(path),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Spec {
        host: &'static str,
        path: PathPattern,
        matchers: Matchers,
        slash: bool,
    }

    fn prefix(p: &str) -> PathPattern {
        PathPattern::prefix(p)
    }
    fn stop(p: &str) -> PathPattern {
        PathPattern::Prefix {
            prefix: p.into(),
            stops_regex: true,
        }
    }
    fn exact(p: &str) -> PathPattern {
        PathPattern::Exact(p.into())
    }
    fn regex(r: &str) -> PathPattern {
        PathPattern::Regex(Regex::new(r).unwrap())
    }
    fn on(host: &'static str, path: PathPattern) -> Spec {
        Spec {
            host,
            path,
            matchers: Matchers::default(),
            slash: false,
        }
    }

    fn router(specs: Vec<Spec>) -> Router<usize> {
        Router::new(
            specs
                .into_iter()
                .enumerate()
                .map(|(i, s)| RouteEntry {
                    host: HostPattern::parse(s.host),
                    path: s.path,
                    matchers: s.matchers,
                    slash_redirect: s.slash,
                    target: i,
                })
                .collect(),
        )
        .unwrap()
    }

    struct Req {
        listener: usize,
        host: &'static str,
        method: Method,
        headers: HeaderMap,
        client: IpAddr,
    }

    impl Req {
        fn new(host: &'static str) -> Self {
            Self {
                listener: 0,
                host,
                method: Method::GET,
                headers: HeaderMap::new(),
                client: "192.0.2.1".parse().unwrap(),
            }
        }
        fn find(&self, router: &Router<usize>, target: &str) -> Option<(usize, MatchedBy)> {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            router
                .find(&RouteRequest {
                    listener: self.listener,
                    host: self.host,
                    path,
                    query,
                    method: &self.method,
                    headers: &self.headers,
                    client: self.client,
                })
                .map(|f| (f.entry.target, f.matched_by))
        }
    }

    fn pick(router: &Router<usize>, path: &str) -> Option<usize> {
        Req::new("x").find(router, path).map(|(t, _)| t)
    }

    #[test]
    fn nginx_precedence() {
        let r = router(vec![
            on("*", prefix("/")),                     // 0
            on("*", exact("/healthz")),               // 1
            on("*", stop("/assets/")),                // 2
            on("*", regex(r"\.(png|css)$")),          // 3
            on("*", regex(r"^/users/(\d+)/orders$")), // 4
            on("*", prefix("/users/")),               // 5
            on("*", regex(r"^/users/")),              // 6
            on("*", prefix("/images/")),              // 7
        ]);
        assert_eq!(pick(&r, "/healthz"), Some(1));
        assert_eq!(pick(&r, "/healthz/x"), Some(0));
        // ^~ stops the regex search even though \.png$ matches.
        assert_eq!(pick(&r, "/assets/logo.png"), Some(2));
        // A plain prefix does not: the regex wins.
        assert_eq!(pick(&r, "/images/logo.png"), Some(3));
        // Regexes in the order written, before the longest prefix.
        assert_eq!(pick(&r, "/users/42/orders"), Some(4));
        assert_eq!(pick(&r, "/users/42"), Some(6));
        assert_eq!(pick(&r, "/images/x.gif"), Some(7));
        assert_eq!(pick(&r, "/menu"), Some(0));
    }

    #[test]
    fn regex_captures_come_back() {
        let r = router(vec![on("*", regex(r"^/users/(?P<id>\d+)/orders$"))]);
        let (_, by) = Req::new("x").find(&r, "/users/42/orders").unwrap();
        assert_eq!(
            by,
            MatchedBy::Regex(vec![Some("/users/42/orders".into()), Some("42".into())])
        );
    }

    #[test]
    fn literal_prefixes_of_anchored_regexes() {
        assert_eq!(
            required_prefix(r"^/users/(\d+)$").as_deref(),
            Some("/users/")
        );
        assert_eq!(required_prefix(r"^/a\.b/x").as_deref(), Some("/a.b/x"));
        assert_eq!(required_prefix(r"\.php$"), None);
        // Case folds the letters, not the slash.
        assert_eq!(required_prefix(r"(?i)^/users/").as_deref(), Some("/"));
        assert_eq!(required_prefix(r"^/ab*"), Some("/a".into()));
        assert_eq!(required_prefix(r"^(/a|/b)"), None);
    }

    #[test]
    fn many_regexes_match_as_few_do() {
        let mut specs = vec![on("*", prefix("/"))];
        for i in 0..100 {
            specs.push(on("*", regex(&format!(r"^/s{i}/u/(\d+)$"))));
        }
        specs.push(on("*", regex(r"(?i)\.PNG$")));
        let r = router(specs);
        assert_eq!(pick(&r, "/s57/u/9"), Some(58));
        assert_eq!(pick(&r, "/s57/u/x"), Some(0));
        assert_eq!(pick(&r, "/s5/u/1.png"), Some(101));
        let (_, by) = Req::new("x").find(&r, "/s99/u/42").unwrap();
        assert_eq!(
            by,
            MatchedBy::Regex(vec![Some("/s99/u/42".into()), Some("42".into())])
        );
    }

    #[test]
    fn case_insensitive_regex() {
        let r = router(vec![on("*", regex(r"(?i)\.JPG$")), on("*", prefix("/"))]);
        assert_eq!(pick(&r, "/a/b.jpg"), Some(0));
        assert_eq!(pick(&r, "/a/b.JpG"), Some(0));
    }

    #[test]
    fn longest_prefix_is_found_among_many() {
        let mut specs = vec![on("*", prefix("/"))];
        let names = ["/a", "/ab", "/abc/", "/abd", "/b/", "/b/c/d", "/ba"];
        for n in names {
            specs.push(on("*", prefix(n)));
        }
        let r = router(specs);
        assert_eq!(pick(&r, "/abc/x"), Some(3));
        assert_eq!(pick(&r, "/abcx"), Some(2));
        assert_eq!(pick(&r, "/abe"), Some(2));
        assert_eq!(pick(&r, "/ac"), Some(1));
        assert_eq!(pick(&r, "/b/c/dd"), Some(6));
        assert_eq!(pick(&r, "/b/c/"), Some(5));
        assert_eq!(pick(&r, "/bb"), Some(0));
        assert_eq!(pick(&r, "/"), Some(0));
    }

    #[test]
    fn matchers_filter_and_fall_through() {
        let mut get_only = on("*", prefix("/orders"));
        get_only.matchers.methods = vec![Method::GET];
        let mut canary = on("*", prefix("/orders"));
        canary.matchers.headers = vec![(
            HeaderName::from_static("x-canary"),
            ValueMatch::Exact("1".into()),
        )];
        let mut debug = on("*", prefix("/"));
        debug.matchers.query = vec![("debug".into(), ValueMatch::Present(true))];
        let mut office = on("*", prefix("/admin/"));
        office.matchers.clients = vec![IpRange::parse("10.0.0.0/8").unwrap()];
        let r = router(vec![
            canary,               // 0
            get_only,             // 1
            debug,                // 2
            on("*", prefix("/")), // 3
            office,               // 4
        ]);
        let mut req = Req::new("x");
        assert_eq!(req.find(&r, "/orders/1").map(|f| f.0), Some(1));
        req.method = Method::POST;
        assert_eq!(req.find(&r, "/orders/1").map(|f| f.0), Some(3));
        assert_eq!(req.find(&r, "/orders/1?debug=1").map(|f| f.0), Some(2));
        req.headers.insert("x-canary", "1".parse().unwrap());
        assert_eq!(req.find(&r, "/orders/1").map(|f| f.0), Some(0));
        assert_eq!(req.find(&r, "/admin/x").map(|f| f.0), Some(3));
        req.client = "10.2.3.4".parse().unwrap();
        assert_eq!(req.find(&r, "/admin/x").map(|f| f.0), Some(4));
    }

    #[test]
    fn header_regex_and_absence() {
        let mut mobile = on("*", prefix("/"));
        mobile.matchers.headers = vec![(
            HeaderName::from_static("user-agent"),
            ValueMatch::Regex(Regex::new("(?i)mobile").unwrap()),
        )];
        let mut anonymous = on("*", prefix("/"));
        anonymous.matchers.headers = vec![(
            HeaderName::from_static("authorization"),
            ValueMatch::Present(false),
        )];
        let r = router(vec![mobile, anonymous, on("*", prefix("/"))]);
        let mut req = Req::new("x");
        assert_eq!(req.find(&r, "/").map(|f| f.0), Some(1));
        req.headers
            .insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(req.find(&r, "/").map(|f| f.0), Some(2));
        req.headers
            .insert("user-agent", "Foo Mobile/1".parse().unwrap());
        assert_eq!(req.find(&r, "/").map(|f| f.0), Some(0));
    }

    #[test]
    fn slash_redirect_for_marked_prefixes() {
        let mut api = on("*", prefix("/api/"));
        api.slash = true;
        let r = router(vec![on("*", prefix("/")), api, on("*", exact("/x"))]);
        assert_eq!(
            Req::new("h").find(&r, "/api"),
            Some((1, MatchedBy::SlashRedirect))
        );
        assert_eq!(Req::new("h").find(&r, "/api/").map(|f| f.0), Some(1));
        assert_eq!(Req::new("h").find(&r, "/apix").map(|f| f.0), Some(0));
    }

    #[test]
    fn hosts_exact_then_longest_wildcard_then_any() {
        let r = router(vec![
            on("*", prefix("/")),                  // 0
            on("api.example.com", prefix("/v1/")), // 1
            on("*.example.com", prefix("/")),      // 2
            on("*.eu.example.com", prefix("/")),   // 3
        ]);
        let find = |host: &'static str, path: &str| Req::new(host).find(&r, path).map(|f| f.0);
        assert_eq!(find("api.example.com", "/v1/x"), Some(1));
        assert_eq!(find("API.Example.COM", "/v1/x"), Some(1));
        // The exact host's group has no route for it: wildcards next.
        assert_eq!(find("api.example.com", "/v2"), Some(2));
        assert_eq!(find("paris.eu.example.com", "/"), Some(3));
        assert_eq!(find("example.com", "/"), Some(0));
        assert_eq!(find(".example.com", "/"), Some(0));
    }

    #[test]
    fn listener_limits_a_route() {
        let mut admin = on("*", prefix("/admin"));
        admin.matchers.listener = Some(1);
        let r = router(vec![on("*", prefix("/")), admin]);
        let mut req = Req::new("x");
        assert_eq!(req.find(&r, "/admin/x").map(|f| f.0), Some(0));
        req.listener = 1;
        assert_eq!(req.find(&r, "/admin/x").map(|f| f.0), Some(1));
    }

    #[test]
    fn ties_go_to_the_route_written_first() {
        let r = router(vec![on("*", prefix("/a")), on("*", prefix("/a"))]);
        assert_eq!(pick(&r, "/a/b"), Some(0));
        // Except that a route with conditions goes before one without on the same path.
        let mut debug = on("*", prefix("/a"));
        debug.matchers.query = vec![("debug".into(), ValueMatch::Present(true))];
        let r = router(vec![on("*", prefix("/a")), debug]);
        assert_eq!(pick(&r, "/a/b?debug"), Some(1));
        assert_eq!(pick(&r, "/a/b"), Some(0));
        assert!(
            router(vec![on("a.com", prefix("/"))])
                .find(&RouteRequest {
                    listener: 0,
                    host: "b.com",
                    path: "/",
                    query: None,
                    method: &Method::GET,
                    headers: &HeaderMap::new(),
                    client: "127.0.0.1".parse().unwrap(),
                })
                .is_none()
        );
    }

    proptest::proptest! {
        /// The bisection finds what a scan of every prefix finds.
        #[test]
        fn longest_prefix_agrees_with_a_scan(
            prefixes in proptest::collection::vec("/[ab/]{0,5}", 1..20),
            path in "/[ab/]{0,8}",
        ) {
            let r = router(prefixes.iter().map(|p| on("*", prefix(p))).collect());
            let expected = prefixes
                .iter()
                .enumerate()
                .filter(|(_, p)| path.starts_with(p.as_str()))
                // Longest; among equal ones, the first written.
                .max_by(|(i, a), (j, b)| a.len().cmp(&b.len()).then(j.cmp(i)))
                .map(|(i, _)| i);
            proptest::prop_assert_eq!(pick(&r, &path), expected);
        }
    }
}
