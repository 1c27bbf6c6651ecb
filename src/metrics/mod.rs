//! The Prometheus registry and gatehouse's metric families. Families are registered once per
//! process; the snapshot resolves labelled handles when it is compiled so that the request path
//! only increments counters it already holds.

pub mod shared;
pub mod tls;
pub mod traffic;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::{Arc, OnceLock};

/// Bucket bounds in seconds, from 0.5 ms to 30 s: the range a proxy's latencies live in.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub http_received_bytes: IntCounterVec,
    pub http_sent_bytes: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_response_duration: HistogramVec,
    pub upstream_retries: IntCounterVec,
    pub upstream_retries_refused: IntCounterVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_hash_picks: IntCounterVec,
    pub open_connections: IntGaugeVec,
    pub accepted_connections: IntCounterVec,
    pub closed_connections: IntCounterVec,
    /// HTTP/3 (QUIC) connections open and requests taken, by listener.
    pub http3_open_connections: IntGaugeVec,
    pub http3_requests: IntCounterVec,
    pub upstream_server_up: IntGaugeVec,
    pub circuit_breaker_state: IntGaugeVec,
    pub circuit_breaker_transitions: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub cache_requests: IntCounterVec,
    pub cache_bytes: IntGaugeVec,
    pub cache_entries: IntGaugeVec,
    pub cache_evictions: IntCounterVec,
    pub cache_coalesced: IntCounterVec,
    pub rate_limit_requests: IntCounterVec,
    /// Basic and JWT checks by route, kind and outcome.
    pub auth_requests: IntCounterVec,
    pub compressed_responses: IntCounterVec,
    pub compression_input_bytes: IntCounterVec,
    pub compression_output_bytes: IntCounterVec,
    pub config_reloads_ok: IntCounter,
    pub config_reloads_failed: IntCounter,
    pub config_last_success: IntGauge,
    pub config_info: IntGaugeVec,
    /// TLS handshakes and certificate expiry.
    pub tls: tls::TlsMetrics,
    pub acme: Arc<tls::AcmeMetrics>,
    /// Traffic splits and mirrors.
    pub traffic: traffic::TrafficMetrics,
    /// State shared between replicas through Redis.
    pub shared: shared::SharedMetrics,
    pub dns_resolutions: IntCounterVec,
    /// CORS preflights answered at the edge, by route and outcome (allowed, denied).
    pub cors_preflights: IntCounterVec,
    /// Forward-auth decisions, by route and outcome (allowed, denied, error, cached).
    pub forward_auth_requests: IntCounterVec,
    /// Spans not exported: the queue to the collector was full, or an export failed.
    pub tracing_spans_dropped: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_http_requests_total",
                "Requests answered, by route, upstream, status code and the client's protocol (HTTP/1.0, HTTP/1.1, HTTP/2, HTTP/3).",
            ),
            &["route", "upstream", "code", "protocol"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_http_request_duration_seconds",
                "Time from the request head received to the response head sent, by route and upstream.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "upstream"],
        )?;
        let http_received_bytes = IntCounterVec::new(
            Opts::new(
                "gatehouse_http_received_bytes_total",
                "Request body bytes received from clients, by route and upstream.",
            ),
            &["route", "upstream"],
        )?;
        let http_sent_bytes = IntCounterVec::new(
            Opts::new(
                "gatehouse_http_sent_bytes_total",
                "Response body bytes sent to clients, by route and upstream.",
            ),
            &["route", "upstream"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gatehouse_build_info",
                "The gatehouse version running (always 1).",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(http_received_bytes.clone()))?;
        registry.register(Box::new(http_sent_bytes.clone()))?;
        registry.register(Box::new(build_info))?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_requests_total",
                "Requests sent to upstream servers, by outcome (ok, http_5xx, connect_error, timeout, error).",
            ),
            &["upstream", "server", "outcome"],
        )?;
        let upstream_response_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_upstream_response_duration_seconds",
                "Time from sending a request to an upstream server to its response head.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream", "server"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_retries_total",
                "Requests retried on another server (idempotent requests after a connect failure, a broken connection or a timeout).",
            ),
            &["upstream"],
        )?;
        let upstream_retries_refused = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_retries_refused_total",
                "Retries not made because the upstream's retry budget was spent (retries in flight past their share of the requests in flight).",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_retries_refused.clone()))?;
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_ejections_total",
                "Servers taken out of balancing after refused connects in a row (eject_after_refused).",
            ),
            &["upstream", "server"],
        )?;
        registry.register(Box::new(upstream_ejections.clone()))?;
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "gatehouse_open_connections",
                "Client connections currently open, by listener.",
            ),
            &["listener"],
        )?;
        let accepted_connections = IntCounterVec::new(
            Opts::new(
                "gatehouse_connections_accepted_total",
                "Client connections accepted, by listener.",
            ),
            &["listener"],
        )?;
        let closed_connections = IntCounterVec::new(
            Opts::new(
                "gatehouse_connections_closed_total",
                "Client connections closed, by listener and reason (client, idle_timeout, header_timeout, stalled, shutdown, bad_request, tls_handshake, error, upgraded).",
            ),
            &["listener", "reason"],
        )?;
        let http3_open_connections = IntGaugeVec::new(
            Opts::new(
                "gatehouse_http3_open_connections",
                "HTTP/3 (QUIC) client connections currently open, by listener.",
            ),
            &["listener"],
        )?;
        let http3_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_http3_requests_total",
                "Requests received over HTTP/3, by listener (their answers are counted in gatehouse_http_requests_total with protocol=\"HTTP/3\").",
            ),
            &["listener"],
        )?;
        let upstream_server_up = IntGaugeVec::new(
            Opts::new(
                "gatehouse_upstream_server_up",
                "Whether a server passes its health checks (1) or not (0); 1 without checks.",
            ),
            &["upstream", "server"],
        )?;
        let circuit_breaker_state = IntGaugeVec::new(
            Opts::new(
                "gatehouse_circuit_breaker_state",
                "Each server's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
            &["upstream", "server"],
        )?;
        let circuit_breaker_transitions = IntCounterVec::new(
            Opts::new(
                "gatehouse_circuit_breaker_transitions_total",
                "Circuit breaker state changes, by the state entered.",
            ),
            &["upstream", "server", "to"],
        )?;
        let health_checks = IntCounterVec::new(
            Opts::new(
                "gatehouse_health_checks_total",
                "Active health checks, by result (pass, fail).",
            ),
            &["upstream", "server", "result"],
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_cache_requests_total",
                "Requests on cached routes, by result (hit, miss, stale, revalidated, bypass).",
            ),
            &["cache", "result"],
        )?;
        let cache_bytes = IntGaugeVec::new(
            Opts::new(
                "gatehouse_cache_bytes",
                "Bytes held by each cache (headers and bodies).",
            ),
            &["cache"],
        )?;
        let cache_entries = IntGaugeVec::new(
            Opts::new("gatehouse_cache_entries", "URIs held by each cache."),
            &["cache"],
        )?;
        let cache_evictions = IntCounterVec::new(
            Opts::new(
                "gatehouse_cache_evictions_total",
                "Entries evicted to keep each cache within max_size.",
            ),
            &["cache"],
        )?;
        let cache_coalesced = IntCounterVec::new(
            Opts::new(
                "gatehouse_cache_coalesced_total",
                "Requests that waited for another request's upstream fetch instead of making their own.",
            ),
            &["cache"],
        )?;
        let rate_limit_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_rate_limit_requests_total",
                "Requests checked by a rate limit, by outcome (allowed, delayed, rejected, dry_run_rejected).",
            ),
            &["limit", "outcome"],
        )?;
        let compressed_responses = IntCounterVec::new(
            Opts::new(
                "gatehouse_compressed_responses_total",
                "Responses sent compressed, by route and encoding (compressed on the way, or a stored encoded copy from the cache).",
            ),
            &["route", "encoding"],
        )?;
        let compression_input_bytes = IntCounterVec::new(
            Opts::new(
                "gatehouse_compression_input_bytes_total",
                "Bytes given to an encoder, by route and encoding (a cache hit served from a stored encoded copy adds none).",
            ),
            &["route", "encoding"],
        )?;
        let compression_output_bytes = IntCounterVec::new(
            Opts::new(
                "gatehouse_compression_output_bytes_total",
                "Bytes that came out of an encoder, by route and encoding.",
            ),
            &["route", "encoding"],
        )?;
        for family in [
            &cache_requests,
            &cache_evictions,
            &cache_coalesced,
            &rate_limit_requests,
            &compressed_responses,
            &compression_input_bytes,
            &compression_output_bytes,
        ] {
            registry.register(Box::new(family.clone()))?;
        }
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gatehouse_config_reloads_total",
                "Config reloads, by result (ok, error).",
            ),
            &["result"],
        )?;
        let config_last_success = IntGauge::new(
            "gatehouse_config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (Unix seconds).",
        )?;
        let config_info = IntGaugeVec::new(
            Opts::new(
                "gatehouse_config_info",
                "The config in force, by the hash of its text (always 1).",
            ),
            &["hash"],
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_last_success.clone()))?;
        registry.register(Box::new(config_info.clone()))?;
        let config_reloads_ok = config_reloads.with_label_values(&["ok"]);
        let config_reloads_failed = config_reloads.with_label_values(&["error"]);
        config_last_success.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(upstream_server_up.clone()))?;
        registry.register(Box::new(circuit_breaker_state.clone()))?;
        registry.register(Box::new(circuit_breaker_transitions.clone()))?;
        registry.register(Box::new(health_checks.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_response_duration.clone()))?;
        registry.register(Box::new(upstream_retries.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(accepted_connections.clone()))?;
        registry.register(Box::new(closed_connections.clone()))?;
        registry.register(Box::new(http3_open_connections.clone()))?;
        registry.register(Box::new(http3_requests.clone()))?;
        let tls = tls::TlsMetrics::register(&registry)?;
        let acme = Arc::new(tls::AcmeMetrics::register(&registry)?);
        let traffic = traffic::TrafficMetrics::register(&registry)?;
        let shared = shared::SharedMetrics::register(&registry)?;
        let dns_resolutions = IntCounterVec::new(
            Opts::new(
                "gatehouse_dns_resolutions_total",
                "DNS resolutions of upstream servers given by name, by result (success, failure; a failure keeps the last good addresses).",
            ),
            &["upstream", "result"],
        )?;
        registry.register(Box::new(dns_resolutions.clone()))?;
        let tracing_spans_dropped = IntCounter::new(
            "gatehouse_tracing_spans_dropped_total",
            "Spans not exported: the queue to the collector was full (a slow or dead collector), or the export failed.",
        )?;
        registry.register(Box::new(tracing_spans_dropped.clone()))?;
        let upstream_hash_picks = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_hash_picks_total",
                "Servers picked by consistent hashing, by placement: home (the key's own server), next (the key's own server was down, breaker-open, full or already tried: a later one in the table), over_cap (a later server, past one at its hash_balance_factor load cap), no_key (the request had no key: round robin).",
            ),
            &["upstream", "placement"],
        )?;
        registry.register(Box::new(upstream_hash_picks.clone()))?;
        let cors_preflights = IntCounterVec::new(
            Opts::new(
                "gatehouse_cors_preflights_total",
                "CORS preflight requests answered at the edge, by route and outcome (allowed: with the Access-Control-Allow-* fields; denied: origin not allowed, answered without them).",
            ),
            &["route", "outcome"],
        )?;
        registry.register(Box::new(cors_preflights.clone()))?;
        let forward_auth_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_forward_auth_requests_total",
                "Requests checked by a forward-auth service, by route and outcome (allowed: 2xx; denied: 401/403 passed to the client; error: another status, a timeout or no server, answered 500; cached: a remembered allow).",
            ),
            &["route", "outcome"],
        )?;
        registry.register(Box::new(forward_auth_requests.clone()))?;
        let auth_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_auth_requests_total",
                "Requests checked by a route's authentication, by kind (basic, jwt) and outcome (allowed, missing, denied).",
            ),
            &["route", "kind", "outcome"],
        )?;
        registry.register(Box::new(auth_requests.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            auth_requests,
            registry,
            http_requests,
            http_request_duration,
            http_received_bytes,
            http_sent_bytes,
            upstream_requests,
            upstream_response_duration,
            upstream_retries,
            upstream_retries_refused,
            upstream_ejections,
            upstream_hash_picks,
            open_connections,
            accepted_connections,
            closed_connections,
            http3_open_connections,
            http3_requests,
            upstream_server_up,
            circuit_breaker_state,
            circuit_breaker_transitions,
            health_checks,
            cache_requests,
            cache_bytes,
            cache_entries,
            cache_evictions,
            cache_coalesced,
            rate_limit_requests,
            compressed_responses,
            compression_input_bytes,
            compression_output_bytes,
            config_reloads_ok,
            config_reloads_failed,
            config_last_success,
            config_info,
            tls,
            acme,
            traffic,
            shared,
            dns_resolutions,
            cors_preflights,
            forward_auth_requests,
            tracing_spans_dropped,
        })
    }

    /// Marks `hash` as the config in force (and only it).
    pub fn set_config_info(&self, hash: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }
}

