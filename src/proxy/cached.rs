//! The request path of a route with a cache (RFC 9111): answer from the store when a stored
//! response may be used, revalidate it when it may not, coalesce concurrent misses, store
//! what may be stored while it streams to the client, serve stale on errors and refresh in the
//! background where the origin allows it, and invalidate after unsafe requests.

use super::body::ResponseBody;
use super::cache_answer::{cache_status, cache_status_name, hit_status, respond, respond_piece};
use super::encode::{HitEncoding, Keep};
use super::{ForwardError, Forwarded, Reply, forward};
use crate::cache::coalesce::{self, Joined, Landing, Leader};
use crate::cache::fill::{Fill, FillHead};
use crate::cache::policy::{self, Received, Usability};
use crate::cache::shared::{Claim, Purge};
use crate::cache::store::CachedResponse;
use crate::cache::{Cache, CacheResult};
use crate::compress::Encoding;
use crate::connection::InterimSink;
use crate::headers::{self, HeaderScan};
use crate::request_body::RequestBody;
use crate::snapshot::Route;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The longest a replica waits for another's origin fetch of a key both missed, before
/// fetching it itself (less when the route's upstream would time out sooner).
const SHARED_FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Conditional and range fields of the client's own, replaced by the cache's when it
/// revalidates (the client's validators are for the client's cache, not ours).
const CLIENT_CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// The answer from a fresh stored response, if the request may have one (GET or HEAD whose
/// own directives accept it); anything else goes through `serve`.
pub(super) fn answer_if_fresh(
    cache: &Cache,
    route: &Route,
    accepted: Option<Encoding>,
    parts: &http::request::Parts,
    host: &HeaderValue,
) -> Option<Response> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    let host = host.to_str().ok()?;
    let key = cache_key(
        route,
        host,
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    );
    let entry = cache.store.lookup(&key, &parts.headers)?;
    let now = SystemTime::now();
    if policy::usability(&entry.freshness, &parts.headers, now) != Usability::Fresh {
        return None;
    }
    cache.metrics.count(CacheResult::Hit);
    let status = hit_status(entry.freshness.ttl(now).as_secs());
    let keep = Keep {
        store: &cache.store,
        key: &key,
    };
    let encoding = HitEncoding::of(route.compression.as_deref(), accepted, Some(keep));
    Some(respond(
        &entry,
        &parts.method,
        &parts.headers,
        now,
        status,
        encoding.as_ref(),
    ))
}

pub(super) async fn serve(
    reply: Reply,
    cache: Arc<Cache>,
    parts: http::request::Parts,
    body: RequestBody,
    host: HeaderValue,
    original_target: Option<Uri>,
) -> Result<Response, Infallible> {
    let interim = reply.interim.clone();
    let response = serve_through(reply, cache, parts, body, &host, original_target).await;
    match interim.filter(InterimSink::is_pending) {
        Some(interim) => Ok(super::after_interim(interim, response).await),
        None => Ok(response),
    }
}

