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

/// Starts watching; the task follows config reloads (new files, new directories).
pub fn spawn(
    reloader: Arc<Reloader>,
    debounce: Duration,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let mut watched = WatchedFiles::new()?;
    Ok(tokio::spawn(async move {
        loop {
            // Follow the files the listeners use now.
            let files = reloader.tls_files().await;
            let last = if files.is_empty() {
                0
            } else {
                fingerprint(&files)
            };
            watched.follow(&files, "a certificate");
            tokio::select! {
                arrived = watched.arrivals.recv() => {
                    if arrived.is_none() || !watched.settle(debounce).await {
                        return;
                    }
                    let now = fingerprint(&files);
                    if now != last {
                        reloader.reload_certificates("certificate file change").await;
                    }
                }
                () = reloader.tls_files_changed.notified() => {}
            }
        }
    }))
}
