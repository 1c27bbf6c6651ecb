//! `gatehouse route` and `gatehouse check --routes-test`: a config compiled as the proxy
//! compiles it, and requests explained by the proxy's own routing code (see
//! `proxy::explain`), one at a time or as a file of cases with expected results (in the
//! manner of Envoy's router check tool), so that operators can pin their routing in CI.

use crate::cache::CacheRegistry;
use crate::config::Config;
use crate::limit::LimiterRegistry;
use crate::metrics::Metrics;
use crate::proxy::ClientInfo;
use crate::proxy::explain::{Explanation, Outcome, explain};
use crate::snapshot::Snapshot;
use crate::upstream::ServerRegistry;
use crate::upstream::discovery::AddressBook;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

/// A compiled config, ready to explain requests.
pub struct Routes {
    snapshot: Snapshot,
    listeners: HashMap<String, usize>,
}

/// One request to explain.
pub struct Probe<'a> {
    pub method: &'a str,
    /// `http://host/path?query` (the host becomes the Host field), or an origin-form target
    /// with a `Host` among `headers`.
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub client: IpAddr,
    /// The listener it arrives on, by name; the first listener by default.
    pub listener: Option<&'a str>,
}

impl Routes {
    pub fn compile(config: Config) -> Result<Self, String> {
        let metrics = Metrics::new().map_err(|e| e.to_string())?;
        let listeners: HashMap<String, usize> = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.get_ref().clone(), i))
            .collect();
        let snapshot = Snapshot::compile(
            config,
            &ServerRegistry::new(),
            &AddressBook::new(),
            &CacheRegistry::new(),
            &LimiterRegistry::new(),
            &crate::shared::RedisRegistry::new(),
            &metrics,
            &listeners,
            &crate::auth::AuthRegistry::new(),
            &crate::trace::TraceRegistry::new(),
        )?;
        Ok(Self {
            snapshot,
            listeners,
        })
    }

    pub fn explain(&self, probe: &Probe<'_>) -> Result<Explanation, String> {
        let listener = match probe.listener {
            Some(name) => *self
                .listeners
                .get(name)
                .ok_or_else(|| format!("no listener named {name:?}"))?,
            None => 0,
        };
        let https = probe.url.starts_with("https://")
            || self
                .snapshot
                .config
                .listeners
                .get(listener)
                .is_some_and(|l| l.tls.is_some());
        let uri: http::Uri = probe
            .url
            .parse()
            .map_err(|e| format!("invalid URL {:?}: {e}", probe.url))?;
        let mut builder = http::Request::builder().method(probe.method);
        if let Some(authority) = uri.authority() {
            builder = builder.header(http::header::HOST, authority.as_str());
        }
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        builder = builder.uri(target);
        for (name, value) in probe.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(())
            .map_err(|e| format!("invalid request: {e}"))?;
        let mut client = ClientInfo::new(listener, SocketAddr::new(probe.client, 0));
        client.https = https;
        Ok(explain(&self.snapshot, &client, request))
    }

    /// Runs a file of cases; the failures, each naming its case.
    pub fn run_cases(&self, text: &str) -> Result<(usize, Vec<String>), String> {
        let file: CaseFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut failures = Vec::new();
        for (i, case) in file.case.iter().enumerate() {
            let label = format!("case[{i}] {}", case.request);
            match self.check(case) {
                Ok(problems) => {
                    failures.extend(problems.into_iter().map(|p| format!("{label}: {p}")))
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
        Ok((file.case.len(), failures))
    }

    fn check(&self, case: &Case) -> Result<Vec<String>, String> {
        let (method, url) = case
            .request
            .split_once(' ')
            .ok_or("write the request as \"METHOD URL\"")?;
        let headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let client = match &case.client {
            Some(text) => text
                .parse()
                .map_err(|_| format!("invalid client address {text:?}"))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let explanation = self.explain(&Probe {
            method,
            url,
            headers: &headers,
            client,
            listener: case.listener.as_deref(),
        })?;
        let mut problems = Vec::new();
        let expect = |problems: &mut Vec<String>, what: &str, expected: &str, actual: &str| {
            if expected != actual {
                problems.push(format!("{what}: expected {expected:?}, got {actual:?}"));
            }
        };
        if let Some(route) = &case.route {
            let actual = explanation
                .route
                .as_ref()
                .map_or("none", |(n, _)| n.as_str());
            expect(&mut problems, "route", route, actual);
        }
        match &explanation.outcome {
            Outcome::Answer {
                status, location, ..
            } => {
                if let Some(expected) = case.status {
                    expect(
                        &mut problems,
                        "status",
                        &expected.to_string(),
                        &status.to_string(),
                    );
                }
                if let Some(expected) = &case.location {
                    expect(
                        &mut problems,
                        "location",
                        expected,
                        location.as_deref().unwrap_or(""),
                    );
                }
                for (what, given) in [("upstream", &case.upstream), ("target", &case.target)] {
                    if given.is_some() {
                        problems.push(format!(
                            "{what}: expected a forwarded request, got {status}"
                        ));
                    }
                }
            }
            Outcome::Forward {
                upstream,
                target,
                set,
                ..
            } => {
                if let Some(status) = case.status {
                    problems.push(format!(
                        "status: expected {status} at the edge, but the request is forwarded"
                    ));
                }
                if let Some(expected) = &case.upstream {
                    expect(&mut problems, "upstream", expected, upstream);
                }
                if let Some(expected) = &case.target {
                    expect(&mut problems, "target", expected, target);
                }
                for (name, value) in &case.set_headers {
                    let actual = set
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map_or("", |(_, v)| v.as_str());
                    expect(&mut problems, &format!("header {name}"), value, actual);
                }
            }
        }
        Ok(problems)
    }
}

/// A routes-test file: `[[case]]` entries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Case>,
}

/// One request and what it must come to; only what is given is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// `"GET http://host/path?query"`.
    request: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    listener: Option<String>,
    /// The route's name.
    #[serde(default)]
    route: Option<String>,
    /// For a forwarded request: the upstream and the target it gets.
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    target: Option<String>,
    /// Request headers the route sets, with their values.
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    /// For an answer at the edge: its status and Location.
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    location: Option<String>,
}
