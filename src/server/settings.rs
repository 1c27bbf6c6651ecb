//! What a listener does beyond HTTP, compiled from its config: TLS termination, the redirect
//! to HTTPS, HSTS, the trusted proxies that name its clients, and the connections each client
//! may hold. Held per listener behind an `ArcSwap`, so a reload or a certificate
//! rotation changes what new connections get, never a connection already open.

use super::real_ip::RealIp;
use crate::config::ListenerConfig;
use crate::config::RedirectTemplate;
use crate::limit::{InFlightGuard, InFlightTable};
use crate::tls::challenge::{AcmeChallenges, Http01Answers};
use crate::tls::{Http3Tls, ListenerTls, TlsMetrics};
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
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
    /// `max_connections_per_client`, when set.
    pub per_client: Option<ClientConnections>,
    /// HTTP-01 answers, on a plain-HTTP listener while some listener orders by ACME with it.
    pub acme_http: Option<Http01Answers>,
    /// `Alt-Svc: h3=":PORT"; ma=86400`, added to the HTTP/1.1 and HTTP/2 responses of an
    /// `http3` listener; built once here so that other listeners pay nothing.
    pub alt_svc: Option<HeaderValue>,
    /// `early_data` on an `http3` listener: QUIC connections take requests before their
    /// handshake completes (0-RTT).
    pub early_data: bool,
}

/// The connections each client holds open on a listener. The counts outlive the settings
/// (they pass from one reload's settings to the next), so connections opened before a reload
/// still count after it.
pub struct ClientConnections {
    pub limit: u32,
    counts: Arc<InFlightTable>,
    secret: RandomState,
}

/// Clients counted per listener: more than this many distinct clients with connections open
/// at once are refused too (each takes about 20 bytes).
const MAX_COUNTED_CLIENTS: usize = 1_000_000;

impl ClientConnections {
    /// A place for one more connection of `client`, or `None` when it holds `limit` already.
    pub fn admit(&self, client: IpAddr) -> Option<InFlightGuard> {
        self.counts
            .try_acquire(self.secret.hash_one(client), self.limit)
    }
}

impl ListenerSettings {
    /// Builds a listener's settings, reading its certificates; `previous` (the settings being
    /// replaced) passes its TLS session cache and ticket keys on. `port` is the port the
    /// listener is bound to (what Alt-Svc names), once known.
    pub fn build(
        config: &ListenerConfig,
        previous: Option<&ListenerSettings>,
        metrics: &TlsMetrics,
        challenges: &AcmeChallenges,
        http01_state_dirs: &Arc<[std::path::PathBuf]>,
        port: Option<u16>,
    ) -> Result<Self, String> {
        let name = config.name.get_ref();
        let tls = match &config.tls {
            Some(tls) => {
                let previous = previous.and_then(|p| p.tls.as_deref());
                let http3 = config.http3.get_ref().then_some(Http3Tls {
                    early_data: *config.early_data.get_ref(),
                });
                Some(Arc::new(ListenerTls::build(
                    name, tls, previous, metrics, challenges, http3,
                )?))
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
        let per_client = (config.max_connections_per_client > 0).then(|| {
            let carried = previous.and_then(|p| p.per_client.as_ref());
            ClientConnections {
                limit: config.max_connections_per_client,
                counts: carried.map_or_else(
                    || Arc::new(InFlightTable::new(MAX_COUNTED_CLIENTS)),
                    |c| Arc::clone(&c.counts),
                ),
                secret: carried.map_or_else(RandomState::new, |c| c.secret.clone()),
            }
        });
        let alt_svc = match (&tls, port) {
            (Some(tls), Some(port)) if tls.quic.is_some() => Some(alt_svc(port)),
            _ => None,
        };
        let early_data =
            tls.as_ref().is_some_and(|tls| tls.quic.is_some()) && *config.early_data.get_ref();
        Ok(Self {
            tls,
            early_data,
            redirect,
            hsts,
            alt_svc,
            real_ip: RealIp::build(config)?,
            per_client,
            acme_http: (!http01_state_dirs.is_empty() && config.tls.is_none()).then(|| {
                Http01Answers {
                    challenges: challenges.clone(),
                    state_dirs: Arc::clone(http01_state_dirs),
                }
            }),
        })
    }
}

/// The Alt-Svc value advertising HTTP/3 on `port` of the same host for a day (RFC 7838).
pub fn alt_svc(port: u16) -> HeaderValue {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or_else(|_| HeaderValue::from_static("clear"))
}
