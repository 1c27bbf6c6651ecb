//! `[tracing]`: distributed tracing (W3C Trace Context, OpenTelemetry spans exported over
//! OTLP/HTTP). Off without the section or with `endpoint = ""`.

use super::errors::{ConfigError, Locator};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// `[tracing]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans go: an OTLP/HTTP collector, `http://host:port` or `https://host[:port]`
    /// (the path defaults to `/v1/traces`).
    pub endpoint: Spanned<String>,
    /// A CA bundle (PEM) to verify an `https://` collector with, instead of the system's
    /// roots.
    pub ca: Option<Spanned<String>>,
    /// The share of new traces (requests that carry no trace context) that are sampled, from
    /// 0 to 1. A caller's own sampled flag is honoured whatever this says.
    pub ratio: Spanned<f64>,
    /// Fields sent with every export (an API key for a hosted collector, say).
    pub headers: BTreeMap<String, Spanned<String>>,
    /// The `service.name` of gatehouse's spans.
    pub service_name: Spanned<String>,
    /// The formats read from requests: `tracecontext` (W3C `traceparent`), `b3`.
    pub propagation: Vec<Spanned<String>>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            endpoint: Spanned::new(0..0, String::new()),
            ca: None,
            ratio: Spanned::new(0..0, 1.0),
            headers: BTreeMap::new(),
            service_name: Spanned::new(0..0, "gatehouse".into()),
            propagation: vec![Spanned::new(0..0, "tracecontext".into())],
        }
    }
}

/// An export target read from an `endpoint` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingEndpoint {
    /// `host:port`, as connected to and sent in Host.
    pub authority: String,
    /// The host alone, the name a TLS collector's certificate is verified for.
    pub host: String,
    /// Reached over TLS (`https://`).
    pub https: bool,
    /// The request target, `/v1/traces` unless the endpoint names one.
    pub path: String,
}

impl TracingConfig {
    /// Whether spans are made and exported at all.
    pub fn enabled(&self) -> bool {
        !self.endpoint.get_ref().is_empty()
    }

    pub fn reads_b3(&self) -> bool {
        self.propagation.iter().any(|p| p.get_ref() == "b3")
    }

    pub fn reads_tracecontext(&self) -> bool {
        self.propagation
            .iter()
            .any(|p| p.get_ref() == "tracecontext")
    }
}

/// Reads an OTLP/HTTP endpoint: `http://host:port[/path]`, or `https://host[:port][/path]`
/// (port 443 by default) for a collector reached over TLS.
pub fn parse_tracing_endpoint(url: &str) -> Result<TracingEndpoint, String> {
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => {
            return Err(format!(
                "invalid endpoint {url:?}; expected http://host:port such as \"http://127.0.0.1:4318\", or https://host"
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let bracketed_v6 = authority.starts_with('[') && authority.ends_with(']');
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !bracketed_v6 => (host, Some(port)),
        _ => (authority, None),
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0),
        None if https => Some(443),
        None => None,
    };
    let Some(port) = port.filter(|_| !host.is_empty()) else {
        return Err(format!(
            "invalid endpoint {url:?}; expected a host and a port such as \"http://127.0.0.1:4318\""
        ));
    };
    let path = if path.is_empty() || path == "/" {
        "/v1/traces".to_owned()
    } else {
        path.to_owned()
    };
    if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        return Err(format!("invalid endpoint {url:?}: the path is not valid"));
    }
    Ok(TracingEndpoint {
        authority: format!("{host}:{port}"),
        host: host.to_owned(),
        https,
        path,
    })
}

pub(super) fn validate(tracing: &TracingConfig, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    let endpoint = tracing
        .enabled()
        .then(|| parse_tracing_endpoint(tracing.endpoint.get_ref()));
    match &endpoint {
        Some(Err(message)) => {
            errors.push(at.error(tracing.endpoint.span(), "tracing.endpoint", message.clone()));
        }
        Some(Ok(endpoint)) if endpoint.https => {
            if let Err(message) = super::tls_server_name(&endpoint.host) {
                errors.push(at.error(tracing.endpoint.span(), "tracing.endpoint", message));
            }
        }
        _ => {}
    }
    if let Some(ca) = &tracing.ca {
        let message = match &endpoint {
            Some(Ok(endpoint)) if endpoint.https => crate::certs::read_roots(ca.get_ref()).err(),
            _ => Some("a CA is for an https:// endpoint".to_owned()),
        };
        if let Some(message) = message {
            errors.push(at.error(ca.span(), "tracing.ca", message));
        }
    }
    let ratio = *tracing.ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        errors.push(at.error(
            tracing.ratio.span(),
            "tracing.ratio",
            format!("must be between 0 and 1, got {ratio}"),
        ));
    }
    if tracing.service_name.get_ref().is_empty() {
        errors.push(at.error(
            tracing.service_name.span(),
            "tracing.service_name",
            "must not be empty",
        ));
    }
    for (i, format) in tracing.propagation.iter().enumerate() {
        if !matches!(format.get_ref().as_str(), "tracecontext" | "b3") {
            errors.push(at.error(
                format.span(),
                format!("tracing.propagation[{i}]"),
                format!(
                    "unknown propagation format {:?}; expected \"tracecontext\" or \"b3\"",
                    format.get_ref()
                ),
            ));
        }
    }
    for (name, value) in &tracing.headers {
        let valid = http::HeaderName::try_from(name.as_str()).is_ok()
            && http::HeaderValue::try_from(value.get_ref().as_str()).is_ok();
        if !valid {
            errors.push(at.error(
                value.span(),
                format!("tracing.headers.{name}"),
                "not a valid header field name and value",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let plain = parse_tracing_endpoint("http://127.0.0.1:4318").unwrap();
        assert_eq!(plain.authority, "127.0.0.1:4318");
        assert_eq!(plain.path, "/v1/traces");
        let own = parse_tracing_endpoint("http://collector:4318/otlp/v1/traces").unwrap();
        assert_eq!(own.authority, "collector:4318");
        assert_eq!(own.path, "/otlp/v1/traces");
        let tls = parse_tracing_endpoint("https://otlp.example.com/v1/traces").unwrap();
        assert_eq!(
            (tls.authority.as_str(), tls.host.as_str(), tls.https),
            ("otlp.example.com:443", "otlp.example.com", true)
        );
        let own_port = parse_tracing_endpoint("https://[::1]:4318").unwrap();
        assert_eq!(own_port.authority, "[::1]:4318");
        assert_eq!(own_port.host, "[::1]");
        assert!(!plain.https);
        for bad in [
            "ftp://x:4318",
            "127.0.0.1:4318",
            "http://x",
            "http://:4318",
            "http://x:0",
            "http://x:99999",
        ] {
            assert!(parse_tracing_endpoint(bad).is_err(), "{bad}");
        }
    }
}
