//! Certificates from an ACME directory (RFC 8555): for each listener whose `tls` has an
//! `acme` section, a task keeps a valid certificate for its domains in the state directory,
//! ordering one when none is stored and renewing it at `renew_at` of its lifetime, or inside
//! the window the directory suggests where it offers renewal information (RFC 9773). The
//! listener serves whatever is stored (read like configured files, so rotation, SNI, expiry
//! metrics and /status work the same); after a new certificate is stored the task asks for
//! the listeners' certificates to be read again. Challenges are answered by HTTP-01 on the
//! plain-HTTP listeners or TLS-ALPN-01 (RFC 8737) on the listener itself.

pub mod http;
pub mod schedule;
pub mod store;

use crate::certs::CertInfo;
use crate::config::{AcmeConfig, Config};
use crate::metrics::tls::AcmeOrderMetrics;
use crate::tls::challenge::{AcmeChallenges, http01_file};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often a waiting task looks at the state directory anyway: another replica sharing it
/// may have renewed the certificate, which this one then serves.
const RECHECK: Duration = Duration::from_secs(600);

/// How often a replica waiting for another's order tries the lock.
const LOCK_POLL: Duration = Duration::from_millis(250);

/// How long the directory may take to validate the challenges and to issue.
const ORDER_POLLING: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// The ACME tasks of a process, one per listener with an `acme` section, matched to the
/// config in force: a reload that adds, changes or removes a listener's `acme` starts, replaces
/// or stops its task; one that leaves it alone leaves the task (and an order under way) alone.
pub struct AcmeKeeper {
    challenges: AcmeChallenges,
    metrics: Arc<crate::metrics::tls::AcmeMetrics>,
    /// Notified when any task stores a different certificate.
    stored: Arc<Notify>,
    tasks: std::sync::Mutex<HashMap<String, (AcmeConfig, JoinHandle<()>)>>,
}

impl AcmeKeeper {
    pub fn new(challenges: AcmeChallenges, metrics: Arc<crate::metrics::tls::AcmeMetrics>) -> Self {
        Self {
            challenges,
            metrics,
            stored: Arc::new(Notify::new()),
            tasks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Woken when a task has stored a different certificate: the listeners should read
    /// theirs again.
    pub fn stored(&self) -> Arc<Notify> {
        Arc::clone(&self.stored)
    }

    /// Starts, replaces and stops tasks to match `config`'s listeners.
    pub fn follow(&self, config: &Config) {
        let wanted: HashMap<&str, &AcmeConfig> = config
            .listeners
            .iter()
            .filter_map(|listener| {
                let acme = listener.tls.as_ref()?.acme.as_ref()?;
                Some((listener.name.get_ref().as_str(), acme))
            })
            .collect();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|listener, (acme, task)| {
            // `Spanned` compares values only: moving the section in the file changes nothing.
            let keep = wanted.get(listener.as_str()) == Some(&&*acme);
            if !keep {
                task.abort();
            }
            keep
        });
        for (listener, acme) in wanted {
            if tasks.contains_key(listener) {
                continue;
            }
            let task = Manager {
                listener: listener.to_owned(),
                acme: acme.clone(),
                challenges: self.challenges.clone(),
                metrics: self.metrics.listener(listener),
                stored: Arc::clone(&self.stored),
            }
            .spawn();
            tasks.insert(listener.to_owned(), (acme.clone(), task));
        }
    }

    /// Stops every task (at shutdown); an order under way is abandoned, its answers withdrawn.
    pub fn stop(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, (_, task)) in tasks.drain() {
            task.abort();
        }
    }
}

/// The problem type of a request signed by an account the directory does not know.
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// One listener's ACME certificate, kept by a background task.
pub struct Manager {
    pub listener: String,
    pub acme: AcmeConfig,
    pub challenges: AcmeChallenges,
    pub metrics: AcmeOrderMetrics,
    /// Notified when a different certificate is stored: the listeners read theirs again.
    pub stored: Arc<Notify>,
}

