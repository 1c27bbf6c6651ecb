//! Load-balancing algorithms behind one trait. Each algorithm is pure policy over the servers'
//! observable state (weight, in-flight count, latency EWMA); it does no I/O.
//!
//! `pick` chooses among the servers not yet `tried`, so retries fall out of the same call: a
//! retry simply asks again with the failed server marked tried.
//!
//! Consistent hashing also needs the request's key, so its table (`MaglevTable`) is not behind the
//! trait: the upstream asks it for requests that have a key, and its `Balancer` (round robin)
//! for those that do not.

mod consistent_hash;
mod least_connections;
mod p2c_ewma;
mod request_key;
mod round_robin;
mod weighted_round_robin;

pub use consistent_hash::{MaglevTable, Placement, TABLE_SIZE, hash_bytes};
pub use least_connections::LeastConnections;
pub use p2c_ewma::P2cEwma;
pub use request_key::key_hash;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::config::BalanceAlgorithm;

/// What a balancer may know about an upstream's servers, by index, when choosing.
pub trait ServerLoads {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn weight(&self, index: usize) -> u32;
    fn in_flight(&self, index: usize) -> u32;
    /// Smoothed response latency in nanoseconds; 0 when nothing is known yet.
    fn latency_ewma_nanos(&self, index: usize) -> u64;
}

/// The set of servers, by index, that this request already tried (at most 64 servers matter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
    pub fn contains(&self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
    pub fn count(&self) -> u32 {
        self.0.count_ones()
    }
}

/// A load-balancing algorithm over one upstream's servers.
pub trait Balancer: Send + Sync {
    /// The index of the server for the next attempt, skipping `tried` and those for which
    /// `eligible` is false; `None` when no server is left.
    fn pick(
        &self,
        servers: &dyn ServerLoads,
        tried: Tried,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;
}

/// Builds the balancer an upstream's config names.
pub fn build(algorithm: BalanceAlgorithm, weights: &[u32]) -> Box<dyn Balancer> {
    match algorithm {
        BalanceAlgorithm::RoundRobin => Box::new(RoundRobin::new()),
        BalanceAlgorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(weights)),
        BalanceAlgorithm::LeastConnections => Box::new(LeastConnections::new()),
        BalanceAlgorithm::P2cEwma => Box::new(P2cEwma::new()),
        // For requests without a key; those with one go by the upstream's `MaglevTable`.
        BalanceAlgorithm::ConsistentHash => Box::new(RoundRobin::new()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::ServerLoads;

    /// A server as a balancer sees it, with fixed numbers.
    #[derive(Clone, Copy, Default)]
    pub struct FakeServer {
        pub weight: u32,
        pub in_flight: u32,
        pub ewma: u64,
    }

    impl ServerLoads for Vec<FakeServer> {
        fn len(&self) -> usize {
            <[FakeServer]>::len(self)
        }
        fn weight(&self, index: usize) -> u32 {
            self[index].weight
        }
        fn in_flight(&self, index: usize) -> u32 {
            self[index].in_flight
        }
        fn latency_ewma_nanos(&self, index: usize) -> u64 {
            self[index].ewma
        }
    }
}
