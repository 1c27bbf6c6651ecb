//! The admin listener: `/` (the live status page), `/healthz` (the process is alive),
//! `/readyz` (serving, not draining), `/metrics` (Prometheus text format) and `/status` (the
//! configuration in force with live numbers, as JSON).

use crate::metrics::Metrics;
use crate::proxy::body::ResponseBody;
use crate::proxy::local_response;
use crate::server::DrainWatch;
use crate::snapshot::SharedSnapshot;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};
use tokio::net::TcpListener;

/// The live status page: one self-contained HTML file that polls `/status`.
const STATUS_PAGE: &str = include_str!("status.html");

/// What the admin endpoints report on.
pub struct AdminState {
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    pub caches: Arc<crate::cache::CacheRegistry>,
    pub reloader: Arc<crate::reload::Reloader>,
    /// False once shutdown has begun, so that load balancers in front stop sending traffic.
    pub ready: AtomicBool,
    /// The admin socket is bound to a loopback address: without a token, writes are let in
    /// only then (judged by the socket, which a reload does not move, not by the config).
    pub listener_loopback: bool,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut drain: DrainWatch) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.signalled() => break,
        };
        let state = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        let mut conn_drain = drain.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = conn_drain.signalled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// The answer to a write request the admin write policy refuses; `None` lets it through.
fn refuse_write(state: &AdminState, request: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    use crate::policy::admin_auth::WriteDecision;
    let writes = &state.snapshot.load().admin_writes;
    let decision = writes.decide(
        request.headers().get(header::AUTHORIZATION),
        state.listener_loopback,
    );
    let path = request.uri().path();
    match decision {
        WriteDecision::Allow => None,
        WriteDecision::Disabled => {
            tracing::warn!(path, "admin write refused: [admin] writes = false");
            Some(local_response(
                StatusCode::FORBIDDEN,
                "admin writes are turned off ([admin] writes = false)",
            ))
        }
        WriteDecision::NoToken => {
            tracing::warn!(
                path,
                "admin write refused: no [admin] token_file and the admin listener is not on loopback"
            );
            Some(local_response(
                StatusCode::FORBIDDEN,
                "admin writes need [admin] token_file on a listener reachable from the network",
            ))
        }
        WriteDecision::Unauthorized => {
            tracing::warn!(path, "admin write refused: missing or wrong bearer token");
            let mut response = local_response(
                StatusCode::UNAUTHORIZED,
                "admin writes need Authorization: Bearer <token>",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
            );
            Some(response)
        }
    }
}

async fn handle(state: &AdminState, request: Request<Incoming>) -> Response<ResponseBody> {
    if request.uri().path() == "/cache/purge" {
        if request.method() == Method::POST
            && let Some(refused) = refuse_write(state, &request)
        {
            return refused;
        }
        return purge(state, request).await;
    }
    if request.uri().path() == "/reload" {
        if request.method() != Method::POST {
            let mut response =
                local_response(StatusCode::METHOD_NOT_ALLOWED, "/reload accepts POST");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        if let Some(refused) = refuse_write(state, &request) {
            return refused;
        }
        let report = state.reloader.reload("POST /reload").await;
        let status = if report.ok {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return json_response(status, &serde_json::to_value(&report).unwrap_or_default());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response =
            local_response(StatusCode::METHOD_NOT_ALLOWED, "admin endpoints accept GET");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/" => {
            let mut response = text(StatusCode::OK, STATUS_PAGE);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            }
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/status" => {
            let body = status_json(state).to_string();
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => local_response(
            StatusCode::NOT_FOUND,
            "admin endpoints: / (status page) /healthz /readyz /metrics /status, POST /reload, POST /cache/purge",
        ),
    }
}

/// What `POST /cache/purge` takes: an exact URL or a URL prefix, optionally one cache.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    cache: Option<String>,
}

const MAX_PURGE_BODY: usize = 64 * 1024;

