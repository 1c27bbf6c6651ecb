//! Configuration reload without dropping a request: a trigger (the file changing on disk,
//! SIGHUP, `POST /reload`) leads to a check exactly like `gatehouse check`, the new listeners
//! bound, a new snapshot compiled away from the hot path and swapped in with one store.
//! Requests in flight finish on the snapshot they started with; long-lived state (servers'
//! health, breakers, pools; unchanged caches) carries over through the registries. A bad
//! config changes nothing: the error is logged, counted and shown in /status.

pub mod auth_watch;
pub mod cert_watch;
mod file_watch;

use crate::acme::AcmeKeeper;
use crate::cache::CacheRegistry;
use crate::config::{self, Config, parse_bind};
use crate::limit::LimiterRegistry;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::server::{self, Drain, Listener, ListenerSettings, SharedSettings};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::tls::challenge::AcmeChallenges;
use crate::upstream::ServerRegistry;
use crate::upstream::discovery::{
    AddressBook, NameReport, Rediscover, Resolver, names_by_upstream,
};
use crate::workers;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// A client-facing listener in service.
struct ActiveListener {
    /// The bind address as written in the config (kept while it does not change).
    bind: String,
    addr: SocketAddr,
    /// Serving HTTP/3 too (`http3`): a change of it rebinds the listener, as a change of bind does.
    http3: bool,
    drain: Drain,
    /// One accept loop per worker (and the QUIC endpoint's).
    tasks: Vec<JoinHandle<()>>,
}

/// The listeners in service, by name, with ids that stay stable across reloads (routes and
/// connections refer to listeners by id).
#[derive(Default)]
struct Listeners {
    active: BTreeMap<String, ActiveListener>,
    ids: HashMap<String, usize>,
    /// TLS, redirect and HSTS of each configured listener, swapped on reload and rotation.
    settings: HashMap<String, SharedSettings>,
}

impl Listeners {
    fn id(&mut self, name: &str) -> usize {
        let next = self.ids.len();
        *self.ids.entry(name.to_owned()).or_insert(next)
    }

    /// Binds the listeners of `config` that are new or whose bind changed; the error points at
    /// the bind in `text` (read from `path`).
    fn bind_new(
        &self,
        config: &Config,
        path: &Path,
        text: &str,
    ) -> Result<Vec<BoundListener>, String> {
        let mut fresh = Vec::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            let name = listener.name.get_ref();
            let bind = listener.bind.get_ref();
            let http3 = *listener.http3.get_ref();
            if self
                .active
                .get(name)
                .is_some_and(|a| a.bind == *bind && a.http3 == http3)
            {
                continue;
            }
            match bind_listener(name, bind, http3) {
                Ok((tcp, addr, udp)) => fresh.push(BoundListener {
                    name: name.clone(),
                    bind: bind.clone(),
                    tcp,
                    addr,
                    udp,
                }),
                Err(e) => {
                    let (line, column) = config::line_column(text, listener.bind.span().start);
                    return Err(format!(
                        "{}:{line}:{column}: listener[{i}].bind: {e}",
                        path.display()
                    ));
                }
            }
        }
        Ok(fresh)
    }

    /// Stops the listeners not in `wanted` (name → bind and http3) as they are: they stop
    /// accepting and drain their connections for at most `grace`.
    fn retire_unwanted(&mut self, wanted: &HashMap<String, (String, bool)>, grace: Duration) {
        let gone: Vec<String> = self
            .active
            .iter()
            .filter(|(name, active)| {
                wanted.get(*name) != Some(&(active.bind.clone(), active.http3))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(active) = self.active.remove(&name) {
                tracing::info!(listener = %name, addr = %active.addr, "listener removed; draining");
                let ActiveListener { drain, tasks, .. } = active;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(grace, drain.drain()).await;
                    tasks.iter().for_each(JoinHandle::abort);
                });
            }
        }
    }
}

/// A listener bound but not serving yet: a reload binds every new one before it changes
/// anything, so that a taken port leaves the old config in force.
struct BoundListener {
    name: String,
    bind: String,
    tcp: tokio::net::TcpListener,
    addr: SocketAddr,
    /// The UDP socket of an `http3` listener, on the same address.
    udp: Option<std::net::UdpSocket>,
}

