//! The running process: binds the listeners, the admin listener and the embedded demo backends
//! of a config, serves them, and shuts them down gracefully. Used by `main` and by the tests.

use crate::admin::{self, AdminState};
use crate::cache::CacheRegistry;
use crate::config::{Config, parse_bind};
use crate::demo::{self, DemoBackend, Faults, OrderStore};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::server::{self, Drain, Listener};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::upstream::ServerRegistry;
use arc_swap::ArcSwap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why gatehouse could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started gatehouse: its bound addresses and what is needed to stop it.
pub struct Running {
    /// The bound address of each `[[listener]]`, in config order (useful with port 0).
    pub listener_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub demo_addrs: Vec<SocketAddr>,
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<ServerRegistry>,
    pub caches: Arc<CacheRegistry>,
    admin_state: Arc<AdminState>,
    drain: Drain,
    admin_drain: Drain,
    demo_drain: Drain,
    tasks: Vec<JoinHandle<()>>,
    shutdown_grace: Duration,
}

fn bind(what: impl Into<String>, addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    server::bind(addr).map_err(|source| StartError::Bind {
        what: what.into(),
        addr,
        source,
    })
}

impl Running {
    /// Binds every socket of `config` (failing before serving anything if one cannot be bound)
    /// and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let registry = Arc::new(ServerRegistry::new());
        let caches = Arc::new(CacheRegistry::new());

        // Demo backends first, so the proxy's first requests find them up.
        let demo_drain = Drain::new();
        let store = Arc::new(OrderStore::new());
        let mut demo_addrs = Vec::new();
        let mut tasks = Vec::new();
        for (i, entry) in config.demo.backends.iter().enumerate() {
            let entry = entry.get_ref();
            let addr = parse_bind(&entry.addr).map_err(StartError::Config)?;
            let name = format!("backend-{}", i + 1);
            let tcp = bind(format!("demo {name}"), addr)?;
            demo_addrs.push(tcp.local_addr().unwrap_or(addr));
            let backend = DemoBackend::new(
                name,
                Arc::clone(&store),
                Faults::new(entry.latency.0, entry.error_rate),
            );
            let mut watch = demo_drain.watch();
            tasks.push(tokio::spawn(async move {
                let stop = async move { watch.signalled().await };
                if let Err(e) = demo::serve(tcp, backend, stop).await {
                    tracing::error!(error = %e, "demo backend failed");
                }
            }));
        }

        let mut listeners = Vec::new();
        let mut listener_addrs = Vec::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            let name = listener.name.get_ref().clone();
            let addr = parse_bind(listener.bind.get_ref()).map_err(StartError::Config)?;
            let tcp = bind(format!("listener {name:?}"), addr)?;
            listener_addrs.push(tcp.local_addr().unwrap_or(addr));
            listeners.push(Listener {
                index,
                open_connections: metrics.open_connections.with_label_values(&[name.as_str()]),
                accepted: metrics
                    .accepted_connections
                    .with_label_values(&[name.as_str()]),
                name,
                tcp,
            });
        }
        let admin_tcp = if config.admin.bind.get_ref().is_empty() {
            None
        } else {
            let addr = parse_bind(config.admin.bind.get_ref()).map_err(StartError::Config)?;
            Some(bind("the admin listener", addr)?)
        };
        let admin_addr = admin_tcp.as_ref().and_then(|l| l.local_addr().ok());

        let shutdown_grace = config.limits.shutdown_grace.0;
        let snapshot =
            Snapshot::compile(config, &registry, &caches, &metrics).map_err(StartError::Config)?;
        let limits = snapshot.limits;
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let proxy = Proxy::new(Arc::clone(&snapshot));
        let drain = Drain::new();
        // The admin listener outlives the proxy's drain, so /readyz can say "draining".
        let admin_drain = Drain::new();
        for listener in listeners {
            tracing::info!(listener = %listener.name, addr = %listener.tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
            tasks.push(tokio::spawn(server::serve(
                listener,
                Arc::clone(&proxy),
                limits,
                drain.watch(),
            )));
        }
        let admin_state = Arc::new(AdminState {
            snapshot: Arc::clone(&snapshot),
            metrics: Arc::clone(&metrics),
            caches: Arc::clone(&caches),
            ready: AtomicBool::new(true),
        });
        if let Some(tcp) = admin_tcp {
            tracing::info!(addr = %admin_addr.map(|a| a.to_string()).unwrap_or_default(), "admin listening");
            tasks.push(tokio::spawn(admin::serve(
                tcp,
                Arc::clone(&admin_state),
                admin_drain.watch(),
            )));
        }
        Ok(Self {
            listener_addrs,
            admin_addr,
            demo_addrs,
            snapshot,
            metrics,
            registry,
            caches,
            admin_state,
            drain,
            admin_drain,
            demo_drain,
            tasks,
            shutdown_grace,
        })
    }

    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, then stops the
    /// demo backends. Returns false if the grace period ran out with requests still in flight.
    pub async fn shutdown(self) -> bool {
        self.admin_state.ready.store(false, Ordering::Relaxed);
        let drained = tokio::time::timeout(self.shutdown_grace, self.drain.drain())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(grace = ?self.shutdown_grace, "shutdown grace period over; closing remaining connections");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin_drain.drain()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.demo_drain.drain()).await;
        for task in self.tasks {
            task.abort();
        }
        drained
    }
}
