//! Bounded in-memory storage of cached responses: a concurrent, size-aware cache (quick_cache,
//! S3-FIFO eviction) from primary key to the stored variants of that URI. Headers and bodies
//! are shared `Bytes`, so serving a hit copies nothing.

use super::policy::{self, Freshness, Piece, Vary};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use prometheus::IntCounter;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Stored variants of one URI beyond this many replace the oldest.
const MAX_VARIANTS: usize = 8;
/// Rough bookkeeping cost of an entry besides its headers and body.
const ENTRY_OVERHEAD: u64 = 256;

/// One stored response (one variant of a URI).
#[derive(Debug)]
pub struct CachedResponse {
    pub status: StatusCode,
    /// The origin's headers, hop-by-hop fields removed.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub freshness: Freshness,
    pub vary: Vary,
    /// The request's values of the Vary fields when this variant was stored.
    pub vary_values: Option<Vec<Option<HeaderValue>>>,
    /// For a stored 206: the bytes of the representation its body holds. Such an entry
    /// answers only ranges inside it, never a request for the whole.
    pub piece: Option<Piece>,
    /// The body compressed in each coding (`Encoding::index`) that a route served it in:
    /// the compressed answer that filled the entry, or made at the first hit in a coding,
    /// and kept for the next ones. Counted in the entry's weight once there
    /// (`Store::reweigh`).
    pub encoded: [OnceLock<Bytes>; 3],
}

impl CachedResponse {
    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let encoded: usize = self
            .encoded
            .iter()
            .filter_map(OnceLock::get)
            .map(Bytes::len)
            .sum();
        ENTRY_OVERHEAD + headers as u64 + self.body.len() as u64 + encoded as u64
    }

    /// The encoded copies of `other`'s body, for a response with the same body (refreshed by
    /// a 304).
    pub fn encoded_copies_of(other: &CachedResponse) -> [OnceLock<Bytes>; 3] {
        std::array::from_fn(|i| {
            let slot = OnceLock::new();
            if let Some(body) = other.encoded[i].get() {
                let _ = slot.set(body.clone());
            }
            slot
        })
    }

    /// Whether this variant was stored for a request like `request_headers` (RFC 9111 §4.1).
    pub fn matches(&self, request_headers: &HeaderMap) -> bool {
        match (&self.vary, &self.vary_values) {
            (Vary::None, _) => true,
            (vary, Some(values)) => policy::vary_matches(vary, values, request_headers),
            (_, None) => false,
        }
    }
}

/// The stored variants of one primary key, with their total weight computed once.
#[derive(Debug)]
pub struct Variants {
    pub list: Vec<Arc<CachedResponse>>,
    weight: u64,
}

/// quick_cache splits its capacity over shards and refuses an item heavier than about 97% of
/// one shard, so the shard count must leave room for the largest object: the most shards (for
/// concurrency, up to 4 per core as quick_cache would pick) that still do.
fn shards_for(max_bytes: u64, max_object: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = (cores * 4).next_power_of_two();
    let needed = (max_object + ENTRY_OVERHEAD + 16 * 1024) as f64;
    while shards > 1 && (max_bytes as f64 * 0.95 / shards as f64) < needed {
        shards /= 2;
    }
    shards
}

#[derive(Clone)]
struct ByWeight;

impl Weighter<String, Arc<Variants>> for ByWeight {
    fn weight(&self, key: &String, value: &Arc<Variants>) -> u64 {
        key.len() as u64 + value.weight
    }
}

#[derive(Clone)]
struct CountEvictions(IntCounter);

impl Lifecycle<String, Arc<Variants>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: String, _value: Arc<Variants>) {
        self.0.inc();
    }
}

pub struct Store {
    entries: Cache<String, Arc<Variants>, ByWeight, DefaultHashBuilder, CountEvictions>,
}

impl Store {
    /// A store of at most `max_bytes`, able to hold any single object up to `max_object`.
    pub fn new(max_bytes: u64, max_object: u64, evictions: IntCounter) -> Self {
        let estimated_items = (max_bytes / 4096).clamp(64, 1 << 20) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(estimated_items)
            .weight_capacity(max_bytes)
            .shards(shards_for(max_bytes, max_object))
            .build();
        let entries = match options {
            Ok(options) => Cache::with_options(
                options,
                ByWeight,
                DefaultHashBuilder::default(),
                CountEvictions(evictions.clone()),
            ),
            Err(_) => Cache::with(
                estimated_items,
                max_bytes,
                ByWeight,
                DefaultHashBuilder::default(),
                CountEvictions(evictions),
            ),
        };
        Self { entries }
    }

    /// The stored full response (variant) for this request, if any.
    pub fn lookup(&self, key: &str, request_headers: &HeaderMap) -> Option<Arc<CachedResponse>> {
        let variants = self.entries.get(key)?;
        variants
            .list
            .iter()
            .find(|v| v.piece.is_none() && v.matches(request_headers))
            .cloned()
    }

