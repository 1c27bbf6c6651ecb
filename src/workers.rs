//! Thread per core: with `process.scheduler = "per_core"`, each worker thread runs its own
//! single-threaded runtime, accepts on its own SO_REUSEPORT socket of every listener and keeps
//! its own idle upstream connections, so a request never leaves the thread that accepted its
//! connection (no work stealing, no cross-thread wake-ups, no shared pool lock). The kernel
//! spreads new connections over the sockets.
//!
//! This module only knows the workers: a handle to spawn on each, and which one the current
//! thread is. With one shared (work-stealing) runtime, or in tests, there is one worker.

use std::cell::Cell;
use std::sync::OnceLock;
use tokio::runtime::Handle;

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Records the workers' runtimes, worker 0 first. Called once, before anything is served;
/// later calls are ignored.
pub fn install(handles: Vec<Handle>) {
    let _ = WORKERS.set(handles);
}

/// Marks the calling thread as worker `index`.
pub fn enter(index: usize) {
    CURRENT.with(|current| current.set(index));
}

/// The runtimes to spawn each listener's accept loop on, one per worker; empty when there is
/// one shared runtime (the caller's).
pub fn handles() -> &'static [Handle] {
    WORKERS.get().map_or(&[], Vec::as_slice)
}

/// How many workers keep their own state (at least one).
pub fn count() -> usize {
    handles().len().max(1)
}

/// The worker the calling thread belongs to (0 outside per-core workers).
pub fn current() -> usize {
    CURRENT.with(Cell::get).min(count() - 1)
}
