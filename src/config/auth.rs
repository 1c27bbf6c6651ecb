//! `[basic_auth.NAME]` and `[jwt.NAME]`: the schema, and the checks that read their files
//! (htpasswd, JWKS, secret, CA) so `gatehouse check` and a reload report a bad one at its
//! place in the config.

use super::errors::{ConfigError, Locator};
use super::gaps::Gaps;
use super::{Config, ConfigDuration};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// `[basic_auth.NAME]`: HTTP Basic authentication against an htpasswd file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The realm named in the challenge (`WWW-Authenticate: Basic realm="..."`).
    #[serde(default = "default_realm")]
    pub realm: Spanned<String>,
    /// An htpasswd file (bcrypt, $apr1$ or {SHA} hashes), watched and reloaded on change.
    pub htpasswd: Spanned<String>,
}

fn default_realm() -> Spanned<String> {
    Spanned::new(0..0, "restricted".into())
}

/// `[jwt.NAME]`: bearer JWT verification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` a token must have; any when not set.
    #[serde(default)]
    pub issuer: Option<Spanned<String>>,
    /// One of these must be in the token's `aud`; not checked when not set.
    #[serde(default)]
    pub audiences: Option<Vec<Spanned<String>>>,
    /// A JWKS (JSON Web Key Set) file, watched and reloaded on change.
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    /// An https URL serving a JWKS, fetched in the background every `refresh`.
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    #[serde(default = "default_refresh")]
    pub refresh: ConfigDuration,
    /// A CA bundle (PEM) to verify `jwks_url`'s server with; by default the system's roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// A file holding the HS256 shared secret (a trailing newline is not part of it).
    #[serde(default)]
    pub secret_file: Option<Spanned<String>>,
    /// Accepted algorithms; by default every one of RS256, ES256, EdDSA, HS256 with a key.
    #[serde(default)]
    pub algorithms: Option<Spanned<Vec<String>>>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: ConfigDuration,
    /// Claims copied into request headers (`{ sub = "x-user-id" }`); client-sent copies of
    /// those headers are always removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, Spanned<String>>,
    /// The header carrying the token (`Bearer` scheme).
    #[serde(default = "default_jwt_header")]
    pub header: Spanned<String>,
}

fn default_refresh() -> ConfigDuration {
    ConfigDuration::from_secs(300)
}

fn default_leeway() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

fn default_jwt_header() -> Spanned<String> {
    Spanned::new(0..0, "authorization".into())
}

/// The HS256 secret in `secret_file`: its bytes without a trailing newline.
pub fn read_secret(path: &str) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{path}: the secret is empty"));
    }
    Ok(bytes)
}

/// The https URL's parts: host, port, path and query.
pub fn parse_jwks_url(url: &str) -> Result<(String, u16, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a valid URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url:?}: jwks_url must be an https:// URL"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok((host, port, path))
}

/// What `gatehouse check` prints as warnings: htpasswd lines left out (`file:line: why`).
pub fn auth_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, basic) in &config.basic_auths {
        if let Ok(file) = crate::auth::htpasswd::read(basic.htpasswd.get_ref()) {
            for skipped in &file.skipped {
                warnings.push(format!(
                    "{}:{}: {} (basic_auth.{name})",
                    basic.htpasswd.get_ref(),
                    skipped.line,
                    skipped.message
                ));
            }
        }
    }
    warnings
}

