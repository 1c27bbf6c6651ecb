//! Upstreams: named groups of servers with a balancing algorithm. `Upstream` is the compiled,
//! per-snapshot view; `ServerState` (long-lived) and its pool outlive snapshots through the
//! `ServerRegistry`.

pub mod balancer;
pub mod pool;
pub mod server;

pub use server::{InFlight, ServerSet, ServerState};

use crate::config::{BalanceAlgorithm, UpstreamConfig};
use crate::metrics::Metrics;
use balancer::{Balancer, Tried};
use pool::Endpoint;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Upstream {
    pub name: Arc<str>,
    pub algorithm: BalanceAlgorithm,
    pub servers: Vec<Arc<ServerState>>,
    pub weights: Vec<u32>,
    balancer: Box<dyn Balancer>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    /// Requests in flight allowed per server; 0 = no limit.
    pub max_connections: u32,
    pub retries_total: IntCounter,
}

impl Upstream {
    /// Compiles one `[upstream.NAME]`, reusing servers already known to the registry.
    pub fn compile(
        name: &str,
        config: &UpstreamConfig,
        registry: &ServerRegistry,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let mut servers = Vec::new();
        let mut weights = Vec::new();
        for entry in config.servers.get_ref() {
            let entry = entry.get_ref();
            let (host, port) = crate::config::parse_server_addr(&entry.addr)?;
            let socket_addr = format!("{host}:{port}").parse().ok().or_else(|| {
                // Bracketed IPv6 literals parse with brackets only.
                format!("[{host}]:{port}").parse().ok()
            });
            let endpoint = Endpoint {
                host,
                port,
                socket_addr,
            };
            servers.push(registry.get_or_create(name, &entry.addr, || {
                ServerState::new(
                    name,
                    &entry.addr,
                    endpoint,
                    config.keepalive,
                    config.keepalive_timeout.0,
                    metrics,
                )
            }));
            weights.push(entry.weight);
        }
        Ok(Self {
            name: name.into(),
            algorithm: config.balance,
            balancer: balancer::build(config.balance, &weights),
            servers,
            weights,
            connect_timeout: config.connect_timeout.0,
            response_timeout: config.response_timeout.0,
            retries: config.retries,
            max_connections: config.max_connections,
            retries_total: metrics.upstream_retries.with_label_values(&[name]),
        })
    }

    /// The server for the next attempt of a request, skipping those already tried and those
    /// at their `max_connections`.
    pub fn pick(&self, tried: Tried) -> Option<usize> {
        let set = ServerSet {
            servers: &self.servers,
            weights: &self.weights,
        };
        let limit = self.max_connections;
        self.balancer.pick(&set, tried, &|i| {
            limit == 0 || self.servers[i].in_flight() < limit
        })
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

    pub fn get_or_create(
        &self,
        upstream: &str,
        addr: &str,
        create: impl FnOnce() -> ServerState,
    ) -> Arc<ServerState> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers
            .entry((upstream.to_owned(), addr.to_owned()))
            .or_insert_with(|| Arc::new(create()))
            .clone()
    }

    /// Forgets servers that no snapshot in force names any more.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers.retain(|(upstream, addr), _| keep(upstream, addr));
    }
}
