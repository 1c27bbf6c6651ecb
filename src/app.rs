//! The running process: binds the listeners, the admin listener and the embedded demo backends
//! of a config, serves them, and shuts them down gracefully. Used by `main` and by the tests.

use crate::admin::{self, AdminState};
use crate::cache::CacheRegistry;
use crate::config::{Config, parse_bind};
use crate::demo::{self, DemoBackend, Faults, OrderStore};
use crate::metrics::Metrics;
use crate::reload::{Reloader, config_hash};
use crate::server::{self, Drain};
use crate::snapshot::SharedSnapshot;
use crate::tls::challenge::AcmeChallenges;
use crate::upstream::ServerRegistry;
use crate::upstream::discovery::{self, AddressBook, Resolver};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A started gatehouse: its bound addresses and what is needed to reload and stop it.
pub struct Running {
    /// The bound address of each `[[listener]]` at start, in config order (useful with port 0).
    pub listener_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub demo_addrs: Vec<SocketAddr>,
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<ServerRegistry>,
    pub caches: Arc<CacheRegistry>,
    pub reloader: Arc<Reloader>,
    admin_state: Arc<AdminState>,
    admin_drain: Drain,
    demo_drain: Drain,
    tasks: Vec<JoinHandle<()>>,
    /// Kept alive for as long as the file is watched.
    _watcher: Option<notify::RecommendedWatcher>,
}

fn bind(what: impl Into<String>, addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    server::bind(addr).map_err(|source| StartError::Bind {
        what: what.into(),
        addr,
        source,
    })
}

/// The demo backends' tracing: `[tracing]` as configured, every request the proxy sampled
/// exported under the service name `order-api`.
fn demo_tracing(
    config: &crate::config::TracingConfig,
    traces: &crate::trace::TraceRegistry,
    metrics: &Metrics,
) -> Option<crate::trace::Tracing> {
    if !config.enabled() {
        return None;
    }
    let endpoint = crate::config::parse_tracing_endpoint(config.endpoint.get_ref()).ok()?;
    let headers = config
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                http::HeaderName::try_from(name.as_str()).ok()?,
                http::HeaderValue::try_from(value.get_ref().as_str()).ok()?,
            ))
        })
        .collect();
    let tls = if endpoint.https {
        let ca = config.ca.as_ref().map(|ca| ca.get_ref().as_str());
        match crate::tls::client::export_tls(&endpoint.host, ca) {
            Ok(tls) => Some(tls),
            Err(error) => {
                tracing::warn!(%error, "the demo backends export no spans");
                return None;
            }
        }
    } else {
        None
    };
    let target = demo::export_target(endpoint.authority, tls, endpoint.path, headers);
    let exporter = traces.get_or_create(Some(target), &metrics.tracing_spans_dropped)?;
    Some(demo::tracing(*config.ratio.get_ref(), exporter))
}

