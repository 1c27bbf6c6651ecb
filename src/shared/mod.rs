//! State shared between replicas of gatehouse, through one Redis server: the connection (one
//! per process, reconnecting by itself), every call bounded by `[redis] timeout`, and a breaker
//! that stops sending calls to a Redis that is down or hangs, so that callers decide without
//! it at once. Callers (the shared rate limits, and whatever else shares state) bring their own
//! commands and scripts: nothing here knows what they store.
//!
//! Outages are logged once when the breaker opens and once when it closes again, never per
//! call; every call is counted in `gatehouse_shared_*`.

pub mod breaker;

use crate::config::RedisConfig;
use crate::metrics::Metrics;
use breaker::{Breaker, BreakerState, Transition};
use prometheus::{Histogram, IntCounter, IntGauge};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use redis::{Cmd, FromRedisValue, Script, cmd};

/// Why a call brought no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not sent: the breaker is open (Redis failed the calls before).
    BreakerOpen,
    /// No answer within `[redis] timeout`.
    Timeout,
    /// The connection or Redis failed the call.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BreakerOpen => f.write_str("not sent: the Redis breaker is open"),
            Self::Timeout => f.write_str("no answer from Redis in time"),
            Self::Failed(e) => write!(f, "Redis call failed: {e}"),
        }
    }
}

/// What /status shows of the connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RedisStatus {
    /// The URL without its password.
    pub url: String,
    pub breaker: &'static str,
    pub connected: bool,
    pub last_error: Option<String>,
    /// When the last outage began (Unix seconds), if there was one.
    pub last_outage_at: Option<u64>,
    pub outages: u64,
    pub calls_ok: u64,
    pub calls_failed: u64,
}

struct Outcomes {
    ok: IntCounter,
    error: IntCounter,
    timeout: IntCounter,
    breaker_open: IntCounter,
    duration: Histogram,
    breaker_state: IntGauge,
    outages: IntCounter,
}

struct Health {
    breaker: Breaker,
    last_error: Option<String>,
    last_outage_at: Option<u64>,
    outages: u64,
}

/// The Redis server of `[redis]`: one connection, shared by every caller of the process.
pub struct Redis {
    settings: RedisConfig,
    client: redis::Client,
    /// Made in the background when loaded, or by the first call if that failed (gatehouse
    /// starts while Redis is down), then kept: it reconnects by itself after it drops.
    manager: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    health: Mutex<Health>,
    outcomes: Outcomes,
}

