//! Consistent hashing on a Ketama ring (nginx's `hash $key consistent`), optionally with
//! bounded loads (Mirrokni et al.; HAProxy's `hash-balance-factor`).
//!
//! Each server owns `POINTS_PER_WEIGHT` points per unit of weight on a 64-bit ring, placed by
//! hashing its address, so a server's points do not depend on which other servers there are:
//! when one joins or leaves, only the keys between its points and their predecessors move,
//! about 1/N of them. A key goes to the owner of the first point at or after its hash; when
//! that server cannot take it (down, breaker open, full, already tried by this request, or
//! at its load cap), the walk goes on to the next distinct server on the ring, so a down
//! server's keys spread over the owners of the points after its own and come back with it.
//!
//! The ring is built when the snapshot is compiled; a pick is a binary search and a short
//! walk, with no allocation. Ketama was chosen over Maglev by measurement (`benches/README.md`).

use super::{ServerLoads, Tried};

/// Points per unit of weight, as nginx's ketama (`ngx_http_upstream_hash`) places them.
pub const POINTS_PER_WEIGHT: u64 = 160;

/// Past this many points in all, weights are scaled down to fit: a ring of 64 servers of
/// weight 10000 would otherwise hold 100 million points. 160 Ki points is 1.4 MiB, and a
/// binary search over them 18 steps.
const MAX_POINTS: u64 = 160 * 1024;

/// Where on the ring a pick landed, relative to the key's own server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The owner of the key's point: the server the key lives on.
    Home,
    /// A later server on the ring: the ones before it were down, breaker-open, full or
    /// already tried by this request.
    Next,
    /// A later server on the ring, past at least one at its bounded-load cap.
    OverCap,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Next => "next",
            Self::OverCap => "over_cap",
        }
    }
}

/// A Ketama ring over one upstream's servers, by index.
pub struct HashRing {
    /// Ring positions in ascending order.
    points: Vec<u64>,
    /// The server (index) that owns each point. Servers are at most 64, so a byte each keeps
    /// the walk within fewer cache lines.
    owners: Vec<u8>,
    servers: usize,
    /// 0 = unbounded; else a server may hold at most this factor of the mean load.
    balance_factor: f64,
}

impl HashRing {
    /// A ring over `servers` (address, weight), in the upstream's server order. An address is
    /// its identity on the ring: the same address keeps its points across reloads.
    pub fn new(servers: &[(&str, u32)], balance_factor: f64) -> Self {
        let servers = &servers[..servers.len().min(64)];
        let units = weight_units(servers);
        let mut placed: Vec<(u64, u8)> = Vec::with_capacity(units.iter().sum::<u64>() as usize);
        for (index, ((addr, _), units)) in servers.iter().zip(&units).enumerate() {
            let base = hash_bytes(addr.as_bytes());
            for n in 0..units * POINTS_PER_WEIGHT {
                placed.push((point(base, n), index as u8));
            }
        }
        // Ties (two servers on one point, odds about 2^-45 per pair) go to the lower index.
        placed.sort_unstable();
        Self {
            points: placed.iter().map(|&(point, _)| point).collect(),
            owners: placed.iter().map(|&(_, owner)| owner).collect(),
            servers: servers.len(),
            balance_factor,
        }
    }

    /// The points server `index` owns.
    #[cfg(test)]
    fn points_of(&self, index: usize) -> usize {
        self.owners
            .iter()
            .filter(|&&owner| usize::from(owner) == index)
            .count()
    }

