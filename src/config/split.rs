//! A route's traffic split and mirror (nginx's `split_clients` and `mirror`, Envoy's weighted
//! clusters and request mirroring): `[[route.split]]`, `split_by`, `[[route.pick_upstream]]`
//! and `[route.mirror]`, and their checks.

use super::errors::{ConfigError, Locator};
use super::gaps::Gaps;
use super::{ByteSize, Config, HashKey, RouteConfig};
use serde::Deserialize;
use toml::Spanned;

/// The largest total weight of a split: buckets are counted in `u32`, and a finer split than
/// one in a million says nothing more.
pub const MAX_SPLIT_TOTAL: u64 = 1_000_000;

/// `[[route.split]]`: one side of a weighted split.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// The `[upstream.NAME]` this side sends to.
    pub upstream: Spanned<String>,
    /// Its share of the route's requests, against the sum of the weights.
    pub weight: Spanned<u32>,
}

/// `[[route.pick_upstream]]`: requests with this header (or cookie) value go to `upstream`,
/// whatever the split says. Checked in order; the first match wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickUpstreamConfig {
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub cookie: Option<Spanned<String>>,
    /// The value that must match exactly (any of the header's values, or the cookie's).
    pub value: Spanned<String>,
    pub upstream: Spanned<String>,
}

/// `[route.mirror]`: a copy of each request goes to a shadow upstream, whose answer is read
/// and thrown away.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub upstream: Spanned<String>,
    /// Requests with a larger body are not mirrored (counted as skipped).
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: ByteSize,
    /// Copies outstanding at once; past it new ones are dropped (and counted).
    #[serde(default = "default_mirror_in_flight")]
    pub max_in_flight: Spanned<u32>,
    /// The share of requests mirrored, 0 to 100.
    #[serde(default = "default_mirror_percent")]
    pub percent: Spanned<u32>,
}

fn default_mirror_body() -> ByteSize {
    ByteSize::kib(64)
}

fn default_mirror_in_flight() -> Spanned<u32> {
    Spanned::new(0..0, 64)
}

fn default_mirror_percent() -> Spanned<u32> {
    Spanned::new(0..0, 100)
}

/// What a sticky split hashes a request by: `split_by`, in the hash keys' grammar (`HashKey`)
/// restricted to what names a client: `client_ip`, `header:NAME`, `cookie:NAME`.
pub fn parse_split_by(text: &str) -> Result<HashKey, String> {
    match HashKey::parse(text) {
        Ok(key @ (HashKey::ClientIp | HashKey::Header(_) | HashKey::Cookie(_))) => Ok(key),
        Ok(other) => Err(format!(
            "split_by {other} does not name a client (one client would land on both sides); expected \"cookie:NAME\", \"header:NAME\" or \"client_ip\""
        )),
        Err(why) => Err(format!(
            "invalid split_by {text:?}: {why}; expected \"cookie:NAME\", \"header:NAME\" or \"client_ip\""
        )),
    }
}

impl RouteConfig {
    /// The upstream that stands for the route where one name is needed (requests answered
    /// before an upstream is chosen, the route's listing): `upstream`, or else the split's
    /// heaviest side (the first of equals).
    pub fn primary_upstream(&self) -> Option<&Spanned<String>> {
        if let Some(upstream) = &self.upstream {
            return Some(upstream);
        }
        let mut best: Option<&Spanned<SplitConfig>> = None;
        for side in &self.split {
            if best.is_none_or(|b| *side.get_ref().weight.get_ref() > *b.get_ref().weight.get_ref())
            {
                best = Some(side);
            }
        }
        best.map(|side| &side.get_ref().upstream)
    }

    /// Whether the route chooses among upstreams per request.
    pub fn has_traffic_rules(&self) -> bool {
        !self.split.is_empty() || !self.pick_upstream.is_empty()
    }
}

