//! Choosing a route's upstream per request (`[[route.pick_upstream]]`, then `[[route.split]]`),
//! and a route's mirror as compiled. The choice is pure policy over the request head: which
//! side, by index; the caller holds what each side stands for.
//!
//! A sticky split (`split_by`) puts a key value in a bucket `0..total` by a hash with a fixed
//! seed, the same in every process and version, and the buckets are cut into the sides'
//! ranges in the order the sides are written. So a client stays on its side across restarts
//! and reloads; raising the weight of the last side (at the same total) moves clients only
//! onto it, never off it.

use super::Upstream;
use super::balancer::key_hash;
use crate::config::HashKey;
use http::HeaderName;
use prometheus::IntCounter;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Mixed into a key's hash before it is bucketed, so that a split by the same key as an
/// upstream's consistent hashing is independent of it. Part of the bucket function: changing
/// it moves clients between sides.
const SPLIT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Where a `[[route.pick_upstream]]` looks for its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickOn {
    Header(HeaderName),
    Cookie(String),
}

/// One compiled `[[route.pick_upstream]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    pub on: PickOn,
    pub value: Vec<u8>,
    pub side: usize,
}

impl Pick {
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        match &self.on {
            PickOn::Header(name) => headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == self.value.as_slice()),
            PickOn::Cookie(name) => {
                crate::http1::cookie(headers, name) == Some(self.value.as_slice())
            }
        }
    }
}

/// How a route chooses among its sides (indices `0..sides`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chooser {
    picks: Vec<Pick>,
    /// The weighted sides: the end of each one's bucket range (exclusive) and its index.
    ranges: Vec<(u32, usize)>,
    /// The sum of the weights; 0 when there is no split (then `default` is chosen).
    total: u32,
    by: Option<HashKey>,
    /// The side of a request that no pick matches, when there is no split.
    default: usize,
}

impl Chooser {
    /// `weights` are `(side, weight)` in the order written; `default` stands when the split
    /// is empty (a route with picks only).
    pub fn new(
        picks: Vec<Pick>,
        weights: &[(usize, u32)],
        by: Option<HashKey>,
        default: usize,
    ) -> Self {
        let mut total = 0u32;
        let mut ranges = Vec::new();
        for &(side, weight) in weights {
            if weight == 0 {
                continue;
            }
            total = total.saturating_add(weight);
            ranges.push((total, side));
        }
        Self {
            picks,
            ranges,
            total,
            by,
            default,
        }
    }

    /// The side for a request, drawing at random where it must.
    pub fn choose(&self, request: &http::request::Parts, client: IpAddr) -> usize {
        self.choose_with(request, client, fastrand::u32)
    }

    /// The side for a request: the first pick that matches, else the bucket of its sticky key,
    /// else a bucket drawn by `draw` (a uniform draw from the range it is given).
    pub fn choose_with(
        &self,
        request: &http::request::Parts,
        client: IpAddr,
        draw: impl FnOnce(std::ops::Range<u32>) -> u32,
    ) -> usize {
        if let Some(pick) = self.picks.iter().find(|p| p.matches(&request.headers)) {
            return pick.side;
        }
        if self.total == 0 {
            return self.default;
        }
        let bucket = match self
            .by
            .as_ref()
            .and_then(|by| key_hash(by, &request.uri, &request.headers, Some(client)))
        {
            Some(hash) => bucket(hash, self.total),
            None => draw(0..self.total),
        };
        self.side_of_bucket(bucket)
    }

    /// The side whose range holds `bucket` (`0..total`).
    pub fn side_of_bucket(&self, bucket: u32) -> usize {
        let at = self.ranges.partition_point(|&(end, _)| end <= bucket);
        self.ranges
            .get(at)
            .or(self.ranges.last())
            .map_or(self.default, |&(_, side)| side)
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn split_by(&self) -> Option<&HashKey> {
        self.by.as_ref()
    }
}

/// The bucket (`0..total`) of a sticky key's hash (`balancer::key_hash`, itself fixed across
/// processes): mixed with the split's seed, then reduced. `total` must not be 0.
pub fn bucket(key_hash: u64, total: u32) -> u32 {
    let mut x = key_hash ^ SPLIT_SEED;
    // MurmurHash3's 64-bit finalizer.
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    (x % u64::from(total.max(1))) as u32
}

/// A route's split as compiled: how it chooses, what each side is, and the count of each
/// side's requests (`gatehouse_split_requests_total`).
pub struct Split<S> {
    pub chooser: Chooser,
    pub sides: Vec<S>,
    /// The upstream names of the sides, by index.
    pub names: Vec<Arc<str>>,
    /// The weight each side has in the split (0 for one only picked).
    pub weights: Vec<u32>,
    pub counts: Vec<IntCounter>,
}

impl<S> Split<S> {
    /// The side for `request`, counted.
    #[inline]
    pub fn choose(&self, request: &http::request::Parts, client: IpAddr) -> &S {
        let side = self.chooser.choose(request, client);
        if let Some(count) = self.counts.get(side) {
            count.inc();
        }
        &self.sides[side.min(self.sides.len() - 1)]
    }
}

/// On a side of a split with a cache: the side's upstream, which its cache keys hold too,
/// and those of every side (an unsafe request invalidates what all sides stored).
#[derive(Clone, Debug)]
pub struct CacheSide {
    pub upstream: Arc<str>,
    pub all: Arc<[Arc<str>]>,
}

/// A route's `[route.mirror]` as compiled.
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    pub max_body_bytes: u64,
    pub max_in_flight: u32,
    pub percent: u32,
    in_flight: AtomicU32,
    /// `gatehouse_mirror_requests_total` by outcome.
    pub sent: IntCounter,
    pub failed: IntCounter,
    pub dropped: IntCounter,
    pub skipped: IntCounter,
}