async fn serve_through(
    mut reply: Reply,
    cache: Arc<Cache>,
    mut parts: http::request::Parts,
    body: RequestBody,
    host: &HeaderValue,
    original_target: Option<Uri>,
) -> Response {
    let host = host.to_str().unwrap_or("");
    let target = original_target.unwrap_or_else(|| parts.uri.clone());
    let key = cache_key(
        &reply.route,
        host,
        target.path_and_query().map_or("/", |pq| pq.as_str()),
    );
    let method = parts.method.clone();
    if method != Method::GET && method != Method::HEAD {
        return bypass(reply, cache, parts, body, host, &target, &key).await;
    }

    let now = SystemTime::now();
    let stored = cache.store.lookup(&key, &parts.headers);
    if let Some(entry) = &stored {
        if let Some(answer) = answer_if_usable(
            &cache,
            &reply.route,
            reply.accepted,
            &key,
            entry,
            &parts,
            now,
        ) {
            return reply.answer_from_cache(answer);
        }
    } else if let Some(answer) = answer_from_piece(&cache, &key, &parts, now) {
        return reply.answer_from_cache(answer);
    } else if policy::Directives::parse(parts.headers.get_all(header::CACHE_CONTROL)).only_if_cached
    {
        // The shared tier is a cache too: only-if-cached may be answered from it.
        if let Some(entry) = fresh_from_shared_tier(&cache, &key, &parts).await {
            let answer = answer_shared(&cache, &reply, &key, &entry, &parts);
            return reply.answer_from_cache(answer);
        }
        return only_if_cached_miss(reply, &cache);
    }

    // A miss, or a stored response that must be revalidated: one upstream request per key.
    let leader = match join_flight(&cache, &reply.route, &key, &parts).await {
        Flight::Leader(leader) => Some(leader),
        Flight::Collapsed(entry) => {
            let keep = Keep {
                store: &cache.store,
                key: &key,
            };
            let encoding = HitEncoding::of(
                reply.route.compression.as_deref(),
                reply.accepted,
                Some(keep),
            );
            let answer = answer_collapsed(&cache, &entry, &parts, encoding.as_ref());
            return reply.answer_from_cache(answer);
        }
        Flight::Alone => None,
    };

    // A local miss, or a stored response to revalidate: the other replicas may have a fresh
    // one (bounded by Redis's timeout; any failure is a miss). Followers of the flight are
    // served what the leader finds.
    if let Some(entry) = fresh_from_shared_tier(&cache, &key, &parts).await {
        if let Some(leader) = leader {
            leader.land(Landing::Stored(Arc::clone(&entry)));
        }
        let answer = answer_shared(&cache, &reply, &key, &entry, &parts);
        return reply.answer_from_cache(answer);
    }
    // Nothing fresh in either tier: of the replicas missing it (or holding it stale) at once,
    // one goes to the origin and the others wait, briefly, for its entry in the shared tier.
    let leader = match (leader, &cache.shared) {
        (Some(mut leader), Some(tier)) => {
            let patience = SHARED_FETCH_WAIT
                .min(reply.route.upstream.connect_timeout + reply.route.upstream.response_timeout);
            match tier.claim_fetch(&key, patience).await {
                Claim::Mine => {
                    let (tier, claimed) = (Arc::clone(tier), key.clone());
                    leader.on_end(move || tier.release_fetch(&claimed));
                }
                Claim::Theirs => {
                    let fresh = |entry: &CachedResponse| {
                        policy::usability(&entry.freshness, &parts.headers, SystemTime::now())
                            == Usability::Fresh
                    };
                    if let Some(entry) = tier.wait_for(&key, &parts.headers, patience, fresh).await
                        && let Some(entry) = keep_if_fresh(&cache, &key, &parts, entry)
                    {
                        leader.land(Landing::Stored(Arc::clone(&entry)));
                        let answer = answer_shared(&cache, &reply, &key, &entry, &parts);
                        return reply.answer_from_cache(answer);
                    }
                }
                Claim::Unknown => {}
            }
            Some(leader)
        }
        (leader, _) => leader,
    };

    // The client's own request: what Vary, storability and the answer are judged by. The
    // copy sent upstream may carry the cache's validators instead of the client's.
    let request_headers = parts.headers.clone();
    let revalidating = stored
        .as_ref()
        .filter(|entry| !policy::validators(&entry.headers).is_empty());
    if let Some(entry) = revalidating {
        use_cache_validators(&mut parts.headers, entry);
    }
    let request_time = SystemTime::now();
    let mut request = Request::from_parts(parts, body);
    let sent = reply.send(&mut request, false).await;
    drop(request);
    let fetch = Fetch {
        cache: &cache,
        method: &method,
        request_headers: &request_headers,
        stored: stored.as_ref(),
        revalidating,
    };
    match sent {
        Ok(forwarded) => fetch.answered(reply, key, leader, forwarded, request_time),
        Err(error) => fetch.failed(reply, error),
    }
}

