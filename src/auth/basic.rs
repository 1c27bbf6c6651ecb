//! HTTP Basic authentication against an htpasswd file (nginx's `auth_basic` and
//! `auth_basic_user_file`). Accepted credentials are remembered in a small bounded cache keyed
//! by a keyed hash (HMAC-SHA-256 under a secret drawn once per process) of the whole
//! Authorization value, so a keep-alive client does not pay bcrypt on every request; the
//! cache goes with the users it was filled from when the file changes.

use super::htpasswd::{self, Htpasswd};
use arc_swap::ArcSwap;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, header};
use std::hash::{BuildHasher as _, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Accepted credentials remembered per htpasswd file.
const CACHE_ENTRIES: usize = 1024;

/// What one check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// No Basic credentials at all.
    Missing,
    /// Credentials that are malformed or wrong.
    Denied,
}

/// The users of the file as last read, with the credentials accepted since.
struct Users {
    file: Htpasswd,
    fingerprint: u64,
    loaded_at: SystemTime,
    accepted: quick_cache::sync::Cache<[u8; 32], ()>,
}

/// One `[basic_auth.NAME]`, shared by the routes that name it and kept across reloads.
pub struct BasicAuth {
    pub name: String,
    pub realm: String,
    pub path: String,
    /// `Basic realm="..."`, built once.
    pub challenge: HeaderValue,
    users: ArcSwap<Users>,
    /// Why the last reading of the file failed, until one succeeds (for /status).
    pub last_error: Mutex<Option<String>>,
}

/// The per-process key of the caches' keyed hashes.
pub(super) fn secret() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &fallback_seed()))
    })
}

/// Used only if the system's random source fails: std's per-process hash keys.
fn fallback_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let state = std::collections::hash_map::RandomState::new();
        chunk.copy_from_slice(&state.hash_one((i, SystemTime::now())).to_le_bytes());
    }
    seed
}

/// `"` and `\` escaped for a quoted-string (RFC 9110 5.6.4); control characters dropped.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl BasicAuth {
    /// Reads the file; an unreadable one is an error (a bad line is not: it is left out).
    pub fn new(name: &str, realm: &str, path: &str) -> Result<Self, String> {
        let challenge = HeaderValue::try_from(format!("Basic realm={}", quote(realm)))
            .map_err(|_| format!("basic_auth {name}: the realm is not a valid header value"))?;
        let users = read_users(path)?;
        log_skipped(name, path, &users.file);
        Ok(Self {
            name: name.to_owned(),
            realm: realm.to_owned(),
            path: path.to_owned(),
            challenge,
            users: ArcSwap::from_pointee(users),
            last_error: Mutex::new(None),
        })
    }

    /// Reads the file again. Returns whether the users changed; on an error (an unreadable
    /// file) the users in force stay.
    pub fn reload(&self) -> Result<bool, String> {
        let read = read_users(&self.path);
        let mut last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last_error = read.as_ref().err().cloned();
        drop(last_error);
        let users = read?;
        if users.fingerprint == self.users.load().fingerprint {
            return Ok(false);
        }
        log_skipped(&self.name, &self.path, &users.file);
        self.users.store(Arc::new(users));
        Ok(true)
    }

    /// How many users can log in, and when the file was read.
    pub fn users(&self) -> (usize, SystemTime) {
        let users = self.users.load();
        (users.file.users.len(), users.loaded_at)
    }

    /// Checks a request's Authorization header.
    pub fn check(&self, headers: &HeaderMap) -> Outcome {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Outcome::Missing;
        };
        let Some(encoded) = basic_credentials(value.as_bytes()) else {
            return Outcome::Missing;
        };
        let users = self.users.load();
        let tag = ring::hmac::sign(secret(), value.as_bytes());
        let Ok(key) = <[u8; 32]>::try_from(tag.as_ref()) else {
            return Outcome::Denied;
        };
        if users.accepted.get(&key).is_some() {
            return Outcome::Allowed;
        }
        if verify(&users.file, encoded) {
            users.accepted.insert(key, ());
            Outcome::Allowed
        } else {
            Outcome::Denied
        }
    }

    /// The check, with a slow hash (bcrypt, apr1) not verified here but handed back to be
    /// verified off the serving threads (`Deferred::verify`): a wrong password must not hold
    /// a worker for bcrypt's tens of milliseconds.
    pub fn check_or_defer(&self, headers: &HeaderMap) -> Result<Outcome, Deferred> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Outcome::Missing);
        };
        let Some(encoded) = basic_credentials(value.as_bytes()) else {
            return Ok(Outcome::Missing);
        };
        let users = self.users.load_full();
        let tag = ring::hmac::sign(secret(), value.as_bytes());
        let Ok(key) = <[u8; 32]>::try_from(tag.as_ref()) else {
            return Ok(Outcome::Denied);
        };
        if users.accepted.get(&key).is_some() {
            return Ok(Outcome::Allowed);
        }
        let Some((user, password)) = decode(encoded) else {
            return Ok(Outcome::Denied);
        };
        if !users.file.is_slow(&user) {
            let allowed = users.file.verify(&user, &password);
            if allowed {
                users.accepted.insert(key, ());
            }
            return Ok(if allowed {
                Outcome::Allowed
            } else {
                Outcome::Denied
            });
        }
        Err(Deferred {
            users,
            key,
            user,
            password,
        })
    }

    /// The check without the cache (for benchmarks and tests).
    pub fn check_uncached(&self, headers: &HeaderMap) -> Outcome {
        let Some(encoded) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| basic_credentials(v.as_bytes()))
        else {
            return Outcome::Missing;
        };
        if verify(&self.users.load().file, encoded) {
            Outcome::Allowed
        } else {
            Outcome::Denied
        }
    }
}

