//! Request rate and concurrency limits (`[limit.NAME]`, nginx's `limit_req` and
//! `limit_conn`): the compiled limiters, the registry that keeps their state across reloads,
//! and a route's decision over all of its limits. The arithmetic is `gcra`, the bounded
//! per-key state `table`, the requests in flight `in_flight`, the keys `key`.

mod gcra;
mod in_flight;
mod key;
pub mod shared;
mod table;

pub use gcra::{Gcra, Verdict};
pub use in_flight::{InFlightGuard, InFlightTable};
pub use key::{KeySource, RequestKey};
pub use table::KeyTable;

use crate::config::{KeyPart, OnRedisError, Rate, RateLimitConfig};
use crate::metrics::Metrics;
use crate::shared::Redis;
use http::HeaderValue;
use prometheus::IntCounter;
use shared::{LeaseStep, SharedPace};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Nanoseconds on the monotonic clock limits count on (since the first call).
pub fn now_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // One second in, so that 0 stays "never seen".
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX) + NANOS_PER_SEC
}

/// One compiled `[limit.NAME]`, with the state of its keys.
pub struct RateLimiter {
    pub name: Arc<str>,
    settings: RateLimitConfig,
    key: RequestKey,
    pace: Option<Pace>,
    in_flight: Option<Arc<InFlightTable>>,
    /// `shared = true`: the rate counted in Redis too.
    shared: Option<SharedPace>,
    outcomes: Outcomes,
    log: LogThrottle,
}

/// A limit's rate: the GCRA step and the state of every key.
struct Pace {
    rate: Rate,
    gcra: Gcra,
    table: KeyTable,
}

struct Outcomes {
    allowed: IntCounter,
    delayed: IntCounter,
    rejected: IntCounter,
    rejected_concurrency: IntCounter,
    dry_run_rejected: IntCounter,
}

impl RateLimiter {
    /// Compiles a validated `[limit.NAME]`; a shared one counts in `redis`.
    pub fn new(
        name: &str,
        settings: &RateLimitConfig,
        metrics: &Metrics,
        redis: Option<&Arc<Redis>>,
    ) -> Result<Self, String> {
        let pace = match &settings.rate {
            Some(rate) => {
                let rate = Rate::parse(rate.get_ref())?;
                let interval = u64::try_from(rate.interval().as_nanos()).unwrap_or(u64::MAX);
                Some(Pace {
                    rate,
                    gcra: Gcra::new(interval, settings.burst),
                    table: KeyTable::new(settings.max_keys),
                })
            }
            None => None,
        };
        let in_flight =
            (settings.concurrency > 0).then(|| Arc::new(InFlightTable::new(settings.max_keys)));
        if pace.is_none() && in_flight.is_none() {
            return Err("a limit needs a rate, a concurrency, or both".into());
        }
        let parts = settings
            .key
            .get_ref()
            .0
            .iter()
            .map(|part| KeyPart::parse(part))
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = |o: &str| metrics.rate_limit_requests.with_label_values(&[name, o]);
        let shared = match (*settings.shared.get_ref(), &pace, redis) {
            (false, _, _) => None,
            (true, Some(pace), Some(redis)) => {
                let via = |v: &str| metrics.shared.limit_decisions.with_label_values(&[name, v]);
                Some(SharedPace::new(
                    name,
                    Arc::clone(redis),
                    settings.on_redis_error,
                    pace.gcra.interval(),
                    settings.burst,
                    settings.max_keys,
                    shared::Via {
                        lease: via("lease"),
                        redis: via("redis"),
                        refused_locally: via("refused_locally"),
                        fallback: via("fallback"),
                    },
                ))
            }
            (true, None, _) => return Err("a shared limit needs a rate".into()),
            (true, _, None) => return Err("a shared limit counts in Redis: set [redis] url".into()),
        };
        Ok(Self {
            shared,
            name: name.into(),
            settings: settings.clone(),
            key: RequestKey::new(parts, settings.ipv6_prefix),
            pace,
            in_flight,
            outcomes: Outcomes {
                allowed: outcome("allowed"),
                delayed: outcome("delayed"),
                rejected: outcome("rejected"),
                rejected_concurrency: outcome("rejected_concurrency"),
                dry_run_rejected: outcome("dry_run_rejected"),
            },
            log: LogThrottle::default(),
        })
    }