const FIRST_CODE: u16 = 100;
const CODE_SLOTS: usize = 500;

/// The `protocol` label's values, indexed by `protocol_slot`.
const PROTOCOLS: [&str; 5] = ["HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

fn protocol_slot(version: http::Version) -> usize {
    match version {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 2,
    }
}

/// A counter per status code for one protocol, each resolved on first use and then kept.
type CodeCounters = Box<[OnceLock<IntCounter>]>;

/// Handles for one (route, upstream) pair: a counter per protocol and status code, resolved
/// on first use and then kept (a protocol's table only once a request came over it), the
/// duration histogram and the byte counters.
pub struct RouteMetrics {
    route: String,
    upstream: String,
    by_protocol: [OnceLock<CodeCounters>; PROTOCOLS.len()],
    family: IntCounterVec,
    pub duration: Histogram,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: &str, upstream: &str) -> Self {
        Self {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            by_protocol: Default::default(),
            family: metrics.http_requests.clone(),
            duration: metrics
                .http_request_duration
                .with_label_values(&[route, upstream]),
            received_bytes: metrics
                .http_received_bytes
                .with_label_values(&[route, upstream]),
            sent_bytes: metrics
                .http_sent_bytes
                .with_label_values(&[route, upstream]),
        }
    }

    pub fn count(&self, version: http::Version, status: http::StatusCode) {
        let protocol = protocol_slot(version);
        let code = status.as_u16();
        let slot = usize::from(code.saturating_sub(FIRST_CODE)).min(CODE_SLOTS - 1);
        self.by_protocol[protocol]
            .get_or_init(|| (0..CODE_SLOTS).map(|_| OnceLock::new()).collect())[slot]
            .get_or_init(|| {
                self.family.with_label_values(&[
                    self.route.as_str(),
                    self.upstream.as_str(),
                    status.as_str(),
                    PROTOCOLS[protocol],
                ])
            })
            .inc();
    }
}

