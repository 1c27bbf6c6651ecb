//! DNS service discovery: an upstream server given by name (`orders.default.svc:8000`) stands
//! for every A/AAAA record the name has. Names are resolved when a config is loaded and again
//! every `dns_refresh`; a changed address set recompiles the snapshot exactly as a reload does,
//! so kept addresses keep their state and removed ones drain. A failed resolution keeps the
//! last good set: a DNS outage must not empty an upstream that still works.
//!
//! The resolver is hickory-resolver rather than tokio's `lookup_host`: it is asynchronous (no
//! blocking thread per query), it can be pointed at chosen name servers (nginx's `resolver`,
//! and how the tests use a DNS server on loopback), and it reads `/etc/resolv.conf` and
//! `/etc/hosts` like the system resolver when none are given.

use crate::config::{Config, ResolverConfig};
use crate::metrics::Metrics;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The host and port of a server entry whose host is a name to resolve; `None` for IP literals
/// (and for entries that do not parse, which validation reports).
pub fn name_of(addr: &str) -> Option<(String, u16)> {
    let (host, port) = crate::config::parse_server_addr(addr).ok()?;
    let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
    (!literal).then_some((host, port))
}

/// The names each upstream of `config` resolves, with its refresh interval.
pub fn names_by_upstream(config: &Config) -> BTreeMap<String, (BTreeSet<String>, Duration)> {
    config
        .upstreams
        .iter()
        .filter_map(|(upstream, settings)| {
            let hosts: BTreeSet<String> = settings
                .servers
                .get_ref()
                .iter()
                .filter_map(|entry| name_of(&entry.get_ref().addr).map(|(host, _)| host))
                .collect();
            (!hosts.is_empty()).then(|| (upstream.clone(), (hosts, settings.dns_refresh.0)))
        })
        .collect()
}

/// Resolves names to every A and AAAA address, asking the configured name servers (or the
/// system's) each time: the refresh interval, not the records' TTL, says how fresh a set is.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    settings: ResolverConfig,
}

