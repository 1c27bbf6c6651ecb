//! Reading certificates and keys from PEM files, with the checks an operator needs before
//! they serve: the file reads and parses, the certificate is within its validity period, the
//! key is usable and belongs to the certificate. Every error names the file.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The one cryptography provider gatehouse uses (ring), with rustls's default suites.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// What /status and the expiry metric say about one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub cert_file: String,
    /// DNS names and IP addresses from its subject alternative names (or its common name).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Where it comes from: "file" (configured files) or "acme" (ordered by gatehouse).
    pub source: &'static str,
}

impl CertInfo {
    /// The name metrics label it with.
    pub fn primary_name(&self) -> &str {
        self.names
            .first()
            .map_or(self.cert_file.as_str(), String::as_str)
    }
}

/// A certificate chain with its signing key, ready for rustls.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Which of the two files is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairError {
    Cert(String),
    Key(String),
}

impl std::fmt::Display for PairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairError::Cert(message) | PairError::Key(message) => f.write_str(message),
        }
    }
}

/// Loads a certificate chain and its private key, checked as the module doc says.
pub fn load_pair(
    cert_path: &str,
    key_path: &str,
    now: SystemTime,
) -> Result<LoadedCert, PairError> {
    let chain = read_chain(cert_path).map_err(PairError::Cert)?;
    let info = inspect(cert_path, &chain[0], now).map_err(PairError::Cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| PairError::Key(format!("{key_path}: cannot read a PEM private key: {e}")))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| PairError::Key(format!("{key_path}: unusable private key: {e}")))?;
    let key = CertifiedKey::new(chain, signing_key);
    key.keys_match().map_err(|_| {
        PairError::Key(format!(
            "{key_path}: this key does not belong to the certificate in {cert_path}"
        ))
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        info,
    })
}

/// Every certificate in a PEM file, in order; at least one.
pub fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: cannot read certificates: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: invalid PEM: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{path}: no certificate found (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(chain)
}

/// A trust store from a PEM CA bundle.
pub fn read_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{path}: not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339(unix_secs: i64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix_secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Names and validity of a certificate; an error if it is expired or not yet valid at `now`.
pub fn inspect(path: &str, der: &CertificateDer<'_>, now: SystemTime) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("{path}: not a valid X.509 certificate: {e}"))?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push(dns.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_owned),
        );
    }
    let now = unix(now);
    if now > not_after {
        return Err(format!(
            "{path}: certificate for {} expired at {}",
            names.join(", "),
            rfc3339(not_after)
        ));
    }
    if now < not_before {
        return Err(format!(
            "{path}: certificate for {} is not valid before {}",
            names.join(", "),
            rfc3339(not_before)
        ));
    }
    Ok(CertInfo {
        cert_file: path.to_owned(),
        names,
        not_before,
        not_after,
        source: "file",
    })
}
