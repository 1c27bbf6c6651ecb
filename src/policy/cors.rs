//! A route's CORS policy, compiled from `[cors.NAME]`: whether a request's `Origin` is
//! allowed, the answer to a preflight, and the fields an actual response carries. Pure over
//! header maps: the proxy decides where these run.

use crate::config::{CorsConfig, OriginPattern};
use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use prometheus::IntCounter;

/// A compiled `[cors.NAME]` as one route uses it.
#[derive(Clone)]
pub struct Cors {
    pub name: String,
    any: bool,
    exact: Vec<String>,
    /// (`scheme://`, `.rest[:port]`) of each subdomain pattern.
    subdomains: Vec<(String, String)>,
    pub credentials: bool,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    /// Preflights answered, by outcome (the route's handles).
    pub preflights_allowed: IntCounter,
    pub preflights_denied: IntCounter,
}

/// The CORS response fields that gatehouse owns on a route with a policy: the upstream's are
/// removed before gatehouse's own are set.
const OWNED: [header::HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

const ORIGIN_VARY: HeaderValue = HeaderValue::from_static("Origin");

impl Cors {
    /// Compiles a validated `[cors.NAME]`, with its counters for one route.
    pub fn compile(
        name: &str,
        settings: &CorsConfig,
        preflights_allowed: IntCounter,
        preflights_denied: IntCounter,
    ) -> Result<Self, String> {
        let mut any = false;
        let mut exact = Vec::new();
        let mut subdomains = Vec::new();
        for origin in settings.origins.get_ref() {
            match OriginPattern::parse(origin.get_ref())? {
                OriginPattern::Any => any = true,
                OriginPattern::Exact(origin) => exact.push(origin),
                OriginPattern::Subdomains { prefix, suffix } => subdomains.push((prefix, suffix)),
            }
        }
        let credentials = *settings.credentials.get_ref();
        if any && credentials {
            return Err("credentials cannot go with origins = [\"*\"]".into());
        }
        let list = |items: &[toml::Spanned<String>]| -> Result<Option<HeaderValue>, String> {
            if items.is_empty() {
                return Ok(None);
            }
            let joined = items
                .iter()
                .map(|i| i.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ");
            HeaderValue::from_str(&joined)
                .map(Some)
                .map_err(|_| format!("{joined:?} is not a header value"))
        };
        Ok(Self {
            name: name.to_owned(),
            any,
            exact,
            subdomains,
            credentials,
            allow_methods: list(&settings.methods)?
                .unwrap_or(HeaderValue::from_static("GET, HEAD, POST")),
            allow_headers: list(&settings.headers)?,
            expose_headers: list(&settings.expose_headers)?,
            max_age: settings
                .max_age
                .map(|age| HeaderValue::from(age.0.as_secs())),
            preflights_allowed,
            preflights_denied,
        })
    }

    /// Whether the origin `value` (as a client sent it) may call this route.
    pub fn allows(&self, value: &[u8]) -> bool {
        // "null" (opaque origins: sandboxed frames, file://) is never matched, not even by
        // "*": anyone can send it.
        if value == b"null" || value.is_empty() {
            return false;
        }
        if self.any {
            return true;
        }
        if self
            .exact
            .iter()
            .any(|origin| origin.as_bytes().eq_ignore_ascii_case(value))
        {
            return true;
        }
        self.subdomains.iter().any(|(prefix, suffix)| {
            let (prefix, suffix) = (prefix.as_bytes(), suffix.as_bytes());
            if value.len() <= prefix.len() + suffix.len() {
                return false;
            }
            let (head, rest) = value.split_at(prefix.len());
            let (labels, tail) = rest.split_at(rest.len() - suffix.len());
            head.eq_ignore_ascii_case(prefix)
                && tail.eq_ignore_ascii_case(suffix)
                && !labels.starts_with(b".")
                && labels
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
        })
    }

    /// The request's `Origin` if it is one this route allows (one field, allowed).
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut values = headers.get_all(header::ORIGIN).iter();
        let origin = values.next()?;
        if values.next().is_some() || !self.allows(origin.as_bytes()) {
            return None;
        }
        Some(origin.clone())
    }

    /// Sets what an answer to `origin` carries (allowed origin, credentials).
    fn set_origin_fields(&self, headers: &mut HeaderMap, origin: &HeaderValue) {
        let value = if self.any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// The fields of the answer to a preflight: the Allow-* fields when `origin` is allowed,
    /// none otherwise (the browser then refuses the actual request); `Vary: Origin` always.
    pub fn preflight_fields(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, ORIGIN_VARY);
        let Some(origin) = origin else {
            return;
        };
        self.set_origin_fields(headers, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(allow) = &self.allow_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
        }
        if let Some(age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
    }

    /// Edits an actual response: the upstream's CORS fields are replaced by this policy's for
    /// an allowed `origin` (none for another), and `Vary: Origin` is appended.
    pub fn response_fields(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        for name in &OWNED {
            headers.remove(name);
        }
        headers.append(header::VARY, ORIGIN_VARY);
        let Some(origin) = origin else {
            return;
        };
        self.set_origin_fields(headers, origin);
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(toml_text: &str) -> Cors {
        let settings: CorsConfig = toml::from_str(toml_text).unwrap();
        Cors::compile(
            "web",
            &settings,
            IntCounter::new("a", "a").unwrap(),
            IntCounter::new("d", "d").unwrap(),
        )
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn exact_and_subdomain_origins() {
        let cors = policy(
            r#"origins = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]"#,
        );
        for allowed in [
            "https://app.example.com",
            "HTTPS://APP.example.com",
            "https://a.example.org",
            "https://a.b.example.org",
            "http://localhost:3000",
        ] {
            assert!(cors.allows(allowed.as_bytes()), "{allowed}");
        }
        for refused in [
            "https://app.example.com.evil.test",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.org",
            "https://.example.org",
            "https://evil.test/.example.org",
            "https://evilexample.org",
            "https://a.example.org:444",
            "http://localhost:3001",
            "null",
            "",
        ] {
            assert!(!cors.allows(refused.as_bytes()), "{refused}");
        }
    }

    #[test]
    fn a_wildcard_answers_star_and_null_is_never_allowed() {
        let cors = policy(r#"origins = ["*"]"#);
        assert!(cors.allows(b"https://anyone.test"));
        assert!(!cors.allows(b"null"));
        let origin = HeaderValue::from_static("https://anyone.test");
        let mut out = HeaderMap::new();
        cors.response_fields(Some(&origin), &mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn preflight_fields_for_an_allowed_origin_and_none_for_another() {
        let cors = policy(
            r#"origins = ["https://app.example.com"]
               methods = ["GET", "PUT"]
               headers = ["content-type", "x-api-key"]
               credentials = true
               max_age = "10m""#,
        );
        let request = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &request));
        assert!(!is_preflight(&Method::GET, &request));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &headers(&[("origin", "https://app.example.com")])
        ));
        let origin = cors.allowed_origin(&request);
        assert!(origin.is_some());
        let mut out = HeaderMap::new();
        cors.preflight_fields(origin.as_ref(), &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-api-key"
        );
        assert_eq!(out[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(out[header::VARY], "Origin");

        let other = headers(&[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(cors.allowed_origin(&other), None);
        let mut out = HeaderMap::new();
        cors.preflight_fields(None, &mut out);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
        // Two Origin fields: not a browser, not allowed.
        let twice = headers(&[
            ("origin", "https://app.example.com"),
            ("origin", "https://app.example.com"),
        ]);
        assert_eq!(cors.allowed_origin(&twice), None);
    }

    #[test]
    fn upstream_cors_fields_are_replaced_and_vary_appended() {
        let cors = policy(
            r#"origins = ["https://app.example.com"]
               expose_headers = ["x-request-id"]"#,
        );
        let mut out = headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("access-control-max-age", "99999"),
            ("vary", "Accept-Encoding"),
        ]);
        let origin = HeaderValue::from_static("https://app.example.com");
        cors.response_fields(Some(&origin), &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(!out.contains_key(header::ACCESS_CONTROL_MAX_AGE));
        assert_eq!(out[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        let vary: Vec<_> = out.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        // Another origin: the upstream's fields go, none come.
        let mut out = headers(&[("access-control-allow-origin", "*")]);
        cors.response_fields(None, &mut out);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    proptest! {
        #[test]
        fn no_origin_value_panics_the_match(value in prop::collection::vec(any::<u8>(), 0..60)) {
            let cors = policy(r#"origins = ["https://a.example.com", "https://*.example.org:8443"]"#);
            let _ = cors.allows(&value);
        }
    }
}