/// What /status shows about the configuration.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadStatus {
    /// Hash of the config text in force.
    pub hash: String,
    /// Unix seconds when it was loaded.
    pub loaded_at: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_error: Option<String>,
    /// Unix seconds of the last failed reload.
    pub last_error_at: Option<u64>,
    /// The last few reloads that changed something or failed, newest first.
    pub recent: VecDeque<ReloadEvent>,
}

/// How many reloads /status remembers.
const RECENT_RELOADS: usize = 10;

/// One reload attempt, as the status page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadEvent {
    /// Unix seconds.
    pub at: u64,
    /// What asked for it: `file change`, `SIGHUP`, `POST /reload`.
    pub trigger: String,
    pub ok: bool,
    /// The hash in force afterwards.
    pub hash: String,
    pub errors: Vec<String>,
}

impl ReloadStatus {
    fn remember(&mut self, event: ReloadEvent) {
        self.recent.push_front(event);
        self.recent.truncate(RECENT_RELOADS);
    }
}

/// How a reload went.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    pub ok: bool,
    /// False when the file was unchanged (nothing to do).
    pub changed: bool,
    pub hash: String,
    /// Every error, as `file:line:column: key: message`.
    pub errors: Vec<String>,
}

pub struct Reloader {
    path: Option<PathBuf>,
    snapshot: SharedSnapshot,
    proxy: Arc<Proxy>,
    registry: Arc<ServerRegistry>,
    caches: Arc<CacheRegistry>,
    /// Rate limiters, kept across reloads that leave their settings alone.
    limiters: Arc<LimiterRegistry>,
    /// The Redis connection, kept across reloads that leave `[redis]` alone.
    redis: Arc<crate::shared::RedisRegistry>,
    /// Basic and JWT authentication state (users, key sets), kept across reloads.
    auth: Arc<crate::auth::AuthRegistry>,
    /// The span exporter, kept across reloads (its endpoint follows `[tracing]`).
    traces: Arc<crate::trace::TraceRegistry>,
    metrics: Arc<Metrics>,
    /// Addresses of servers given by name, and the resolver that refreshes them.
    addresses: Arc<AddressBook>,
    resolver: Mutex<Resolver>,
    /// ACME challenge answers the listeners serve while an order is pending.
    challenges: AcmeChallenges,
    /// The tasks that keep ACME certificates, following the config in force.
    pub acme: AcmeKeeper,
    listeners: tokio::sync::Mutex<Listeners>,
    status: Mutex<ReloadStatus>,
    /// Woken when the set of certificate files in use may have changed (a config reload).
    pub tls_files_changed: tokio::sync::Notify,
    /// The certificates in service, for /status.
    certificates: Mutex<Vec<CertificateStatus>>,
}

