//! The TOML configuration: serde types mirroring what the file says, loaded with
//! file:line:column errors (`load`) and checked for meaning (`validate`).
//!
//! These types are what an operator writes; `snapshot` compiles them into what the hot path needs.

mod access;
mod admin;
mod auth;
mod bad_keys;
mod compression;
mod cors;
mod errors;
mod files;
mod forward_auth;
mod gaps;
mod load;
pub mod location;
mod otel;
mod rate_limit;
mod real_ip;
mod redirect;
mod redis;
mod split;
mod tls;
mod units;
mod validate;
mod values;

pub use access::AccessRules;
pub use admin::{admin_bind_is_loopback, read_admin_token};
pub use auth::{
    BasicAuthConfig, JwtConfig, auth_warnings, jwt_algorithms, parse_jwks_url, read_secret,
};
pub use compression::CompressionConfig;
pub use cors::{CorsConfig, OriginPattern};
pub use errors::{ConfigError, ConfigErrors, line_column};
pub use files::{FilesConfig, PathPiece, TryEntry, parse_try_entry, try_entries};
pub use forward_auth::ForwardAuthConfig;
pub use load::{load_file, load_str};
pub use location::{ErrorPageConfig, FieldMatchConfig, ReturnConfig, RewriteConfig};
pub use otel::{TracingConfig, TracingEndpoint, parse_tracing_endpoint};
pub use rate_limit::OnRedisError;
pub use rate_limit::{KeyList, KeyPart, Rate, RateLimitConfig};
pub use redirect::RedirectTemplate;
pub use redis::{RedisConfig, check_redis_url};
pub use split::{MirrorConfig, PickUpstreamConfig, SplitConfig, parse_split_by};
pub use tls::{check_alpn, tls_server_name, tls_versions};
pub use units::{ByteSize, ConfigDuration, parse_duration, parse_size};
pub use validate::{is_https_server, parse_bind, parse_server_addr};
pub use values::{HashKey, StatusMatcher, parse_nameserver};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub process: ProcessConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub caches: BTreeMap<String, CacheConfig>,
    /// `[limit.NAME]`: request rate limits that routes name.
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    /// `[compression.NAME]`: response compression that routes name.
    pub compressions: BTreeMap<String, CompressionConfig>,
    /// `[[error_page]]`: bodies for the answers gatehouse makes itself, on every route.
    pub error_pages: Vec<ErrorPageConfig>,
    /// `[cors.NAME]`: CORS policies that routes name.
    pub cors: BTreeMap<String, CorsConfig>,
    /// `[forward_auth.NAME]`: authentication services that routes name.
    pub forward_auths: BTreeMap<String, ForwardAuthConfig>,
    /// `[basic_auth.NAME]`: HTTP Basic authentication that routes name.
    pub basic_auths: BTreeMap<String, BasicAuthConfig>,
    /// `[jwt.NAME]`: bearer JWT verification that routes name.
    pub jwts: BTreeMap<String, JwtConfig>,
    pub limits: LimitsConfig,
    pub reload: ReloadConfig,
    pub demo: DemoConfig,
    pub resolver: ResolverConfig,
    /// `[redis]`: the server replicas share state through; off when its url is empty.
    pub redis: RedisConfig,
    /// `[tracing]`: W3C trace context and OpenTelemetry spans; off when its endpoint is empty.
    pub tracing: TracingConfig,
}

/// `[resolver]`: the DNS servers that resolve upstream servers given by name (nginx's
/// `resolver`). Without it, the system's `/etc/resolv.conf` and `/etc/hosts` are used.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// Name servers as `"ip:port"`; empty means the system's.
    pub nameservers: Vec<Spanned<String>>,
    /// How long one query may take before it counts as failed.
    pub timeout: ConfigDuration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: ConfigDuration::from_secs(2),
        }
    }
}

