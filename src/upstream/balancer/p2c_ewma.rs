//! Power of two choices over latency: pick two distinct eligible servers at random and take the
//! one with the lower cost, cost being the latency EWMA times (in-flight + 1) over weight
//! (Finagle's and linkerd's "peak EWMA" idea). Unknown latency counts as cheap so new servers
//! get probed.

use super::{Balancer, ServerLoads, Tried};

#[derive(Default)]
pub struct P2cEwma;

impl P2cEwma {
    pub fn new() -> Self {
        Self
    }
}

fn cost(servers: &dyn ServerLoads, i: usize) -> u128 {
    let latency = u128::from(servers.latency_ewma_nanos(i).max(1));
    let load = u128::from(servers.in_flight(i)) + 1;
    latency * load * 1024 / u128::from(servers.weight(i).max(1))
}

impl Balancer for P2cEwma {
    fn pick(
        &self,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let candidates: u32 = (0..servers.len())
            .filter(|&i| !tried.contains(i) && eligible(i))
            .count() as u32;
        let nth = |n: u32| {
            (0..servers.len())
                .filter(|&i| !tried.contains(i) && eligible(i))
                .nth(n as usize)
        };
        match candidates {
            0 => None,
            1 => nth(0),
            _ => {
                let first = fastrand::u32(..candidates);
                let mut second = fastrand::u32(..candidates - 1);
                if second >= first {
                    second += 1;
                }
                let (a, b) = (nth(first)?, nth(second)?);
                if cost(servers, b) < cost(servers, a) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::balancer::testing::FakeServer;

    #[test]
    fn never_picks_the_slowest_of_three() {
        // Of any two distinct servers, the slow one always loses.
        let servers = [
            FakeServer {
                weight: 1,
                in_flight: 0,
                ewma: 1_000_000,
            },
            FakeServer {
                weight: 1,
                in_flight: 0,
                ewma: 50_000_000,
            },
            FakeServer {
                weight: 1,
                in_flight: 0,
                ewma: 2_000_000,
            },
        ];
        let balancer = P2cEwma::new();
        let mut counts = [0; 3];
        for _ in 0..1000 {
            counts[balancer
                .pick(&servers.to_vec(), Tried::default(), &|_| true)
                .unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0] > counts[2], "{counts:?}");
    }

    #[test]
    fn falls_back_to_the_only_candidate() {
        let servers = [FakeServer {
            weight: 1,
            ..Default::default()
        }; 3];
        let balancer = P2cEwma::new();
        let mut tried = Tried::default();
        tried.insert(0);
        assert_eq!(
            balancer.pick(&servers.to_vec(), tried, &|i| i != 2),
            Some(1)
        );
        tried.insert(1);
        assert_eq!(balancer.pick(&servers.to_vec(), tried, &|i| i != 2), None);
    }
}
