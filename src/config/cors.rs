//! `[cors.NAME]`: which cross-origin callers a route answers (the Fetch standard's CORS
//! protocol), and the pure parser of its origin patterns, which the compiled policy uses too.

use super::ConfigDuration;
use super::errors::{ConfigError, Locator};
use serde::Deserialize;
use toml::Spanned;

/// One named CORS policy; routes name it in `cors = "NAME"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`"https://app.example.com"`), a subdomain pattern
    /// (`"https://*.example.com"`), or `"*"` for any.
    pub origins: Spanned<Vec<Spanned<String>>>,
    /// Methods a preflight allows.
    #[serde(default = "default_methods")]
    pub methods: Vec<Spanned<String>>,
    /// Request headers a preflight allows (beyond the CORS-safelisted ones).
    #[serde(default)]
    pub headers: Vec<Spanned<String>>,
    /// Response headers the caller's script may read (beyond the safelisted ones).
    #[serde(default)]
    pub expose_headers: Vec<Spanned<String>>,
    /// Allow credentials (cookies, HTTP authentication): the origin is then always echoed.
    #[serde(default = "super::spanned_false")]
    pub credentials: Spanned<bool>,
    /// How long a browser may cache a preflight's answer; none sends no Access-Control-Max-Age.
    #[serde(default)]
    pub max_age: Option<ConfigDuration>,
}

fn default_methods() -> Vec<Spanned<String>> {
    ["GET", "HEAD", "POST"]
        .into_iter()
        .map(|m| Spanned::new(0..0, m.to_owned()))
        .collect()
}

/// One allowed origin, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// An exact origin, lowercased: `https://app.example.com[:port]`.
    Exact(String),
    /// `scheme://*.rest`: any host with at least one label before `.rest` (lowercased), the
    /// port as written.
    Subdomains { prefix: String, suffix: String },
}

impl OriginPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid origin {text:?} ({why}); expected \"https://app.example.com\", \"https://*.example.com\" or \"*\""
            )
        };
        if text == "*" {
            return Ok(Self::Any);
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if rest.is_empty() {
            return Err(bad("no host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("an origin has no path, query or user"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
                    return Err(bad("bad port"));
                }
                (host, Some(port))
            }
            _ => (rest, None),
        };
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        let ipv6 = name.starts_with('[') && name.ends_with(']') && !wildcard;
        let valid_name = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !(valid_name || ipv6) {
            return Err(bad("bad host; `*` may only stand for the leftmost labels"));
        }
        let port = port.map_or(String::new(), |p| format!(":{p}"));
        let scheme = scheme.to_ascii_lowercase();
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            Self::Subdomains {
                prefix: format!("{scheme}://"),
                suffix: format!(".{name}{port}"),
            }
        } else {
            Self::Exact(format!("{scheme}://{name}{port}"))
        })
    }
}

pub(super) fn validate(
    name: &str,
    cors: &CorsConfig,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let key = |field: &str| format!("cors.{name}.{field}");
    let origins = cors.origins.get_ref();
    if origins.is_empty() {
        errors.push(at.error(
            cors.origins.span(),
            key("origins"),
            "must name at least one origin",
        ));
    }
    let mut any = false;
    for (i, origin) in origins.iter().enumerate() {
        match OriginPattern::parse(origin.get_ref()) {
            Ok(OriginPattern::Any) => any = true,
            Ok(_) => {}
            Err(message) => {
                errors.push(at.error(origin.span(), key(&format!("origins[{i}]")), message))
            }
        }
    }
    if any && *cors.credentials.get_ref() {
        errors.push(at.error(
            cors.credentials.span(),
            key("credentials"),
            "credentials = true cannot go with origins = [\"*\"] (the Fetch standard refuses a wildcard origin on a credentialed request); list the origins instead",
        ));
    }
    for (i, method) in cors.methods.iter().enumerate() {
        if http::Method::from_bytes(method.get_ref().as_bytes()).is_err() {
            let span = if method.span() == (0..0) {
                at.span_of(&["cors", name, "methods"])
            } else {
                method.span()
            };
            errors.push(at.error(
                span,
                key(&format!("methods[{i}]")),
                format!("{:?} is not an HTTP method", method.get_ref()),
            ));
        }
    }
    for (field, list) in [
        ("headers", &cors.headers),
        ("expose_headers", &cors.expose_headers),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn origins_exact_pattern_and_any() {
        assert_eq!(OriginPattern::parse("*"), Ok(OriginPattern::Any));
        assert_eq!(
            OriginPattern::parse("https://App.Example.com"),
            Ok(OriginPattern::Exact("https://app.example.com".into()))
        );
        assert_eq!(
            OriginPattern::parse("http://localhost:3000"),
            Ok(OriginPattern::Exact("http://localhost:3000".into()))
        );
        assert_eq!(
            OriginPattern::parse("https://*.example.com"),
            Ok(OriginPattern::Subdomains {
                prefix: "https://".into(),
                suffix: ".example.com".into()
            })
        );
        assert_eq!(
            OriginPattern::parse("https://[::1]:8443"),
            Ok(OriginPattern::Exact("https://[::1]:8443".into()))
        );
        for bad in [
            "",
            "example.com",
            "ftp://example.com",
            "https://",
            "https://example.com/",
            "https://example.com/app",
            "https://a.*.example.com",
            "https://*example.com",
            "https://*",
            "https://example.com:",
            "https://example.com:x",
            "https://user@example.com",
            "null",
            "https://exa mple.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn no_origin_text_panics_the_parser(text in ".{0,40}") {
            let _ = OriginPattern::parse(&text);
        }
    }
}