/// `[reload]`: how config changes are picked up (SIGHUP and `POST /reload` always work).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the config file's directory and reload when the file changes.
    pub watch: bool,
    /// How long the directory must be quiet after a change before the reload.
    pub debounce: ConfigDuration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: ConfigDuration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Runtime worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// How the worker threads share work (when there is more than one).
    pub scheduler: Scheduler,
}

/// How several worker threads share the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Each thread runs its own runtime with its own accepting sockets and upstream
    /// connections (thread per core, as nginx's workers).
    #[default]
    PerCore,
    /// One runtime whose threads steal work from each other (tokio's multi-thread runtime).
    WorkStealing,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
    /// nginx's `combined` format (plus the request id), on stdout.
    Combined,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `gatehouse=debug`); RUST_LOG overrides it.
    pub level: String,
    pub access: AccessLogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            access: AccessLogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where /healthz, /readyz, /metrics and /status are served; empty turns the admin listener off.
    pub bind: Spanned<String>,
    /// A file holding the bearer token that state-changing endpoints (`POST /reload`,
    /// `POST /cache/purge`) require; read at start and at each reload.
    pub token_file: Option<Spanned<String>>,
    /// Whether state-changing endpoints are served at all (403 when false).
    pub writes: Spanned<bool>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: Spanned::new(0..0, "127.0.0.1:9090".into()),
            token_file: None,
            writes: Spanned::new(0..0, true),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    // --- TLS ---
    /// Terminate TLS on this listener with these certificates.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Answer every request with a 308 to this URL template (`{host}`, `{path}`).
    #[serde(default)]
    pub redirect_https: Option<Spanned<String>>,
    /// Strict-Transport-Security value added to responses sent over TLS.
    #[serde(default)]
    pub hsts: Option<Spanned<String>>,
    /// Also serve HTTP/3 (QUIC) on the same port over UDP, with the same certificates, and
    /// advertise it with Alt-Svc on the HTTP/1.1 and HTTP/2 responses (needs `tls`).
    #[serde(default = "spanned_false")]
    pub http3: Spanned<bool>,
    /// Accept requests in TLS 1.3 early data (0-RTT) on the HTTP/3 side (needs `http3`):
    /// safe methods are forwarded with `Early-Data: 1`, others answered 425 Too Early.
    #[serde(default = "spanned_false")]
    pub early_data: Spanned<bool>,
    // --- The client's address behind load balancers ---
    /// Address ranges (`"10.0.0.0/8"`, `"::1/128"`, `"127.0.0.1"`) of the proxies and
    /// balancers believed when they say who their client is (nginx's `set_real_ip_from`).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Where a trusted proxy says who its client is.
    #[serde(default = "default_real_ip_header")]
    pub real_ip_header: Spanned<RealIpHeader>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client.
    #[serde(default = "spanned_false")]
    pub proxy_protocol: Spanned<bool>,
    /// Connections one client may hold open on this listener at once (nginx's `limit_conn`
    /// by address); past it new ones are closed at once. 0 = no limit.
    #[serde(default)]
    pub max_connections_per_client: u32,
}

/// `real_ip_header` on a listener: what names the client when the peer is a trusted proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum RealIpHeader {
    /// The rightmost untrusted entry of X-Forwarded-For.
    #[default]
    #[serde(rename = "x-forwarded-for", alias = "X-Forwarded-For")]
    XForwardedFor,
    /// The rightmost untrusted `for=` of Forwarded (RFC 7239).
    #[serde(rename = "forwarded", alias = "Forwarded")]
    Forwarded,
    /// Only the PROXY protocol header: request headers are not read (nginx's
    /// `real_ip_header proxy_protocol`).
    #[serde(rename = "proxy_protocol")]
    ProxyProtocol,
}

fn default_real_ip_header() -> Spanned<RealIpHeader> {
    Spanned::new(0..0, RealIpHeader::XForwardedFor)
}

/// `false`, for switches that are off unless the file says otherwise (the span of an absent
/// key is empty).
pub(crate) fn spanned_false() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

