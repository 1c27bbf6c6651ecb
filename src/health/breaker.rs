//! The circuit breaker's policy, pure: given outcomes and the time, when a server's breaker
//! opens (consecutive failures, or a failure rate over a sliding window), when it lets trial
//! requests through (half-open), and whether it closes or opens again for longer.
//!
//! Closed → Open: `consecutive_failures` in a row, or `failure_rate` of the requests in the
//! last `window` once it holds `min_requests`. Open → HalfOpen: after `open_for`. HalfOpen →
//! Closed: a trial succeeds. HalfOpen → Open: a trial fails, and the open time doubles (up to
//! `max_open_for`); it returns to `open_for` once the breaker closes.
//!
//! Active health checks end the open time early only when they say something new: a check
//! that passes right after one that failed (the server was down and came back, e.g. restarted)
//! lets the trial through at once, as Envoy un-ejects a host whose health came back. Checks
//! that kept passing say nothing the breaker did not know when it opened (a server can pass
//! `/healthz` and still fail real requests), so the open time and its doubling hold.

use crate::config::BreakerConfig;
use std::fmt;
use std::time::{Duration, Instant};

/// How many slices the failure-rate window is cut into: the window slides by a tenth.
const WINDOW_BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `gatehouse_circuit_breaker_state` gauge.
    pub fn gauge_value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state and why it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: String,
}

/// Whether a request may go to the server, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: a normal request.
    Normal,
    /// Half-open: one of the trial requests.
    Trial,
    Rejected,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    slice: u64,
    total: u32,
    failures: u32,
}

/// Request and failure counts over the last `window`, in `WINDOW_BUCKETS` slices.
#[derive(Clone, Debug)]
struct FailureWindow {
    epoch: Instant,
    slice_len: Duration,
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl FailureWindow {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            epoch: now,
            slice_len: (window / WINDOW_BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [Bucket::default(); WINDOW_BUCKETS],
        }
    }

    fn slice(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_nanos() / self.slice_len.as_nanos()) as u64
    }

    fn record(&mut self, failed: bool, now: Instant) {
        let slice = self.slice(now);
        let bucket = &mut self.buckets[(slice % WINDOW_BUCKETS as u64) as usize];
        if bucket.slice != slice {
            *bucket = Bucket {
                slice,
                ..Bucket::default()
            };
        }
        bucket.total += 1;
        bucket.failures += u32::from(failed);
    }

    /// (requests, failures) in the window ending now.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.slice(now);
        self.buckets
            .iter()
            .filter(|b| b.total > 0 && b.slice + WINDOW_BUCKETS as u64 > current)
            .fold((0, 0), |(t, f), b| (t + b.total, f + b.failures))
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); WINDOW_BUCKETS];
    }
}

#[derive(Clone, Debug)]
pub struct Breaker {
    policy: BreakerConfig,
    state: BreakerState,
    consecutive_failures: u32,
    window: FailureWindow,
    /// While open: when trials may start. While half-open: when it opened last.
    open_until: Instant,
    /// The open time used last; doubles after each failed trial.
    open_for: Duration,
    trials_started: u32,
    /// Whether the last active health check failed, so that the next pass is news.
    /// Whether a health check ended the current open time early (for the log line).
    open_ended_by_check: bool,
}

