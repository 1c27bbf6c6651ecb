//! Validators and conditional requests: a client's If-None-Match or If-Modified-Since answered
//! from a stored response (RFC 9110 §13), revalidation with the origin, and a stored response
//! refreshed by a 304 (RFC 9111 §4.3).

use super::directives::{field_members, header_date, http_date};
use http::header::{
    CONNECTION, CONTENT_LENGTH, DATE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::SystemTime;

/// An entity tag (RFC 9110 §8.8.3), borrowed from its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EntityTag<'a> {
    weak: bool,
    /// The opaque-tag without its quotes.
    opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    pub(super) fn parse(value: &'a [u8]) -> Option<Self> {
        let value = value.trim_ascii();
        // `W/` is case-sensitive (§8.8.3: %s"W/").
        let (weak, quoted) = match value.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let [b'"', opaque @ .., b'"'] = quoted else {
            return None;
        };
        // etagc = %x21 / %x23-7E / obs-text
        opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            .then_some(EntityTag { weak, opaque })
    }

    /// §8.8.3.2: weak comparison ignores weakness.
    fn weak_eq(self, other: EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// §8.8.3.2: strong comparison needs both strong.
    pub(super) fn strong_eq(self, other: EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

pub(super) fn stored_etag(stored_headers: &HeaderMap) -> Option<EntityTag<'_>> {
    stored_headers
        .get(ETAG)
        .and_then(|etag| EntityTag::parse(etag.as_bytes()))
}

/// §4.3.2: does the client's own conditional request match the stored response, so that 304 can be answered from the cache? If-None-Match (weak comparison, lists, `*`) takes precedence over If-Modified-Since (compared with the stored Last-Modified, else Date, else `received`: when the cache got it).
///
/// `stored_headers` are those of a stored successful response: `*` matches because a current
/// representation exists. The caller evaluates this only for GET and HEAD (RFC 9110 §13.1.3
/// ignores If-Modified-Since otherwise). Malformed members of If-None-Match match nothing; an
/// invalid If-Modified-Since, or one sent more than once, is ignored (§13.1.3).
///
/// A stored response without Last-Modified is still "not modified since" a time at or after
/// its Date: it is what the origin sent then, and the cache uses it as current (§4.3.2's
/// second case), so telling the client its copy from that time is current says nothing new.
/// An invalid Last-Modified or Date counts as absent.
pub fn not_modified(
    request_headers: &HeaderMap,
    stored_headers: &HeaderMap,
    received: SystemTime,
) -> bool {
    // RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    if request_headers.contains_key(IF_NONE_MATCH) {
        let current = stored_etag(stored_headers);
        return field_members(request_headers, &IF_NONE_MATCH).any(|member| {
            member == b"*"
                || EntityTag::parse(member)
                    .zip(current)
                    .is_some_and(|(tag, current)| tag.weak_eq(current))
        });
    }
    let mut since_lines = request_headers.get_all(IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (since_lines.next(), since_lines.next()) else {
        return false;
    };
    let Some(since) = http_date(since) else {
        return false;
    };
    let modified = header_date(stored_headers, &LAST_MODIFIED)
        .or_else(|| header_date(stored_headers, &DATE))
        .unwrap_or(received);
    modified <= since
}

/// RFC 9110 §13.2.2 steps 1 and 2: whether If-Match, or else If-Unmodified-Since, fails for
/// the current representation whose validators are in `current_headers` (412 Precondition
/// Failed when true).
///
/// If-Match compares strongly (§13.1.1): a weak tag never matches, and `*` matches because a
/// current representation exists. Malformed members match nothing. If-Unmodified-Since is
/// ignored when If-Match is present, when it is invalid or sent more than once, and when the
/// representation has no Last-Modified (§13.1.4).
pub fn precondition_failed(request_headers: &HeaderMap, current_headers: &HeaderMap) -> bool {
    if request_headers.contains_key(IF_MATCH) {
        let current = stored_etag(current_headers);
        return !field_members(request_headers, &IF_MATCH).any(|member| {
            member == b"*"
                || EntityTag::parse(member)
                    .zip(current)
                    .is_some_and(|(tag, current)| tag.strong_eq(current))
        });
    }
    let mut since_lines = request_headers.get_all(IF_UNMODIFIED_SINCE).iter();
    let (Some(since), None) = (since_lines.next(), since_lines.next()) else {
        return false;
    };
    let (Some(since), Some(modified)) = (
        http_date(since),
        header_date(current_headers, &LAST_MODIFIED),
    ) else {
        return false;
    };
    modified > since
}

/// The headers for revalidating a stored response with the origin (§4.3.1): If-None-Match with its ETag(s), else If-Modified-Since with its Last-Modified; empty if it has no validator.
///
/// An ETag is sent as stored (a weak one too: If-None-Match compares weakly); a malformed
/// ETag or Last-Modified is no validator.
pub fn validators(stored_headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    if let Some(etag) = stored_headers.get(ETAG)
        && EntityTag::parse(etag.as_bytes()).is_some()
    {
        return vec![(IF_NONE_MATCH, etag.clone())];
    }
    if let Some(last_modified) = stored_headers.get(LAST_MODIFIED)
        && http_date(last_modified).is_some()
    {
        return vec![(IF_MODIFIED_SINCE, last_modified.clone())];
    }
    Vec::new()
}

/// Whether the stored response can be revalidated: a well-formed ETag or Last-Modified.
pub(super) fn has_validator(headers: &HeaderMap) -> bool {
    headers
        .get(ETAG)
        .is_some_and(|etag| EntityTag::parse(etag.as_bytes()).is_some())
        || header_date(headers, &LAST_MODIFIED).is_some()
}

/// Fields a stored response never takes from a 304: the framing (a 304 has no body, so its
/// Content-Length, if any, is not the stored body's), and the hop-by-hop fields of RFC 9110
/// §7.6.1 which §3.1 has caches drop before storing.
fn kept_from_304(name: &HeaderName, not_modified: &HeaderMap, store_set_cookie: bool) -> bool {
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    let excluded = [
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ];
    !excluded.contains(name)
        && (store_set_cookie || name != SET_COOKIE)
        && !field_members(not_modified, &CONNECTION)
            .any(|listed| listed.eq_ignore_ascii_case(name.as_str().as_bytes()))
}

/// §4.3.4: the stored headers updated by a 304's headers (all fields of the 304 replace stored ones, except Content-Length and the framing fields; hop-by-hop excluded).
///
/// Each field the 304 carries replaces every stored line of that name (§3.2). One more field is
/// kept out unless the cache stores cookies (`store_set_cookie`): Set-Cookie. A cookie set on
/// one client's revalidation must not be replayed to everyone the refreshed response is served
/// to, for the reason given at `storability`; the stored response keeps whatever Set-Cookie it
/// was stored with. A cache told that its cookies are everyone's takes them like any field.
pub fn refresh_headers(
    stored: &HeaderMap,
    not_modified: &HeaderMap,
    store_set_cookie: bool,
) -> HeaderMap {
    let mut refreshed = stored.clone();
    for name in not_modified.keys() {
        if !kept_from_304(name, not_modified, store_set_cookie) {
            continue;
        }
        refreshed.remove(name);
        for value in not_modified.get_all(name) {
            refreshed.append(name.clone(), value.clone());
        }
    }
    refreshed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::directives::fixtures::{T, at, date, headers};

    /// Whether a request matches a response stored at T + 200 (after every Date used here).
    fn matches(request: &[(&str, &str)], stored: &[(&str, &str)]) -> bool {
        not_modified(&headers(request), &headers(stored), at(T + 200))
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let strong = [("etag", "\"v1\"")];
        let weak = [("etag", "W/\"v1\"")];
        assert!(matches(&[("if-none-match", "\"v1\"")], &strong));
        assert!(matches(&[("if-none-match", "W/\"v1\"")], &strong));
        assert!(matches(&[("if-none-match", "\"v1\"")], &weak));
        assert!(matches(&[("if-none-match", "W/\"v1\"")], &weak));
        assert!(!matches(&[("if-none-match", "\"v2\"")], &strong));
        assert!(
            !matches(&[("if-none-match", "\"V1\"")], &strong),
            "opaque tags are case-sensitive"
        );
        assert!(
            !matches(&[("if-none-match", "w/\"v1\"")], &strong),
            "W/ is case-sensitive"
        );
        assert!(
            !matches(&[("if-none-match", "v1")], &strong),
            "unquoted is malformed"
        );
        assert!(
            !matches(&[("if-none-match", "\"v1\"")], &[]),
            "nothing to compare with"
        );
    }

    #[test]
    fn if_none_match_lists_and_star() {
        let stored = [("etag", "\"a,b\"")];
        assert!(matches(&[("if-none-match", "\"x\", \"a,b\"")], &stored));
        assert!(matches(
            &[("if-none-match", "\"x\""), ("if-none-match", "W/\"a,b\"")],
            &stored
        ));
        assert!(!matches(
            &[("if-none-match", "\"x\", \"a\", \"b\"")],
            &stored
        ));
        assert!(matches(&[("if-none-match", "*")], &stored));
        assert!(
            matches(&[("if-none-match", "*")], &[]),
            "* matches any current representation"
        );
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let stored = [("etag", "\"v1\""), ("last-modified", &*date(T))];
        assert!(!matches(
            &[("if-none-match", "\"v2\""), ("if-modified-since", &date(T))],
            &stored
        ));
        assert!(matches(
            &[
                ("if-none-match", "\"v1\""),
                ("if-modified-since", &date(T - 100))
            ],
            &stored
        ));
    }

    #[test]
    fn if_modified_since_against_last_modified_else_date() {
        let stored = [("last-modified", &*date(T)), ("date", &*date(T + 100))];
        assert!(matches(&[("if-modified-since", &date(T))], &stored));
        assert!(matches(&[("if-modified-since", &date(T + 10))], &stored));
        assert!(!matches(&[("if-modified-since", &date(T - 1))], &stored));
        // Without Last-Modified, the Date stands in.
        let dated = [("date", &*date(T + 100))];
        assert!(matches(&[("if-modified-since", &date(T + 100))], &dated));
        assert!(!matches(&[("if-modified-since", &date(T + 99))], &dated));
        // Without either, the time it was stored.
        assert!(!matches(&[("if-modified-since", &date(T + 199))], &[]));
        assert!(matches(&[("if-modified-since", &date(T + 200))], &[]));
        // An invalid Last-Modified or Date is passed over.
        let invalid = [("last-modified", "recently"), ("date", &*date(T + 100))];
        assert!(matches(&[("if-modified-since", &date(T + 100))], &invalid));
        assert!(!matches(&[("if-modified-since", &date(T + 99))], &invalid));
        let invalid_date = [("date", "today")];
        assert!(!matches(
            &[("if-modified-since", &date(T + 100))],
            &invalid_date
        ));
        assert!(matches(
            &[("if-modified-since", &date(T + 300))],
            &invalid_date
        ));
        // Dates of other formats compare as the same instants.
        assert!(matches(
            &[("if-modified-since", "Tue Nov 14 22:14:59 2023")],
            &[("date", "tuesday, 14-nov-23 22:14:59 GMT")]
        ));
        // The obsolete date formats are accepted too.
        assert!(matches(
            &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
            &[("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")]
        ));
    }

    #[test]
    fn invalid_or_repeated_if_modified_since_is_ignored() {
        let stored = [("last-modified", &*date(T))];
        assert!(!matches(&[("if-modified-since", "yesterday")], &stored));
        assert!(!matches(
            &[
                ("if-modified-since", &date(T)),
                ("if-modified-since", &date(T))
            ],
            &stored
        ));
        assert!(
            !matches(&[], &stored),
            "unconditional requests get the full response"
        );
    }

    #[test]
    fn validators_prefer_the_etag() {
        let etag = ("etag", "W/\"v1\"");
        let last_modified = ("last-modified", &*date(T));
        assert_eq!(
            validators(&headers(&[etag, last_modified])),
            vec![(IF_NONE_MATCH, HeaderValue::from_static("W/\"v1\""))]
        );
        assert_eq!(
            validators(&headers(&[last_modified])),
            vec![(IF_MODIFIED_SINCE, HeaderValue::from_str(&date(T)).unwrap())]
        );
        assert_eq!(
            validators(&headers(&[("etag", "unquoted"), last_modified])),
            vec![(IF_MODIFIED_SINCE, HeaderValue::from_str(&date(T)).unwrap())]
        );
        assert!(validators(&headers(&[("last-modified", "whenever")])).is_empty());
        assert!(validators(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn refresh_takes_the_304s_fields_except_framing_and_hop_by_hop() {
        let stored = headers(&[
            ("content-type", "text/html"),
            ("content-length", "1234"),
            ("cache-control", "max-age=60"),
            ("date", &date(T)),
            ("etag", "\"v1\""),
            ("x-tag", "a"),
            ("x-tag", "b"),
            ("set-cookie", "stored=1"),
        ]);
        let not_modified = headers(&[
            ("cache-control", "max-age=600"),
            ("date", &date(T + 100)),
            ("etag", "\"v2\""),
            ("x-tag", "c"),
            ("content-length", "0"),
            ("transfer-encoding", "chunked"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("set-cookie", "someone-elses=1"),
        ]);
        let refreshed = refresh_headers(&stored, &not_modified, false);
        let all = |name: &str| -> Vec<&str> {
            refreshed
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("cache-control"), ["max-age=600"]);
        assert_eq!(all("date"), [date(T + 100)]);
        assert_eq!(all("etag"), ["\"v2\""]);
        assert_eq!(
            all("x-tag"),
            ["c"],
            "every stored line of a field is replaced"
        );
        assert_eq!(all("content-type"), ["text/html"]);
        assert_eq!(all("content-length"), ["1234"]);
        assert_eq!(all("set-cookie"), ["stored=1"]);
        for absent in ["transfer-encoding", "connection", "x-hop", "keep-alive"] {
            assert!(all(absent).is_empty(), "{absent}");
        }
        // A cache that stores cookies takes the 304's like any other field.
        let refreshed = refresh_headers(&stored, &not_modified, true);
        let cookies: Vec<_> = refreshed.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["someone-elses=1"]);
    }

    fn fails(request: &[(&str, &str)], current: &[(&str, &str)]) -> bool {
        precondition_failed(&headers(request), &headers(current))
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let strong = [("etag", "\"v1\"")];
        let weak = [("etag", "W/\"v1\"")];
        assert!(!fails(&[("if-match", "\"v1\"")], &strong));
        assert!(!fails(&[("if-match", "\"v0\", \"v1\"")], &strong));
        assert!(!fails(&[("if-match", "*")], &strong));
        assert!(fails(&[("if-match", "\"v2\"")], &strong));
        assert!(fails(&[("if-match", "W/\"v1\"")], &strong));
        assert!(fails(&[("if-match", "\"v1\"")], &weak));
        assert!(fails(&[("if-match", "v1")], &strong));
        assert!(!fails(&[], &strong));
    }

    #[test]
    fn if_unmodified_since_against_last_modified() {
        let current = [("last-modified", date(T))];
        let current = [(current[0].0, current[0].1.as_str())];
        assert!(!fails(&[("if-unmodified-since", &date(T))], &current));
        assert!(!fails(&[("if-unmodified-since", &date(T + 10))], &current));
        assert!(fails(&[("if-unmodified-since", &date(T - 10))], &current));
        assert!(!fails(&[("if-unmodified-since", "garbage")], &current));
        assert!(!fails(&[("if-unmodified-since", &date(T - 10))], &[]));
        // If-Match present: If-Unmodified-Since is not evaluated.
        let both = [("etag", "\"v1\""), current[0]];
        assert!(!fails(
            &[
                ("if-match", "\"v1\""),
                ("if-unmodified-since", &date(T - 10))
            ],
            &both
        ));
    }
}
