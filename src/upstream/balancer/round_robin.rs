//! Round robin: one shared counter, so N picks over k servers give each N/k ± 1, also when
//! many threads pick at once. A turn that falls on a server that cannot take the request goes
//! to the others in turn too, so that a server out of balancing has its share spread evenly
//! over the rest (skipping to the next server would double that one's load).

use super::{Balancer, ServerLoads, Tried};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        // Start at a random place so that several upstreams (or processes) don't move in lockstep.
        Self {
            next: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(
        &self,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let count = servers.len();
        if count == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let usable = |i: usize| !tried.contains(i) && eligible(i);
        let own = turn % count;
        if usable(own) {
            return Some(own);
        }
        // The turns of one server that is out come here once per round: round after round
        // they go to each usable server in turn.
        let usable_count = (0..count).filter(|&i| usable(i)).count();
        if usable_count == 0 {
            return None;
        }
        let nth = (turn / count) % usable_count;
        (0..count).filter(|&i| usable(i)).nth(nth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balancer::testing::FakeServer;

    #[test]
    fn each_server_gets_its_exact_share() {
        let servers = [FakeServer::default(); 3];
        let balancer = RoundRobin::new();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|_| true)
                .unwrap()] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
    }

    #[test]
    fn a_server_out_has_its_share_spread_evenly_over_the_rest() {
        let servers = [FakeServer::default(); 3];
        let balancer = RoundRobin::new();
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|i| i != 2)
                .unwrap()] += 1;
        }
        assert!(
            counts[0].abs_diff(1500) <= 1 && counts[1].abs_diff(1500) <= 1 && counts[2] == 0,
            "{counts:?}"
        );
        // Four servers, one out: a third of its share each.
        let servers = [FakeServer::default(); 4];
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|i| i != 1)
                .unwrap()] += 1;
        }
        for (i, &count) in counts.iter().enumerate() {
            let want = if i == 1 { 0 } else { 4000 / 3 };
            assert!(count.abs_diff(want) <= 2, "{counts:?}");
        }
    }

    #[test]
    fn skips_tried_and_ineligible_servers() {
        let servers = [FakeServer::default(); 3];
        let balancer = RoundRobin::new();
        let mut tried = Tried::default();
        tried.insert(0);
        for _ in 0..10 {
            assert_eq!(
                balancer.pick(&servers.to_vec(), tried, &|i| i != 1),
                Some(2)
            );
        }
        tried.insert(2);
        assert_eq!(balancer.pick(&servers.to_vec(), tried, &|i| i != 1), None);
    }
}