impl Running {
    /// Starts from a config already loaded, without a file to reload from.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_inner(config, String::new(), None).await
    }

    /// Starts from the config file at `path`, which reloads read again (and, with
    /// `[reload] watch`, whose changes are picked up by themselves).
    pub async fn start_file(path: &Path) -> Result<Self, StartError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StartError::Config(format!("{}: cannot read config file: {e}", path.display()))
        })?;
        let config =
            crate::config::load_str(path, &text).map_err(|e| StartError::Config(e.to_string()))?;
        Self::start_inner(config, config_hash(&text), Some(path.to_path_buf())).await
    }

    async fn start_inner(
        config: Config,
        hash: String,
        path: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let registry = Arc::new(ServerRegistry::new());
        let caches = Arc::new(CacheRegistry::new());

        // Demo backends first, so the proxy's first requests find them up.
        let demo_drain = Drain::new();
        let store = Arc::new(OrderStore::new());
        let mut demo_addrs = Vec::new();
        let mut tasks = Vec::new();
        // The demo backends export under their own name, to the endpoint at start.
        let demo_traces = crate::trace::TraceRegistry::new();
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
            if let Some(tracing) = demo_tracing(&config.tracing, &demo_traces, &metrics) {
                backend.trace_to(tracing);
            }
            let mut watch = demo_drain.watch();
            tasks.push(tokio::spawn(async move {
                let stop = async move { watch.signalled().await };
                if let Err(e) = demo::serve(tcp, backend, stop).await {
                    tracing::error!(error = %e, "demo backend failed");
                }
            }));
        }

        let admin_tcp = if config.admin.bind.get_ref().is_empty() {
            None
        } else {
            let addr = parse_bind(config.admin.bind.get_ref()).map_err(StartError::Config)?;
            Some(bind("the admin listener", addr)?)
        };
        let admin_addr = admin_tcp.as_ref().and_then(|l| l.local_addr().ok());
        let watch_config = config.reload.clone();

        // Servers given by name are resolved before the first snapshot. One that does not
        // resolve yet leaves its upstream short (503 while it has none) rather than stopping
        // the start: in Kubernetes and compose, backends often come up after their proxy.
        let resolver = Resolver::new(&config.resolver).map_err(StartError::Config)?;
        let addresses = Arc::new(AddressBook::new());
        addresses
            .resolve_unknown(&resolver, &config, &metrics)
            .await;

        let challenges = AcmeChallenges::default();
        let reloader = Reloader::start(
            config,
            hash,
            path.clone(),
            Arc::clone(&registry),
            Arc::clone(&caches),
            Arc::clone(&metrics),
            addresses,
            resolver,
            challenges.clone(),
        )
        .map_err(StartError::Config)?;
        tasks.push(tokio::spawn(discovery::refresh_loop(Arc::clone(&reloader))));
        // A certificate stored by an ACME task is put in service by reading the listeners'
        // certificates again.
        let stored = reloader.acme.stored();
        let acme_reloader = Arc::clone(&reloader);
        tasks.push(tokio::spawn(async move {
            loop {
                stored.notified().await;
                let report = acme_reloader.reload_certificates("acme").await;
                if !report.ok {
                    tracing::warn!(errors = ?report.errors, "ACME: the new certificate could not be put in service");
                }
            }
        }));
        let listener_addrs = reloader
            .listener_addrs()
            .await
            .into_iter()
            .map(|(_, addr)| addr)
            .collect();
        let snapshot = Arc::clone(reloader.snapshot());
        // The admin listener outlives the proxy's drain, so /readyz can say "draining".
        let admin_drain = Drain::new();
        let admin_state = Arc::new(AdminState {
            snapshot: Arc::clone(&snapshot),
            metrics: Arc::clone(&metrics),
            caches: Arc::clone(&caches),
            reloader: Arc::clone(&reloader),
            ready: AtomicBool::new(true),
            listener_loopback: admin_addr.is_some_and(|addr| addr.ip().is_loopback()),
        });
        if let Some(tcp) = admin_tcp {
            tracing::info!(addr = %admin_addr.map(|a| a.to_string()).unwrap_or_default(), "admin listening");
            tasks.push(tokio::spawn(admin::serve(
                tcp,
                Arc::clone(&admin_state),
                admin_drain.watch(),
            )));
        }
        let watcher = match (&path, watch_config.watch) {
            (Some(_), true) => {
                match crate::reload::watch(Arc::clone(&reloader), watch_config.debounce.0) {
                    Ok(watcher) => Some(watcher),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the config file; SIGHUP and POST /reload still reload");
                        None
                    }
                }
            }
            _ => None,
        };
        if watch_config.watch {
            match crate::reload::cert_watch::spawn(Arc::clone(&reloader), watch_config.debounce.0)
                .await
            {
                Ok(task) => tasks.push(task),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch certificate files; reload to rotate them")
                }
            }
        }
        // Authentication files followed as certificates are; JWKS URLs fetched in any case.
        if watch_config.watch {
            match crate::reload::auth_watch::spawn_file_watch(
                Arc::clone(reloader.auth()),
                watch_config.debounce.0,
            ) {
                Ok(task) => tasks.push(task),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch authentication files; reload to pick up changes")
                }
            }
        }
        tasks.push(crate::reload::auth_watch::spawn_jwks_refresh(Arc::clone(
            reloader.auth(),
        )));
        Ok(Self {
            listener_addrs,
            admin_addr,
            demo_addrs,
            snapshot,
            metrics,
            registry,
            caches,
            reloader,
            admin_state,
            admin_drain,
            demo_drain,
            tasks,
            _watcher: watcher,
        })
    }

    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, then stops the
    /// demo backends. Returns false if the grace period ran out with requests still in flight.
    /// What the admin endpoints read (for `admin::status_json` without an admin listener).
    pub fn admin_state(&self) -> &AdminState {
        &self.admin_state
    }

    pub async fn shutdown(self) -> bool {
        self.admin_state.ready.store(false, Ordering::Relaxed);
        let grace = self.snapshot.load().limits.shutdown_grace;
        self.reloader.acme.stop();
        let drained = self.reloader.drain_all(grace).await;
        if !drained {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin_drain.drain()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.demo_drain.drain()).await;
        for task in self.tasks {
            task.abort();
        }
        drained
    }
}