/// The answer from a stored response this request may use as it is: a fresh one, or a stale
/// one within stale-while-revalidate (which also starts its refresh). None when it must be
/// revalidated first.
fn answer_if_usable(
    cache: &Arc<Cache>,
    route: &Arc<Route>,
    accepted: Option<Encoding>,
    key: &str,
    entry: &Arc<CachedResponse>,
    parts: &http::request::Parts,
    now: SystemTime,
) -> Option<Response> {
    let status = match policy::usability(&entry.freshness, &parts.headers, now) {
        Usability::Fresh => {
            cache.metrics.count(CacheResult::Hit);
            let ttl = entry.freshness.ttl(now).as_secs();
            cache_status(&format!("hit; ttl={ttl}"))
        }
        Usability::StaleWhileRevalidate => {
            cache.metrics.count(CacheResult::Stale);
            refresh_in_background(cache, route, key, entry, parts);
            cache_status("hit; detail=stale-while-revalidate")
        }
        Usability::Revalidate => return None,
    };
    let keep = Keep {
        store: &cache.store,
        key,
    };
    let encoding = HitEncoding::of(route.compression.as_deref(), accepted, Some(keep));
    Some(respond(
        entry,
        &parts.method,
        &parts.headers,
        now,
        status,
        encoding.as_ref(),
    ))
}

/// A fresh response for this request from the shared tier, if the cache has one and it
/// holds one; stored locally as well.
async fn fresh_from_shared_tier(
    cache: &Cache,
    key: &str,
    parts: &http::request::Parts,
) -> Option<Arc<CachedResponse>> {
    let tier = cache.shared.as_ref()?;
    let entry = tier.lookup(key, &parts.headers).await?;
    keep_if_fresh(cache, key, parts, entry)
}

/// An entry from the shared tier, stored locally, if this request may use it as it is.
fn keep_if_fresh(
    cache: &Cache,
    key: &str,
    parts: &http::request::Parts,
    entry: CachedResponse,
) -> Option<Arc<CachedResponse>> {
    if policy::usability(&entry.freshness, &parts.headers, SystemTime::now()) != Usability::Fresh {
        return None;
    }
    let entry = Arc::new(entry);
    cache.store.insert(key.to_owned(), Arc::clone(&entry));
    cache.update_gauges();
    Some(entry)
}

/// The answer from a fresh response found in the shared tier.
fn answer_shared(
    cache: &Cache,
    reply: &Reply,
    key: &str,
    entry: &CachedResponse,
    parts: &http::request::Parts,
) -> Response {
    cache.metrics.count(CacheResult::Hit);
    let now = SystemTime::now();
    let ttl = entry.freshness.ttl(now).as_secs();
    let status = cache_status(&format!("hit; ttl={ttl}; detail=shared"));
    let keep = Keep {
        store: &cache.store,
        key,
    };
    let encoding = HitEncoding::of(
        reply.route.compression.as_deref(),
        reply.accepted,
        Some(keep),
    );
    respond(
        entry,
        &parts.method,
        &parts.headers,
        now,
        status,
        encoding.as_ref(),
    )
}

/// A 206 from a stored piece (RFC 9111 §3.3) for a GET whose single range lies inside it,
/// while the piece is fresh. Conditional requests (but If-Range, which `range_in_piece` weighs)
/// go on to the origin: a piece is not the whole representation a 304 or 412 would judge.
fn answer_from_piece(
    cache: &Cache,
    key: &str,
    parts: &http::request::Parts,
    now: SystemTime,
) -> Option<Response> {
    if parts.method != Method::GET
        || !parts.headers.contains_key(header::RANGE)
        || [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
        ]
        .iter()
        .any(|name| parts.headers.contains_key(name))
    {
        return None;
    }
    let entry = cache.store.lookup_piece(key, &parts.headers)?;
    let piece = entry.piece?;
    if policy::usability(&entry.freshness, &parts.headers, now) != Usability::Fresh {
        return None;
    }
    let range = policy::range_in_piece(&parts.headers, &entry.headers, piece)?;
    cache.metrics.count(CacheResult::Hit);
    let ttl = entry.freshness.ttl(now).as_secs();
    Some(respond_piece(
        &entry,
        piece,
        range,
        now,
        cache_status(&format!("hit; ttl={ttl}; detail=partial")),
    ))
}