impl Metrics {
    /// Drops the series of a server no longer in any upstream (see `ServerRegistry::retain`);
    /// every per-server family must be listed here.
    pub fn forget_server(&self, upstream: &str, server: &str) {
        let pair = [upstream, server];
        for outcome in ServerMetrics::OUTCOMES {
            let _ = self
                .upstream_requests
                .remove_label_values(&[upstream, server, outcome]);
        }
        let _ = self.upstream_response_duration.remove_label_values(&pair);
        let _ = self.upstream_server_up.remove_label_values(&pair);
        let _ = self.circuit_breaker_state.remove_label_values(&pair);
        let _ = self.upstream_ejections.remove_label_values(&pair);
        for state in ["closed", "open", "half_open"] {
            let _ = self
                .circuit_breaker_transitions
                .remove_label_values(&[upstream, server, state]);
        }
        for result in ["pass", "fail"] {
            let _ = self
                .health_checks
                .remove_label_values(&[upstream, server, result]);
        }
    }
}

/// Handles for one upstream server.
pub struct ServerMetrics {
    pub ok: IntCounter,
    pub http_5xx: IntCounter,
    pub connect_error: IntCounter,
    pub timeout: IntCounter,
    pub error: IntCounter,
    pub response_duration: Histogram,
}

impl ServerMetrics {
    const OUTCOMES: [&'static str; 5] = ["ok", "http_5xx", "connect_error", "timeout", "error"];

    pub fn new(metrics: &Metrics, upstream: &str, server: &str) -> Self {
        let outcome = |o: &str| {
            metrics
                .upstream_requests
                .with_label_values(&[upstream, server, o])
        };
        Self {
            ok: outcome("ok"),
            http_5xx: outcome("http_5xx"),
            connect_error: outcome("connect_error"),
            timeout: outcome("timeout"),
            error: outcome("error"),
            response_duration: metrics
                .upstream_response_duration
                .with_label_values(&[upstream, server]),
        }
    }

    /// Requests sent to this server since the process started, and how many failed.
    pub fn totals(&self) -> (u64, u64) {
        let failed =
            self.http_5xx.get() + self.connect_error.get() + self.timeout.get() + self.error.get();
        (self.ok.get() + failed, failed)
    }
}
