//! The state directory: the ACME account per directory URL and each certificate with its
//! key, written atomically (a temporary file renamed over the old one) and readable by the
//! owner only; and the lock that lets one replica at a time order.

use crate::certs::{self, CertInfo};
use crate::config::AcmeConfig;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Writes `contents` to `path` as a new file (mode 0600) that replaces the old one at once:
/// a reader sees the old file or the new one, never a part.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map_or_else(
        || "state".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let temporary = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Where the account for `directory` is kept: one file per directory URL, named by a digest
/// of it (an account belongs to one directory).
pub fn account_path(state_dir: &str, directory: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
    let name: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Path::new(state_dir)
        .join("accounts")
        .join(format!("{name}.json"))
}

/// The stored certificate of `acme` if it reads, is valid at `now` and covers every domain.
pub fn stored_certificate(acme: &AcmeConfig, now: SystemTime) -> Option<CertInfo> {
    let cert = acme.cert_path();
    if !cert.exists() {
        return None;
    }
    let key = acme.key_path();
    let loaded = certs::load_pair(&cert.to_string_lossy(), &key.to_string_lossy(), now).ok()?;
    let covers = acme.domains.get_ref().iter().all(|domain| {
        loaded
            .info
            .names
            .iter()
            .any(|name| name.eq_ignore_ascii_case(domain))
    });
    covers.then_some(CertInfo {
        source: "acme",
        ..loaded.info
    })
}

/// An exclusive `flock` on the state directory's lock file, held while ordering; let go
/// when dropped (or when the process dies, so a crashed replica never blocks the others).
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Waits for the lock, checking every `poll`.
    pub async fn acquire(state_dir: &str, poll: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = Path::new(state_dir).join("order.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked == 0 {
                return Ok(Self { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error);
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// The renewal-information identifier (RFC 9773 §4.1: authority key identifier and serial)
/// of the stored certificate, if one is stored and has them.
pub fn stored_certificate_id(
    acme: &AcmeConfig,
) -> Option<instant_acme::CertificateIdentifier<'static>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(acme.cert_path()).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    instant_acme::CertificateIdentifier::try_from(&leaf)
        .ok()
        .map(instant_acme::CertificateIdentifier::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-acme-store-{name}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn private_files_replace_the_old_ones_whole_with_mode_0600() {
        let dir = temp_dir("write");
        let path = dir.join("sub").join("key.pem");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn accounts_are_kept_per_directory() {
        let a = account_path("/s", "https://a.example/dir");
        let b = account_path("/s", "https://b.example/dir");
        assert_ne!(a, b);
        assert_eq!(a, account_path("/s", "https://a.example/dir"));
        assert!(a.starts_with("/s/accounts"));
    }

    #[tokio::test]
    async fn one_holder_of_the_lock_at_a_time() {
        let dir = temp_dir("lock");
        let dir = dir.to_string_lossy().into_owned();
        let first = StateLock::acquire(&dir, Duration::from_millis(10))
            .await
            .unwrap();
        let second = tokio::time::timeout(
            Duration::from_millis(200),
            StateLock::acquire(&dir, Duration::from_millis(10)),
        )
        .await;
        assert!(second.is_err(), "the lock is held");
        drop(first);
        let third = tokio::time::timeout(
            Duration::from_secs(5),
            StateLock::acquire(&dir, Duration::from_millis(10)),
        )
        .await;
        assert!(matches!(third, Ok(Ok(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