    pub fn settings(&self) -> &RateLimitConfig {
        &self.settings
    }

    /// Whether it counts across replicas, in Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn uses(&self, redis: Option<&Arc<Redis>>) -> bool {
        match (&self.shared, redis) {
            (Some(shared), Some(redis)) => Arc::ptr_eq(&shared.redis, redis),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Keys remembered now (for /status): those the rate tracks, else those with requests in
    /// flight.
    pub fn keys(&self) -> usize {
        match (&self.pace, &self.in_flight) {
            (Some(pace), _) => pace.table.len(),
            (None, Some(in_flight)) => in_flight.keys(),
            (None, None) => 0,
        }
    }

    pub fn rejected(&self) -> u64 {
        self.outcomes.rejected.get()
    }

    pub fn rejected_concurrency(&self) -> u64 {
        self.outcomes.rejected_concurrency.get()
    }

    pub fn dry_run_rejected(&self) -> u64 {
        self.outcomes.dry_run_rejected.get()
    }

    pub fn delayed(&self) -> u64 {
        self.outcomes.delayed.get()
    }

    pub fn allowed(&self) -> u64 {
        self.outcomes.allowed.get()
    }

    /// This limit's `RateLimit-Policy` item: the sustained rate as a quota per window (a
    /// limit of concurrency alone has none: the fields speak of quotas over time).
    fn policy_item(&self) -> Option<String> {
        let pace = self.pace.as_ref()?;
        Some(format!(
            "\"{}\";q={};w={}",
            self.name,
            pace.rate.count,
            pace.rate.period.as_secs()
        ))
    }

    fn advertises(&self) -> bool {
        self.settings.headers && !self.settings.dry_run && self.pace.is_some()
    }
}

/// The limits of one route, in the order it names them.
#[derive(Default, Clone)]
pub struct RouteLimits {
    limiters: Arc<[Arc<RateLimiter>]>,
    /// `RateLimit-Policy` for the limits that advertise themselves; none if none does.
    policy: Option<HeaderValue>,
}

/// The `RateLimit-Policy` and `RateLimit` fields of one response.
#[derive(Debug)]
pub struct LimitFields {
    pub policy: HeaderValue,
    pub state: HeaderValue,
}

/// What a request keeps of its limits until its exchange ends: the fields for its response,
/// and its places in concurrency limits. Boxed where it is kept, as most routes have none.
#[derive(Debug, Default)]
pub struct Held {
    pub fields: Option<LimitFields>,
    pub in_flight: Vec<InFlightGuard>,
}

/// A decision that waits on one call to Redis (a shared limit with nothing leased for the
/// key); it never waits longer than `[redis] timeout`.
pub type PendingDecision = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// What a route's limits decide for one request.
pub enum Decision {
    /// Go on, after `wait` (zero unless a limit without `nodelay` spaces requests out),
    /// keeping `held` until the exchange ends.
    Pass {
        wait: Duration,
        held: Option<Box<Held>>,
    },
    /// 429, with `Retry-After: retry_after` seconds when a rate refused it (a concurrency
    /// limit cannot say when a place frees up).
    Reject {
        limit: Arc<str>,
        retry_after: Option<u64>,
        held: Option<Box<Held>>,
    },
    /// A shared limit asks Redis first; the future is the decision.
    Ask(PendingDecision),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pass { wait, held } => f
                .debug_struct("Pass")
                .field("wait", wait)
                .field("held", held)
                .finish(),
            Self::Reject {
                limit,
                retry_after,
                held,
            } => f
                .debug_struct("Reject")
                .field("limit", limit)
                .field("retry_after", retry_after)
                .field("held", held)
                .finish(),
            Self::Ask(_) => f.write_str("Ask"),
        }
    }
}