/// `POST /cache/purge` with `{"url": "http://host/path?q"}` (exact) or
/// `{"prefix": "http://host/orders"}`, and optionally `"cache": "NAME"`; answers how many
/// entries went.
async fn purge(state: &AdminState, request: Request<Incoming>) -> Response<ResponseBody> {
    if request.method() != Method::POST {
        let mut response =
            local_response(StatusCode::METHOD_NOT_ALLOWED, "/cache/purge accepts POST");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let body = match Limited::new(request.into_body(), MAX_PURGE_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return local_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "purge request too large or unreadable",
            );
        }
    };
    let purge: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(purge) => purge,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": format!("expected {{\"url\": ...}} or {{\"prefix\": ...}}: {e}") }),
            );
        }
    };
    let (target, exact) = match (&purge.url, &purge.prefix) {
        (Some(url), None) => (url, true),
        (None, Some(prefix)) => (prefix, false),
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "give exactly one of \"url\" and \"prefix\"" }),
            );
        }
    };
    let Some(key) = purge_key(target) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("{target:?} is not an absolute http(s) URL") }),
        );
    };
    let caches: Vec<_> = state
        .caches
        .all()
        .into_iter()
        .filter(|c| purge.cache.as_deref().is_none_or(|name| *c.name == *name))
        .collect();
    if caches.is_empty() {
        return json_response(StatusCode::NOT_FOUND, &json!({ "error": "no such cache" }));
    }
    // The sides of a split route store a URL under keys of their own (`side_key`).
    let upstream_names: Vec<String> = if exact {
        state.snapshot.load().upstreams.keys().cloned().collect()
    } else {
        Vec::new()
    };
    let mut purged = 0;
    for cache in &caches {
        purged += if exact {
            usize::from(cache.store.invalidate(&key))
                + upstream_names
                    .iter()
                    .filter(|upstream| {
                        cache
                            .store
                            .invalidate(&crate::proxy::side_key(&key, upstream))
                    })
                    .count()
        } else {
            cache.store.purge_prefix(&key)
        };
        cache.update_gauges();
        // The other replicas drop their copies too (and Redis its own), in the background.
        if let Some(tier) = &cache.shared {
            let purges = if exact {
                std::iter::once(key.clone())
                    .chain(
                        upstream_names
                            .iter()
                            .map(|upstream| crate::proxy::side_key(&key, upstream)),
                    )
                    .map(crate::cache::shared::Purge::Key)
                    .collect()
            } else {
                vec![crate::cache::shared::Purge::Prefix(key.clone())]
            };
            tier.purge(purges);
        }
    }
    tracing::info!(target = %target, exact, purged, "cache purge");
    json_response(StatusCode::OK, &json!({ "purged": purged }))
}

/// The cache key of an absolute URL (or of a URL prefix).
fn purge_key(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let authority = uri.authority()?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return None;
    }
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Some(crate::cache::policy::cache_key(authority.as_str(), path))
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = text(status, value.to_string());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The configuration in force: listeners, routes, upstreams with each server's live numbers.
/// Each `[limit.NAME]` in force: its settings and what it decided so far (a limit no route
/// names has decided nothing).
fn limits_json(snapshot: &crate::snapshot::Snapshot) -> serde_json::Map<String, serde_json::Value> {
    let in_use: std::collections::HashMap<&str, &crate::limit::RateLimiter> = snapshot
        .router
        .entries()
        .flat_map(|e| e.target.rate_limits.limiters())
        .map(|limiter| (&*limiter.name, &**limiter))
        .collect();
    snapshot
        .config
        .rate_limits
        .iter()
        .map(|(name, settings)| {
            let live = in_use.get(name.as_str());
            (
                name.clone(),
                json!({
                    "rate": settings.rate.as_ref().map(|r| r.get_ref()),
                    "concurrency": settings.concurrency,
                    "burst": settings.burst,
                    "nodelay": settings.nodelay,
                    "dry_run": settings.dry_run,
                    "shared": *settings.shared.get_ref(),
                    "on_redis_error": settings.on_redis_error,
                    "key": settings.key.get_ref().0,
                    "keys": live.map_or(0, |l| l.keys()),
                    "allowed": live.map_or(0, |l| l.allowed()),
                    "delayed": live.map_or(0, |l| l.delayed()),
                    "rejected": live.map_or(0, |l| l.rejected()),
                    "rejected_concurrency": live.map_or(0, |l| l.rejected_concurrency()),
                    "dry_run_rejected": live.map_or(0, |l| l.dry_run_rejected()),
                }),
            )
        })
        .collect()
}

