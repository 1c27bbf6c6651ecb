//! What the proxy would do with a request, without doing it: the route chosen (and the routes
//! that also fit and lost), the answer given at the edge or the request sent upstream, and the
//! policies on the way. `gatehouse route` prints it and `gatehouse check --routes-test`
//! compares it with expectations. It runs the handler's own routing, rewriting and header
//! code over a compiled snapshot; nothing is sent and no limit is counted.

use super::{
    ClientInfo, EdgeRedirect, LocationState, choose_route, redirect_target, templated_headers,
    upstream_uri, with_path,
};
use crate::headers;
use crate::route::{
    PathPattern, RouteRequest, host_and_path_fit, host_without_port, normalize_path,
};
use crate::snapshot::Snapshot;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Uri};
use std::borrow::Cow;
use std::fmt::Write as _;

/// The answer a request gets at the edge, or where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by gatehouse: the status, a Location, and why.
    Answer {
        status: u16,
        location: Option<String>,
        why: String,
    },
    /// Forwarded: the upstream, the target it gets, and the header changes (beyond the
    /// forwarding fields every request gets).
    Forward {
        upstream: String,
        target: String,
        set: Vec<(String, String)>,
        removed: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Explanation {
    /// The chosen route's name, and how its path matches.
    pub route: Option<(String, String)>,
    /// Routes that fit the host and path too, with why they lost.
    pub beaten: Vec<(String, String)>,
    pub outcome: Outcome,
    /// The policies that apply on the way, in the order they run.
    pub policies: Vec<String>,
}

fn answer(status: StatusCode, location: Option<String>, why: &str) -> Outcome {
    Outcome::Answer {
        status: status.as_u16(),
        location,
        why: why.to_owned(),
    }
}

/// Explains `request` from `client` under `snapshot`.
pub fn explain(
    snapshot: &Snapshot,
    client: &ClientInfo,
    request: http::Request<()>,
) -> Explanation {
    let (mut parts, ()) = request.into_parts();
    let mut explanation = Explanation {
        route: None,
        beaten: Vec::new(),
        outcome: answer(
            StatusCode::NOT_FOUND,
            None,
            "no route for this host and path",
        ),
        policies: Vec::new(),
    };
    let host_value = match headers::request_host(&parts) {
        Ok(host) => host,
        Err(error) => {
            explanation.outcome = answer(StatusCode::BAD_REQUEST, None, error.message());
            return explanation;
        }
    };
    let mut sent_uri: Option<Box<Uri>> = None;
    match normalize_path(parts.uri.path(), snapshot.limits.merge_slashes) {
        Ok(Cow::Borrowed(_)) => {}
        Ok(Cow::Owned(path)) => match with_path(&parts.uri, path) {
            Some(uri) => sent_uri = Some(Box::new(std::mem::replace(&mut parts.uri, uri))),
            None => {
                explanation.outcome =
                    answer(StatusCode::BAD_REQUEST, None, "invalid request target");
                return explanation;
            }
        },
        Err(error) => {
            explanation.outcome = answer(StatusCode::BAD_REQUEST, None, error.message());
            return explanation;
        }
    }
    let host = host_value.to_str().map(host_without_port).unwrap_or("");
    let original_path = parts.uri.path().to_owned();
    let chosen = match choose_route(snapshot, client, host, &mut parts, &mut sent_uri) {
        Ok(Some(chosen)) => chosen,
        Ok(None) => return explanation,
        Err(message) => {
            explanation.outcome = answer(StatusCode::INTERNAL_SERVER_ERROR, None, message);
            return explanation;
        }
    };
    let route = chosen.route;
    explanation.route = Some((route.name.to_string(), route.path.clone()));
    explanation.beaten = beaten(snapshot, client, host, &original_path, &parts, &route.name);

    if let Some(edge) = chosen.edge {
        let why = match edge {
            EdgeRedirect::Slash => "the prefix without its trailing slash",
            EdgeRedirect::Rewrite(..) => "a rewrite redirects",
        };
        let (status, location) = redirect_target(edge, &parts.uri);
        explanation.outcome = answer(status, Some(location), why);
        return explanation;
    }
    let policies = &mut explanation.policies;
    if !route.access.is_empty() {
        let permitted = route.access.permits(client.addr.ip());
        policies.push(format!(
            "access: {}",
            if permitted { "allowed" } else { "denied" }
        ));
        if !permitted {
            explanation.outcome = answer(StatusCode::FORBIDDEN, None, "the route's access rules");
            return explanation;
        }
    }
    if let Some(cors) = &route.cors {
        policies.push(format!("cors: {}", cors.name));
    }
    if let Some(auth) = &route.auth {
        if let Some((basic, _)) = &auth.basic {
            policies.push(format!("basic_auth: {}", basic.name));
        }
        if let Some((jwt, _)) = &auth.jwt {
            policies.push(format!("jwt: {}", jwt.name));
        }
    }
    if let Some(auth) = &route.forward_auth {
        policies.push(format!("forward_auth: {}", auth.policy.name));
    }
    for limit in route.rate_limits.limiters() {
        if limit.is_shared() {
            policies.push(format!("limit: {} (shared in Redis)", limit.name));
        } else {
            policies.push(format!("limit: {}", limit.name));
        }
    }
    let location = LocationState {
        captures: chosen.captures,
        sent_uri,
        rewritten: chosen.rewritten,
    };
    if let Some(edge_answer) = &route.answer {
        let rendered = super::answer_parts(edge_answer, client, &host_value, &parts, &location);
        explanation.outcome = answer(edge_answer.status, rendered, "the route's return");
        return explanation;
    }
    if let Some(files) = &route.files {
        // What the disk answers now, by the handler's own lookup.
        let served = files.serve(&parts.method, parts.uri.path(), &parts.headers);
        let outcome = match served {
            crate::files::Served::Upstream => None,
            crate::files::Served::File { status, .. } => Some((status, None)),
            crate::files::Served::AddSlash => Some((
                StatusCode::MOVED_PERMANENTLY,
                Some(format!("{}/", parts.uri.path())),
            )),
            crate::files::Served::Status(status) => Some((status, None)),
            crate::files::Served::MethodNotAllowed => Some((StatusCode::METHOD_NOT_ALLOWED, None)),
        };
        match outcome {
            Some((status, location)) => {
                explanation.outcome = answer(status, location, "the route's files");
                return explanation;
            }
            None => policies.push("files: try_files falls back to the upstream".to_owned()),
        }
    }
    let mut route = route;
    if let Some(split) = &route.split {
        let side = std::sync::Arc::clone(split.choose(&parts, client.addr.ip()));
        policies.push(format!(
            "split: {} ({})",
            split
                .names
                .iter()
                .zip(&split.weights)
                .map(|(name, weight)| format!("{name} {weight}"))
                .collect::<Vec<_>>()
                .join(", "),
            match split.chooser.split_by() {
                Some(by) => format!("by {by}"),
                None => "random per request".to_owned(),
            }
        ));
        route = side;
    }
    if let Some(mirror) = &route.mirror {
        policies.push(format!(
            "mirror: {} ({}%)",
            mirror.upstream.name, mirror.percent
        ));
    }
    if let Some(cache) = &route.cache {
        policies.push(format!("cache: {}", cache.name));
    }
    if let Some(compression) = &route.compression {
        policies.push(format!("compression: {}", compression.name));
    }

    // The head as it goes upstream, by the handler's own edits.
    let before = parts.headers.clone();
    let templated = if route.header_templates.is_empty() {
        Vec::new()
    } else {
        templated_headers(&route, &parts, client, &host_value, Some(&location))
    };
    if let Some(set_host) = &route.set_host {
        parts.headers.insert(header::HOST, set_host.clone());
    }
    route.request_headers.apply(&mut parts.headers);
    for (name, value) in templated {
        match value {
            Some(value) if !value.is_empty() => {
                parts.headers.insert(name, value);
            }
            _ => {
                parts.headers.remove(name);
            }
        }
    }
    let target =
        upstream_uri(&parts.uri, &route, location.rewritten).unwrap_or_else(|| parts.uri.clone());
    let (set, removed) = header_changes(&before, &parts.headers);
    explanation.outcome = Outcome::Forward {
        upstream: route.upstream.name.to_string(),
        target: target
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        set,
        removed,
    };
    explanation
}

/// Routes that fit the request's host and path besides `winner`, with why each lost.
fn beaten(
    snapshot: &Snapshot,
    client: &ClientInfo,
    host: &str,
    path: &str,
    parts: &http::request::Parts,
    winner: &str,
) -> Vec<(String, String)> {
    let request = RouteRequest {
        listener: client.listener,
        host,
        path,
        query: parts.uri.query(),
        method: &parts.method,
        headers: &parts.headers,
        client: client.addr.ip(),
    };
    snapshot
        .router
        .entries()
        .filter(|entry| &*entry.target.name != winner && host_and_path_fit(entry, host, path))
        .map(|entry| {
            let why = match entry.matchers.failure(&request) {
                Some(matcher) => format!("its {matcher} matcher does not match"),
                None => match &entry.path {
                    PathPattern::Exact(_) => "an earlier route of the same exact path".to_owned(),
                    PathPattern::Prefix { .. } => {
                        "a more specific host, an exact path, a regex or a longer prefix wins"
                            .to_owned()
                    }
                    PathPattern::Regex(_) => {
                        "a more specific host, an exact path, a stopping prefix or an earlier regex wins"
                            .to_owned()
                    }
                },
            };
            (entry.target.name.to_string(), why)
        })
        .collect()
}

/// Header fields set (new or changed) and removed between two heads.
fn header_changes(before: &HeaderMap, after: &HeaderMap) -> (Vec<(String, String)>, Vec<String>) {
    let mut set = Vec::new();
    for name in after.keys() {
        let new: Vec<&HeaderValue> = after.get_all(name).iter().collect();
        let old: Vec<&HeaderValue> = before.get_all(name).iter().collect();
        if new != old {
            for value in new {
                set.push((
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ));
            }
        }
    }
    let removed = before
        .keys()
        .filter(|name| !after.contains_key(*name))
        .map(HeaderName::to_string)
        .collect();
    (set, removed)
}

impl Explanation {
    /// The text `gatehouse route` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match &self.route {
            Some((name, path)) => {
                let _ = writeln!(out, "route: {name} (path {path})");
            }
            None => out.push_str("route: none\n"),
        }
        for (name, why) in &self.beaten {
            let _ = writeln!(out, "  beat {name}: {why}");
        }
        for policy in &self.policies {
            let _ = writeln!(out, "policy: {policy}");
        }
        match &self.outcome {
            Outcome::Answer {
                status,
                location,
                why,
            } => {
                let _ = write!(out, "answer: {status} ({why})");
                if let Some(location) = location {
                    let _ = write!(out, " Location: {location}");
                }
                out.push('\n');
            }
            Outcome::Forward {
                upstream,
                target,
                set,
                removed,
            } => {
                let _ = writeln!(out, "forward: upstream {upstream}, target {target}");
                for (name, value) in set {
                    let _ = writeln!(out, "  set {name}: {value}");
                }
                for name in removed {
                    let _ = writeln!(out, "  remove {name}");
                }
                out.push_str(
                    "  (and the forwarding fields every request gets: X-Forwarded-For, -Proto, -Host, Via, X-Request-Id; hop-by-hop fields removed)\n",
                );
            }
        }
        out
    }
}
