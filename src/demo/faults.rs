//! Fault knobs for one demo backend (added latency and an error rate), kept in atomics so the
//! request path reads them without a lock and operators can turn them at runtime.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Added latency and error rate for one backend. Each knob is read and written on its own;
/// a request may see a latency change before the matching error-rate change, which is
/// harmless for fault injection.
pub struct Faults {
    latency_nanos: AtomicU64,
    /// `f64::to_bits` of a rate in `[0, 1]`, because there is no atomic float.
    error_rate_bits: AtomicU64,
    /// False makes `/healthz` answer 503, to show health checks taking a backend out.
    healthy: AtomicBool,
}

/// An error rate outside `[0, 1]` (or NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidErrorRate(pub f64);

impl fmt::Display for InvalidErrorRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error_rate must be between 0 and 1, got {}", self.0)
    }
}

impl std::error::Error for InvalidErrorRate {}

impl Faults {
    /// Knobs ready to share between a backend and whoever tunes it. The constructor cannot
    /// fail: an `error_rate` outside `[0, 1]` is clamped into it and NaN counts as 0; use
    /// [`Faults::set_error_rate`] to have bad input rejected instead.
    pub fn new(latency: Duration, error_rate: f64) -> Arc<Self> {
        let error_rate = if error_rate.is_nan() {
            0.0
        } else {
            error_rate.clamp(0.0, 1.0)
        };
        Arc::new(Self {
            latency_nanos: AtomicU64::new(nanos(latency)),
            error_rate_bits: AtomicU64::new(error_rate.to_bits()),
            healthy: AtomicBool::new(true),
        })
    }

    /// Whether `/healthz` reports this backend healthy.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Latency added before answering each affected request.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    /// Sets the added latency; anything past `u64::MAX` nanoseconds (about 584 years) is
    /// stored as that.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_nanos.store(nanos(latency), Ordering::Relaxed);
    }

    /// Probability in `[0, 1]` that an affected request is answered with an injected 500.
    pub fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate_bits.load(Ordering::Relaxed))
    }

    /// Sets the error rate, leaving the old one in place when `rate` is outside `[0, 1]`.
    pub fn set_error_rate(&self, rate: f64) -> Result<(), InvalidErrorRate> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(InvalidErrorRate(rate));
        }
        self.error_rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Draws whether this request gets an injected error.
    pub fn roll_injected_error(&self) -> bool {
        let rate = self.error_rate();
        // fastrand::f64 is in [0, 1), so a rate of 1 always fires and 0 never does; skipping
        // the draw at 0 keeps the unfaulted path free of RNG work.
        rate > 0.0 && fastrand::f64() < rate
    }
}

impl Default for Faults {
    /// No added latency, no injected errors.
    fn default() -> Self {
        Self {
            latency_nanos: AtomicU64::new(0),
            error_rate_bits: AtomicU64::new(0.0_f64.to_bits()),
            healthy: AtomicBool::new(true),
        }
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("latency", &self.latency())
            .field("error_rate", &self.error_rate())
            .finish()
    }
}

fn nanos(latency: Duration) -> u64 {
    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keeps_valid_knobs() {
        let faults = Faults::new(Duration::from_millis(250), 0.25);
        assert_eq!(faults.latency(), Duration::from_millis(250));
        assert_eq!(faults.error_rate(), 0.25);
    }

    #[test]
    fn new_clamps_error_rate_into_range() {
        assert_eq!(Faults::new(Duration::ZERO, 1.5).error_rate(), 1.0);
        assert_eq!(Faults::new(Duration::ZERO, -0.5).error_rate(), 0.0);
        assert_eq!(Faults::new(Duration::ZERO, f64::NAN).error_rate(), 0.0);
    }

    #[test]
    fn setters_change_knobs_at_runtime() {
        let faults = Faults::default();
        faults.set_latency(Duration::from_secs(2));
        assert_eq!(faults.latency(), Duration::from_secs(2));
        assert_eq!(faults.set_error_rate(1.0), Ok(()));
        assert_eq!(faults.error_rate(), 1.0);
        assert_eq!(faults.set_error_rate(0.0), Ok(()));
        assert_eq!(faults.error_rate(), 0.0);
    }

    #[test]
    fn out_of_range_error_rate_is_rejected_and_ignored() {
        let faults = Faults::new(Duration::ZERO, 0.5);
        for bad in [-0.1, 1.01, f64::INFINITY] {
            assert_eq!(faults.set_error_rate(bad), Err(InvalidErrorRate(bad)));
        }
        assert!(faults.set_error_rate(f64::NAN).is_err());
        assert_eq!(faults.error_rate(), 0.5);
        assert_eq!(
            InvalidErrorRate(2.0).to_string(),
            "error_rate must be between 0 and 1, got 2"
        );
    }

    #[test]
    fn huge_latency_saturates() {
        let faults = Faults::default();
        faults.set_latency(Duration::MAX);
        assert_eq!(faults.latency(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn error_rate_extremes_are_exact() {
        let never = Faults::new(Duration::ZERO, 0.0);
        let always = Faults::new(Duration::ZERO, 1.0);
        for _ in 0..10_000 {
            assert!(!never.roll_injected_error());
            assert!(always.roll_injected_error());
        }
    }

    #[test]
    fn error_rate_is_roughly_honoured() {
        fastrand::seed(7);
        let faults = Faults::new(Duration::ZERO, 0.3);
        let fired = (0..10_000).filter(|_| faults.roll_injected_error()).count();
        // 10k draws at p = 0.3 have a standard deviation near 46; 300 is over six of them.
        assert!((2_700..=3_300).contains(&fired), "fired {fired} times");
    }

    #[test]
    fn knobs_are_shared_across_threads() {
        let faults = Arc::new(Faults::default());
        let tuner = {
            let faults = Arc::clone(&faults);
            std::thread::spawn(move || {
                faults.set_latency(Duration::from_millis(5));
                faults.set_error_rate(0.75)
            })
        };
        assert_eq!(tuner.join().expect("tuner finished"), Ok(()));
        assert_eq!(faults.latency(), Duration::from_millis(5));
        assert_eq!(faults.error_rate(), 0.75);
    }
}
