//! TLS with rustls (no OpenSSL): listener certificates picked by SNI and reloaded when their
//! files change, verified TLS to upstream servers, handshake and expiry metrics, and
//! self-signed certificates for development.
//! (Certificates are read by `crate::certs`, rotation is watched by `reload::cert_watch`, and
//! the TLS metrics are `metrics::tls`.)

pub mod challenge;
pub mod client;
pub mod generate;
pub mod server;
pub mod sni;

pub use crate::certs::provider;
pub use crate::metrics::tls::{HandshakeMetrics, TlsMetrics};
pub use client::UpstreamTls;
pub use server::{Http3Tls, ListenerTls};