impl Mirror {
    pub fn new(
        upstream: Arc<Upstream>,
        max_body_bytes: u64,
        max_in_flight: u32,
        percent: u32,
        counts: [IntCounter; 4],
    ) -> Self {
        let [sent, failed, dropped, skipped] = counts;
        Self {
            upstream,
            max_body_bytes,
            max_in_flight: max_in_flight.max(1),
            percent: percent.min(100),
            in_flight: AtomicU32::new(0),
            sent,
            failed,
            dropped,
            skipped,
        }
    }

    /// Whether this request is among the `percent` mirrored.
    pub fn sampled(&self) -> bool {
        self.percent >= 100 || (self.percent > 0 && fastrand::u32(0..100) < self.percent)
    }

    /// A place among the copies outstanding, or `None` (counted as dropped) when all
    /// `max_in_flight` are taken.
    pub fn try_start(self: &Arc<Self>) -> Option<MirrorSlot> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(MirrorSlot(Arc::clone(self))),
            Err(_) => {
                self.dropped.inc();
                None
            }
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// One copy outstanding; its place is given back when this is dropped.
pub struct MirrorSlot(Arc<Mirror>);

impl MirrorSlot {
    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.0
    }
}

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = Request::get("/orders");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn canary(by: Option<&str>) -> Chooser {
        Chooser::new(
            Vec::new(),
            &[(0, 95), (1, 5)],
            by.map(|by| crate::config::parse_split_by(by).unwrap()),
            0,
        )
    }

    #[test]
    fn buckets_map_onto_the_sides_in_order() {
        let chooser = Chooser::new(Vec::new(), &[(0, 3), (1, 0), (2, 2)], None, 0);
        assert_eq!(chooser.total(), 5);
        let sides: Vec<usize> = (0..5).map(|b| chooser.side_of_bucket(b)).collect();
        assert_eq!(sides, [0, 0, 0, 2, 2]);
        // Random draws are cut by weight: every bucket drawn lands where its range says.
        let request = parts(&[]);
        for b in 0..5 {
            assert_eq!(
                chooser.choose_with(&request, CLIENT, |range| {
                    assert_eq!(range, 0..5);
                    b
                }),
                sides[b as usize]
            );
        }
    }

    #[test]
    fn draws_follow_the_weights() {
        // Every bucket once: exactly the weights.
        let chooser = canary(None);
        let mut counts = [0u32; 2];
        for b in 0..100 {
            counts[chooser.side_of_bucket(b)] += 1;
        }
        assert_eq!(counts, [95, 5]);
        // And the real random draw, within a bound that cannot fail by chance (6 sigma).
        let request = parts(&[]);
        let n = 20_000;
        let canaries = (0..n)
            .filter(|_| chooser.choose(&request, CLIENT) == 1)
            .count() as f64;
        let (mean, sigma) = (n as f64 * 0.05, (n as f64 * 0.05 * 0.95).sqrt());
        assert!((canaries - mean).abs() < 6.0 * sigma, "{canaries} of {n}");
    }

    #[test]
    fn a_sticky_key_keeps_its_side_and_a_missing_one_is_drawn() {
        let chooser = canary(Some("cookie:session"));
        let mut seen = [0u32; 2];
        for user in 0..2000 {
            let cookie = format!("session=user-{user}");
            let request = parts(&[("cookie", &cookie)]);
            let side = chooser.choose_with(&request, CLIENT, |_| unreachable!("keyed"));
            for _ in 0..3 {
                assert_eq!(chooser.choose(&request, CLIENT), side);
            }
            seen[side] += 1;
        }
        // Keys spread by weight too (5% of 2000 = 100, sigma ~ 9.7).
        assert!((40..=160).contains(&seen[1]), "{seen:?}");
        let without = parts(&[("cookie", "other=1")]);
        assert_eq!(chooser.choose_with(&without, CLIENT, |_| 97), 1);
        assert_eq!(chooser.choose_with(&without, CLIENT, |_| 3), 0);
    }

    #[test]
    fn the_bucket_function_is_pinned() {
        // These must never change: they are where users are on every version of gatehouse.
        let hash = |text: &str| crate::upstream::balancer::hash_bytes(text.as_bytes());
        let pinned = [
            ("alice", 100, PINNED[0]),
            ("bob", 100, PINNED[1]),
            ("user-42", 100, PINNED[2]),
            ("192.0.2.1", 20, PINNED[3]),
            ("", 1_000_000, PINNED[4]),
        ];
        for (key, total, expected) in pinned {
            assert_eq!(bucket(hash(key), total), expected, "{key:?} of {total}");
        }
        let chooser = canary(Some("header:x-user"));
        let side = |user: &str| {
            chooser.choose_with(&parts(&[("x-user", user)]), CLIENT, |_| unreachable!())
        };
        assert_eq!(
            ["alice", "bob", "user-23"].map(side),
            PINNED_SIDES,
            "header:x-user at 95/5"
        );
    }

    const PINNED: [u32; 5] = [7, 83, 83, 15, 296_554];
    const PINNED_SIDES: [usize; 3] = [0, 0, 1];

    #[test]
    fn picks_come_first_in_order_and_match_exactly() {
        let picks = vec![
            Pick {
                on: PickOn::Header(HeaderName::from_static("x-canary")),
                value: b"1".to_vec(),
                side: 1,
            },
            Pick {
                on: PickOn::Cookie("canary".into()),
                value: b"yes".to_vec(),
                side: 2,
            },
        ];
        let chooser = Chooser::new(picks, &[(0, 1)], None, 0);
        let draw = |_: std::ops::Range<u32>| 0;
        assert_eq!(
            chooser.choose_with(&parts(&[("x-canary", "1")]), CLIENT, draw),
            1
        );
        assert_eq!(
            chooser.choose_with(
                &parts(&[("x-canary", "1"), ("cookie", "canary=yes")]),
                CLIENT,
                draw
            ),
            1,
            "the first match wins"
        );
        assert_eq!(
            chooser.choose_with(&parts(&[("cookie", "a=b; canary=yes")]), CLIENT, draw),
            2
        );
        for other in [
            &[("x-canary", "10")][..],
            &[("x-canary", "")],
            &[("cookie", "canary=no")],
            &[("cookie", "xcanary=yes")],
        ] {
            assert_eq!(chooser.choose_with(&parts(other), CLIENT, draw), 0);
        }
        // Picks without a split: the default side.
        let only_picks = Chooser::new(
            vec![Pick {
                on: PickOn::Header(HeaderName::from_static("x-canary")),
                value: b"1".to_vec(),
                side: 1,
            }],
            &[],
            None,
            0,
        );
        assert_eq!(only_picks.choose(&parts(&[]), CLIENT), 0);
        assert_eq!(only_picks.choose(&parts(&[("x-canary", "1")]), CLIENT), 1);
    }

    #[test]
    fn client_ip_sticks_ipv4_over_either_stack() {
        let chooser = canary(Some("client_ip"));
        let request = parts(&[]);
        for last in 0..=255u8 {
            let v4 = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last));
            let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, last).to_ipv6_mapped());
            let no_draw = |_: std::ops::Range<u32>| unreachable!();
            assert_eq!(
                chooser.choose_with(&request, v4, no_draw),
                chooser.choose_with(&request, mapped, no_draw)
            );
        }
    }

    proptest::proptest! {
        /// Whatever a client sends in the fields a split reads, a side in range is chosen and
        /// nothing panics.
        #[test]
        fn any_request_gets_a_side(
            user in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            cookie in proptest::collection::vec(proptest::num::u8::ANY, 0..60),
            draw in proptest::num::u32::ANY,
        ) {
            let picks = vec![
                Pick { on: PickOn::Header(HeaderName::from_static("x-user")), value: b"1".to_vec(), side: 2 },
                Pick { on: PickOn::Cookie("canary".into()), value: b"yes".to_vec(), side: 1 },
            ];
            let mut headers = http::HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_bytes(&user) {
                headers.insert("x-user", value);
            }
            if let Ok(value) = http::HeaderValue::from_bytes(&cookie) {
                headers.insert("cookie", value);
            }
            let mut request = parts(&[]);
            request.headers = headers;
            for by in ["header:x-user", "cookie:session", "client_ip"] {
                let chooser = Chooser::new(
                    picks.clone(),
                    &[(0, 7), (1, 0), (2, 3)],
                    Some(crate::config::parse_split_by(by).unwrap()),
                    0,
                );
                let side = chooser.choose_with(&request, CLIENT, |range| draw % range.end);
                proptest::prop_assert!(side < 3);
            }
        }
    }
}
