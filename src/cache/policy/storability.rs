//! May a shared cache store this response (RFC 9111 §3)? If not, the reason, as Cache-Status
//! `detail=` reports it.

use super::directives::{Directives, PolicyConfig, selected_directives};
use super::range::{Piece, content_range};
use super::validation::has_validator;
use super::vary::{Vary, vary};
use http::header::{AUTHORIZATION, CACHE_CONTROL, EXPIRES, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};
use std::fmt;

/// Why a response is not stored (for Cache-Status `fwd=...; detail=...` and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Only responses to GET are stored.
    Method,
    /// An interim status, a 304, or a status that is not heuristically cacheable without
    /// explicit freshness.
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for the user's own cache, never a shared one.
    Private,
    /// The request carried credentials and the response did not say it may be shared.
    Authorization,
    /// Nothing says how long it stays fresh, and it cannot be revalidated.
    NoFreshness,
    /// `Vary: *`: no later request can be known to match.
    VaryStar,
    /// It sets a cookie and the cache does not store such responses (`store_set_cookie`).
    SetCookie,
    /// A 206 judged as a full response, or one that is not a single byte range (see
    /// `partial_storability`).
    PartialContent,
    /// `must-understand` on a status whose caching requirements gatehouse does not know.
    MustUnderstand,
    /// A POST response whose Content-Location does not name the request's target.
    ContentLocation,
}

impl NotStored {
    /// A token for Cache-Status `detail=` (RFC 9211 §2.8) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::NoFreshness => "no-freshness",
            NotStored::VaryStar => "vary-star",
            NotStored::SetCookie => "set-cookie",
            NotStored::PartialContent => "partial-content",
            NotStored::MustUnderstand => "must-understand",
            NotStored::ContentLocation => "content-location",
        }
    }
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 9110 §15.1: statuses a cache may store with heuristic freshness.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final statuses whose caching requirements gatehouse implements, for `must-understand`
/// (RFC 9111 §5.2.2.3): those RFC 9110 defines, which ask of a cache nothing beyond the general
/// rules (explicit freshness, or heuristic freshness for the §15.1 list). Left out: 206 and
/// 304, which have requirements of their own that this cache does not implement as storage
/// (it stores only full responses, and a 304 only updates one), and the unused 305 and 306.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether the origin said how long the response stays fresh. §5.3: any Expires, even an
/// invalid one (which means "already expired"), is explicit; a targeted field silences it.
fn explicit_freshness(
    directives: &Directives,
    targeted: bool,
    response_headers: &HeaderMap,
) -> bool {
    directives.s_maxage.is_some()
        || directives.max_age.is_some()
        || (!targeted && response_headers.contains_key(EXPIRES))
}

/// RFC 9111 §3.3: may this 206 be stored as a piece of its representation, to answer later
/// ranges inside it? It needs one `Content-Range` of bytes (a multipart/byteranges answer is
/// not stored), and then whatever a full response to the same request would need. With
/// `must-understand` it is not stored: the status's own requirements (combining pieces,
/// §3.4) are not all implemented.
pub fn partial_storability(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    config: &PolicyConfig,
) -> Result<Piece, NotStored> {
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::Status);
    }
    let piece = content_range(response_headers).ok_or(NotStored::PartialContent)?;
    if selected_directives(response_headers, config)
        .0
        .must_understand
    {
        return Err(NotStored::MustUnderstand);
    }
    // 200 stands for 206: both are heuristically cacheable, and nothing else tells them apart.
    storability(
        method,
        request_headers,
        StatusCode::OK,
        response_headers,
        config,
    )?;
    Ok(piece)
}

