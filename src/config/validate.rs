//! Meaning checks that serde cannot make: references between sections, addresses, duplicates
//! and value ranges. Every problem is reported, not just the first.

use super::errors::{ConfigError, Locator};
use super::gaps::Gaps;
use super::{Config, HeaderRules};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

const MIN_HEADER_BYTES: u64 = 8 * 1024;
const MAX_WEIGHT: u32 = 10_000;
/// Retries remember the servers tried in a 64-bit set.
const MAX_SERVERS: usize = 64;
const MIN_DNS_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) fn validate(
    config: &Config,
    gaps: &Gaps,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    // Every address gatehouse binds, to find two sockets on one address.
    let mut binds: HashMap<SocketAddr, String> = HashMap::new();
    let mut claim =
        |addr: SocketAddr, owner: String, span, key: &str, errors: &mut Vec<ConfigError>| {
            if addr.port() == 0 {
                // Port 0 asks the kernel for a fresh port each time: never a clash.
                return;
            }
            if let Some(previous) = binds.get(&addr) {
                errors.push(at.error(
                    span,
                    key,
                    format!("address {addr} is already used by {previous}"),
                ));
            } else {
                binds.insert(addr, owner);
            }
        };

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        errors.push(at.error(
            at.span_of(&["log", "level"]),
            "log.level",
            format!("invalid log level {:?}: {e}", config.log.level),
        ));
    }

    let admin_bind = config.admin.bind.get_ref();
    if !admin_bind.is_empty() {
        match parse_bind(admin_bind) {
            Ok(addr) => claim(
                addr,
                "the admin listener".into(),
                config.admin.bind.span(),
                "admin.bind",
                errors,
            ),
            Err(message) => errors.push(at.error(config.admin.bind.span(), "admin.bind", message)),
        }
    }

    if config.listeners.is_empty() && !gaps.listeners.any() {
        errors.push(at.error(
            0..0,
            "listener",
            "no [[listener]] is configured; add one with a bind address",
        ));
    }
    let mut listener_names: BTreeMap<&str, ()> = BTreeMap::new();
    for (listener, &i) in config.listeners.iter().zip(&gaps.listener_at) {
        let name = listener.name.get_ref();
        if name.is_empty() {
            errors.push(at.error(
                listener.name.span(),
                format!("listener[{i}].name"),
                "must not be empty",
            ));
        } else if listener_names.insert(name, ()).is_some() {
            errors.push(at.error(
                listener.name.span(),
                format!("listener[{i}].name"),
                format!("listener name {name:?} is used twice"),
            ));
        }
        match parse_bind(listener.bind.get_ref()) {
            Ok(addr) => claim(
                addr,
                format!("listener {name:?}"),
                listener.bind.span(),
                &format!("listener[{i}].bind"),
                errors,
            ),
            Err(message) => {
                errors.push(at.error(listener.bind.span(), format!("listener[{i}].bind"), message))
            }
        }
    }

    for (route, &i) in config.routes.iter().zip(&gaps.route_at) {
        let key = |field: &str| format!("route[{i}].{field}");
        // `upstream`, `[[route.split]]`, `[[route.pick_upstream]]` and `[route.mirror]`.
        super::split::validate(route, i, config, gaps, at, errors);
        let mut location_errors = Vec::new();
        super::location::check(route, &mut location_errors);
        super::files::check(route, &mut location_errors);
        for (span, field, message) in location_errors {
            errors.push(at.error(span, key(&field), message));
        }
        if let Some(listener) = &route.listener
            && !listener_names.contains_key(listener.get_ref().as_str())
            && !gaps.listeners.may_be(listener.get_ref())
        {
            errors.push(at.error(
                listener.span(),
                key("listener"),
                format!("no listener named {:?}", listener.get_ref()),
            ));
        }
        if let Err(message) = check_host_pattern(route.host.get_ref()) {
            errors.push(at.error(route.host.span(), key("host"), message));
        }
        if let Some(cache) = &route.cache
            && !config.caches.contains_key(cache.get_ref())
            && !gaps.caches.may_be(cache.get_ref())
        {
            let known: Vec<&str> = config.caches.keys().map(String::as_str).collect();
            errors.push(at.error(
                cache.span(),
                key("cache"),
                format!(
                    "no cache named {:?} (configured: {})",
                    cache.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
        if let Some(compression) = &route.compression
            && !config.compressions.contains_key(compression.get_ref())
            && !gaps.compressions.may_be(compression.get_ref())
        {
            let known: Vec<&str> = config.compressions.keys().map(String::as_str).collect();
            errors.push(at.error(
                compression.span(),
                key("compression"),
                format!(
                    "no compression named {:?} (configured: {})",
                    compression.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
        if let Some(cors) = &route.cors
            && !config.cors.contains_key(cors.get_ref())
            && !gaps.cors.may_be(cors.get_ref())
        {
            let known: Vec<&str> = config.cors.keys().map(String::as_str).collect();
            errors.push(at.error(
                cors.span(),
                key("cors"),
                format!(
                    "no cors named {:?} (configured: {})",
                    cors.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
        if let Some(auth) = &route.forward_auth
            && !config.forward_auths.contains_key(auth.get_ref())
            && !gaps.forward_auths.may_be(auth.get_ref())
        {
            let known: Vec<&str> = config.forward_auths.keys().map(String::as_str).collect();
            errors.push(at.error(
                auth.span(),
                key("forward_auth"),
                format!(
                    "no forward_auth named {:?} (configured: {})",
                    auth.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
        if let Err((i, message)) =
            super::AccessRules::parse(route.access.iter().map(|rule| rule.get_ref().as_str()))
            && let Some(rule) = route.access.get(i)
        {
            errors.push(at.error(rule.span(), key(&format!("access[{i}]")), message));
        }
        for limit in &route.limits {
            if !config.rate_limits.contains_key(limit.get_ref())
                && !gaps.rate_limits.may_be(limit.get_ref())
            {
                let known: Vec<&str> = config.rate_limits.keys().map(String::as_str).collect();
                errors.push(at.error(
                    limit.span(),
                    key("limits"),
                    format!(
                        "no limit named {:?} (configured: {})",
                        limit.get_ref(),
                        list_or_none(&known)
                    ),
                ));
            }
        }
        if let Some(host) = &route.set_host
            && http::HeaderValue::from_str(host.get_ref()).is_err()
        {
            errors.push(at.error(
                host.span(),
                key("set_host"),
                "not a valid Host header value",
            ));
        }
        check_header_rules(&route.request_headers, at, &key("request_headers"), errors);
        check_header_rules(
            &route.response_headers,
            at,
            &key("response_headers"),
            errors,
        );
    }

    if let Err((span, field, message)) =
        super::location::error_pages(&config.error_pages, "error_page")
    {
        errors.push(at.error(span, field, message));
    }
    super::admin::validate(config, at, errors);
    super::auth::validate(config, gaps, at, errors);
    super::tls::validate(config, &gaps.listener_at, at, errors);
    super::real_ip::validate(config, &gaps.listener_at, at, errors);
    for (i, nameserver) in config.resolver.nameservers.iter().enumerate() {
        if super::parse_nameserver(nameserver.get_ref()).is_none() {
            errors.push(at.error(
                nameserver.span(),
                format!("resolver.nameservers[{i}]"),
                "expected an IP address with an optional port, e.g. \"10.0.0.2\" or \"127.0.0.1:5353\"",
            ));
        }
    }
    if config.resolver.timeout.0.is_zero() {
        errors.push(at.error(
            at.span_of(&["resolver", "timeout"]),
            "resolver.timeout",
            "must be greater than zero",
        ));
    }

    for (name, upstream) in &config.upstreams {
        let key = |field: &str| format!("upstream.{name}.{field}");
        if upstream.servers.get_ref().len() > MAX_SERVERS {
            errors.push(at.error(
                upstream.servers.span(),
                key("servers"),
                format!(
                    "{} servers; an upstream has at most {MAX_SERVERS} (split it into several)",
                    upstream.servers.get_ref().len()
                ),
            ));
        }
        if upstream.servers.get_ref().is_empty() {
            errors.push(at.error(
                upstream.servers.span(),
                key("servers"),
                "the server list is empty",
            ));
        }
        let mut seen: BTreeMap<&str, ()> = BTreeMap::new();
        for (j, server) in upstream.servers.get_ref().iter().enumerate() {
            let entry = server.get_ref();
            if let Err(message) = parse_server_addr(&entry.addr) {
                errors.push(at.error(
                    server.span(),
                    format!("upstream.{name}.servers[{j}]"),
                    message,
                ));
            } else if seen.insert(entry.addr.as_str(), ()).is_some() {
                errors.push(at.error(
                    server.span(),
                    format!("upstream.{name}.servers[{j}]"),
                    format!("server {} is listed twice", entry.addr),
                ));
            }
            if entry.weight == 0 || entry.weight > MAX_WEIGHT {
                errors.push(at.error(
                    server.span(),
                    format!("upstream.{name}.servers[{j}].weight"),
                    format!("weight must be between 1 and {MAX_WEIGHT}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&upstream.panic_threshold) {
            errors.push(at.error(
                at.span_of(&["upstream", name, "panic_threshold"]),
                key("panic_threshold"),
                "must be between 0.0 (off) and 1.0",
            ));
        }
        if !(0.0..=1.0).contains(&upstream.retry_budget) {
            errors.push(at.error(
                at.span_of(&["upstream", name, "retry_budget"]),
                key("retry_budget"),
                "must be between 0.0 and 1.0 (a share of the requests in flight)",
            ));
        }
        check_hashing(name, upstream, at, errors);
        if upstream.dns_refresh.0 < MIN_DNS_REFRESH {
            errors.push(at.error(
                at.span_of(&["upstream", name, "dns_refresh"]),
                key("dns_refresh"),
                "must be at least 100ms (each refresh queries the name servers)",
            ));
        }
        if let Some(health) = &upstream.health {
            let at_key = |k: &str| at.span_of(&["upstream", name, "health", k]);
            let hkey = |k: &str| format!("upstream.{name}.health.{k}");
            if !health.path.get_ref().starts_with('/') {
                errors.push(at.error(health.path.span(), hkey("path"), "must start with '/'"));
            }
            if let Err(message) = super::StatusMatcher::parse(health.expect_status.get_ref()) {
                errors.push(at.error(health.expect_status.span(), hkey("expect_status"), message));
            }
            for (field, value) in [("interval", health.interval), ("timeout", health.timeout)] {
                if value.0.is_zero() {
                    errors.push(at.error(at_key(field), hkey(field), "must be greater than zero"));
                }
            }
            for (field, value) in [
                ("healthy_threshold", health.healthy_threshold),
                ("unhealthy_threshold", health.unhealthy_threshold),
            ] {
                if value == 0 {
                    errors.push(at.error(at_key(field), hkey(field), "must be at least 1"));
                }
            }
        }
        if let Some(breaker) = &upstream.breaker {
            let at_key = |k: &str| at.span_of(&["upstream", name, "breaker", k]);
            let bkey = |k: &str| format!("upstream.{name}.breaker.{k}");
            if !(0.0..=1.0).contains(&breaker.failure_rate) {
                errors.push(at.error(
                    at_key("failure_rate"),
                    bkey("failure_rate"),
                    "must be between 0.0 (off) and 1.0",
                ));
            }
            for (field, value) in [("window", breaker.window), ("open_for", breaker.open_for)] {
                if value.0.is_zero() {
                    errors.push(at.error(at_key(field), bkey(field), "must be greater than zero"));
                }
            }
            if breaker.max_open_for < breaker.open_for {
                errors.push(at.error(
                    at_key("max_open_for"),
                    bkey("max_open_for"),
                    format!("must be at least open_for ({})", breaker.open_for),
                ));
            }
            if breaker.half_open_requests == 0 {
                errors.push(at.error(
                    at_key("half_open_requests"),
                    bkey("half_open_requests"),
                    "must be at least 1",
                ));
            }
            if breaker.consecutive_failures == 0 && breaker.failure_rate == 0.0 {
                errors.push(at.error(
                    at.span_of(&["upstream", name, "breaker"]),
                    format!("upstream.{name}.breaker"),
                    "consecutive_failures and failure_rate are both 0: the breaker could never open",
                ));
            }
        }
        if upstream.connect_timeout.0.is_zero() {
            errors.push(at.error(
                at.span_of(&["upstream", name, "connect_timeout"]),
                key("connect_timeout"),
                "must be greater than zero",
            ));
        }
        if upstream.response_timeout.0.is_zero() {
            errors.push(at.error(
                at.span_of(&["upstream", name, "response_timeout"]),
                key("response_timeout"),
                "must be greater than zero",
            ));
        }
    }

    for (name, cache) in &config.caches {
        let ckey = |k: &str| format!("cache.{name}.{k}");
        if cache.max_size.0 == 0 {
            errors.push(at.error(
                at.span_of(&["cache", name, "max_size"]),
                ckey("max_size"),
                "must be greater than zero",
            ));
        }
        if cache.max_object_size > cache.max_size {
            errors.push(at.error(
                at.span_of(&["cache", name, "max_object_size"]),
                ckey("max_object_size"),
                format!("must not exceed max_size ({})", cache.max_size),
            ));
        }
        let field = cache.cache_control_field.get_ref();
        if !field.is_empty() && http::HeaderName::from_bytes(field.as_bytes()).is_err() {
            errors.push(at.error(
                cache.cache_control_field.span(),
                ckey("cache_control_field"),
                format!("{field:?} is not a valid header name"),
            ));
        }
        if *cache.shared.get_ref() && !config.redis.enabled() {
            let span = if cache.shared.span() == (0..0) {
                at.span_of(&["cache", name, "shared"])
            } else {
                cache.shared.span()
            };
            errors.push(at.error(
                span,
                ckey("shared"),
                "the shared tier is kept in Redis: set [redis] url",
            ));
        }
    }

    super::redis::validate(&config.redis, at, errors);
    super::otel::validate(&config.tracing, at, errors);
    for (name, limit) in &config.rate_limits {
        check_rate_limit(name, limit, config.redis.enabled(), at, errors);
    }
    for (name, cors) in &config.cors {
        super::cors::validate(name, cors, at, errors);
    }
    for (name, auth) in &config.forward_auths {
        let may_be = |upstream: &str| gaps.upstreams.may_be(upstream);
        super::forward_auth::validate(name, auth, config, may_be, at, errors);
    }

    for (name, compression) in &config.compressions {
        for (span, field, message) in compression.problems() {
            let span = if span == (0..0) {
                at.span_of(&["compression", name, field])
            } else {
                span
            };
            errors.push(at.error(span, format!("compression.{name}.{field}"), message));
        }
    }

    if config.limits.max_header_bytes.0 < MIN_HEADER_BYTES {
        errors.push(at.error(
            at.span_of(&["limits", "max_header_bytes"]),
            "limits.max_header_bytes",
            format!(
                "must be at least 8KiB (got {} bytes)",
                config.limits.max_header_bytes.0
            ),
        ));
    }
    if config.limits.header_read_timeout.0.is_zero() {
        errors.push(at.error(
            at.span_of(&["limits", "header_read_timeout"]),
            "limits.header_read_timeout",
            "must be greater than zero",
        ));
    }

    for (i, backend) in config.demo.backends.iter().enumerate() {
        let entry = backend.get_ref();
        let key = format!("demo.backends[{i}]");
        match parse_bind(&entry.addr) {
            Ok(addr) => claim(
                addr,
                format!("demo backend {}", i + 1),
                backend.span(),
                &key,
                errors,
            ),
            Err(message) => errors.push(at.error(backend.span(), key.clone(), message)),
        }
        if !(0.0..=1.0).contains(&entry.error_rate) {
            errors.push(at.error(
                backend.span(),
                format!("{key}.error_rate"),
                "must be between 0.0 and 1.0",
            ));
        }
    }
}

fn check_rate_limit(
    name: &str,
    limit: &super::RateLimitConfig,
    redis_enabled: bool,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let lkey = |k: &str| format!("limit.{name}.{k}");
    if *limit.shared.get_ref() {
        let span = if limit.shared.span() == (0..0) {
            at.span_of(&["limit", name, "shared"])
        } else {
            limit.shared.span()
        };
        let mut problem =
            |message: &str| errors.push(at.error(span.clone(), lkey("shared"), message));
        if !redis_enabled {
            problem("a shared limit counts in Redis: set [redis] url");
        }
        if limit.rate.is_none() {
            problem("only a rate is shared (concurrency is counted per process): set rate");
        }
        if !limit.nodelay {
            problem(
                "a shared limit answers at once within its burst (replicas cannot space requests out to one clock): set nodelay = true",
            );
        }
    }
    match &limit.rate {
        Some(rate) => {
            if let Err(message) = super::Rate::parse(rate.get_ref()) {
                errors.push(at.error(rate.span(), lkey("rate"), message));
            }
        }
        None if limit.concurrency == 0 => errors.push(at.error(
            at.span_of(&["limit", name]),
            format!("limit.{name}"),
            "a limit needs a rate, a concurrency, or both",
        )),
        None => {}
    }
    let keys = &limit.key.get_ref().0;
    if keys.is_empty() {
        errors.push(at.error(
            at.span_of(&["limit", name, "key"]),
            lkey("key"),
            "must name at least one key",
        ));
    }
    for part in keys {
        if let Err(message) = super::KeyPart::parse(part) {
            errors.push(at.error(at.span_of(&["limit", name, "key"]), lkey("key"), message));
        }
    }
    if !(1..=128).contains(&limit.ipv6_prefix) {
        errors.push(at.error(
            at.span_of(&["limit", name, "ipv6_prefix"]),
            lkey("ipv6_prefix"),
            "must be between 1 and 128",
        ));
    }
    if limit.max_keys == 0 {
        errors.push(at.error(
            at.span_of(&["limit", name, "max_keys"]),
            lkey("max_keys"),
            "must be greater than zero",
        ));
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A bind address must be a literal socket address: binding never resolves names.
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("invalid address {text:?}; expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\"")
    })
}

/// Whether a server address asks for TLS (`https://`).
pub fn is_https_server(text: &str) -> bool {
    text.starts_with("https://")
}

/// An upstream server address: `IP:PORT`, `host:port`, optionally prefixed by `http://` or
/// `https://`.
pub fn parse_server_addr(text: &str) -> Result<(String, u16), String> {
    let bad = || {
        format!(
            "invalid server address {text:?}; expected HOST:PORT such as \"127.0.0.1:8001\" or \"orders.internal:80\""
        )
    };
    let rest = match text.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme {scheme:?} in server address {text:?}; use http:// or https://"
            ));
        }
        None => text,
    };
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_host || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn check_host_pattern(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid = !name.is_empty()
        && !name.contains('*')
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':' || c == '[' || c == ']'
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid host {host:?}; expected an exact host, a wildcard like \"*.example.com\", or \"*\""
        ))
    }
}

fn check_header_rules(
    rules: &HeaderRules,
    at: &Locator<'_>,
    key: &str,
    errors: &mut Vec<ConfigError>,
) {
    let check_name = |name: &str, span: std::ops::Range<usize>, errors: &mut Vec<ConfigError>| {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(at.error(span, key, format!("{name:?} is not a valid header name")));
        }
    };
    for (name, value) in &rules.set {
        check_name(name, value.span(), errors);
        if http::HeaderValue::from_str(value.get_ref()).is_err() {
            errors.push(at.error(
                value.span(),
                format!("{key}.set.{name}"),
                "not a valid header value",
            ));
        }
    }
    for name in &rules.remove {
        check_name(name.get_ref(), name.span(), errors);
    }
}

/// `hash_key` and `hash_balance_factor` parse, are in range, and are set only where they do
/// something: on an upstream that balances by consistent hashing.
fn check_hashing(
    name: &str,
    upstream: &super::UpstreamConfig,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let key = |field: &str| format!("upstream.{name}.{field}");
    let hashing = upstream.balance == super::BalanceAlgorithm::ConsistentHash;
    if let Some(hash_key) = &upstream.hash_key {
        if let Err(message) = super::HashKey::parse(hash_key.get_ref()) {
            errors.push(at.error(hash_key.span(), key("hash_key"), message));
        } else if !hashing {
            errors.push(at.error(
                hash_key.span(),
                key("hash_key"),
                "only used with balance = \"consistent_hash\"",
            ));
        }
    }
    let factor = upstream.hash_balance_factor;
    let factor_at = || at.span_of(&["upstream", name, "hash_balance_factor"]);
    if !(factor == 0.0 || (1.0..=100.0).contains(&factor)) {
        errors.push(at.error(
            factor_at(),
            key("hash_balance_factor"),
            "must be 0 (unbounded) or between 1.0 and 100.0 (e.g. 1.25: at most 125% of the mean load)",
        ));
    } else if factor != 0.0 && !hashing {
        errors.push(at.error(
            factor_at(),
            key("hash_balance_factor"),
            "only used with balance = \"consistent_hash\"",
        ));
    }
}