/// Who a request is, for the log lines of refusals.
#[derive(Clone, Copy)]
struct Who<'a> {
    client: IpAddr,
    route: &'a str,
}

/// A decision under way over a route's limits.
#[derive(Default)]
struct Progress {
    wait: u64,
    /// Which rates counted this request, to give it back if a later limit refuses it.
    admitted: u64,
    in_flight: Vec<InFlightGuard>,
    state: String,
}

/// What one limit says of a request.
enum Step {
    Next,
    Done(Decision),
    /// A shared limit needs a call; `verdict` and `tat` are what its local count said.
    Ask {
        verdict: Verdict,
        tat: u64,
    },
}

impl RouteLimits {
    pub fn new(limiters: Vec<Arc<RateLimiter>>) -> Self {
        let items: Vec<String> = limiters
            .iter()
            .filter(|l| l.advertises())
            .filter_map(|l| l.policy_item())
            .collect();
        let policy = (!items.is_empty())
            .then(|| HeaderValue::from_str(&items.join(", ")).ok())
            .flatten();
        Self {
            limiters: limiters.into(),
            policy,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }

    pub fn limiters(&self) -> &[Arc<RateLimiter>] {
        &self.limiters
    }

    /// Checks a request against every limit of the route at `now` (nanoseconds of
    /// `now_nanos`). A request refused by one limit is not counted by the others.
    pub fn decide(&self, source: &KeySource<'_>, now: u64) -> Decision {
        let who = Who {
            client: source.client,
            route: source.route,
        };
        let mut progress = Progress::default();
        let key_of = |index: usize| self.limiters.get(index).and_then(|l| l.key.hash(source));
        for (index, limiter) in self.limiters.iter().enumerate() {
            let Some(key) = limiter.key.hash(source) else {
                continue;
            };
            match self.step(index, key, now, who, &mut progress, &key_of) {
                Step::Next => {}
                Step::Done(decision) => return decision,
                Step::Ask { verdict, tat } => {
                    // The keys of every limit, taken now: the rest of the decision runs
                    // after the call, without the request's head.
                    let keys: Vec<Option<u64>> =
                        self.limiters.iter().map(|l| l.key.hash(source)).collect();
                    let stables: Vec<Option<u64>> = self
                        .limiters
                        .iter()
                        .map(|l| l.shared.as_ref().and_then(|_| l.key.stable_hash(source)))
                        .collect();
                    let limits = self.clone();
                    let route: Arc<str> = source.route.into();
                    let client = source.client;
                    return Decision::Ask(Box::pin(async move {
                        limits
                            .after_call(
                                index, now, verdict, tat, progress, keys, stables, client, route,
                            )
                            .await
                    }));
                }
            }
        }
        self.pass(progress)
    }

    /// The shared limit at `index` asks Redis, then the limits after it decide.
    #[allow(clippy::too_many_arguments)]
    async fn after_call(
        &self,
        index: usize,
        now: u64,
        verdict: Verdict,
        tat: u64,
        mut progress: Progress,
        keys: Vec<Option<u64>>,
        stables: Vec<Option<u64>>,
        client: IpAddr,
        route: Arc<str>,
    ) -> Decision {
        let who = Who {
            client,
            route: &route,
        };
        let key_of = |i: usize| keys.get(i).copied().flatten();
        let limiter = &self.limiters[index];
        let (Some(pace), Some(shared), Some(key)) = (&limiter.pace, &limiter.shared, key_of(index))
        else {
            return self.pass(progress);
        };
        let stable = stables.get(index).copied().flatten().unwrap_or(key);
        let answer = shared.ask(key, stable, now).await;
        let step = match answer {
            Ok(LeaseStep::Refuse { retry_in }) => {
                shared.via.redis.inc();
                if matches!(verdict, Verdict::Admit { .. }) {
                    pace.table.refund(&pace.gcra, key);
                }
                self.refused(index, retry_in, now, who, &mut progress, &key_of)
            }
            Ok(_) => {
                shared.via.redis.inc();
                self.admitted_by_cluster(index, verdict, tat, now, &mut progress);
                Step::Next
            }
            Err(_) => {
                shared.via.fallback.inc();
                self.without_redis(index, key, verdict, tat, now, who, &mut progress, &key_of)
            }
        };
        if let Step::Done(decision) = step {
            return decision;
        }
        for next in index + 1..self.limiters.len() {
            let Some(key) = key_of(next) else {
                continue;
            };
            match self.step(next, key, now, who, &mut progress, &key_of) {
                Step::Next => {}
                Step::Done(decision) => return decision,
                Step::Ask { verdict, tat } => {
                    // A second shared limit on the route: its call goes out now, after the
                    // first (each bounded by the timeout).
                    return Box::pin(self.after_call(
                        next,
                        now,
                        verdict,
                        tat,
                        progress,
                        keys.clone(),
                        stables.clone(),
                        client,
                        Arc::clone(&route),
                    ))
                    .await;
                }
            }
        }
        self.pass(progress)
    }

    /// One limit's say on a request of `key`.
    fn step(
        &self,
        index: usize,
        key: u64,
        now: u64,
        who: Who<'_>,
        progress: &mut Progress,
        key_of: &dyn Fn(usize) -> Option<u64>,
    ) -> Step {
        let limiter = &self.limiters[index];
        let dry_run = limiter.settings.dry_run;
        if let Some(table) = &limiter.in_flight {
            match table.try_acquire(key, limiter.settings.concurrency) {
                Some(guard) => progress.in_flight.push(guard),
                None if dry_run => {
                    limiter.outcomes.dry_run_rejected.inc();
                    limiter.log.note(now, || {
                        tracing::info!(limit = %limiter.name, client = %who.client, route = who.route, "concurrency limit exceeded (dry run: request let through)")
                    });
                }
                None => {
                    limiter.outcomes.rejected_concurrency.inc();
                    limiter.log.note(now, || {
                        tracing::warn!(limit = %limiter.name, client = %who.client, route = who.route, "concurrency limit exceeded: 429")
                    });
                    self.refund(progress.admitted, key_of);
                    return Step::Done(Decision::Reject {
                        limit: Arc::clone(&limiter.name),
                        retry_after: None,
                        held: self.held(&progress.state, Vec::new()),
                    });
                }
            }
        }
        let Some(pace) = &limiter.pace else {
            limiter.outcomes.allowed.inc();
            return Step::Next;
        };
        let (verdict, tat) = pace.table.check(&pace.gcra, key, now);
        if let Some(shared) = &limiter.shared {
            return match shared.take(key, now) {
                LeaseStep::Admit => {
                    shared.via.lease.inc();
                    self.admitted_by_cluster(index, verdict, tat, now, progress);
                    Step::Next
                }
                LeaseStep::AdmitAndRefill => {
                    shared.via.lease.inc();
                    self.admitted_by_cluster(index, verdict, tat, now, progress);
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        let limiter = Arc::clone(limiter);
                        runtime.spawn(async move {
                            if let Some(shared) = &limiter.shared {
                                shared.refill(key, now_nanos()).await;
                            }
                        });
                    }
                    Step::Next
                }
                LeaseStep::Refuse { retry_in } => {
                    shared.via.refused_locally.inc();
                    if matches!(verdict, Verdict::Admit { .. }) {
                        pace.table.refund(&pace.gcra, key);
                    }
                    self.refused(index, retry_in, now, who, progress, key_of)
                }
                LeaseStep::Ask if shared.redis.available() => Step::Ask { verdict, tat },
                LeaseStep::Ask => {
                    // The breaker is open: decided at once, without a call.
                    shared.via.fallback.inc();
                    self.without_redis(index, key, verdict, tat, now, who, progress, key_of)
                }
            };
        }
        match verdict {
            Verdict::Admit { wait: due_in, .. } => {
                self.admitted_by_rate(index, due_in, tat, now, progress);
                Step::Next
            }
            Verdict::Refuse { retry_in } => {
                self.refused(index, retry_in, now, who, progress, key_of)
            }
        }
    }

