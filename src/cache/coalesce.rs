//! Request coalescing: concurrent misses for one key make one upstream request. The first
//! becomes the leader and fills the cache; the others wait for its landing and are served
//! from what it stored — or, if the response turned out not storable, go upstream themselves.

use super::store::CachedResponse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How a leader's flight ended.
#[derive(Clone, Debug)]
pub enum Landing {
    Stored(Arc<CachedResponse>),
    /// Not storable, failed, or abandoned: waiters must go upstream themselves.
    NotStored,
}

type Arrivals = watch::Receiver<Option<Landing>>;

#[derive(Default)]
pub struct Coalescer {
    flights: Mutex<HashMap<String, Arrivals>>,
}

/// The request that goes upstream for everyone waiting on the same key.
pub struct Leader {
    coalescer: Arc<Coalescer>,
    key: String,
    landing: watch::Sender<Option<Landing>>,
    /// Run when the flight ends, landed or not (e.g. giving back a claim held in Redis).
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

pub enum Joined {
    Leader(Leader),
    /// Wait for the leader's landing.
    Follower(Arrivals),
}

impl Coalescer {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arrivals>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leads the flight for `key`, or follows the one already under way.
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut flights = self.lock();
        if let Some(arrivals) = flights.get(key) {
            return Joined::Follower(arrivals.clone());
        }
        let (landing, arrivals) = watch::channel(None);
        flights.insert(key.to_owned(), arrivals);
        Joined::Leader(Leader {
            coalescer: Arc::clone(self),
            key: key.to_owned(),
            landing,
            on_end: None,
        })
    }

    /// Whether a flight for `key` is under way (a background refresh need not start another).
    pub fn in_flight(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    pub fn flights(&self) -> usize {
        self.lock().len()
    }
}

impl Leader {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Has `end` run when the flight ends, however it ends.
    pub fn on_end(&mut self, end: impl FnOnce() + Send + Sync + 'static) {
        self.on_end = Some(Box::new(end));
    }

    /// Ends the flight, telling every waiter how it went.
    pub fn land(self, landing: Landing) {
        let _ = self.landing.send(Some(landing));
        // Drop removes the flight.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(end) = self.on_end.take() {
            end();
        }
        self.coalescer.lock().remove(&self.key);
        // A leader dropped without landing (error, abandoned body) releases its waiters.
        self.landing.send_if_modified(|landing| {
            if landing.is_none() {
                *landing = Some(Landing::NotStored);
                true
            } else {
                false
            }
        });
    }
}

/// Waits for a flight to land; a vanished leader counts as not stored.
pub async fn wait(mut arrivals: Arrivals) -> Landing {
    match arrivals.wait_for(Option::is_some).await {
        Ok(landing) => landing.clone().unwrap_or(Landing::NotStored),
        Err(_) => Landing::NotStored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_a_dropped_leader_releases_them() {
        let coalescer = Coalescer::new();
        let Joined::Leader(leader) = coalescer.join("k") else {
            panic!("first is the leader")
        };
        let Joined::Follower(follower) = coalescer.join("k") else {
            panic!("second follows")
        };
        assert!(coalescer.in_flight("k"));
        drop(leader);
        assert!(matches!(wait(follower).await, Landing::NotStored));
        assert!(!coalescer.in_flight("k"));
        assert!(
            matches!(coalescer.join("k"), Joined::Leader(_)),
            "a new flight can start"
        );
    }
}
