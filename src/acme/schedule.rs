//! When to order: renewal at a fraction of a certificate's lifetime, moved earlier by a
//! random part so that certificates issued together (or replicas sharing them) do not all
//! renew in the same second, or inside the window the directory suggests (RFC 9773); and
//! exponential backoff after failures. Pure arithmetic.

use std::time::Duration;

/// The longest wait between two attempts after failures in a row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// The share of a lifetime the jitter may move a renewal earlier by.
const JITTER_SHARE: f64 = 0.05;

/// The Unix second at which a certificate valid from `not_before` to `not_after` is due for
/// renewal: `renew_at` (0..1) of the way through its lifetime, less `jitter` (0..1) times a
/// twentieth of the lifetime. Never before `not_before`.
pub fn renewal_time(not_before: i64, not_after: i64, renew_at: f64, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0) as f64;
    let jitter = jitter.clamp(0.0, 1.0);
    let offset = lifetime * renew_at.clamp(0.0, 1.0) - lifetime * JITTER_SHARE * jitter;
    not_before + offset.max(0.0) as i64
}

/// The wait after `failures` failed orders in a row (at least one): `first`, doubled for each
/// further failure, at most [`MAX_BACKOFF`].
pub fn backoff(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    first
        .checked_mul(1u32 << doublings.min(31))
        .map_or(MAX_BACKOFF, |wait| wait.min(MAX_BACKOFF))
}

/// The Unix second at which to renew inside a suggested renewal window (ACME Renewal
/// Information, RFC 9773 §4.2): `jitter` (0..1) of the way from `start` to `end`, so that
/// the certificates the window was given for spread over it; never later than `latest`.
/// A window that has begun is acted on when its pick comes, one that has ended at once.
pub fn renewal_time_in_window(start: i64, end: i64, jitter: f64, latest: i64) -> i64 {
    let span = (end - start).max(0) as f64;
    let pick = start + (span * jitter.clamp(0.0, 1.0)) as i64;
    pick.min(latest)
}

/// The longest wait between two looks at a certificate's renewal information.
pub const MAX_ADVICE_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The wait before the renewal information is asked for again: what the directory's
/// Retry-After said, at least `floor` (the configured retry) and at most a day.
pub fn advice_wait(retry_after: Duration, floor: Duration) -> Duration {
    retry_after.max(floor).min(MAX_ADVICE_WAIT.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_the_fraction_of_the_lifetime_less_the_jitter() {
        // 90 days from day 0: two thirds is day 60.
        let day = 86_400;
        assert_eq!(renewal_time(0, 90 * day, 2.0 / 3.0, 0.0), 60 * day);
        // The largest jitter moves it a twentieth of 90 days (4.5 days) earlier.
        assert_eq!(
            renewal_time(0, 90 * day, 2.0 / 3.0, 1.0),
            60 * day - 9 * day / 2
        );
        assert_eq!(
            renewal_time(1000, 1000 + 90 * day, 0.5, 0.0),
            1000 + 45 * day
        );
    }

    #[test]
    fn renewal_is_never_before_issuance_nor_broken_by_odd_inputs() {
        assert_eq!(renewal_time(100, 100, 0.67, 0.5), 100);
        assert_eq!(renewal_time(100, 50, 0.67, 0.5), 100);
        assert_eq!(renewal_time(0, 1000, 0.01, 1.0), 0);
        assert_eq!(renewal_time(0, 1000, 5.0, -3.0), 1000);
    }

    #[test]
    fn backoff_doubles_up_to_a_day() {
        let first = Duration::from_secs(60);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), Duration::from_secs(120));
        assert_eq!(backoff(first, 4), Duration::from_secs(480));
        assert_eq!(backoff(first, 20), MAX_BACKOFF);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(first, 0), first);
    }

    #[test]
    fn a_suggested_window_is_spread_over_and_bounded() {
        let day = 86_400;
        assert_eq!(
            renewal_time_in_window(10 * day, 12 * day, 0.0, 100 * day),
            10 * day
        );
        assert_eq!(
            renewal_time_in_window(10 * day, 12 * day, 0.5, 100 * day),
            11 * day
        );
        assert_eq!(
            renewal_time_in_window(10 * day, 12 * day, 1.0, 100 * day),
            12 * day
        );
        // Never past the latest moment the certificate allows.
        assert_eq!(
            renewal_time_in_window(10 * day, 12 * day, 1.0, 11 * day),
            11 * day
        );
        // A window whose end comes before its start is its start.
        assert_eq!(
            renewal_time_in_window(10 * day, 9 * day, 0.7, 100 * day),
            10 * day
        );
        assert_eq!(
            renewal_time_in_window(10 * day, 12 * day, 7.0, 100 * day),
            12 * day
        );
    }

    #[test]
    fn the_next_look_follows_retry_after_within_bounds() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            advice_wait(Duration::from_secs(6 * 3600), minute),
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(advice_wait(Duration::ZERO, minute), minute);
        assert_eq!(
            advice_wait(Duration::from_secs(30 * 86_400), minute),
            MAX_ADVICE_WAIT
        );
    }
}
