//! The shared tier of a cache (`[cache.NAME] shared = true`): a second level in the `[redis]`
//! server that every replica reads on a local miss before the origin, writes in the
//! background with what it stores locally, and purges everywhere at once through a pub/sub
//! channel that every replica listens on. A URI's variants are one Redis hash, so that one
//! DEL purges them all. Redis failing or hanging makes a local miss, never
//! an error: every call is bounded by `[redis] timeout` and its breaker.

use super::policy::{self, Freshness};
use super::store::CachedResponse;
use crate::shared::{Redis, cmd};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first byte of an encoded entry; another version is read as a miss.
const FORMAT: u8 = 1;

/// A URI's entries are one Redis hash (deleted at once by a purge): this field holds the Vary
/// field names of the last response written ("" for none), and each variant is a field named
/// by its request's Vary values (`variant_field`).
const VARY_FIELD: &str = "vary";
/// Variants kept per URI; a write past them starts the URI's hash afresh.
const MAX_VARIANTS: i64 = 16;
/// KEYS[1] the URI's hash; ARGV: Vary names, the variant's field, the entry, its lifetime in
/// ms, the most variants. The hash lives as long as its longest-lived variant; a variant
/// past its own use is judged unusable on reading.
/// Deletes a fetch claim only if it is still the one this replica made (it may have expired
/// and been made by another since).
const RELEASE_CLAIM: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// How often a replica waiting for another's fetch looks for its entry.
const CLAIM_POLL: Duration = Duration::from_millis(10);

/// What claiming a key's origin fetch among the replicas came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This replica fetches; the others wait for its entry.
    Mine,
    /// Another replica is fetching it.
    Theirs,
    /// Redis did not answer: fetch.
    Unknown,
}

const WRITE_VARIANT: &str = r"
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[5]) then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'vary', ARGV[1], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
";

/// The hash field of a variant: its request's Vary values, each length-prefixed (or absent).
fn variant_field(values: &Option<Vec<Option<HeaderValue>>>) -> Vec<u8> {
    let mut field = b"v".to_vec();
    for value in values.iter().flatten() {
        match value {
            None => field.extend_from_slice(&u32::MAX.to_be_bytes()),
            Some(value) => put_bytes(&mut field, value.as_bytes()),
        }
    }
    field
}

/// What a purge message asks every replica to drop from its own store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Key(String),
    Prefix(String),
}

impl Purge {
    fn encode(&self) -> String {
        match self {
            Self::Key(key) => format!("k {key}"),
            Self::Prefix(prefix) => format!("p {prefix}"),
        }
    }

    /// A message from the channel; `None` for one this version does not know.
    pub fn decode(message: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(message).ok()?;
        match text.split_at_checked(2)? {
            ("k ", key) => Some(Self::Key(key.to_owned())),
            ("p ", prefix) => Some(Self::Prefix(prefix.to_owned())),
            _ => None,
        }
    }
}

/// The tier's counters, labelled by cache.
pub struct SharedTierMetrics {
    pub hit: IntCounter,
    pub miss: IntCounter,
    pub error: IntCounter,
    pub writes: IntCounter,
    pub write_errors: IntCounter,
    pub purges_sent: IntCounter,
    pub purges_received: IntCounter,
    pub claims_won: IntCounter,
    pub claims_lost: IntCounter,
}

impl SharedTierMetrics {
    pub fn new(metrics: &crate::metrics::Metrics, cache: &str) -> Self {
        let shared = &metrics.shared;
        let lookup = |o: &str| shared.cache_lookups.with_label_values(&[cache, o]);
        let write = |o: &str| shared.cache_writes.with_label_values(&[cache, o]);
        let purge = |d: &str| shared.cache_purges.with_label_values(&[cache, d]);
        let claim = |o: &str| shared.cache_fetch_claims.with_label_values(&[cache, o]);
        Self {
            hit: lookup("hit"),
            miss: lookup("miss"),
            error: lookup("error"),
            writes: write("ok"),
            write_errors: write("error"),
            purges_sent: purge("sent"),
            purges_received: purge("received"),
            claims_won: claim("won"),
            claims_lost: claim("lost"),
        }
    }
}

