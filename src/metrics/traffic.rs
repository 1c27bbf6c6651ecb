//! The metric families of traffic splits and mirrors: requests per side of a route's split,
//! and the copies a route's mirror sent, lost, dropped or skipped.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

pub struct TrafficMetrics {
    split_requests: IntCounterVec,
    mirror_requests: IntCounterVec,
}

impl TrafficMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let split_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_split_requests_total",
                "Requests of a route with a split (or pick_upstream), by the upstream chosen.",
            ),
            &["route", "upstream"],
        )?;
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_mirror_requests_total",
                "Copies of a route's requests for its mirror, by outcome (sent: the shadow answered; failed: it could not be reached or did not answer in time; dropped: max_in_flight copies were outstanding; skipped: the body was over max_body_bytes or never arrived whole).",
            ),
            &["route", "outcome"],
        )?;
        registry.register(Box::new(split_requests.clone()))?;
        registry.register(Box::new(mirror_requests.clone()))?;
        Ok(Self {
            split_requests,
            mirror_requests,
        })
    }

    /// The count of one side of a route's split.
    pub fn split_side(&self, route: &str, upstream: &str) -> IntCounter {
        self.split_requests.with_label_values(&[route, upstream])
    }

    /// A route's mirror outcome counters: sent, failed, dropped, skipped.
    pub fn mirror_outcomes(&self, route: &str) -> [IntCounter; 4] {
        ["sent", "failed", "dropped", "skipped"]
            .map(|outcome| self.mirror_requests.with_label_values(&[route, outcome]))
    }
}
