//! Shutdown signalling and draining: one `Drain` tells every listener and connection to stop,
//! then waits until each of them (each holding a `DrainWatch`) has finished.

use tokio::sync::{mpsc, watch};

/// The sending side: signal shutdown, then wait for every watch to be dropped.
pub struct Drain {
    signal: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by each listener and connection; dropped when it has finished.
#[derive(Clone)]
pub struct DrainWatch {
    signal: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            signal,
            done_tx,
            done_rx,
        }
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            signal: self.signal.subscribe(),
            _done: self.done_tx.clone(),
        }
    }

    /// Signals shutdown and waits until every watch has been dropped.
    pub async fn drain(self) {
        let Drain {
            signal,
            done_tx,
            mut done_rx,
        } = self;
        let _ = signal.send(true);
        drop(done_tx);
        // recv() yields None once every sender (every DrainWatch) is gone.
        let _ = done_rx.recv().await;
    }
}

impl DrainWatch {
    /// Resolves once shutdown has been signalled (at once if it already was).
    pub async fn signalled(&mut self) {
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}
