//! A retry budget per upstream (Finagle's `RetryBudget`, the idea behind Envoy's): retries may
//! add at most a share of the requests sent, counted over a sliding window, plus a small
//! number per second that is always allowed. When every server fails, retries therefore add
//! at most that share to the load (with `retries = 2` and no budget, an outage would triple
//! it); when one server of three dies, the burst of retries it causes is a sliver of the
//! requests of the window, and none is refused.
//!
//! A budget of retries *in flight* (Envoy's) refuses exactly that burst: the requests that
//! were on the dead server's connections all need their retry at the same instant, a third
//! of the requests in flight, more than a 20% budget allows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The window requests and retries are counted over.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Whether one more retry fits, given the counts of the window.
pub fn allows(retries: f64, requests: f64, share: f64, per_second: u32) -> bool {
    retries + 1.0 <= share * requests + f64::from(per_second) * WINDOW.as_secs_f64()
}

/// The count of the sliding window: all of the current slot and the part of the previous
/// one that the window still covers, `elapsed` into the current slot.
pub fn in_window(previous: u64, current: u64, elapsed: Duration) -> f64 {
    let left = 1.0 - (elapsed.as_secs_f64() / WINDOW.as_secs_f64()).min(1.0);
    previous as f64 * left + current as f64
}

pub struct RetryBudget {
    share: f64,
    per_second: u32,
    epoch: Instant,
    /// Nanoseconds after `epoch` when the current slot began.
    slot_start: AtomicU64,
    requests: [AtomicU64; 2],
    retries: [AtomicU64; 2],
    /// Which of the two counters is the current slot's (the other is the previous one's).
    current: AtomicU64,
    rotating: Mutex<()>,
}

impl RetryBudget {
    pub fn new(share: f64, per_second: u32) -> Self {
        Self {
            share,
            per_second,
            epoch: Instant::now(),
            slot_start: AtomicU64::new(0),
            requests: [AtomicU64::new(0), AtomicU64::new(0)],
            retries: [AtomicU64::new(0), AtomicU64::new(0)],
            current: AtomicU64::new(0),
            rotating: Mutex::new(()),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current slot's index and how far into it `now` is, starting a new slot when the
    /// current one is over.
    fn slot(&self, now: Instant) -> (usize, Duration) {
        let now = self.nanos(now);
        let window = WINDOW.as_nanos() as u64;
        let start = self.slot_start.load(Ordering::Acquire);
        if now.saturating_sub(start) < window {
            let index = self.current.load(Ordering::Acquire) as usize & 1;
            return (index, Duration::from_nanos(now.saturating_sub(start)));
        }
        let _rotating = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let start = self.slot_start.load(Ordering::Acquire);
        let index = self.current.load(Ordering::Acquire) as usize & 1;
        if now.saturating_sub(start) < window {
            return (index, Duration::from_nanos(now.saturating_sub(start)));
        }
        let next = index ^ 1;
        // More than one window idle: nothing of the last slot is in the window any more.
        let carried = |counter: &AtomicU64| {
            if now - start < 2 * window {
                counter.load(Ordering::Acquire)
            } else {
                0
            }
        };
        self.requests[next].store(0, Ordering::Release);
        self.retries[next].store(0, Ordering::Release);
        // The slot that was current becomes the previous one, emptied if it is too old.
        let (previous_requests, previous_retries) = (
            carried(&self.requests[index]),
            carried(&self.retries[index]),
        );
        self.requests[index].store(previous_requests, Ordering::Release);
        self.retries[index].store(previous_retries, Ordering::Release);
        let new_start = start + (now - start) / window * window;
        self.current.store(next as u64, Ordering::Release);
        self.slot_start.store(new_start, Ordering::Release);
        (next, Duration::from_nanos(now - new_start))
    }

    pub fn share(&self) -> f64 {
        self.share
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts a request's first attempt.
    pub fn record_request(&self, now: Instant) {
        let (index, _) = self.slot(now);
        self.requests[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a retry from the budget, or says it is spent.
    pub fn try_retry(&self, now: Instant) -> bool {
        let (index, elapsed) = self.slot(now);
        let previous = index ^ 1;
        let requests = in_window(
            self.requests[previous].load(Ordering::Relaxed),
            self.requests[index].load(Ordering::Relaxed),
            elapsed,
        );
        let retries = in_window(
            self.retries[previous].load(Ordering::Relaxed),
            self.retries[index].load(Ordering::Relaxed),
            elapsed,
        );
        if !allows(retries, requests, self.share, self.per_second) {
            return false;
        }
        self.retries[index].fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_the_requests_plus_a_floor() {
        // 20% of 100 requests: 20 retries in the window.
        assert!(allows(19.0, 100.0, 0.2, 0));
        assert!(!allows(20.0, 100.0, 0.2, 0));
        // Few requests: the floor, per second of the window.
        assert!(allows(29.0, 4.0, 0.2, 3));
        assert!(!allows(31.0, 4.0, 0.2, 3));
        assert!(!allows(0.0, 1_000.0, 0.0, 0));
    }

    #[test]
    fn the_previous_slot_fades_out_of_the_window() {
        assert_eq!(in_window(100, 10, Duration::ZERO), 110.0);
        assert_eq!(in_window(100, 10, WINDOW / 2), 60.0);
        assert_eq!(in_window(100, 10, WINDOW), 10.0);
    }

    #[test]
    fn a_budget_admits_its_share_of_the_requests_it_saw() {
        let budget = RetryBudget::new(0.2, 0);
        let t0 = budget.epoch;
        let mut retried = 0;
        for i in 0..100 {
            budget.record_request(t0 + Duration::from_millis(i));
            if budget.try_retry(t0 + Duration::from_millis(i)) {
                retried += 1;
            }
        }
        assert_eq!(retried, 20);
        assert!(!budget.try_retry(t0 + Duration::from_millis(100)));
        // Into the next slot, the last one still counts (nearly all of it, this early): five
        // more requests make room for one more retry.
        let next = t0 + WINDOW + Duration::from_millis(1);
        for _ in 0..5 {
            budget.record_request(next);
        }
        assert!(budget.try_retry(next));
        assert!(!budget.try_retry(next));
        // Two windows later, nothing of them is left.
        assert!(!budget.try_retry(t0 + WINDOW * 3));
        budget.record_request(t0 + WINDOW * 3);
        assert!(!budget.try_retry(t0 + WINDOW * 3));
        for _ in 0..4 {
            budget.record_request(t0 + WINDOW * 3);
        }
        assert!(budget.try_retry(t0 + WINDOW * 3));
    }
}
