//! A route's compression applied to a response on its way to the client: from an upstream,
//! the body is compressed as it streams (and, when the cache stores it, the encoded body is
//! kept with the stored response); from the cache, the stored identity body is compressed
//! once per coding not kept yet, and that copy kept beside it for later hits.
//!
//! Why copies are kept: compressing a ~100 KiB JSON order list costs 170 µs of CPU with gzip
//! at level 1, 185 µs with zstd 3 and 850 µs with brotli 4 (`cargo bench --bench
//! compression`), thirty to a hundred and fifty times what answering the hit itself costs
//! (15.6k instructions), while the copy takes 14-22% of the identity body's memory. The
//! identity body stays the one stored from the upstream, so clients that take no coding,
//! ranges and revalidation work as before. See `benches/README.md`.

use super::body::ResponseBody;
use crate::cache::fill::Stored;
use crate::cache::store::{CachedResponse, Store};
use crate::compress::{Compression, Encoder, Encoding, KeptCopy, compress_all, policy};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

/// The client's answer from an upstream response: its head edited and its body wrapped when
/// the response is one the route compresses. `accepted` is the coding the client takes;
/// `stored` is where a cache will store the response, to keep the encoded body with it.
pub(super) fn upstream(
    compression: &Compression,
    accepted: Option<Encoding>,
    method: &Method,
    parts: &mut http::response::Parts,
    body: ResponseBody,
    stored: Option<Stored>,
) -> ResponseBody {
    if !compression.applies_to(parts.status, &parts.headers) {
        return body;
    }
    policy::vary_on_accept_encoding(&mut parts.headers);
    let Some(offered) = accepted.and_then(|encoding| compression.offered(encoding)) else {
        return body;
    };
    // HEAD gets the head GET would get, and no body to compress.
    if *method == Method::HEAD {
        policy::mark_encoded(&mut parts.headers, offered.encoding);
        return body;
    }
    match Encoder::new(offered.encoding, offered.level) {
        Ok(encoder) => {
            policy::mark_encoded(&mut parts.headers, offered.encoding);
            offered.responses.inc();
            let encoding = offered.encoding;
            let copy = stored.map(|stored| {
                KeptCopy::new(
                    stored.limit(),
                    Box::new(move |body| stored.keep_encoded(encoding, body)),
                )
            });
            body.compressed(
                encoder,
                (offered.bytes_in.clone(), offered.bytes_out.clone()),
                copy,
            )
        }
        // Only zstd's context can fail to be made (out of memory): send it as it is.
        Err(error) => {
            tracing::warn!(error = %error, "could not start a response encoder");
            body
        }
    }
}

/// Where a cache hit's encoded copy may be kept: the store and the key of the entry.
pub(crate) struct Keep<'a> {
    pub store: &'a Store,
    pub key: &'a str,
}

/// What a cache hit needs to be compressed: the route's setting, the client's coding, and
/// where to keep the encoded copy (none for a rarely served stale response).
pub(crate) struct HitEncoding<'a> {
    pub compression: &'a Compression,
    pub accepted: Option<Encoding>,
    pub keep: Option<Keep<'a>>,
}

impl<'a> HitEncoding<'a> {
    /// For a route that compresses; `None` for the others.
    pub(crate) fn of(
        compression: Option<&'a Compression>,
        accepted: Option<Encoding>,
        keep: Option<Keep<'a>>,
    ) -> Option<Self> {
        Some(Self {
            compression: compression?,
            accepted,
            keep,
        })
    }

    /// Edits the head of an answer built from `stored` (status `status`) and returns the
    /// body to send instead of the identity one, if it is sent encoded.
    pub(crate) fn apply(
        &self,
        stored: &CachedResponse,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) -> Option<Bytes> {
        // A 304 says what the 200 would: same Vary, same (weakened) ETag.
        let judged = if status == StatusCode::NOT_MODIFIED {
            stored.status
        } else {
            status
        };
        if !self.compression.applies_to(judged, &stored.headers) {
            return None;
        }
        policy::vary_on_accept_encoding(headers);
        let offered = self
            .accepted
            .and_then(|encoding| self.compression.offered(encoding))?;
        if status == StatusCode::NOT_MODIFIED {
            if let Some(etag) = headers.get(http::header::ETAG)
                && let Some(weak) = policy::weakened(etag)
            {
                headers.insert(http::header::ETAG, weak);
            }
            return None;
        }
        let slot = &stored.encoded[offered.encoding.index()];
        let body = match slot.get() {
            Some(body) => body.clone(),
            None => {
                let body = match compress_all(offered.encoding, offered.level, &stored.body) {
                    Ok(body) => body,
                    Err(error) => {
                        tracing::warn!(error = %error, "could not compress a stored response");
                        return None;
                    }
                };
                offered.bytes_in.inc_by(stored.body.len() as u64);
                offered.bytes_out.inc_by(body.len() as u64);
                // Two hits may race here: the first copy kept is the one every later hit uses.
                if slot.set(body.clone()).is_ok()
                    && let Some(keep) = &self.keep
                {
                    keep.store.reweigh(keep.key);
                }
                body
            }
        };
        policy::mark_encoded(headers, offered.encoding);
        offered.responses.inc();
        headers.insert(http::header::CONTENT_LENGTH, body.len().into());
        Some(body)
    }
}
