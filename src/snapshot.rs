//! The compiled configuration in force. A `Snapshot` holds everything a request needs —
//! router, upstreams with their balancers, limits, metric handles — and is swapped whole
//! through an `ArcSwap`, so a request sees exactly one configuration from start to end.

use crate::cache::CacheRegistry;
use crate::compress::{Compression, Offered};
use crate::config::location::{self, Answer, ErrorPage};
use crate::config::{AccessLogFormat, CompressionConfig, Config};
use crate::headers::HeaderEdits;
use crate::limit::{LimiterRegistry, RouteLimits};
use crate::metrics::{Metrics, RouteMetrics};
use crate::route::rewrite::Rewrite;
use crate::route::template::Template;
use crate::route::{HostPattern, Matchers, PathPattern, RouteEntry, Router};
use crate::shared::{Redis, RedisRegistry};
use crate::upstream::discovery::AddressBook;
use crate::upstream::split::{CacheSide, Chooser, Mirror, Pick, PickOn, Split};
use crate::upstream::{ServerRegistry, Upstream};
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// One compiled `[[route]]`.
pub struct Route {
    pub name: Arc<str>,
    /// Where requests go: the route's `[upstream.NAME]` (a copy with the route's own timeouts
    /// and retries, sharing its servers, if it sets any), or one with no servers for a route
    /// that only answers at the edge.
    pub upstream: Arc<Upstream>,
    /// How its path matches, as written (for /status).
    pub path: String,
    /// Its prefix, for a prefix route ("" otherwise).
    pub path_prefix: String,
    pub strip_prefix: bool,
    /// What replaces the prefix before forwarding.
    pub replace_prefix: Option<String>,
    /// Path rewrites, in order.
    pub rewrites: Vec<Rewrite>,
    /// The answer it gives at the edge, if any.
    pub answer: Option<Answer>,
    /// The directory it serves, if it serves files.
    pub files: Option<Arc<crate::files::Files>>,
    /// Its own error pages (the snapshot's apply after them).
    pub error_pages: Vec<ErrorPage>,
    /// Request header values with variables, set after `request_headers`.
    pub header_templates: Vec<(http::HeaderName, Template)>,
    pub set_host: Option<HeaderValue>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub metrics: RouteMetrics,
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// Who may use it (`allow` / `deny`); empty lets everyone in.
    pub access: crate::config::AccessRules,
    /// Its request body limit (the route's own, or `limits.max_body_bytes`).
    pub max_body_bytes: u64,
    /// The `[limit.NAME]`s its requests must pass.
    pub rate_limits: RouteLimits,
    /// The `[compression.NAME]` its responses get, if any.
    pub compression: Option<Arc<Compression>>,
    /// `[[route.split]]` / `[[route.pick_upstream]]`: the route as compiled for each upstream
    /// it may choose, and how it chooses; `None` for a route with one upstream.
    pub split: Option<Box<Split<Arc<Route>>>>,
    /// On a side of a split: the upstream its cached responses are keyed by too, so that two
    /// sides' answers to one URL are never mixed.
    pub cache_side: Option<CacheSide>,
    /// `[route.mirror]`: where copies of its requests go.
    pub mirror: Option<Arc<Mirror>>,
    /// The `[cors.NAME]` it answers preflights and sets CORS fields by, if any.
    pub cors: Option<crate::policy::cors::Cors>,
    /// The `[forward_auth.NAME]` its requests must pass, if any.
    pub forward_auth: Option<Arc<ForwardAuthTarget>>,
    /// Its `basic_auth` and `jwt` checks, if it has any.
    pub auth: Option<Arc<crate::auth::RouteAuth>>,
}

/// A route's forward auth: the check's settings and the upstream that answers it.
pub struct ForwardAuthTarget {
    pub policy: crate::policy::forward_auth::ForwardAuth,
    pub upstream: Arc<Upstream>,
}

/// Client-side limits, compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub underscores_in_headers: bool,
    pub merge_slashes: bool,
}