    /// Redis (or quota leased from it) admitted a request of a shared limit, whatever this
    /// process's own count said.
    fn admitted_by_cluster(
        &self,
        index: usize,
        verdict: Verdict,
        tat: u64,
        now: u64,
        progress: &mut Progress,
    ) {
        match verdict {
            Verdict::Admit { wait, .. } => self.admitted_by_rate(index, wait, tat, now, progress),
            // Not in this process's count: nothing to give back if a later limit refuses.
            Verdict::Refuse { .. } => {
                let limiter = &self.limiters[index];
                limiter.outcomes.allowed.inc();
                if let Some(pace) = &limiter.pace
                    && limiter.advertises()
                {
                    let reset = pace.gcra.reset_in(tat, now).div_ceil(NANOS_PER_SEC);
                    push_state(&mut progress.state, &limiter.name, 0, reset);
                }
            }
        }
    }

    /// A shared limit without Redis: `on_redis_error` decides.
    #[allow(clippy::too_many_arguments)]
    fn without_redis(
        &self,
        index: usize,
        key: u64,
        verdict: Verdict,
        tat: u64,
        now: u64,
        who: Who<'_>,
        progress: &mut Progress,
        key_of: &dyn Fn(usize) -> Option<u64>,
    ) -> Step {
        let limiter = &self.limiters[index];
        let on_error = limiter
            .shared
            .as_ref()
            .map_or(OnRedisError::Local, |s| s.on_error);
        match (on_error, verdict) {
            (OnRedisError::Local, Verdict::Refuse { retry_in }) => {
                self.refused(index, retry_in, now, who, progress, key_of)
            }
            (OnRedisError::Local | OnRedisError::Allow, _) => {
                self.admitted_by_cluster(index, verdict, tat, now, progress);
                Step::Next
            }
            (OnRedisError::Deny, _) => {
                if let (Some(pace), Verdict::Admit { .. }) = (&limiter.pace, verdict) {
                    pace.table.refund(&pace.gcra, key);
                }
                self.refused(index, NANOS_PER_SEC, now, who, progress, key_of)
            }
        }
    }