/// What /status shows of a cache's shared tier.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SharedTierStatus {
    pub max_object: u64,
    pub subscribed: bool,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub writes: u64,
    pub write_errors: u64,
    pub purges_sent: u64,
    pub purges_received: u64,
}

/// A claim sent to Redis whose answer has not come back: given back when dropped so, since
/// Redis may have set it all the same.
struct UnansweredClaim<'a> {
    tier: &'a Arc<SharedTier>,
    key: &'a str,
    /// `None` once the answer came back.
    token: Option<u64>,
}

impl Drop for UnansweredClaim<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.tier.release_in_background(self.key, token);
        }
    }
}

/// One cache's tier in Redis.
pub struct SharedTier {
    redis: Arc<Redis>,
    /// Where this cache's entries live: `[redis] key_prefix`, `cache:`, the cache's name.
    key_prefix: String,
    channel: String,
    /// Where the claims on keys' origin fetches live.
    claim_prefix: String,
    /// The claims this replica holds, by key, with the token each was made with.
    claims: Mutex<HashMap<String, u64>>,
    pub max_object: u64,
    pub metrics: SharedTierMetrics,
    subscribed: Arc<AtomicBool>,
    /// Dropped with the tier, which ends its subscriber.
    _stop: tokio::sync::watch::Sender<()>,
}

