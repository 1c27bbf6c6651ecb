//! Upstreams: named groups of servers with a balancing algorithm. `Upstream` is the compiled,
//! per-snapshot view; `ServerState` (long-lived) and its pool outlive snapshots through the
//! `ServerRegistry`.

pub mod balancer;
pub mod body;
pub mod discovery;
pub mod http1;
pub mod pool;
pub mod probe;
pub mod retry_budget;
pub mod server;
pub mod split;

pub use server::{InFlight, ServerSet, ServerState};

use crate::config::{BalanceAlgorithm, HashKey, UpstreamConfig};
use crate::metrics::Metrics;
use balancer::{Balancer, MaglevTable, Placement, Tried};
use discovery::AddressBook;
use pool::Endpoint;
use prometheus::IntCounter;
use retry_budget::RetryBudget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Retries remember the servers tried in a 64-bit set.
const MAX_SERVERS: usize = 64;

pub struct Upstream {
    pub name: Arc<str>,
    pub algorithm: BalanceAlgorithm,
    pub servers: Vec<Arc<ServerState>>,
    pub weights: Vec<u32>,
    balancer: Box<dyn Balancer>,
    /// With `balance = "consistent_hash"`: what requests are hashed by, and the table.
    pub hashing: Option<Hashing>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    /// Requests in flight allowed per server; 0 = no limit.
    pub max_connections: u32,
    /// Below this share of eligible servers, balance over all of them (0 = never).
    pub panic_threshold: f64,
    /// Health-check interval, for Retry-After when every server is down.
    pub health_interval: Option<Duration>,
    pub retries_total: IntCounter,
    /// Retries allowed, as a share of the requests sent.
    pub retry_budget: RetryBudget,
    /// Retries the budget refused.
    pub retries_refused: IntCounter,
}

/// Consistent hashing as compiled for one upstream.
pub struct Hashing {
    pub key: HashKey,
    pub table: MaglevTable,
    pub balance_factor: f64,
    /// `gatehouse_upstream_hash_picks_total` by placement: home, next, over_cap, no_key.
    picks: [IntCounter; 4],
}

impl Hashing {
    fn compile(
        name: &str,
        config: &UpstreamConfig,
        servers: &[(&str, u32)],
        metrics: &Metrics,
    ) -> Self {
        // Validation rejected a bad key; the fallback only keeps compile infallible.
        let key = config
            .hash_key
            .as_ref()
            .and_then(|key| HashKey::parse(key.get_ref()).ok())
            .unwrap_or(HashKey::ClientIp);
        let picks = ["home", "next", "over_cap", "no_key"].map(|placement| {
            metrics
                .upstream_hash_picks
                .with_label_values(&[name, placement])
        });
        Self {
            key,
            table: MaglevTable::new(servers, config.hash_balance_factor),
            balance_factor: config.hash_balance_factor,
            picks,
        }
    }

    fn count(&self, placement: Option<Placement>) {
        let slot = match placement {
            Some(Placement::Home) => 0,
            Some(Placement::Next) => 1,
            Some(Placement::OverCap) => 2,
            None => 3,
        };
        self.picks[slot].inc();
    }
}