/// `tls = { certs = [...] }` on a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate chains with their keys; SNI picks one by its DNS names, the first is the default.
    #[serde(default = "no_certs")]
    pub certs: Spanned<Vec<CertKeyConfig>>,
    /// A certificate obtained and renewed from an ACME directory (RFC 8555) instead of files.
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
    /// The oldest TLS version accepted: "1.2" or "1.3".
    #[serde(default = "default_tls_min_version")]
    pub min_version: Spanned<String>,
    /// ALPN protocols offered, in order of preference.
    #[serde(default = "default_tls_alpn")]
    pub alpn: Spanned<Vec<String>>,
    /// CA bundle (PEM) that client certificates must chain to: mutual TLS.
    #[serde(default)]
    pub client_ca: Option<Spanned<String>>,
}

/// A PEM certificate chain file and its PEM private key file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertKeyConfig {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

fn no_certs() -> Spanned<Vec<CertKeyConfig>> {
    Spanned::new(0..0, Vec::new())
}

/// `tls = { acme = { ... } }`: one certificate for `domains`, ordered from `directory`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME directory URL (Let's Encrypt's, or any RFC 8555 server's).
    pub directory: Spanned<String>,
    /// Contact URLs for the account (`"mailto:ops@example.com"`).
    #[serde(default)]
    pub contact: Vec<Spanned<String>>,
    /// The DNS names the certificate is for; the first names its files.
    pub domains: Spanned<Vec<String>>,
    /// Where the account key and certificates are kept, shared by replicas.
    #[serde(default = "default_acme_state_dir")]
    pub state_dir: Spanned<String>,
    /// A PEM CA bundle to trust for the directory's own HTTPS, instead of the system's roots.
    #[serde(default)]
    pub directory_ca: Option<Spanned<String>>,
    /// How the directory checks control of the names: "http-01" or "tls-alpn-01".
    #[serde(default = "default_acme_challenge")]
    pub challenge: Spanned<String>,
    /// The fraction of a certificate's lifetime after which it is renewed.
    #[serde(default = "default_acme_renew_at")]
    pub renew_at: Spanned<f64>,
    /// The first wait after a failed order; each failure in a row doubles it, up to a day.
    #[serde(default = "default_acme_retry")]
    pub retry: ConfigDuration,
}

impl AcmeConfig {
    /// The folder of this certificate's files in the state directory.
    pub fn cert_dir(&self) -> std::path::PathBuf {
        let first = self
            .domains
            .get_ref()
            .first()
            .map_or("default", String::as_str);
        // A wildcard's `*` is kept out of file names.
        let safe: String = first
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        std::path::Path::new(self.state_dir.get_ref()).join(safe)
    }

    pub fn cert_path(&self) -> std::path::PathBuf {
        self.cert_dir().join("cert.pem")
    }

    pub fn key_path(&self) -> std::path::PathBuf {
        self.cert_dir().join("key.pem")
    }

    pub fn tls_alpn(&self) -> bool {
        self.challenge.get_ref() == "tls-alpn-01"
    }
}

fn default_acme_state_dir() -> Spanned<String> {
    Spanned::new(0..0, "/var/lib/gatehouse/acme".into())
}

fn default_acme_challenge() -> Spanned<String> {
    Spanned::new(0..0, "http-01".into())
}

fn default_acme_renew_at() -> Spanned<f64> {
    Spanned::new(0..0, 2.0 / 3.0)
}

fn default_acme_retry() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

fn default_tls_min_version() -> Spanned<String> {
    Spanned::new(0..0, "1.2".into())
}

fn default_tls_alpn() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["h2".into(), "http/1.1".into()])
}

/// `tls = { ... }` on an upstream whose servers are `https://`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// CA bundle (PEM) to verify servers with; by default the system's roots.
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    /// The name sent as SNI and verified; by default the host of each server's address.
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    /// A client certificate chain (PEM) and key for upstreams that ask for one.
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