/// RFC 9111 §5.2.1.7: a client that accepts only a stored response, when there is none.
fn only_if_cached_miss(reply: Reply, cache: &Cache) -> Response {
    cache.metrics.count(CacheResult::Miss);
    let mut response = reply.exchange_local(
        StatusCode::GATEWAY_TIMEOUT,
        "not in the cache (only-if-cached)",
    );
    response.headers_mut().insert(
        cache_status_name(),
        cache_status("fwd=miss; detail=only-if-cached"),
    );
    response
}

/// Where a request that must go upstream stands among concurrent requests for its key.
enum Flight {
    /// It goes upstream for the key and lands what it gets for the requests waiting on it.
    Leader(Leader),
    /// The leader's response was stored meanwhile and suits this request.
    Collapsed(Arc<CachedResponse>),
    /// It goes upstream on its own: a HEAD, or the leader's response is of no use to it.
    Alone,
}

/// Joins the key's flight: a GET either leads it or waits (within the upstream's timeouts)
/// for the response the leader stores.
async fn join_flight(
    cache: &Cache,
    route: &Route,
    key: &str,
    parts: &http::request::Parts,
) -> Flight {
    // A range request may bring back a piece, of no use to a request for the whole.
    if parts.method != Method::GET || parts.headers.contains_key(header::RANGE) {
        return Flight::Alone;
    }
    let arrivals = match cache.coalescer.join(key) {
        Joined::Leader(leader) => return Flight::Leader(leader),
        Joined::Follower(arrivals) => arrivals,
    };
    cache.metrics.coalesced.inc();
    let patience = route.upstream.connect_timeout + route.upstream.response_timeout;
    if let Ok(Landing::Stored(entry)) =
        tokio::time::timeout(patience, coalesce::wait(arrivals)).await
        && entry.piece.is_none()
        && entry.matches(&parts.headers)
    {
        return Flight::Collapsed(entry);
    }
    // Not storable after all (or it took too long): go upstream ourselves.
    Flight::Alone
}

/// The answer from the response another request for the key just stored.
fn answer_collapsed(
    cache: &Cache,
    entry: &CachedResponse,
    parts: &http::request::Parts,
    encoding: Option<&HitEncoding<'_>>,
) -> Response {
    cache.metrics.count(CacheResult::Hit);
    let now = SystemTime::now();
    let ttl = entry.freshness.ttl(now).as_secs();
    let status = cache_status(&format!("hit; ttl={ttl}; collapsed"));
    respond(entry, &parts.method, &parts.headers, now, status, encoding)
}

/// Puts the cache's validators for `entry` in place of the client's conditional and range
/// fields, so that the upstream answers the cache's question.
fn use_cache_validators(headers: &mut HeaderMap, entry: &CachedResponse) {
    for name in &CLIENT_CONDITIONALS {
        headers.remove(name);
    }
    headers.remove(header::RANGE);
    for (name, value) in policy::validators(&entry.headers) {
        headers.insert(name, value);
    }
}

/// A GET or HEAD the store could not answer alone, once sent upstream: what judging the
/// upstream's answer takes.
struct Fetch<'a> {
    cache: &'a Arc<Cache>,
    method: &'a Method,
    /// The client's own request headers (not the copy sent upstream).
    request_headers: &'a HeaderMap,
    stored: Option<&'a Arc<CachedResponse>>,
    /// The stored response the request asked the upstream to validate, if it did.
    revalidating: Option<&'a Arc<CachedResponse>>,
}

