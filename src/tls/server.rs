//! One listener's TLS: the rustls `ServerConfig` built from its `tls` section (certificates
//! by SNI, versions, ALPN, client certificates), with the session cache and ticket keys
//! carried over from the settings it replaces so that resumption survives a rotation.

use super::challenge::{ACME_TLS_ALPN, AcmeChallenges, ChallengeResolver};
use super::sni::SniResolver;
use crate::certs::{self, CertInfo};
use crate::config::ListenerTlsConfig;
use crate::metrics::tls::{HandshakeMetrics, TlsMetrics};
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    NoClientAuth, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// Sessions remembered for resumption per listener (rustls's default is 256).
const SESSION_CACHE_SIZE: usize = 4096;

/// What makes resumption work, shared by successive settings of one listener.
#[derive(Clone, Debug)]
pub struct Resumption {
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl Resumption {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer: rustls::crypto::ring::Ticketer::new()
                .map_err(|e| format!("cannot create a session ticket key: {e}"))?,
        })
    }
}

/// A listener's TLS settings in force.
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    pub certificates: Vec<CertInfo>,
    pub handshakes: HandshakeMetrics,
    pub resumption: Resumption,
    /// The client CA bundle's bytes (mTLS): resumption is kept only while it is unchanged.
    client_ca: Option<Vec<u8>>,
    /// The files read, to notice when they change on disk.
    pub files: Vec<String>,
    /// The same certificates, resolver and session state for QUIC (`http3` listeners only).
    pub quic: Option<Arc<quinn::crypto::rustls::QuicServerConfig>>,
}

impl ListenerTls {
    /// Reads the certificates and keys and builds the settings; errors name the file.
    pub fn build(
        listener: &str,
        config: &ListenerTlsConfig,
        previous: Option<&ListenerTls>,
        metrics: &TlsMetrics,
        challenges: &AcmeChallenges,
        http3: Option<Http3Tls>,
    ) -> Result<Self, String> {
        let now = SystemTime::now();
        let mut keys = Vec::new();
        let mut certificates = Vec::new();
        let mut files = Vec::new();
        for pair in config.certs.get_ref() {
            let (cert, key) = (pair.cert.get_ref(), pair.key.get_ref());
            let loaded = certs::load_pair(cert, key, now).map_err(|e| e.to_string())?;
            keys.push((loaded.key, loaded.info.names.clone()));
            certificates.push(loaded.info);
            files.extend([cert.clone(), key.clone()]);
        }
        if let Some(acme) = &config.acme {
            // No certificate yet (or only an expired one): handshakes fail until the order in
            // the background brings one, rather than serve a certificate nobody trusts.
            let (cert, key) = (acme.cert_path(), acme.key_path());
            let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
            if std::path::Path::new(cert.as_ref()).exists() {
                // Watched like configured files: a replica sharing the state directory may
                // store the next one.
                files.extend([cert.to_string(), key.to_string()]);
                match certs::load_pair(&cert, &key, now) {
                    Ok(loaded) => {
                        keys.push((loaded.key, loaded.info.names.clone()));
                        certificates.push(CertInfo {
                            source: "acme",
                            ..loaded.info
                        });
                    }
                    Err(e) => {
                        tracing::warn!(listener, error = %e, "stored ACME certificate not served")
                    }
                }
            }
        } else if keys.is_empty() {
            return Err(format!("listener {listener:?}: tls.certs is empty"));
        }
        let client_ca = match &config.client_ca {
            Some(ca) => {
                Some(std::fs::read(ca.get_ref()).map_err(|e| format!("{}: {e}", ca.get_ref()))?)
            }
            None => None,
        };
        let verifier: Arc<dyn ClientCertVerifier> = match &config.client_ca {
            Some(ca) => {
                files.push(ca.get_ref().clone());
                let roots = certs::read_roots(ca.get_ref())?;
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider())
                    .build()
                    .map_err(|e| format!("{}: cannot verify clients with it: {e}", ca.get_ref()))?
            }
            None => Arc::new(NoClientAuth),
        };
        let server = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(crate::config::tls_versions(config.min_version.get_ref())?)
            .map_err(|e| format!("listener {listener:?}: {e}"))?
            .with_client_cert_verifier(verifier);
        let certs = SniResolver::new(keys);
        let tls_alpn = config.acme.as_ref().is_some_and(|acme| acme.tls_alpn());
        let mut server = if tls_alpn {
            server.with_cert_resolver(Arc::new(ChallengeResolver {
                certs,
                challenges: challenges.clone(),
            }))
        } else {
            server.with_cert_resolver(Arc::new(certs))
        };
        for protocol in config.alpn.get_ref() {
            crate::config::check_alpn(protocol)?;
        }
        server.alpn_protocols = config
            .alpn
            .get_ref()
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        if tls_alpn {
            // Offered last: only a client offering nothing else (the directory's validator)
            // ends up with it.
            server.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        // A resumed session skips client-certificate verification: after the client CA
        // changes (mTLS turned on, a CA withdrawn), sessions and tickets from before must not
        // let clients back in, so they are kept only while it stays the same.
        let resumption = match previous {
            Some(previous) if previous.client_ca == client_ca => previous.resumption.clone(),
            _ => Resumption::new()?,
        };
        server.session_storage = Arc::clone(&resumption.sessions);
        server.ticketer = Arc::clone(&resumption.ticketer);
        let quic = match http3 {
            Some(http3) => Some(Arc::new(quic_config(&server, http3).map_err(|e| {
                format!("listener {listener:?}: cannot serve HTTP/3 with these settings: {e}")
            })?)),
            None => None,
        };
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certificates,
            handshakes: metrics.handshakes(listener),
            resumption,
            client_ca,
            files,
            quic,
        })
    }
}

/// What an `http3` listener's QUIC side accepts beyond the TCP listener's TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http3Tls {
    /// TLS 1.3 early data (0-RTT) on resumed connections.
    pub early_data: bool,
}

/// The TCP listener's rustls settings made fit for QUIC: the same resolver (so SNI, rotation
/// and reload apply alike), client verifier and session cache, with ALPN `h3` only.
///
/// Without early data, `max_early_data_size` is 0 and every request arrives after a full
/// handshake. With it, QUIC's only allowed size (`u32::MAX`) is offered, and resumption is
/// stateful only (no tickets): rustls accepts early data on a session it takes out of the
/// cache, once, so a recorded ClientHello replayed to this process finds no session and its
/// early data is refused (RFC 8446 §8.1). What a replay to another process could still do
/// is limited by answering only safe methods in early data.
fn quic_config(
    tcp: &ServerConfig,
    http3: Http3Tls,
) -> Result<quinn::crypto::rustls::QuicServerConfig, quinn::crypto::rustls::NoInitialCipherSuite> {
    let mut quic = tcp.clone();
    quic.alpn_protocols = vec![b"h3".to_vec()];
    if http3.early_data {
        quic.max_early_data_size = u32::MAX;
        quic.ticketer = Arc::new(NoTickets);
    } else {
        quic.max_early_data_size = 0;
    }
    quinn::crypto::rustls::QuicServerConfig::try_from(quic)
}

/// Session tickets off: resumption by session id from the cache only, which rustls requires
/// for early data.
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}
