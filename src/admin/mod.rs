//! The admin listener: `/healthz` (the process is alive), `/readyz` (serving, not draining),
//! `/metrics` (Prometheus text format) and `/status` (the configuration in force, as JSON).

use crate::metrics::Metrics;
use crate::proxy::body::ResponseBody;
use crate::proxy::local_response;
use crate::server::DrainWatch;
use crate::snapshot::SharedSnapshot;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
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

/// What the admin endpoints report on.
pub struct AdminState {
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    /// False once shutdown has begun, so that load balancers in front stop sending traffic.
    pub ready: AtomicBool,
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
                async move { Ok::<_, Infallible>(handle(&state, request)) }
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

fn handle(state: &AdminState, request: Request<Incoming>) -> Response<ResponseBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response =
            local_response(StatusCode::METHOD_NOT_ALLOWED, "admin endpoints accept GET");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
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
            "admin endpoints: /healthz /readyz /metrics /status",
        ),
    }
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
pub fn status_json(state: &AdminState) -> serde_json::Value {
    let snapshot = state.snapshot.load();
    let config = &snapshot.config;
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| json!({ "name": l.name.get_ref(), "bind": l.bind.get_ref() }))
        .collect();
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.display_name(),
                "listener": r.listener.as_ref().map(|l| l.get_ref().clone()),
                "host": r.host.get_ref(),
                "path_prefix": r.path_prefix.get_ref(),
                "upstream": r.upstream.get_ref(),
                "strip_prefix": r.strip_prefix,
            })
        })
        .collect();
    let upstreams: serde_json::Map<String, serde_json::Value> = snapshot
        .upstreams
        .iter()
        .map(|(name, upstream)| {
            let servers: Vec<_> = upstream
                .servers
                .iter()
                .zip(&upstream.weights)
                .map(|(server, weight)| {
                    json!({
                        "addr": &*server.addr,
                        "weight": weight,
                        "eligible": server.is_eligible(std::time::Instant::now()),
                        "health": server.health.report(),
                        "breaker": server.breaker.state().as_str(),
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
                    "connect_timeout_ms": upstream.connect_timeout.as_millis() as u64,
                    "response_timeout_ms": upstream.response_timeout.as_millis() as u64,
                    "retries": upstream.retries,
                    "max_connections": upstream.max_connections,
                    "panic_threshold": upstream.panic_threshold,
                    "servers": servers,
                }),
            )
        })
        .collect();
    let loaded_at = snapshot
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": state.ready.load(Ordering::Relaxed),
        "config_loaded_at": loaded_at,
        "listeners": listeners,
        "routes": routes,
        "upstreams": upstreams,
    })
}