/// RFC 9110 §9.3.3: may the response to a POST be stored for later GET and HEAD requests of
/// its target? Only where the cache is configured to (`config.store_post_responses`), with
/// explicit freshness (`default_ttl` does not count: a heuristic is no origin's word that the
/// answer to a POST is the resource's state), and with a Content-Location naming the target
/// (`content_location_is_target`, from [`super::invalidation::content_location_is_target`]);
/// then it must also pass every rule a GET response does ([`storability`]).
pub fn post_storability(
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    config: &PolicyConfig,
    content_location_is_target: bool,
) -> Result<(), NotStored> {
    if !config.store_post_responses {
        return Err(NotStored::Method);
    }
    let (directives, targeted) = selected_directives(response_headers, config);
    if !explicit_freshness(&directives, targeted, response_headers) {
        return Err(NotStored::NoFreshness);
    }
    if !content_location_is_target {
        return Err(NotStored::ContentLocation);
    }
    storability(
        &Method::GET,
        request_headers,
        status,
        response_headers,
        config,
    )
}

/// RFC 9111 §3: may this response to this request be stored by a shared cache?
/// - only GET (HEAD responses are not stored; HEAD is answered from a stored GET);
/// - final status that is heuristically cacheable (200, 203, 204, 206 → NotStored::PartialContent since a 206 is judged by `partial_storability`, 300, 301, 308, 404, 405, 410, 414, 501) or any status with explicit freshness (max-age/s-maxage/Expires) — 1xx never;
/// - must-understand on a status gatehouse does not understand → MustUnderstand; on one it does, the response's no-store is ignored (§5.2.2.3: the origin sends no-store only for caches that do not implement must-understand);
/// - request or response no-store; response private (shared cache); request Authorization unless the response has public, s-maxage or must-revalidate (§3.5);
/// - freshness: explicit freshness, or config.default_ttl > 0 (heuristic), or no-cache/must-revalidate with a validator (stored, always revalidated); else NoFreshness;
/// - Vary: * → VaryStar;
/// - Set-Cookie: a response carrying Set-Cookie is not stored unless the cache is configured to
///   store such responses (`config.store_set_cookie`), whatever its directives say.
///
/// Set-Cookie is a deliberate choice beyond RFC 9111, which lets a shared cache store such a
/// response: storing one user's session cookie and replaying it to everyone else is the classic
/// shared-cache leak, and origins that forget `private` on a login response are common — as are
/// frameworks that add `public` or `s-maxage` to every response, session cookie or not, so
/// not even those are trusted to mean it. Where an operator knows the cookies of a cache's
/// responses are the same for everyone (a load balancer's affinity cookie, a consent banner's),
/// the switch stores them, Set-Cookie and all: nothing is stripped, since a response without
/// the cookie its origin set would be a different response, silently.
///
/// Also: a 304 is never stored (it is not a representation, only an update to one, §4.3.4);
/// `public` alone does not make a non-heuristically-cacheable status storable (a shared error
/// page needs explicit freshness); and a `no-cache` response without a validator is not stored,
/// since it could only ever be "revalidated" by fetching it again. The first reason found is
/// returned, in the order of the list above.
pub fn storability(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    config: &PolicyConfig,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    let (directives, targeted) = selected_directives(response_headers, config);
    let explicit = explicit_freshness(&directives, targeted, response_headers);
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(NotStored::PartialContent);
    }
    if status.is_informational()
        || status == StatusCode::NOT_MODIFIED
        || !(heuristically_cacheable(status) || explicit)
    {
        return Err(NotStored::Status);
    }
    if directives.must_understand && !understood(status) {
        return Err(NotStored::MustUnderstand);
    }
    // §5.2.2.3 (a cache that understands the status SHOULD ignore no-store beside
    // must-understand); §5.2.1.5: a request's no-store covers the response to it too, and
    // must-understand says nothing about the request.
    let response_no_store = directives.no_store && !directives.must_understand;
    if response_no_store || Directives::parse(request_headers.get_all(CACHE_CONTROL)).no_store {
        return Err(NotStored::NoStore);
    }
    if directives.private {
        return Err(NotStored::Private);
    }
    let shareable = directives.public || directives.s_maxage.is_some();
    if request_headers.contains_key(AUTHORIZATION) && !(shareable || directives.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if response_headers.contains_key(SET_COOKIE) && !config.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if vary(response_headers) == Vary::Any {
        return Err(NotStored::VaryStar);
    }
    let validator = has_validator(response_headers);
    if directives.no_cache && !validator {
        return Err(NotStored::NoFreshness);
    }
    let fresh_for_a_while = explicit || !config.default_ttl.is_zero();
    let always_revalidated = (directives.no_cache || directives.must_revalidate) && validator;
    if fresh_for_a_while || always_revalidated {
        Ok(())
    } else {
        Err(NotStored::NoFreshness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::directives::fixtures::{MAX_AGE, T, config, date, headers, secs};

    fn store(
        method: Method,
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
    ) -> Result<(), NotStored> {
        store_with(method, request, status, response, &config())
    }

    fn store_with(
        method: Method,
        request: &[(&str, &str)],
        status: u16,
        response: &[(&str, &str)],
        config: &PolicyConfig,
    ) -> Result<(), NotStored> {
        storability(
            &method,
            &headers(request),
            StatusCode::from_u16(status).unwrap(),
            &headers(response),
            config,
        )
    }

    #[test]
    fn only_get_responses_are_stored() {
        assert_eq!(store(Method::GET, &[], 200, &[MAX_AGE]), Ok(()));
        for method in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
            assert_eq!(store(method, &[], 200, &[MAX_AGE]), Err(NotStored::Method));
        }
    }

    #[test]
    fn heuristically_cacheable_statuses_need_no_explicit_freshness() {
        let heuristic = PolicyConfig {
            default_ttl: secs(60),
            ..config()
        };
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(
                store_with(Method::GET, &[], status, &[], &heuristic),
                Ok(()),
                "{status}"
            );
        }
        for status in [201, 302, 303, 307, 400, 403, 500, 502, 503] {
            assert_eq!(
                store_with(Method::GET, &[], status, &[], &heuristic),
                Err(NotStored::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn explicit_freshness_makes_any_final_status_storable() {
        assert_eq!(store(Method::GET, &[], 302, &[MAX_AGE]), Ok(()));
        assert_eq!(
            store(Method::GET, &[], 500, &[("cache-control", "s-maxage=5")]),
            Ok(())
        );
        assert_eq!(
            store(Method::GET, &[], 503, &[("expires", &date(T))]),
            Ok(())
        );
        // `public` alone is not explicit freshness.
        assert_eq!(
            store(Method::GET, &[], 302, &[("cache-control", "public")]),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn interim_not_modified_and_partial_responses_are_not_stored() {
        assert_eq!(
            store(Method::GET, &[], 100, &[MAX_AGE]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(Method::GET, &[], 103, &[MAX_AGE]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(Method::GET, &[], 304, &[MAX_AGE]),
            Err(NotStored::Status)
        );
        assert_eq!(
            store(Method::GET, &[], 206, &[MAX_AGE]),
            Err(NotStored::PartialContent)
        );
    }

    #[test]
    fn no_store_in_request_or_response_prevents_storing() {
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "max-age=60, no-store")]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(
                Method::GET,
                &[("cache-control", "no-store")],
                200,
                &[MAX_AGE]
            ),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn must_understand_stores_an_understood_status_despite_no_store() {
        let cc = |value| [("cache-control", value)];
        let understanding = "max-age=60, must-understand, no-store";
        for status in [200, 204, 301, 404, 410, 500] {
            assert_eq!(
                store(Method::GET, &[], status, &cc(understanding)),
                Ok(()),
                "{status}"
            );
        }
        for status in [206, 299, 304, 306, 418, 599] {
            let expected = if status == 206 {
                Err(NotStored::PartialContent)
            } else if status == 304 {
                Err(NotStored::Status)
            } else {
                Err(NotStored::MustUnderstand)
            };
            assert_eq!(
                store(Method::GET, &[], status, &cc(understanding)),
                expected,
                "{status}"
            );
        }
        // An unknown status with explicit freshness is storable without must-understand.
        assert_eq!(store(Method::GET, &[], 299, &cc("max-age=60")), Ok(()));
        // Without must-understand no-store wins; the request's no-store always does.
        assert_eq!(
            store(Method::GET, &[], 200, &cc("max-age=60, no-store")),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(
                Method::GET,
                &[("cache-control", "no-store")],
                200,
                &cc(understanding)
            ),
            Err(NotStored::NoStore)
        );
        // must-understand lifts no-store only: private, freshness and the rest still hold.
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &cc("max-age=60, must-understand, no-store, private")
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(Method::GET, &[], 200, &cc("must-understand, no-store")),
            Err(NotStored::NoFreshness)
        );
        // In a targeted field too.
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cdn-cache-control", "max-age=60, must-understand, no-store")]
            ),
            Ok(())
        );
    }

    #[test]
    fn private_responses_are_not_for_a_shared_cache() {
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private, max-age=60")]
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private=\"x-user\", max-age=60")]
            ),
            Err(NotStored::Private)
        );
    }

    #[test]
    fn authorized_requests_need_a_response_that_allows_sharing() {
        let authorization = ("authorization", "Bearer secret");
        assert_eq!(
            store(Method::GET, &[authorization], 200, &[MAX_AGE]),
            Err(NotStored::Authorization)
        );
        for allowing in [
            "public, max-age=60",
            "s-maxage=60",
            "must-revalidate, max-age=60",
        ] {
            assert_eq!(
                store(
                    Method::GET,
                    &[authorization],
                    200,
                    &[("cache-control", allowing)]
                ),
                Ok(()),
                "{allowing}"
            );
        }
    }

    #[test]
    fn responses_setting_cookies_are_stored_only_when_the_cache_allows_it() {
        let cookie = ("set-cookie", "session=abc");
        for cc in ["max-age=60", "public, max-age=60", "s-maxage=60"] {
            assert_eq!(
                store(Method::GET, &[], 200, &[("cache-control", cc), cookie]),
                Err(NotStored::SetCookie),
                "{cc}"
            );
        }
        let allowing = PolicyConfig {
            store_set_cookie: true,
            ..config()
        };
        assert_eq!(
            store_with(Method::GET, &[], 200, &[MAX_AGE, cookie], &allowing),
            Ok(())
        );
        // The switch lifts only the cookie rule.
        assert_eq!(
            store_with(
                Method::GET,
                &[],
                200,
                &[("cache-control", "private, max-age=60"), cookie],
                &allowing
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            store_with(Method::GET, &[], 200, &[cookie], &allowing),
            Err(NotStored::NoFreshness)
        );
    }

    #[test]
    fn vary_star_is_never_stored() {
        assert_eq!(
            store(Method::GET, &[], 200, &[MAX_AGE, ("vary", "*")]),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[MAX_AGE, ("vary", "accept"), ("vary", "origin, *")]
            ),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn a_response_needs_freshness_or_a_way_to_revalidate() {
        assert_eq!(
            store(Method::GET, &[], 200, &[]),
            Err(NotStored::NoFreshness)
        );
        let heuristic = PolicyConfig {
            default_ttl: secs(1),
            ..config()
        };
        assert_eq!(store_with(Method::GET, &[], 200, &[], &heuristic), Ok(()));
        let etag = ("etag", "\"v1\"");
        let last_modified = ("last-modified", &*date(T));
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "no-cache"), etag]
            ),
            Ok(())
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "must-revalidate"), last_modified]
            ),
            Ok(())
        );
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "must-revalidate")]
            ),
            Err(NotStored::NoFreshness)
        );
        // no-cache without a validator could only ever be fetched again, even with max-age.
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "no-cache, max-age=60")]
            ),
            Err(NotStored::NoFreshness)
        );
        // A malformed ETag is no validator.
        assert_eq!(
            store(
                Method::GET,
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "v1")]
            ),
            Err(NotStored::NoFreshness)
        );
        // An invalid Expires is explicit freshness, already expired (§5.3).
        assert_eq!(store(Method::GET, &[], 200, &[("expires", "0")]), Ok(()));
    }

    #[test]
    fn post_responses_need_the_switch_explicit_freshness_and_their_own_location() {
        let post = |config: &PolicyConfig, response: &[(&str, &str)], names_target: bool| {
            post_storability(
                &HeaderMap::new(),
                StatusCode::OK,
                &headers(response),
                config,
                names_target,
            )
        };
        let reusing = PolicyConfig {
            store_post_responses: true,
            ..config()
        };
        assert_eq!(post(&config(), &[MAX_AGE], true), Err(NotStored::Method));
        assert_eq!(post(&reusing, &[MAX_AGE], true), Ok(()));
        assert_eq!(post(&reusing, &[("expires", &date(T + 60))], true), Ok(()));
        assert_eq!(
            post(&reusing, &[MAX_AGE], false),
            Err(NotStored::ContentLocation)
        );
        let heuristic = PolicyConfig {
            default_ttl: secs(60),
            ..reusing.clone()
        };
        assert_eq!(post(&heuristic, &[], true), Err(NotStored::NoFreshness));
        assert_eq!(
            post(&reusing, &[("cache-control", "public")], true),
            Err(NotStored::NoFreshness)
        );
        // Then the rules of a GET response.
        assert_eq!(
            post(&reusing, &[("cache-control", "max-age=60, private")], true),
            Err(NotStored::Private)
        );
        assert_eq!(
            post(&reusing, &[MAX_AGE, ("set-cookie", "a=b")], true),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            post_storability(
                &headers(&[("authorization", "Bearer x")]),
                StatusCode::OK,
                &headers(&[MAX_AGE]),
                &reusing,
                true
            ),
            Err(NotStored::Authorization)
        );
        assert_eq!(
            post_storability(
                &HeaderMap::new(),
                StatusCode::PARTIAL_CONTENT,
                &headers(&[MAX_AGE]),
                &reusing,
                true
            ),
            Err(NotStored::PartialContent)
        );
        // A GET is judged by `storability`, whatever this switch.
        assert_eq!(
            store_with(Method::POST, &[], 200, &[MAX_AGE], &reusing),
            Err(NotStored::Method)
        );
    }

    #[test]
    fn a_206_with_one_byte_range_is_stored_as_a_piece() {
        let partial = |response: &[(&str, &str)], status: u16| {
            partial_storability(
                &Method::GET,
                &HeaderMap::new(),
                StatusCode::from_u16(status).unwrap(),
                &headers(response),
                &config(),
            )
        };
        let range = ("content-range", "bytes 0-9/100");
        assert_eq!(
            partial(&[MAX_AGE, range], 206),
            Ok(Piece {
                first: 0,
                last: 9,
                complete_length: Some(100)
            })
        );
        assert_eq!(partial(&[MAX_AGE, range], 200), Err(NotStored::Status));
        assert_eq!(
            partial(
                &[
                    MAX_AGE,
                    ("content-type", "multipart/byteranges; boundary=x")
                ],
                206
            ),
            Err(NotStored::PartialContent)
        );
        assert_eq!(
            partial(&[("cache-control", "max-age=60, no-store"), range], 206),
            Err(NotStored::NoStore)
        );
        assert_eq!(partial(&[range], 206), Err(NotStored::NoFreshness));
        assert_eq!(
            partial(
                &[("cache-control", "max-age=60, must-understand"), range],
                206
            ),
            Err(NotStored::MustUnderstand)
        );
    }

    #[test]
    fn not_stored_reasons_have_cache_status_tokens() {
        assert_eq!(NotStored::NoStore.as_str(), "no-store");
        assert_eq!(NotStored::VaryStar.to_string(), "vary-star");
        assert_eq!(NotStored::PartialContent.as_str(), "partial-content");
    }
}
