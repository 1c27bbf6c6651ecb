//! How long a stored response stays fresh and how old it is (RFC 9111 §4.2), and what a request
//! may do with it now: use it, serve it stale while revalidating (RFC 5861), or revalidate first.

use super::directives::{
    Directives, PolicyConfig, delta_seconds, header_date, http_date, list_members,
    selected_directives,
};
use http::HeaderMap;
use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES};
use std::time::{Duration, SystemTime};

/// When and how a stored response was received (RFC 9111 §4.2.3 inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub request_time: SystemTime,
    pub response_time: SystemTime,
}

/// Freshness facts fixed when a response is stored (or refreshed by a 304).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// §4.2.1: s-maxage, else max-age, else Expires − Date, else config.default_ttl (heuristic); zero when no-cache.
    pub lifetime: Duration,
    /// §4.2.3 corrected_initial_age (apparent age vs Age header + response delay; the upstream's Age is added, never ignored).
    pub initial_age: Duration,
    pub response_time: SystemTime,
    /// From the response's stale-while-revalidate / stale-if-error (RFC 5861), else the config defaults.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// must-revalidate or proxy-revalidate or s-maxage (§5.2.2.10): never served stale, not even with stale-if-error/while-revalidate.
    pub must_revalidate: bool,
    /// no-cache (response): stored but revalidated before every use.
    pub no_cache: bool,
}

/// The freshness facts of a response received now (or of a stored response whose headers a
/// 304 has just refreshed: pass the refreshed headers and the revalidation's times).
pub fn freshness(
    response_headers: &HeaderMap,
    received: Received,
    config: &PolicyConfig,
) -> Freshness {
    let (directives, targeted) = selected_directives(response_headers, config);
    // RFC 9110 §6.6.1: a response without a (valid) Date is dated when it was received.
    let date = header_date(response_headers, &DATE).unwrap_or(received.response_time);
    let seconds = Duration::from_secs;

    let lifetime = if directives.no_cache {
        Duration::ZERO
    } else if let Some(s_maxage) = directives.s_maxage {
        seconds(s_maxage)
    } else if let Some(max_age) = directives.max_age {
        seconds(max_age)
    } else if let Some(expires) = response_headers.get(EXPIRES).filter(|_| !targeted) {
        // §5.3: an invalid Expires (such as "0") is a time in the past; Expires before Date
        // is likewise already stale.
        http_date(expires)
            .and_then(|expires| expires.duration_since(date).ok())
            .unwrap_or(Duration::ZERO)
    } else {
        config.default_ttl
    };

    // §4.2.3. A clock running backwards makes a difference zero, never negative.
    let apparent_age = received
        .response_time
        .duration_since(date)
        .unwrap_or(Duration::ZERO);
    let response_delay = received
        .response_time
        .duration_since(received.request_time)
        .unwrap_or(Duration::ZERO);
    // §5.1: of a list-valued Age use the first member; an invalid one is ignored.
    let age_value = response_headers
        .get(AGE)
        .and_then(|age| list_members(age.as_bytes()).next())
        .and_then(delta_seconds)
        .map_or(Duration::ZERO, seconds);
    let corrected_age_value = age_value.saturating_add(response_delay);
    let initial_age = apparent_age.max(corrected_age_value);

    Freshness {
        lifetime,
        initial_age,
        response_time: received.response_time,
        stale_while_revalidate: directives
            .stale_while_revalidate
            .map_or(config.stale_while_revalidate, seconds),
        stale_if_error: directives
            .stale_if_error
            .map_or(config.stale_if_error, seconds),
        must_revalidate: directives.must_revalidate
            || directives.proxy_revalidate
            || directives.s_maxage.is_some(),
        no_cache: directives.no_cache,
    }
}

impl Freshness {
    /// §4.2.3 current_age = initial_age + (now − response_time).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let resident_time = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.initial_age.saturating_add(resident_time)
    }

    /// Remaining freshness at `now` (zero if stale) — for Cache-Status `ttl=`.
    pub fn ttl(&self, now: SystemTime) -> Duration {
        self.lifetime.saturating_sub(self.current_age(now))
    }

    /// §4.2: fresh while the lifetime exceeds the age.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.lifetime > self.current_age(now)
    }

    /// How far past its lifetime the response is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.current_age(now).saturating_sub(self.lifetime)
    }
}