/// Header edits applied to a request before it goes upstream, or to a response before it goes
/// back to the client (nginx's proxy_set_header / add_header / proxy_hide_header).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRules {
    /// Headers to set, replacing any value already there.
    pub set: BTreeMap<String, Spanned<String>>,
    /// Headers to remove.
    pub remove: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The name used in metrics and logs; defaults to host + path_prefix.
    #[serde(default)]
    pub name: Option<String>,
    /// Only requests accepted on this listener match; by default every listener.
    #[serde(default)]
    pub listener: Option<Spanned<String>>,
    /// An exact host, a wildcard `*.example.com`, or `*` for any host.
    #[serde(default = "default_host")]
    pub host: Spanned<String>,
    #[serde(default = "default_path_prefix")]
    pub path_prefix: Spanned<String>,
    /// An exact path (nginx `location = /x`), in place of `path_prefix`.
    #[serde(default)]
    pub path_exact: Option<Spanned<String>>,
    /// A regex over the path (nginx `location ~`; `(?i)` in front for `~*`), in place of
    /// `path_prefix`.
    #[serde(default)]
    pub path_regex: Option<Spanned<String>>,
    /// The longest prefix, if it is this route's, wins over regexes (nginx `location ^~`).
    #[serde(default)]
    pub prefix_stops_regex: bool,
    /// Methods the route takes; by default all.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Client ranges the route takes (others go on to the next route); by default all.
    #[serde(default)]
    pub clients: Vec<Spanned<String>>,
    #[serde(default)]
    pub match_header: Vec<FieldMatchConfig>,
    #[serde(default)]
    pub match_query: Vec<FieldMatchConfig>,
    /// Path rewrites by regex, in order (nginx `rewrite`).
    #[serde(default)]
    pub rewrite: Vec<RewriteConfig>,
    /// Replace `path_prefix` with this before forwarding (nginx `proxy_pass http://up/v2/;`).
    #[serde(default)]
    pub replace_prefix: Option<Spanned<String>>,
    /// Answer the prefix without its trailing `/` with a 301 to it (nginx does for a proxied
    /// prefix location); by default on for a prefix ending in `/` that strips or replaces it.
    #[serde(default)]
    pub slash_redirect: Option<bool>,
    /// Answer at the edge instead of forwarding (nginx `return`).
    #[serde(default, rename = "return")]
    pub answer: Option<ReturnConfig>,
    /// Serve a directory instead of forwarding (nginx `root`, `index`, `try_files`).
    #[serde(default)]
    pub files: Option<FilesConfig>,
    /// Bodies for the answers gatehouse makes itself on this route, before the global ones.
    #[serde(default)]
    pub error_page: Vec<ErrorPageConfig>,
    /// In place of the upstream's `connect_timeout`.
    #[serde(default)]
    pub connect_timeout: Option<ConfigDuration>,
    /// In place of the upstream's `response_timeout`.
    #[serde(default)]
    pub response_timeout: Option<ConfigDuration>,
    /// In place of the upstream's `retries`.
    #[serde(default)]
    pub retries: Option<u32>,
    /// The `[upstream.NAME]` requests go to; may be left out with a `[[route.split]]` or a
    /// `return`.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// Remove `path_prefix` from the path before forwarding (`/api/orders` → `/orders`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// The Host header sent upstream; by default the client's Host is kept.
    #[serde(default)]
    pub set_host: Option<Spanned<String>>,
    /// A `[cache.NAME]` for this route's responses; by default nothing is cached.
    #[serde(default)]
    pub cache: Option<Spanned<String>>,
    /// `allow` / `deny` rules for the client's address, first match wins (nginx's).
    #[serde(default)]
    pub access: Vec<Spanned<String>>,
    /// This route's request body limit, in place of `limits.max_body_bytes` (nginx's
    /// `client_max_body_size` in a location).
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
    /// `[limit.NAME]`s this route's requests must pass, in order.
    #[serde(default)]
    pub limits: Vec<Spanned<String>>,
    /// A `[compression.NAME]` for this route's responses; by default none are compressed.
    #[serde(default)]
    pub compression: Option<Spanned<String>>,
    /// A `[basic_auth.NAME]` its requests must pass.
    #[serde(default)]
    pub basic_auth: Option<Spanned<String>>,
    /// A `[jwt.NAME]` its requests must pass.
    #[serde(default)]
    pub jwt: Option<Spanned<String>>,
    #[serde(default)]
    pub request_headers: HeaderRules,
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// `[[route.split]]`: weighted sides, each an upstream (in place of `upstream`).
    #[serde(default)]
    pub split: Vec<Spanned<SplitConfig>>,
    /// Sticky split: `"cookie:NAME"`, `"header:NAME"` or `"client_ip"`; random per request
    /// when absent (and for requests without the key).
    #[serde(default)]
    pub split_by: Option<Spanned<String>>,
    /// `[[route.pick_upstream]]`: header or cookie values that choose the upstream before
    /// the split, in order.
    #[serde(default)]
    pub pick_upstream: Vec<PickUpstreamConfig>,
    /// `[route.mirror]`: a copy of each request to a shadow upstream.
    #[serde(default)]
    pub mirror: Option<Spanned<MirrorConfig>>,
    /// A `[cors.NAME]`: preflights answered at the edge, CORS fields on responses.
    #[serde(default)]
    pub cors: Option<Spanned<String>>,
    /// A `[forward_auth.NAME]` every request must pass before limits and the upstream.
    #[serde(default)]
    pub forward_auth: Option<Spanned<String>>,
}