impl Redis {
    /// A client for validated `settings`; nothing is connected yet.
    pub fn new(settings: &RedisConfig, metrics: &Metrics) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.get_ref().as_str())
            .map_err(|e| format!("redis.url: {e}"))?;
        let shared = &metrics.shared;
        let outcome = |o: &str| shared.calls.with_label_values(&[o]);
        shared.breaker_state.set(BreakerState::Closed.gauge());
        Ok(Self {
            settings: settings.clone(),
            client,
            manager: tokio::sync::OnceCell::new(),
            health: Mutex::new(Health {
                breaker: Breaker::new(
                    settings.breaker_failures,
                    settings.breaker_open_for.0,
                    settings.breaker_max_open_for.0,
                ),
                last_error: None,
                last_outage_at: None,
                outages: 0,
            }),
            outcomes: Outcomes {
                ok: outcome("ok"),
                error: outcome("error"),
                timeout: outcome("timeout"),
                breaker_open: outcome("breaker_open"),
                duration: shared.call_duration.clone(),
                breaker_state: shared.breaker_state.clone(),
                outages: shared.outages.clone(),
            },
        })
    }

    pub fn settings(&self) -> &RedisConfig {
        &self.settings
    }

    /// The most one call waits.
    pub fn timeout(&self) -> Duration {
        self.settings.timeout.0
    }

    /// `key` with `[redis] key_prefix` in front.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.settings.key_prefix.get_ref())
    }

    /// Whether a call would be sent now (the breaker is closed, or due to probe); a caller
    /// with an answer of its own decides at once when not, without building the call.
    pub fn available(&self) -> bool {
        self.lock().breaker.would_admit(Instant::now())
    }

    /// Sends one command, bounded by the timeout and the breaker.
    pub async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, CallError> {
        self.call(|mut manager| async move { command.query_async(&mut manager).await })
            .await
    }

    /// Runs a Lua script by its SHA (EVALSHA), loading it first when Redis does not have it
    /// (after a restart), within one timeout.
    pub async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[i64],
    ) -> Result<T, CallError> {
        self.call(|mut manager| async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async(&mut manager).await
        })
        .await
    }

    /// A connection of its own for SUBSCRIBE (a subscribed connection sends nothing else);
    /// the caller bounds the wait and subscribes again when it ends.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }

    async fn call<T, F, Fut>(&self, send: F) -> Result<T, CallError>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.admit() {
            self.outcomes.breaker_open.inc();
            return Err(CallError::BreakerOpen);
        }
        let start = Instant::now();
        let answer = tokio::time::timeout(self.timeout(), async {
            let manager = self
                .manager
                .get_or_try_init(|| self.connect())
                .await?
                .clone();
            send(manager).await
        })
        .await;
        self.outcomes
            .duration
            .observe(start.elapsed().as_secs_f64());
        match answer {
            Ok(Ok(value)) => {
                self.outcomes.ok.inc();
                self.record(None);
                Ok(value)
            }
            Ok(Err(e)) if e.is_timeout() => {
                self.outcomes.timeout.inc();
                self.record(Some("no answer in time".into()));
                Err(CallError::Timeout)
            }
            Ok(Err(e)) => {
                self.outcomes.error.inc();
                let message = e.to_string();
                self.record(Some(message.clone()));
                Err(CallError::Failed(message))
            }
            Err(_) => {
                self.outcomes.timeout.inc();
                self.record(Some(format!("no answer within {}", self.settings.timeout)));
                Err(CallError::Timeout)
            }
        }
    }

    /// Connects in the background when there is a runtime to do it on, so that the first
    /// calls find the connection made rather than spend their timeout making it. A failure
    /// here is not a call: the first calls try again, and they count.
    fn connect_ahead(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let redis = Arc::downgrade(self);
        runtime.spawn(async move {
            let Some(redis) = redis.upgrade() else {
                return;
            };
            let connect_timeout = redis.settings.connect_timeout.0;
            let _ = tokio::time::timeout(
                connect_timeout,
                redis.manager.get_or_try_init(|| redis.connect()),
            )
            .await;
        });
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout.0))
            .set_response_timeout(Some(self.settings.timeout.0))
            // Reconnection goes on in the background; the breaker keeps callers from
            // waiting on it.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(self.settings.breaker_max_open_for.0);
        self.client.get_connection_manager_with_config(config).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self) -> bool {
        let mut health = self.lock();
        let was = health.breaker.state();
        let admitted = health.breaker.admit(Instant::now());
        let now = health.breaker.state();
        if now != was {
            self.outcomes.breaker_state.set(now.gauge());
        }
        admitted
    }

    fn record(&self, error: Option<String>) {
        let mut health = self.lock();
        let transition = match &error {
            None => health.breaker.success(),
            Some(_) => health.breaker.failure(Instant::now()),
        };
        if let Some(error) = error {
            health.last_error = Some(error);
        }
        self.outcomes
            .breaker_state
            .set(health.breaker.state().gauge());
        match transition {
            Transition::None => {}
            Transition::Opened { reopened: true } => {}
            Transition::Opened { reopened: false } => {
                health.outages += 1;
                health.last_outage_at = Some(unix_now());
                self.outcomes.outages.inc();
                tracing::warn!(
                    redis = %redacted(self.settings.url.get_ref()),
                    error = health.last_error.as_deref().unwrap_or(""),
                    open_for = %self.settings.breaker_open_for,
                    "Redis unavailable: breaker open, deciding without it until a probe succeeds"
                );
            }
            Transition::Closed => {
                tracing::warn!(
                    redis = %redacted(self.settings.url.get_ref()),
                    "Redis available again: breaker closed"
                );
            }
        }
    }

    pub fn status(&self) -> RedisStatus {
        let health = self.lock();
        RedisStatus {
            url: redacted(self.settings.url.get_ref()),
            breaker: health.breaker.state().as_str(),
            connected: self.manager.initialized() && health.breaker.state() == BreakerState::Closed,
            last_error: health.last_error.clone(),
            last_outage_at: health.last_outage_at,
            outages: health.outages,
            calls_ok: self.outcomes.ok.get(),
            calls_failed: self.outcomes.error.get() + self.outcomes.timeout.get(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The URL without a password, for logs and /status.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The Redis of the config in force, kept across reloads that leave `[redis]` alone (its
/// connection and breaker with it).
#[derive(Default)]
pub struct RedisRegistry {
    current: Mutex<Option<Arc<Redis>>>,
}

impl RedisRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The client for `settings`, or `None` when no server is configured.
    pub fn get_or_create(
        &self,
        settings: &RedisConfig,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Redis>>, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if !settings.enabled() {
            if current.take().is_some() {
                // No connection, no breaker: not left showing the last one's state.
                metrics
                    .shared
                    .breaker_state
                    .set(BreakerState::Closed.gauge());
            }
            return Ok(None);
        }
        if let Some(existing) = current.as_ref()
            && existing.settings == *settings
        {
            return Ok(Some(Arc::clone(existing)));
        }
        let redis = Arc::new(Redis::new(settings, metrics)?);
        redis.connect_ahead();
        *current = Some(Arc::clone(&redis));
        Ok(Some(redis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redacted("redis://user:secret@10.0.0.1:6379/2"),
            "redis://***@10.0.0.1:6379/2"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    fn settings(url: &str) -> RedisConfig {
        RedisConfig {
            url: toml::Spanned::new(0..0, url.into()),
            ..RedisConfig::default()
        }
    }

    #[tokio::test]
    async fn a_reload_keeps_the_connection_while_redis_settings_stay() {
        let metrics = Metrics::new().unwrap();
        let registry = RedisRegistry::new();
        assert!(
            registry
                .get_or_create(&RedisConfig::default(), &metrics)
                .unwrap()
                .is_none()
        );
        let first = registry
            .get_or_create(&settings("redis://127.0.0.1:1"), &metrics)
            .unwrap()
            .unwrap();
        let again = registry
            .get_or_create(&settings("redis://127.0.0.1:1"), &metrics)
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let moved = registry
            .get_or_create(&settings("redis://127.0.0.1:2"), &metrics)
            .unwrap()
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &moved));
    }

    #[tokio::test]
    async fn a_refused_connection_fails_calls_then_opens_the_breaker() {
        let metrics = Metrics::new().unwrap();
        // Bound, never listening: connections are refused.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let redis = Redis::new(&settings(&format!("redis://127.0.0.1:{port}")), &metrics).unwrap();
        for _ in 0..3 {
            let answer: Result<String, _> = redis.query(&cmd("PING")).await;
            assert!(matches!(
                answer,
                Err(CallError::Failed(_) | CallError::Timeout)
            ));
        }
        assert!(!redis.available());
        let answer: Result<String, _> = redis.query(&cmd("PING")).await;
        assert_eq!(answer, Err(CallError::BreakerOpen));
        let status = redis.status();
        assert_eq!(
            (status.breaker, status.outages, status.connected),
            ("open", 1, false)
        );
        assert_eq!(metrics.shared.breaker_state.get(), 1);
        assert_eq!(metrics.shared.outages.get(), 1);
    }
}