    fn admitted_by_rate(
        &self,
        index: usize,
        due_in: u64,
        tat: u64,
        now: u64,
        progress: &mut Progress,
    ) {
        let limiter = &self.limiters[index];
        let Some(pace) = &limiter.pace else {
            return;
        };
        if index < 64 {
            progress.admitted |= 1 << index;
        }
        if due_in > 0 && !limiter.settings.nodelay && !limiter.settings.dry_run {
            progress.wait = progress.wait.max(due_in);
            limiter.outcomes.delayed.inc();
        } else {
            limiter.outcomes.allowed.inc();
        }
        if limiter.advertises() {
            let remaining = pace.gcra.remaining(tat, now);
            let reset = pace.gcra.reset_in(tat, now).div_ceil(NANOS_PER_SEC);
            push_state(&mut progress.state, &limiter.name, remaining, reset);
        }
    }

    /// The rate of the limit at `index` refused the request (a dry run lets it through).
    fn refused(
        &self,
        index: usize,
        retry_in: u64,
        now: u64,
        who: Who<'_>,
        progress: &mut Progress,
        key_of: &dyn Fn(usize) -> Option<u64>,
    ) -> Step {
        let limiter = &self.limiters[index];
        let retry_after = retry_in.div_ceil(NANOS_PER_SEC).max(1);
        if limiter.settings.dry_run {
            limiter.outcomes.dry_run_rejected.inc();
            limiter.log.note(now, || {
                tracing::info!(limit = %limiter.name, client = %who.client, route = who.route, "rate limit exceeded (dry run: request let through)")
            });
            return Step::Next;
        }
        limiter.outcomes.rejected.inc();
        limiter.log.note(now, || {
            tracing::warn!(limit = %limiter.name, client = %who.client, route = who.route, retry_after, "rate limit exceeded: 429")
        });
        self.refund(progress.admitted, key_of);
        let mut state = String::new();
        if limiter.advertises() {
            push_state(&mut state, &limiter.name, 0, retry_after);
        }
        Step::Done(Decision::Reject {
            limit: Arc::clone(&limiter.name),
            retry_after: Some(retry_after),
            held: self.held(&state, Vec::new()),
        })
    }

