//! TLS with rustls (no OpenSSL): listener certificates picked by SNI and reloaded when their
//! files change, verified TLS to upstream servers, handshake and expiry metrics, and
//! self-signed certificates for development.

pub mod certs;
pub mod client;
pub mod generate;
pub mod metrics;
pub mod server;
pub mod sni;
pub mod watch;

pub use client::UpstreamTls;
pub use metrics::{HandshakeMetrics, TlsMetrics};
pub use server::ListenerTls;

use rustls::crypto::CryptoProvider;
use std::sync::{Arc, OnceLock};

/// The one cryptography provider gatehouse uses (ring), with rustls's default suites.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}
