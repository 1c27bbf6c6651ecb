//! Consistent hashing by a Maglev lookup table (Eisenbud et al., "Maglev", NSDI 2016; Envoy's
//! `MAGLEV`), optionally with bounded loads (Mirrokni et al.; HAProxy's `hash-balance-factor`).
//!
//! The table has `TABLE_SIZE` slots, a prime. Each server walks its own permutation of the
//! slots (an offset and a skip, both from the hash of its address) and, taking turns in
//! proportion to its weight, claims the next slot of its permutation that is still free, until
//! none is. A key goes to the owner of slot `hash % TABLE_SIZE`. A server's permutation does
//! not depend on the other servers, so when one joins or leaves the table changes little:
//! about 1/N of the keys move (a little more than a hash ring moves, measured in
//! `benches/README.md`). When the key's server cannot take it (down, breaker open, full,
//! already tried by this request, or at its load cap), the walk goes on to the owners of the
//! following slots, which are as good as random: a down server's keys spread over all the
//! others, and come back with it, since the table stays the same.
//!
//! Maglev was chosen over a Ketama ring (nginx's) by measurement (`benches/README.md`): a pick
//! is one slot read instead of a binary search (1.5–4× cheaper), and the servers' shares stay
//! within about 2% of their weight where a ring of 160 points per server strays by up to 17%.
//! The table is built when the snapshot is compiled (about 2 ms), never per request; a pick
//! does not allocate.

use super::{ServerLoads, Tried};

/// Slots in the table: a prime, as the permutations need, and Envoy's default. At 64 servers
/// each holds about 1,000 slots, which keeps every share within about 2% of its weight. A
/// byte a slot: 64 KiB per hashed upstream.
pub const TABLE_SIZE: usize = 65_537;

/// Weights (after dividing by their common divisor) are scaled down to fit this many turns a
/// round, so that the table takes at least 64 rounds to fill: the round the table fills in
/// is the only one not all servers have their turns in, and it is then at most 1/64 of any
/// server's share.
const MAX_UNITS: u64 = TABLE_SIZE as u64 / 64;

/// A slot no server owns yet, while the table fills.
const FREE: u8 = u8::MAX;

/// Where on the table a pick landed, relative to the key's own server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The owner of the key's slot: the server the key lives on.
    Home,
    /// The owner of a later slot: the servers before it were down, breaker-open, full or
    /// already tried by this request.
    Next,
    /// The owner of a later slot, past at least one server at its bounded-load cap.
    OverCap,
}

/// A Maglev lookup table over one upstream's servers, by index.
pub struct MaglevTable {
    /// The server (index) owning each slot; empty without servers. Servers are at most 64,
    /// so a byte each.
    owners: Vec<u8>,
    servers: usize,
    /// 0 = unbounded; else a server may hold at most this factor of the mean load.
    balance_factor: f64,
}