impl Upstream {
    /// Compiles one `[upstream.NAME]`, reusing servers already known to the registry. A server
    /// given by name becomes one server per address `addresses` holds for it.
    ///
    /// This configures shared servers as it goes, so it must not fail after the first
    /// upstream: what can fail (reading TLS files) is done before, by `upstream_tls`.
    pub fn compile(
        name: &str,
        config: &UpstreamConfig,
        tls: &Option<Arc<crate::tls::UpstreamTls>>,
        registry: &ServerRegistry,
        addresses: &AddressBook,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let mut servers: Vec<Arc<ServerState>> = Vec::new();
        let mut weights = Vec::new();
        for entry in config.servers.get_ref() {
            let entry = entry.get_ref();
            let (host, port) = crate::config::parse_server_addr(&entry.addr)?;
            let socket_addr = format!("{host}:{port}").parse().ok().or_else(|| {
                // Bracketed IPv6 literals parse with brackets only.
                format!("[{host}]:{port}").parse().ok()
            });
            let targets: Vec<(String, Option<std::net::SocketAddr>)> = match socket_addr {
                Some(_) => vec![(entry.addr.clone(), socket_addr)],
                None => addresses
                    .addresses(name, &host)
                    .iter()
                    .map(|ip| {
                        let addr = std::net::SocketAddr::new(*ip, port);
                        (addr.to_string(), Some(addr))
                    })
                    .collect(),
            };
            for (addr, socket_addr) in targets {
                if servers.iter().any(|s| *s.addr == *addr) {
                    continue;
                }
                if servers.len() == MAX_SERVERS {
                    tracing::warn!(upstream = name, server = %addr, "more than {MAX_SERVERS} servers; the rest are left out");
                    break;
                }
                let endpoint = Endpoint {
                    host: host.clone(),
                    port,
                    socket_addr,
                };
                let server = registry.get_or_create(name, &addr, &endpoint, || {
                    ServerState::new(
                        name,
                        &addr,
                        endpoint.clone(),
                        config.keepalive,
                        config.keepalive_timeout.0,
                        metrics,
                    )
                });
                server.configure(config.health.as_ref(), config.breaker.as_ref());
                server
                    .ejection
                    .configure(config.eject_after_refused, config.eject_for.0);
                server
                    .pool
                    .configure(config.keepalive, config.keepalive_timeout.0);
                // The scheme (TLS or not) is the configured entry's, whatever it resolved to.
                server.pool.set_transport(pool::Transport::for_server(
                    &entry.addr,
                    tls,
                    config.http2,
                ));
                servers.push(server);
                weights.push(entry.weight);
            }
        }
        let hashing = (config.balance == BalanceAlgorithm::ConsistentHash).then(|| {
            let hashed_servers: Vec<(&str, u32)> = servers
                .iter()
                .zip(&weights)
                .map(|(server, &weight)| (&*server.addr, weight))
                .collect();
            Hashing::compile(name, config, &hashed_servers, metrics)
        });
        Ok(Self {
            name: name.into(),
            algorithm: config.balance,
            balancer: balancer::build(config.balance, &weights),
            hashing,
            servers,
            weights,
            connect_timeout: config.connect_timeout.0,
            response_timeout: config.response_timeout.0,
            retries: config.retries,
            max_connections: config.max_connections,
            panic_threshold: config.panic_threshold,
            health_interval: config.health.as_ref().map(|h| h.interval.0),
            retries_total: metrics.upstream_retries.with_label_values(&[name]),
            retry_budget: RetryBudget::new(config.retry_budget, config.retry_budget_min),
            retries_refused: metrics.upstream_retries_refused.with_label_values(&[name]),
        })
    }

    /// Whether so few servers are eligible that all of them should be used (Envoy's panic
    /// mode): better to spread the load over sick servers than crush the last healthy one.
    pub fn in_panic(&self, now: Instant) -> bool {
        if self.panic_threshold <= 0.0 {
            return false;
        }
        let eligible = self.servers.iter().filter(|s| s.is_eligible(now)).count();
        (eligible as f64) < self.panic_threshold * self.servers.len() as f64
    }

    /// The hash of what this upstream balances `request` (from `client`, if any) by: `None`
    /// unless it hashes, or when the request lacks the key.
    /// Whether the hashing key is a request header.
    pub fn hashes_by_header(&self) -> bool {
        self.hashing
            .as_ref()
            .is_some_and(|hashing| matches!(hashing.key, crate::config::HashKey::Header(_)))
    }

    pub fn key_hash(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        client: Option<std::net::IpAddr>,
    ) -> Option<u64> {
        let hashing = self.hashing.as_ref()?;
        balancer::key_hash(&hashing.key, uri, headers, client)
    }

