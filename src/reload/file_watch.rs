//! What the certificate and authentication watchers share: a watcher of directories that
//! signals when a file of a given name in them changes (or a Kubernetes secret's `..data`
//! swap happens), and the directory a file is watched through.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The directory to watch for `file` (watching the directory sees renames onto the file).
pub(super) fn directory_of(file: &str) -> PathBuf {
    Path::new(file)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A watcher that sends `()` when a file whose name is in `names` (as it is at the time of
/// the event) changes; the caller adds the directories to watch.
pub(super) fn name_watcher(
    names: Arc<Mutex<HashSet<OsString>>>,
) -> notify::Result<(
    notify::RecommendedWatcher,
    tokio::sync::mpsc::UnboundedReceiver<()>,
)> {
    let (events, arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let names = names.lock().unwrap_or_else(|p| p.into_inner());
        let ours = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|name| {
                names.contains(name) || name.to_string_lossy().starts_with("..")
            })
        });
        if ours {
            let _ = events.send(());
        }
    })?;
    Ok((watcher, arrivals))
}
