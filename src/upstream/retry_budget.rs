//! A retry budget per upstream (Envoy's `retry_budget`): retries in flight may be at most a
//! share of the requests in flight, with a small floor, so that when every server fails the
//! retries cannot multiply the load on what is left (with `retries = 2`, an outage would
//! otherwise triple it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct RetryBudget {
    /// Share of the requests in flight that may be retries at once.
    share: f64,
    /// Retries allowed in flight whatever the share says (a quiet upstream still retries).
    floor: u32,
    active: AtomicU32,
}

/// One retry in flight; dropping it ends it.
pub struct RetryInFlight {
    budget: Arc<RetryBudget>,
}

/// Whether one more retry fits: `active` retries are in flight among `requests`.
pub fn allows(active: u32, requests: u32, share: f64, floor: u32) -> bool {
    let by_share = (share * f64::from(requests)).floor() as u32;
    active < by_share.max(floor)
}

impl RetryBudget {
    pub fn new(share: f64, floor: u32) -> Self {
        Self {
            share,
            floor,
            active: AtomicU32::new(0),
        }
    }

    /// A retry's place in the budget, given `requests` in flight to the upstream; `None`
    /// when the budget is spent.
    pub fn try_start(self: &Arc<Self>, requests: u32) -> Option<RetryInFlight> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                allows(active, requests, self.share, self.floor).then_some(active + 1)
            })
            .ok()?;
        Some(RetryInFlight {
            budget: Arc::clone(self),
        })
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        self.budget.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_the_requests_with_a_floor() {
        // 20% of 100 requests: 20 retries at once.
        assert!(allows(19, 100, 0.2, 3));
        assert!(!allows(20, 100, 0.2, 3));
        // Few requests: the floor.
        assert!(allows(2, 4, 0.2, 3));
        assert!(!allows(3, 4, 0.2, 3));
        // No floor and no share: never.
        assert!(!allows(0, 1_000, 0.0, 0));
    }

    #[test]
    fn places_come_back_when_retries_end() {
        let budget = Arc::new(RetryBudget::new(0.0, 2));
        let first = budget.try_start(10).expect("first");
        let second = budget.try_start(10).expect("second");
        assert!(budget.try_start(10).is_none());
        drop(first);
        assert_eq!(budget.active(), 1);
        let third = budget.try_start(10).expect("a place came back");
        drop((second, third));
        assert_eq!(budget.active(), 0);
    }
}