impl Resolver {
    pub fn new(settings: &ResolverConfig) -> Result<Self, String> {
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder_tokio().unwrap_or_else(|e| {
                // A container without /etc/resolv.conf can still proxy to IP addresses (and
                // names in /etc/hosts); names elsewhere fail, counted, until configured.
                tracing::warn!(error = %e, "cannot read the system's DNS configuration; set [resolver] nameservers to resolve server names");
                TokioResolver::builder_with_config(
                    HickoryConfig::from_name_servers(Vec::new()),
                    TokioRuntimeProvider::default(),
                )
            })
        } else {
            let servers = settings
                .nameservers
                .iter()
                .filter_map(|s| crate::config::parse_nameserver(s.get_ref()))
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(
                HickoryConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = settings.timeout.0;
        options.attempts = 1;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        let inner = builder
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(Self {
            inner,
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &ResolverConfig {
        &self.settings
    }

    /// Every address of `host`, sorted; an answer without any counts as a failure.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let answer = self
            .inner
            .lookup_ip(host)
            .await
            .map_err(|e| e.to_string())?;
        let mut ips: Vec<IpAddr> = answer.iter().collect();
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            return Err("no A or AAAA records".into());
        }
        Ok(ips)
    }
}

/// What /status says about one name.
#[derive(Debug, serde::Serialize)]
pub struct NameReport {
    pub addresses: Vec<String>,
    pub failing: bool,
}

/// One name's last good address set, and whether its latest resolution failed.
#[derive(Clone, Default)]
struct Entry {
    ips: Arc<[IpAddr]>,
    failing: bool,
}

/// The last good address set of every (upstream, name), shared by the snapshots.
#[derive(Default)]
pub struct AddressBook {
    entries: Mutex<BTreeMap<(String, String), Entry>>,
}

impl AddressBook {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The addresses `host` had at its last good resolution for `upstream` (none yet: empty).
    pub fn addresses(&self, upstream: &str, host: &str) -> Arc<[IpAddr]> {
        self.lock()
            .get(&(upstream.to_owned(), host.to_owned()))
            .map_or_else(|| Arc::from([]), |e| Arc::clone(&e.ips))
    }

    /// Records one resolution, counts it, and says whether the address set changed.
    pub fn record(
        &self,
        upstream: &str,
        host: &str,
        result: Result<Vec<IpAddr>, String>,
        metrics: &Metrics,
    ) -> bool {
        let mut entries = self.lock();
        let entry = entries
            .entry((upstream.to_owned(), host.to_owned()))
            .or_default();
        let outcome = if result.is_ok() { "success" } else { "failure" };
        metrics
            .dns_resolutions
            .with_label_values(&[upstream, outcome])
            .inc();
        match result {
            Ok(ips) => {
                if entry.failing {
                    tracing::info!(upstream, host, "DNS resolution works again");
                }
                entry.failing = false;
                if *entry.ips == *ips {
                    return false;
                }
                tracing::info!(upstream, host, addresses = ?ips, "DNS address set changed");
                entry.ips = ips.into();
                true
            }
            Err(error) => {
                // Warn once per outage; every failure is counted.
                if !entry.failing {
                    tracing::warn!(upstream, host, %error, kept = entry.ips.len(), "DNS resolution failed; keeping the last good addresses");
                }
                entry.failing = true;
                false
            }
        }
    }

    /// For /status: each name of `upstream`, its addresses in use and whether its latest
    /// resolution failed.
    pub fn report(&self, upstream: &str) -> BTreeMap<String, NameReport> {
        self.lock()
            .iter()
            .filter(|((u, _), _)| u == upstream)
            .map(|((_, host), entry)| {
                let report = NameReport {
                    addresses: entry.ips.iter().map(ToString::to_string).collect(),
                    failing: entry.failing,
                };
                (host.clone(), report)
            })
            .collect()
    }

    /// Whether `(upstream, host)` has been resolved successfully at least once.
    fn known(&self, upstream: &str, host: &str) -> bool {
        self.lock()
            .get(&(upstream.to_owned(), host.to_owned()))
            .is_some_and(|e| !e.ips.is_empty())
    }

    /// Forgets names that `config` no longer uses.
    pub fn retain(&self, config: &Config) {
        let wanted = names_by_upstream(config);
        self.lock().retain(|(upstream, host), _| {
            wanted
                .get(upstream)
                .is_some_and(|(hosts, _)| hosts.contains(host))
        });
    }

    /// Resolves the names of `config` that have no address yet (at start, and for names a
    /// reload adds), all at once. Names that fail stay empty until a refresh finds them.
    pub async fn resolve_unknown(&self, resolver: &Resolver, config: &Config, metrics: &Metrics) {
        let pending: Vec<(String, String)> = names_by_upstream(config)
            .into_iter()
            .flat_map(|(upstream, (hosts, _))| {
                hosts.into_iter().map(move |h| (upstream.clone(), h))
            })
            .filter(|(upstream, host)| !self.known(upstream, host))
            .collect();
        for ((upstream, host), result) in resolve_all(resolver, pending).await {
            self.record(&upstream, &host, result, metrics);
        }
    }
}

/// Resolves every (upstream, host) concurrently: one slow name server answer must not hold
/// up the others.
async fn resolve_all(
    resolver: &Resolver,
    names: Vec<(String, String)>,
) -> Vec<((String, String), Result<Vec<IpAddr>, String>)> {
    let mut lookups = tokio::task::JoinSet::new();
    for (upstream, host) in names {
        let resolver = resolver.clone();
        lookups.spawn(async move {
            let result = resolver.lookup(&host).await;
            ((upstream, host), result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = lookups.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    results
}

/// The longest the refresh loop sleeps, so that upstreams a reload adds are picked up soon.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// What the refresh loop needs from the running process.
pub trait Rediscover: Send + Sync + 'static {
    /// The names each upstream in force resolves, with its refresh interval.
    fn names(&self) -> BTreeMap<String, (BTreeSet<String>, Duration)>;
    /// The resolver in force (a reload may change `[resolver]`).
    fn resolver(&self) -> Resolver;
    fn addresses(&self) -> &AddressBook;
    fn metrics(&self) -> &Metrics;
    /// Compiles the config in force again with the new address sets and swaps it in;
    /// whether that worked.
    fn recompile(&self) -> impl Future<Output = bool> + Send;
}

/// Re-resolves each upstream's names every `dns_refresh`, recompiling when a set changed.
/// Runs until its task is aborted.
pub async fn refresh_loop<P: Rediscover>(process: Arc<P>) {
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    // Address sets recorded but not yet compiled in: a failed recompile (a TLS file that
    // went bad since) is tried again each pass, or new addresses would wait for the next
    // change that may never come.
    let mut recompile_pending = false;
    loop {
        let targets = process.names();
        let now = Instant::now();
        due.retain(|upstream, _| targets.contains_key(upstream));
        let mut names = Vec::new();
        for (upstream, (hosts, refresh)) in &targets {
            // Names were resolved when their config was loaded: the first refresh is one
            // interval later.
            let next = due.entry(upstream.clone()).or_insert(now + *refresh);
            if *next <= now {
                *next = now + *refresh;
                names.extend(hosts.iter().map(|h| (upstream.clone(), h.clone())));
            }
        }
        if !names.is_empty() {
            let resolver = process.resolver();
            let mut changed = false;
            for ((upstream, host), result) in resolve_all(&resolver, names).await {
                changed |= process
                    .addresses()
                    .record(&upstream, &host, result, process.metrics());
            }
            recompile_pending |= changed;
        }
        if recompile_pending {
            recompile_pending = !process.recompile().await;
        }
        let wake = due
            .values()
            .min()
            .copied()
            .unwrap_or(now + MAX_IDLE)
            .min(Instant::now() + MAX_IDLE);
        tokio::time::sleep_until(wake.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_are_resolved() {
        assert_eq!(
            name_of("orders.default.svc.cluster.local:8000"),
            Some(("orders.default.svc.cluster.local".into(), 8000))
        );
        assert_eq!(name_of("127.0.0.1:8000"), None);
        assert_eq!(name_of("[::1]:8000"), None);
    }

    #[test]
    fn a_failure_keeps_the_last_good_set_and_a_change_is_reported_once() {
        let metrics = Metrics::new().unwrap();
        let book = AddressBook::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(book.record("u", "h", Ok(vec![a, b]), &metrics));
        assert!(!book.record("u", "h", Ok(vec![a, b]), &metrics));
        assert!(!book.record("u", "h", Err("SERVFAIL".into()), &metrics));
        assert_eq!(&*book.addresses("u", "h"), &[a, b]);
        assert!(book.record("u", "h", Ok(vec![b]), &metrics));
        assert_eq!(&*book.addresses("u", "h"), &[b]);
        let count = |result: &str| {
            metrics
                .dns_resolutions
                .with_label_values(&["u", result])
                .get()
        };
        assert_eq!((count("success"), count("failure")), (3, 1));
    }
}
