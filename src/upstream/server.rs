//! `ServerState`: what gatehouse keeps about one upstream server for as long as that server stays
//! configured — in-flight count, latency EWMA, connection pool, metric handles — shared by every
//! snapshot that names it, so a reload keeps a warm pool warm.

use super::balancer::ServerLoads;
use super::pool::{Endpoint, Pool};
use crate::config::{BreakerConfig, HealthConfig};
use crate::health::ServerHealth;
use crate::health::circuit::CircuitBreaker;
use crate::health::ejection::Ejection;
use crate::metrics::{Metrics, ServerMetrics};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::task::JoinHandle;

/// EWMA decay: each new sample takes this share (1/8), like TCP's smoothed RTT.
const EWMA_SHIFT: u32 = 3;

pub struct ServerState {
    /// The upstream this server belongs to (for logs and metrics).
    pub upstream: Arc<str>,
    /// The address as configured, e.g. `127.0.0.1:8001`.
    pub addr: Arc<str>,
    pub pool: Pool,
    pub metrics: ServerMetrics,
    pub health: ServerHealth,
    pub breaker: CircuitBreaker,
    /// Out of balancing for a while after refused connects in a row.
    pub ejection: Ejection,
    /// The active check task and the settings it runs with.
    checker: Mutex<Option<(HealthConfig, JoinHandle<()>)>>,
    in_flight: AtomicU32,
    latency_ewma_nanos: AtomicU64,
}

impl Drop for ServerState {
    fn drop(&mut self) {
        if let Some((_, task)) = self.checker.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl ServerState {
    pub fn new(
        upstream: &str,
        addr: &str,
        endpoint: Endpoint,
        keepalive: usize,
        keepalive_timeout: Duration,
        metrics: &Metrics,
    ) -> Self {
        Self {
            upstream: upstream.into(),
            addr: addr.into(),
            pool: Pool::new(endpoint, keepalive, keepalive_timeout),
            metrics: ServerMetrics::new(metrics, upstream, addr),
            health: ServerHealth::new(metrics, upstream, addr),
            breaker: CircuitBreaker::new(metrics, upstream, addr),
            ejection: Ejection::new(
                metrics
                    .upstream_ejections
                    .with_label_values(&[upstream, addr]),
            ),
            checker: Mutex::new(None),
            in_flight: AtomicU32::new(0),
            latency_ewma_nanos: AtomicU64::new(0),
        }
    }

    /// Applies an upstream's health-check and breaker settings. Unchanged settings keep their
    /// state and their running check task; changed ones start afresh.
    pub fn configure(
        self: &Arc<Self>,
        health: Option<&HealthConfig>,
        breaker: Option<&BreakerConfig>,
    ) {
        self.health.configure(health);
        self.breaker.configure(breaker, Instant::now());
        let mut checker = self.checker.lock().unwrap_or_else(|p| p.into_inner());
        let unchanged =
            matches!((health, checker.as_ref()), (Some(h), Some((current, _))) if current == h);
        if unchanged {
            return;
        }
        if let Some((_, task)) = checker.take() {
            task.abort();
        }
        if let Some(health) = health {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let task = runtime.spawn(super::probe::run(
                        Arc::downgrade(self),
                        health.clone(),
                        self.pool.endpoint().clone(),
                    ));
                    *checker = Some((health.clone(), task));
                }
                Err(_) => {
                    tracing::warn!(server = %self.addr, "no runtime: health checks not started")
                }
            }
        }
    }

    /// Up, not ejected, and its breaker would admit a request now.
    pub fn is_eligible(&self, now: Instant) -> bool {
        self.health.is_up() && !self.ejection.is_ejected(now) && self.breaker.would_admit(now)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn latency_ewma(&self) -> Duration {
        Duration::from_nanos(self.latency_ewma_nanos.load(Ordering::Relaxed))
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Like `start_request`, unless `limit` (0 = none) requests are already in flight.
    pub fn try_start_request(self: &Arc<Self>, limit: u32) -> Option<InFlight> {
        if limit == 0 {
            return Some(self.start_request());
        }
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(Arc::clone(self)))
    }

    pub fn observe_latency(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // A lost race between two updates only loses one sample's weight; no CAS loop needed.
        let old = self.latency_ewma_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - (old >> EWMA_SHIFT) + (sample >> EWMA_SHIFT)
        };
        self.latency_ewma_nanos.store(new, Ordering::Relaxed);
    }
}

/// One request in flight on a server; dropping it ends the count.
pub struct InFlight(Arc<ServerState>);

impl InFlight {
    pub fn server(&self) -> &Arc<ServerState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream's servers with their configured weights, as the balancers see them.
pub struct ServerSet<'a> {
    pub servers: &'a [Arc<ServerState>],
    pub weights: &'a [u32],
}

impl ServerLoads for ServerSet<'_> {
    fn len(&self) -> usize {
        self.servers.len()
    }
    fn weight(&self, index: usize) -> u32 {
        self.weights[index]
    }
    fn in_flight(&self, index: usize) -> u32 {
        self.servers[index].in_flight()
    }
    fn latency_ewma_nanos(&self, index: usize) -> u64 {
        self.servers[index]
            .latency_ewma_nanos
            .load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Arc<ServerState> {
        let metrics = Metrics::new().unwrap();
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 1,
            socket_addr: None,
        };
        Arc::new(ServerState::new(
            "u",
            "127.0.0.1:1",
            endpoint,
            1,
            Duration::from_secs(1),
            &metrics,
        ))
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let server = server();
        let first = server.start_request();
        let second = server.start_request();
        assert_eq!(server.in_flight(), 2);
        drop(first);
        assert_eq!(server.in_flight(), 1);
        drop(second);
        assert_eq!(server.in_flight(), 0);
    }

    #[test]
    fn try_start_request_respects_the_limit() {
        let server = server();
        let first = server.try_start_request(2).expect("under the limit");
        let _second = server.try_start_request(2).expect("at the limit");
        assert!(server.try_start_request(2).is_none());
        drop(first);
        assert!(server.try_start_request(2).is_some());
        assert_eq!(server.try_start_request(0).map(|_| ()), Some(()));
    }

    #[test]
    fn ewma_starts_at_the_first_sample_and_moves_an_eighth() {
        let server = server();
        server.observe_latency(Duration::from_millis(80));
        assert_eq!(server.latency_ewma(), Duration::from_millis(80));
        server.observe_latency(Duration::from_millis(160));
        assert_eq!(server.latency_ewma(), Duration::from_millis(90));
    }
}
