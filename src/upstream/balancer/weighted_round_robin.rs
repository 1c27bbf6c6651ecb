//! Smooth weighted round robin, nginx's algorithm: every pick adds each server's weight to its
//! running score, takes the highest score and subtracts the total weight from it. Weights 5,1,1
//! give a,a,b,a,c,a,a — spread out, never a burst of one server.

use super::{Balancer, ServerLoads, Tried};
use std::sync::Mutex;

pub struct WeightedRoundRobin {
    scores: Mutex<Vec<i64>>,
}

impl WeightedRoundRobin {
    pub fn new(weights: &[u32]) -> Self {
        Self {
            scores: Mutex::new(vec![0; weights.len()]),
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(
        &self,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut scores = self
            .scores
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        scores.resize(servers.len(), 0);
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..servers.len() {
            if tried.contains(i) || !eligible(i) {
                continue;
            }
            let weight = i64::from(servers.weight(i));
            scores[i] += weight;
            total += weight;
            if best.is_none_or(|b| scores[i] > scores[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            scores[b] -= total;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balancer::testing::FakeServer;

    fn servers(weights: &[u32]) -> Vec<FakeServer> {
        weights
            .iter()
            .map(|&weight| FakeServer {
                weight,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn sequence_matches_nginx_smooth_weighting() {
        let servers = servers(&[5, 1, 1]);
        let balancer = WeightedRoundRobin::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7)
            .map(|_| {
                balancer
                    .pick(&servers.to_vec(), Tried::default(), &|_| true)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights() {
        let servers = servers(&[3, 2, 1]);
        let balancer = WeightedRoundRobin::new(&[3, 2, 1]);
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|_| true)
                .unwrap()] += 1;
        }
        assert_eq!(counts, [300, 200, 100]);
    }

    #[test]
    fn ineligible_servers_are_left_out() {
        let servers = servers(&[3, 2, 1]);
        let balancer = WeightedRoundRobin::new(&[3, 2, 1]);
        let mut counts = [0; 3];
        for _ in 0..500 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|i| i != 0)
                .unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!((333..=334).contains(&counts[1]), "{counts:?}");
        assert_eq!(counts[1] + counts[2], 500);
    }
}
