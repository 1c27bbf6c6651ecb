//! Ejection after refused connects (Envoy's consecutive local-origin failures, nginx's
//! `max_fails`): a refused connect is a definitive signal that nothing listens, so a few in a
//! row take the server out at once, without waiting for the next health check or for the
//! breaker to count response failures. It comes back after `eject_for` (doubling while it
//! keeps being ejected without a success in between, up to `MAX_EJECTION`), or as soon as an
//! active check reaches it.

use prometheus::IntCounter;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest an ejection lasts, however often the server was ejected in a row.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// How long the `ejections`-th ejection in a row lasts (the first is `base`).
pub fn ejection_time(base: Duration, ejections: u32) -> Duration {
    let doublings = ejections.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings)
        .min(MAX_EJECTION.max(base))
}

pub struct Ejection {
    /// Refused connects in a row that eject the server; 0 = never.
    threshold: AtomicU32,
    base_nanos: AtomicU64,
    consecutive: AtomicU32,
    /// Ejections in a row without a success between them.
    ejections: AtomicU32,
    /// Nanoseconds after `epoch` until which the server is out; 0 = it is not.
    until: AtomicU64,
    epoch: Instant,
    counter: IntCounter,
}

impl Ejection {
    pub fn new(counter: IntCounter) -> Self {
        Self {
            threshold: AtomicU32::new(0),
            base_nanos: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            until: AtomicU64::new(0),
            epoch: Instant::now(),
            counter,
        }
    }

    /// Applies an upstream's settings; an ejection under way keeps its end.
    pub fn configure(&self, threshold: u32, base: Duration) {
        self.threshold.store(threshold, Ordering::Relaxed);
        self.base_nanos.store(
            u64::try_from(base.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if threshold == 0 {
            self.until.store(0, Ordering::Relaxed);
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    /// How long the ejection under way has left, if one is.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.until.load(Ordering::Relaxed);
        let now = self.nanos(now);
        (until != 0 && now < until).then(|| Duration::from_nanos(until - now))
    }

    /// A connect to the server was refused; returns how long it is ejected for when this one
    /// ejects it.
    pub fn record_refused(&self, now: Instant) -> Option<Duration> {
        let threshold = self.threshold.load(Ordering::Relaxed);
        if threshold == 0 {
            return None;
        }
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if consecutive < threshold || self.is_ejected(now) {
            return None;
        }
        self.consecutive.store(0, Ordering::Relaxed);
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let base = Duration::from_nanos(self.base_nanos.load(Ordering::Relaxed));
        let time = ejection_time(base, ejections);
        let until = self
            .nanos(now)
            .saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.until.store(until, Ordering::Relaxed);
        self.counter.inc();
        Some(time)
    }

    /// The server answered: refusals in a row start again from zero. Reads before it writes,
    /// so that the request path writes nothing shared while all is well.
    pub fn record_success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// An active check reached the server: it is back now.
    pub fn end(&self) {
        if self.until.load(Ordering::Relaxed) != 0 {
            self.until.store(0, Ordering::Relaxed);
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejection(threshold: u32, base: Duration) -> Ejection {
        let counter = IntCounter::new("ejections", "test").unwrap();
        let ejection = Ejection::new(counter);
        ejection.configure(threshold, base);
        ejection
    }

    #[test]
    fn refusals_in_a_row_eject_for_a_time_that_doubles_without_a_success() {
        let e = ejection(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(e.record_refused(t0), None);
        assert_eq!(e.record_refused(t0), None);
        assert_eq!(e.record_refused(t0), Some(Duration::from_secs(10)));
        assert!(e.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!e.is_ejected(t0 + Duration::from_secs(10)));
        // Back, and refused again at once: twice as long.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..2 {
            assert_eq!(e.record_refused(t1), None);
        }
        assert_eq!(e.record_refused(t1), Some(Duration::from_secs(20)));
        assert_eq!(e.counter.get(), 2);
        // A success in between: the next ejection is the first again.
        let t2 = t1 + Duration::from_secs(20);
        e.record_success();
        for _ in 0..2 {
            e.record_refused(t2);
        }
        assert_eq!(e.record_refused(t2), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_success_breaks_the_row_and_a_check_ends_the_ejection() {
        let e = ejection(2, Duration::from_secs(10));
        let t0 = Instant::now();
        e.record_refused(t0);
        e.record_success();
        assert_eq!(e.record_refused(t0), None, "the row started again");
        assert!(e.record_refused(t0).is_some());
        assert!(e.is_ejected(t0));
        e.end();
        assert!(!e.is_ejected(t0));
        assert_eq!(e.remaining(t0), None);
    }

    #[test]
    fn off_means_never() {
        let e = ejection(0, Duration::from_secs(10));
        for _ in 0..100 {
            assert_eq!(e.record_refused(Instant::now()), None);
        }
        assert!(!e.is_ejected(Instant::now()));
    }

    #[test]
    fn ejection_times_are_capped() {
        let base = Duration::from_secs(10);
        assert_eq!(ejection_time(base, 1), base);
        assert_eq!(ejection_time(base, 3), Duration::from_secs(40));
        assert_eq!(ejection_time(base, 40), MAX_EJECTION);
        assert_eq!(
            ejection_time(Duration::from_secs(600), 2),
            Duration::from_secs(600)
        );
    }
}