/// What a cache may do with a stored response for this request, now (RFC 9111 §4, §4.2.4, RFC 5861).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usability {
    Fresh,
    /// Stale but within stale-while-revalidate: serve it and revalidate in the background.
    /// Also given when the request's max-stale accepts the staleness: the client is served what
    /// it agreed to, and the refresh spares the next one.
    StaleWhileRevalidate,
    /// Must be revalidated (stale, no-cache, or the request's no-cache / max-age=0 / min-fresh).
    Revalidate,
}

/// Takes the request's directives into account: request no-cache or max-age=N (age > N) or min-fresh → Revalidate; max-stale allows serving stale (unless must_revalidate). Pragma: no-cache and unknown request directives do NOT bypass (treat Pragma as ignored when Cache-Control is present; document).
///
/// Pragma is ignored whether or not Cache-Control is present: RFC 9111 §5.4 deprecates it, and
/// honouring `Pragma: no-cache` would let any client force a trip to the origin through a
/// header nothing modern sends on purpose. Request `no-store` does not affect reuse
/// (§5.2.1.5 is about storing), and `only-if-cached` is the caller's to act on when nothing is
/// stored. Stale responses are never served when the response said no-cache, must-revalidate,
/// proxy-revalidate or s-maxage (§4.2.4).
pub fn usability(freshness: &Freshness, request_headers: &HeaderMap, now: SystemTime) -> Usability {
    let request = Directives::parse(request_headers.get_all(CACHE_CONTROL));
    if freshness.no_cache || request.no_cache {
        return Usability::Revalidate;
    }
    let age = freshness.current_age(now);
    // §5.2.1.1: max-age bounds the age itself; no max-stale can extend it.
    if request
        .max_age
        .is_some_and(|max_age| age > Duration::from_secs(max_age))
    {
        return Usability::Revalidate;
    }
    // §5.2.1.3: the response must stay fresh for at least min-fresh more seconds.
    if request
        .min_fresh
        .is_some_and(|min_fresh| freshness.ttl(now) < Duration::from_secs(min_fresh))
    {
        return Usability::Revalidate;
    }
    if freshness.lifetime > age {
        return Usability::Fresh;
    }
    if freshness.must_revalidate {
        return Usability::Revalidate;
    }
    let staleness = age - freshness.lifetime;
    // §5.2.1.2: max-stale without a value accepts any staleness.
    let accepted_by_client = match request.max_stale {
        Some(None) => true,
        Some(Some(max_stale)) => staleness <= Duration::from_secs(max_stale),
        None => false,
    };
    // RFC 5861 §3: "up to the indicated number of seconds" — a zero window allows nothing.
    if accepted_by_client || staleness < freshness.stale_while_revalidate {
        Usability::StaleWhileRevalidate
    } else {
        Usability::Revalidate
    }
}

