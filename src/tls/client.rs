//! TLS to upstream servers: verification against the system's roots (rustls-native-certs)
//! or a configured CA, the name to send as SNI and verify, an optional client certificate,
//! and ALPN h2 when the upstream speaks HTTP/2.

use crate::certs;
use crate::config::UpstreamTlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::sync::{Arc, OnceLock};
use tokio_rustls::TlsConnector;

/// How one upstream's `https://` servers are reached.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    /// Set by `server_name`; otherwise each server's host is used.
    server_name: Option<ServerName<'static>>,
    /// What these settings were built from (the config and the files' bytes): equal
    /// identities make the same connections, so a reload keeps the settings in force (and
    /// their TLS sessions) instead of these.
    pub identity: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The system's trust roots, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no system CA certificates found ({} errors); set tls.ca",
                    found.errors.len()
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// How span exports reach a collector over TLS: verified for `host` against the CA bundle at
/// `ca`, or the system's roots.
pub fn export_tls(host: &str, ca: Option<&str>) -> Result<crate::trace::export::ExportTls, String> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut hasher);
    let roots = match ca {
        Some(ca) => {
            ca.hash(&mut hasher);
            std::fs::read(ca).unwrap_or_default().hash(&mut hasher);
            Arc::new(certs::read_roots(ca)?)
        }
        None => system_roots()?,
    };
    let mut client = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(crate::trace::export::ExportTls {
        connector: TlsConnector::from(Arc::new(client)),
        server_name: crate::config::tls_server_name(host)?,
        identity: hasher.finish(),
    })
}

impl UpstreamTls {
    /// Builds the client settings; errors name the file or the key at fault.
    pub fn build(config: Option<&UpstreamTlsConfig>, http2: bool) -> Result<Self, String> {
        let default = UpstreamTlsConfig::default();
        let config = config.unwrap_or(&default);
        let roots = match &config.ca {
            Some(ca) => Arc::new(certs::read_roots(ca.get_ref())?),
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut client = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let chain = certs::read_chain(cert.get_ref())?;
                let key_der = PrivateKeyDer::from_pem_file(key.get_ref()).map_err(|e| {
                    format!("{}: cannot read a PEM private key: {e}", key.get_ref())
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| format!("{}: {e}", key.get_ref()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("tls.cert and tls.key go together".into()),
        };
        client.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let server_name = match &config.server_name {
            Some(name) => Some(crate::config::tls_server_name(name.get_ref())?),
            None => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
            identity: identity(config, http2),
        })
    }

    /// The name to send and verify for a server at `host`.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => crate::config::tls_server_name(host),
        }
    }
}

/// A hash of what `UpstreamTls::build` reads: the settings and the bytes of each file (a CA
/// or client certificate replaced on disk under the same name is a change).
fn identity(config: &UpstreamTlsConfig, http2: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    http2.hash(&mut hasher);
    for setting in [&config.ca, &config.server_name, &config.cert, &config.key] {
        setting.as_ref().map(|s| s.get_ref()).hash(&mut hasher);
    }
    for file in [&config.ca, &config.cert, &config.key]
        .into_iter()
        .flatten()
    {
        std::fs::read(file.get_ref()).ok().hash(&mut hasher);
    }
    hasher.finish()
}