/// Checks one route's upstream, split, picks and mirror.
pub(super) fn validate(
    route: &RouteConfig,
    index: usize,
    config: &Config,
    gaps: &Gaps,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let key = |field: &str| format!("route[{index}].{field}");
    let check_upstream = |name: &Spanned<String>, field: String, errors: &mut Vec<ConfigError>| {
        let upstream = name.get_ref();
        if !config.upstreams.contains_key(upstream) && !gaps.upstreams.may_be(upstream) {
            let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
            errors.push(at.error(
                name.span(),
                field,
                format!(
                    "no upstream named {upstream:?} (configured: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    };
    match (&route.upstream, route.split.is_empty()) {
        (Some(upstream), true) => check_upstream(upstream, key("upstream"), errors),
        (Some(upstream), false) => errors.push(at.error(
            upstream.span(),
            key("upstream"),
            "a route with [[route.split]] sends to the split's upstreams: remove `upstream`, or make it one side of the split",
        )),
        (None, true)
            if route.answer.is_none() && route.files.is_none() && route.rewrite.is_empty() =>
        {
            errors.push(at.error(
            at.span_of_item(&["route"], index),
            key("upstream"),
            "the route needs an `upstream` (or a [[route.split]], a `return`, `files`, or rewrites that redirect)",
            ))
        }
        (None, true) => {}
        (None, false) => {}
    }
    let mut total: u64 = 0;
    for (i, side) in route.split.iter().enumerate() {
        let side = side.get_ref();
        check_upstream(&side.upstream, key(&format!("split[{i}].upstream")), errors);
        if route.split[..i]
            .iter()
            .any(|earlier| earlier.get_ref().upstream.get_ref() == side.upstream.get_ref())
        {
            errors.push(at.error(
                side.upstream.span(),
                key(&format!("split[{i}].upstream")),
                format!(
                    "upstream {:?} is in the split twice; give it one entry with the sum of the weights",
                    side.upstream.get_ref()
                ),
            ));
        }
        total += u64::from(*side.weight.get_ref());
    }
    if let Some(first) = route.split.first() {
        if total == 0 {
            errors.push(at.error(
                first.span(),
                key("split"),
                "the split's weights add up to 0: give at least one side a weight above 0",
            ));
        } else if total > MAX_SPLIT_TOTAL {
            errors.push(at.error(
                first.span(),
                key("split"),
                format!("the split's weights add up to {total}; at most {MAX_SPLIT_TOTAL}"),
            ));
        }
    }
    if let Some(by) = &route.split_by {
        if route.split.is_empty() {
            errors.push(at.error(
                by.span(),
                key("split_by"),
                "split_by without a [[route.split]] has nothing to make sticky",
            ));
        } else if let Err(message) = parse_split_by(by.get_ref()) {
            errors.push(at.error(by.span(), key("split_by"), message));
        }
    }
    for (i, pick) in route.pick_upstream.iter().enumerate() {
        let field = |name: &str| key(&format!("pick_upstream[{i}].{name}"));
        check_upstream(&pick.upstream, field("upstream"), errors);
        match (&pick.header, &pick.cookie) {
            (Some(header), None) => {
                if http::HeaderName::from_bytes(header.get_ref().as_bytes()).is_err() {
                    errors.push(at.error(
                        header.span(),
                        field("header"),
                        format!("{:?} is not a header name", header.get_ref()),
                    ));
                }
            }
            (None, Some(cookie)) => {
                if let Err(why) = HashKey::parse(&format!("cookie:{}", cookie.get_ref())) {
                    errors.push(at.error(cookie.span(), field("cookie"), why));
                }
            }
            (Some(_), Some(cookie)) => errors.push(at.error(
                cookie.span(),
                field("cookie"),
                "give one of `header` and `cookie`, not both",
            )),
            (None, None) => errors.push(at.error(
                pick.value.span(),
                field("header"),
                "give `header = \"NAME\"` or `cookie = \"NAME\"` to match the value in",
            )),
        }
    }
    if let Some(mirror) = &route.mirror {
        let mirror = mirror.get_ref();
        check_upstream(&mirror.upstream, key("mirror.upstream"), errors);
        if *mirror.percent.get_ref() > 100 {
            errors.push(at.error(
                mirror.percent.span(),
                key("mirror.percent"),
                "must be between 0 and 100",
            ));
        }
        if *mirror.max_in_flight.get_ref() == 0 {
            errors.push(at.error(
                mirror.max_in_flight.span(),
                key("mirror.max_in_flight"),
                "must be at least 1",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_takes_what_names_a_client() {
        assert_eq!(parse_split_by("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(
            parse_split_by("cookie:session"),
            Ok(HashKey::Cookie("session".into()))
        );
        assert_eq!(
            parse_split_by("header:X-User"),
            Ok(HashKey::Header(http::HeaderName::from_static("x-user")))
        );
        for bad in ["", "path", "uri", "cookie:", "header:a b", "ip", "query:x"] {
            assert!(parse_split_by(bad).is_err(), "{bad:?} accepted");
        }
    }
}