impl SharedTier {
    /// The tier of cache `name`, subscribed (in the background, when there is a runtime) to
    /// the purges of the other replicas, which `on_purge` applies to the local store.
    pub fn new(
        redis: Arc<Redis>,
        name: &str,
        max_object: u64,
        metrics: SharedTierMetrics,
        on_purge: Box<dyn Fn(Purge) + Send + Sync>,
    ) -> Self {
        let key_prefix = redis.key(&format!("cache:{name}:"));
        let channel = redis.key(&format!("cache-purge:{name}"));
        let claim_prefix = redis.key(&format!("cache-fetch:{name}:"));
        let (stop, stopped) = tokio::sync::watch::channel(());
        let subscribed = Arc::new(AtomicBool::new(false));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let subscriber = Subscriber {
                redis: Arc::clone(&redis),
                channel: channel.clone(),
                subscribed: Arc::clone(&subscribed),
                received: metrics.purges_received.clone(),
                on_purge,
            };
            runtime.spawn(subscriber.run(stopped));
        }
        Self {
            redis,
            key_prefix,
            channel,
            claim_prefix,
            claims: Mutex::new(HashMap::new()),
            max_object,
            metrics,
            subscribed,
            _stop: stop,
        }
    }

    pub fn uses(&self, redis: Option<&Arc<Redis>>) -> bool {
        redis.is_some_and(|redis| Arc::ptr_eq(&self.redis, redis))
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// The entry the other replicas stored for this request, if there is one it may use:
    /// one call for a response without Vary, a second one for the request's variant of one
    /// with Vary; `None` whenever Redis does not answer in time.
    pub async fn lookup(&self, key: &str, request_headers: &HeaderMap) -> Option<CachedResponse> {
        if !self.redis.available() {
            self.metrics.error.inc();
            return None;
        }
        let key = self.redis_key(key);
        let found = match self.find(&key, request_headers).await {
            Ok(found) => found,
            Err(()) => {
                self.metrics.error.inc();
                return None;
            }
        };
        let entry = found
            .and_then(|bytes| decode(&bytes, SystemTime::now()))
            .filter(|entry| entry.matches(request_headers));
        match &entry {
            Some(_) => self.metrics.hit.inc(),
            None => self.metrics.miss.inc(),
        }
        entry
    }

    /// Claims the one origin fetch of `key` among the replicas, for at most `hold` (SET NX
    /// PX): of several replicas missing the same key at once, one fetches and the others
    /// wait for its entry ([`SharedTier::wait_for`]).
    pub async fn claim_fetch(self: &Arc<Self>, key: &str, hold: Duration) -> Claim {
        if !self.redis.available() {
            return Claim::Unknown;
        }
        let token = fastrand::u64(..);
        let millis = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        // Redis may set the claim although its answer never comes back here: the call timed
        // out, or the request was dropped when its client went away. Unless the answer says
        // otherwise, the claim is given back; else every replica missing the key would wait
        // for a fetch nobody makes, until the claim expires.
        let mut unanswered = UnansweredClaim {
            tier: self,
            key,
            token: Some(token),
        };
        let answer: Result<Option<String>, _> = self
            .redis
            .query(
                cmd("SET")
                    .arg(format!("{}{key}", self.claim_prefix))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis),
            )
            .await;
        match answer {
            Ok(Some(_)) => {
                unanswered.token = None;
                if let Ok(mut claims) = self.claims.lock() {
                    claims.insert(key.to_owned(), token);
                }
                self.metrics.claims_won.inc();
                Claim::Mine
            }
            Ok(None) => {
                unanswered.token = None;
                self.metrics.claims_lost.inc();
                Claim::Theirs
            }
            Err(_) => Claim::Unknown,
        }
    }

    /// Gives back this replica's claim on `key`, if it holds one, in the background.
    pub fn release_fetch(self: &Arc<Self>, key: &str) {
        if let Some(token) = self.take_claim(key) {
            self.release_in_background(key, token);
        }
    }

    fn release_in_background(self: &Arc<Self>, key: &str, token: u64) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tier = Arc::clone(self);
            let key = key.to_owned();
            runtime.spawn(async move { tier.release_claim(&key, token).await });
        }
    }

    fn take_claim(&self, key: &str) -> Option<u64> {
        self.claims.lock().ok()?.remove(key)
    }

    async fn release_claim(&self, key: &str, token: u64) {
        let _: Result<i64, _> = self
            .redis
            .query(
                cmd("EVAL")
                    .arg(RELEASE_CLAIM)
                    .arg(1)
                    .arg(format!("{}{key}", self.claim_prefix))
                    .arg(token),
            )
            .await;
    }

    /// Waits, at most `patience`, for the replica that claimed `key` to write an entry this
    /// request can use (`usable`: one already there may be the stale copy being refreshed):
    /// the entry once it is there; `None` once the claim is given back or expires without one
    /// (the response was not stored, or the fetch failed), or Redis stops answering.
    pub async fn wait_for(
        &self,
        key: &str,
        request_headers: &HeaderMap,
        patience: Duration,
        usable: impl Fn(&CachedResponse) -> bool,
    ) -> Option<CachedResponse> {
        let deadline = tokio::time::Instant::now() + patience;
        let (entry_key, claim_key) = (self.redis_key(key), format!("{}{key}", self.claim_prefix));
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(CLAIM_POLL.min(left)).await;
            let found = self.find(&entry_key, request_headers).await.ok()?;
            if let Some(entry) = found
                .and_then(|bytes| decode(&bytes, SystemTime::now()))
                .filter(|entry| entry.matches(request_headers) && usable(entry))
            {
                self.metrics.hit.inc();
                return Some(entry);
            }
            let claimed: i64 = self.redis.query(cmd("EXISTS").arg(&claim_key)).await.ok()?;
            if claimed == 0 || tokio::time::Instant::now() >= deadline {
                self.metrics.miss.inc();
                return None;
            }
        }
    }

    /// The stored bytes of the request's variant under `key`, if any.
    async fn find(&self, key: &str, request_headers: &HeaderMap) -> Result<Option<Vec<u8>>, ()> {
        let plain = variant_field(&Some(Vec::new()));
        let (names, entry): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .redis
            .query(cmd("HMGET").arg(key).arg(VARY_FIELD).arg(&plain))
            .await
            .map_err(|_| ())?;
        let Some(names) = names else {
            return Ok(None);
        };
        if names.is_empty() {
            return Ok(entry);
        }
        let Ok(names) = HeaderValue::from_bytes(&names) else {
            return Ok(None);
        };
        let mut vary = HeaderMap::new();
        vary.insert(http::header::VARY, names);
        let values = policy::vary_values(&policy::vary(&vary), request_headers);
        if values.is_none() {
            return Ok(None);
        }
        self.redis
            .query(cmd("HGET").arg(key).arg(variant_field(&values)))
            .await
            .map_err(|_| ())
    }

    /// Writes a locally stored response to Redis in the background, for as long as it may be
    /// used (fresh, then stale-while-revalidate or stale-if-error); too large, a piece, or
    /// already past use, it stays local.
    pub fn write(self: &Arc<Self>, key: &str, entry: &Arc<CachedResponse>) {
        // A claim on this key's fetch is given back once the entry is in Redis, so that the
        // replicas waiting for it find it there; at once if it will not be written.
        let claim = self.take_claim(key);
        if !self.spawn_write(key, entry, claim)
            && let Some(token) = claim
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (tier, key) = (Arc::clone(self), key.to_owned());
            runtime.spawn(async move { tier.release_claim(&key, token).await });
        }
    }

    /// Starts writing `entry`; false when it stays local.
    fn spawn_write(
        self: &Arc<Self>,
        key: &str,
        entry: &Arc<CachedResponse>,
        claim: Option<u64>,
    ) -> bool {
        if entry.piece.is_some() || entry.body.len() as u64 > self.max_object {
            return false;
        }
        let names = match &entry.vary {
            policy::Vary::None => String::new(),
            policy::Vary::Names(names) => names
                .iter()
                .map(HeaderName::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            // Matches no request: never used again.
            policy::Vary::Any => return false,
        };
        let Some(expires_in) = time_to_keep(&entry.freshness, SystemTime::now()) else {
            return false;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let (tier, entry) = (Arc::clone(self), Arc::clone(entry));
        let (plain_key, key) = (key.to_owned(), self.redis_key(key));
        runtime.spawn(async move {
            tier.write_now(&key, &entry, names, expires_in).await;
            if let Some(token) = claim {
                tier.release_claim(&plain_key, token).await;
            }
        });
        true
    }

    async fn write_now(
        &self,
        key: &str,
        entry: &CachedResponse,
        names: String,
        expires_in: Duration,
    ) {
        let tier = self;
        {
            if !tier.redis.available() {
                tier.metrics.write_errors.inc();
                return;
            }
            let value = encode(entry, SystemTime::now());
            let millis = u64::try_from(expires_in.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let answer: Result<i64, _> = tier
                .redis
                .query(
                    cmd("EVAL")
                        .arg(WRITE_VARIANT)
                        .arg(1)
                        .arg(key)
                        .arg(names)
                        .arg(variant_field(&entry.vary_values))
                        .arg(value)
                        .arg(millis)
                        .arg(MAX_VARIANTS),
                )
                .await;
            match answer {
                Ok(_) => tier.metrics.writes.inc(),
                Err(_) => tier.metrics.write_errors.inc(),
            }
        }
    }

    /// Removes `purges` from Redis and tells every replica (this one included) to drop
    /// them, in the background; counted once sent, as one purge.
    pub fn purge(self: &Arc<Self>, purges: Vec<Purge>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tier = Arc::clone(self);
        runtime.spawn(async move {
            let mut completed = true;
            for purge in purges {
                // Deleted before it is announced: a replica that drops its copy on the
                // message and misses again must not find the old one in Redis.
                // Each step is tried twice: the first call on a connection that broke since
                // the last one fails while it reconnects, and a purge is worth the second.
                let mut deleted = false;
                for _ in 0..2 {
                    deleted = match &purge {
                        Purge::Key(key) => tier
                            .redis
                            .query::<i64>(cmd("DEL").arg(tier.redis_key(key)))
                            .await
                            .is_ok(),
                        Purge::Prefix(prefix) => tier.delete_prefix(prefix).await,
                    };
                    if deleted {
                        break;
                    }
                }
                let mut published = false;
                for _ in 0..2 {
                    published = tier
                        .redis
                        .query::<i64>(cmd("PUBLISH").arg(&tier.channel).arg(purge.encode()))
                        .await
                        .is_ok();
                    if published {
                        break;
                    }
                }
                if !(deleted && published) {
                    completed = false;
                    tracing::warn!(channel = %tier.channel, ?purge, "shared cache purge not completed in Redis");
                }
            }
            if completed {
                tier.metrics.purges_sent.inc();
            }
        });
    }

    /// Deletes the entries under a key prefix, a SCAN page at a time.
    async fn delete_prefix(&self, prefix: &str) -> bool {
        let pattern = format!("{}*", glob_escaped(&self.redis_key(prefix)));
        let mut cursor: u64 = 0;
        loop {
            let page: Result<(u64, Vec<String>), _> = self
                .redis
                .query(
                    cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500),
                )
                .await;
            let Ok((next, keys)) = page else {
                return false;
            };
            if !keys.is_empty() && self.redis.query::<i64>(cmd("DEL").arg(keys)).await.is_err() {
                return false;
            }
            if next == 0 {
                return true;
            }
            cursor = next;
        }
    }

    pub fn status(&self) -> SharedTierStatus {
        let m = &self.metrics;
        SharedTierStatus {
            max_object: self.max_object,
            subscribed: self.subscribed.load(Ordering::Relaxed),
            hits: m.hit.get(),
            misses: m.miss.get(),
            errors: m.error.get(),
            writes: m.writes.get(),
            write_errors: m.write_errors.get(),
            purges_sent: m.purges_sent.get(),
            purges_received: m.purges_received.get(),
        }
    }
}

/// Listens to the purge channel on a connection of its own (a subscribed connection can send
/// nothing else), subscribing again after every disconnection until the tier is dropped.
struct Subscriber {
    redis: Arc<Redis>,
    channel: String,
    subscribed: Arc<AtomicBool>,
    received: IntCounter,
    on_purge: Box<dyn Fn(Purge) + Send + Sync>,
}

impl Subscriber {
    async fn run(self, mut stopped: tokio::sync::watch::Receiver<()>) {
        let mut backoff = Duration::from_millis(50);
        let most = self.redis.settings().breaker_max_open_for.0.max(backoff);
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                listened = self.listen() => {
                    if listened {
                        backoff = Duration::from_millis(50);
                    }
                }
            }
            self.subscribed.store(false, Ordering::Relaxed);
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(most);
        }
    }

    /// Subscribes and applies messages until the connection ends; true if it subscribed.
    async fn listen(&self) -> bool {
        use futures_core::Stream as _;
        let connect_timeout = self.redis.settings().connect_timeout.0;
        let subscribed = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = self.redis.pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let Ok(Ok(pubsub)) = subscribed else {
            return false;
        };
        self.subscribed.store(true, Ordering::Relaxed);
        let mut messages = std::pin::pin!(pubsub.into_on_message());
        while let Some(message) = std::future::poll_fn(|cx| messages.as_mut().poll_next(cx)).await {
            if let Some(purge) = Purge::decode(message.get_payload_bytes()) {
                self.received.inc();
                (self.on_purge)(purge);
            }
        }
        true
    }
}

