//! Per-route authentication: HTTP Basic against an htpasswd file (`basic`, nginx's
//! `auth_basic`) and bearer JWTs (`jwt`, Envoy's `jwt_authn`). Verification only: pure code
//! over a request's headers and the users or keys in force. Reading the files and fetching
//! key sets is done by `reload`, which hands the results to the `AuthRegistry`; this layer
//! imports nothing of the crate, so `config` can use its parsers to check files.

pub mod basic;
pub mod htpasswd;
pub mod jwt;

pub use basic::BasicAuth;
pub use jwt::{JwtAuth, JwtSettings, KeySource};

use http::{HeaderMap, HeaderValue};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counters of one route's checks of one kind, resolved when the snapshot is built.
pub struct Counters {
    pub allowed: IntCounter,
    pub missing: IntCounter,
    pub denied: IntCounter,
}

/// A route's authentication, compiled: what it checks, in order (Basic, then JWT).
pub struct RouteAuth {
    pub basic: Option<(Arc<BasicAuth>, Counters)>,
    pub jwt: Option<(Arc<JwtAuth>, Counters)>,
}

/// A request turned away: 401 with this challenge.
#[derive(Debug)]
pub struct Denial {
    pub message: &'static str,
    pub challenge: HeaderValue,
}

/// Where a check stands: decided, or waiting for a slow password hash to be verified.
pub enum Step {
    Done(Result<(), Denial>),
    /// Verify with `Deferred::verify`, then finish with `RouteAuth::after_basic`.
    Deferred(basic::Deferred),
}

impl RouteAuth {
    /// Checks a request, handing back a slow password hash to be verified off the serving
    /// thread; on success its headers are edited as `check` says.
    pub fn check_or_defer(&self, headers: &mut HeaderMap) -> Step {
        if let Some((basic, counters)) = &self.basic {
            match basic.check_or_defer(headers) {
                Ok(basic::Outcome::Allowed) => counters.allowed.inc(),
                Ok(basic::Outcome::Missing) => {
                    counters.missing.inc();
                    return Step::Done(Err(Denial {
                        message: "this route needs a user name and password",
                        challenge: basic.challenge.clone(),
                    }));
                }
                Ok(basic::Outcome::Denied) => return Step::Done(Err(self.wrong_password())),
                Err(deferred) => return Step::Deferred(deferred),
            }
        }
        Step::Done(self.check_jwt(headers))
    }

    /// The rest of a check whose Basic credentials were verified off the serving thread.
    pub fn after_basic(&self, allowed: bool, headers: &mut HeaderMap) -> Result<(), Denial> {
        if let Some((_, counters)) = &self.basic {
            if !allowed {
                return Err(self.wrong_password());
            }
            counters.allowed.inc();
        }
        self.check_jwt(headers)
    }

    fn wrong_password(&self) -> Denial {
        match &self.basic {
            Some((basic, counters)) => {
                counters.denied.inc();
                Denial {
                    message: "wrong user name or password",
                    challenge: basic.challenge.clone(),
                }
            }
            None => Denial {
                message: "wrong user name or password",
                challenge: HeaderValue::from_static("Basic"),
            },
        }
    }

    /// Checks a request; on success its headers are edited for the upstream (claims become
    /// headers, and client-sent copies of those headers are removed whatever the outcome).
    pub fn check(&self, headers: &mut HeaderMap) -> Result<(), Denial> {
        if let Some((basic, counters)) = &self.basic {
            match basic.check(headers) {
                basic::Outcome::Allowed => counters.allowed.inc(),
                basic::Outcome::Missing => {
                    counters.missing.inc();
                    return Err(Denial {
                        message: "this route needs a user name and password",
                        challenge: basic.challenge.clone(),
                    });
                }
                basic::Outcome::Denied => return Err(self.wrong_password()),
            }
        }
        self.check_jwt(headers)
    }