fn default_host() -> Spanned<String> {
    Spanned::new(0..0, "*".into())
}

fn default_path_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}

impl RouteConfig {
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => match (&self.path_exact, &self.path_regex) {
                (Some(exact), _) => format!("{}={}", self.host.get_ref(), exact.get_ref()),
                (None, Some(regex)) => format!("{}~{}", self.host.get_ref(), regex.get_ref()),
                (None, None) => format!("{}{}", self.host.get_ref(), self.path_prefix.get_ref()),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceAlgorithm {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    P2cEwma,
    ConsistentHash,
}

impl BalanceAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastConnections => "least_connections",
            Self::P2cEwma => "p2c_ewma",
            Self::ConsistentHash => "consistent_hash",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default)]
    pub balance: BalanceAlgorithm,
    /// With `balance = "consistent_hash"`: what a request is hashed by (`"client_ip"`,
    /// `"header:NAME"`, `"cookie:NAME"`, `"path"` or `"uri"`); client_ip when not given.
    #[serde(default)]
    pub hash_key: Option<Spanned<String>>,
    /// With `balance = "consistent_hash"`: no server gets more than this factor of the mean
    /// requests in flight (consistent hashing with bounded loads); 0 = unbounded.
    #[serde(default)]
    pub hash_balance_factor: f64,
    pub servers: Spanned<Vec<Spanned<ServerEntry>>>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: ConfigDuration,
    /// Other servers tried after a connect failure, for idempotent methods only.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Refused connects in a row that take a server out of balancing at once (Envoy's
    /// consecutive local-origin failures); 0 = never.
    #[serde(default = "default_eject_after_refused")]
    pub eject_after_refused: u32,
    /// How long such a server stays out (doubling while it keeps being ejected); an active
    /// check that reaches it brings it back sooner.
    #[serde(default = "default_eject_for")]
    pub eject_for: ConfigDuration,
    /// Retries allowed as a share of the requests sent, over a 10 s sliding window (a retry
    /// budget, as Finagle's and Envoy's).
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f64,
    /// Retries per second allowed whatever the share says.
    #[serde(default = "default_retry_budget_min")]
    pub retry_budget_min: u32,
    /// Requests in flight allowed per server (nginx's max_conns); 0 = no limit. When every
    /// server is at its limit, requests are answered 503 at once.
    #[serde(default)]
    pub max_connections: u32,
    /// Idle pooled connections kept per server.
    #[serde(default = "default_keepalive")]
    pub keepalive: usize,
    /// How long an idle pooled connection is kept before it is closed.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: ConfigDuration,
    /// Envoy's panic mode: when fewer than this share of servers are eligible (up, breaker
    /// not open), balance over all of them rather than overload the few. 0 turns it off.
    #[serde(default)]
    pub panic_threshold: f64,
    /// Active health checks; without this section servers are always up.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// A circuit breaker per server; without this section it never opens.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// How `https://` servers are verified and reached.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Speak HTTP/2 to the servers: ALPN h2 over TLS, prior knowledge (h2c) otherwise.
    #[serde(default)]
    pub http2: bool,
    /// How often servers given by name are resolved again (every A/AAAA record is a server).
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh: ConfigDuration,
}

