//! What the certificate and authentication watchers share: the directories of a set of files
//! watched (watching a directory sees renames onto a file, certbot's and a Kubernetes
//! secret's `..data` swap alike), a signal when one of those files changes, and the wait for
//! the directory to be quiet before acting on it.

use notify::Watcher;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The directory to watch for `file`.
fn directory_of(file: &str) -> PathBuf {
    Path::new(file)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The files one watcher follows, and their directories.
pub(super) struct WatchedFiles {
    watcher: notify::RecommendedWatcher,
    /// A `()` for each change to a file followed (as named when the event came).
    pub arrivals: tokio::sync::mpsc::UnboundedReceiver<()>,
    names: Arc<Mutex<HashSet<OsString>>>,
    directories: HashSet<PathBuf>,
}

impl WatchedFiles {
    pub fn new() -> notify::Result<Self> {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let (events, arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watched_names = Arc::clone(&names);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
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
        Ok(Self {
            watcher,
            arrivals,
            names,
            directories: HashSet::new(),
        })
    }

    /// Follows `files` from now on: their names, and the directories they are in (`what`
    /// names them in the warning for a directory that cannot be watched).
    pub fn follow(&mut self, files: &[String], what: &str) {
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = files
            .iter()
            .filter_map(|f| Path::new(f).file_name().map(|n| n.to_os_string()))
            .collect();
        let wanted: HashSet<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
        for gone in self.directories.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        for new in wanted.difference(&self.directories) {
            if let Err(e) = self.watcher.watch(new, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %new.display(), error = %e, "cannot watch the directory of {what}; changes need a reload");
            }
        }
        self.directories = wanted;
    }

    /// After a change arrived: waits until none has come for `debounce`. False when the
    /// watcher is gone.
    pub async fn settle(&mut self, debounce: Duration) -> bool {
        loop {
            match tokio::time::timeout(debounce, self.arrivals.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}