    fn pass(&self, progress: Progress) -> Decision {
        Decision::Pass {
            wait: Duration::from_nanos(progress.wait),
            held: self.held(&progress.state, progress.in_flight),
        }
    }

    fn refund(&self, admitted: u64, key_of: &dyn Fn(usize) -> Option<u64>) {
        for (index, limiter) in self.limiters.iter().enumerate().take(64) {
            if admitted & (1 << index) != 0
                && let Some(pace) = &limiter.pace
                && let Some(key) = key_of(index)
            {
                pace.table.refund(&pace.gcra, key);
            }
        }
    }

    fn fields(&self, state: &str) -> Option<LimitFields> {
        let policy = self.policy.clone()?;
        let state = HeaderValue::from_str(state)
            .ok()
            .filter(|s| !s.is_empty())?;
        Some(LimitFields { policy, state })
    }

    fn held(&self, state: &str, in_flight: Vec<InFlightGuard>) -> Option<Box<Held>> {
        let fields = self.fields(state);
        (fields.is_some() || !in_flight.is_empty()).then(|| Box::new(Held { fields, in_flight }))
    }
}

fn push_state(out: &mut String, name: &str, remaining: u64, reset: u64) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    let _ = write!(out, "\"{name}\";r={remaining};t={reset}");
}

/// One log line per second at most for a limit's refusals, with how many were not logged: a
/// flood must not turn into a flood of log lines.
#[derive(Default)]
struct LogThrottle {
    last: AtomicU64,
}

impl LogThrottle {
    fn note(&self, now: u64, log: impl FnOnce()) {
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= NANOS_PER_SEC)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log();
        }
    }
}

/// The limiters of the config in force and the one before: a reload that leaves a limit's
/// settings alone keeps its keys' state.
#[derive(Default)]
pub struct LimiterRegistry {
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
}