pub struct Snapshot {
    pub router: Router<Arc<Route>>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    pub limits: Limits,
    pub access_log: AccessLogFormat,
    /// Metrics for requests that matched no route.
    pub unrouted: RouteMetrics,
    /// Bodies for the answers gatehouse makes itself (`[[error_page]]`).
    pub error_pages: Vec<ErrorPage>,
    pub config: Config,
    pub loaded_at: SystemTime,
    /// Who may use the admin listener's state-changing endpoints (the token file as read).
    pub admin_writes: crate::policy::admin_auth::AdminWrites,
    /// `[redis]`: the server replicas share state through, if one is configured.
    pub redis: Option<Arc<Redis>>,
    /// `[tracing]`, when configured: the one check a request makes when it is not.
    pub tracing: Option<crate::trace::Tracing>,
}

impl Snapshot {
    /// Compiles a validated config. Servers already known to `registry` keep their state;
    /// servers given by name stand for the addresses `addresses` holds for them.
    #[allow(clippy::too_many_arguments)]
    pub fn compile(
        config: Config,
        registry: &ServerRegistry,
        addresses: &AddressBook,
        caches: &CacheRegistry,
        limiters: &LimiterRegistry,
        redis: &RedisRegistry,
        metrics: &Metrics,
        listener_ids: &HashMap<String, usize>,
        auth: &crate::auth::AuthRegistry,
        traces: &crate::trace::TraceRegistry,
    ) -> Result<Self, String> {
        // Everything that can fail is read first: compiling an upstream configures servers
        // that the snapshot in force shares, which a failed reload must leave alone.
        let admin_writes = crate::policy::admin_auth::AdminWrites::compile(&config.admin)
            .map_err(|e| format!("admin: {e}"))?;
        let redis = redis.get_or_create(&config.redis, metrics)?;
        let mut tls = BTreeMap::new();
        for (name, upstream) in &config.upstreams {
            let settings = crate::upstream::pool::Transport::upstream_tls(upstream)
                .map_err(|e| format!("upstream {name}: {e}"))?;
            tls.insert(name.as_str(), settings);
        }
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &config.upstreams {
            let settings = tls.get(name.as_str()).cloned().flatten();
            let compiled =
                Upstream::compile(name, upstream, &settings, registry, addresses, metrics)
                    .map_err(|e| format!("upstream {name}: {e}"))?;
            upstreams.insert(name.clone(), Arc::new(compiled));
        }
        let mut entries = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let located =
                |(_, key, message): location::Located| format!("route[{i}].{key}: {message}");
            let upstream_name = route
                .primary_upstream()
                .map_or("none", |u| u.get_ref().as_str());
            let upstream = match route.primary_upstream() {
                Some(name) => {
                    let shared = upstreams.get(name.get_ref()).ok_or_else(|| {
                        format!("route names a missing upstream {:?}", name.get_ref())
                    })?;
                    match upstream_for_route(route, name.get_ref(), &config) {
                        Some(own) => Arc::new(
                            Upstream::compile(
                                name.get_ref(),
                                &own,
                                &tls.get(name.get_ref().as_str()).cloned().flatten(),
                                registry,
                                addresses,
                                metrics,
                            )
                            .map_err(|e| format!("upstream {}: {e}", name.get_ref()))?,
                        ),
                        None => Arc::clone(shared),
                    }
                }
                None => Arc::new(no_upstream(registry, addresses, metrics)?),
            };
            let listener = match &route.listener {
                Some(name) => Some(*listener_ids.get(name.get_ref()).ok_or_else(|| {
                    format!("route names a missing listener {:?}", name.get_ref())
                })?),
                None => None,
            };
            let path = location::path_pattern(route).map_err(located)?;
            let capture_names = location::capture_names(&path);
            let matchers = Matchers {
                listener,
                methods: location::methods(route).map_err(located)?,
                headers: location::header_matches(route).map_err(located)?,
                query: location::query_matches(route).map_err(located)?,
                clients: location::clients(route).map_err(located)?,
            };
            let name = route.display_name();
            let mut route_limiters = Vec::new();
            for limit in &route.limits {
                let settings = config
                    .rate_limits
                    .get(limit.get_ref())
                    .ok_or_else(|| format!("route names a missing limit {:?}", limit.get_ref()))?;
                route_limiters.push(
                    limiters
                        .get_or_create(limit.get_ref(), settings, metrics, redis.as_ref())
                        .map_err(|e| format!("limit {}: {e}", limit.get_ref()))?,
                );
            }
            let compression = match &route.compression {
                Some(setting) => {
                    let settings = config.compressions.get(setting.get_ref()).ok_or_else(|| {
                        format!("route names a missing compression {:?}", setting.get_ref())
                    })?;
                    Some(Arc::new(compile_compression(
                        setting.get_ref(),
                        settings,
                        &name,
                        metrics,
                    )?))
                }
                None => None,
            };
            let cors = match &route.cors {
                Some(setting) => {
                    let settings = config.cors.get(setting.get_ref()).ok_or_else(|| {
                        format!("route names a missing cors {:?}", setting.get_ref())
                    })?;
                    let outcome = |o: &str| metrics.cors_preflights.with_label_values(&[&name, o]);
                    Some(
                        crate::policy::cors::Cors::compile(
                            setting.get_ref(),
                            settings,
                            outcome("allowed"),
                            outcome("denied"),
                        )
                        .map_err(|e| format!("cors {}: {e}", setting.get_ref()))?,
                    )
                }
                None => None,
            };
            let forward_auth = match &route.forward_auth {
                Some(setting) => {
                    let settings =
                        config.forward_auths.get(setting.get_ref()).ok_or_else(|| {
                            format!("route names a missing forward_auth {:?}", setting.get_ref())
                        })?;
                    let upstream = upstreams
                        .get(settings.upstream.get_ref())
                        .ok_or_else(|| {
                            format!(
                                "forward_auth {} names a missing upstream {:?}",
                                setting.get_ref(),
                                settings.upstream.get_ref()
                            )
                        })?
                        .clone();
                    let outcome =
                        |o: &str| metrics.forward_auth_requests.with_label_values(&[&name, o]);
                    let outcomes = crate::policy::forward_auth::Outcomes {
                        allowed: outcome("allowed"),
                        denied: outcome("denied"),
                        error: outcome("error"),
                        cached: outcome("cached"),
                    };
                    let policy = crate::policy::forward_auth::ForwardAuth::compile(
                        setting.get_ref(),
                        settings,
                        outcomes,
                    )
                    .map_err(|e| format!("forward_auth {}: {e}", setting.get_ref()))?;
                    Some(Arc::new(ForwardAuthTarget { policy, upstream }))
                }
                None => None,
            };
            let access = crate::config::AccessRules::parse(
                route.access.iter().map(|r| r.get_ref().as_str()),
            )
            .map_err(|(i, e)| format!("route {name}: access[{i}]: {e}"))?;
            let mirror = compile_mirror(route, &name, &upstreams, metrics)?;
            let route_auth = compile_auth(route, &config, auth, &name, metrics)?;
            let files = match &route.files {
                Some(files) => Some(Arc::new(
                    crate::files::Files::compile(
                        files,
                        &crate::files::PathMapping {
                            prefix: match &path {
                                PathPattern::Prefix { prefix, .. } => prefix,
                                _ => "",
                            },
                            strip_prefix: route.strip_prefix,
                            replace_prefix: route
                                .replace_prefix
                                .as_ref()
                                .map(|r| r.get_ref().as_str()),
                        },
                    )
                    .map_err(|e| format!("route {name}: {e}"))?,
                )),
                None => None,
            };
            let compiled = Route {
                split: None,
                cache_side: None,
                mirror,
                forward_auth,
                cors,
                auth: route_auth,
                access,
                max_body_bytes: route
                    .max_body_bytes
                    .map_or(config.limits.max_body_bytes.0, |limit| limit.0),
                compression,
                rate_limits: RouteLimits::new(route_limiters),
                metrics: RouteMetrics::new(metrics, &name, upstream_name),
                name: name.into(),
                upstream,
                path: path.describe(),
                path_prefix: match &path {
                    PathPattern::Prefix { prefix, .. } => prefix.clone(),
                    _ => String::new(),
                },
                strip_prefix: route.strip_prefix,
                replace_prefix: route.replace_prefix.as_ref().map(|r| r.get_ref().clone()),
                rewrites: location::rewrites(route).map_err(located)?,
                answer: match location::answer(route, &capture_names).map_err(located)? {
                    // A route with nowhere to forward to (its rewrites redirect, or route the
                    // request elsewhere) answers what is left 404, as nginx's location with
                    // no proxy_pass finds no file.
                    None if route.primary_upstream().is_none()
                        && route.split.is_empty()
                        && route.files.is_none() =>
                    {
                        Some(Answer {
                            status: http::StatusCode::NOT_FOUND,
                            location: None,
                            body: Some(Template::literal("404 Not Found\n")),
                            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
                        })
                    }
                    answer => answer,
                },
                files,
                error_pages: location::error_pages(&route.error_page, "error_page")
                    .map_err(located)?,
                header_templates: location::header_templates(route, &capture_names)
                    .map_err(located)?,
                set_host: route
                    .set_host
                    .as_ref()
                    .and_then(|h| HeaderValue::from_str(h.get_ref()).ok()),
                // Values with variables are set per request, from `header_templates`.
                request_headers: HeaderEdits::compile(&crate::config::HeaderRules {
                    set: route
                        .request_headers
                        .set
                        .iter()
                        .filter(|(_, value)| !value.get_ref().contains('$'))
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect(),
                    remove: route.request_headers.remove.clone(),
                }),
                response_headers: HeaderEdits::compile(&route.response_headers),
                cache: match &route.cache {
                    Some(name) => Some(caches.get_or_create(
                        name.get_ref(),
                        config.caches.get(name.get_ref()).ok_or_else(|| {
                            format!("route names a missing cache {:?}", name.get_ref())
                        })?,
                        metrics,
                        redis.as_ref(),
                    )),
                    None => None,
                },
            };
            let slash_redirect = route.slash_redirect.unwrap_or(
                (route.strip_prefix || route.replace_prefix.is_some())
                    && compiled.path_prefix.len() > 1
                    && compiled.path_prefix.ends_with('/'),
            );
            let compiled = compile_split(route, compiled, &upstreams, metrics)?;
            entries.push(RouteEntry {
                host: HostPattern::parse(route.host.get_ref()),
                path,
                matchers,
                slash_redirect,
                target: Arc::new(compiled),
            });
        }
        let limits = Limits {
            max_header_bytes: config.limits.max_header_bytes.as_usize(),
            max_body_bytes: config.limits.max_body_bytes.0,
            header_read_timeout: config.limits.header_read_timeout.0,
            idle_timeout: config.limits.idle_timeout.0,
            shutdown_grace: config.limits.shutdown_grace.0,
            underscores_in_headers: config.limits.underscores_in_headers,
            merge_slashes: config.limits.merge_slashes,
        };
        let error_pages = location::error_pages(&config.error_pages, "error_page")
            .map_err(|(_, key, message)| format!("{key}: {message}"))?;
        let router = Router::new(entries)?;
        // Last, after everything that can fail: the exporter is shared with the snapshot in
        // force, which a failed reload must leave exporting where it did.
        let tracing = compile_tracing(&config.tracing, traces, metrics)?;
        Ok(Self {
            router,
            error_pages,
            upstreams,
            limits,
            access_log: config.log.access,
            unrouted: RouteMetrics::new(metrics, "none", "none"),
            config,
            loaded_at: SystemTime::now(),
            admin_writes,
            redis,
            tracing,
        })
    }
}

