//! Checks of the TLS keys: listener certificates and keys are read and verified
//! here, so `gatehouse check` and a reload report a bad, expired, mismatched or unreadable
//! file at its place in the config; upstream CA and client certificate files likewise.

use super::errors::{ConfigError, Locator};
use super::{AcmeConfig, Config};
use crate::certs::{self, PairError};
use rustls::SupportedProtocolVersion;
use rustls::pki_types::ServerName;
use std::time::SystemTime;

/// The protocol versions from `min_version`.
pub fn tls_versions(
    min_version: &str,
) -> Result<&'static [&'static SupportedProtocolVersion], String> {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match min_version {
        "1.2" => Ok(BOTH),
        "1.3" => Ok(TLS13_ONLY),
        other => Err(format!(
            "unsupported TLS version {other:?}; use \"1.2\" or \"1.3\""
        )),
    }
}

/// ALPN protocol names gatehouse can serve.
pub fn check_alpn(protocol: &str) -> Result<(), String> {
    match protocol {
        "h2" | "http/1.1" => Ok(()),
        other => Err(format!(
            "unsupported ALPN protocol {other:?}; use \"h2\" and/or \"http/1.1\""
        )),
    }
}

/// A server name as rustls wants it, from a DNS name or an IP literal.
pub fn tls_server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("{name:?} is not a valid TLS server name"))
}

/// An ACME section's keys: nothing is fetched here, files are not required to exist yet.
fn validate_acme(
    acme: &AcmeConfig,
    key: &dyn Fn(&str) -> String,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let directory = acme.directory.get_ref();
    if !(directory.starts_with("https://") || directory.starts_with("http://"))
        || directory.parse::<http::Uri>().is_err()
    {
        errors.push(at.error(
            acme.directory.span(),
            key("directory"),
            "not an http(s) URL; e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
        ));
    }
    for contact in &acme.contact {
        if !contact.get_ref().starts_with("mailto:") {
            errors.push(at.error(
                contact.span(),
                key("contact"),
                "a contact is a mailto: URL, e.g. \"mailto:ops@example.com\"",
            ));
        }
    }
    if acme.domains.get_ref().is_empty() {
        errors.push(at.error(
            acme.domains.span(),
            key("domains"),
            "give at least one DNS name",
        ));
    }
    for domain in acme.domains.get_ref() {
        let bare = domain.strip_prefix("*.").unwrap_or(domain);
        let valid =
            matches!(ServerName::try_from(bare), Ok(ServerName::DnsName(_))) && bare.contains('.');
        if !valid {
            errors.push(at.error(
                acme.domains.span(),
                key("domains"),
                format!("{domain:?} is not a DNS name a certificate can be ordered for"),
            ));
        } else if domain.starts_with("*.") {
            errors.push(at.error(
                acme.domains.span(),
                key("domains"),
                format!("{domain:?}: a wildcard needs the dns-01 challenge, which gatehouse does not answer"),
            ));
        }
    }
    if acme.state_dir.get_ref().is_empty() {
        errors.push(at.error(acme.state_dir.span(), key("state_dir"), "give a directory"));
    }
    if let Some(ca) = &acme.directory_ca
        && let Err(message) = certs::read_roots(ca.get_ref())
    {
        errors.push(at.error(ca.span(), key("directory_ca"), message));
    }
    if !matches!(acme.challenge.get_ref().as_str(), "http-01" | "tls-alpn-01") {
        errors.push(at.error(
            acme.challenge.span(),
            key("challenge"),
            "use \"http-01\" or \"tls-alpn-01\"",
        ));
    }
    let renew_at = *acme.renew_at.get_ref();
    if !(renew_at > 0.0 && renew_at < 1.0) {
        errors.push(at.error(
            acme.renew_at.span(),
            key("renew_at"),
            "a fraction of the lifetime between 0 and 1, e.g. 0.67",
        ));
    }
}