/// A route's compression: its settings and, per coding, what it compressed so far.
fn compression_json(compression: &crate::compress::Compression) -> serde_json::Value {
    let encodings: Vec<_> = compression
        .offered
        .iter()
        .map(|offered| {
            json!({
                "encoding": offered.encoding.token(),
                "level": offered.level,
                "responses": offered.responses.get(),
                "bytes_in": offered.bytes_in.get(),
                "bytes_out": offered.bytes_out.get(),
            })
        })
        .collect();
    json!({
        "name": compression.name,
        "min_length": compression.min_length,
        "encodings": encodings,
    })
}

/// A route's split (sides, weights, sticky key, requests per side) and mirror (settings,
/// copies outstanding and their outcomes); null for what it lacks.
fn traffic_json(route: &crate::snapshot::Route) -> (serde_json::Value, serde_json::Value) {
    let split = route
        .split
        .as_ref()
        .map_or(serde_json::Value::Null, |split| {
            let sides: Vec<_> = split
            .names
            .iter()
            .zip(&split.weights)
            .zip(&split.counts)
            .map(|((upstream, weight), count)| {
                json!({ "upstream": &**upstream, "weight": weight, "requests": count.get() })
            })
            .collect();
            json!({
                "split_by": split.chooser.split_by().map(|by| by.to_string()),
                "total_weight": split.chooser.total(),
                "sides": sides,
            })
        });
    let mirror = route
        .mirror
        .as_ref()
        .map_or(serde_json::Value::Null, |mirror| {
            json!({
                "upstream": &*mirror.upstream.name,
                "percent": mirror.percent,
                "max_body_bytes": mirror.max_body_bytes,
                "max_in_flight": mirror.max_in_flight,
                "in_flight": mirror.in_flight(),
                "sent": mirror.sent.get(),
                "failed": mirror.failed.get(),
                "dropped": mirror.dropped.get(),
                "skipped": mirror.skipped.get(),
            })
        });
    (split, mirror)
}

/// A route's CORS policy (and forward auth) with what they decided so far.
fn route_policies_json(route: &crate::snapshot::Route) -> serde_json::Value {
    let cors = route.cors.as_ref().map(|cors| {
        json!({
            "name": cors.name,
            "credentials": cors.credentials,
            "preflights_allowed": cors.preflights_allowed.get(),
            "preflights_denied": cors.preflights_denied.get(),
        })
    });
    let forward_auth = route.forward_auth.as_ref().map(|target| {
        let auth = &target.policy;
        json!({
            "name": auth.name,
            "upstream": auth.upstream,
            "uri": auth.uri.as_str(),
            "timeout_ms": auth.timeout.as_millis() as u64,
            "cache_for_ms": auth.cache_for.as_millis() as u64,
            "cached_admissions": auth.remembered_count(),
            "allowed": auth.outcomes.allowed.get(),
            "denied": auth.outcomes.denied.get(),
            "error": auth.outcomes.error.get(),
            "cached": auth.outcomes.cached.get(),
        })
    });
    json!({ "cors": cors, "forward_auth": forward_auth })
}

/// A route's authentication for /status: what it checks, with its users or keys in force.
fn auth_json(auth: &crate::auth::RouteAuth) -> serde_json::Value {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let basic = auth.basic.as_ref().map(|(basic, counters)| {
        let (users, loaded_at) = basic.users();
        json!({
            "name": basic.name,
            "realm": basic.realm,
            "htpasswd": basic.path,
            "users": users,
            "loaded_at": unix(loaded_at),
            "last_error": basic.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "allowed": counters.allowed.get(),
            "missing": counters.missing.get(),
            "denied": counters.denied.get(),
        })
    });
    let jwt = auth.jwt.as_ref().map(|(jwt, counters)| {
        let (keys, loaded_at) = jwt.key_count();
        let source = match &jwt.settings.source {
            crate::auth::KeySource::File(path) => json!({ "jwks_file": path }),
            crate::auth::KeySource::Url { url, refresh, .. } => {
                json!({ "jwks_url": url, "refresh_seconds": refresh.as_secs() })
            }
            crate::auth::KeySource::None => json!({ "secret_only": true }),
        };
        json!({
            "name": jwt.name,
            "keys": keys,
            "source": source,
            "keys_loaded_at": loaded_at.map(unix),
            "last_error": jwt.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "allowed": counters.allowed.get(),
            "missing": counters.missing.get(),
            "denied": counters.denied.get(),
        })
    });
    json!({ "basic": basic, "jwt": jwt })
}

