//! `[forward_auth.NAME]`: ask an authentication service, one of the configured upstreams,
//! whether a request may go on (nginx's `auth_request`, Traefik's ForwardAuth).

use super::errors::{ConfigError, Locator};
use super::{ConfigDuration, KeyList, KeyPart};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

/// The longest a decision may be remembered.
const MAX_CACHE_FOR: Duration = Duration::from_secs(3600);

/// One named forward-auth check; routes name it in `forward_auth = "NAME"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// The `[upstream.NAME]` the check goes to (its servers, health, breaker and TLS).
    pub upstream: Spanned<String>,
    /// The path (and query) asked.
    #[serde(default = "default_uri")]
    pub uri: Spanned<String>,
    /// Client request headers copied onto the check.
    #[serde(default)]
    pub request_headers: Vec<Spanned<String>>,
    /// Headers of an admitting (2xx) answer copied onto the request that goes upstream
    /// (the client's own copies are always removed).
    #[serde(default)]
    pub copy_headers: Vec<Spanned<String>>,
    /// How long the whole check may take; past it the client gets 500.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// How long an admission is remembered per `cache_key`; 0 asks every time.
    #[serde(default)]
    pub cache_for: ConfigDuration,
    /// What an admission is remembered by: `"header:NAME"`, `"cookie:NAME"`, `"client_ip"`,
    /// or a list of these.
    #[serde(default = "default_cache_key")]
    pub cache_key: Spanned<KeyList>,
}

fn default_uri() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}

fn default_cache_key() -> Spanned<KeyList> {
    Spanned::new(0..0, KeyList(Vec::new()))
}

impl ForwardAuthConfig {
    /// The cache key's parts (`route` is not one: it would share one user's admission with
    /// everyone on the route).
    pub fn cache_parts(&self) -> Result<Vec<KeyPart>, String> {
        self.cache_key
            .get_ref()
            .0
            .iter()
            .map(|text| match KeyPart::parse(text)? {
                KeyPart::Route => Err(format!(
                    "invalid cache key {text:?}: it would share one client's admission with every other; use \"header:NAME\", \"cookie:NAME\" or \"client_ip\""
                )),
                part => Ok(part),
            })
            .collect()
    }
}

pub(super) fn validate(
    name: &str,
    auth: &ForwardAuthConfig,
    config: &super::Config,
    upstream_may_be: impl Fn(&str) -> bool,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let key = |field: &str| format!("forward_auth.{name}.{field}");
    let place = |field: &str| at.span_of(&["forward_auth", name, field]);
    let upstream = auth.upstream.get_ref();
    if !config.upstreams.contains_key(upstream) && !upstream_may_be(upstream) {
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        errors.push(at.error(
            auth.upstream.span(),
            key("upstream"),
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
    let uri = auth.uri.get_ref();
    if !uri.starts_with('/') || http::uri::PathAndQuery::try_from(uri.as_str()).is_err() {
        errors.push(at.error(
            if auth.uri.span() == (0..0) {
                place("uri")
            } else {
                auth.uri.span()
            },
            key("uri"),
            format!("{uri:?} is not a path such as \"/check\" (with an optional query)"),
        ));
    }
    for (field, list) in [
        ("request_headers", &auth.request_headers),
        ("copy_headers", &auth.copy_headers),
    ] {
        for (i, header) in list.iter().enumerate() {
            if http::HeaderName::from_bytes(header.get_ref().as_bytes()).is_err() {
                errors.push(at.error(
                    header.span(),
                    key(&format!("{field}[{i}]")),
                    format!("{:?} is not a header name", header.get_ref()),
                ));
            }
        }
    }
    if auth.timeout.0.is_zero() {
        errors.push(at.error(
            place("timeout"),
            key("timeout"),
            "must be greater than zero",
        ));
    }
    if auth.cache_for.0 > MAX_CACHE_FOR {
        errors.push(at.error(
            place("cache_for"),
            key("cache_for"),
            "must be at most 1h (a revoked credential stays admitted this long)",
        ));
    }
    let key_place = || {
        if auth.cache_key.span() == (0..0) {
            place("cache_for")
        } else {
            auth.cache_key.span()
        }
    };
    match auth.cache_parts() {
        Err(message) => errors.push(at.error(key_place(), key("cache_key"), message)),
        Ok(parts) if parts.is_empty() && !auth.cache_for.0.is_zero() => errors.push(at.error(
            key_place(),
            key("cache_key"),
            "cache_for needs a cache_key (e.g. [\"header:authorization\"]): without one, one client's admission would let in every other",
        )),
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_take_the_limit_grammar_without_route() {
        let auth: ForwardAuthConfig = toml::from_str(
            "upstream = \"a\"\ncache_key = [\"header:Authorization\", \"cookie:sid\", \"client_ip\"]",
        )
        .unwrap();
        assert_eq!(auth.cache_parts().unwrap().len(), 3);
        let auth: ForwardAuthConfig =
            toml::from_str("upstream = \"a\"\ncache_key = \"route\"").unwrap();
        assert!(auth.cache_parts().is_err());
        let auth: ForwardAuthConfig = toml::from_str("upstream = \"a\"").unwrap();
        assert_eq!(auth.uri.get_ref(), "/");
        assert_eq!(auth.timeout.0, Duration::from_secs(1));
        assert!(auth.cache_for.0.is_zero());
    }
}
