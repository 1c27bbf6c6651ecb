//! Upstream resilience, as state and policy: a server's health from active checks (rise/fall
//! `thresholds`; the prober itself is `upstream::probe`), and a circuit breaker per server fed
//! by real responses (`breaker`, the pure policy, and
//! `circuit`, its shared form), and ejection after refused connects (`ejection`). A server is
//! eligible for traffic when it is up, not ejected, and its breaker admits requests.

pub mod breaker;
pub mod circuit;
pub mod ejection;
pub mod thresholds;

use crate::config::HealthConfig;
use crate::metrics::Metrics;
use prometheus::{IntCounter, IntGauge};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use thresholds::Thresholds;

/// What the checks say about one server, kept for as long as the server is configured.
pub struct ServerHealth {
    upstream: String,
    server: String,
    up: AtomicBool,
    state: Mutex<HealthState>,
    up_gauge: IntGauge,
    checks_passed: IntCounter,
    checks_failed: IntCounter,
}

#[derive(Default)]
struct HealthState {
    /// None while no checks are configured: the server is always up.
    thresholds: Option<(Thresholds, (u32, u32, bool))>,
    last_check: Option<SystemTime>,
    last_result: Option<Result<(), String>>,
    last_failure: Option<String>,
}

/// A copy of a server's health for /status.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HealthReport {
    pub up: bool,
    pub checked: bool,
    /// Unix seconds of the last check.
    pub last_check: Option<u64>,
    pub last_result: Option<String>,
    pub last_failure: Option<String>,
}

impl ServerHealth {
    pub fn new(metrics: &Metrics, upstream: &str, server: &str) -> Self {
        let up_gauge = metrics
            .upstream_server_up
            .with_label_values(&[upstream, server]);
        up_gauge.set(1);
        Self {
            upstream: upstream.to_owned(),
            server: server.to_owned(),
            up: AtomicBool::new(true),
            state: Mutex::new(HealthState::default()),
            up_gauge,
            checks_passed: metrics
                .health_checks
                .with_label_values(&[upstream, server, "pass"]),
            checks_failed: metrics
                .health_checks
                .with_label_values(&[upstream, server, "fail"]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lock-free: the request path asks this for every pick.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Applies the upstream's health settings. Thresholds that did not change keep their
    /// state; without checks the server is up.
    pub fn configure(&self, config: Option<&HealthConfig>) {
        let mut state = self.lock();
        let wanted = config.map(|c| (c.healthy_threshold, c.unhealthy_threshold, c.initially_up));
        match (wanted, &state.thresholds) {
            (Some(w), Some((_, current))) if *current == w => {}
            (Some(w), _) => {
                state.thresholds = Some((Thresholds::new(w.0, w.1, w.2), w));
                self.set_up(w.2);
            }
            (None, _) => {
                state.thresholds = None;
                self.set_up(true);
            }
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.up_gauge.set(i64::from(up));
    }

    /// One active check's result; true when it marks the server up again after it was down.
    pub fn record_check(&self, result: Result<(), String>) -> bool {
        match &result {
            Ok(()) => self.checks_passed.inc(),
            Err(_) => self.checks_failed.inc(),
        }
        let mut state = self.lock();
        state.last_check = Some(SystemTime::now());
        if let Err(why) = &result {
            state.last_failure = Some(why.clone());
        }
        let change = state
            .thresholds
            .as_mut()
            .and_then(|(thresholds, _)| thresholds.record(result.is_ok()));
        state.last_result = Some(result);
        let reason = match &state.last_result {
            Some(Err(why)) => why.clone(),
            _ => "check passed".into(),
        };
        drop(state);
        match change {
            Some(true) => {
                self.set_up(true);
                tracing::info!(upstream = %self.upstream, server = %self.server, reason = %reason, "server is up");
                true
            }
            Some(false) => {
                self.set_up(false);
                tracing::warn!(upstream = %self.upstream, server = %self.server, reason = %reason, "server is down");
                false
            }
            None => false,
        }
    }

    pub fn report(&self) -> HealthReport {
        let state = self.lock();
        HealthReport {
            up: self.is_up(),
            checked: state.thresholds.is_some(),
            last_check: state
                .last_check
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_result: state.last_result.as_ref().map(|r| match r {
                Ok(()) => "pass".to_owned(),
                Err(why) => format!("fail: {why}"),
            }),
            last_failure: state.last_failure.clone(),
        }
    }
}