impl MaglevTable {
    /// A table over `servers` (address, weight), in the upstream's server order. An address is
    /// its server's identity: servers fill the table in the order of their addresses, so the
    /// same servers give the same table whatever order the config lists them in.
    pub fn new(servers: &[(&str, u32)], balance_factor: f64) -> Self {
        let servers = &servers[..servers.len().min(64)];
        let units = weight_units(servers);
        let mut turns: Vec<usize> = (0..servers.len()).collect();
        turns.sort_by_key(|&index| servers[index].0);
        let size = TABLE_SIZE as u64;
        let permutations: Vec<(u64, u64)> = servers
            .iter()
            .map(|(addr, _)| {
                let hash = hash_bytes(addr.as_bytes());
                // A second hash of the address: offset and skip must vary independently.
                let skip = mix(hash ^ 0x2545_f491_4f6c_dd1d) % (size - 1) + 1;
                (hash % size, skip)
            })
            .collect();
        let mut next = vec![0u64; servers.len()];
        let mut owners = vec![FREE; if servers.is_empty() { 0 } else { TABLE_SIZE }];
        let mut free = owners.len();
        'fill: while free > 0 {
            for &index in &turns {
                let (offset, skip) = permutations[index];
                for _ in 0..units[index] {
                    // The permutation visits every slot (skip < size, size prime), so a
                    // free one comes before it repeats.
                    let slot = loop {
                        let slot = ((offset + next[index] * skip) % size) as usize;
                        next[index] += 1;
                        if owners[slot] == FREE {
                            break slot;
                        }
                    };
                    owners[slot] = index as u8;
                    free -= 1;
                    if free == 0 {
                        break 'fill;
                    }
                }
            }
        }
        Self {
            owners,
            servers: servers.len(),
            balance_factor,
        }
    }

    /// The slots server `index` owns.
    #[cfg(test)]
    fn slots_of(&self, index: usize) -> usize {
        self.owners
            .iter()
            .filter(|&&owner| usize::from(owner) == index)
            .count()
    }

    /// The server for a request whose key hashed to `key`: its home server, or the owner of
    /// the next slot that is `eligible`, not `tried`, and (with a balance factor) under its cap
    /// of ceil(factor · (in-flight of eligible servers + 1) / eligible servers). When every
    /// candidate is at its cap, the first candidate after the key's slot: the cap bounds
    /// spread, it never refuses a request. `None` when no server is eligible and untried.
    pub fn pick(
        &self,
        key: u64,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<(usize, Placement)> {
        if self.owners.is_empty() {
            return None;
        }
        let cap = self.load_cap(servers, eligible);
        let start = (key % self.owners.len() as u64) as usize;
        let mut seen = Tried::default();
        let mut passed_other = false;
        let mut first_at_cap: Option<usize> = None;
        // Walk at most once around; stop as soon as every server was seen.
        for slot in (start..self.owners.len()).chain(0..start) {
            let index = usize::from(self.owners[slot]);
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

/// Each server's turns a round: its weight divided by the weights' greatest common divisor
/// (1,2 fills the table as 10,20 does), scaled down if the turns would pass `MAX_UNITS`.
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
    let total: u64 = units.iter().sum();
    if total <= MAX_UNITS {
        return units;
    }
    units
        .iter()
        .map(|&u| (u * MAX_UNITS / total).max(1))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A 64-bit hash of a key or an address that is the same in every process and on every
/// machine (unlike std's seeded hashers): gatehouse instances side by side, and one before and
/// after a restart, send a key to the same server. Eight bytes at a time (FxHash's step), then
/// a full avalanche (MurmurHash3's finalizer), so that keys differing in one byte land far
/// apart in the table. Not built to resist chosen keys: a client sending many keys to one
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

    fn table(addrs: &[String], weights: &[u32], factor: f64) -> MaglevTable {
        let servers: Vec<(&str, u32)> = addrs
            .iter()
            .zip(weights)
            .map(|(addr, &weight)| (addr.as_str(), weight))
            .collect();
        MaglevTable::new(&servers, factor)
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
    fn homes(addrs: &[String], table: &MaglevTable) -> Vec<String> {
        let loads = idle(addrs.len());
        (0..KEYS)
            .map(|n| {
                let (index, placement) = table
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

    /// The share of keys that moved between two servers both mappings have.
    fn strays(before: &[String], after: &[String], changed: &str) -> f64 {
        let strays = before
            .iter()
            .zip(after)
            .filter(|(old, new)| old != new && *old != changed && *new != changed)
            .count();
        strays as f64 / before.len() as f64
    }

    #[test]
    fn a_joining_server_takes_about_one_nth_of_the_keys_mostly_from_others() {
        for n in [3, 5, 10, 63] {
            let all = addrs(n + 1);
            let before = homes(&all[..n], &table(&all[..n], &vec![1; n], 0.0));
            let after = homes(&all, &table(&all, &vec![1; n + 1], 0.0));
            let share = moved_share(&before, &after);
            let expected = 1.0 / (n + 1) as f64;
            assert!(
                (0.5 * expected..=1.6 * expected).contains(&share),
                "{n} -> {}: {share:.4} of the keys moved, expected about {expected:.4}",
                n + 1
            );
            // Maglev moves some keys between servers that stay (a ring would move none): at
            // 63 -> 64 servers 0.4% of all keys, against the 1.6% the new server takes.
            let strays = strays(&before, &after, &all[n]);
            assert!(
                strays <= expected / 3.0,
                "{n} -> {}: {strays:.4} of the keys moved between old servers",
                n + 1
            );
        }
    }

    #[test]
    fn a_leaving_server_gives_away_about_one_nth_of_the_keys() {
        for n in [4, 6, 11, 64] {
            let all = addrs(n);
            let before = homes(&all, &table(&all, &vec![1; n], 0.0));
            // The server in the middle of the list leaves: indices shift, addresses do not.
            let gone = &all[n / 2];
            let rest: Vec<String> = all.iter().filter(|a| *a != gone).cloned().collect();
            let after = homes(&rest, &table(&rest, &vec![1; n - 1], 0.0));
            let share = moved_share(&before, &after);
            let expected = 1.0 / n as f64;
            assert!(
                (0.5 * expected..=1.6 * expected).contains(&share),
                "{n} -> {}: {share:.4} of the keys moved, expected about {expected:.4}",
                n - 1
            );
            let strays = strays(&before, &after, gone);
            assert!(
                strays <= expected / 3.0,
                "{n} -> {}: {strays:.4} of the keys moved between servers that stayed",
                n - 1
            );
        }
    }

    #[test]
    fn the_mapping_depends_on_addresses_not_on_their_order() {
        let all = addrs(5);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            homes(&all, &table(&all, &[1; 5], 0.0)),
            homes(&reversed, &table(&reversed, &[1; 5], 0.0))
        );
    }

    #[test]
    fn slots_and_keys_follow_the_weights() {
        let all = addrs(4);
        let weights = [1, 2, 1, 4];
        let table = table(&all, &weights, 0.0);
        let total_weight: u32 = weights.iter().sum();
        for (index, weight) in weights.iter().enumerate() {
            let expected = TABLE_SIZE as f64 * f64::from(*weight) / f64::from(total_weight);
            let slots = table.slots_of(index) as f64;
            assert!(
                (slots - expected).abs() <= expected / 100.0,
                "server {index} (weight {weight}) owns {slots} slots, expected about {expected:.0}"
            );
        }
        let homes = homes(&all, &table);
        for (addr, weight) in all.iter().zip(weights) {
            let share = homes.iter().filter(|h| *h == addr).count() as f64 / KEYS as f64;
            let expected = f64::from(weight) / f64::from(total_weight);
            assert!(
                (0.9 * expected..=1.1 * expected).contains(&share),
                "{addr} (weight {weight}) got {share:.3} of the keys, expected about {expected:.3}"
            );
        }
    }

    #[test]
    fn equal_servers_own_equal_shares_of_the_table() {
        for n in [3, 64] {
            let table = table(&addrs(n), &vec![1; n], 0.0);
            let mean = TABLE_SIZE as f64 / n as f64;
            for index in 0..n {
                let slots = table.slots_of(index) as f64;
                assert!(
                    (slots - mean).abs() <= mean / 50.0,
                    "{n} servers: {index} owns {slots}, mean {mean:.0}"
                );
            }
        }
    }

    #[test]
    fn large_weights_are_reduced_and_scaled_to_fit() {
        let all = addrs(3);
        assert_eq!(weight_units(&[("a", 20), ("b", 40), ("c", 20)]), [1, 2, 1]);
        let huge: Vec<(&str, u32)> = all.iter().map(|a| (a.as_str(), 10_000)).collect();
        assert_eq!(weight_units(&huge), [1, 1, 1]);
        let uneven = [("a", 10_000), ("b", 9_999), ("c", 1)];
        let units = weight_units(&uneven);
        assert!(units.iter().sum::<u64>() <= MAX_UNITS, "{units:?}");
        assert_eq!(units[2], 1, "the lightest server keeps a turn");
        let table = MaglevTable::new(&uneven, 0.0);
        assert!(table.slots_of(0) > table.slots_of(1));
        assert!(table.slots_of(2) > 0);
    }

    #[test]
    fn a_down_servers_keys_go_to_the_next_servers_and_come_back() {
        let all = addrs(4);
        let table = table(&all, &[1; 4], 0.0);
        let loads = idle(4);
        let down = 2;
        let mut spread = [0usize; 4];
        let mut owned = 0;
        for n in 0..KEYS {
            let (home, _) = table
                .pick(key(n), &loads, Tried::default(), &|_| true)
                .unwrap();
            let (now, placement) = table
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
            // Up again: the same table, so the key is home again.
            assert_eq!(
                table.pick(key(n), &loads, Tried::default(), &|_| true),
                Some((home, Placement::Home))
            );
        }
        // Its keys are shared among all the others, not dumped on one.
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
        let table = table(&all, &[1; 3], 0.0);
        let loads = idle(3);
        for n in 0..100 {
            let mut tried = Tried::default();
            let mut order = Vec::new();
            while let Some((index, _)) = table.pick(key(n), &loads, tried, &|_| true) {
                tried.insert(index);
                order.push(index);
            }
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2], "key {n}: every server once, then none");
        }
        assert_eq!(
            table.pick(key(0), &loads, Tried::default(), &|_| false),
            None
        );
    }

    #[test]
    fn the_walk_wraps_around_the_end_of_the_table() {
        let all = addrs(3);
        let table = table(&all, &[1; 3], 0.0);
        let loads = idle(3);
        let last_slot = TABLE_SIZE as u64 - 1;
        let last = usize::from(table.owners[TABLE_SIZE - 1]);
        let first = usize::from(table.owners[0]);
        assert_eq!(
            table.pick(last_slot, &loads, Tried::default(), &|_| true),
            Some((last, Placement::Home))
        );
        // The key's own server is down: the walk goes on from slot 0.
        let (next, placement) = table
            .pick(last_slot, &loads, Tried::default(), &|i| i != last)
            .unwrap();
        assert_eq!(placement, Placement::Next);
        if first != last {
            assert_eq!(next, first);
        }
    }

    #[test]
    fn no_servers_no_pick() {
        let table = MaglevTable::new(&[], 0.0);
        assert_eq!(
            table.pick(key(1), &idle(0), Tried::default(), &|_| true),
            None
        );
    }

    #[test]
    fn bounded_loads_keep_every_server_under_its_cap() {
        // Requests arrive and stay in flight, all with the same (hot) key: without a bound
        // they would all land on one server.
        let all = addrs(4);
        let factor = 1.25;
        let table = table(&all, &[1; 4], factor);
        let mut loads = idle(4);
        let hot = key(7);
        let (home, _) = table
            .pick(hot, &loads, Tried::default(), &|_| true)
            .unwrap();
        for placed in 0..200u32 {
            let (index, placement) = table
                .pick(hot, &loads, Tried::default(), &|_| true)
                .unwrap();
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
    fn unbounded_tables_keep_a_hot_key_on_its_server() {
        let all = addrs(4);
        let table = table(&all, &[1; 4], 0.0);
        let mut loads = idle(4);
        let (home, _) = table
            .pick(key(7), &loads, Tried::default(), &|_| true)
            .unwrap();
        loads[home].in_flight = 1000;
        assert_eq!(
            table.pick(key(7), &loads, Tried::default(), &|_| true),
            Some((home, Placement::Home))
        );
    }

    #[test]
    fn the_cap_counts_only_eligible_servers_and_never_refuses() {
        let all = addrs(3);
        let table = table(&all, &[1; 3], 1.0);
        let mut loads = idle(3);
        // Two eligible servers, both at 5 in flight: cap = ceil(1.0 · 11 / 2) = 6: room.
        loads[0].in_flight = 5;
        loads[1].in_flight = 5;
        loads[2].in_flight = 100;
        let (index, _) = table
            .pick(key(1), &loads, Tried::default(), &|i| i != 2)
            .unwrap();
        assert_ne!(index, 2);
        // The one candidate left is over the cap: it still gets the request.
        let mut tried = Tried::default();
        tried.insert(0);
        loads[1].in_flight = 50;
        assert_eq!(
            table
                .pick(key(1), &loads, tried, &|i| i != 2)
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