pub fn config_hash(text: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type Bound = (
    tokio::net::TcpListener,
    SocketAddr,
    Option<std::net::UdpSocket>,
);

/// Binds a listener of the config (and its UDP port for HTTP/3, on the TCP side's address);
/// the error names it.
fn bind_listener(name: &str, bind: &str, http3: bool) -> Result<Bound, String> {
    let addr = parse_bind(bind)?;
    let tcp =
        server::bind(addr).map_err(|e| format!("cannot bind listener {name:?} on {addr}: {e}"))?;
    let bound = tcp.local_addr().unwrap_or(addr);
    let udp =
        if http3 {
            Some(server::http3::bind_udp(bound).map_err(|e| {
                format!("cannot bind listener {name:?} for HTTP/3 on UDP {bound}: {e}")
            })?)
        } else {
            None
        };
    Ok((tcp, bound, udp))
}

/// Parses and checks config text as `gatehouse check` does, on the blocking pool.
async fn check(path: &Path, text: &str) -> Result<Config, Vec<String>> {
    let (path, text) = (path.to_path_buf(), text.to_owned());
    match tokio::task::spawn_blocking(move || config::load_str(&path, &text)).await {
        Ok(Ok(config)) => Ok(config),
        Ok(Err(errors)) => Err(errors.0.iter().map(ToString::to_string).collect()),
        Err(e) => Err(vec![format!("config check failed: {e}")]),
    }
}

impl Reloader {
    /// Binds the listeners of `config`, compiles its snapshot and starts serving. Its names
    /// should already be resolved into `addresses`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: Config,
        text_hash: String,
        path: Option<PathBuf>,
        registry: Arc<ServerRegistry>,
        caches: Arc<CacheRegistry>,
        metrics: Arc<Metrics>,
        addresses: Arc<AddressBook>,
        resolver: Resolver,
        challenges: AcmeChallenges,
    ) -> Result<Arc<Self>, String> {
        let mut listeners = Listeners::default();
        let mut bound = Vec::new();
        for listener in &config.listeners {
            let name = listener.name.get_ref();
            let http3 = *listener.http3.get_ref();
            let (tcp, addr, udp) = bind_listener(name, listener.bind.get_ref(), http3)?;
            bound.push(BoundListener {
                name: name.clone(),
                bind: listener.bind.get_ref().clone(),
                tcp,
                addr,
                udp,
            });
            listeners.id(name);
        }
        let ports = bound
            .iter()
            .map(|b| (b.name.clone(), b.addr.port()))
            .collect();
        let built = build_settings(&config, &HashMap::new(), &metrics, &challenges, &ports)
            .map_err(|errors| errors.join("\n"))?;
        let certificates = install_settings(&mut listeners.settings, built, &metrics);
        let limiters = Arc::new(LimiterRegistry::new());
        let redis = Arc::new(crate::shared::RedisRegistry::new());
        let auth = Arc::new(crate::auth::AuthRegistry::new());
        let traces = Arc::new(crate::trace::TraceRegistry::new());
        let snapshot = Snapshot::compile(
            config,
            &registry,
            &addresses,
            &caches,
            &limiters,
            &redis,
            &metrics,
            &listeners.ids,
            &auth,
            &traces,
        )?;
        let snapshot: SharedSnapshot = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot));
        let proxy = Proxy::new(Arc::clone(&snapshot));
        let acme = AcmeKeeper::new(challenges.clone(), Arc::clone(&metrics.acme));
        let reloader = Arc::new(Self {
            path,
            snapshot,
            proxy,
            registry,
            caches,
            limiters,
            redis,
            auth,
            traces,
            metrics,
            addresses,
            resolver: Mutex::new(resolver),
            acme,
            challenges,
            listeners: tokio::sync::Mutex::new(Listeners::default()),
            tls_files_changed: tokio::sync::Notify::new(),
            certificates: Mutex::new(certificates),
            status: Mutex::new(ReloadStatus {
                hash: text_hash.clone(),
                loaded_at: unix_now(),
                reloads_ok: 0,
                reloads_failed: 0,
                last_error: None,
                last_error_at: None,
                recent: VecDeque::new(),
            }),
        });
        reloader.metrics.set_config_info(&text_hash);
        reloader.acme.follow(&reloader.snapshot.load().config);
        reloader.serve_bound(&mut listeners, bound);
        // Nobody else holds the lock yet.
        if let Ok(mut slot) = reloader.listeners.try_lock() {
            *slot = listeners;
        }
        Ok(reloader)
    }

    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// Basic and JWT authentication state (users, key sets) in use.
    pub fn auth(&self) -> &Arc<crate::auth::AuthRegistry> {
        &self.auth
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The bound address of each listener, in config order.
    pub async fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        let listeners = self.listeners.lock().await;
        let snapshot = self.snapshot.load();
        snapshot
            .config
            .listeners
            .iter()
            .filter_map(|l| {
                let name = l.name.get_ref();
                listeners.active.get(name).map(|a| (name.clone(), a.addr))
            })
            .collect()
    }

    fn serve_listener(
        &self,
        id: usize,
        bound: BoundListener,
        settings: SharedSettings,
    ) -> ActiveListener {
        let BoundListener {
            name,
            bind,
            tcp,
            addr,
            udp,
        } = bound;
        let name = name.as_str();
        let drain = Drain::new();
        let closed = Arc::new(server::ClosedConnections::new(
            &self.metrics.closed_connections,
            name,
        ));
        let listener = |tcp| Listener {
            index: id,
            name: name.to_owned(),
            open_connections: self.metrics.open_connections.with_label_values(&[name]),
            accepted: self.metrics.accepted_connections.with_label_values(&[name]),
            closed: Arc::clone(&closed),
            tcp,
            settings: Arc::clone(&settings),
        };
        let mut tasks = vec![tokio::spawn(server::serve(
            listener(tcp),
            Arc::clone(&self.proxy),
            drain.watch(),
        ))];
        // Per core: every other worker accepts on a socket of its own, bound to the same
        // address and registered with that worker's runtime.
        for handle in workers::handles().iter().skip(1) {
            let accepting = server::bind_socket(addr).and_then(|socket| {
                let _in_worker = handle.enter();
                tokio::net::TcpListener::from_std(socket)
            });
            match accepting {
                Ok(tcp) => tasks.push(handle.spawn(server::serve(
                    listener(tcp),
                    Arc::clone(&self.proxy),
                    drain.watch(),
                ))),
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "a worker cannot listen");
                }
            }
        }
        // One QUIC endpoint, on this runtime: the datagrams of one connection must all reach
        // the endpoint that holds it, which several sockets on the port would not ensure.
        let http3 = udp.is_some();
        if let Some(udp) = udp {
            tasks.push(tokio::spawn(server::http3::serve(
                server::http3::QuicListener {
                    index: id,
                    name: name.to_owned(),
                    udp,
                    settings: Arc::clone(&settings),
                    open_connections: self
                        .metrics
                        .http3_open_connections
                        .with_label_values(&[name]),
                    requests: self.metrics.http3_requests.with_label_values(&[name]),
                },
                Arc::clone(&self.proxy),
                drain.watch(),
            )));
        }
        // Logged once every worker's socket is bound: from here on the address takes
        // connections on each of them.
        tracing::info!(listener = %name, addr = %addr, http3, "listening");
        ActiveListener {
            bind,
            addr,
            http3,
            drain,
            tasks,
        }
    }

    /// Reloads from the config file. `trigger` says what asked (for the log).
    pub async fn reload(&self, trigger: &str) -> ReloadReport {
        let Some(path) = self.path.clone() else {
            return self.failed(
                trigger,
                vec!["gatehouse was started without a config file".into()],
            );
        };
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => {
                return self.failed(
                    trigger,
                    vec![format!("{}: cannot read config file: {e}", path.display())],
                );
            }
        };
        self.reload_text(trigger, &path, &text).await
    }

    /// Reloads from config text (read from `path`).
    pub async fn reload_text(&self, trigger: &str, path: &Path, text: &str) -> ReloadReport {
        let hash = config_hash(text);
        let mut listeners = self.listeners.lock().await;
        // A config naming an admin token file is loaded again even when its text is the
        // same: the token may have been rotated, and a reload is how it is read.
        let token_file = self.snapshot.load().config.admin.token_file.is_some();
        if hash == self.status().hash && !token_file {
            tracing::debug!(trigger, hash, "config unchanged; nothing to reload");
            // The files it names are read again all the same (htpasswd, JWKS), as nginx's.
            let auth = Arc::clone(&self.auth);
            let _ = tokio::task::spawn_blocking(move || auth.reload_files()).await;
            return ReloadReport {
                ok: true,
                changed: false,
                hash,
                errors: Vec::new(),
            };
        }
        if let Err(errors) = self.switch_to(&mut listeners, path, text).await {
            return self.failed(trigger, errors);
        }
        // The status is written before the lock is released: a reload waiting on it compares
        // its text with this hash, and /status must name the config in force.
        self.record_success(trigger, &hash);
        drop(listeners);
        tracing::info!(trigger, hash, "config reloaded");
        ReloadReport {
            ok: true,
            changed: true,
            hash,
            errors: Vec::new(),
        }
    }

    /// Checks the config in `text`, binds its new listeners, builds their TLS settings and
    /// compiles its snapshot, then puts all of it in service. Nothing in service changes
    /// until every step that can fail has passed; on an error the old config serves on.
    async fn switch_to(
        &self,
        listeners: &mut Listeners,
        path: &Path,
        text: &str,
    ) -> Result<(), Vec<String>> {
        let in_file = |e: String| vec![format!("{}: {e}", path.display())];
        // Parsing and compiling run on the blocking pool, not on the threads serving requests
        // (with one worker thread, that is the only one).
        let config = check(path, text).await?;
        // New and moved listeners are bound before anything changes: a taken port fails the
        // reload with the old config still in force.
        let fresh = listeners
            .bind_new(&config, path, text)
            .map_err(|e| vec![e])?;
        for bound in &fresh {
            listeners.id(&bound.name);
        }
        // Listener TLS first: certificates that fail to load fail the reload, old ones serve on.
        let mut ports = listeners.ports();
        ports.extend(fresh.iter().map(|b| (b.name.clone(), b.addr.port())));
        let settings = self
            .build_listener_settings(&config, listeners, ports)
            .await?;
        // Names the new config adds are resolved now, so their servers serve from the start.
        let resolver = self.resolver_for(&config).map_err(in_file)?;
        self.addresses
            .resolve_unknown(&resolver, &config, &self.metrics)
            .await;
        let snapshot = self
            .compile(config, listeners.ids.clone())
            .await
            .map_err(in_file)?;

        // Nothing below fails: the new config goes into service.
        *self.resolver.lock().unwrap_or_else(|p| p.into_inner()) = resolver;
        let wanted: HashMap<String, (String, bool)> = snapshot
            .config
            .listeners
            .iter()
            .map(|l| {
                let at = (l.bind.get_ref().clone(), *l.http3.get_ref());
                (l.name.get_ref().clone(), at)
            })
            .collect();
        let shutdown_grace = snapshot.limits.shutdown_grace;
        self.acme.follow(&snapshot.config);
        self.install(snapshot);
        let certificates = install_settings(&mut listeners.settings, settings, &self.metrics);
        *self.certificates.lock().unwrap_or_else(|p| p.into_inner()) = certificates;
        self.tls_files_changed.notify_one();

        // Listeners removed or moved stop accepting and drain; new ones start.
        listeners.retire_unwanted(&wanted, shutdown_grace);
        self.serve_bound(listeners, fresh);
        Ok(())
    }

    /// The listeners' TLS settings for `config`, built on the blocking pool.
    async fn build_listener_settings(
        &self,
        config: &Config,
        listeners: &Listeners,
        ports: HashMap<String, u16>,
    ) -> Result<Vec<(String, ListenerSettings)>, Vec<String>> {
        let (config, metrics) = (config.clone(), Arc::clone(&self.metrics));
        let current = listeners.current_settings();
        let challenges = self.challenges.clone();
        tokio::task::spawn_blocking(move || {
            build_settings(&config, &current, &metrics, &challenges, &ports)
        })
        .await
        .unwrap_or_else(|e| Err(vec![format!("listener settings failed: {e}")]))
    }

    /// The resolver `config` asks for: the one in service when its settings are the same,
    /// else a new one.
    fn resolver_for(&self, config: &Config) -> Result<Resolver, String> {
        if config.resolver == *self.resolver().settings() {
            Ok(self.resolver())
        } else {
            Resolver::new(&config.resolver)
        }
    }

    /// Starts serving listeners bound earlier.
    fn serve_bound(&self, listeners: &mut Listeners, bound: Vec<BoundListener>) {
        for bound in bound {
            let name = bound.name.clone();
            let id = listeners.id(&name);
            let settings = listeners.settings_of(&name);
            let active = self.serve_listener(id, bound, settings);
            listeners.active.insert(name, active);
        }
    }

    /// Notes a successful reload in /status and in the metrics.
    fn record_success(&self, trigger: &str, hash: &str) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.hash = hash.to_owned();
        status.loaded_at = unix_now();
        status.reloads_ok += 1;
        let loaded_at = status.loaded_at;
        status.remember(ReloadEvent {
            at: loaded_at,
            trigger: trigger.to_owned(),
            ok: true,
            hash: hash.to_owned(),
            errors: Vec::new(),
        });
        drop(status);
        self.metrics.config_reloads_ok.inc();
        self.metrics.config_last_success.set(unix_now() as i64);
        self.metrics.set_config_info(hash);
    }

    /// Compiles `config` on the blocking pool, away from the threads serving requests.
    async fn compile(
        &self,
        config: Config,
        ids: HashMap<String, usize>,
    ) -> Result<Snapshot, String> {
        let (registry, addresses, caches, limiters, metrics) = (
            Arc::clone(&self.registry),
            Arc::clone(&self.addresses),
            Arc::clone(&self.caches),
            Arc::clone(&self.limiters),
            Arc::clone(&self.metrics),
        );
        let redis = Arc::clone(&self.redis);
        let auth = Arc::clone(&self.auth);
        let traces = Arc::clone(&self.traces);
        tokio::task::spawn_blocking(move || {
            Snapshot::compile(
                config, &registry, &addresses, &caches, &limiters, &redis, &metrics, &ids, &auth,
                &traces,
            )
        })
        .await
        .unwrap_or_else(|e| Err(format!("compile failed: {e}")))
    }

    /// Swaps `snapshot` in, then forgets the servers, caches and names it no longer has (their
    /// Arcs live on in the old snapshot until its last request ends; health checks stop with
    /// them).
    fn install(&self, snapshot: Snapshot) {
        let keep_servers: HashSet<(&str, &str)> = snapshot
            .upstreams
            .values()
            .flat_map(|u| u.servers.iter().map(|s| (&*s.upstream, &*s.addr)))
            .collect();
        let keep_caches: HashSet<&str> =
            snapshot.config.caches.keys().map(String::as_str).collect();
        self.registry.retain(
            |upstream, addr| keep_servers.contains(&(upstream, addr)),
            &self.metrics,
        );
        self.caches.retain(|name| keep_caches.contains(name));
        let keep_limits: HashSet<&str> = snapshot
            .config
            .rate_limits
            .keys()
            .map(String::as_str)
            .collect();
        self.limiters.retain(|name| keep_limits.contains(name));
        self.auth.keep_in_use(
            snapshot
                .router
                .entries()
                .filter_map(|e| e.target.auth.as_deref()),
        );
        self.addresses.retain(&snapshot.config);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The names of `upstream` with their addresses in use (for /status).
    pub fn dns_report(&self, upstream: &str) -> BTreeMap<String, NameReport> {
        self.addresses.report(upstream)
    }

    fn resolver(&self) -> Resolver {
        self.resolver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Compiles the config in force again, with the address sets DNS gave since: the same path
    /// as a reload, without reading the file.
    pub async fn recompile(&self, trigger: &str) -> bool {
        let listeners = self.listeners.lock().await;
        let config = self.snapshot.load().config.clone();
        match self.compile(config, listeners.ids.clone()).await {
            Ok(snapshot) => {
                self.install(snapshot);
                tracing::info!(trigger, "upstream servers updated");
                true
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "cannot recompile; the running config is unchanged");
                false
            }
        }
    }

    fn failed(&self, trigger: &str, errors: Vec<String>) -> ReloadReport {
        let joined = errors.join("\n");
        tracing::error!(trigger, errors = %joined, "config reload failed; the running config is unchanged");
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.reloads_failed += 1;
        status.last_error = Some(joined);
        status.last_error_at = Some(unix_now());
        let hash = status.hash.clone();
        status.remember(ReloadEvent {
            at: unix_now(),
            trigger: trigger.to_owned(),
            ok: false,
            hash: hash.clone(),
            errors: errors.clone(),
        });
        drop(status);
        self.metrics.config_reloads_failed.inc();
        ReloadReport {
            ok: false,
            changed: false,
            hash,
            errors,
        }
    }

    /// Stops every listener and waits (within `grace`) for their connections to finish.
    pub async fn drain_all(&self, grace: Duration) -> bool {
        let mut listeners = self.listeners.lock().await;
        let active: Vec<ActiveListener> = std::mem::take(&mut listeners.active)
            .into_values()
            .collect();
        drop(listeners);
        let mut tasks = Vec::new();
        let mut drains = Vec::new();
        for ActiveListener {
            drain,
            tasks: accepting,
            ..
        } in active
        {
            tasks.extend(accepting);
            drains.push(tokio::spawn(drain.drain()));
        }
        let all = async {
            for drain in drains {
                let _ = drain.await;
            }
        };
        let drained = tokio::time::timeout(grace, all).await.is_ok();
        for task in tasks {
            task.abort();
        }
        drained
    }
}