    /// The server for a request whose key hashed to `key`: its home server, or the next
    /// distinct one on the ring that is `eligible`, not `tried`, and (with a balance factor)
    /// under its cap of ceil(factor · (in-flight of eligible servers + 1) / eligible servers).
    /// When every candidate is at its cap, the first candidate past the key: the cap bounds
    /// spread, it never refuses a request. `None` when no server is eligible and untried.
    pub fn pick(
        &self,
        key: u64,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<(usize, Placement)> {
        if self.points.is_empty() {
            return None;
        }
        let cap = self.load_cap(servers, eligible);
        let start = self.points.partition_point(|&point| point < key);
        let mut seen = Tried::default();
        let mut passed_other = false;
        let mut first_at_cap: Option<usize> = None;
        // Walk at most once around; stop as soon as every server was seen.
        for position in (start..self.points.len()).chain(0..start) {
            let index = usize::from(self.owners[position]);
            if seen.contains(index) {
                continue;
            }
            seen.insert(index);
            if tried.contains(index) || !eligible(index) {
                passed_other = true;
            } else if servers.in_flight(index) >= cap {
                first_at_cap.get_or_insert(index);
            } else {
                let placement = match (first_at_cap, passed_other) {
                    (Some(_), _) => Placement::OverCap,
                    (None, true) => Placement::Next,
                    (None, false) => Placement::Home,
                };
                return Some((index, placement));
            }
            if seen.count() as usize == self.servers {
                break;
            }
        }
        first_at_cap.map(|index| (index, Placement::OverCap))
    }

    /// Requests in flight a server may hold before the walk passes it; `u32::MAX` when loads
    /// are unbounded. The `+ 1` counts the request being placed, so an idle upstream has a
    /// cap of at least 1 and the key's own server takes it.
    fn load_cap(&self, servers: &dyn ServerLoads, eligible: &dyn Fn(usize) -> bool) -> u32 {
        if self.balance_factor <= 0.0 {
            return u32::MAX;
        }
        let (mut total, mut count) = (0u64, 0u64);
        for index in 0..self.servers.min(servers.len()) {
            if eligible(index) {
                total += u64::from(servers.in_flight(index));
                count += 1;
            }
        }
        if count == 0 {
            return u32::MAX;
        }
        let cap = (self.balance_factor * (total + 1) as f64 / count as f64).ceil();
        cap.min(f64::from(u32::MAX)) as u32
    }
}

/// Each server's weight in ring units: divided by the weights' greatest common divisor (1,2
/// places as many points as 10,20), then scaled down if the ring would exceed `MAX_POINTS`.
fn weight_units(servers: &[(&str, u32)]) -> Vec<u64> {
    let divisor = servers
        .iter()
        .map(|&(_, weight)| u64::from(weight.max(1)))
        .fold(0, gcd)
        .max(1);
    let units: Vec<u64> = servers
        .iter()
        .map(|&(_, weight)| u64::from(weight.max(1)) / divisor)
        .collect();
    let total: u64 = units.iter().sum::<u64>() * POINTS_PER_WEIGHT;
    if total <= MAX_POINTS {
        return units;
    }
    units
        .iter()
        .map(|&u| (u * MAX_POINTS / total).max(1))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The `n`th point of a server whose address hashed to `base`: splitmix64's step and mix, so
/// the points are spread evenly and independently of each other.
fn point(base: u64, n: u64) -> u64 {
    mix(base.wrapping_add((n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// A 64-bit hash of a key or an address that is the same in every process and on every
/// machine (unlike std's seeded hashers): gatehouse instances side by side, and one before and
/// after a restart, send a key to the same server. Eight bytes at a time (FxHash's step), then
/// a full avalanche (MurmurHash3's finalizer), so that keys differing in one byte land far
/// apart on the ring. Not built to resist chosen keys: a client sending many keys to one
/// server could as well send one key many times, which bounded loads is there for.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    mix(hash)
}

/// MurmurHash3's 64-bit finalizer: every input bit flips each output bit with odds near 1/2.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balancer::testing::FakeServer;

    const KEYS: u64 = 10_000;

    fn addrs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 200, i % 200 + 1))
            .collect()
    }

    fn ring(addrs: &[String], weights: &[u32], factor: f64) -> HashRing {
        let servers: Vec<(&str, u32)> = addrs
            .iter()
            .zip(weights)
            .map(|(addr, &weight)| (addr.as_str(), weight))
            .collect();
        HashRing::new(&servers, factor)
    }

    fn idle(n: usize) -> Vec<FakeServer> {
        vec![
            FakeServer {
                weight: 1,
                ..Default::default()
            };
            n
        ]
    }

    fn key(n: u64) -> u64 {
        hash_bytes(format!("user-{n}").as_bytes())
    }

    /// The address each of `KEYS` keys goes to, all servers up and idle.
    fn homes(addrs: &[String], ring: &HashRing) -> Vec<String> {
        let loads = idle(addrs.len());
        (0..KEYS)
            .map(|n| {
                let (index, placement) = ring
                    .pick(key(n), &loads, Tried::default(), &|_| true)
                    .unwrap();
                assert_eq!(placement, Placement::Home);
                addrs[index].clone()
            })
            .collect()
    }

    fn moved_share(before: &[String], after: &[String]) -> f64 {
        let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
        moved as f64 / before.len() as f64
    }

    #[test]
    fn a_joining_server_takes_about_one_nth_of_the_keys_and_only_from_others() {
        for n in [3, 5, 10] {
            let all = addrs(n + 1);
            let before = homes(&all[..n], &ring(&all[..n], &vec![1; n], 0.0));
            let after = homes(&all, &ring(&all, &vec![1; n + 1], 0.0));
            let share = moved_share(&before, &after);
            let expected = 1.0 / (n + 1) as f64;
            assert!(
                (0.5 * expected..=1.6 * expected).contains(&share),
                "{n} -> {}: {share:.3} of the keys moved, expected about {expected:.3}",
                n + 1
            );
            // Every key that moved went to the new server, none between old ones.
            for (old, new) in before.iter().zip(&after) {
                assert!(old == new || *new == all[n], "{old} -> {new}");
            }
        }
    }

    #[test]
    fn a_leaving_server_gives_away_only_its_own_keys() {
        for n in [4, 6, 11] {
            let all = addrs(n);
            let before = homes(&all, &ring(&all, &vec![1; n], 0.0));
            // The server in the middle of the list leaves: indices shift, addresses do not.
            let gone = &all[n / 2];
            let rest: Vec<String> = all.iter().filter(|a| *a != gone).cloned().collect();
            let after = homes(&rest, &ring(&rest, &vec![1; n - 1], 0.0));
            let share = moved_share(&before, &after);
            let expected = 1.0 / n as f64;
            assert!(
                (0.5 * expected..=1.6 * expected).contains(&share),
                "{n} -> {}: {share:.3} of the keys moved, expected about {expected:.3}",
                n - 1
            );
            for (old, new) in before.iter().zip(&after) {
                assert!(old == new || old == gone, "{old} -> {new}");
            }
        }
    }

    #[test]
    fn the_mapping_depends_on_addresses_not_on_their_order() {
        let all = addrs(5);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            homes(&all, &ring(&all, &[1; 5], 0.0)),
            homes(&reversed, &ring(&reversed, &[1; 5], 0.0))
        );
    }

