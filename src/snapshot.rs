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
    /// Its `basic_auth` and `jwt` checks, if it has any.
    pub auth: Option<Arc<crate::auth::RouteAuth>>,
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
        metrics: &Metrics,
        listener_ids: &HashMap<String, usize>,
        auth: &crate::auth::AuthRegistry,
    ) -> Result<Self, String> {
        // Everything that can fail is read first: compiling an upstream configures servers
        // that the snapshot in force shares, which a failed reload must leave alone.
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
            let access = crate::config::AccessRules::parse(
                route.access.iter().map(|r| r.get_ref().as_str()),
            )
            .map_err(|(i, e)| format!("route {name}: access[{i}]: {e}"))?;
            let route_auth = compile_auth(route, &config, auth, &name, metrics)?;
            let compiled = Route {
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