// --- TLS: listener settings, certificate rotation ---

impl Listeners {
    /// The shared settings of a configured listener (a default one if it has none yet).
    fn settings_of(&mut self, name: &str) -> SharedSettings {
        Arc::clone(self.settings.entry(name.to_owned()).or_default())
    }

    /// The port each listener in service is bound to.
    fn ports(&self) -> HashMap<String, u16> {
        self.active
            .iter()
            .map(|(name, active)| (name.clone(), active.addr.port()))
            .collect()
    }

    fn current_settings(&self) -> HashMap<String, Arc<ListenerSettings>> {
        self.settings
            .iter()
            .map(|(name, shared)| (name.clone(), shared.load_full()))
            .collect()
    }
}

/// Builds every listener's settings from `config`, reading its certificates; `current`
/// passes each listener's TLS session state on; `ports` holds the bound port of each.
fn build_settings(
    config: &Config,
    current: &HashMap<String, Arc<ListenerSettings>>,
    metrics: &Metrics,
    challenges: &AcmeChallenges,
    ports: &HashMap<String, u16>,
) -> Result<Vec<(String, ListenerSettings)>, Vec<String>> {
    let mut built = Vec::new();
    let mut errors = Vec::new();
    // Plain listeners answer HTTP-01 while some listener orders with it.
    let mut http01_state_dirs: Vec<PathBuf> = config
        .listeners
        .iter()
        .filter_map(|listener| listener.tls.as_ref()?.acme.as_ref())
        .filter(|acme| !acme.tls_alpn())
        .map(|acme| PathBuf::from(acme.state_dir.get_ref()))
        .collect();
    http01_state_dirs.sort();
    http01_state_dirs.dedup();
    let http01_state_dirs: Arc<[PathBuf]> = http01_state_dirs.into();
    for listener in &config.listeners {
        let name = listener.name.get_ref();
        let previous = current.get(name).map(Arc::as_ref);
        let port = ports.get(name).copied();
        match ListenerSettings::build(
            listener,
            previous,
            &metrics.tls,
            challenges,
            &http01_state_dirs,
            port,
        ) {
            Ok(settings) => built.push((name.clone(), settings)),
            Err(e) => errors.push(format!("listener {name:?}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(built)
    } else {
        Err(errors)
    }
}

/// Puts built settings in service: new connections get them, open ones keep theirs.
/// Listeners no longer configured are forgotten; the expiry metric follows.
fn install_settings(
    shared: &mut HashMap<String, SharedSettings>,
    built: Vec<(String, ListenerSettings)>,
    metrics: &Metrics,
) -> Vec<CertificateStatus> {
    let names: HashSet<String> = built.iter().map(|(name, _)| name.clone()).collect();
    shared.retain(|name, _| names.contains(name));
    for (name, settings) in built {
        shared.entry(name).or_default().store(Arc::new(settings));
    }
    let in_force: Vec<(String, Arc<ListenerSettings>)> = shared
        .iter()
        .map(|(name, s)| (name.clone(), s.load_full()))
        .collect();
    metrics
        .tls
        .set_certificates(in_force.iter().flat_map(|(name, settings)| {
            settings
                .tls
                .iter()
                .flat_map(|tls| tls.certificates.iter())
                .map(move |info| (name.as_str(), info))
        }));
    let mut certificates: Vec<CertificateStatus> = in_force
        .iter()
        .flat_map(|(name, settings)| {
            settings
                .tls
                .iter()
                .flat_map(|tls| tls.certificates.iter())
                .map(|info| CertificateStatus {
                    listener: name.clone(),
                    info: info.clone(),
                })
        })
        .collect();
    certificates.sort_by(|a, b| a.listener.cmp(&b.listener));
    certificates
}

/// One certificate in service, for /status.
#[derive(Clone, Debug, Serialize)]
pub struct CertificateStatus {
    pub listener: String,
    #[serde(flatten)]
    pub info: crate::certs::CertInfo,
}

impl Reloader {
    /// Reads every listener's certificates again and swaps them in for new handshakes;
    /// connections already open keep theirs. On any error nothing changes.
    pub async fn reload_certificates(&self, trigger: &str) -> ReloadReport {
        let mut listeners = self.listeners.lock().await;
        let config = self.snapshot.load().config.clone();
        let current = listeners.current_settings();
        let ports = listeners.ports();
        let metrics = Arc::clone(&self.metrics);
        let challenges = self.challenges.clone();
        let built = tokio::task::spawn_blocking(move || {
            build_settings(&config, &current, &metrics, &challenges, &ports)
        })
        .await
        .unwrap_or_else(|e| Err(vec![format!("listener settings failed: {e}")]));
        let built = match built {
            Ok(built) => built,
            Err(errors) => return self.failed(trigger, errors),
        };
        let certificates = install_settings(&mut listeners.settings, built, &self.metrics);
        *self.certificates.lock().unwrap_or_else(|p| p.into_inner()) = certificates;
        drop(listeners);
        // The files in use may be new (an ACME certificate stored for the first time).
        self.tls_files_changed.notify_one();
        tracing::info!(trigger, "certificates reloaded");
        ReloadReport {
            ok: true,
            changed: true,
            hash: self.status().hash,
            errors: Vec::new(),
        }
    }

    /// Every certificate, key and CA file the listeners read.
    pub async fn tls_files(&self) -> Vec<String> {
        let listeners = self.listeners.lock().await;
        listeners
            .settings
            .values()
            .filter_map(|s| s.load().tls.as_ref().map(|t| t.files.clone()))
            .flatten()
            .collect()
    }

    /// The certificates in service, by listener.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Watches the config file's directory and reloads when the file's content changes: an
/// editor's write-to-temp-then-rename and a Kubernetes ConfigMap's `..data` symlink swap both
/// show up as events in the directory; a burst of them is settled for `debounce`, and a
/// reload whose text did not change does nothing.
pub fn watch(
    reloader: Arc<Reloader>,
    debounce: Duration,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let Some(path) = reloader.path.clone() else {
        return Err(notify::Error::generic("no config file to watch"));
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let file_name = path.file_name().map(|n| n.to_os_string());
    let (events, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        // The file itself (written, or renamed into place by an editor), or a ConfigMap's
        // `..data` / `..2024_…` entries; other files in the directory (logs!) are not ours.
        let concerns_config = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|name| {
                Some(name.to_os_string()) == file_name || name.to_string_lossy().starts_with("..")
            })
        });
        if concerns_config {
            let _ = events.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut last_failed: Option<String> = None;
        while arrivals.recv().await.is_some() {
            // Settle: wait until the directory has been quiet for `debounce`.
            loop {
                match tokio::time::timeout(debounce, arrivals.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // The same broken text is reported once, not at every event in the directory.
            let text = match &reloader.path {
                Some(path) => tokio::fs::read_to_string(path).await.ok(),
                None => None,
            };
            let hash = text.as_deref().map(config_hash);
            if hash.is_some() && hash == last_failed {
                continue;
            }
            let report = reloader.reload("file change").await;
            last_failed = if report.ok { None } else { hash };
            if report.ok && report.changed {
                tracing::debug!(hash = %report.hash, "reloaded after a file change");
            }
        }
    });
    tracing::info!(dir = %dir.display(), "watching the config directory");
    Ok(watcher)
}

impl Rediscover for Reloader {
    fn names(&self) -> BTreeMap<String, (BTreeSet<String>, Duration)> {
        names_by_upstream(&self.snapshot.load().config)
    }
    fn resolver(&self) -> Resolver {
        Reloader::resolver(self)
    }
    fn addresses(&self) -> &AddressBook {
        &self.addresses
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    async fn recompile(&self) -> bool {
        Reloader::recompile(self, "dns").await
    }
}
