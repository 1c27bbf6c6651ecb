//! Checks of the TLS keys (issue 6): listener certificates and keys are read and verified
//! here, so `gatehouse check` and a reload report a bad, expired, mismatched or unreadable
//! file at its place in the config; upstream CA and client certificate files likewise.

use super::Config;
use super::load::{ConfigError, Locator};
use crate::tls::certs::{self, PairError};
use std::time::SystemTime;

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
            && let Err(message) =
                crate::server::redirect::RedirectTemplate::parse(template.get_ref())
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
        if tls.certs.get_ref().is_empty() {
            errors.push(at.error(
                tls.certs.span(),
                key("tls.certs"),
                "no certificate; give at least one { cert = \"...\", key = \"...\" }",
            ));
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
        if let Err(message) = crate::tls::server::versions(tls.min_version.get_ref()) {
            errors.push(at.error(tls.min_version.span(), key("tls.min_version"), message));
        }
        for protocol in tls.alpn.get_ref() {
            if let Err(message) = crate::tls::server::check_alpn(protocol) {
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
            && let Err(message) = crate::tls::client::server_name(server_name.get_ref())
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