impl Fetch<'_> {
    /// The upstream gave no answer: a stale response where stale-if-error allows, else the
    /// failure.
    fn failed(&self, reply: Reply, error: ForwardError) -> Response {
        if let Some(entry) = self
            .stored
            .filter(|e| policy::usable_on_error(&e.freshness, SystemTime::now()))
        {
            return serve_stale_on_error(
                reply,
                self.cache,
                entry,
                self.method,
                self.request_headers,
                None,
            );
        }
        let mut response = reply.failure(error);
        response.headers_mut().insert(
            cache_status_name(),
            cache_status("fwd=miss; detail=upstream-error"),
        );
        self.cache.metrics.count(CacheResult::Miss);
        response
    }

    /// The upstream answered: a 304 refreshes the stored response, a server error may be
    /// covered by a stale one, and anything else goes to the client (stored if it may be).
    fn answered(
        &self,
        reply: Reply,
        key: String,
        leader: Option<Leader>,
        forwarded: Forwarded,
        request_time: SystemTime,
    ) -> Response {
        let status = forwarded.response.status();
        let response_time = SystemTime::now();
        let received = Received {
            request_time,
            response_time,
        };
        if let Some(entry) = self.revalidating
            && status == StatusCode::NOT_MODIFIED
        {
            return self.revalidated(reply, key, leader, entry, forwarded, received);
        }
        if status.is_server_error()
            && let Some(entry) = self
                .stored
                .filter(|e| policy::usable_on_error(&e.freshness, response_time))
        {
            release(forwarded);
            return serve_stale_on_error(
                reply,
                self.cache,
                entry,
                self.method,
                self.request_headers,
                Some(status),
            );
        }
        self.pass_on(reply, key, leader, forwarded, received)
    }

    /// A 304 to the cache's validators: the stored response, refreshed, stored again and
    /// answered from.
    fn revalidated(
        &self,
        reply: Reply,
        key: String,
        leader: Option<Leader>,
        entry: &CachedResponse,
        forwarded: Forwarded,
        received: Received,
    ) -> Response {
        let cache = self.cache;
        cache.metrics.count(CacheResult::Revalidated);
        let refreshed = refresh(cache, entry, forwarded.response.headers(), received);
        if let Some(tier) = &cache.shared {
            tier.write(&key, &refreshed);
        }
        cache.store.insert(key.clone(), Arc::clone(&refreshed));
        cache.update_gauges();
        if let Some(leader) = leader {
            leader.land(Landing::Stored(Arc::clone(&refreshed)));
        }
        // Cookies the 304 set but the cache does not store are this client's alone: passed
        // on to it, not dropped.
        let own_cookies: Vec<HeaderValue> = if cache.policy.store_set_cookie {
            Vec::new()
        } else {
            forwarded
                .response
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect()
        };
        release(forwarded);
        let response_time = received.response_time;
        let ttl = refreshed.freshness.ttl(response_time).as_secs();
        let status = cache_status(&format!("fwd=stale; fwd-status=304; ttl={ttl}"));
        let keep = Keep {
            store: &cache.store,
            key: &key,
        };
        let encoding = HitEncoding::of(
            reply.route.compression.as_deref(),
            reply.accepted,
            Some(keep),
        );
        let mut answer = respond(
            &refreshed,
            self.method,
            self.request_headers,
            response_time,
            status,
            encoding.as_ref(),
        );
        for cookie in own_cookies {
            answer.headers_mut().append(header::SET_COOKIE, cookie);
        }
        reply.answer_from_cache(answer)
    }

    /// The upstream's response to the client, stored as it streams when it may be stored.
    fn pass_on(
        &self,
        reply: Reply,
        key: String,
        leader: Option<Leader>,
        forwarded: Forwarded,
        received: Received,
    ) -> Response {
        let cache = self.cache;
        let status = forwarded.response.status();
        let fwd = if self.stored.is_some() {
            "stale"
        } else {
            "miss"
        };
        cache.metrics.count(CacheResult::Miss);
        let storable = if *self.method != Method::GET {
            Err(policy::NotStored::Method)
        } else if status == StatusCode::PARTIAL_CONTENT {
            policy::partial_storability(
                self.method,
                self.request_headers,
                status,
                forwarded.response.headers(),
                &cache.policy,
            )
            .map(Some)
        } else {
            policy::storability(
                self.method,
                self.request_headers,
                status,
                forwarded.response.headers(),
                &cache.policy,
            )
            .map(|()| None)
        };
        match storable {
            Ok(piece) => {
                let fill = start_fill(
                    cache,
                    key,
                    leader,
                    &forwarded,
                    self.request_headers,
                    received,
                    piece,
                );
                let stored_note = if fill.is_some() {
                    "stored"
                } else {
                    "detail=too-large"
                };
                let mut response = reply.answer_upstream(forwarded, fill);
                response.headers_mut().insert(
                    cache_status_name(),
                    cache_status(&format!(
                        "fwd={fwd}; fwd-status={}; {stored_note}",
                        status.as_u16()
                    )),
                );
                response
            }
            Err(reason) => {
                drop(leader);
                let mut response = reply.answer_upstream(forwarded, None);
                response.headers_mut().insert(
                    cache_status_name(),
                    cache_status(&format!(
                        "fwd={fwd}; fwd-status={}; detail={}",
                        status.as_u16(),
                        not_stored_detail(reason)
                    )),
                );
                response
            }
        }
    }
}