/// `[tracing]` as the request path reads it, with the exporter kept across reloads.
fn compile_tracing(
    config: &crate::config::TracingConfig,
    traces: &crate::trace::TraceRegistry,
    metrics: &Metrics,
) -> Result<Option<crate::trace::Tracing>, String> {
    let target = if config.enabled() {
        let endpoint = crate::config::parse_tracing_endpoint(config.endpoint.get_ref())
            .map_err(|e| format!("tracing.endpoint: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = http::HeaderName::try_from(name.as_str())
                .map_err(|e| format!("tracing.headers.{name}: {e}"))?;
            let value = HeaderValue::try_from(value.get_ref().as_str())
                .map_err(|e| format!("tracing.headers.{name}: {e}"))?;
            headers.push((name, value));
        }
        let tls = if endpoint.https {
            let ca = config.ca.as_ref().map(|ca| ca.get_ref().as_str());
            Some(
                crate::tls::client::export_tls(&endpoint.host, ca)
                    .map_err(|e| format!("tracing: {e}"))?,
            )
        } else {
            None
        };
        Some(crate::trace::export::Target {
            authority: endpoint.authority,
            tls,
            path: endpoint.path,
            headers,
            service_name: config.service_name.get_ref().clone(),
        })
    } else {
        None
    };
    let exporter = traces.get_or_create(target, &metrics.tracing_spans_dropped);
    Ok(exporter.map(|exporter| crate::trace::Tracing {
        ratio: *config.ratio.get_ref(),
        tracecontext: config.reads_tracecontext(),
        b3: config.reads_b3(),
        exporter,
    }))
}

/// The route's own copy of its upstream's settings when it sets timeouts or retries of its
/// own; `None` when it shares the upstream as it is.
fn upstream_for_route(
    route: &crate::config::RouteConfig,
    name: &str,
    config: &Config,
) -> Option<crate::config::UpstreamConfig> {
    if route.connect_timeout.is_none()
        && route.response_timeout.is_none()
        && route.retries.is_none()
    {
        return None;
    }
    let mut own = config.upstreams.get(name)?.clone();
    if let Some(timeout) = route.connect_timeout {
        own.connect_timeout = timeout;
    }
    if let Some(timeout) = route.response_timeout {
        own.response_timeout = timeout;
    }
    if let Some(retries) = route.retries {
        own.retries = retries;
    }
    Some(own)
}

/// The upstream of a route that only answers at the edge: no servers. Nothing is forwarded
/// to it; were anything, the answer would be 503.
fn no_upstream(
    registry: &ServerRegistry,
    addresses: &AddressBook,
    metrics: &Metrics,
) -> Result<Upstream, String> {
    let empty: crate::config::UpstreamConfig =
        toml::from_str("servers = []").map_err(|e| e.to_string())?;
    Upstream::compile("none", &empty, &None, registry, addresses, metrics)
}

/// A route's `[compression.NAME]`, with its metric handles resolved for the route.
fn compile_compression(
    name: &str,
    settings: &CompressionConfig,
    route: &str,
    metrics: &Metrics,
) -> Result<Compression, String> {
    let types = settings
        .type_matcher()
        .map_err(|e| format!("compression {name}: {e}"))?;
    let offered = settings
        .encodings()
        .into_iter()
        .map(|encoding| {
            let labels = [route, encoding.token()];
            Offered {
                encoding,
                level: settings.level(encoding),
                responses: metrics.compressed_responses.with_label_values(&labels),
                bytes_in: metrics.compression_input_bytes.with_label_values(&labels),
                bytes_out: metrics.compression_output_bytes.with_label_values(&labels),
            }
        })
        .collect();
    Ok(Compression {
        name: name.to_owned(),
        types,
        min_length: settings.min_length.0,
        offered,
    })
}

/// A route with `[[route.split]]` or `[[route.pick_upstream]]`: one copy of it per upstream
/// it may choose (its side), and the chooser. Everything after the choice (cache, forwarding,
/// retries, breakers, metrics, the access log) goes by the side's own `upstream` and
/// `metrics`; what comes before it (access, limits) ran on the route itself.
fn compile_split(
    config: &crate::config::RouteConfig,
    mut route: Route,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    metrics: &Metrics,
) -> Result<Route, String> {
    if !config.has_traffic_rules() {
        return Ok(route);
    }
    let mut names: Vec<String> = Vec::new();
    let mut side_of = |name: &str| match names.iter().position(|n| n == name) {
        Some(index) => index,
        None => {
            names.push(name.to_owned());
            names.len() - 1
        }
    };
    let default = config
        .upstream
        .as_ref()
        .map_or(0, |name| side_of(name.get_ref()));
    let weights: Vec<(usize, u32)> = config
        .split
        .iter()
        .map(|side| {
            let side = side.get_ref();
            (side_of(side.upstream.get_ref()), *side.weight.get_ref())
        })
        .collect();
    let mut picks = Vec::new();
    for pick in &config.pick_upstream {
        let on = match (&pick.header, &pick.cookie) {
            (Some(header), _) => PickOn::Header(
                http::HeaderName::from_bytes(header.get_ref().as_bytes())
                    .map_err(|_| format!("route {}: bad pick_upstream header", route.name))?,
            ),
            (None, Some(cookie)) => PickOn::Cookie(cookie.get_ref().clone()),
            (None, None) => {
                return Err(format!(
                    "route {}: pick_upstream needs a header or a cookie",
                    route.name
                ));
            }
        };
        picks.push(Pick {
            on,
            value: pick.value.get_ref().as_bytes().to_vec(),
            side: side_of(pick.upstream.get_ref()),
        });
    }
    let by = match &config.split_by {
        Some(by) => Some(
            crate::config::parse_split_by(by.get_ref())
                .map_err(|e| format!("route {}: {e}", route.name))?,
        ),
        None => None,
    };
    let mut sides = Vec::with_capacity(names.len());
    let mut counts = Vec::with_capacity(names.len());
    let mut side_weights = vec![0u32; names.len()];
    for &(side, weight) in &weights {
        side_weights[side] = weight;
    }
    let all: Arc<[Arc<str>]> = names.iter().map(|name| Arc::from(name.as_str())).collect();
    for name in &names {
        let upstream = upstreams
            .get(name)
            .ok_or_else(|| format!("route names a missing upstream {name:?}"))?;
        let side = CacheSide {
            upstream: Arc::clone(&upstream.name),
            all: Arc::clone(&all),
        };
        sides.push(Arc::new(route_side(&route, upstream, side, metrics)));
        counts.push(metrics.traffic.split_side(&route.name, name));
    }
    route.split = Some(Box::new(Split {
        chooser: Chooser::new(picks, &weights, by, default),
        sides,
        names: all.to_vec(),
        weights: side_weights,
        counts,
    }));
    Ok(route)
}

/// `route` as it sends to `upstream`: labelled by it in metrics and keyed by it in the cache.
/// Its limits are left out: they are decided on the route, before the choice.
fn route_side(
    route: &Route,
    upstream: &Arc<Upstream>,
    cache_side: CacheSide,
    metrics: &Metrics,
) -> Route {
    Route {
        name: Arc::clone(&route.name),
        upstream: Arc::clone(upstream),
        path: route.path.clone(),
        path_prefix: route.path_prefix.clone(),
        strip_prefix: route.strip_prefix,
        replace_prefix: route.replace_prefix.clone(),
        rewrites: route.rewrites.clone(),
        // Answered before the split's choice.
        answer: None,
        files: None,
        error_pages: route.error_pages.clone(),
        header_templates: route.header_templates.clone(),
        set_host: route.set_host.clone(),
        request_headers: route.request_headers.clone(),
        response_headers: route.response_headers.clone(),
        metrics: RouteMetrics::new(metrics, &route.name, &upstream.name),
        cache: route.cache.clone(),
        access: route.access.clone(),
        max_body_bytes: route.max_body_bytes,
        rate_limits: RouteLimits::default(),
        compression: route.compression.clone(),
        split: None,
        cache_side: Some(cache_side),
        cors: route.cors.clone(),
        forward_auth: route.forward_auth.clone(),
        auth: route.auth.clone(),
        mirror: route.mirror.clone(),
    }
}

/// A route's `[route.mirror]`, with its shadow upstream and counters resolved.
fn compile_mirror(
    config: &crate::config::RouteConfig,
    route: &str,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    metrics: &Metrics,
) -> Result<Option<Arc<Mirror>>, String> {
    let Some(mirror) = &config.mirror else {
        return Ok(None);
    };
    let mirror = mirror.get_ref();
    let upstream = upstreams.get(mirror.upstream.get_ref()).ok_or_else(|| {
        format!(
            "route mirror names a missing upstream {:?}",
            mirror.upstream.get_ref()
        )
    })?;
    Ok(Some(Arc::new(Mirror::new(
        Arc::clone(upstream),
        mirror.max_body_bytes.0,
        *mirror.max_in_flight.get_ref(),
        *mirror.percent.get_ref(),
        metrics.traffic.mirror_outcomes(route),
    ))))
}

/// A route's `basic_auth` and `jwt`, with their counters resolved for the route.
fn compile_auth(
    route: &crate::config::RouteConfig,
    config: &Config,
    registry: &crate::auth::AuthRegistry,
    route_name: &str,
    metrics: &Metrics,
) -> Result<Option<Arc<crate::auth::RouteAuth>>, String> {
    use crate::auth::{Counters, JwtSettings, KeySource, RouteAuth};
    if route.basic_auth.is_none() && route.jwt.is_none() {
        return Ok(None);
    }
    let counters = |kind: &str| {
        let outcome = |o: &str| {
            metrics
                .auth_requests
                .with_label_values(&[route_name, kind, o])
        };
        Counters {
            allowed: outcome("allowed"),
            missing: outcome("missing"),
            denied: outcome("denied"),
        }
    };
    let basic = match &route.basic_auth {
        Some(name) => {
            let settings = config
                .basic_auths
                .get(name.get_ref())
                .ok_or_else(|| format!("route names a missing basic_auth {:?}", name.get_ref()))?;
            let basic = registry
                .basic(
                    name.get_ref(),
                    settings.realm.get_ref(),
                    settings.htpasswd.get_ref(),
                )
                .map_err(|e| format!("basic_auth {}: {e}", name.get_ref()))?;
            Some((basic, counters("basic")))
        }
        None => None,
    };
    let jwt = match &route.jwt {
        Some(name) => {
            let jwt = config
                .jwts
                .get(name.get_ref())
                .ok_or_else(|| format!("route names a missing jwt {:?}", name.get_ref()))?;
            let fail = |e: String| format!("jwt {}: {e}", name.get_ref());
            let source = match (&jwt.jwks_file, &jwt.jwks_url) {
                (Some(file), _) => KeySource::File(file.get_ref().clone()),
                (None, Some(url)) => KeySource::Url {
                    url: url.get_ref().clone(),
                    ca_file: jwt.ca_file.as_ref().map(|c| c.get_ref().clone()),
                    refresh: jwt.refresh.0,
                },
                (None, None) => KeySource::None,
            };
            let header_name = |text: &str| {
                http::HeaderName::from_bytes(text.as_bytes())
                    .map_err(|_| fail(format!("{text:?} is not a valid header name")))
            };
            let settings = JwtSettings {
                issuer: jwt.issuer.as_ref().map(|i| i.get_ref().clone()),
                audiences: jwt
                    .audiences
                    .as_ref()
                    .map(|list| list.iter().map(|a| a.get_ref().clone()).collect()),
                source,
                secret: match &jwt.secret_file {
                    Some(file) => Some(crate::config::read_secret(file.get_ref()).map_err(fail)?),
                    None => None,
                },
                algorithms: crate::config::jwt_algorithms(jwt).map_err(fail)?,
                leeway: jwt.leeway.0,
                claims_to_headers: jwt
                    .claims_to_headers
                    .iter()
                    .map(|(claim, header)| Ok((claim.clone(), header_name(header.get_ref())?)))
                    .collect::<Result<_, String>>()?,
                header: header_name(jwt.header.get_ref())?,
            };
            let compiled = registry.jwt(name.get_ref(), settings).map_err(fail)?;
            Some((compiled, counters("jwt")))
        }
        None => None,
    };
    Ok(Some(Arc::new(RouteAuth { basic, jwt })))
}