    #[test]
    fn keys_spread_in_proportion_to_weights() {
        let all = addrs(4);
        let weights = [1, 2, 1, 4];
        let ring = ring(&all, &weights, 0.0);
        assert_eq!(
            (0..4).map(|i| ring.points_of(i)).collect::<Vec<_>>(),
            [160, 320, 160, 640]
        );
        let homes = homes(&all, &ring);
        let total_weight: u32 = weights.iter().sum();
        for (addr, weight) in all.iter().zip(weights) {
            let share = homes.iter().filter(|h| *h == addr).count() as f64 / KEYS as f64;
            let expected = f64::from(weight) / f64::from(total_weight);
            assert!(
                (0.8 * expected..=1.2 * expected).contains(&share),
                "{addr} (weight {weight}) got {share:.3}, expected about {expected:.3}"
            );
        }
    }

    #[test]
    fn large_weights_are_reduced_and_scaled_to_a_bounded_ring() {
        let all = addrs(3);
        let ring_ = ring(&all, &[20, 40, 20], 0.0);
        assert_eq!(ring_.points_of(1), 320, "divided by the common divisor 20");
        let huge = ring(&addrs(64), &[10_000; 64], 0.0);
        assert_eq!(huge.points.len(), 64 * 160, "equal weights reduce to 1");
        let uneven: Vec<u32> = (0..64).map(|i| 10_000 - i).collect();
        let bounded = ring(&addrs(64), &uneven, 0.0);
        assert!(bounded.points.len() as u64 <= MAX_POINTS);
        assert!(bounded.points_of(0) >= bounded.points_of(63));
    }

    #[test]
    fn a_down_servers_keys_go_to_the_next_servers_and_come_back() {
        let all = addrs(4);
        let ring = ring(&all, &[1; 4], 0.0);
        let loads = idle(4);
        let down = 2;
        let mut spread = [0usize; 4];
        let mut owned = 0;
        for n in 0..KEYS {
            let (home, _) = ring
                .pick(key(n), &loads, Tried::default(), &|_| true)
                .unwrap();
            let (now, placement) = ring
                .pick(key(n), &loads, Tried::default(), &|i| i != down)
                .unwrap();
            if home == down {
                owned += 1;
                assert_ne!(now, down);
                assert_eq!(placement, Placement::Next);
                spread[now] += 1;
            } else {
                assert_eq!((now, placement), (home, Placement::Home), "key {n} moved");
            }
            // Up again: the same ring, so the key is home again.
            assert_eq!(
                ring.pick(key(n), &loads, Tried::default(), &|_| true),
                Some((home, Placement::Home))
            );
        }
        // Its keys are shared among the others (its points' successors), not dumped on one.
        for (index, &got) in spread.iter().enumerate() {
            if index != down {
                assert!(
                    got * 10 > owned,
                    "server {index} took {got} of {owned}: {spread:?}"
                );
            }
        }
    }

