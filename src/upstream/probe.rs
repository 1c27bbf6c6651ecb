//! Active health checks: one task per server sends `GET path` on a fresh connection every
//! `interval` (first after a random part of it, so servers are not probed in lockstep) and
//! hands each result to the server's `ServerHealth`; a server marked up again after being down
//! ends its open breaker's wait.

use crate::config::{HealthConfig, StatusMatcher};
use crate::request_body::RequestBody;
use crate::upstream::ServerState;
use crate::upstream::http1;
use crate::upstream::pool::{Endpoint, Pool, Sender};
use http::{Request, header};
use http_body_util::BodyExt;
use std::sync::Weak;
use std::time::Duration;

/// Probes the server until it is dropped (removed from every snapshot) or the task aborted.
pub async fn run(server: Weak<ServerState>, config: HealthConfig, endpoint: Endpoint) {
    let matcher = match StatusMatcher::parse(config.expect_status.get_ref()) {
        Ok(matcher) => matcher,
        Err(e) => {
            tracing::error!(error = %e, "health checks disabled");
            return;
        }
    };
    let interval = config.interval.0.max(Duration::from_millis(10));
    let host = config
        .host
        .clone()
        .unwrap_or_else(|| format!("{}:{}", endpoint.host, endpoint.port));
    let jitter = interval.mul_f64(fastrand::f64());
    tokio::time::sleep(jitter).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(server) = server.upgrade() else {
            return;
        };
        let result = probe(
            &server.pool,
            &host,
            config.path.get_ref(),
            config.timeout.0,
            &matcher,
        )
        .await;
        if result.is_ok() {
            // Reached: whatever refused connects said, it is listening again.
            server.ejection.end();
        }
        if server.health.record_check(result) {
            server.breaker.health_came_back(std::time::Instant::now());
        }
    }
}

/// One check: `Ok` when it passed, or why it failed.
pub async fn probe(
    pool: &Pool,
    host: &str,
    path: &str,
    timeout: Duration,
    matcher: &StatusMatcher,
) -> Result<(), String> {
    let exchange = async {
        // The same way requests connect: TCP, TLS for https:// servers, HTTP/1.1 or HTTP/2.
        let sender = pool
            .connect_unpooled(timeout)
            .await
            .map_err(|e| e.to_string())?;
        let mut request = Request::get(path)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "gatehouse-health-check")
            .header(header::CONNECTION, "close")
            .body(RequestBody::Empty)
            .map_err(|e| format!("invalid check request: {e}"))?;
        // Each body is read (and dropped) so the server sees a complete exchange.
        let status = match sender {
            Sender::Http1(conn) => {
                let response = http1::exchange(conn, &mut request, http1::Options::default())
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                let status = response.status();
                let _ = response.into_body().collect().await;
                status
            }
            Sender::Http2(mut sender) => {
                let response = sender
                    .try_send_request(request)
                    .await
                    .map_err(|e| format!("request failed: {}", e.into_error()))?;
                let status = response.status();
                let _ = response.into_body().collect().await;
                status
            }
        };
        if matcher.accepts(status) {
            Ok(())
        } else {
            Err(format!("status {}", status.as_u16()))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}