pub(super) fn validate(
    config: &Config,
    gaps: &Gaps,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    for (name, basic) in &config.basic_auths {
        let key = |k: &str| format!("basic_auth.{name}.{k}");
        if http::HeaderValue::from_str(basic.realm.get_ref()).is_err() {
            errors.push(at.error(basic.realm.span(), key("realm"), "not a valid header value"));
        }
        // Lines left out are logged when the file is loaded, and printed by `gatehouse check`.
        if let Err(message) = crate::auth::htpasswd::read(basic.htpasswd.get_ref()) {
            errors.push(at.error(basic.htpasswd.span(), key("htpasswd"), message));
        }
    }
    for (name, jwt) in &config.jwts {
        check_jwt(name, jwt, at, errors);
    }
    for (route, &i) in config.routes.iter().zip(&gaps.route_at) {
        let key = |field: &str| format!("route[{i}].{field}");
        if let Some(basic) = &route.basic_auth
            && !config.basic_auths.contains_key(basic.get_ref())
            && !gaps.basic_auths.may_be(basic.get_ref())
        {
            let known: Vec<&str> = config.basic_auths.keys().map(String::as_str).collect();
            errors.push(at.error(
                basic.span(),
                key("basic_auth"),
                format!(
                    "no basic_auth named {:?} (configured: {})",
                    basic.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
        if let (Some(_), Some(name)) = (&route.basic_auth, &route.jwt)
            && let Some(jwt) = config.jwts.get(name.get_ref())
            && jwt.header.get_ref().eq_ignore_ascii_case("authorization")
        {
            errors.push(at.error(
                name.span(),
                key("jwt"),
                "basic_auth and this jwt both read the Authorization header, which no request can satisfy; give the jwt its own header",
            ));
        }
        if let Some(jwt) = &route.jwt
            && !config.jwts.contains_key(jwt.get_ref())
            && !gaps.jwts.may_be(jwt.get_ref())
        {
            let known: Vec<&str> = config.jwts.keys().map(String::as_str).collect();
            errors.push(at.error(
                jwt.span(),
                key("jwt"),
                format!(
                    "no jwt named {:?} (configured: {})",
                    jwt.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The algorithms of `algorithms`, or the error and the index at fault.
pub fn jwt_algorithms(jwt: &JwtConfig) -> Result<Vec<jsonwebtoken::Algorithm>, String> {
    match &jwt.algorithms {
        Some(list) => list
            .get_ref()
            .iter()
            .map(|a| crate::auth::jwt::parse_algorithm(a))
            .collect(),
        None => Ok(Vec::new()),
    }
}

fn check_jwt(name: &str, jwt: &JwtConfig, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    let key = |k: &str| format!("jwt.{name}.{k}");
    let section = || at.span_of(&["jwt", name]);
    let algorithms = match jwt_algorithms(jwt) {
        Ok(list) => {
            if list.is_empty() && jwt.algorithms.is_some() {
                errors.push(at.error(
                    at.span_of(&["jwt", name, "algorithms"]),
                    key("algorithms"),
                    "the list is empty; leave it out to accept every algorithm with a key",
                ));
            }
            list
        }
        Err(message) => {
            errors.push(at.error(
                at.span_of(&["jwt", name, "algorithms"]),
                key("algorithms"),
                message,
            ));
            Vec::new()
        }
    };
    match (&jwt.jwks_file, &jwt.jwks_url) {
        (Some(file), Some(_)) => errors.push(at.error(
            file.span(),
            key("jwks_file"),
            "give jwks_file or jwks_url, not both",
        )),
        (Some(file), None) => {
            let read = std::fs::read(file.get_ref())
                .map_err(|e| format!("{}: cannot read: {e}", file.get_ref()))
                .and_then(|bytes| {
                    crate::auth::jwt::parse_jwks(&bytes, &algorithms)
                        .map_err(|e| format!("{}: {e}", file.get_ref()))
                });
            if let Err(message) = read {
                errors.push(at.error(file.span(), key("jwks_file"), message));
            }
        }
        (None, Some(url)) => {
            if let Err(message) = parse_jwks_url(url.get_ref()) {
                errors.push(at.error(url.span(), key("jwks_url"), message));
            }
        }
        (None, None) if jwt.secret_file.is_none() => errors.push(at.error(
            section(),
            format!("jwt.{name}"),
            "no keys: give jwks_file, jwks_url or secret_file",
        )),
        (None, None) => {}
    }
    if let Some(ca) = &jwt.ca_file {
        if jwt.jwks_url.is_none() {
            errors.push(at.error(ca.span(), key("ca_file"), "only used with jwks_url"));
        } else if let Err(message) = crate::certs::read_roots(ca.get_ref()) {
            errors.push(at.error(ca.span(), key("ca_file"), message));
        }
    }
    if let Some(secret) = &jwt.secret_file
        && let Err(message) = read_secret(secret.get_ref())
    {
        errors.push(at.error(secret.span(), key("secret_file"), message));
    }
    if jwt.refresh.0 < std::time::Duration::from_secs(1) {
        errors.push(at.error(
            at.span_of(&["jwt", name, "refresh"]),
            key("refresh"),
            "must be at least 1s",
        ));
    }
    if http::HeaderName::from_bytes(jwt.header.get_ref().as_bytes()).is_err() {
        errors.push(at.error(
            jwt.header.span(),
            key("header"),
            format!("{:?} is not a valid header name", jwt.header.get_ref()),
        ));
    }
    for (claim, header) in &jwt.claims_to_headers {
        if http::HeaderName::from_bytes(header.get_ref().as_bytes()).is_err() {
            errors.push(at.error(
                header.span(),
                key(&format!("claims_to_headers.{claim}")),
                format!("{:?} is not a valid header name", header.get_ref()),
            ));
        }
    }
    if let Some(audiences) = &jwt.audiences
        && audiences.is_empty()
    {
        errors.push(at.error(
            at.span_of(&["jwt", name, "audiences"]),
            key("audiences"),
            "the list is empty; leave it out not to check aud",
        ));
    }
}
