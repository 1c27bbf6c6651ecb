//! `[redis]`: the Redis server that replicas of gatehouse share state through (cluster-wide
//! rate limits), and how long gatehouse waits on it.

use super::ConfigDuration;
use super::errors::{ConfigError, Locator};
use serde::Deserialize;
use toml::Spanned;

/// `[redis]`. Without the section (or with `url = ""`) nothing is shared.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: Spanned<String>,
    /// The most one call may take, answer included; past it the call fails and the caller
    /// decides without Redis.
    pub timeout: ConfigDuration,
    /// The most a (re)connection may take.
    pub connect_timeout: ConfigDuration,
    /// Failed calls in a row that open the breaker: no call is sent until it probes again.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call; doubles after each failed
    /// probe, up to `breaker_max_open_for`.
    pub breaker_open_for: ConfigDuration,
    pub breaker_max_open_for: ConfigDuration,
    /// Put in front of every key gatehouse writes, so that one Redis can serve several
    /// clusters (or other programs).
    pub key_prefix: Spanned<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Spanned::new(0..0, String::new()),
            timeout: ConfigDuration::from_millis(50),
            connect_timeout: ConfigDuration::from_millis(500),
            breaker_failures: 3,
            breaker_open_for: ConfigDuration::from_millis(500),
            breaker_max_open_for: ConfigDuration::from_secs(10),
            key_prefix: Spanned::new(0..0, "gatehouse:".into()),
        }
    }
}

impl RedisConfig {
    /// Whether a server is configured.
    pub fn enabled(&self) -> bool {
        !self.url.get_ref().is_empty()
    }
}

/// Checks a URL as the client will read it: `redis://` (TLS and unix sockets are not built in).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo as _;
    if !url.starts_with("redis://") {
        return Err(format!(
            "invalid Redis URL {url:?}; expected redis://host:port such as \"redis://127.0.0.1:6379\""
        ));
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| format!("invalid Redis URL {url:?}: {e}"))
}

pub(super) fn validate(redis: &RedisConfig, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    if redis.enabled()
        && let Err(message) = check_redis_url(redis.url.get_ref())
    {
        errors.push(at.error(redis.url.span(), "redis.url", message));
    }
    for (key, value) in [
        ("timeout", redis.timeout),
        ("connect_timeout", redis.connect_timeout),
        ("breaker_open_for", redis.breaker_open_for),
        ("breaker_max_open_for", redis.breaker_max_open_for),
    ] {
        if value.0.is_zero() {
            errors.push(at.error(
                at.span_of(&["redis", key]),
                format!("redis.{key}"),
                "must be greater than zero",
            ));
        }
    }
    if redis.breaker_failures == 0 {
        errors.push(at.error(
            at.span_of(&["redis", "breaker_failures"]),
            "redis.breaker_failures",
            "must be at least 1",
        ));
    }
    if redis.breaker_max_open_for.0 < redis.breaker_open_for.0 {
        errors.push(at.error(
            at.span_of(&["redis", "breaker_max_open_for"]),
            "redis.breaker_max_open_for",
            format!(
                "must not be shorter than breaker_open_for ({})",
                redis.breaker_open_for
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls() {
        assert!(check_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_redis_url("redis://user:pw@cache.internal:6380/2").is_ok());
        assert!(check_redis_url("redis://[::1]:6379").is_ok());
        for bad in [
            "127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "rediss://127.0.0.1:6379",
            "redis://127.0.0.1:notaport",
            "redis+unix:///tmp/redis.sock",
        ] {
            assert!(check_redis_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn no_url_text_panics_the_check(text in "redis://[ -~]{0,40}") {
            let _ = check_redis_url(&text);
        }

        #[test]
        fn no_bytes_panic_the_check(text in any::<String>()) {
            let _ = check_redis_url(&text);
        }
    }
}