fn default_dns_refresh() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}

/// `[cache.NAME]`: an RFC 9111 shared cache in memory, used by the routes that name it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Total bytes held (headers and bodies); the least valuable entries are evicted first.
    pub max_size: ByteSize,
    /// Larger responses pass through uncached.
    pub max_object_size: ByteSize,
    /// Freshness when the origin gives none; 0 = such responses are not stored.
    pub default_ttl: ConfigDuration,
    /// Defaults for responses that do not say; the origin's own directives win.
    pub stale_while_revalidate: ConfigDuration,
    pub stale_if_error: ConfigDuration,
    /// A targeted cache-control field (RFC 9213) for gatehouse, obeyed before
    /// CDN-Cache-Control and Cache-Control; "" for none.
    pub cache_control_field: Spanned<String>,
    /// Store responses that set a cookie (kept with their Set-Cookie, replayed to everyone
    /// served the stored response); off, they are never stored.
    pub store_set_cookie: bool,
    /// Store a POST's response for later GETs of its target (RFC 9110 §9.3.3) when it has
    /// explicit freshness and a Content-Location naming that target.
    pub store_post_responses: bool,
    /// A second tier in `[redis]`, shared by the replicas: looked in on a local miss before
    /// the origin, written with what is stored locally, purged everywhere at once.
    pub shared: Spanned<bool>,
    /// Larger responses are kept in this replica's memory only.
    pub shared_max_object: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: ByteSize::mib(256),
            max_object_size: ByteSize::mib(8),
            default_ttl: ConfigDuration::from_secs(0),
            stale_while_revalidate: ConfigDuration::from_secs(0),
            stale_if_error: ConfigDuration::from_secs(0),
            cache_control_field: Spanned::new(0..0, "Gatehouse-Cache-Control".into()),
            store_set_cookie: false,
            store_post_responses: false,
            shared: Spanned::new(0..0, false),
            shared_max_object: ByteSize::mib(1),
        }
    }
}

/// `[upstream.NAME.health]`: active HTTP checks of each server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub path: Spanned<String>,
    pub interval: ConfigDuration,
    pub timeout: ConfigDuration,
    /// Passing statuses: `"200-399"`, `"200"`, or a list such as `"200,204,300-308"`.
    pub expect_status: Spanned<String>,
    /// Consecutive passes before a down server is up again.
    pub healthy_threshold: u32,
    /// Consecutive failures before an up server is down.
    pub unhealthy_threshold: u32,
    /// The Host header of checks; by default the server's address.
    pub host: Option<String>,
    /// Whether servers start as up (the default) or must pass checks first.
    pub initially_up: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: Spanned::new(0..0, "/healthz".into()),
            interval: ConfigDuration::from_secs(2),
            timeout: ConfigDuration::from_secs(1),
            expect_status: Spanned::new(0..0, "200-399".into()),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            host: None,
            initially_up: true,
        }
    }
}