    fn check_jwt(&self, headers: &mut HeaderMap) -> Result<(), Denial> {
        if let Some((jwt, counters)) = &self.jwt {
            let outcome = jwt.check(headers);
            for (_, name) in &jwt.settings.claims_to_headers {
                headers.remove(name);
            }
            match outcome {
                jwt::Outcome::Allowed(claims) => {
                    counters.allowed.inc();
                    for (name, value) in claims {
                        headers.insert(name, value);
                    }
                }
                jwt::Outcome::Missing => {
                    counters.missing.inc();
                    return Err(Denial {
                        message: "this route needs a bearer token",
                        challenge: jwt.challenge.clone(),
                    });
                }
                jwt::Outcome::Denied(invalid) => {
                    counters.denied.inc();
                    let mut challenge = jwt.challenge.as_bytes().to_vec();
                    challenge.extend_from_slice(b", error=\"invalid_token\", error_description=\"");
                    challenge.extend_from_slice(invalid.description().as_bytes());
                    challenge.push(b'"');
                    return Err(Denial {
                        message: invalid.description(),
                        challenge: HeaderValue::from_bytes(&challenge)
                            .unwrap_or_else(|_| jwt.challenge.clone()),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The `[basic_auth.NAME]`s and `[jwt.NAME]`s in use, kept across reloads that leave their
/// settings alone (their users, key sets and caches with them).
pub struct AuthRegistry {
    basic: Mutex<HashMap<String, Arc<BasicAuth>>>,
    jwt: Mutex<HashMap<String, Arc<JwtAuth>>>,
    /// Counts changes to the set of files or URLs in use (watchers follow it).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for AuthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthRegistry {
    pub fn new() -> Self {
        Self {
            basic: Mutex::default(),
            jwt: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Told of every change to the set of files or URLs in use.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The `[basic_auth.NAME]` with these settings; its file is read again (a config reload
    /// reloads it), and an unreadable file is an error.
    pub fn basic(&self, name: &str, realm: &str, path: &str) -> Result<Arc<BasicAuth>, String> {
        let mut all = self.basic.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = all.get(name)
            && existing.realm == realm
            && existing.path == path
        {
            existing.reload()?;
            return Ok(Arc::clone(existing));
        }
        let created = Arc::new(BasicAuth::new(name, realm, path)?);
        all.insert(name.to_owned(), Arc::clone(&created));
        self.changed();
        Ok(created)
    }

    /// The `[jwt.NAME]` with these settings; a JWKS file is read again.
    pub fn jwt(&self, name: &str, settings: JwtSettings) -> Result<Arc<JwtAuth>, String> {
        let mut all = self.jwt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = all.get(name)
            && existing.settings == settings
        {
            if let KeySource::File(path) = &settings.source {
                existing.reload_file(path)?;
            }
            return Ok(Arc::clone(existing));
        }
        let created = Arc::new(JwtAuth::new(name, settings)?);
        all.insert(name.to_owned(), Arc::clone(&created));
        self.changed();
        Ok(created)
    }

    /// Keeps exactly those the snapshot in force uses (called when it is installed): what
    /// a config no longer names is forgotten, and what a failed reload compiled gives way to
    /// what serves.
    pub fn keep_in_use<'a>(&self, routes: impl IntoIterator<Item = &'a RouteAuth>) {
        let mut basic = HashMap::new();
        let mut jwt = HashMap::new();
        for route in routes {
            if let Some((auth, _)) = &route.basic {
                basic.insert(auth.name.clone(), Arc::clone(auth));
            }
            if let Some((auth, _)) = &route.jwt {
                jwt.insert(auth.name.clone(), Arc::clone(auth));
            }
        }
        *self.basic.lock().unwrap_or_else(|p| p.into_inner()) = basic;
        *self.jwt.lock().unwrap_or_else(|p| p.into_inner()) = jwt;
        self.changed();
    }

    /// The files to watch: htpasswd and JWKS files.
    pub fn files(&self) -> Vec<String> {
        let mut files: Vec<String> = self
            .basic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|b| b.path.clone())
            .collect();
        for jwt in self.jwt.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if let KeySource::File(path) = &jwt.settings.source {
                files.push(path.clone());
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// Reads every file again; a bad one keeps what is in force and is logged.
    pub fn reload_files(&self) {
        let basic: Vec<_> = self
            .basic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for auth in basic {
            match auth.reload() {
                Ok(true) => {
                    tracing::info!(basic_auth = %auth.name, file = %auth.path, users = auth.users().0, "htpasswd file reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(basic_auth = %auth.name, error = %e, "cannot reload the htpasswd file; the users in force stay")
                }
            }
        }
        for auth in self.jwt_auths() {
            if let KeySource::File(path) = &auth.settings.source {
                match auth.reload_file(path) {
                    Ok(keys) => {
                        tracing::info!(jwt = %auth.name, file = %path, keys, "JWKS file reloaded")
                    }
                    Err(e) => {
                        tracing::error!(jwt = %auth.name, error = %e, "cannot reload the JWKS file; the keys in force stay")
                    }
                }
            }
        }
    }

    /// Every `[jwt.NAME]` in use.
    pub fn jwt_auths(&self) -> Vec<Arc<JwtAuth>> {
        self.jwt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
