//! What a listener does beyond HTTP, compiled from its config: TLS termination, the redirect
//! to HTTPS, HSTS, and the trusted proxies that name its clients. Held per listener behind an `ArcSwap`, so a reload or a certificate
//! rotation changes what new connections get, never a connection already open.

use super::real_ip::RealIp;
use crate::config::ListenerConfig;
use crate::config::RedirectTemplate;
use crate::tls::{ListenerTls, TlsMetrics};
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::sync::Arc;

pub type SharedSettings = Arc<ArcSwap<ListenerSettings>>;

#[derive(Default)]
pub struct ListenerSettings {
    pub tls: Option<Arc<ListenerTls>>,
    pub redirect: Option<RedirectTemplate>,
    /// Strict-Transport-Security, added to every response of a TLS listener.
    pub hsts: Option<HeaderValue>,
    /// Trusted proxies and the PROXY protocol; `None` when no proxy is trusted.
    pub real_ip: Option<RealIp>,
}

impl ListenerSettings {
    /// Builds a listener's settings, reading its certificates; `previous` (the settings being
    /// replaced) passes its TLS session cache and ticket keys on.
    pub fn build(
        config: &ListenerConfig,
        previous: Option<&ListenerSettings>,
        metrics: &TlsMetrics,
    ) -> Result<Self, String> {
        let name = config.name.get_ref();
        let tls = match &config.tls {
            Some(tls) => {
                let previous = previous.and_then(|p| p.tls.as_deref());
                Some(Arc::new(ListenerTls::build(name, tls, previous, metrics)?))
            }
            None => None,
        };
        let redirect = match &config.redirect_https {
            Some(template) => Some(RedirectTemplate::parse(template.get_ref())?),
            None => None,
        };
        // RFC 6797 §7.2: HSTS sent over plain HTTP must be ignored, so it is only sent over TLS.
        let hsts = match (&config.hsts, &tls) {
            (Some(value), Some(_)) => {
                Some(HeaderValue::from_str(value.get_ref()).map_err(|_| {
                    format!("hsts {:?} is not a valid header value", value.get_ref())
                })?)
            }
            _ => None,
        };
        Ok(Self {
            tls,
            redirect,
            hsts,
            real_ip: RealIp::build(config)?,
        })
    }
}
