//! `gatehouse cert`: a self-signed certificate for development, with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a development certificate is valid.
const VALID_DAYS: u64 = 397;

/// The files written.
pub struct Generated {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `cert.pem` and `key.pem` (ECDSA P-256, valid 397 days) for `hosts` (DNS names or
/// IP addresses) into `out`, creating it if needed.
pub fn self_signed(hosts: &[String], out: &Path) -> Result<Generated, String> {
    if hosts.is_empty() {
        return Err("give at least one host name or address (--hosts localhost,127.0.0.1)".into());
    }
    let failed = |e: rcgen::Error| format!("cannot generate a certificate: {e}");
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(failed)?;
    // Valid from an hour ago (clock skew) for 397 days, the most browsers accept: an expiry
    // that monitoring (gatehouse_tls_certificate_expiry_timestamp_seconds) can see coming.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("the system clock is before 1970: {e}"))?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(VALID_DAYS * 86_400);
    let signing_key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&signing_key).map_err(failed)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let key = out.join("key.pem");
    let cert_path = out.join("cert.pem");
    std::fs::write(&cert_path, cert.pem()).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    write_private(&key, signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(Generated {
        cert: cert_path,
        key,
    })
}

/// A key file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(contents)
}