    /// The stored 206 (piece) for this request's variant, if any.
    pub fn lookup_piece(
        &self,
        key: &str,
        request_headers: &HeaderMap,
    ) -> Option<Arc<CachedResponse>> {
        let variants = self.entries.get(key)?;
        variants
            .list
            .iter()
            .find(|v| v.piece.is_some() && v.matches(request_headers))
            .cloned()
    }

    /// The stored piece of the variant with these Vary values, if any (to combine a new one
    /// with).
    pub fn piece_of_variant(
        &self,
        key: &str,
        vary: &Vary,
        vary_values: &Option<Vec<Option<HeaderValue>>>,
    ) -> Option<Arc<CachedResponse>> {
        let variants = self.entries.get(key)?;
        variants
            .list
            .iter()
            .find(|v| v.piece.is_some() && v.vary == *vary && v.vary_values == *vary_values)
            .cloned()
    }

    /// Stores a response, replacing the variant it matches (same Vary values), full or piece; a
    /// piece is not stored beside a full response of its variant, which answers every range.
    pub fn insert(&self, key: String, response: Arc<CachedResponse>) {
        let existing = self.entries.get(key.as_str());
        if response.piece.is_some()
            && existing.as_ref().is_some_and(|variants| {
                variants.list.iter().any(|v| {
                    v.piece.is_none()
                        && v.vary == response.vary
                        && v.vary_values == response.vary_values
                })
            })
        {
            return;
        }
        let mut list: Vec<Arc<CachedResponse>> = match existing {
            // A new Vary list makes the old variants unreachable; drop them.
            Some(existing) => existing
                .list
                .iter()
                .filter(|v| v.vary == response.vary && v.vary_values != response.vary_values)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        if list.len() >= MAX_VARIANTS {
            list.remove(0);
        }
        list.push(response);
        let weight = list.iter().map(|v| v.weight()).sum();
        self.entries
            .insert(key, Arc::new(Variants { list, weight }));
    }

    /// Weighs the variants under `key` again, after one of them grew an encoded copy, so that
    /// the store's bound counts it (and evicts for it). A key being loaded or gone is left.
    pub fn reweigh(&self, key: &str) {
        let _ = self.entries.entry(
            key,
            Some(Duration::ZERO),
            |_, variants: &mut Arc<Variants>| {
                let list = variants.list.clone();
                let weight = list.iter().map(|v| v.weight()).sum();
                *variants = Arc::new(Variants { list, weight });
                quick_cache::sync::EntryAction::Retain(())
            },
        );
    }

    /// Drops every variant stored under `key`; true if there were any.
    pub fn invalidate(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Drops every entry whose key starts with `prefix`; returns how many.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|key, _| !key.starts_with(prefix));
        before.saturating_sub(self.entries.len())
    }

    pub fn bytes(&self) -> u64 {
        self.entries.weight()
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    pub fn capacity(&self) -> u64 {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(piece: Option<Piece>, body: &'static str) -> Arc<CachedResponse> {
        let now = std::time::SystemTime::now();
        Arc::new(CachedResponse {
            status: if piece.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            },
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            freshness: Freshness {
                lifetime: Duration::from_secs(60),
                initial_age: Duration::ZERO,
                response_time: now,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                must_revalidate: false,
                no_cache: false,
            },
            vary: Vary::None,
            vary_values: Some(Vec::new()),
            piece,
            encoded: Default::default(),
        })
    }

    #[test]
    fn pieces_answer_only_piece_lookups_and_give_way_to_full_responses() {
        let store = Store::new(1 << 20, 1 << 16, IntCounter::new("e", "e").unwrap());
        let piece = Some(Piece {
            first: 0,
            last: 3,
            complete_length: Some(10),
        });
        let headers = HeaderMap::new();
        store.insert("k".into(), stored(piece, "0123"));
        assert!(
            store.lookup("k", &headers).is_none(),
            "a piece is not the whole"
        );
        assert_eq!(store.lookup_piece("k", &headers).unwrap().body, "0123");

        store.insert("k".into(), stored(None, "0123456789"));
        assert_eq!(store.lookup("k", &headers).unwrap().body, "0123456789");
        assert!(
            store.lookup_piece("k", &headers).is_none(),
            "replaced by the whole"
        );

        // A piece arriving later does not displace the full response.
        store.insert("k".into(), stored(piece, "0123"));
        assert_eq!(store.lookup("k", &headers).unwrap().body, "0123456789");
        assert!(store.lookup_piece("k", &headers).is_none());
    }

    #[test]
    fn shards_leave_room_for_the_largest_object() {
        for (max, object) in [
            (1 << 20, 512 << 10),
            (256 << 20, 8 << 20),
            (64 << 10, 64 << 10),
        ] {
            let shards = shards_for(max, object) as u64;
            assert!(
                shards == 1 || max * 95 / 100 / shards >= object,
                "{max} {object} {shards}"
            );
        }
        assert_eq!(shards_for(1 << 20, 1 << 20), 1);
    }
}
