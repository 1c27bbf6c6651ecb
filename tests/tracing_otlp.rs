//! Distributed tracing over real sockets: gatehouse in front of recording upstreams, exporting
//! to an OTLP/HTTP receiver started here that decodes each export with the generated
//! OpenTelemetry protobuf types, so that trace ids, parent links and attributes are checked as
//! a collector would read them.

mod common;

use bytes::Bytes;
use common::{Client, TestUpstream, WAIT, metric_sample, refused_addr};
use gatehouse::app::Running;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A span as the receiver got it, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/HTTP receiver on an ephemeral loopback port: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered 200.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Bodies that did not decode, or posts to another path (both must stay empty).
    rejected: Arc<Mutex<Vec<String>>>,
    /// The `x-api-key` of each export (empty when it had none).
    api_keys: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A receiver that takes exports over TLS only, with `acceptor`'s certificate.
    async fn start_with(acceptor: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
        let api_keys: Arc<Mutex<Vec<String>>> = Arc::default();
        let (kept, refused) = (Arc::clone(&spans), Arc::clone(&rejected));
        let keys = Arc::clone(&api_keys);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (kept, refused) = (Arc::clone(&kept), Arc::clone(&refused));
                let keys = Arc::clone(&keys);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (kept, refused) = (Arc::clone(&kept), Arc::clone(&refused));
                        let keys = Arc::clone(&keys);
                        async move {
                            let (parts, body) = request.into_parts();
                            keys.lock().unwrap().push(
                                parts
                                    .headers
                                    .get("x-api-key")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned(),
                            );
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let content_type = parts
                                .headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            match body {
                                Ok(body)
                                    if parts.uri.path() == "/v1/traces"
                                        && content_type == "application/x-protobuf" =>
                                {
                                    match ExportTraceServiceRequest::decode(body) {
                                        Ok(export) => kept.lock().unwrap().extend(received(export)),
                                        Err(e) => refused.lock().unwrap().push(e.to_string()),
                                    }
                                }
                                _ => refused
                                    .lock()
                                    .unwrap()
                                    .push(format!("{} {content_type}", parts.uri)),
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            // A client that fails the handshake posts nothing.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            spans,
            rejected,
            api_keys,
        }
    }

    fn of_trace(&self, trace_id: &[u8]) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits (at most `WAIT`) until the trace has `n` spans, and gives them.
    async fn wait_trace(&self, trace_id: &[u8], n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let spans = self.of_trace(trace_id);
            if spans.len() >= n {
                assert!(self.rejected.lock().unwrap().is_empty());
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {}: {} spans after {WAIT:?}, want {n}: {spans:#?}",
                hex(trace_id),
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn received(export: ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone())
            .and_then(|v| match v {
                Value::StringValue(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    out
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::IntValue(n)) => n,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

fn of_kind(spans: &[Received], kind: SpanKind) -> Vec<Span> {
    spans
        .iter()
        .filter(|r| r.span.kind == kind as i32)
        .map(|r| r.span.clone())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The (trace id, parent span id, sampled) a `traceparent` value names.
fn traceparent(value: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    assert_eq!(fields[0], "00", "{value}");
    (unhex(fields[1]), unhex(fields[2]), fields[3] == "01")
}

/// A config with one listener, an admin listener, one route to `servers`, and `[tracing]`
/// exporting to `endpoint` with `tracing_extra`.
fn config(
    servers: &[SocketAddr],
    upstream_extra: &str,
    endpoint: SocketAddr,
    tracing_extra: &str,
) -> String {
    format!(
        "{}\n[tracing]\nendpoint = \"http://{endpoint}\"\nservice_name = \"edge\"\n{tracing_extra}\n",
        common::simple_config(servers, upstream_extra)
    )
}

async fn start(toml: &str) -> Running {
    common::start_gatehouse(toml).await
}

async fn get_with(running: &Running, path: &str, headers: &[(&str, &str)]) -> common::Reply {
    let mut request = Request::get(path).header("host", "example.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut client = Client::connect(running.listener_addrs[0]).await;
    client
        .send(request.body(Full::new(Bytes::new())).unwrap())
        .await
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_callers_trace_is_continued_and_the_upstream_is_parented_on_the_client_span() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", receiver.addr, "ratio = 0.0")).await;

    let reply = get_with(
        &running,
        "/orders/7?x=1",
        &[
            (
                "traceparent",
                &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("user-agent", "trace-test/1"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let trace_id = unhex(CALLER_TRACE);
    let spans = receiver.wait_trace(&trace_id, 2).await;
    assert!(spans.iter().all(|r| r.service == "edge"));
    let servers = of_kind(&spans, SpanKind::Server);
    let clients = of_kind(&spans, SpanKind::Client);
    assert_eq!((servers.len(), clients.len()), (1, 1), "{spans:#?}");
    let (server, client) = (&servers[0], &clients[0]);
    assert_eq!(
        server.parent_span_id,
        unhex(CALLER_SPAN),
        "the caller's span is the parent"
    );
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(server.trace_state, "congo=t61rcWkgMzE");
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);

    assert_eq!(text(server, "http.request.method"), "GET");
    assert_eq!(text(server, "url.path"), "/orders/7");
    assert_eq!(text(server, "url.scheme"), "http");
    assert_eq!(text(server, "http.route"), "/");
    assert_eq!(int(server, "http.response.status_code"), 200);
    assert_eq!(text(server, "server.address"), "example.test");
    assert_eq!(text(server, "client.address"), "127.0.0.1");
    assert_eq!(text(server, "network.protocol.version"), "1.1");
    assert_eq!(text(server, "user_agent.original"), "trace-test/1");
    assert!(attribute(server, "error.type").is_none());

    assert_eq!(text(client, "server.address"), "127.0.0.1");
    assert_eq!(int(client, "server.port"), i64::from(upstream.addr.port()));
    assert_eq!(int(client, "gatehouse.upstream.attempt"), 1);
    assert_eq!(int(client, "http.response.status_code"), 200);

    let received = upstream.received();
    let sent = received[0].headers["traceparent"].to_str().unwrap();
    let (sent_trace, sent_parent, sampled) = traceparent(sent);
    assert_eq!(sent_trace, trace_id);
    assert_eq!(
        sent_parent, client.span_id,
        "the upstream's parent is the CLIENT span"
    );
    assert!(sampled);
    assert_eq!(received[0].headers["tracestate"], "congo=t61rcWkgMzE");
}

#[tokio::test]
async fn a_request_without_trace_context_starts_a_trace() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", receiver.addr, "")).await;

    assert_eq!(get_with(&running, "/a", &[]).await.status, StatusCode::OK);
    let received = upstream.received();
    let (trace_id, parent, sampled) =
        traceparent(received[0].headers["traceparent"].to_str().unwrap());
    assert!(sampled, "ratio defaults to 1");
    let spans = receiver.wait_trace(&trace_id, 2).await;
    let server = &of_kind(&spans, SpanKind::Server)[0];
    let client = &of_kind(&spans, SpanKind::Client)[0];
    assert!(
        server.parent_span_id.is_empty(),
        "a new trace has a root SERVER span"
    );
    assert_eq!(client.span_id, parent);
    assert_eq!(client.parent_span_id, server.span_id);
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_for_a_new_trace() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", receiver.addr, "")).await;

    let malformed = format!("00-{}-{CALLER_SPAN}-01", CALLER_TRACE.to_uppercase());
    let reply = get_with(
        &running,
        "/a",
        &[
            ("traceparent", &malformed),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let received = upstream.received();
    let (trace_id, _, _) = traceparent(received[0].headers["traceparent"].to_str().unwrap());
    assert_ne!(trace_id, unhex(CALLER_TRACE));
    assert!(
        received[0].headers.get("tracestate").is_none(),
        "the state of a trace not continued is not passed on"
    );
    let spans = receiver.wait_trace(&trace_id, 2).await;
    assert!(
        of_kind(&spans, SpanKind::Server)[0]
            .parent_span_id
            .is_empty()
    );
}

#[tokio::test]
async fn a_retried_request_has_a_client_span_per_attempt() {
    let receiver = Receiver::start().await;
    let dead = refused_addr().await;
    let live = TestUpstream::named("live").await;
    let running = start(&config(
        &[dead, live.addr],
        "retries = 2\neject_after_refused = 0",
        receiver.addr,
        "",
    ))
    .await;

    // Round robin: of two requests, one meets the dead server first.
    let mut retried = None;
    for i in 0..2 {
        let trace = format!("{:032x}", 0xabc0 + i);
        let header = format!("00-{trace}-{CALLER_SPAN}-01");
        let reply = get_with(&running, "/r", &[("traceparent", &header)]).await;
        assert_eq!(reply.status, StatusCode::OK);
        let spans = receiver.wait_trace(&unhex(&trace), 2).await;
        if of_kind(&spans, SpanKind::Client).len() == 2 {
            retried = Some(spans);
        }
    }
    let spans = retried.expect("one request was retried");
    let server = &of_kind(&spans, SpanKind::Server)[0];
    let mut clients = of_kind(&spans, SpanKind::Client);
    clients.sort_by_key(|c| int(c, "gatehouse.upstream.attempt"));
    assert!(clients.iter().all(|c| c.parent_span_id == server.span_id));
    assert_ne!(clients[0].span_id, clients[1].span_id);
    assert_eq!(int(&clients[0], "server.port"), i64::from(dead.port()));
    assert_eq!(text(&clients[0], "error.type"), "connection_refused");
    assert_eq!(int(&clients[1], "gatehouse.upstream.attempt"), 2);
    assert_eq!(int(&clients[1], "http.response.status_code"), 200);
    assert_eq!(int(server, "http.response.status_code"), 200);
    // The live server got the second attempt's span as its parent.
    let parents: Vec<Vec<u8>> = live
        .received()
        .iter()
        .map(|r| traceparent(r.headers["traceparent"].to_str().unwrap()).1)
        .collect();
    assert!(parents.contains(&clients[1].span_id), "{parents:?}");
}

#[tokio::test]
async fn a_cache_hit_has_no_client_span() {
    let receiver = Receiver::start().await;
    // /cached is fresh for a minute; /etag must be revalidated each time (304 from the origin).
    let upstream = TestUpstream::with_responder(
        "app",
        Arc::new(|seen| {
            let revalidating = seen.headers.get("if-none-match").is_some();
            let (status, max_age) = match seen.uri.path() {
                "/etag" if revalidating => (StatusCode::NOT_MODIFIED, "max-age=0"),
                "/etag" => (StatusCode::OK, "max-age=0"),
                _ => (StatusCode::OK, "max-age=60"),
            };
            Response::builder()
                .status(status)
                .header("cache-control", max_age)
                .header("etag", "\"v1\"")
                .body(Full::new(Bytes::from_static(b"stored")))
                .unwrap()
        }),
    )
    .await;
    let toml = config(&[upstream.addr], "", receiver.addr, "").replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\ncache = \"c\"\n",
    ) + "\n[cache.c]\nmax_size = \"1MiB\"\nmax_object_size = \"64KiB\"\n";
    let running = start(&toml).await;

    let miss = "00000000000000000000000000000c01";
    let hit = "00000000000000000000000000000c02";
    for trace in [miss, hit] {
        let header = format!("00-{trace}-{CALLER_SPAN}-01");
        let reply = get_with(&running, "/cached", &[("traceparent", &header)]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "stored");
    }
    assert_eq!(upstream.received().len(), 1, "the second is a hit");
    let first = receiver.wait_trace(&unhex(miss), 2).await;
    assert_eq!(of_kind(&first, SpanKind::Client).len(), 1);
    let server = &of_kind(&first, SpanKind::Server)[0];
    assert_eq!(text(server, "gatehouse.cache.outcome"), "miss");
    let second = receiver.wait_trace(&unhex(hit), 1).await;
    assert_eq!(second.len(), 1, "{second:#?}");
    let server = &of_kind(&second, SpanKind::Server)[0];
    assert_eq!(text(server, "gatehouse.cache.outcome"), "hit");
    assert_eq!(int(server, "http.response.status_code"), 200);

    // A stored response revalidated with the origin: a CLIENT span (the 304), and the cache
    // answered.
    let stored = "00000000000000000000000000000c03";
    let revalidated = "00000000000000000000000000000c04";
    for trace in [stored, revalidated] {
        let header = format!("00-{trace}-{CALLER_SPAN}-01");
        let reply = get_with(&running, "/etag", &[("traceparent", &header)]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let spans = receiver.wait_trace(&unhex(revalidated), 2).await;
    let client = &of_kind(&spans, SpanKind::Client)[0];
    assert_eq!(int(client, "http.response.status_code"), 304);
    let server = &of_kind(&spans, SpanKind::Server)[0];
    assert_eq!(text(server, "gatehouse.cache.outcome"), "revalidated");
}

#[tokio::test]
async fn an_unsampled_caller_at_ratio_zero_exports_nothing_but_propagates() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", receiver.addr, "ratio = 0.0")).await;

    let unsampled = "000000000000000000000000000000a0";
    let header = format!("00-{unsampled}-{CALLER_SPAN}-00");
    assert_eq!(
        get_with(&running, "/u", &[("traceparent", &header)])
            .await
            .status,
        StatusCode::OK
    );
    let (trace_id, _, sampled) = traceparent(
        upstream.received()[0].headers["traceparent"]
            .to_str()
            .unwrap(),
    );
    assert_eq!(trace_id, unhex(unsampled), "the trace goes on upstream");
    assert!(!sampled, "unsampled, as the caller said");
    // A new trace at ratio 0 is not sampled either.
    assert_eq!(get_with(&running, "/n", &[]).await.status, StatusCode::OK);
    let (_, _, sampled) = traceparent(
        upstream.received()[1].headers["traceparent"]
            .to_str()
            .unwrap(),
    );
    assert!(!sampled);

    // A sampled request after them: once its spans arrived, anything the earlier ones had
    // queued would have too (one queue, in order).
    let marker = "000000000000000000000000000000a1";
    let header = format!("00-{marker}-{CALLER_SPAN}-01");
    assert_eq!(
        get_with(&running, "/s", &[("traceparent", &header)])
            .await
            .status,
        StatusCode::OK
    );
    receiver.wait_trace(&unhex(marker), 2).await;
    let all = receiver.spans.lock().unwrap().clone();
    assert_eq!(all.len(), 2, "only the sampled request's spans: {all:#?}");
}

#[tokio::test]
async fn b3_is_read_when_configured() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(
        &[upstream.addr],
        "",
        receiver.addr,
        "ratio = 0.0\npropagation = [\"tracecontext\", \"b3\"]",
    ))
    .await;
    let b3 = format!("{CALLER_TRACE}-{CALLER_SPAN}-1");
    assert_eq!(
        get_with(&running, "/b", &[("b3", &b3)]).await.status,
        StatusCode::OK
    );
    let spans = receiver.wait_trace(&unhex(CALLER_TRACE), 2).await;
    let server = &of_kind(&spans, SpanKind::Server)[0];
    let client = &of_kind(&spans, SpanKind::Client)[0];
    assert_eq!(server.parent_span_id, unhex(CALLER_SPAN));
    let headers = &upstream.received()[0].headers;
    let (_, parent, _) = traceparent(headers["traceparent"].to_str().unwrap());
    assert_eq!(parent, client.span_id);
    assert_eq!(
        headers["b3"].to_str().unwrap(),
        format!("{CALLER_TRACE}-{}-1", hex(&client.span_id))
    );
}

/// An h2c server recording the `traceparent` of each request it gets.
async fn h2c_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let value = request
                            .headers()
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        kept.lock().unwrap().push(value);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"h2"))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_http2_upstream_gets_the_client_span_as_parent() {
    let receiver = Receiver::start().await;
    let (addr, seen) = h2c_upstream().await;
    let running = start(&config(&[addr], "http2 = true", receiver.addr, "")).await;
    let header = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let reply = get_with(&running, "/h2", &[("traceparent", &header)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "h2");
    let spans = receiver.wait_trace(&unhex(CALLER_TRACE), 2).await;
    let client = &of_kind(&spans, SpanKind::Client)[0];
    let sent = seen.lock().unwrap()[0].clone();
    let (trace_id, parent, _) = traceparent(&sent);
    assert_eq!(trace_id, unhex(CALLER_TRACE));
    assert_eq!(parent, client.span_id);
}

#[tokio::test]
async fn a_dead_collector_costs_dropped_spans_never_a_failed_request() {
    let dead = refused_addr().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", dead, "")).await;

    const CLIENTS: usize = 8;
    const EACH: usize = 25;
    let addr = running.listener_addrs[0];
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for i in 0..EACH {
                let reply = client.get(&format!("/load/{i}")).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("requests finish while the collector is dead")
            .expect("every request answered 200");
    }
    // Each request made a SERVER and a CLIENT span, and none can be exported.
    let want = (CLIENTS * EACH * 2) as f64;
    let deadline = Instant::now() + WAIT;
    loop {
        let dropped = metric_sample(
            &running.metrics.render(),
            "gatehouse_tracing_spans_dropped_total",
            &[],
        )
        .unwrap_or(0.0);
        if dropped == want {
            break;
        }
        assert!(dropped < want, "more dropped than made: {dropped}");
        assert!(
            Instant::now() < deadline,
            "{dropped} spans counted dropped after {WAIT:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tracing_reloads_its_ratio_and_endpoint() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let dir = std::env::temp_dir().join(format!("gatehouse-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tracing.toml");
    std::fs::write(
        &path,
        config(&[upstream.addr], "", first.addr, "ratio = 1.0"),
    )
    .unwrap();
    let running = Running::start_file(&path).await.expect("gatehouse starts");

    assert_eq!(get_with(&running, "/1", &[]).await.status, StatusCode::OK);
    let (trace_id, _, _) = traceparent(
        upstream.received()[0].headers["traceparent"]
            .to_str()
            .unwrap(),
    );
    first.wait_trace(&trace_id, 2).await;

    std::fs::write(
        &path,
        config(
            &[upstream.addr],
            "",
            second.addr,
            "ratio = 1.0\nheaders = { \"x-api-key\" = \"k2\" }",
        ),
    )
    .unwrap();
    let report = serde_json::to_value(running.reloader.reload("test").await).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(get_with(&running, "/2", &[]).await.status, StatusCode::OK);
    let (trace_id, _, _) = traceparent(
        upstream.received()[1].headers["traceparent"]
            .to_str()
            .unwrap(),
    );
    second.wait_trace(&trace_id, 2).await;
    assert!(first.of_trace(&trace_id).is_empty());
    assert!(first.api_keys.lock().unwrap().iter().all(String::is_empty));
    let keys = second.api_keys.lock().unwrap().clone();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k == "k2"),
        "the reloaded headers go with every export: {keys:?}"
    );

    std::fs::write(
        &path,
        config(&[upstream.addr], "", second.addr, "ratio = 0.0"),
    )
    .unwrap();
    let report = serde_json::to_value(running.reloader.reload("test").await).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(get_with(&running, "/3", &[]).await.status, StatusCode::OK);
    let (_, _, sampled) = traceparent(
        upstream.received()[2].headers["traceparent"]
            .to_str()
            .unwrap(),
    );
    assert!(!sampled, "ratio 0 after the reload");
    let _ = std::fs::remove_dir_all(&dir);
}

const EXAMPLE: &str = include_str!("../config/examples/tracing.toml");

#[test]
fn the_example_checks_as_shipped() {
    let config = gatehouse::config::load_str(std::path::Path::new("tracing.toml"), EXAMPLE)
        .unwrap_or_else(|e| panic!("config/examples/tracing.toml does not check:\n{e}"));
    assert_eq!(config.listeners[0].bind.get_ref(), "127.0.0.1:8080");
    assert_eq!(config.admin.bind.get_ref(), "127.0.0.1:9090");
    assert_eq!(config.tracing.endpoint.get_ref(), "http://127.0.0.1:4318");
    assert_eq!(*config.tracing.ratio.get_ref(), 1.0);
}

/// The example on free ports, exporting to `receiver`: one trace holds the client's span,
/// gatehouse's SERVER and CLIENT spans and the order API's SERVER span, in that line.
#[tokio::test]
async fn the_example_traces_client_to_gatehouse_to_the_order_api() {
    let receiver = Receiver::start().await;
    let mut toml = EXAMPLE
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace("127.0.0.1:4318", &receiver.addr.to_string());
    for port in ["8001", "8002", "8003"] {
        toml = toml.replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", common::unclaimed_port()),
        );
    }
    let running = start(&toml).await;
    let header = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let reply = get_with(&running, "/orders", &[("traceparent", &header)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let spans = receiver.wait_trace(&unhex(CALLER_TRACE), 3).await;
    let of = |service: &str, kind: SpanKind| -> Vec<Span> {
        spans
            .iter()
            .filter(|r| r.service == service && r.span.kind == kind as i32)
            .map(|r| r.span.clone())
            .collect()
    };
    let edge = &of("gatehouse", SpanKind::Server)[0];
    let attempt = &of("gatehouse", SpanKind::Client)[0];
    let api = &of("order-api", SpanKind::Server)[0];
    assert_eq!(edge.parent_span_id, unhex(CALLER_SPAN));
    assert_eq!(attempt.parent_span_id, edge.span_id);
    assert_eq!(api.parent_span_id, attempt.span_id);
    assert_eq!(text(api, "http.route"), "/orders");
    assert_eq!(int(api, "http.response.status_code"), 200);
}

#[test]
fn bad_tracing_settings_name_their_file_line_and_column() {
    let text = "[tracing]\nendpoint = \"ftp://collector:4318\"\nratio = 1.5\npropagation = [\"tracecontext\", \"jaeger\"]\nheaders = { \"bad name\" = \"x\" }\nca = \"ca.pem\"\n";
    let errors = gatehouse::config::load_str(std::path::Path::new("t.toml"), text)
        .expect_err("invalid")
        .to_string();
    for want in [
        "t.toml:2:12: tracing.endpoint:",
        "t.toml:3:9: tracing.ratio: must be between 0 and 1",
        "t.toml:4:32: tracing.propagation[1]: unknown propagation format \"jaeger\"",
        "t.toml:5:26: tracing.headers.bad name:",
        "t.toml:6:6: tracing.ca: a CA is for an https:// endpoint",
    ] {
        assert!(errors.contains(want), "{want:?} not in:\n{errors}");
    }
    let missing_ca = gatehouse::config::load_str(
        std::path::Path::new("t.toml"),
        "[tracing]\nendpoint = \"https://collector\"\nca = \"/no/such/ca.pem\"\n",
    )
    .expect_err("unreadable CA")
    .to_string();
    assert!(
        missing_ca.contains("t.toml:3:6: tracing.ca: /no/such/ca.pem"),
        "{missing_ca}"
    );
    let unknown = gatehouse::config::load_str(
        std::path::Path::new("t.toml"),
        "[tracing]\nendpont = \"http://127.0.0.1:4318\"\n",
    )
    .expect_err("unknown key")
    .to_string();
    assert!(unknown.contains("t.toml:2:1"), "{unknown}");
}

/// A collector that takes connections and requests but never answers.
async fn hanging_collector() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&posts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        std::future::pending::<()>().await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, posts)
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request() {
    let (collector, posts) = hanging_collector().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", collector, "")).await;

    let mut client = Client::connect(running.listener_addrs[0]).await;
    // The first export hangs from here on; every request after it must still be quick.
    assert_eq!(client.get("/first").await.status, StatusCode::OK);
    let deadline = Instant::now() + WAIT;
    while posts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no export reached the collector");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..100 {
        let started = Instant::now();
        assert_eq!(client.get(&format!("/{i}")).await.status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?} while the collector hangs",
            started.elapsed()
        );
    }
    // The export that hangs gives up (after 5 s) and its spans are counted dropped.
    let deadline = Instant::now() + WAIT;
    loop {
        let dropped = metric_sample(
            &running.metrics.render(),
            "gatehouse_tracing_spans_dropped_total",
            &[],
        )
        .unwrap_or(0.0);
        if dropped >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no dropped span counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn access_and_rate_limit_decisions_are_span_attributes() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let toml = config(&[upstream.addr], "", receiver.addr, "").replace(
        "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nlimits = [\"per_ip\"]\n\n\
         [[route]]\npath_prefix = \"/private/\"\nupstream = \"app\"\naccess = [\"deny all\"]\n",
    ) + "\n[limit.per_ip]\nrate = \"1/m\"\n";
    let running = start(&toml).await;

    let traces = [
        ("00000000000000000000000000000d01", "/open", StatusCode::OK),
        (
            "00000000000000000000000000000d02",
            "/open",
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            "00000000000000000000000000000d03",
            "/private/x",
            StatusCode::FORBIDDEN,
        ),
    ];
    for (trace, path, status) in traces {
        let header = format!("00-{trace}-{CALLER_SPAN}-01");
        let reply = get_with(&running, path, &[("traceparent", &header)]).await;
        assert_eq!(reply.status, status, "{path}");
    }
    let passed = receiver.wait_trace(&unhex(traces[0].0), 2).await;
    let server = &of_kind(&passed, SpanKind::Server)[0];
    assert_eq!(text(server, "gatehouse.rate_limit.decision"), "passed");
    let rejected = receiver.wait_trace(&unhex(traces[1].0), 1).await;
    assert_eq!(
        rejected.len(),
        1,
        "a rejected request goes nowhere: {rejected:#?}"
    );
    assert_eq!(
        text(&rejected[0].span, "gatehouse.rate_limit.decision"),
        "rejected"
    );
    assert_eq!(int(&rejected[0].span, "http.response.status_code"), 429);
    let denied = receiver.wait_trace(&unhex(traces[2].0), 1).await;
    assert_eq!(denied.len(), 1);
    assert_eq!(text(&denied[0].span, "gatehouse.access.decision"), "denied");
    assert_eq!(text(&denied[0].span, "http.route"), "/private/");
}

/// A 403 or 429 the upstream answered is the upstream's: the request passed gatehouse's rules.
#[tokio::test]
async fn an_upstreams_own_403_and_429_are_not_gatehouses_decisions() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::with_responder(
        "app",
        Arc::new(|request: &common::Recorded| {
            let status = if request.uri.path().starts_with("/busy") {
                429
            } else {
                403
            };
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }),
    )
    .await;
    let toml = config(&[upstream.addr], "", receiver.addr, "").replace(
        "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\nlimits = [\"roomy\"]\naccess = [\"allow all\"]\n",
    ) + "\n[limit.roomy]\nrate = \"1000/s\"\n";
    let running = start(&toml).await;
    for (trace, path, status) in [
        ("00000000000000000000000000000e01", "/busy", 429),
        ("00000000000000000000000000000e02", "/secret", 403),
    ] {
        let header = format!("00-{trace}-{CALLER_SPAN}-01");
        let reply = get_with(&running, path, &[("traceparent", &header)]).await;
        assert_eq!(reply.status.as_u16(), status, "{path}");
        let spans = receiver.wait_trace(&unhex(trace), 2).await;
        let server = &of_kind(&spans, SpanKind::Server)[0];
        assert_eq!(
            text(server, "gatehouse.rate_limit.decision"),
            "passed",
            "{path}"
        );
        assert_eq!(
            text(server, "gatehouse.access.decision"),
            "allowed",
            "{path}"
        );
    }
    running.shutdown().await;
}

/// `gatehouse_tracing_spans_dropped_total` as the admin listener at `admin` exposes it.
async fn dropped_on(admin: SocketAddr) -> f64 {
    let metrics = common::get(admin, "/metrics").await.text();
    metric_sample(&metrics, "gatehouse_tracing_spans_dropped_total", &[]).unwrap_or(0.0)
}

/// Polls the admin listener until `want` spans are counted dropped.
async fn wait_dropped(admin: SocketAddr, want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let dropped = dropped_on(admin).await;
        if dropped == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{dropped} spans dropped after {WAIT:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_is_logged_once() {
    let collector = refused_addr().await;
    let upstream = TestUpstream::named("app").await;
    let (proxy_port, admin_port) = (common::unclaimed_port(), common::unclaimed_port());
    let text = format!(
        "[log]\nlevel = \"info\"\naccess = \"off\"\n\n[admin]\nbind = \"127.0.0.1:{admin_port}\"\n\n\
         [[listener]]\nname = \"public\"\nbind = \"127.0.0.1:{proxy_port}\"\n\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n[tracing]\nendpoint = \"http://{collector}\"\n",
        upstream.addr
    );
    let mut process = common::process::Process::spawn(&text, "tracing-outage");
    let (proxy, admin) = (
        SocketAddr::from(([127, 0, 0, 1], proxy_port)),
        SocketAddr::from(([127, 0, 0, 1], admin_port)),
    );
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(admin).await.is_err()
        || tokio::net::TcpStream::connect(proxy).await.is_err()
    {
        assert!(
            Instant::now() < deadline,
            "gatehouse did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two waves of exports, each failing: one line for the outage, not one per batch.
    let mut client = Client::connect(proxy).await;
    for wave in 1..=2 {
        for i in 0..10 {
            assert_eq!(
                client.get(&format!("/{wave}/{i}")).await.status,
                StatusCode::OK
            );
        }
        wait_dropped(admin, f64::from(wave * 20)).await;
    }
    process.sigterm();
    let status = process.exit_by(Instant::now() + WAIT).await;
    assert!(status.success());
    let lines = process.all_lines().await;
    let outage_lines = lines
        .lines()
        .filter(|l| l.contains("span export failed"))
        .count();
    assert_eq!(outage_lines, 1, "{lines}");
}

#[tokio::test]
async fn a_mirrored_copy_is_a_child_of_the_server_span() {
    let receiver = Receiver::start().await;
    let main = TestUpstream::named("main").await;
    let shadow = TestUpstream::named("shadow").await;
    let toml = config(&[main.addr], "", receiver.addr, "").replace(
        "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n",
        "[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n\n[route.mirror]\nupstream = \"shadow\"\n",
    ) + &format!("\n[upstream.shadow]\nservers = [\"{}\"]\n", shadow.addr);
    let running = start(&toml).await;
    let header = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(
        get_with(&running, "/m", &[("traceparent", &header)])
            .await
            .status,
        StatusCode::OK
    );
    let spans = receiver.wait_trace(&unhex(CALLER_TRACE), 2).await;
    let server = &of_kind(&spans, SpanKind::Server)[0];
    let client = &of_kind(&spans, SpanKind::Client)[0];
    let deadline = Instant::now() + WAIT;
    while shadow.received().is_empty() {
        assert!(Instant::now() < deadline, "the shadow got no copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let copy = &shadow.received()[0];
    let (trace_id, parent, _) = traceparent(copy.headers["traceparent"].to_str().unwrap());
    assert_eq!(trace_id, unhex(CALLER_TRACE));
    assert_eq!(
        parent, server.span_id,
        "the copy hangs under gatehouse's SERVER span"
    );
    let (_, main_parent, _) =
        traceparent(main.received()[0].headers["traceparent"].to_str().unwrap());
    assert_eq!(main_parent, client.span_id);
}

#[tokio::test]
async fn an_http2_client_is_traced_as_such() {
    let receiver = Receiver::start().await;
    let upstream = TestUpstream::named("app").await;
    let running = start(&config(&[upstream.addr], "", receiver.addr, "")).await;
    let reply = common::get_h2(running.listener_addrs[0], "/h2-client").await;
    assert_eq!(reply.status, StatusCode::OK);
    let (trace_id, parent, _) = traceparent(
        upstream.received()[0].headers["traceparent"]
            .to_str()
            .unwrap(),
    );
    let spans = receiver.wait_trace(&trace_id, 2).await;
    let server = &of_kind(&spans, SpanKind::Server)[0];
    assert_eq!(text(server, "network.protocol.version"), "2");
    assert_eq!(text(server, "url.path"), "/h2-client");
    assert_eq!(of_kind(&spans, SpanKind::Client)[0].span_id, parent);
}

/// An `https://` collector: exports reach it over TLS, verified against `tracing.ca`; a
/// collector whose certificate the CA did not issue gets nothing, and the drops are counted.
#[tokio::test]
async fn spans_reach_an_https_collector_verified_by_the_configured_ca() {
    let pki = common::pki::Pki::new("otlp-tls");
    let cert = pki.issue("collector", &["localhost"]);
    let chain = vec![cert.der.clone()];
    let key =
        <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_file(
            &cert.key,
        )
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let collector =
        Receiver::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;
    let upstream = TestUpstream::named("app").await;
    let https = format!(
        "{}\n[tracing]\nendpoint = \"https://localhost:{}\"\nca = {:?}\nservice_name = \"edge\"\n",
        common::simple_config(&[upstream.addr], ""),
        collector.addr.port(),
        pki.ca_file(),
    );
    let running = start(&https).await;
    let reply = get_with(&running, "/orders", &[]).await;
    assert_eq!(reply.status, 200);
    let seen = upstream.received();
    let (trace_id, _, _) = traceparent(seen[0].headers["traceparent"].to_str().unwrap());
    let spans = collector.wait_trace(&trace_id, 2).await;
    assert!(spans.iter().any(|r| r.service == "edge"));
    running.shutdown().await;

    // The same collector, trusted by no CA gatehouse knows: the export fails, spans counted.
    let other = common::pki::Pki::new("otlp-tls-other");
    let untrusted = https.replace(&pki.ca_file(), &other.ca_file());
    let running =
        start(&untrusted.replace("[admin]\nbind = \"\"", "[admin]\nbind = \"127.0.0.1:0\"")).await;
    let before = collector.spans.lock().unwrap().len();
    assert_eq!(get_with(&running, "/orders", &[]).await.status, 200);
    let admin = running.admin_addr.expect("admin listener");
    wait_dropped(admin, 2.0).await;
    assert_eq!(collector.spans.lock().unwrap().len(), before);
    running.shutdown().await;
}
