//! Least connections: the server with the fewest requests in flight, weighted (in-flight count
//! divided by weight); ties go round robin so that an idle upstream still spreads its load.

use super::{Balancer, ServerLoads, Tried};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct LeastConnections {
    tie_breaker: AtomicUsize,
}

impl LeastConnections {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for LeastConnections {
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
        let start = self.tie_breaker.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None;
        for offset in 0..count {
            let i = (start + offset) % count;
            if tried.contains(i) || !eligible(i) {
                continue;
            }
            let load = u64::from(servers.in_flight(i));
            let weight = u64::from(servers.weight(i).max(1));
            // Compare load/weight without division: a/wa < b/wb ⇔ a·wb < b·wa.
            let better = match best {
                None => true,
                Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
            };
            if better {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balancer::testing::FakeServer;

    #[test]
    fn picks_the_least_loaded_server() {
        let servers = [
            FakeServer {
                weight: 1,
                in_flight: 5,
                ewma: 0,
            },
            FakeServer {
                weight: 1,
                in_flight: 1,
                ewma: 0,
            },
            FakeServer {
                weight: 1,
                in_flight: 3,
                ewma: 0,
            },
        ];
        let balancer = LeastConnections::new();
        for _ in 0..5 {
            assert_eq!(
                balancer.pick(&servers.to_vec(), Tried::default(), &|_| true),
                Some(1)
            );
        }
    }

    #[test]
    fn weight_scales_the_load() {
        let servers = [
            FakeServer {
                weight: 4,
                in_flight: 6,
                ewma: 0,
            },
            FakeServer {
                weight: 1,
                in_flight: 2,
                ewma: 0,
            },
        ];
        let balancer = LeastConnections::new();
        assert_eq!(
            balancer.pick(&servers.to_vec(), Tried::default(), &|_| true),
            Some(0)
        );
    }

    #[test]
    fn ties_rotate() {
        let servers = [FakeServer {
            weight: 1,
            ..Default::default()
        }; 3];
        let balancer = LeastConnections::new();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|_| true)
                .unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }
}