type Response = http::Response<ResponseBody>;

/// The cache key of a request to `route`: its host and target and, on a side of a split, the
/// side's upstream (two sides may answer one URL differently).
fn cache_key(route: &Route, host: &str, target: &str) -> String {
    let key = policy::cache_key(host, target);
    match &route.cache_side {
        None => key,
        Some(side) => side_key(&key, &side.upstream),
    }
}

/// A key as one side of a split stores it: a space (which no host or target holds), then the
/// side's upstream.
pub fn side_key(key: &str, upstream: &str) -> String {
    let mut keyed = String::with_capacity(key.len() + 1 + upstream.len());
    keyed.push_str(key);
    keyed.push(' ');
    keyed.push_str(upstream);
    keyed
}

/// Unsafe (and other uncacheable) methods go straight through; a successful unsafe request
/// invalidates what it may have changed (RFC 9111 §4.4).
async fn bypass(
    mut reply: Reply,
    cache: Arc<Cache>,
    parts: http::request::Parts,
    body: RequestBody,
    host: &str,
    target: &Uri,
    key: &str,
) -> Response {
    cache.metrics.count(CacheResult::Bypass);
    let method = parts.method.clone();
    // What storing the response for GETs takes, kept only where the cache may do so.
    let post = (method == Method::POST && cache.policy.store_post_responses)
        .then(|| (parts.headers.clone(), SystemTime::now()));
    let mut request = Request::from_parts(parts, body);
    let sent = reply.send(&mut request, false).await;
    drop(request);
    match sent {
        Ok(forwarded) => {
            let status = forwarded.response.status();
            let targets = policy::invalidation_targets(
                &method,
                status,
                host,
                target,
                forwarded.response.headers(),
            );
            if !targets.is_empty() {
                let mut invalidated = Vec::new();
                for target_key in &targets {
                    match &reply.route.cache_side {
                        None => invalidated.push(target_key.clone()),
                        // What one side changed, the others' copies show as well.
                        Some(side) => invalidated.extend(
                            side.all
                                .iter()
                                .map(|upstream| side_key(target_key, upstream)),
                        ),
                    }
                }
                for key in &invalidated {
                    cache.store.invalidate(key);
                }
                if let Some(tier) = &cache.shared {
                    tier.purge(invalidated.into_iter().map(Purge::Key).collect());
                }
                cache.update_gauges();
                tracing::debug!(cache = %cache.name, key, invalidated = ?targets, request_id = reply.request_id.to_str().unwrap_or("-"), "invalidated after an unsafe request");
            }
            // After the invalidation above, which removed the target's older response.
            let fill = post.and_then(|(request_headers, request_time)| {
                let at = (host, target, key);
                store_post_response(&cache, at, &forwarded, &request_headers, request_time)
            });
            let status = if fill.is_some() {
                cache_status(&format!(
                    "fwd=method; fwd-status={}; stored",
                    status.as_u16()
                ))
            } else {
                cache_status("fwd=method")
            };
            let mut response = reply.answer_upstream(forwarded, fill);
            response.headers_mut().insert(cache_status_name(), status);
            response
        }
        Err(error) => reply.failure(error),
    }
}

