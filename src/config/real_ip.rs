//! Checks of a listener's client-address keys (every `trusted_proxies` entry is an address
//! range, and `proxy_protocol` and `real_ip_header` make sense together), and that `http3` has TLS
//! (and `early_data` has `http3`).

use super::errors::{ConfigError, Locator};
use super::{Config, RealIpHeader};
use crate::connection::client_address::IpRange;

/// `listener_at` holds each listener's position in the file.
pub(super) fn validate(
    config: &Config,
    listener_at: &[usize],
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    for (listener, &i) in config.listeners.iter().zip(listener_at) {
        let key = |field: &str| format!("listener[{i}].{field}");
        let mut everything = None;
        for (j, entry) in listener.trusted_proxies.iter().enumerate() {
            match IpRange::parse(entry.get_ref()) {
                Ok(range) if range.is_everything() => everything = Some(range),
                Ok(_) => {}
                Err(message) => errors.push(at.error(
                    entry.span(),
                    key(&format!("trusted_proxies[{j}]")),
                    message,
                )),
            }
        }
        if *listener.http3.get_ref() && listener.tls.is_none() {
            errors.push(at.error(
                listener.http3.span(),
                key("http3"),
                "HTTP/3 runs over QUIC, which is always encrypted: give this listener a tls \
                 section (with its certificates), or remove http3",
            ));
        }
        if *listener.early_data.get_ref() && !*listener.http3.get_ref() {
            errors.push(at.error(
                listener.early_data.span(),
                key("early_data"),
                "early data (0-RTT) is accepted over HTTP/3 only: add http3 = true, or remove \
                 early_data",
            ));
        }
        let header = *listener.real_ip_header.get_ref();
        let proxy_protocol = *listener.proxy_protocol.get_ref();
        if proxy_protocol && listener.trusted_proxies.is_empty() {
            errors.push(at.error(
                listener.proxy_protocol.span(),
                key("proxy_protocol"),
                "a PROXY protocol header is only believed from trusted_proxies; list the \
                 balancer's addresses there (or [\"0.0.0.0/0\", \"::/0\"] with \
                 real_ip_header = \"proxy_protocol\" when nothing but the balancer can reach \
                 this listener)",
            ));
        }
        if header == RealIpHeader::ProxyProtocol && !proxy_protocol {
            errors.push(at.error(
                listener.real_ip_header.span(),
                key("real_ip_header"),
                "\"proxy_protocol\" needs proxy_protocol = true on this listener",
            ));
        }
        if let Some(range) = everything
            && header != RealIpHeader::ProxyProtocol
        {
            tracing::warn!(
                listener = %listener.name.get_ref(),
                "trusted_proxies holds {range}: every address of that family is trusted, so any \
                 such client can name its own address in {}; list the proxies' own ranges \
                 instead, or read only the PROXY header (real_ip_header = \"proxy_protocol\")",
                match header {
                    RealIpHeader::Forwarded => "Forwarded",
                    _ => "X-Forwarded-For",
                }
            );
        }
    }
}