    #[test]
    fn retries_walk_to_the_next_distinct_server() {
        let all = addrs(3);
        let ring = ring(&all, &[1; 3], 0.0);
        let loads = idle(3);
        for n in 0..100 {
            let mut tried = Tried::default();
            let mut order = Vec::new();
            while let Some((index, _)) = ring.pick(key(n), &loads, tried, &|_| true) {
                tried.insert(index);
                order.push(index);
            }
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2], "key {n}: every server once, then none");
        }
        assert_eq!(
            ring.pick(key(0), &loads, Tried::default(), &|_| false),
            None
        );
    }

    #[test]
    fn the_walk_wraps_around_the_end_of_the_ring() {
        let all = addrs(3);
        let ring = ring(&all, &[1; 3], 0.0);
        let loads = idle(3);
        let last = usize::from(*ring.owners.last().unwrap());
        let first = usize::from(ring.owners[0]);
        assert_eq!(
            ring.pick(u64::MAX, &loads, Tried::default(), &|_| true),
            Some((first, Placement::Home))
        );
        assert_eq!(
            ring.pick(
                *ring.points.last().unwrap(),
                &loads,
                Tried::default(),
                &|_| true
            ),
            Some((last, Placement::Home))
        );
    }

    #[test]
    fn bounded_loads_keep_every_server_under_its_cap() {
        // Requests arrive and stay in flight, all with the same (hot) key: without a bound
        // they would all land on one server.
        let all = addrs(4);
        let factor = 1.25;
        let ring = ring(&all, &[1; 4], factor);
        let mut loads = idle(4);
        let hot = key(7);
        let (home, _) = ring.pick(hot, &loads, Tried::default(), &|_| true).unwrap();
        for placed in 0..200u32 {
            let (index, placement) = ring.pick(hot, &loads, Tried::default(), &|_| true).unwrap();
            let cap = (factor * f64::from(placed + 1) / 4.0).ceil() as u32;
            assert!(
                loads[index].in_flight < cap,
                "request {placed}: {index} at {} of cap {cap}",
                loads[index].in_flight
            );
            if index != home {
                assert_eq!(placement, Placement::OverCap);
            }
            loads[index].in_flight += 1;
            let max = loads.iter().map(|s| s.in_flight).max().unwrap();
            let total = placed + 1;
            assert!(f64::from(max) <= (factor * f64::from(total) / 4.0).ceil() + 1.0);
        }
        let counts: Vec<u32> = loads.iter().map(|s| s.in_flight).collect();
        assert_eq!(counts.iter().sum::<u32>(), 200);
        assert!(counts.iter().all(|&c| c <= 63), "{counts:?}");
    }

    #[test]
    fn unbounded_rings_keep_a_hot_key_on_its_server() {
        let all = addrs(4);
        let ring = ring(&all, &[1; 4], 0.0);
        let mut loads = idle(4);
        let (home, _) = ring
            .pick(key(7), &loads, Tried::default(), &|_| true)
            .unwrap();
        loads[home].in_flight = 1000;
        assert_eq!(
            ring.pick(key(7), &loads, Tried::default(), &|_| true),
            Some((home, Placement::Home))
        );
    }

    #[test]
    fn the_cap_counts_only_eligible_servers_and_never_refuses() {
        let all = addrs(3);
        let ring = ring(&all, &[1; 3], 1.0);
        let mut loads = idle(3);
        // Two eligible servers, both at 5 in flight: cap = ceil(1.0 · 11 / 2) = 6: room.
        loads[0].in_flight = 5;
        loads[1].in_flight = 5;
        loads[2].in_flight = 100;
        let (index, _) = ring
            .pick(key(1), &loads, Tried::default(), &|i| i != 2)
            .unwrap();
        assert_ne!(index, 2);
        // The one candidate left is over the cap: it still gets the request.
        let mut tried = Tried::default();
        tried.insert(0);
        loads[1].in_flight = 50;
        assert_eq!(
            ring.pick(key(1), &loads, tried, &|i| i != 2)
                .map(|(i, _)| i),
            Some(1)
        );
    }

    #[test]
    fn hashes_are_stable_across_processes() {
        // Pinned values: a change here remaps every key of every deployment.
        assert_eq!(hash_bytes(b""), 0);
        assert_eq!(hash_bytes(b"alice"), hash_bytes(b"alice"));
        assert_ne!(hash_bytes(b"alice"), hash_bytes(b"alicf"));
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_eq!(hash_bytes(b"10.0.0.1:8080"), PINNED_ADDR_HASH);
    }

    const PINNED_ADDR_HASH: u64 = 3_874_242_187_646_806_196;
}
