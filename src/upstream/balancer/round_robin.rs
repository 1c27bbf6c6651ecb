//! Round robin: one shared counter, so N picks over k servers give each N/k ± 1, also when
//! many threads pick at once.

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
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&i| !tried.contains(i) && eligible(i))
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
