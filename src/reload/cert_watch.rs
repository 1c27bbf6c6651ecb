//! Certificate rotation without a restart: the directories of the certificate, key and CA
//! files in use are watched; when one of those files changes (certbot's rename, a Kubernetes
//! secret's `..data` swap), and once the directory has been quiet for the debounce, every
//! listener's certificates are read again and swapped in for new handshakes only.

use super::Reloader;
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

fn directory_of(file: &str) -> PathBuf {
    Path::new(file)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Starts watching; the task follows config reloads (new files, new directories).
pub fn spawn(
    reloader: Arc<Reloader>,
    debounce: Duration,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
    let (events, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watched_names = Arc::clone(&names);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let names = watched_names.lock().unwrap_or_else(|p| p.into_inner());
        let ours = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|name| {
                names.contains(name) || name.to_string_lossy().starts_with("..")
            })
        });
        if ours {
            let _ = events.send(());
        }
    })?;
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
