//! The generic cell rate algorithm (GCRA), as pure arithmetic over one number per key: the
//! theoretical arrival time (TAT) of the next request that fits the rate. It admits exactly
//! what a token bucket of `burst + 1` tokens refilled at the rate would (nginx's `limit_req`
//! with `burst`), and needs no timer and no refill pass.
//!
//! Times are nanoseconds on a monotonic clock the caller provides, so that tests choose them.

/// A rate and burst as the algorithm needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds one request takes of the allowance (period / count).
    interval: u64,
    /// How far ahead of now the TAT may run: `burst` intervals.
    tolerance: u64,
}

/// What one request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: the key's TAT becomes `tat`; `wait` nanoseconds until the request is due at
    /// the rate (0 when it is within the rate; more when it uses the burst).
    Admit { tat: u64, wait: u64 },
    /// Over the burst: nothing changes; a request is admitted again in `retry_in` nanoseconds.
    Refuse { retry_in: u64 },
}

impl Gcra {
    pub fn new(interval_nanos: u64, burst: u32) -> Self {
        let interval = interval_nanos.max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
        }
    }

    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The verdict on a request at `now` for a key whose TAT is `tat` (0 for a new key).
    pub fn check(&self, tat: u64, now: u64) -> Verdict {
        let due = tat.max(now);
        let ahead = due - now;
        if ahead > self.tolerance {
            Verdict::Refuse {
                retry_in: ahead - self.tolerance,
            }
        } else {
            Verdict::Admit {
                tat: due.saturating_add(self.interval),
                wait: ahead,
            }
        }
    }

    /// Requests that would be admitted at once at `now` after the key's TAT became `tat`.
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        let ahead = tat.saturating_sub(now);
        if ahead > self.tolerance {
            0
        } else {
            (self.tolerance - ahead) / self.interval + 1
        }
    }

    /// Nanoseconds until a key at `tat` has its whole allowance back.
    pub fn reset_in(&self, tat: u64, now: u64) -> u64 {
        tat.saturating_sub(now)
    }

    /// Gives back one admission (when a later limit of the same request refused it).
    pub fn refund(&self, tat: u64) -> u64 {
        tat.saturating_sub(self.interval)
    }

    /// Whether a key at `tat` is back to a full allowance at `now`: then forgetting it
    /// changes nothing.
    pub fn is_idle(&self, tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Admissions among `n` requests `spacing` apart, starting at `start`.
    fn admitted(gcra: &Gcra, n: u64, spacing: u64, start: u64) -> (u64, u64) {
        let mut tat = 0;
        let mut count = 0;
        let mut now = start;
        for _ in 0..n {
            if let Verdict::Admit { tat: next, .. } = gcra.check(tat, now) {
                tat = next;
                count += 1;
            }
            now += spacing;
        }
        (count, tat)
    }

    #[test]
    fn no_burst_admits_one_request_per_interval() {
        // 5/s: one request per 200 ms. 100 requests 10 ms apart span 1 s: 5 are admitted.
        let gcra = Gcra::new(200 * MS, 0);
        assert_eq!(admitted(&gcra, 100, 10 * MS, 1_000 * MS).0, 5);
        // At once: only the first.
        assert_eq!(admitted(&gcra, 10, 0, 1_000 * MS).0, 1);
    }

    #[test]
    fn a_burst_admits_burst_plus_one_at_once_then_the_rate() {
        let gcra = Gcra::new(100 * MS, 4);
        assert_eq!(admitted(&gcra, 20, 0, 1_000 * MS).0, 5);
        // Over 2 s at 1 ms spacing: the burst of 5, then one per 100 ms (20 more, the last
        // one at the very end of the span).
        let (count, _) = admitted(&gcra, 2_000, MS, 1_000 * MS);
        assert_eq!(count, 5 + 19);
    }

    #[test]
    fn burst_requests_wait_their_turn_at_the_rate() {
        let gcra = Gcra::new(100 * MS, 2);
        let now = 5_000 * MS;
        let mut tat = 0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            match gcra.check(tat, now) {
                Verdict::Admit { tat: next, wait } => {
                    tat = next;
                    waits.push(wait / MS);
                }
                Verdict::Refuse { retry_in } => waits.push(1_000_000 + retry_in / MS),
            }
        }
        // Three admitted, due 0, 100 and 200 ms from now; the fourth refused, with 100 ms to go.
        assert_eq!(waits, [0, 100, 200, 1_000_100]);
    }

    #[test]
    fn remaining_and_reset() {
        let gcra = Gcra::new(100 * MS, 4);
        let now = 1_000 * MS;
        assert_eq!(gcra.remaining(0, now), 5);
        let Verdict::Admit { tat, .. } = gcra.check(0, now) else {
            panic!("admitted")
        };
        assert_eq!(gcra.remaining(tat, now), 4);
        assert_eq!(gcra.reset_in(tat, now), 100 * MS);
        assert_eq!(gcra.remaining(tat, now + 100 * MS), 5);
        assert!(gcra.is_idle(tat, now + 100 * MS));
        assert!(!gcra.is_idle(tat, now + 99 * MS));
        assert_eq!(gcra.refund(tat), now);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let gcra = Gcra::new(u64::MAX, u32::MAX);
        assert!(matches!(gcra.check(u64::MAX, 0), Verdict::Admit { .. }));
        let gcra = Gcra::new(0, 0);
        assert_eq!(gcra.interval(), 1);
        assert!(matches!(
            gcra.check(u64::MAX, u64::MAX),
            Verdict::Admit {
                tat: u64::MAX,
                wait: 0
            }
        ));
    }
}