pub fn status_json(state: &AdminState) -> serde_json::Value {
    let snapshot = state.snapshot.load();
    let config = &snapshot.config;
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| json!({ "name": l.name.get_ref(), "bind": l.bind.get_ref() }))
        .collect();
    // Live numbers by route name (the router holds the compiled routes in match order).
    let route_totals: std::collections::HashMap<&str, (u64, f64)> = snapshot
        .router
        .entries()
        .map(|e| {
            let duration = &e.target.metrics.duration;
            let (count, sum) = match &e.target.split {
                None => (duration.get_sample_count(), duration.get_sample_sum()),
                // Counted by the side that took them (the route's own series, labelled by
                // its primary upstream, is one of the sides').
                Some(split) => split.sides.iter().fold((0, 0.0), |(count, sum), side| {
                    let duration = &side.metrics.duration;
                    (
                        count + duration.get_sample_count(),
                        sum + duration.get_sample_sum(),
                    )
                }),
            };
            (&*e.target.name, (count, sum))
        })
        .collect();
    let traffic: std::collections::HashMap<&str, (serde_json::Value, serde_json::Value)> = snapshot
        .router
        .entries()
        .map(|e| (&*e.target.name, traffic_json(&e.target)))
        .collect();
    let compressions: std::collections::HashMap<&str, serde_json::Value> = snapshot
        .router
        .entries()
        .filter_map(|e| {
            let compression = e.target.compression.as_deref()?;
            Some((&*e.target.name, compression_json(compression)))
        })
        .collect();
    let paths: std::collections::HashMap<&str, &str> = snapshot
        .router
        .entries()
        .map(|e| (&*e.target.name, e.target.path.as_str()))
        .collect();
    // Each route's edge policies (CORS, forward auth) with their live counts.
    let policies: std::collections::HashMap<&str, serde_json::Value> = snapshot
        .router
        .entries()
        .map(|e| (&*e.target.name, route_policies_json(&e.target)))
        .collect();
    let auths: std::collections::HashMap<&str, serde_json::Value> = snapshot
        .router
        .entries()
        .filter_map(|e| Some((&*e.target.name, auth_json(e.target.auth.as_deref()?))))
        .collect();
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| {
            let name = r.display_name();
            let (requests, duration_sum) =
                route_totals.get(name.as_str()).copied().unwrap_or((0, 0.0));
            json!({
                "requests": requests,
                "duration_seconds_sum": duration_sum,
                "name": r.display_name(),
                "listener": r.listener.as_ref().map(|l| l.get_ref().clone()),
                "host": r.host.get_ref(),
                "path_prefix": r.path_prefix.get_ref(),
                "path": paths.get(name.as_str()),
                "methods": r.methods.iter().map(|m| m.get_ref().as_str()).collect::<Vec<_>>(),
                "clients": r.clients.iter().map(|c| c.get_ref().as_str()).collect::<Vec<_>>(),
                "match_header": r.match_header.iter().map(|m| m.name.get_ref().as_str()).collect::<Vec<_>>(),
                "match_query": r.match_query.iter().map(|m| m.name.get_ref().as_str()).collect::<Vec<_>>(),
                "rewrite": r.rewrite.iter().map(|w| json!({
                    "regex": w.regex.get_ref(),
                    "to": w.to.get_ref(),
                    "flag": w.flag.as_ref().map(|f| f.get_ref().as_str()),
                })).collect::<Vec<_>>(),
                "return": r.answer.as_ref().map(|a| json!({
                    "status": a.status.get_ref(),
                    "location": a.location.as_ref().map(|l| l.get_ref().as_str()),
                })),
                "files": r.files.as_ref().map(|f| json!({
                    "root": f.root.get_ref(),
                    "try_files": f.try_files.as_ref().map(|t| t.get_ref()),
                })),
                "replace_prefix": r.replace_prefix.as_ref().map(|p| p.get_ref().as_str()),
                "upstream": r.primary_upstream().map(|u| u.get_ref()),
                "strip_prefix": r.strip_prefix,
                "limits": r.limits.iter().map(|l| l.get_ref().as_str()).collect::<Vec<_>>(),
                "access": r.access.iter().map(|a| a.get_ref().as_str()).collect::<Vec<_>>(),
                "compression": compressions.get(name.as_str()),
                "split": traffic.get(name.as_str()).map(|t| &t.0),
                "mirror": traffic.get(name.as_str()).map(|t| &t.1),
                "cors": policies.get(name.as_str()).map(|p| &p["cors"]),
                "forward_auth": policies.get(name.as_str()).map(|p| &p["forward_auth"]),
                "auth": auths.get(name.as_str()),
            })
        })
        .collect();
    let now = std::time::Instant::now();
    let upstreams: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .map(|(name, upstream)| {
            let servers: Vec<_> = upstream
                .servers
                .iter()
                .zip(&upstream.weights)
                .map(|(server, weight)| {
                    let (requests, failures) = server.metrics.totals();
                    let response = &server.metrics.response_duration;
                    json!({
                        "requests": requests,
                        "failures": failures,
                        "response_count": response.get_sample_count(),
                        "response_seconds_sum": response.get_sample_sum(),
                        "addr": &*server.addr,
                        "weight": weight,
                        "eligible": server.is_eligible(now),
                        "health": server.health.report(),
                        "breaker": server.breaker.state().as_str(),
                        // A wait, not a time of day: the page's clock may not be ours.
                        "breaker_next_trial_in_ms": server
                            .breaker
                            .open_until()
                            .map(|until| until.saturating_duration_since(now).as_millis() as u64),
                        "ejected_for_ms": server
                            .ejection
                            .remaining(now)
                            .map(|left| left.as_millis() as u64),
                        "in_flight": server.in_flight(),
                        "latency_ewma_ms": server.latency_ewma().as_secs_f64() * 1000.0,
                        "idle_connections": server.pool.idle_count(),
                    })
                })
                .collect();
            (
                name.clone(),
                json!({
                    "balance": upstream.algorithm.as_str(),
                    "hash_key": upstream.hashing.as_ref().map(|h| h.key.to_string()),
                    "hash_balance_factor": upstream.hashing.as_ref().map(|h| h.balance_factor),
                    "connect_timeout_ms": upstream.connect_timeout.as_millis() as u64,
                    "response_timeout_ms": upstream.response_timeout.as_millis() as u64,
                    "retries": upstream.retries,
                    "retry_budget": upstream.retry_budget.share(),
                    "retry_budget_min": upstream.retry_budget.per_second(),
                    "retries_total": upstream.retries_total.get(),
                    "retries_refused": upstream.retries_refused.get(),
                    "max_connections": upstream.max_connections,
                    "panic_threshold": upstream.panic_threshold,
                    "servers": servers,
                    "dns": state.reloader.dns_report(name),
                }),
            )
        })
        .collect();
    let loaded_at = snapshot
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let caches: serde_json::Map<String, serde_json::Value> = state
        .caches
        .all()
        .iter()
        .map(|cache| {
            (
                cache.name.to_string(),
                json!({
                    "bytes": cache.store.bytes(),
                    "max_size": cache.store.capacity(),
                    "entries": cache.store.entries(),
                    "max_object_size": cache.max_object_size,
                    "fetches_in_flight": cache.coalescer.flights(),
                    "requests": cache.metrics.totals(),
                    "shared": cache.shared.as_ref().map(|tier| tier.status()),
                }),
            )
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": state.reloader.status(),
        "certificates": state.reloader.certificates(),
        "caches": caches,
        "limits": limits_json(&snapshot),
        "redis": snapshot.redis.as_ref().map(|redis| redis.status()),
        "admin": json!({
            "writes": snapshot.admin_writes.enabled,
            "token": snapshot.admin_writes.has_token(),
            "listener_loopback": state.listener_loopback,
        }),
        "ready": state.ready.load(Ordering::Relaxed),
        "config_loaded_at": loaded_at,
        "listeners": listeners,
        "routes": routes,
        "upstreams": upstreams,
    })
}