/// RFC 9110 §9.3.3: the fill that stores a POST's response as its target's, for later GETs,
/// when it may be.
fn store_post_response(
    cache: &Arc<Cache>,
    (host, target, key): (&str, &Uri, &str),
    forwarded: &Forwarded,
    request_headers: &HeaderMap,
    request_time: SystemTime,
) -> Option<Fill> {
    let response = &forwarded.response;
    let names_target = policy::content_location_is_target(host, target, response.headers());
    policy::post_storability(
        request_headers,
        response.status(),
        response.headers(),
        &cache.policy,
        names_target,
    )
    .ok()?;
    let received = Received {
        request_time,
        response_time: SystemTime::now(),
    };
    start_fill(
        cache,
        key.to_owned(),
        None,
        forwarded,
        request_headers,
        received,
        None,
    )
}

/// A stored response refreshed by a 304 (RFC 9111 §4.3.4): its headers updated, its
/// freshness computed anew.
fn refresh(
    cache: &Cache,
    entry: &CachedResponse,
    not_modified: &HeaderMap,
    received: Received,
) -> Arc<CachedResponse> {
    let headers =
        policy::refresh_headers(&entry.headers, not_modified, cache.policy.store_set_cookie);
    Arc::new(CachedResponse {
        status: entry.status,
        freshness: policy::freshness(&headers, received, &cache.policy),
        headers,
        body: entry.body.clone(),
        vary: entry.vary.clone(),
        vary_values: entry.vary_values.clone(),
        piece: entry.piece,
        encoded: CachedResponse::encoded_copies_of(entry),
    })
}

fn start_fill(
    cache: &Arc<Cache>,
    key: String,
    leader: Option<Leader>,
    forwarded: &Forwarded,
    request_headers: &HeaderMap,
    received: Received,
    piece: Option<policy::Piece>,
) -> Option<Fill> {
    let response_headers = forwarded.response.headers();
    let mut stored_headers = response_headers.clone();
    let scan = HeaderScan::of_response(&stored_headers);
    headers::remove_hop_by_hop(&mut stored_headers, &scan, false);
    let vary = policy::vary(response_headers);
    let vary_values = policy::vary_values(&vary, request_headers);
    let expected_len = response_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let head = FillHead {
        status: forwarded.response.status(),
        freshness: policy::freshness(response_headers, received, &cache.policy),
        headers: stored_headers,
        vary,
        vary_values,
        piece,
    };
    Fill::start(Arc::clone(cache), key, leader, head, expected_len)
}

/// Gives a bodiless upstream response's connection back (a 304 or an error page we drop).
fn release(forwarded: Forwarded) {
    let Forwarded {
        response,
        pool_return,
        in_flight,
    } = forwarded;
    // An ended body returns its connection on construction; otherwise it is closed.
    drop(ResponseBody::upstream(response.into_body(), pool_return));
    drop(in_flight);
}

/// Serves a stale stored response because the origin failed (RFC 5861 stale-if-error);
/// `upstream_status` is the failed answer's status, `None` when there was no answer.
fn serve_stale_on_error(
    reply: Reply,
    cache: &Cache,
    entry: &CachedResponse,
    method: &Method,
    request_headers: &HeaderMap,
    upstream_status: Option<StatusCode>,
) -> Response {
    cache.metrics.count(CacheResult::Stale);
    let status = match upstream_status {
        Some(code) => cache_status(&format!(
            "hit; fwd=stale; fwd-status={}; detail=stale-if-error",
            code.as_u16()
        )),
        None => cache_status("hit; fwd=stale; detail=stale-if-error"),
    };
    // Rare enough not to keep an encoded copy for.
    let encoding = HitEncoding::of(reply.route.compression.as_deref(), reply.accepted, None);
    let answer = respond(
        entry,
        method,
        request_headers,
        SystemTime::now(),
        status,
        encoding.as_ref(),
    );
    reply.answer_from_cache(answer)
}