    /// The server for the next attempt of a request, skipping those already tried, those at
    /// their `max_connections`, and — unless in panic mode — those down or with an open
    /// breaker. `key` is the request's `key_hash`: with consistent hashing, it picks the
    /// server in the table.
    pub fn pick(&self, tried: Tried, now: Instant, panic: bool, key: Option<u64>) -> Option<usize> {
        let set = ServerSet {
            servers: &self.servers,
            weights: &self.weights,
        };
        let limit = self.max_connections;
        let under_limit = |i: usize| limit == 0 || self.servers[i].in_flight() < limit;
        let eligible = |i: usize| under_limit(i) && (panic || self.servers[i].is_eligible(now));
        match (&self.hashing, key) {
            (None, _) => self.balancer.pick(&set, tried, &eligible),
            (Some(hashing), Some(key)) => {
                let (index, placement) = hashing.table.pick(key, &set, tried, &eligible)?;
                hashing.count(Some(placement));
                Some(index)
            }
            (Some(hashing), None) => {
                let index = self.balancer.pick(&set, tried, &eligible)?;
                hashing.count(None);
                Some(index)
            }
        }
    }

    /// Seconds a client should wait before trying again when no server is eligible: until
    /// the first breaker lets a trial through, or one health-check interval.
    pub fn retry_after_secs(&self, now: Instant) -> u64 {
        let breaker_wait = self
            .servers
            .iter()
            .filter_map(|s| s.breaker.open_until())
            .map(|until| until.saturating_duration_since(now))
            .min();
        let wait = breaker_wait
            .or(self.health_interval)
            .unwrap_or(Duration::from_secs(1));
        wait.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Long-lived server state by (upstream, address), shared across snapshots.
#[derive(Default)]
pub struct ServerRegistry {
    servers: Mutex<HashMap<(String, String), Arc<ServerState>>>,
}

impl ServerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The server of `upstream` at `addr`, made by `create` unless one reached the same way
    /// (`endpoint`) is known. The same address under another name is another server: its
    /// SNI, certificate name and health-check Host differ.
    pub fn get_or_create(
        &self,
        upstream: &str,
        addr: &str,
        endpoint: &Endpoint,
        create: impl FnOnce() -> ServerState,
    ) -> Arc<ServerState> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (upstream.to_owned(), addr.to_owned());
        match servers.get(&key) {
            Some(server) if server.pool.endpoint() == endpoint => Arc::clone(server),
            _ => {
                let server = Arc::new(create());
                servers.insert(key, Arc::clone(&server));
                server
            }
        }
    }

    /// Forgets servers that no snapshot in force names any more, with their metric series
    /// (with DNS discovery, addresses come and go with every rollout: kept, the series would
    /// grow without bound, and a removed server's `up = 0` would keep an alert firing).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool, metrics: &Metrics) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.retain(|(upstream, addr), _| {
            let kept = keep(upstream, addr);
            if !kept {
                metrics.forget_server(upstream, addr);
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            port: 443,
            socket_addr: "10.0.0.5:443".parse().ok(),
        }
    }

    #[test]
    fn an_address_keeps_its_server_only_while_it_is_reached_the_same_way() {
        let metrics = Metrics::new().unwrap();
        let registry = ServerRegistry::new();
        let make = |host: &str| {
            let endpoint = endpoint(host);
            registry.get_or_create("u", "10.0.0.5:443", &endpoint, || {
                ServerState::new(
                    "u",
                    "10.0.0.5:443",
                    endpoint.clone(),
                    1,
                    Duration::from_secs(1),
                    &metrics,
                )
            })
        };
        let first = make("old.example");
        assert!(Arc::ptr_eq(&first, &make("old.example")));
        // The name changed, the address did not: SNI and Host must follow the new name.
        let renamed = make("new.example");
        assert!(!Arc::ptr_eq(&first, &renamed));
        assert_eq!(renamed.pool.endpoint().host, "new.example");
        assert!(Arc::ptr_eq(&renamed, &make("new.example")));
    }
}