fn read_users(path: &str) -> Result<Users, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
    Ok(Users {
        file: Htpasswd::parse(text),
        fingerprint: fingerprint(&bytes),
        loaded_at: SystemTime::now(),
        accepted: quick_cache::sync::Cache::new(CACHE_ENTRIES),
    })
}

fn log_skipped(name: &str, path: &str, file: &Htpasswd) {
    for skipped in &file.skipped {
        tracing::warn!(
            basic_auth = name,
            "{path}:{}: {}",
            skipped.line,
            skipped.message
        );
    }
}

/// The base64 part of `Basic <credentials>` (the scheme in any case), or None for another
/// scheme.
pub fn basic_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = split_scheme(value)?;
    scheme.eq_ignore_ascii_case(b"basic").then_some(rest)
}

/// `scheme SP+ rest`, `rest` trimmed.
pub fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    Some((scheme, rest.trim_ascii()))
}

/// Whether base64 `user:password` names a user of `file` with that password.
fn verify(file: &Htpasswd, encoded: &[u8]) -> bool {
    decode(encoded).is_some_and(|(user, password)| file.verify(&user, &password))
}

/// The user and password of base64 `user:password`.
fn decode(encoded: &[u8]) -> Option<(String, Vec<u8>)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_owned();
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Slow hashes verified at once at most, one per core: a flood of wrong passwords waits its
/// turn instead of taking every thread.
fn slow_checks() -> &'static tokio::sync::Semaphore {
    static SLOW: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOW.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        tokio::sync::Semaphore::new(cores)
    })
}

/// Credentials whose slow hash is still to be verified.
pub struct Deferred {
    users: Arc<Users>,
    key: [u8; 32],
    user: String,
    password: Vec<u8>,
}

impl Deferred {
    /// Verifies on the blocking pool, one check per core at a time; accepted credentials
    /// are remembered.
    pub async fn verify(self) -> bool {
        let Ok(_permit) = slow_checks().acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let allowed = self.users.file.verify(&self.user, &self.password);
            if allowed {
                self.users.accepted.insert(self.key, ());
            }
            allowed
        })
        .await
        .unwrap_or(false)
    }
}

/// Reads an htpasswd file as a reload would (for config checks).
pub fn check_file(path: &str) -> Result<Htpasswd, String> {
    htpasswd::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture() -> String {
        format!(
            "{}/tests/fixtures/auth/htpasswd",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        with(&format!("Basic {encoded}"))
    }

    #[test]
    fn credentials_are_checked_and_cached() {
        let auth = BasicAuth::new("staff", "Staff \"only\"", &fixture()).unwrap();
        assert_eq!(auth.challenge, "Basic realm=\"Staff \\\"only\\\"\"");
        assert_eq!(auth.check(&HeaderMap::new()), Outcome::Missing);
        assert_eq!(auth.check(&with("Bearer abc")), Outcome::Missing);
        assert_eq!(auth.check(&with("Basic !!!")), Outcome::Denied);
        assert_eq!(auth.check(&with("Basic bm9jb2xvbg==")), Outcome::Denied);
        for user in ["alice", "bob", "carol", "dave"] {
            let right = basic(user, &format!("{user}-pass"));
            assert_eq!(auth.check(&right), Outcome::Allowed, "{user}");
            assert_eq!(auth.check(&right), Outcome::Allowed, "{user} cached");
            assert_eq!(auth.check_uncached(&right), Outcome::Allowed, "{user}");
            assert_eq!(auth.check(&basic(user, "nope")), Outcome::Denied, "{user}");
        }
        // The scheme is case-insensitive; a wrong password for a cached user is not let in.
        let encoded = base64::engine::general_purpose::STANDARD.encode("bob:bob-pass");
        assert_eq!(
            auth.check(&with(&format!("bAsIc   {encoded}"))),
            Outcome::Allowed
        );
        assert_eq!(auth.check(&basic("frank", "frank-pass")), Outcome::Denied);
        assert_eq!(auth.users().0, 4);
    }

    #[test]
    fn a_changed_file_replaces_the_users_and_the_cache() {
        let dir = std::env::temp_dir().join(format!("gatehouse-basic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("htpasswd");
        std::fs::write(&path, "carol:{SHA}cOCGGs60OasSaxetg905pbDY2Zs=\n").unwrap();
        let auth = BasicAuth::new("t", "t", path.to_str().unwrap()).unwrap();
        let carol = basic("carol", "carol-pass");
        assert_eq!(auth.check(&carol), Outcome::Allowed);
        assert_eq!(auth.reload(), Ok(false));
        std::fs::write(&path, "bob:$apr1$s4ltB0b1$FotLhlaWoTEfb9o08FSAO1\n").unwrap();
        assert_eq!(auth.reload(), Ok(true));
        assert_eq!(auth.check(&carol), Outcome::Denied, "cache cleared");
        assert_eq!(auth.check(&basic("bob", "bob-pass")), Outcome::Allowed);
        std::fs::remove_file(&path).unwrap();
        assert!(auth.reload().is_err());
        assert_eq!(
            auth.check(&basic("bob", "bob-pass")),
            Outcome::Allowed,
            "old users kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        #[test]
        fn no_authorization_value_panics(value in prop::collection::vec(any::<u8>(), 0..120), text in "(Basic|basic|Bearer) [A-Za-z0-9+/=:]{0,80}") {
            let auth = BasicAuth::new("p", "p", &fixture()).unwrap();
            let _ = basic_credentials(&value);
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, v);
                let _ = auth.check(&headers);
            }
            if let Ok(v) = HeaderValue::from_str(&text) {
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, v);
                prop_assert_ne!(auth.check(&headers), Outcome::Allowed);
            }
        }
    }
}