fn not_stored_detail(reason: policy::NotStored) -> &'static str {
    reason.as_str()
}

/// Serves stale now and refreshes once in the background (RFC 5861 stale-while-revalidate):
/// only one refresh per key at a time.
fn refresh_in_background(
    cache: &Arc<Cache>,
    route: &Arc<Route>,
    key: &str,
    entry: &Arc<CachedResponse>,
    parts: &http::request::Parts,
) {
    let Joined::Leader(leader) = cache.coalescer.join(key) else {
        return;
    };
    let mut request = http::Request::new(RequestBody::Empty);
    *request.method_mut() = Method::GET;
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = http::Version::HTTP_11;
    let mut headers = parts.headers.clone();
    use_cache_validators(&mut headers, entry);
    *request.headers_mut() = headers;
    let (head, body) = request.into_parts();
    let (cache, route, entry) = (Arc::clone(cache), Arc::clone(route), Arc::clone(entry));
    // Bounded: a refresh whose upstream stalls mid-body must not hold the key's flight (and
    // with it every later refresh of the key) for ever.
    let limit = route.upstream.connect_timeout + route.upstream.response_timeout * 2;
    let cache_name = Arc::clone(&cache.name);
    tokio::spawn(async move {
        let refresh = async move {
            let request_headers = head.headers.clone();
            let request_time = SystemTime::now();
            let mut chosen = None;
            let request_id = head
                .headers
                .get(&crate::headers::X_REQUEST_ID)
                .cloned()
                .unwrap_or(HeaderValue::from_static("-"));
            // gatehouse's own request: hashed by the client's key when it has one (a header,
            // a cookie, the path), round robin for `client_ip`.
            let key = route.upstream.key_hash(&head.uri, &head.headers, None);
            let mut request = Request::from_parts(head, body);
            let result = forward(
                &route.upstream,
                &mut chosen,
                None,
                &mut request,
                &mut None,
                key,
                Instant::now(),
                &request_id,
                None,
                false,
            )
            .await;
            let Ok(forwarded) = result else {
                return; // The leader drops: nothing stored, the stale entry stays.
            };
            let received = Received {
                request_time,
                response_time: SystemTime::now(),
            };
            let status = forwarded.response.status();
            if status == StatusCode::NOT_MODIFIED {
                let refreshed = refresh(&cache, &entry, forwarded.response.headers(), received);
                if let Some(tier) = &cache.shared {
                    tier.write(leader.key(), &refreshed);
                }
                cache
                    .store
                    .insert(leader.key().to_owned(), Arc::clone(&refreshed));
                cache.update_gauges();
                cache.metrics.count(CacheResult::Revalidated);
                leader.land(Landing::Stored(refreshed));
                release(forwarded);
                return;
            }
            let storable = policy::storability(
                &Method::GET,
                &request_headers,
                status,
                forwarded.response.headers(),
                &cache.policy,
            );
            if storable.is_err() {
                if status.is_success() {
                    // The origin no longer lets this be stored: stop serving the old copy.
                    cache.store.invalidate(leader.key());
                    cache.update_gauges();
                }
                release(forwarded);
                return;
            }
            let key = leader.key().to_owned();
            let Some(mut fill) = start_fill(
                &cache,
                key,
                Some(leader),
                &forwarded,
                &request_headers,
                received,
                None,
            ) else {
                release(forwarded);
                return;
            };
            let Forwarded {
                response,
                pool_return,
                in_flight,
            } = forwarded;
            let mut body = ResponseBody::upstream(response.into_body(), pool_return);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return;
                };
                if let Some(data) = frame.data_ref()
                    && !fill.push(data)
                {
                    return;
                }
            }
            drop(in_flight);
            fill.finish();
        };
        if tokio::time::timeout(limit, refresh).await.is_err() {
            tracing::warn!(cache = %cache_name, "background cache refresh gave up after {limit:?}");
        }
    });
}