/// A certificate's own jitter (0..1): fixed per certificate, so that rechecks do not move its
/// renewal, and different for certificates issued together.
fn jitter(info: &CertInfo) -> f64 {
    (info.not_after.unsigned_abs() % 1000) as f64 / 1000.0
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Manager {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// The renewal time of `info` at `renew_at` of its lifetime, less its own jitter.
    fn due(&self, info: &CertInfo) -> i64 {
        schedule::renewal_time(
            info.not_before,
            info.not_after,
            *self.acme.renew_at.get_ref(),
            jitter(info),
        )
    }

    /// The renewal time of `info` inside the window the directory suggested for it, if it
    /// did (with the same jitter, and never later than a twentieth of its lifetime before it
    /// expires); else `due`.
    fn due_advised(&self, advice: &RenewalAdvice, info: &CertInfo) -> i64 {
        match advice.window {
            Some((start, end)) => {
                let lifetime = (info.not_after - info.not_before).max(0);
                let latest = info.not_after - lifetime / 20;
                schedule::renewal_time_in_window(start, end, jitter(info), latest)
            }
            None => self.due(info),
        }
    }

    /// Asks the directory for the stored certificate's renewal information when it is time
    /// to (RFC 9773 §4.3: as its Retry-After says), keeping what it said in `advice`.
    async fn look_for_advice(&self, advice: &mut RenewalAdvice, now: i64) {
        if advice.unsupported {
            return;
        }
        let Some(id) = store::stored_certificate_id(&self.acme) else {
            return;
        };
        if advice.certificate.as_ref() != Some(&id) {
            *advice = RenewalAdvice {
                certificate: Some(id.clone()),
                next_look: now,
                ..RenewalAdvice::default()
            };
        }
        if now < advice.next_look {
            return;
        }
        let floor = self.acme.retry.0;
        let asked = match self.account().await {
            Ok(account) => account.renewal_info(&id).await.map_err(|e| match e {
                instant_acme::Error::Unsupported(_) => None,
                e => Some(e.to_string()),
            }),
            Err(e) => Err(Some(e)),
        };
        let wait = match asked {
            Ok((info, retry_after)) => {
                let window = &info.suggested_window;
                let window = (window.start.unix_timestamp(), window.end.unix_timestamp());
                if advice.window != Some(window) {
                    tracing::info!(
                        listener = %self.listener,
                        certificate = %id,
                        window_start = window.0,
                        window_end = window.1,
                        explanation = info.explanation_url.as_deref().unwrap_or("-"),
                        "ACME renewal information: the directory suggests a renewal window"
                    );
                }
                advice.window = Some(window);
                schedule::advice_wait(retry_after, floor)
            }
            Err(None) => {
                advice.unsupported = true;
                return;
            }
            Err(Some(e)) => {
                tracing::debug!(listener = %self.listener, error = %e, "ACME renewal information not available");
                schedule::advice_wait(Duration::ZERO, floor.max(RECHECK / 10))
            }
        };
        advice.next_look =
            now.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX).max(1));
    }

    async fn run(self) {
        let state_dir = self.acme.state_dir.get_ref().clone();
        let mut failures = 0u32;
        let mut served = store::stored_certificate(&self.acme, SystemTime::now());
        let mut advice = RenewalAdvice::default();
        loop {
            let stored = store::stored_certificate(&self.acme, SystemTime::now());
            if stored != served {
                served.clone_from(&stored);
                self.stored.notify_one();
            }
            let now = unix_now();
            if stored.is_some() {
                self.look_for_advice(&mut advice, now).await;
            }
            let due = stored
                .as_ref()
                .map_or(now, |info| self.due_advised(&advice, info));
            if due > now {
                let look_again = (advice.certificate.is_some() && !advice.unsupported)
                    .then_some(advice.next_look);
                let until = look_again.map_or(due, |at| due.min(at));
                let wait = Duration::from_secs((until - now).max(1).unsigned_abs()).min(RECHECK);
                tokio::time::sleep(wait).await;
                continue;
            }
            // Due: one replica at a time orders; the others find its certificate stored.
            let lock = match store::StateLock::acquire(&state_dir, LOCK_POLL).await {
                Ok(lock) => lock,
                Err(e) => {
                    failures += 1;
                    self.metrics.failed.inc();
                    let wait = schedule::backoff(self.acme.retry.0, failures);
                    tracing::warn!(listener = %self.listener, lock = %format!("{state_dir}/order.lock"), error = %e, retry_in = ?wait, "ACME: cannot lock the state directory");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let stored = store::stored_certificate(&self.acme, SystemTime::now());
            if stored
                .as_ref()
                .is_some_and(|info| self.due_advised(&advice, info) > unix_now())
            {
                drop(lock);
                continue;
            }
            self.metrics.started.inc();
            let started = std::time::Instant::now();
            let domains = self.acme.domains.get_ref().join(",");
            let replacing = advice.certificate.clone().filter(|_| !advice.unsupported);
            match self.order(replacing).await {
                Ok(info) => {
                    drop(lock);
                    failures = 0;
                    self.metrics.succeeded.inc();
                    tracing::info!(
                        listener = %self.listener,
                        domains,
                        directory = %self.acme.directory.get_ref(),
                        not_after = info.not_after,
                        took_ms = started.elapsed().as_millis() as u64,
                        "ACME order succeeded; certificate stored"
                    );
                    // A certificate due again at once (a renew_at near 0, a lifetime of
                    // seconds) must not make a loop of orders.
                    tokio::time::sleep(self.acme.retry.0).await;
                }
                Err(e) => {
                    drop(lock);
                    failures += 1;
                    self.metrics.failed.inc();
                    let wait = schedule::backoff(self.acme.retry.0, failures);
                    tracing::warn!(
                        listener = %self.listener,
                        domains,
                        directory = %self.acme.directory.get_ref(),
                        error = %e,
                        failures,
                        retry_in = ?wait,
                        "ACME order failed; the stored certificate (if any) stays in service"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The account for the directory: the stored one, else a new one, stored.
    async fn account(&self) -> Result<Account, String> {
        let client = || -> Result<Box<http::DirectoryClient>, String> {
            Ok(Box::new(http::DirectoryClient::new(
                self.acme
                    .directory_ca
                    .as_ref()
                    .map(|ca| ca.get_ref().as_str()),
            )?))
        };
        let directory = self.acme.directory.get_ref();
        let path = store::account_path(self.acme.state_dir.get_ref(), directory);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let credentials: AccountCredentials = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not an ACME account: {e}", path.display()))?;
            return Account::builder_with_http(client()?)
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("{directory}: {e}"));
        }
        let contact: Vec<&str> = self
            .acme
            .contact
            .iter()
            .map(|c| c.get_ref().as_str())
            .collect();
        let (account, credentials) = Account::builder_with_http(client()?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("{directory}: cannot create an account: {e}"))?;
        let text = serde_json::to_vec(&credentials)
            .map_err(|e| format!("cannot serialize the ACME account: {e}"))?;
        store::write_private(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::info!(listener = %self.listener, directory, account = account.id(), "ACME account created");
        Ok(account)
    }

    /// One order, start to end: the certificate and its key are stored when it succeeds.
    /// `replacing` names the certificate it renews (RFC 9773 §5) where the directory offers
    /// renewal information; an order the directory does not take as a replacement (one
    /// already replaced, or a directory that does not say it took it) is placed again without.
    async fn order(
        &self,
        replacing: Option<CertificateIdentifier<'static>>,
    ) -> Result<CertInfo, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .acme
            .domains
            .get_ref()
            .iter()
            .map(|domain| Identifier::Dns(domain.clone()))
            .collect();
        let placed = match replacing {
            Some(replaced) => {
                match account
                    .new_order(&NewOrder::new(&identifiers).replaces(replaced))
                    .await
                {
                    Ok(order) => Ok(order),
                    Err(e) => {
                        tracing::debug!(listener = %self.listener, error = %e, "ACME order as a replacement refused; placed again without");
                        account.new_order(&NewOrder::new(&identifiers)).await
                    }
                }
            }
            None => account.new_order(&NewOrder::new(&identifiers)).await,
        };
        let mut order = match placed {
            Ok(order) => order,
            Err(e) => {
                if let instant_acme::Error::Api(problem) = &e
                    && problem.r#type.as_deref() == Some(ACCOUNT_GONE)
                {
                    // The directory no longer knows the stored account (deactivated, or a
                    // test directory started afresh): the next attempt creates a new one.
                    let path = store::account_path(
                        self.acme.state_dir.get_ref(),
                        self.acme.directory.get_ref(),
                    );
                    let _ = std::fs::remove_file(path);
                }
                return Err(format!("new order: {e}"));
            }
        };
        let kind = if self.acme.tls_alpn() {
            ChallengeType::TlsAlpn01
        } else {
            ChallengeType::Http01
        };
        // Answers are withdrawn however the order ends.
        let mut pending = PendingAnswers {
            challenges: self.challenges.clone(),
            tokens: Vec::new(),
            names: Vec::new(),
            files: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let name = authorization.identifier().to_string();
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| format!("{name}: the directory offers no {kind:?} challenge"))?;
            let key_authorization = challenge.key_authorization();
            if kind == ChallengeType::TlsAlpn01 {
                let key = tls_alpn_certificate(&name, key_authorization.digest().as_ref())?;
                self.challenges.add_tls_alpn(&name, key);
                pending.names.push(name.clone());
            } else {
                self.challenges
                    .add_http01(&challenge.token, key_authorization.as_str());
                pending.tokens.push(challenge.token.clone());
                // Replicas sharing the state directory answer too: the directory's validation
                // may reach any of them through the load balancer.
                let shared =
                    http01_file(Path::new(self.acme.state_dir.get_ref()), &challenge.token);
                store::write_private(&shared, key_authorization.as_str().as_bytes())
                    .map_err(|e| format!("{}: {e}", shared.display()))?;
                pending.files.push(shared);
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("{name}: challenge: {e}"))?;
        }
        let status = order
            .poll_ready(&ORDER_POLLING)
            .await
            .map_err(|e| format!("validation: {e}"))?;
        drop(pending);
        if status != OrderStatus::Ready {
            return Err(format!("order is {status:?} after validation"));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&ORDER_POLLING)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        let (cert_path, key_path) = (self.acme.cert_path(), self.acme.key_path());
        // The key first: a certificate is only ever stored beside its own key or a newer one,
        // and a mismatched pair is not served but ordered again.
        store::write_private(&key_path, key_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        store::write_private(&cert_path, chain_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        store::stored_certificate(&self.acme, SystemTime::now()).ok_or_else(|| {
            format!(
                "{}: the certificate issued does not load or does not cover every domain",
                cert_path.display()
            )
        })
    }
}

/// What the directory's renewal information (RFC 9773) said of the stored certificate.
#[derive(Default)]
struct RenewalAdvice {
    /// The certificate asked about.
    certificate: Option<CertificateIdentifier<'static>>,
    /// Its suggested renewal window (Unix seconds), once the directory gave one.
    window: Option<(i64, i64)>,
    /// When to ask again (Unix seconds).
    next_look: i64,
    /// The directory offers no renewal information: it is not asked again.
    unsupported: bool,
}

struct PendingAnswers {
    challenges: AcmeChallenges,
    tokens: Vec<String>,
    names: Vec<String>,
    files: Vec<std::path::PathBuf>,
}

impl Drop for PendingAnswers {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove_http01(token);
        }
        for name in &self.names {
            self.challenges.remove_tls_alpn(name);
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The self-signed certificate of a TLS-ALPN-01 answer (RFC 8737 §3): `name` as its only
/// subject alternative name and the SHA-256 of the key authorization in a critical
/// acmeIdentifier extension.
pub fn tls_alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let failed = |e: rcgen::Error| format!("{name}: cannot make the TLS-ALPN-01 certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(failed)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing_key = crate::certs::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{name}: TLS-ALPN-01 key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}
