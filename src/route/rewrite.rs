//! Path rewrites by regex (nginx's `rewrite REGEX REPLACEMENT [flag]`), pure: rules run in the
//! order written over the current path, each on the result of the last.
//!
//! - `flag` absent: the next rule runs; once all have, a changed path is routed again.
//! - `last`: stop here and route the new path again.
//! - `break`: stop here; the route stays.
//! - `redirect` / `permanent`: answer 302 / 301 with the result as `Location`. A result that
//!   starts with `http://` or `https://` is a 302 redirect whatever the flag, as in nginx.
//!
//! Query strings follow nginx's rule: a replacement with its own `?args` gets the request's
//! arguments appended after them, unless it ends in `?`; one without `?` keeps them.

use super::template::{CaptureNames, Context, RequestView, Template};
use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriteFlag {
    /// No flag: go on with the next rule, then route again if the path changed.
    Next,
    Last,
    Break,
    Redirect,
    Permanent,
}

impl RewriteFlag {
    pub fn parse(flag: Option<&str>) -> Result<Self, String> {
        Ok(match flag {
            None => Self::Next,
            Some("last") => Self::Last,
            Some("break") => Self::Break,
            Some("redirect") => Self::Redirect,
            Some("permanent") => Self::Permanent,
            Some(other) => {
                return Err(format!(
                    "unknown rewrite flag {other:?}; expected \"last\", \"break\", \"redirect\" or \"permanent\""
                ));
            }
        })
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rewrite {
    regex: Regex,
    to: Template,
    flag: RewriteFlag,
}

impl Rewrite {
    pub fn compile(regex: &str, to: &str, flag: Option<&str>) -> Result<Self, RewriteError> {
        let regex = Regex::new(regex).map_err(|e| RewriteError::Regex(e.to_string()))?;
        let mut names = Vec::new();
        let to = Template::compile(to, CaptureNames::of(&regex, &mut names))
            .map_err(RewriteError::To)?;
        let flag = RewriteFlag::parse(flag).map_err(RewriteError::Flag)?;
        Ok(Self { regex, to, flag })
    }
}

/// Which part of a rule is wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum RewriteError {
    Regex(String),
    To(String),
    Flag(String),
}

/// What the rules made of a request's path and query.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// No rule matched.
    Unchanged,
    /// A new path and query; `reroute` when the router must pick a route for it again.
    Path {
        path: String,
        query: Option<String>,
        reroute: bool,
    },
    /// Answer with a redirect.
    Redirect {
        status: http::StatusCode,
        location: String,
    },
}

/// Runs `rules` over `path` and `query`.
pub fn apply(
    rules: &[Rewrite],
    request: &RequestView<'_>,
    path: &str,
    query: Option<&str>,
) -> Rewritten {
    let mut current: Option<(String, Option<String>)> = None;
    let mut captures: Vec<Option<String>> = Vec::new();
    for rule in rules {
        let (path_now, query_now) = match &current {
            Some((p, q)) => (p.as_str(), q.as_deref()),
            None => (path, query),
        };
        let Some(found) = rule.regex.captures(path_now) else {
            continue;
        };
        captures.clear();
        captures.extend(found.iter().map(|m| m.map(|m| m.as_str().to_owned())));
        let result = rule.to.expand(&Context {
            request,
            path: path_now,
            query: query_now,
            captures: &captures,
        });
        let (new_path, new_query) = split_query(&result, query_now);
        let absolute = new_path.starts_with("http://") || new_path.starts_with("https://");
        if absolute || matches!(rule.flag, RewriteFlag::Redirect | RewriteFlag::Permanent) {
            let status = if rule.flag == RewriteFlag::Permanent {
                http::StatusCode::MOVED_PERMANENTLY
            } else {
                http::StatusCode::FOUND
            };
            let location = match new_query {
                Some(q) if !q.is_empty() => format!("{new_path}?{q}"),
                _ => new_path,
            };
            return Rewritten::Redirect { status, location };
        }
        if matches!(rule.flag, RewriteFlag::Last | RewriteFlag::Break) {
            return Rewritten::Path {
                path: new_path,
                query: new_query,
                reroute: rule.flag == RewriteFlag::Last,
            };
        }
        current = Some((new_path, new_query));
    }
    match current {
        Some((path, query)) => Rewritten::Path {
            path,
            query,
            reroute: true,
        },
        None => Rewritten::Unchanged,
    }
}

