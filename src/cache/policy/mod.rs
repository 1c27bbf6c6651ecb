//! RFC 9111 (HTTP caching) for a shared cache, as pure functions over header maps and times:
//! what may be stored, how long it stays fresh, how old it is, which stored variant a request
//! may use, and what an unsafe request invalidates. No I/O; the store and the proxy call this.
//!
//! Besides RFC 9111 this covers the pieces of RFC 9110 a cache answers itself — conditional
//! requests (§13) and byte ranges (§14) — targeted cache control (RFC 9213), stale content
//! extensions (RFC 5861), and the reasons behind Cache-Status `detail=` (RFC 9211).
//!
//! Field values are parsed leniently (unknown directives, bad numbers and malformed list
//! members are skipped rather than failing the whole field), but wherever leniency and safety
//! pull apart, this errs towards not storing and towards revalidating. In particular:
//! - qualified `no-cache="field"` and `private="field"` are treated as their unqualified forms,
//!   as RFC 9111 §5.2.2.4 and §5.2.2.7 note most caches do; storing less is always allowed;
//! - a response setting a cookie is not stored unless the cache is configured to store them
//!   (see [`storability`]);
//! - `Pragma` is ignored: RFC 9111 §5.4 deprecates it, and a Cache-Control field always
//!   overrides it.
//!
//! The files, bottom up: `date` reads HTTP-dates; `directives` reads the fields the others obey; `freshness`, `vary` and
//! `validation` build on it; `storability` also asks `vary` and `validation`, and `range` asks
//! `validation`. `invalidation` (cache keys) stands apart.

mod date;
mod directives;
mod freshness;
mod invalidation;
mod range;
mod storability;
mod validation;
mod vary;

pub use directives::{CDN_CACHE_CONTROL, Directives, PolicyConfig, response_directives};
pub use freshness::{Freshness, Received, Usability, freshness, usability, usable_on_error};
pub use invalidation::{cache_key, content_location_is_target, invalidation_targets};
pub use range::{Piece, byte_range, byte_ranges, combined, content_range, range_in_piece};
pub use storability::{NotStored, partial_storability, post_storability, storability};
pub use validation::{not_modified, precondition_failed, refresh_headers, validators};
pub use vary::{Vary, vary, vary_matches, vary_values};
