//! A server's circuit breaker as the request path uses it: the pure `Breaker` behind a lock
//! taken only to record an outcome or while the breaker is not closed, a lock-free state for
//! the common closed case, and a log line and metrics for every transition.

use super::breaker::{Admission, Breaker, BreakerState, Transition};
use crate::config::BreakerConfig;
use crate::metrics::Metrics;
use prometheus::{IntCounter, IntGauge};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

const CLOSED: u8 = 0;

/// A request let through (or not) by a breaker, until its outcome is recorded.
pub struct Pass<'a> {
    breaker: &'a CircuitBreaker,
    admission: Admission,
    settled: bool,
}

impl Pass<'_> {
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// The request's outcome: `None` for success, or what went wrong.
    pub fn record(mut self, failure: Option<&str>, now: Instant) {
        self.settled = true;
        self.breaker.record(self.admission, failure, now);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // A trial that ends without an outcome (its client left mid-request, or the fault
        // was the client's) must not keep the only trial slot for ever.
        if !self.settled && self.admission == Admission::Trial {
            self.breaker.release_trial();
        }
    }
}

pub struct CircuitBreaker {
    upstream: String,
    server: String,
    /// 0 closed (or no breaker configured); anything else: ask the `Breaker`.
    fast_state: AtomicU8,
    /// Whether a breaker is configured at all, so that recording costs nothing without one.
    enabled: AtomicBool,
    breaker: Mutex<Option<Breaker>>,
    state_gauge: IntGauge,
    to_closed: IntCounter,
    to_open: IntCounter,
    to_half_open: IntCounter,
}

impl CircuitBreaker {
    pub fn new(metrics: &Metrics, upstream: &str, server: &str) -> Self {
        let to = |state: BreakerState| {
            metrics.circuit_breaker_transitions.with_label_values(&[
                upstream,
                server,
                state.as_str(),
            ])
        };
        Self {
            upstream: upstream.to_owned(),
            server: server.to_owned(),
            fast_state: AtomicU8::new(CLOSED),
            enabled: AtomicBool::new(false),
            breaker: Mutex::new(None),
            state_gauge: metrics
                .circuit_breaker_state
                .with_label_values(&[upstream, server]),
            to_closed: to(BreakerState::Closed),
            to_open: to(BreakerState::Open),
            to_half_open: to(BreakerState::HalfOpen),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Breaker>> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the upstream's breaker settings; a breaker whose settings did not change keeps
    /// its state.
    pub fn configure(&self, policy: Option<&BreakerConfig>, now: Instant) {
        let mut breaker = self.lock();
        match (policy, breaker.as_ref()) {
            (Some(policy), Some(current)) if current.policy() == policy => {}
            (Some(policy), _) => *breaker = Some(Breaker::new(policy.clone(), now)),
            (None, _) => *breaker = None,
        }
        self.enabled.store(breaker.is_some(), Ordering::Relaxed);
        let state = breaker
            .as_ref()
            .map_or(BreakerState::Closed, Breaker::state);
        self.publish(state);
    }

    fn publish(&self, state: BreakerState) {
        self.fast_state
            .store(state.gauge_value() as u8, Ordering::Release);
        self.state_gauge.set(state.gauge_value());
    }

    pub fn state(&self) -> BreakerState {
        self.lock()
            .as_ref()
            .map_or(BreakerState::Closed, Breaker::state)
    }

    /// When an open breaker will let a trial through.
    pub fn open_until(&self) -> Option<Instant> {
        self.lock().as_ref().and_then(Breaker::open_until)
    }

    /// The server's health checks marked it up again (see `Breaker::health_came_back`).
    pub fn health_came_back(&self, now: Instant) {
        if !self.is_enabled() {
            return;
        }
        let ended = self
            .lock()
            .as_mut()
            .is_some_and(|breaker| breaker.health_came_back(now));
        if ended {
            tracing::info!(upstream = %self.upstream, server = %self.server, "circuit breaker open time ended: health checks mark the server up again; the next request is the trial");
        }
    }

    /// Could a request be admitted now? Lock-free while closed.
    pub fn would_admit(&self, now: Instant) -> bool {
        self.fast_state.load(Ordering::Acquire) == CLOSED
            || self.lock().as_ref().is_none_or(|b| b.would_admit(now))
    }

    /// Admits a request, taking a trial slot when half-open. Lock-free while closed. The
    /// returned pass records the outcome; dropped without one, it gives a trial slot back.
    pub fn admit(&self, now: Instant) -> Pass<'_> {
        let admission = if self.fast_state.load(Ordering::Acquire) == CLOSED {
            Admission::Normal
        } else {
            let mut guard = self.lock();
            match guard.as_mut() {
                None => Admission::Normal,
                Some(breaker) => {
                    let (admission, transition) = breaker.admit(now);
                    drop(guard);
                    if let Some(transition) = transition {
                        self.announce(&transition);
                    }
                    admission
                }
            }
        };
        Pass {
            breaker: self,
            admission,
            settled: false,
        }
    }

    /// Whether a breaker is configured (recording outcomes is pointless otherwise).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn record(&self, admission: Admission, failure: Option<&str>, now: Instant) {
        if !self.is_enabled() {
            return;
        }
        let mut guard = self.lock();
        let Some(breaker) = guard.as_mut() else {
            return;
        };
        let transition = breaker.record(admission, failure, now);
        drop(guard);
        if let Some(transition) = transition {
            self.announce(&transition);
        }
    }

    fn release_trial(&self) {
        if let Some(breaker) = self.lock().as_mut() {
            breaker.release_trial();
        }
    }

    fn announce(&self, transition: &Transition) {
        self.publish(transition.to);
        match transition.to {
            BreakerState::Closed => self.to_closed.inc(),
            BreakerState::Open => self.to_open.inc(),
            BreakerState::HalfOpen => self.to_half_open.inc(),
        }
        if transition.to == BreakerState::Open {
            tracing::warn!(upstream = %self.upstream, server = %self.server, from = %transition.from, to = %transition.to, reason = %transition.reason, "circuit breaker opened");
        } else {
            tracing::info!(upstream = %self.upstream, server = %self.server, from = %transition.from, to = %transition.to, reason = %transition.reason, "circuit breaker changed state");
        }
    }
}
