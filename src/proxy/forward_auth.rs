//! Forward authentication on the request path: the check sent to the route's authentication
//! service (one of the configured upstreams, reached through its pools, health checks,
//! breaker and TLS like any request), and what the client gets when it does not admit.

use super::body::ResponseBody;
use super::exchange::Exchange;
use super::{ClientInfo, ForwardError, forward};
use crate::headers::X_REQUEST_ID;
use crate::policy::forward_auth::{DENIAL_HEADERS, Original, Verdict, verdict};
use crate::request_body::RequestBody;
use crate::snapshot::ForwardAuthTarget;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use std::time::Instant;

/// The most of an authentication service's answer body that is read (and passed on).
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Why a request was not admitted.
pub(super) enum Refusal {
    /// The service said 401 or 403: its answer goes to the client.
    Denied {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// Another status, a timeout, no server: 500.
    Failed,
}

/// The service's answer, read whole (up to `MAX_ANSWER_BODY`).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Asks the route's authentication service about the request (or remembers its answer).
/// On admission the request carries the service's `copy_headers` in place of the client's.
pub(super) async fn check(
    target: &ForwardAuthTarget,
    client: &ClientInfo,
    parts: &mut http::request::Parts,
    host: &HeaderValue,
    request_id: &HeaderValue,
    route: &str,
) -> Result<(), Refusal> {
    let auth = &target.policy;
    let key = auth.cache_key(client.addr.ip(), &parts.headers);
    if let Some(key) = &key
        && let Some(admission) = auth.remembered(key, Instant::now())
    {
        auth.outcomes.cached.inc();
        auth.apply_copies(&mut parts.headers, &admission.copies);
        return Ok(());
    }
    let mut headers = auth.check_headers(&Original {
        method: &parts.method,
        uri: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &parts.headers,
        host,
        peer: &client.forwarded_for,
        https: client.https,
    });
    headers.insert(&X_REQUEST_ID, request_id.clone());
    let mut check = Request::new(());
    *check.method_mut() = Method::GET;
    *check.uri_mut() = auth.uri.clone().into();
    *check.version_mut() = Version::HTTP_11;
    *check.headers_mut() = headers;
    let (check, ()) = check.into_parts();

    let asked = tokio::time::timeout(auth.timeout, ask(target, check, client, request_id)).await;
    let request_id_text = request_id.to_str().unwrap_or("-");
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            auth.outcomes.error.inc();
            tracing::warn!(route, forward_auth = %auth.name, upstream = %auth.upstream, error = %error, request_id = request_id_text, "forward auth failed: the authentication service could not be asked");
            return Err(Refusal::Failed);
        }
        Err(_elapsed) => {
            auth.outcomes.error.inc();
            tracing::warn!(route, forward_auth = %auth.name, upstream = %auth.upstream, timeout = ?auth.timeout, request_id = request_id_text, "forward auth failed: no answer within the timeout");
            return Err(Refusal::Failed);
        }
    };
    match verdict(answer.status) {
        Verdict::Allow => {
            auth.outcomes.allowed.inc();
            let copies = auth.copies(&answer.headers);
            auth.apply_copies(&mut parts.headers, &copies);
            if let Some(key) = key {
                auth.remember(key, copies, Instant::now());
            }
            Ok(())
        }
        Verdict::Deny => {
            auth.outcomes.denied.inc();
            tracing::debug!(route, forward_auth = %auth.name, status = answer.status.as_u16(), request_id = request_id_text, "forward auth denied the request");
            Err(Refusal::Denied {
                status: answer.status,
                headers: answer.headers,
                body: answer.body,
            })
        }
        Verdict::Error => {
            auth.outcomes.error.inc();
            tracing::warn!(route, forward_auth = %auth.name, upstream = %auth.upstream, status = answer.status.as_u16(), request_id = request_id_text, "forward auth failed: the authentication service answered neither 2xx nor 401/403");
            Err(Refusal::Failed)
        }
    }
}

/// Sends the check and reads the answer.
async fn ask(
    target: &ForwardAuthTarget,
    check: http::request::Parts,
    client: &ClientInfo,
    request_id: &HeaderValue,
) -> Result<Answer, String> {
    let upstream = &target.upstream;
    let key = upstream.key_hash(&check.uri, &check.headers, Some(client.addr.ip()));
    let mut server = None;
    let mut check = Request::from_parts(check, RequestBody::Empty);
    let forwarded = forward(
        upstream,
        &mut server,
        None,
        &mut check,
        &mut None,
        key,
        Instant::now(),
        request_id,
        None,
        false,
    )
    .await
    .map_err(|error: ForwardError| match server {
        Some(server) => format!("{error} (server {server})"),
        None => error.to_string(),
    })?;
    let (parts, body) = forwarded.response.into_parts();
    // The body read to its end gives the connection back to the pool.
    let body = ResponseBody::upstream(body, forwarded.pool_return);
    let body = match Limited::new(body, MAX_ANSWER_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            // The status decides; a body that cannot be read is not passed on.
            tracing::debug!(error = %error, "forward auth answer body unreadable or too large");
            Bytes::new()
        }
    };
    drop(forwarded.in_flight);
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

impl Refusal {
    /// The client's response, accounted for as `exchange`.
    pub(super) fn answer(self, mut exchange: Exchange) -> Response<ResponseBody> {
        let (status, headers, body) = match self {
            Refusal::Failed => {
                return exchange.local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the authentication service could not decide on this request",
                );
            }
            Refusal::Denied {
                status,
                headers,
                body,
            } => (status, headers, body),
        };
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = status;
        let out = response.headers_mut();
        for name in &DENIAL_HEADERS {
            for value in headers.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        out.insert(&X_REQUEST_ID, exchange.request_id.clone());
        exchange.add_limit_fields(out);
        exchange.status = status;
        response.body_mut().set_completion(exchange);
        response
    }
}