/// Escapes the glob characters of a SCAN pattern.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// How long Redis should keep a response stored at `now`: the rest of its freshness and its
/// stale windows; `None` when it is already past them (or must be revalidated on every use,
/// which the shared tier does not do).
pub fn time_to_keep(freshness: &Freshness, now: SystemTime) -> Option<Duration> {
    if freshness.no_cache || !freshness.is_fresh(now) {
        return None;
    }
    let windows = if freshness.must_revalidate {
        Duration::ZERO
    } else {
        freshness
            .stale_while_revalidate
            .saturating_add(freshness.stale_if_error)
    };
    let left = freshness
        .lifetime
        .saturating_add(windows)
        .saturating_sub(freshness.current_age(now));
    (!left.is_zero()).then_some(left)
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The bytes Redis keeps of a stored response: a format byte, the status, the freshness
/// facts with the response time and `stored_at` (when it was written), the Vary values it was
/// stored for, the headers and the body; integers big-endian, strings length-prefixed.
pub fn encode(entry: &CachedResponse, stored_at: SystemTime) -> Vec<u8> {
    let f = &entry.freshness;
    let headers_len: usize = entry
        .headers
        .iter()
        .map(|(n, v)| 8 + n.as_str().len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(64 + headers_len + entry.body.len());
    out.push(FORMAT);
    out.extend_from_slice(&entry.status.as_u16().to_be_bytes());
    for value in [
        millis(f.lifetime),
        millis(f.initial_age),
        unix_millis(f.response_time),
        unix_millis(stored_at),
        millis(f.stale_while_revalidate),
        millis(f.stale_if_error),
    ] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.push(u8::from(f.must_revalidate) | (u8::from(f.no_cache) << 1));
    match &entry.vary_values {
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        Some(values) => {
            out.extend_from_slice(&(values.len() as u32).to_be_bytes());
            for value in values {
                match value {
                    None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
                    Some(value) => put_bytes(&mut out, value.as_bytes()),
                }
            }
        }
    }
    out.extend_from_slice(&(entry.headers.len() as u32).to_be_bytes());
    for (name, value) in &entry.headers {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    put_bytes(&mut out, &entry.body);
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads bytes front to back; every read fails rather than panics past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// Length-prefixed bytes; `Err` for the "absent" length.
    fn bytes(&mut self) -> Option<Result<&'a [u8], ()>> {
        let len = self.u32()?;
        if len == u32::MAX {
            return Some(Err(()));
        }
        Some(Ok(self.take(usize::try_from(len).ok()?)?))
    }
}

/// A stored response read back from Redis at `now`, or `None` for bytes that are not one
/// (another format, damage). Its age carries on from the writer's (RFC 9111 §4.2.3): the age
/// it had when written plus the time since, which is time spent in the shared tier.
pub fn decode(bytes: &[u8], now: SystemTime) -> Option<CachedResponse> {
    let mut r = Reader(bytes);
    if r.u8()? != FORMAT {
        return None;
    }
    let status = StatusCode::from_u16(r.u16()?).ok()?;
    let lifetime = Duration::from_millis(r.u64()?);
    let initial_age = Duration::from_millis(r.u64()?);
    let response_time = r.u64()?;
    let stored_at = r.u64()?;
    let stale_while_revalidate = Duration::from_millis(r.u64()?);
    let stale_if_error = Duration::from_millis(r.u64()?);
    let flags = r.u8()?;
    let count = r.u32()?;
    let vary_values = if count == u32::MAX {
        None
    } else {
        let mut values = Vec::new();
        for _ in 0..count {
            values.push(match r.bytes()? {
                Err(()) => None,
                Ok(value) => Some(HeaderValue::from_bytes(value).ok()?),
            });
        }
        Some(values)
    };
    let mut headers = HeaderMap::new();
    for _ in 0..r.u32()? {
        let name = HeaderName::from_bytes(r.bytes()?.ok()?).ok()?;
        let value = HeaderValue::from_bytes(r.bytes()?.ok()?).ok()?;
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(r.bytes()?.ok()?);
    if !r.0.is_empty() {
        return None;
    }
    // The age when written, on the writer's clock alone; then the time since on ours, never
    // negative (a clock behind the writer's does not make the response younger).
    let age_when_stored = initial_age.saturating_add(Duration::from_millis(
        stored_at.saturating_sub(response_time),
    ));
    let in_shared_tier = now
        .duration_since(UNIX_EPOCH + Duration::from_millis(stored_at))
        .unwrap_or(Duration::ZERO);
    Some(CachedResponse {
        status,
        vary: policy::vary(&headers),
        headers,
        body,
        freshness: Freshness {
            lifetime,
            initial_age: age_when_stored.saturating_add(in_shared_tier),
            response_time: now,
            stale_while_revalidate,
            stale_if_error,
            must_revalidate: flags & 1 != 0,
            no_cache: flags & 2 != 0,
        },
        vary_values,
        piece: None,
        encoded: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: u64 = 1_800_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn entry() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("vary", HeaderValue::from_static("accept-language"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        CachedResponse {
            status: StatusCode::OK,
            vary: policy::vary(&headers),
            headers,
            body: Bytes::from_static(b"hello"),
            freshness: Freshness {
                lifetime: Duration::from_secs(60),
                initial_age: Duration::from_secs(5),
                response_time: at(T),
                stale_while_revalidate: Duration::from_secs(10),
                stale_if_error: Duration::from_secs(20),
                must_revalidate: false,
                no_cache: false,
            },
            vary_values: Some(vec![Some(HeaderValue::from_static("fr"))]),
            piece: None,
            encoded: Default::default(),
        }
    }

    #[test]
    fn an_entry_reads_back_as_written_with_its_age_carried_on() {
        let written = entry();
        let bytes = encode(&written, at(T + 2));
        let read = decode(&bytes, at(T + 12)).unwrap();
        assert_eq!(read.status, written.status);
        assert_eq!(read.headers, written.headers);
        assert_eq!(read.body, written.body);
        assert_eq!(read.vary, written.vary);
        assert_eq!(read.vary_values, written.vary_values);
        // 5 s old on arrival, 2 s at the writer, 10 s in the shared tier.
        assert_eq!(
            read.freshness.current_age(at(T + 12)),
            Duration::from_secs(17)
        );
        assert_eq!(read.freshness.ttl(at(T + 12)), Duration::from_secs(43));
        assert_eq!(
            written.freshness.current_age(at(T + 12)),
            read.freshness.current_age(at(T + 12)),
            "the same age on both replicas"
        );
        // A reader whose clock is behind the writer's: no younger than when written.
        let behind = decode(&bytes, at(T)).unwrap();
        assert_eq!(behind.freshness.current_age(at(T)), Duration::from_secs(7));
    }

    #[test]
    fn redis_keeps_an_entry_for_its_freshness_and_stale_windows() {
        let f = entry().freshness;
        assert_eq!(time_to_keep(&f, at(T)), Some(Duration::from_secs(85)));
        assert_eq!(time_to_keep(&f, at(T + 50)), Some(Duration::from_secs(35)));
        assert_eq!(time_to_keep(&f, at(T + 60)), None, "stale: not shared");
        let strict = Freshness {
            must_revalidate: true,
            ..f
        };
        assert_eq!(time_to_keep(&strict, at(T)), Some(Duration::from_secs(55)));
        let no_cache = Freshness {
            no_cache: true,
            ..f
        };
        assert_eq!(time_to_keep(&no_cache, at(T)), None);
    }

    #[test]
    fn other_formats_and_damage_read_as_nothing() {
        let bytes = encode(&entry(), at(T));
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode(&other, at(T)).is_none());
        assert!(decode(&bytes[..bytes.len() - 1], at(T)).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, at(T)).is_none());
    }

    #[test]
    fn purge_messages_round_trip() {
        for purge in [
            Purge::Key("example.com/a?b".into()),
            Purge::Prefix("example.com/".into()),
        ] {
            assert_eq!(Purge::decode(purge.encode().as_bytes()), Some(purge));
        }
        assert_eq!(Purge::decode(b"x y"), None);
        assert_eq!(Purge::decode(b"k"), None);
        assert_eq!(glob_escaped("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn variants_have_fields_of_their_own() {
        let fr = Some(vec![Some(HeaderValue::from_static("fr"))]);
        let en = Some(vec![Some(HeaderValue::from_static("en"))]);
        let absent = Some(vec![None]);
        let fields = [
            variant_field(&Some(Vec::new())),
            variant_field(&fr),
            variant_field(&en),
            variant_field(&absent),
        ];
        for (i, a) in fields.iter().enumerate() {
            assert_ne!(a.as_slice(), VARY_FIELD.as_bytes());
            for b in &fields[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(variant_field(&fr), variant_field(&fr.clone()));
    }

    proptest! {
        #[test]
        fn no_bytes_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, at(T));
            let _ = Purge::decode(&bytes);
        }

        #[test]
        fn no_damage_to_a_real_entry_panics_the_decoder(at_byte in 0usize..200, value: u8, cut in 0usize..200) {
            let mut bytes = encode(&entry(), at(T));
            let i = at_byte % bytes.len();
            bytes[i] = value;
            bytes.truncate(bytes.len() - cut % bytes.len());
            let _ = decode(&bytes, at(T));
        }
    }
}
