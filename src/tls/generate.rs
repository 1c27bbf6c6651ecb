//! `gatehouse cert`: a self-signed certificate for development, with rcgen.

use std::path::{Path, PathBuf};

/// The files written.
pub struct Generated {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `cert.pem` and `key.pem` (ECDSA P-256) for `hosts` (DNS names or IP addresses)
/// into `out`, creating it if needed.
pub fn self_signed(hosts: &[String], out: &Path) -> Result<Generated, String> {
    if hosts.is_empty() {
        return Err("give at least one host name or address (--hosts localhost,127.0.0.1)".into());
    }
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    write_private(&key, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(Generated { cert, key })
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