impl Breaker {
    pub fn new(policy: BreakerConfig, now: Instant) -> Self {
        Self {
            window: FailureWindow::new(policy.window.0, now),
            open_for: policy.open_for.0,
            policy,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            open_until: now,
            trials_started: 0,
            open_ended_by_check: false,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn policy(&self) -> &BreakerConfig {
        &self.policy
    }

    /// When an open breaker lets its first trial through.
    pub fn open_until(&self) -> Option<Instant> {
        (self.state == BreakerState::Open).then_some(self.open_until)
    }

    /// The server's active health checks marked it up again after it was down (it was
    /// restarted): an open breaker's open time ends, so the next request is the trial (a real
    /// request still decides whether it closes); returns whether it did. Checks that keep
    /// passing, or fail now and then without the server being marked down, never get here,
    /// so they leave the open time and its doubling alone (Envoy un-ejects a host the same
    /// way, on its health turning healthy).
    pub fn health_came_back(&mut self, now: Instant) -> bool {
        if self.state == BreakerState::Open && self.open_until > now {
            self.open_until = now;
            self.open_ended_by_check = true;
            return true;
        }
        false
    }

    /// A trial request ended without an outcome (its client left, or the fault was the
    /// client's): its slot goes back, so the next request can be the trial.
    pub fn release_trial(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.trials_started = self.trials_started.saturating_sub(1);
        }
    }

    /// Whether a request could be admitted now, without taking a trial slot.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => now >= self.open_until,
            BreakerState::HalfOpen => self.trials_started < self.policy.half_open_requests.max(1),
        }
    }

    /// Admits a request (taking a trial slot when half-open). An open breaker whose time is up
    /// turns half-open here; that transition is returned too.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if self.state == BreakerState::Open && now >= self.open_until {
            let reason = if self.open_ended_by_check {
                "health checks mark the server up again, letting trial requests through".into()
            } else {
                format!(
                    "open for {}, letting trial requests through",
                    humantime::format_duration(self.open_for)
                )
            };
            transition = Some(self.move_to(BreakerState::HalfOpen, reason));
            self.open_ended_by_check = false;
            self.trials_started = 0;
        }
        let admission = match self.state {
            BreakerState::Closed => Admission::Normal,
            BreakerState::Open => Admission::Rejected,
            BreakerState::HalfOpen => {
                if self.trials_started < self.policy.half_open_requests.max(1) {
                    self.trials_started += 1;
                    Admission::Trial
                } else {
                    Admission::Rejected
                }
            }
        };
        (admission, transition)
    }

    /// Records the outcome of a request admitted as `admission`; `failure` describes what
    /// went wrong, `None` for a success.
    pub fn record(
        &mut self,
        admission: Admission,
        failure: Option<&str>,
        now: Instant,
    ) -> Option<Transition> {
        match (self.state, admission) {
            (BreakerState::HalfOpen, Admission::Trial) => match failure {
                None => {
                    self.open_for = self.policy.open_for.0;
                    self.consecutive_failures = 0;
                    self.window.clear();
                    Some(self.move_to(BreakerState::Closed, "trial request succeeded".into()))
                }
                Some(why) => {
                    self.open_for = (self.open_for * 2)
                        .min(self.policy.max_open_for.0.max(self.policy.open_for.0));
                    self.open_until = now + self.open_for;
                    Some(self.move_to(
                        BreakerState::Open,
                        format!(
                            "trial request failed ({why}); open for {}",
                            humantime::format_duration(self.open_for)
                        ),
                    ))
                }
            },
            (BreakerState::Closed, Admission::Normal) => {
                self.window.record(failure.is_some(), now);
                let Some(why) = failure else {
                    self.consecutive_failures = 0;
                    return None;
                };
                self.consecutive_failures += 1;
                let threshold = self.policy.consecutive_failures;
                if threshold > 0 && self.consecutive_failures >= threshold {
                    return Some(self.open(
                        now,
                        format!("{threshold} consecutive failures, the last: {why}"),
                    ));
                }
                let (total, failures) = self.window.totals(now);
                let rate = f64::from(failures) / f64::from(total.max(1));
                if self.policy.failure_rate > 0.0
                    && total >= self.policy.min_requests.max(1)
                    && rate >= self.policy.failure_rate
                {
                    return Some(self.open(
                        now,
                        format!(
                            "{failures} of {total} requests failed in {} ({:.0}%), the last: {why}",
                            humantime::format_duration(self.policy.window.0),
                            rate * 100.0
                        ),
                    ));
                }
                None
            }
            // Requests admitted before the last change of state say nothing about the present.
            _ => None,
        }
    }

    fn open(&mut self, now: Instant, reason: String) -> Transition {
        self.open_for = self.policy.open_for.0;
        self.open_until = now + self.open_for;
        self.consecutive_failures = 0;
        self.window.clear();
        self.move_to(BreakerState::Open, reason)
    }

    fn move_to(&mut self, to: BreakerState, reason: String) -> Transition {
        let from = self.state;
        self.state = to;
        Transition { from, to, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    fn policy() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.0,
            window: ConfigDuration::from_secs(10),
            min_requests: 4,
            open_for: ConfigDuration::from_secs(30),
            max_open_for: ConfigDuration::from_secs(100),
            half_open_requests: 1,
        }
    }

    fn fail(b: &mut Breaker, now: Instant) -> Option<Transition> {
        let (admission, _) = b.admit(now);
        b.record(admission, Some("HTTP 500"), now)
    }

    fn succeed(b: &mut Breaker, now: Instant) -> Option<Transition> {
        let (admission, _) = b.admit(now);
        b.record(admission, None, now)
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        assert!(fail(&mut b, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        assert!(succeed(&mut b, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        let opened = fail(&mut b, t0).expect("third failure in a row opens");
        assert_eq!(
            (opened.from, opened.to),
            (BreakerState::Closed, BreakerState::Open)
        );
        assert!(
            opened.reason.contains("3 consecutive failures"),
            "{}",
            opened.reason
        );
        assert_eq!(b.admit(t0).0, Admission::Rejected);
        assert!(!b.would_admit(t0 + Duration::from_secs(29)));
    }

    #[test]
    fn half_open_after_open_for_then_closes_on_a_good_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        let later = t0 + Duration::from_secs(30);
        assert!(b.would_admit(later));
        let (admission, transition) = b.admit(later);
        assert_eq!(admission, Admission::Trial);
        assert_eq!(transition.map(|t| t.to), Some(BreakerState::HalfOpen));
        // Only one trial at a time.
        assert_eq!(b.admit(later).0, Admission::Rejected);
        let closed = b.record(Admission::Trial, None, later).expect("closes");
        assert_eq!(closed.to, BreakerState::Closed);
        assert_eq!(b.admit(later).0, Admission::Normal);
    }

    #[test]
    fn failed_trials_double_the_open_time_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        let mut now = t0;
        for expected in [60, 100, 100] {
            now += b.open_for;
            let (admission, _) = b.admit(now);
            assert_eq!(admission, Admission::Trial);
            let reopened = b.record(admission, Some("timeout"), now).expect("reopens");
            assert_eq!(reopened.to, BreakerState::Open);
            assert_eq!(b.open_for, Duration::from_secs(expected));
            assert!(!b.would_admit(now + Duration::from_secs(expected) - Duration::from_millis(1)));
        }
        // A good trial closes it and the next opening is back to open_for.
        now += b.open_for;
        let (admission, _) = b.admit(now);
        b.record(admission, None, now);
        for _ in 0..3 {
            fail(&mut b, now);
        }
        assert_eq!(b.open_until(), Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn failure_rate_opens_once_the_window_holds_min_requests() {
        let t0 = Instant::now();
        let mut b = Breaker::new(
            BreakerConfig {
                consecutive_failures: 0,
                failure_rate: 0.5,
                ..policy()
            },
            t0,
        );
        // Alternating: 50% failures, never three in a row.
        assert!(fail(&mut b, t0).is_none());
        assert!(succeed(&mut b, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        let opened = succeed(&mut b, t0)
            .map_or_else(|| fail(&mut b, t0), Some)
            .expect("opens at 50%");
        assert_eq!(opened.to, BreakerState::Open);
        assert!(opened.reason.contains("failed in 10s"), "{}", opened.reason);
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(
            BreakerConfig {
                consecutive_failures: 0,
                failure_rate: 0.5,
                ..policy()
            },
            t0,
        );
        for _ in 0..3 {
            assert!(fail(&mut b, t0).is_none(), "below min_requests");
        }
        // Eleven seconds later those three are gone: 1 failure in 4 is 25%.
        let later = t0 + Duration::from_secs(11);
        for _ in 0..3 {
            assert!(succeed(&mut b, later).is_none());
        }
        assert!(fail(&mut b, later).is_none());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_trial_gives_its_slot_back() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(later).0, Admission::Trial);
        assert_eq!(b.admit(later).0, Admission::Rejected);
        b.release_trial();
        assert_eq!(
            b.admit(later).0,
            Admission::Trial,
            "the next request is the trial"
        );
    }

    /// Replays a server whose health checks keep it up (so they never tell the breaker
    /// anything) but which fails every real request (one every 100 ms), from when its
    /// breaker opens; returns when each trial came, in seconds after the opening.
    fn trials_while_up(b: &mut Breaker, opened: Instant, until_secs: u64) -> Vec<f64> {
        let mut trials = Vec::new();
        for tick in 0..until_secs * 10 {
            let now = opened + Duration::from_millis(tick * 100);
            let (admission, _) = b.admit(now);
            if admission == Admission::Trial {
                trials.push((now - opened).as_secs_f64());
                b.record(admission, Some("HTTP 500"), now);
            }
        }
        trials
    }

    #[test]
    fn a_server_kept_up_by_its_checks_waits_out_the_open_time_and_its_doubling() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        // open_for 30 s, then 60 s, then the 100 s maximum: not one trial per check.
        assert_eq!(
            trials_while_up(&mut b, t0, 400),
            [30.0, 90.0, 190.0, 290.0, 390.0]
        );
    }

    #[test]
    fn a_server_whose_health_comes_back_gets_its_trial_at_once() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        assert!(!b.would_admit(at(6)));
        assert!(b.health_came_back(at(8)), "marked up again: the wait ends");
        assert!(b.would_admit(at(8)));
        let (admission, transition) = b.admit(at(8));
        assert_eq!(admission, Admission::Trial);
        let half_open = transition.expect("half-open");
        assert_eq!(half_open.to, BreakerState::HalfOpen);
        assert!(
            half_open.reason.contains("mark the server up again"),
            "{}",
            half_open.reason
        );

        // The trial fails: open for twice as long.
        let reopened = b
            .record(admission, Some("HTTP 500"), at(8))
            .expect("reopens");
        assert!(
            reopened.reason.contains("open for 1m"),
            "{}",
            reopened.reason
        );
        assert!(!b.would_admit(at(10)));
        assert_eq!(b.open_until(), Some(at(68)));

        // Down and back once more: at once again; the doubling is kept for the next failure.
        assert!(b.health_came_back(at(14)));
        let (admission, _) = b.admit(at(14));
        assert_eq!(admission, Admission::Trial);
        b.record(admission, Some("HTTP 500"), at(14));
        assert_eq!(
            b.open_until(),
            Some(at(114)),
            "60 s doubled, capped at 100 s"
        );
        // Waited out in full this time: the log line says how long.
        let (_, transition) = b.admit(at(114));
        let half_open = transition.expect("half-open after the open time");
        assert!(
            half_open.reason.contains("open for 1m 40s"),
            "{}",
            half_open.reason
        );
    }

    #[test]
    fn health_coming_back_changes_nothing_unless_the_breaker_waits() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        assert!(!b.health_came_back(t0), "closed: nothing to end");
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        let later = t0 + Duration::from_secs(31);
        let (admission, _) = b.admit(later);
        assert_eq!(admission, Admission::Trial);
        assert!(
            !b.health_came_back(later),
            "half-open: already letting a trial through"
        );
    }

    #[test]
    fn outcomes_of_requests_from_before_a_change_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        // A request admitted while closed finishes after the breaker opened.
        assert!(b.record(Admission::Normal, None, t0).is_none());
        assert_eq!(b.state(), BreakerState::Open);
    }
}
