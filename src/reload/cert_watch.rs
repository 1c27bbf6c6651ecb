//! Certificate rotation without a restart: the directories of the certificate, key and CA
//! files in use are watched; when one of those files changes (certbot's rename, a Kubernetes
//! secret's `..data` swap), and once the directory has been quiet for the debounce, every
//! listener's certificates are read again and swapped in for new handshakes only.

use super::Reloader;
use super::file_watch::directory_of;
use notify::Watcher;
use std::collections::HashSet;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
    let (mut watcher, mut arrivals) = super::file_watch::name_watcher(Arc::clone(&names))?;
    Ok(tokio::spawn(async move {
        let mut directories: HashSet<PathBuf> = HashSet::new();
        loop {
            // Follow the files the listeners use now.
            let files = reloader.tls_files().await;
            let last = if files.is_empty() {
                0
            } else {
                fingerprint(&files)
            };
            *names.lock().unwrap_or_else(|p| p.into_inner()) = files
                .iter()
                .filter_map(|f| Path::new(f).file_name().map(|n| n.to_os_string()))
                .collect();
            let wanted: HashSet<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
            for gone in directories.difference(&wanted) {
                let _ = watcher.unwatch(gone);
            }
            for new in wanted.difference(&directories) {
                if let Err(e) = watcher.watch(new, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %new.display(), error = %e, "cannot watch certificate directory; rotation needs a reload");
                }
            }
            directories = wanted;
            tokio::select! {
                arrived = arrivals.recv() => {
                    if arrived.is_none() {
                        return;
                    }
                    loop {
                        match tokio::time::timeout(debounce, arrivals.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
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