/// `listener_at` holds each listener's position in the file.
pub(super) fn validate(
    config: &Config,
    listener_at: &[usize],
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let now = SystemTime::now();
    for (listener, &i) in config.listeners.iter().zip(listener_at) {
        let key = |field: &str| format!("listener[{i}].{field}");
        if let Some(template) = &listener.redirect_https
            && let Err(message) = super::RedirectTemplate::parse(template.get_ref())
        {
            errors.push(at.error(template.span(), key("redirect_https"), message));
        }
        if let Some(hsts) = &listener.hsts {
            if http::HeaderValue::from_str(hsts.get_ref()).is_err() {
                errors.push(at.error(hsts.span(), key("hsts"), "not a valid header value"));
            } else if listener.tls.is_none() {
                tracing::warn!(
                    listener = %listener.name.get_ref(),
                    "hsts is only sent over TLS; this listener has no tls section, so it sends none"
                );
            }
        }
        let Some(tls) = &listener.tls else { continue };
        // `certs` left out has no place of its own: the listener's is given.
        let certs_at = match tls.certs.span() {
            span if span.is_empty() => at.span_of_item(&["listener"], i),
            span => span,
        };
        match (&tls.acme, tls.certs.get_ref().is_empty()) {
            (None, true) => errors.push(at.error(
                certs_at,
                key("tls.certs"),
                "no certificate; give at least one { cert = \"...\", key = \"...\" }, or tls.acme",
            )),
            (Some(_), false) => errors.push(at.error(
                tls.certs.span(),
                key("tls.certs"),
                "give tls.certs or tls.acme, not both",
            )),
            (Some(acme), true) => {
                validate_acme(acme, &|field| key(&format!("tls.acme.{field}")), at, errors)
            }
            (None, false) => {}
        }
        for (j, pair) in tls.certs.get_ref().iter().enumerate() {
            match certs::load_pair(pair.cert.get_ref(), pair.key.get_ref(), now) {
                Ok(_) => {}
                Err(PairError::Cert(message)) => errors.push(at.error(
                    pair.cert.span(),
                    key(&format!("tls.certs[{j}].cert")),
                    message,
                )),
                Err(PairError::Key(message)) => errors.push(at.error(
                    pair.key.span(),
                    key(&format!("tls.certs[{j}].key")),
                    message,
                )),
            }
        }
        if let Err(message) = tls_versions(tls.min_version.get_ref()) {
            errors.push(at.error(tls.min_version.span(), key("tls.min_version"), message));
        }
        for protocol in tls.alpn.get_ref() {
            if let Err(message) = check_alpn(protocol) {
                errors.push(at.error(tls.alpn.span(), key("tls.alpn"), message));
            }
        }
        if let Some(ca) = &tls.client_ca
            && let Err(message) = certs::read_roots(ca.get_ref())
        {
            errors.push(at.error(ca.span(), key("tls.client_ca"), message));
        }
    }

    for (name, upstream) in &config.upstreams {
        let key = |field: &str| format!("upstream.{name}.{field}");
        let Some(tls) = &upstream.tls else { continue };
        let any_https = upstream
            .servers
            .get_ref()
            .iter()
            .any(|s| super::is_https_server(&s.get_ref().addr));
        if !any_https {
            errors.push(at.error(
                at.span_of(&["upstream", name, "tls"]),
                key("tls"),
                "no server of this upstream is https://, so tls would not be used; write the servers as \"https://host:port\"",
            ));
        }
        if let Some(ca) = &tls.ca
            && let Err(message) = certs::read_roots(ca.get_ref())
        {
            errors.push(at.error(ca.span(), key("tls.ca"), message));
        }
        if let Some(server_name) = &tls.server_name
            && let Err(message) = tls_server_name(server_name.get_ref())
        {
            errors.push(at.error(server_name.span(), key("tls.server_name"), message));
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key_file)) => {
                match certs::load_pair(cert.get_ref(), key_file.get_ref(), now) {
                    Ok(_) => {}
                    Err(PairError::Cert(message)) => {
                        errors.push(at.error(cert.span(), key("tls.cert"), message))
                    }
                    Err(PairError::Key(message)) => {
                        errors.push(at.error(key_file.span(), key("tls.key"), message))
                    }
                }
            }
            (Some(one), None) | (None, Some(one)) => errors.push(at.error(
                one.span(),
                key("tls"),
                "tls.cert and tls.key go together: give both or neither",
            )),
            (None, None) => {}
        }
    }
}
