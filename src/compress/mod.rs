//! Response compression (nginx's `gzip`, and brotli and zstd beside it): which coding a
//! client takes (`accept`), which responses may be compressed and how their head changes
//! (`policy`, pure), and a streaming encoder over the codecs' own crates (`encoder`). The
//! proxy wraps bodies with it; the cache keeps one encoded copy per coding it served.

pub mod accept;
pub mod body;
pub mod encoder;
pub mod policy;

use http::HeaderValue;
use prometheus::IntCounter;

pub use accept::negotiate;
pub use body::{CompressedBody, KeptCopy};
pub use encoder::{Encoder, compress_all};
pub use policy::{TypeMatcher, eligible, mark_encoded, vary_on_accept_encoding};

/// A content coding gatehouse can produce (RFC 9110 §8.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    Gzip,
    Brotli,
    Zstd,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd];

    /// The coding's token in Accept-Encoding and Content-Encoding, and in config and metrics.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.token().eq_ignore_ascii_case(token))
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.token())
    }

    /// A small index for per-coding tables (`[T; 3]`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The levels an encoder accepts: gzip 1-9, brotli 0-11, zstd 1-19 (zstd's 20-22 need a
    /// window too large to stream to any client).
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Encoding::Gzip => 1..=9,
            Encoding::Brotli => 0..=11,
            Encoding::Zstd => 1..=19,
        }
    }
}

/// One coding a route offers, with its level and the metric handles resolved for the route.
#[derive(Debug)]
pub struct Offered {
    pub encoding: Encoding,
    pub level: u32,
    /// Responses sent in this coding, compressed on the way or taken from the cache.
    pub responses: IntCounter,
    /// Bytes that went into an encoder, and the bytes that came out.
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
}

/// A route's compression, compiled (`[compression.NAME]`).
#[derive(Debug)]
pub struct Compression {
    /// The `[compression.NAME]` this was compiled from.
    pub name: String,
    pub types: TypeMatcher,
    /// Responses whose Content-Length says fewer bytes stay as they are.
    pub min_length: u64,
    /// In the route's order of preference (ties of the client's q-values go to the first).
    pub offered: Vec<Offered>,
}

impl Compression {
    /// The coding to answer a request with these headers in, if any: what its
    /// Accept-Encoding takes, unless it asks that nothing be transformed (RFC 9111 §5.2.1.6).
    pub fn choose(&self, request: &http::HeaderMap) -> Option<Encoding> {
        let preference: [Option<Encoding>; 3] =
            std::array::from_fn(|i| self.offered.get(i).map(|offered| offered.encoding));
        let accept = request.get_all(http::header::ACCEPT_ENCODING).iter();
        let chosen = negotiate(accept.map(HeaderValue::as_bytes), &preference)?;
        (!policy::has_no_transform(request)).then_some(chosen)
    }

    pub fn offered(&self, encoding: Encoding) -> Option<&Offered> {
        self.offered.iter().find(|o| o.encoding == encoding)
    }

    /// Whether a response with this head is one this route compresses (for a client that
    /// takes a coding it offers): it then varies on Accept-Encoding.
    pub fn applies_to(&self, status: http::StatusCode, headers: &http::HeaderMap) -> bool {
        eligible(status, headers, &self.types, self.min_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn offering(encodings: &[Encoding]) -> Compression {
        let counter = || IntCounter::new("unused", "unused").expect("counter");
        Compression {
            name: "web".into(),
            types: TypeMatcher::new(["text/*"]).expect("types"),
            min_length: 0,
            offered: encodings
                .iter()
                .map(|&encoding| Offered {
                    encoding,
                    level: 1,
                    responses: counter(),
                    bytes_in: counter(),
                    bytes_out: counter(),
                })
                .collect(),
        }
    }

    fn request(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn the_route_order_breaks_ties_and_no_transform_forbids() {
        let gzip_first = offering(&[Encoding::Gzip, Encoding::Zstd]);
        let both = request(&[("accept-encoding", "zstd, gzip, br")]);
        assert_eq!(gzip_first.choose(&both), Some(Encoding::Gzip));
        let zstd_first = offering(&[Encoding::Zstd, Encoding::Gzip]);
        assert_eq!(zstd_first.choose(&both), Some(Encoding::Zstd));
        let only_br = request(&[("accept-encoding", "br")]);
        assert_eq!(zstd_first.choose(&only_br), None);
        let untouched = request(&[
            ("accept-encoding", "gzip"),
            ("cache-control", "max-age=0, no-transform"),
        ]);
        assert_eq!(gzip_first.choose(&untouched), None);
        assert_eq!(gzip_first.choose(&HeaderMap::new()), None);
    }
}