/// `[upstream.NAME.breaker]`: when a server's real responses fail, stop sending it traffic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failed requests in a row (connect error, timeout, 5xx) that open the breaker; 0 = off.
    pub consecutive_failures: u32,
    /// Or: this share of failures within `window`, once it holds `min_requests`; 0 = off.
    pub failure_rate: f64,
    pub window: ConfigDuration,
    pub min_requests: u32,
    /// How long the breaker stays open before letting trial requests through; doubles after
    /// each failed trial, up to `max_open_for`.
    pub open_for: ConfigDuration,
    pub max_open_for: ConfigDuration,
    /// Trial requests let through while half-open.
    pub half_open_requests: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.0,
            window: ConfigDuration::from_secs(10),
            min_requests: 20,
            open_for: ConfigDuration::from_secs(30),
            max_open_for: ConfigDuration::from_secs(300),
            half_open_requests: 1,
        }
    }
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_response_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(15)
}
fn default_retries() -> u32 {
    2
}
fn default_eject_after_refused() -> u32 {
    3
}
fn default_eject_for() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_retry_budget() -> f64 {
    0.2
}
fn default_retry_budget_min() -> u32 {
    3
}
fn default_keepalive() -> usize {
    64
}
fn default_keepalive_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

/// One upstream server: `"127.0.0.1:8001"` or `{ addr = "127.0.0.1:8001", weight = 2 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    pub addr: String,
    pub weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerTable {
    addr: String,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl<'de> Deserialize<'de> for ServerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ServerEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string \"host:port\" or a table { addr = \"host:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, addr: &str) -> Result<ServerEntry, E> {
                Ok(ServerEntry {
                    addr: addr.to_owned(),
                    weight: 1,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ServerEntry, A::Error> {
                let table = ServerTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ServerEntry {
                    addr: table.addr,
                    weight: table.weight,
                })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The most bytes a request's head (request line and headers) may take: 431 past it.
    pub max_header_bytes: ByteSize,
    /// The most bytes a request body may take: 413 past it.
    pub max_body_bytes: ByteSize,
    /// A client must send its whole request head within this time, or is disconnected.
    pub header_read_timeout: ConfigDuration,
    /// A keep-alive client connection idle this long is closed.
    pub idle_timeout: ConfigDuration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace: ConfigDuration,
    /// Pass request header names with `_` upstream (nginx's `underscores_in_headers`). Off by
    /// default: back-ends that map headers to CGI-style variables read `Content_Length` as
    /// `Content-Length`, which makes such names a request-smuggling vector.
    pub underscores_in_headers: bool,
    /// Merge repeated slashes in request paths before routing and forwarding (nginx's
    /// `merge_slashes`).
    pub merge_slashes: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: ByteSize::kib(16),
            max_body_bytes: ByteSize::mib(10),
            header_read_timeout: ConfigDuration::from_secs(10),
            idle_timeout: ConfigDuration::from_secs(60),
            shutdown_grace: ConfigDuration::from_secs(10),
            underscores_in_headers: false,
            merge_slashes: true,
        }
    }
}

/// Embedded demo order-API backends started inside the gatehouse process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    pub backends: Vec<Spanned<DemoBackendEntry>>,
}

/// `"127.0.0.1:8001"` or `{ addr = "127.0.0.1:8001", latency = "50ms", error_rate = 0.1 }`.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoBackendEntry {
    pub addr: String,
    pub latency: ConfigDuration,
    pub error_rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoBackendTable {
    addr: String,
    #[serde(default)]
    latency: ConfigDuration,
    #[serde(default)]
    error_rate: f64,
}

impl<'de> Deserialize<'de> for DemoBackendEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = DemoBackendEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or a table { addr, latency, error_rate }")
            }
            fn visit_str<E: de::Error>(self, addr: &str) -> Result<DemoBackendEntry, E> {
                Ok(DemoBackendEntry {
                    addr: addr.to_owned(),
                    latency: ConfigDuration::default(),
                    error_rate: 0.0,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DemoBackendEntry, A::Error> {
                let table =
                    DemoBackendTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(DemoBackendEntry {
                    addr: table.addr,
                    latency: table.latency,
                    error_rate: table.error_rate,
                })
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}