/// May a stale stored response be served because the origin failed (stale-if-error window, not must_revalidate)?
///
/// A still-fresh response is usable too (serving it is not serving stale), unless it is
/// no-cache: that demands a successful validation before any use (§5.2.2.4), and §4.2.4 counts
/// no-cache among the directives that forbid stale responses.
pub fn usable_on_error(freshness: &Freshness, now: SystemTime) -> bool {
    if freshness.no_cache {
        return false;
    }
    if freshness.is_fresh(now) {
        return true;
    }
    !freshness.must_revalidate && freshness.staleness(now) < freshness.stale_if_error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::directives::fixtures::{MAX_AGE, T, at, config, date, headers, secs};
    use crate::cache::policy::storability::{NotStored, storability};
    use http::{Method, StatusCode};

    fn received_at(seconds: u64) -> Received {
        Received {
            request_time: at(seconds),
            response_time: at(seconds),
        }
    }

    /// A stored response with the given lifetime, received at T, with no initial age.
    fn stored_for(lifetime: u64) -> Freshness {
        Freshness {
            lifetime: secs(lifetime),
            initial_age: Duration::ZERO,
            response_time: at(T),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            no_cache: false,
        }
    }

    #[test]
    fn a_targeted_field_silences_expires() {
        let response = headers(&[
            ("date", &date(T)),
            ("expires", &date(T + 3600)),
            ("cdn-cache-control", "public"),
        ]);
        assert_eq!(
            freshness(&response, received_at(T), &config()).lifetime,
            Duration::ZERO
        );
        assert_eq!(
            storability(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::OK,
                &response,
                &config()
            ),
            Err(NotStored::NoFreshness)
        );
        let heuristic = PolicyConfig {
            default_ttl: secs(30),
            ..config()
        };
        assert_eq!(
            freshness(&response, received_at(T), &heuristic).lifetime,
            secs(30)
        );
    }

    // ---- Freshness ----

    fn lifetime(response: &[(&str, &str)]) -> Duration {
        freshness(&headers(response), received_at(T), &config()).lifetime
    }

    #[test]
    fn lifetime_precedence_is_s_maxage_max_age_expires_default() {
        let expires = ("expires", &*date(T + 300));
        let at_t = ("date", &*date(T));
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60, s-maxage=120"), expires, at_t]),
            secs(120)
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=60"), expires, at_t]),
            secs(60)
        );
        assert_eq!(lifetime(&[expires, at_t]), secs(300));
        let heuristic = PolicyConfig {
            default_ttl: secs(42),
            ..config()
        };
        assert_eq!(
            freshness(&headers(&[at_t]), received_at(T), &heuristic).lifetime,
            secs(42)
        );
        assert_eq!(lifetime(&[at_t]), Duration::ZERO);
    }

    #[test]
    fn expires_is_measured_from_date_or_else_the_response_time() {
        // Date 100 s behind our clock: Expires − Date, not Expires − now.
        assert_eq!(
            lifetime(&[("date", &date(T - 100)), ("expires", &date(T))]),
            secs(100)
        );
        assert_eq!(lifetime(&[("expires", &date(T + 30))]), secs(30));
        assert_eq!(
            lifetime(&[("date", "garbage"), ("expires", &date(T + 30))]),
            secs(30)
        );
    }

    #[test]
    fn expires_and_date_in_obsolete_formats_and_any_case() {
        // T is Tue, 14 Nov 2023 22:13:20 GMT.
        let dated = ("date", "tuesday, 14-nov-23 22:13:20 utc");
        assert_eq!(
            lifetime(&[dated, ("expires", "Tue Nov 14 22:14:20 2023")]),
            secs(60)
        );
        assert_eq!(
            lifetime(&[dated, ("expires", "TUE, 14 NOV 2023 22:15:20 UTC")]),
            secs(120)
        );
    }

    #[test]
    fn past_or_invalid_expires_means_already_stale() {
        assert_eq!(
            lifetime(&[("date", &date(T)), ("expires", &date(T - 10))]),
            Duration::ZERO
        );
        assert_eq!(lifetime(&[("expires", "0")]), Duration::ZERO);
        let heuristic = PolicyConfig {
            default_ttl: secs(42),
            ..config()
        };
        assert_eq!(
            freshness(&headers(&[("expires", "-1")]), received_at(T), &heuristic).lifetime,
            Duration::ZERO
        );
    }

    #[test]
    fn no_cache_has_no_lifetime() {
        let fresh = freshness(
            &headers(&[("cache-control", "no-cache, max-age=600")]),
            received_at(T),
            &config(),
        );
        assert_eq!(fresh.lifetime, Duration::ZERO);
        assert!(fresh.no_cache);
    }

    fn initial_age(response: &[(&str, &str)], request_time: u64, response_time: u64) -> Duration {
        let received = Received {
            request_time: at(request_time),
            response_time: at(response_time),
        };
        freshness(&headers(response), received, &config()).initial_age
    }

    #[test]
    fn initial_age_is_the_larger_of_apparent_and_corrected_age() {
        // Apparent age: the response was dated 10 s before it arrived.
        assert_eq!(initial_age(&[("date", &date(T - 10))], T, T), secs(10));
        // The upstream's Age plus the time the request took.
        assert_eq!(
            initial_age(&[("date", &date(T)), ("age", "100")], T - 2, T),
            secs(102)
        );
        // Apparent age wins when larger.
        assert_eq!(
            initial_age(&[("date", &date(T - 50)), ("age", "5")], T - 1, T),
            secs(50)
        );
        // No Date and no Age: just the response delay.
        assert_eq!(initial_age(&[], T - 3, T), secs(3));
    }

    #[test]
    fn odd_age_and_date_values_are_handled_safely() {
        // A list-valued Age: the first member is used (§5.1).
        assert_eq!(initial_age(&[("age", "5, 9")], T, T), secs(5));
        // Invalid Age is ignored.
        assert_eq!(initial_age(&[("age", "-3")], T, T), Duration::ZERO);
        assert_eq!(initial_age(&[("age", "soon")], T, T), Duration::ZERO);
        // A Date in the future (clock skew) gives no negative age.
        assert_eq!(
            initial_age(&[("date", &date(T + 60))], T, T),
            Duration::ZERO
        );
        // A response "received" before it was requested gives no negative delay.
        assert_eq!(initial_age(&[], T + 5, T), Duration::ZERO);
        // A huge Age is clamped, not overflowed.
        assert_eq!(
            initial_age(&[("age", "999999999999999999999")], T, T),
            secs(1 << 31)
        );
    }

    #[test]
    fn current_age_and_ttl_advance_with_the_clock() {
        let stored = Freshness {
            initial_age: secs(10),
            ..stored_for(60)
        };
        assert_eq!(stored.current_age(at(T)), secs(10));
        assert_eq!(stored.current_age(at(T + 20)), secs(30));
        assert_eq!(stored.ttl(at(T + 20)), secs(30));
        assert_eq!(stored.ttl(at(T + 50)), Duration::ZERO);
        assert_eq!(stored.ttl(at(T + 500)), Duration::ZERO);
        // A clock stepping backwards does not make it younger than it arrived.
        assert_eq!(stored.current_age(at(T - 100)), secs(10));
        assert!(stored.is_fresh(at(T + 49)) && !stored.is_fresh(at(T + 50)));
        assert_eq!(stored.staleness(at(T + 80)), secs(30));
    }

    #[test]
    fn stale_windows_come_from_the_response_else_the_config() {
        let defaults = PolicyConfig {
            stale_while_revalidate: secs(7),
            stale_if_error: secs(8),
            ..config()
        };
        let from_config = freshness(&headers(&[MAX_AGE]), received_at(T), &defaults);
        assert_eq!(
            (
                from_config.stale_while_revalidate,
                from_config.stale_if_error
            ),
            (secs(7), secs(8))
        );
        let from_response = freshness(
            &headers(&[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=0",
            )]),
            received_at(T),
            &defaults,
        );
        assert_eq!(
            (
                from_response.stale_while_revalidate,
                from_response.stale_if_error
            ),
            (secs(30), Duration::ZERO)
        );
    }

    #[test]
    fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale() {
        let must = |value: &str| {
            freshness(
                &headers(&[("cache-control", value)]),
                received_at(T),
                &config(),
            )
            .must_revalidate
        };
        assert!(must("max-age=5, must-revalidate"));
        assert!(must("max-age=5, proxy-revalidate"));
        assert!(must("s-maxage=5"));
        assert!(!must("max-age=5, public"));
    }

    #[test]
    fn freshness_records_the_response_time() {
        let received = Received {
            request_time: at(T - 1),
            response_time: at(T),
        };
        assert_eq!(
            freshness(&headers(&[MAX_AGE]), received, &config()).response_time,
            at(T)
        );
    }

    // ---- Usability ----

    fn usable(stored: &Freshness, request: &[(&str, &str)], now: u64) -> Usability {
        usability(stored, &headers(request), at(now))
    }

    #[test]
    fn fresh_then_stale() {
        let stored = stored_for(60);
        assert_eq!(usable(&stored, &[], T + 59), Usability::Fresh);
        assert_eq!(usable(&stored, &[], T + 60), Usability::Revalidate);
    }

    #[test]
    fn stale_while_revalidate_window() {
        let stored = Freshness {
            stale_while_revalidate: secs(30),
            ..stored_for(60)
        };
        assert_eq!(
            usable(&stored, &[], T + 60),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(
            usable(&stored, &[], T + 89),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(usable(&stored, &[], T + 90), Usability::Revalidate);
        let strict = Freshness {
            must_revalidate: true,
            ..stored
        };
        assert_eq!(usable(&strict, &[], T + 61), Usability::Revalidate);
    }

    #[test]
    fn a_no_cache_response_is_always_revalidated() {
        let stored = Freshness {
            no_cache: true,
            stale_while_revalidate: secs(100),
            ..stored_for(60)
        };
        assert_eq!(usable(&stored, &[], T), Usability::Revalidate);
        assert_eq!(
            usable(&stored, &[("cache-control", "max-stale")], T + 70),
            Usability::Revalidate
        );
    }

    #[test]
    fn request_no_cache_and_max_age_force_revalidation() {
        let stored = stored_for(60);
        assert_eq!(
            usable(&stored, &[("cache-control", "no-cache")], T + 1),
            Usability::Revalidate
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "max-age=0")], T + 1),
            Usability::Revalidate
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "max-age=10")], T + 10),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "max-age=10")], T + 11),
            Usability::Revalidate
        );
        // max-stale cannot extend a max-age bound.
        assert_eq!(
            usable(
                &stored,
                &[("cache-control", "max-age=100, max-stale")],
                T + 101
            ),
            Usability::Revalidate
        );
    }

    #[test]
    fn request_min_fresh_wants_remaining_freshness() {
        let stored = stored_for(60);
        assert_eq!(
            usable(&stored, &[("cache-control", "min-fresh=20")], T + 30),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "min-fresh=30")], T + 30),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "min-fresh=31")], T + 30),
            Usability::Revalidate
        );
    }

    #[test]
    fn request_max_stale_accepts_stale_responses() {
        let stored = stored_for(60);
        let with = |directive: &str, now| usable(&stored, &[("cache-control", directive)], now);
        assert_eq!(
            with("max-stale=20", T + 70),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(
            with("max-stale=20", T + 80),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(with("max-stale=20", T + 81), Usability::Revalidate);
        assert_eq!(
            with("max-stale", T + 100_000),
            Usability::StaleWhileRevalidate
        );
        assert_eq!(with("max-stale", T + 10), Usability::Fresh);
        let strict = Freshness {
            must_revalidate: true,
            ..stored
        };
        assert_eq!(
            usable(&strict, &[("cache-control", "max-stale")], T + 61),
            Usability::Revalidate
        );
    }

    #[test]
    fn pragma_and_unknown_request_directives_do_not_force_revalidation() {
        let stored = stored_for(60);
        assert_eq!(
            usable(&stored, &[("pragma", "no-cache")], T + 1),
            Usability::Fresh
        );
        assert_eq!(
            usable(
                &stored,
                &[("pragma", "no-cache"), ("cache-control", "max-stale")],
                T + 1
            ),
            Usability::Fresh
        );
        assert_eq!(
            usable(&stored, &[("cache-control", "no-transform, x-bust")], T + 1),
            Usability::Fresh
        );
    }

    #[test]
    fn usable_on_error_within_stale_if_error() {
        let stored = Freshness {
            stale_if_error: secs(100),
            ..stored_for(60)
        };
        assert!(
            usable_on_error(&stored, at(T + 10)),
            "fresh is always usable"
        );
        assert!(usable_on_error(&stored, at(T + 159)));
        assert!(!usable_on_error(&stored, at(T + 160)));
        let strict = Freshness {
            must_revalidate: true,
            ..stored
        };
        assert!(usable_on_error(&strict, at(T + 10)));
        assert!(!usable_on_error(&strict, at(T + 61)));
        let no_cache = Freshness {
            no_cache: true,
            ..stored
        };
        assert!(!usable_on_error(&no_cache, at(T + 10)));
        assert!(
            !usable_on_error(&stored_for(60), at(T + 60)),
            "no window, no stale"
        );
    }
}
