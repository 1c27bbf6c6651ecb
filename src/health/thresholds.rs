//! Rise and fall: a server goes down after `unhealthy_threshold` failed checks in a row and
//! comes back after `healthy_threshold` passed checks in a row. Pure policy, no I/O.

#[derive(Clone, Debug)]
pub struct Thresholds {
    healthy: u32,
    unhealthy: u32,
    up: bool,
    /// Consecutive results against the current state (passes while down, failures while up).
    streak: u32,
}

impl Thresholds {
    pub fn new(healthy: u32, unhealthy: u32, initially_up: bool) -> Self {
        Self {
            healthy: healthy.max(1),
            unhealthy: unhealthy.max(1),
            up: initially_up,
            streak: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check; returns the new state when it changes.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up {
            self.unhealthy
        } else {
            self.healthy
        };
        if self.streak >= needed {
            self.up = passed;
            self.streak = 0;
            Some(self.up)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_the_unhealthy_threshold_in_a_row() {
        let mut t = Thresholds::new(2, 3, true);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a pass resets the streak");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.is_up());
    }

    #[test]
    fn comes_back_after_the_healthy_threshold_in_a_row() {
        let mut t = Thresholds::new(2, 3, false);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(true), None);
    }
}
