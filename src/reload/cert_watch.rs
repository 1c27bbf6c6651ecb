//! Certificate rotation without a restart: the directories of the certificate, key and CA
//! files in use are watched; when one of those files changes (certbot's rename, a Kubernetes
//! secret's `..data` swap), and once the directory has been quiet for the debounce, every
//! listener's certificates are read again and swapped in for new handshakes only.

use super::Reloader;
use super::file_watch::WatchedFiles;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// A hash of the files' contents: a change event that changed nothing does not reload.
fn fingerprint(files: &[String]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// Starts watching; the task follows config reloads (new files, new directories). The files
/// are watched, and their contents fingerprinted, before this returns: a change made as soon
/// as the listeners are serving is seen.
pub async fn spawn(
    reloader: Arc<Reloader>,
    debounce: Duration,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let mut watched = WatchedFiles::new()?;
    let mut files = reloader.tls_files().await;
    let mut last = fingerprint(&files);
    watched.follow(&files, "a certificate");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                arrived = watched.arrivals.recv() => {
                    if arrived.is_none() || !watched.settle(debounce).await {
                        return;
                    }
                    // Compared with what was seen at the last look, not read again after the
                    // reload: a change landing while it runs is still a change next time.
                    let now = fingerprint(&files);
                    if now != last {
                        last = now;
                        reloader.reload_certificates("certificate file change").await;
                    }
                }
                () = reloader.tls_files_changed.notified() => {
                    // Follow the files the listeners use now.
                    files = reloader.tls_files().await;
                    last = fingerprint(&files);
                    watched.follow(&files, "a certificate");
                }
            }
        }
    }))
}
