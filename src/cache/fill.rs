//! Filling the cache from a response that is streaming to the client: each chunk goes on to
//! the client at once and is also kept; when the body ends the response is stored and any
//! coalesced waiters are served from it. A body that grows past `max_object_size` is simply
//! not stored (its waiters go upstream themselves).

use super::Cache;
use super::coalesce::{Landing, Leader};
use super::policy::{Freshness, Piece, Vary};
use super::store::CachedResponse;
use crate::compress::Encoding;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::sync::{Arc, OnceLock};

/// What is known of a storable response before its body.
pub struct FillHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub freshness: Freshness,
    pub vary: Vary,
    pub vary_values: Option<Vec<Option<HeaderValue>>>,
    /// A 206's range; its body must hold exactly those bytes to be stored.
    pub piece: Option<Piece>,
}

pub struct Fill {
    cache: Arc<Cache>,
    key: String,
    leader: Option<Leader>,
    head: FillHead,
    body: BytesMut,
    /// The stored response, once the body has ended.
    stored: Arc<OnceLock<Arc<CachedResponse>>>,
}

/// The response a fill stores, found once it is stored: for an encoded copy of its body made
/// while it streamed (the client's compressed answer) to be kept with it.
pub struct Stored {
    cache: Arc<Cache>,
    key: String,
    entry: Arc<OnceLock<Arc<CachedResponse>>>,
}

impl Stored {
    /// The largest copy worth keeping: what the cache would store at all.
    pub fn limit(&self) -> usize {
        usize::try_from(self.cache.max_object_size).unwrap_or(usize::MAX)
    }

    /// Keeps `body` as the stored response's copy in `encoding`, if the response was stored
    /// and has none yet; the store's weight then counts it.
    pub fn keep_encoded(&self, encoding: Encoding, body: Bytes) {
        if let Some(entry) = self.entry.get()
            && entry.encoded[encoding.index()].set(body).is_ok()
        {
            self.cache.store.reweigh(&self.key);
        }
    }
}

/// RFC 9111 §3.4: a new piece combined with the stored piece of its variant, when they may be
/// (see `policy::combined`) and the result is not too large to store: the combined piece and
/// its bytes, the new piece's where they overlap. The new response's fields go with it.
fn combine_with_stored(
    cache: &Cache,
    key: &str,
    head: &FillHead,
    piece: Piece,
    body: &Bytes,
) -> Option<(Piece, Bytes)> {
    let stored = cache
        .store
        .piece_of_variant(key, &head.vary, &head.vary_values)?;
    let old = stored.piece?;
    let whole = super::policy::combined(old, &stored.headers, piece, &head.headers)?;
    let len = whole.last - whole.first + 1;
    if len > cache.max_object_size {
        return None;
    }
    let old_bytes = |from: u64, to: u64| {
        let at = |position: u64| usize::try_from(position - old.first).ok();
        stored.body.get(at(from)?..at(to)?)
    };
    let mut joined = BytesMut::with_capacity(usize::try_from(len).ok()?);
    if old.first < piece.first {
        joined.extend_from_slice(old_bytes(old.first, piece.first)?);
    }
    joined.extend_from_slice(body);
    if old.last > piece.last {
        joined.extend_from_slice(old_bytes(piece.last + 1, old.last + 1)?);
    }
    (joined.len() as u64 == len).then(|| (whole, joined.freeze()))
}

impl Fill {
    /// A fill for a response of `expected_len` bytes (if known); `None` when it is known to be
    /// too large to store.
    pub fn start(
        cache: Arc<Cache>,
        key: String,
        leader: Option<Leader>,
        head: FillHead,
        expected_len: Option<u64>,
    ) -> Option<Self> {
        if expected_len.is_some_and(|len| len > cache.max_object_size) {
            return None;
        }
        let capacity = expected_len.unwrap_or(8 * 1024).min(cache.max_object_size) as usize;
        Some(Self {
            cache,
            key,
            leader,
            head,
            body: BytesMut::with_capacity(capacity),
            stored: Arc::default(),
        })
    }

    /// Where the response will be found once stored.
    pub fn stored(&self) -> Stored {
        Stored {
            cache: Arc::clone(&self.cache),
            key: self.key.clone(),
            entry: Arc::clone(&self.stored),
        }
    }

    /// Keeps a chunk; false when the body has grown too large to store (the fill is over).
    pub fn push(&mut self, chunk: &Bytes) -> bool {
        if (self.body.len() + chunk.len()) as u64 > self.cache.max_object_size {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }

    /// The body is complete: store the response and release the waiters with it (a 206 whose
    /// body is not its Content-Range's length is not stored, and releases them empty-handed).
    pub fn finish(self) -> Option<Arc<CachedResponse>> {
        let Fill {
            cache,
            key,
            leader,
            head,
            body,
            stored: landed,
        } = self;
        if let Some(piece) = head.piece
            && Some(body.len() as u64) != (piece.last - piece.first).checked_add(1)
        {
            return None;
        }
        let mut head = head;
        let mut body = body.freeze();
        if let Some(piece) = head.piece
            && let Some((whole, joined)) = combine_with_stored(&cache, &key, &head, piece, &body)
        {
            head.piece = Some(whole);
            body = joined;
            if whole.is_whole() {
                // §3.4: pieces that make the whole are the full response.
                head.status = StatusCode::OK;
                head.headers.remove(http::header::CONTENT_RANGE);
                head.headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                head.piece = None;
            }
        }
        let stored = Arc::new(CachedResponse {
            status: head.status,
            headers: head.headers,
            body,
            freshness: head.freshness,
            vary: head.vary,
            vary_values: head.vary_values,
            piece: head.piece,
            encoded: Default::default(),
        });
        if let Some(tier) = &cache.shared {
            tier.write(&key, &stored);
        }
        cache.store.insert(key, Arc::clone(&stored));
        cache.update_gauges();
        let _ = landed.set(Arc::clone(&stored));
        if let Some(leader) = leader {
            leader.land(Landing::Stored(Arc::clone(&stored)));
        }
        Some(stored)
    }
}