impl LimiterRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get_or_create(
        &self,
        name: &str,
        settings: &RateLimitConfig,
        metrics: &Metrics,
        redis: Option<&Arc<Redis>>,
    ) -> Result<Arc<RateLimiter>, String> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = limiters.get(name)
            && existing.settings == *settings
            && existing.uses(redis)
        {
            return Ok(Arc::clone(existing));
        }
        let limiter = Arc::new(RateLimiter::new(name, settings, metrics, redis)?);
        limiters.insert(name.to_owned(), Arc::clone(&limiter));
        Ok(limiter)
    }

    /// Forgets limiters whose name `keep` rejects (no longer configured).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        limiters.retain(|name, _| keep(name));
    }

    pub fn all(&self) -> Vec<Arc<RateLimiter>> {
        let limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = limiters.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use toml::Spanned;

    const MS: u64 = 1_000_000;

    fn limiter(
        name: &str,
        rate: &str,
        burst: u32,
        tweak: impl FnOnce(&mut RateLimitConfig),
    ) -> Arc<RateLimiter> {
        let mut settings = RateLimitConfig {
            rate: Some(Spanned::new(0..0, rate.into())),
            concurrency: 0,
            burst,
            nodelay: true,
            key: Spanned::new(0..0, crate::config::KeyList(vec!["client_ip".into()])),
            dry_run: false,
            ipv6_prefix: 128,
            max_keys: 1_000,
            headers: true,
            shared: Spanned::new(0..0, false),
            on_redis_error: Default::default(),
        };
        tweak(&mut settings);
        let metrics = Metrics::new().unwrap();
        Arc::new(RateLimiter::new(name, &settings, &metrics, None).unwrap())
    }

    fn from<'a>(client: &str, headers: &'a HeaderMap) -> KeySource<'a> {
        KeySource {
            client: client.parse().unwrap(),
            headers,
            route: "r",
        }
    }

    fn field(held: &Option<Box<Held>>) -> (String, String) {
        let fields = held
            .as_ref()
            .and_then(|held| held.fields.as_ref())
            .expect("fields");
        (
            fields.policy.to_str().unwrap().to_owned(),
            fields.state.to_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn exact_admissions_for_a_rate_and_burst() {
        let limits = RouteLimits::new(vec![limiter("api", "10/s", 3, |_| {})]);
        let none = HeaderMap::new();
        let now = 10 * 1_000 * MS;
        let passed = (0..10)
            .filter(|_| {
                matches!(
                    limits.decide(&from("192.0.2.1", &none), now),
                    Decision::Pass { .. }
                )
            })
            .count();
        assert_eq!(passed, 4);
        // 100 ms later, one more.
        assert!(matches!(
            limits.decide(&from("192.0.2.1", &none), now + 100 * MS),
            Decision::Pass { .. }
        ));
        assert!(matches!(
            limits.decide(&from("192.0.2.1", &none), now + 100 * MS),
            Decision::Reject { .. }
        ));
        // Another client has its own allowance.
        assert!(matches!(
            limits.decide(&from("192.0.2.2", &none), now),
            Decision::Pass { .. }
        ));
    }

    #[test]
    fn without_nodelay_the_burst_waits_its_turn_then_is_refused() {
        let limits = RouteLimits::new(vec![limiter("slow", "10/s", 2, |s| s.nodelay = false)]);
        let none = HeaderMap::new();
        let now = 10 * 1_000 * MS;
        let mut waits = Vec::new();
        for _ in 0..4 {
            match limits.decide(&from("192.0.2.1", &none), now) {
                Decision::Pass { wait, .. } => waits.push(wait.as_millis() as i64),
                Decision::Reject { retry_after, .. } => {
                    waits.push(-(retry_after.unwrap_or(0) as i64))
                }
                Decision::Ask(_) => panic!("no shared limit here"),
            }
        }
        assert_eq!(waits, [0, 100, 200, -1]);
        let l = &limits.limiters()[0];
        assert_eq!((l.allowed(), l.delayed(), l.rejected()), (1, 2, 1));
    }

    #[test]
    fn dry_run_counts_but_lets_through() {
        let limits = RouteLimits::new(vec![limiter("try", "1/s", 0, |s| s.dry_run = true)]);
        let none = HeaderMap::new();
        let now = 10 * 1_000 * MS;
        for _ in 0..5 {
            assert!(matches!(
                limits.decide(&from("192.0.2.1", &none), now),
                Decision::Pass { wait, held: None } if wait.is_zero()
            ));
        }
        let l = &limits.limiters()[0];
        assert_eq!((l.allowed(), l.dry_run_rejected(), l.rejected()), (1, 4, 0));
    }

    #[test]
    fn a_refusal_by_one_limit_is_not_counted_by_the_others() {
        let wide = limiter("wide", "1/s", 0, |_| {});
        let narrow = limiter("narrow", "1/s", 0, |s| {
            s.key = Spanned::new(0..0, crate::config::KeyList(vec!["route".into()]))
        });
        let limits = RouteLimits::new(vec![Arc::clone(&wide), narrow]);
        let none = HeaderMap::new();
        let now = 10 * 1_000 * MS;
        assert!(matches!(
            limits.decide(&from("192.0.2.1", &none), now),
            Decision::Pass { .. }
        ));
        // The route-wide limit refuses the second client; the per-client one gave its admission back.
        assert!(
            matches!(limits.decide(&from("192.0.2.2", &none), now), Decision::Reject { ref limit, .. } if &**limit == "narrow")
        );
        // Had it kept the admission, the second client's next request would be refused.
        let alone = RouteLimits::new(vec![wide]);
        assert!(matches!(
            alone.decide(&from("192.0.2.2", &none), now),
            Decision::Pass { .. }
        ));
        assert!(matches!(
            alone.decide(&from("192.0.2.2", &none), now),
            Decision::Reject { .. }
        ));
    }

    #[test]
    fn ratelimit_fields_tell_the_quota_what_is_left_and_when_it_is_back() {
        let limits = RouteLimits::new(vec![limiter("api", "10/s", 4, |_| {})]);
        let none = HeaderMap::new();
        let now = 10 * 1_000 * MS;
        let Decision::Pass { held: fields, .. } = limits.decide(&from("192.0.2.1", &none), now)
        else {
            panic!("passes")
        };
        assert_eq!(
            field(&fields),
            ("\"api\";q=10;w=1".into(), "\"api\";r=4;t=1".into())
        );
        for _ in 0..4 {
            limits.decide(&from("192.0.2.1", &none), now);
        }
        let Decision::Reject {
            retry_after,
            held: fields,
            ..
        } = limits.decide(&from("192.0.2.1", &none), now)
        else {
            panic!("refused")
        };
        assert_eq!(retry_after, Some(1));
        assert_eq!(field(&fields).1, "\"api\";r=0;t=1");
        let quiet = RouteLimits::new(vec![limiter("q", "10/m", 0, |s| s.headers = false)]);
        assert!(matches!(
            quiet.decide(&from("192.0.2.1", &none), now),
            Decision::Pass { held: None, .. }
        ));
        let Decision::Reject { retry_after, .. } = quiet.decide(&from("192.0.2.1", &none), now)
        else {
            panic!("refused")
        };
        assert_eq!(retry_after, Some(6));
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_limits() {
        let metrics = Metrics::new().unwrap();
        let registry = LimiterRegistry::new();
        let settings = limiter("x", "1/s", 0, |_| {}).settings().clone();
        let first = registry
            .get_or_create("x", &settings, &metrics, None)
            .unwrap();
        let again = registry
            .get_or_create("x", &settings, &metrics, None)
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let mut changed = settings.clone();
        changed.burst = 5;
        let other = registry
            .get_or_create("x", &changed, &metrics, None)
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        registry.retain(|name| name != "x");
        assert!(registry.all().is_empty());
    }

    #[test]
    fn a_concurrency_refusal_gives_back_the_rate_admissions_before_it() {
        let rate = limiter("rate", "1/m", 1, |_| {});
        let one = limiter("one", "1/s", 0, |s| {
            s.rate = None;
            s.concurrency = 1;
        });
        let limits = RouteLimits::new(vec![Arc::clone(&rate), one]);
        let none = HeaderMap::new();
        let now = 10 * 1_000 * MS;
        let Decision::Pass { held: fields, .. } = limits.decide(&from("192.0.2.1", &none), now)
        else {
            panic!("passes")
        };
        assert_eq!(fields.as_ref().map(|held| held.in_flight.len()), Some(1));
        // Only the rate's quota is advertised.
        assert_eq!(field(&fields).0, "\"rate\";q=1;w=60");
        assert!(matches!(
            limits.decide(&from("192.0.2.1", &none), now),
            Decision::Reject { retry_after: None, ref limit, .. } if &**limit == "one"
        ));
        drop(fields);
        // The refused request's rate admission was given back: the burst of one is still there.
        assert!(matches!(
            limits.decide(&from("192.0.2.1", &none), now),
            Decision::Pass { .. }
        ));
        assert_eq!(rate.allowed(), 3);
    }
}