/// nginx's rule for a replacement's query: its own arguments, then the request's unless it
/// ends in `?`; the request's alone when it has none.
fn split_query(result: &str, query: Option<&str>) -> (String, Option<String>) {
    if let Some(result) = result.strip_suffix('?') {
        // A final `?`: the request's arguments are dropped.
        return match result.split_once('?') {
            Some((path, own)) => (path.to_owned(), (!own.is_empty()).then(|| own.to_owned())),
            None => (result.to_owned(), None),
        };
    }
    match result.split_once('?') {
        None => (result.to_owned(), query.map(str::to_owned)),
        Some((path, own)) => {
            let query = match (own.is_empty(), query.filter(|q| !q.is_empty())) {
                (true, None) => None,
                (true, Some(q)) => Some(q.to_owned()),
                (false, None) => Some(own.to_owned()),
                (false, Some(q)) => Some(format!("{own}&{q}")),
            };
            (path.to_owned(), query)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::template::RequestView;
    use http::{HeaderMap, Method};

    fn run(rules: &[(&str, &str, Option<&str>)], path: &str, query: Option<&str>) -> Rewritten {
        let rules: Vec<Rewrite> = rules
            .iter()
            .map(|(r, t, f)| Rewrite::compile(r, t, *f).unwrap())
            .collect();
        let headers = HeaderMap::new();
        let request = RequestView {
            method: &Method::GET,
            request_uri: "/x",
            host: "example.com",
            https: false,
            client: "127.0.0.1".parse().unwrap(),
            headers: &headers,
        };
        apply(&rules, &request, path, query)
    }

    fn path(path: &str, query: Option<&str>, reroute: bool) -> Rewritten {
        Rewritten::Path {
            path: path.into(),
            query: query.map(Into::into),
            reroute,
        }
    }

    #[test]
    fn captures_and_nginx_query_rule() {
        let rule = [(r"^/users/(\d+)/orders$", "/orders?user=$1", Some("break"))];
        assert_eq!(
            run(&rule, "/users/42/orders", Some("page=2")),
            path("/orders", Some("user=42&page=2"), false)
        );
        assert_eq!(
            run(&rule, "/users/42/orders", None),
            path("/orders", Some("user=42"), false)
        );
        let drop = [(r"^/old/(.*)$", "/new/$1?", Some("break"))];
        assert_eq!(
            run(&drop, "/old/a", Some("x=1")),
            path("/new/a", None, false)
        );
        let own_drop = [(r"^/old/(.*)$", "/new/$1?v=2?", Some("break"))];
        assert_eq!(
            run(&own_drop, "/old/a", Some("x=1")),
            path("/new/a", Some("v=2"), false)
        );
        let keep = [(r"^/old/(.*)$", "/new/$1", Some("break"))];
        assert_eq!(
            run(&keep, "/old/a", Some("x=1")),
            path("/new/a", Some("x=1"), false)
        );
    }

    #[test]
    fn no_match_leaves_the_path() {
        let rule = [(r"^/users/(\d+)$", "/u/$1", None)];
        assert_eq!(run(&rule, "/users/x", None), Rewritten::Unchanged);
    }

    #[test]
    fn rules_chain_and_flags_stop() {
        let rules = [
            ("^/a/(.*)$", "/b/$1", None),
            ("^/b/(.*)$", "/c/$1", Some("last")),
            ("^/c/(.*)$", "/d/$1", None),
        ];
        assert_eq!(run(&rules, "/a/x", None), path("/c/x", None, true));
        let chain = [("^/a/(.*)$", "/b/$1", None), ("^/b/(.*)$", "/c/$1", None)];
        assert_eq!(run(&chain, "/a/x", None), path("/c/x", None, true));
    }

    #[test]
    fn redirects() {
        let permanent = [("^/old$", "/new", Some("permanent"))];
        assert_eq!(
            run(&permanent, "/old", Some("q=1")),
            Rewritten::Redirect {
                status: http::StatusCode::MOVED_PERMANENTLY,
                location: "/new?q=1".into()
            }
        );
        let absolute = [("^/(.*)$", "https://$host/$1", None)];
        assert_eq!(
            run(&absolute, "/a", None),
            Rewritten::Redirect {
                status: http::StatusCode::FOUND,
                location: "https://example.com/a".into()
            }
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(matches!(
            Rewrite::compile("(", "/x", None),
            Err(RewriteError::Regex(_))
        ));
        assert!(matches!(
            Rewrite::compile("^/(a)$", "/$2", None),
            Err(RewriteError::To(_))
        ));
        assert!(matches!(
            Rewrite::compile("^/$", "/", Some("stop")),
            Err(RewriteError::Flag(_))
        ));
    }
}
