//! The Redis connection's breaker, as pure state over times the caller gives: closed while
//! calls succeed; open after `failures` failed calls in a row, sending nothing; after
//! `open_for`, half-open: one probe call goes out, and its result closes the breaker or opens
//! it again for twice as long (up to `max_open_for`).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Its value in `gatehouse_shared_breaker_state`.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// What a result did to the breaker, for the caller to log and count once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// It opened (a new outage, or a failed probe when `reopened`).
    Opened {
        reopened: bool,
    },
    /// A probe succeeded: closed again.
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    max_open_for: Duration,
    state: BreakerState,
    failures: u32,
    /// How long it stays open this time (doubled by each failed probe).
    backoff: Duration,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for: Duration, max_open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            max_open_for: max_open_for.max(open_for),
            state: BreakerState::Closed,
            failures: 0,
            backoff: open_for,
            opened_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether `admit` would let a call out at `now` (closed, or open with the backoff over:
    /// the call would be the probe), without changing anything.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => self
                .opened_at
                .is_none_or(|at| now.saturating_duration_since(at) >= self.backoff),
        }
    }

    /// Whether a call may go out at `now`. Past the backoff, the first caller becomes the
    /// probe (half-open) and the others keep waiting for its result.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => {
                let due = self
                    .opened_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.backoff);
                if due {
                    self.state = BreakerState::HalfOpen;
                }
                due
            }
        }
    }

    pub fn success(&mut self) -> Transition {
        self.failures = 0;
        let was = self.state;
        self.state = BreakerState::Closed;
        self.backoff = self.open_for;
        self.opened_at = None;
        if was == BreakerState::Closed {
            Transition::None
        } else {
            Transition::Closed
        }
    }

    pub fn failure(&mut self, now: Instant) -> Transition {
        match self.state {
            BreakerState::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures < self.failures_to_open {
                    return Transition::None;
                }
                self.state = BreakerState::Open;
                self.opened_at = Some(now);
                self.backoff = self.open_for;
                Transition::Opened { reopened: false }
            }
            BreakerState::HalfOpen => {
                self.state = BreakerState::Open;
                self.opened_at = Some(now);
                self.backoff = (self.backoff * 2).min(self.max_open_for);
                Transition::Opened { reopened: true }
            }
            // A call admitted before the breaker opened failed late: nothing new.
            BreakerState::Open => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let mut breaker = Breaker::new(3, 100 * MS, 1_000 * MS);
        let t = Instant::now();
        assert_eq!(breaker.failure(t), Transition::None);
        assert_eq!(breaker.failure(t), Transition::None);
        // A success in between starts the count again.
        assert_eq!(breaker.success(), Transition::None);
        assert_eq!(breaker.failure(t), Transition::None);
        assert_eq!(breaker.failure(t), Transition::None);
        assert!(breaker.admit(t));
        assert_eq!(breaker.failure(t), Transition::Opened { reopened: false });
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.admit(t + 99 * MS));
    }

    #[test]
    fn one_probe_after_the_backoff_which_closes_or_doubles_it() {
        let mut breaker = Breaker::new(1, 100 * MS, 300 * MS);
        let t = Instant::now();
        breaker.failure(t);
        assert!(!breaker.admit(t + 50 * MS));
        assert!(!breaker.would_admit(t + 50 * MS));
        assert!(breaker.would_admit(t + 100 * MS));
        // The probe, and nobody else while it is out.
        assert!(breaker.admit(t + 100 * MS));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.admit(t + 100 * MS));
        // It fails: open for 200 ms now.
        let t2 = t + 110 * MS;
        assert_eq!(breaker.failure(t2), Transition::Opened { reopened: true });
        assert!(!breaker.admit(t2 + 199 * MS));
        assert!(breaker.admit(t2 + 200 * MS));
        // Fails again: 400 ms, capped at 300.
        let t3 = t2 + 200 * MS;
        breaker.failure(t3);
        assert!(!breaker.admit(t3 + 299 * MS));
        assert!(breaker.admit(t3 + 300 * MS));
        // The probe succeeds: closed, and the backoff is back to its start.
        assert_eq!(breaker.success(), Transition::Closed);
        assert_eq!(breaker.state(), BreakerState::Closed);
        let t4 = t3 + 400 * MS;
        breaker.failure(t4);
        assert!(breaker.admit(t4 + 100 * MS));
    }

    #[test]
    fn a_late_failure_while_open_changes_nothing() {
        let mut breaker = Breaker::new(1, 100 * MS, 100 * MS);
        let t = Instant::now();
        breaker.failure(t);
        assert_eq!(breaker.failure(t + 50 * MS), Transition::None);
        assert!(breaker.admit(t + 100 * MS));
    }
}
