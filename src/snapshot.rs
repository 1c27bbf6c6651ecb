//! The compiled configuration in force. A `Snapshot` holds everything a request needs —
//! router, upstreams with their balancers, limits, metric handles — and is swapped whole
//! through an `ArcSwap`, so a request sees exactly one configuration from start to end.

use crate::cache::CacheRegistry;
use crate::compress::{Compression, Offered};
use crate::config::{AccessLogFormat, CompressionConfig, Config};
use crate::headers::HeaderEdits;
use crate::limit::{LimiterRegistry, RouteLimits};
use crate::metrics::{Metrics, RouteMetrics};
use crate::route::{HostPattern, RouteEntry, Router};
use crate::upstream::discovery::AddressBook;
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
    pub upstream: Arc<Upstream>,
    pub path_prefix: String,
    pub strip_prefix: bool,
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
    /// The `[cors.NAME]` it answers preflights and sets CORS fields by, if any.
    pub cors: Option<crate::policy::cors::Cors>,
    /// The `[forward_auth.NAME]` its requests must pass, if any.
    pub forward_auth: Option<Arc<ForwardAuthTarget>>,
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
    pub config: Config,
    pub loaded_at: SystemTime,
    /// Who may use the admin listener's state-changing endpoints (the token file as read).
    pub admin_writes: crate::policy::admin_auth::AdminWrites,
}

impl Snapshot {
    /// Compiles a validated config. Servers already known to `registry` keep their state;
    /// servers given by name stand for the addresses `addresses` holds for them.
    pub fn compile(
        config: Config,
        registry: &ServerRegistry,
        addresses: &AddressBook,
        caches: &CacheRegistry,
        limiters: &LimiterRegistry,
        metrics: &Metrics,
        listener_ids: &HashMap<String, usize>,
    ) -> Result<Self, String> {
        // Everything that can fail is read first: compiling an upstream configures servers
        // that the snapshot in force shares, which a failed reload must leave alone.
        let admin_writes = crate::policy::admin_auth::AdminWrites::compile(&config.admin)
            .map_err(|e| format!("admin: {e}"))?;
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
        for route in &config.routes {
            let upstream_name = route.upstream.get_ref();
            let upstream = upstreams
                .get(upstream_name)
                .ok_or_else(|| format!("route names a missing upstream {upstream_name:?}"))?
                .clone();
            let listener = match &route.listener {
                Some(name) => Some(*listener_ids.get(name.get_ref()).ok_or_else(|| {
                    format!("route names a missing listener {:?}", name.get_ref())
                })?),
                None => None,
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
                        .get_or_create(limit.get_ref(), settings, metrics)
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
            let compiled = Route {
                forward_auth,
                cors,
                access,
                max_body_bytes: route
                    .max_body_bytes
                    .map_or(config.limits.max_body_bytes.0, |limit| limit.0),
                compression,
                rate_limits: RouteLimits::new(route_limiters),
                metrics: RouteMetrics::new(metrics, &name, upstream_name),
                name: name.into(),
                upstream,
                path_prefix: route.path_prefix.get_ref().clone(),
                strip_prefix: route.strip_prefix,
                set_host: route
                    .set_host
                    .as_ref()
                    .and_then(|h| HeaderValue::from_str(h.get_ref()).ok()),
                request_headers: HeaderEdits::compile(&route.request_headers),
                response_headers: HeaderEdits::compile(&route.response_headers),
                cache: match &route.cache {
                    Some(name) => Some(caches.get_or_create(
                        name.get_ref(),
                        config.caches.get(name.get_ref()).ok_or_else(|| {
                            format!("route names a missing cache {:?}", name.get_ref())
                        })?,
                        metrics,
                    )),
                    None => None,
                },
            };
            entries.push(RouteEntry {
                listener,
                host: HostPattern::parse(route.host.get_ref()),
                path_prefix: route.path_prefix.get_ref().clone(),
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
        Ok(Self {
            router: Router::new(entries),
            upstreams,
            limits,
            access_log: config.log.access,
            unrouted: RouteMetrics::new(metrics, "none", "none"),
            config,
            loaded_at: SystemTime::now(),
            admin_writes,
        })
    }
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
