//! What answers an ACME directory's checks while an order is pending: HTTP-01 key
//! authorizations by token (served on plain-HTTP listeners) and TLS-ALPN-01 certificates by
//! name (served to handshakes offering `acme-tls/1`, RFC 8737). Empty when nothing is pending;
//! filled and emptied by the ACME client.

use super::sni::SniResolver;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where HTTP-01 tokens are asked for (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The answers pending, shared by the ACME client and the listeners of one process.
#[derive(Clone, Default)]
pub struct AcmeChallenges {
    /// Token → key authorization.
    http01: Arc<ArcSwap<HashMap<String, String>>>,
    /// Lowercase DNS name → self-signed certificate with the acmeIdentifier extension.
    tls_alpn: Arc<ArcSwap<HashMap<String, Arc<CertifiedKey>>>>,
}

/// Where a pending HTTP-01 answer is kept in a state directory, so that every replica sharing
/// it can answer, whichever one ordered: `STATE_DIR/http-01/TOKEN`.
pub fn http01_file(state_dir: &Path, token: &str) -> PathBuf {
    state_dir.join("http-01").join(token)
}

/// A token as RFC 8555 §8.3 makes them (base64url, at least 128 bits); anything else is not
/// looked up, so a request path never names a file outside the folder.
fn plausible_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a plain-HTTP listener answers HTTP-01 from: this process's pending tokens, then the
/// answers stored in the state directories of the config's HTTP-01 ACME sections.
#[derive(Clone, Debug)]
pub struct Http01Answers {
    pub challenges: AcmeChallenges,
    pub state_dirs: Arc<[PathBuf]>,
}

impl Http01Answers {
    /// The key authorization for a request path, if it asks for a pending token.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        if !plausible_token(token) {
            return None;
        }
        if let Some(answer) = self.challenges.http01.load().get(token) {
            return Some(answer.clone());
        }
        self.state_dirs.iter().find_map(|dir| {
            let text = std::fs::read_to_string(http01_file(dir, token)).ok()?;
            let answer = text.trim();
            // A key authorization is the token, a dot and the account key's thumbprint.
            answer
                .strip_prefix(token)
                .is_some_and(|rest| rest.starts_with('.'))
                .then(|| answer.to_owned())
        })
    }
}

impl AcmeChallenges {
    pub fn add_http01(&self, token: &str, key_authorization: &str) {
        self.http01.rcu(|now| {
            let mut next = HashMap::clone(now);
            next.insert(token.to_owned(), key_authorization.to_owned());
            next
        });
    }

    pub fn remove_http01(&self, token: &str) {
        self.http01.rcu(|now| {
            let mut next = HashMap::clone(now);
            next.remove(token);
            next
        });
    }

    pub fn add_tls_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        self.tls_alpn.rcu(|now| {
            let mut next = HashMap::clone(now);
            next.insert(name.to_ascii_lowercase(), Arc::clone(&key));
            next
        });
    }

    pub fn remove_tls_alpn(&self, name: &str) {
        self.tls_alpn.rcu(|now| {
            let mut next = HashMap::clone(now);
            next.remove(&name.to_ascii_lowercase());
            next
        });
    }

    fn tls_alpn_key(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .load()
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }
}

/// The certificate choice of a listener whose certificate comes from ACME with TLS-ALPN-01:
/// a handshake offering `acme-tls/1` gets the pending challenge certificate for its name (or
/// none, and fails); every other handshake gets the listener's certificates by SNI.
#[derive(Debug)]
pub struct ChallengeResolver {
    pub certs: SniResolver,
    pub challenges: AcmeChallenges,
}

impl std::fmt::Debug for AcmeChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeChallenges")
            .field("http01", &self.http01.load().len())
            .field("tls_alpn", &self.tls_alpn.load().len())
            .finish()
    }
}

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if validating {
            return self.challenges.tls_alpn_key(hello.server_name()?);
        }
        self.certs.resolve(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

    fn answers(state_dirs: Vec<PathBuf>) -> Http01Answers {
        Http01Answers {
            challenges: AcmeChallenges::default(),
            state_dirs: state_dirs.into(),
        }
    }

    #[test]
    fn only_pending_tokens_under_the_prefix_are_answered() {
        let answers = answers(Vec::new());
        let path = format!("{HTTP01_PREFIX}{TOKEN}");
        assert_eq!(answers.answer(&path), None);
        answers
            .challenges
            .add_http01(TOKEN, &format!("{TOKEN}.thumb"));
        assert_eq!(answers.answer(&path), Some(format!("{TOKEN}.thumb")));
        assert_eq!(answers.answer(&format!("/{TOKEN}")), None);
        assert_eq!(answers.answer(&format!("{path}x")), None);
        answers.challenges.remove_http01(TOKEN);
        assert_eq!(answers.answer(&path), None);
    }

    #[test]
    fn answers_stored_by_another_replica_are_served_and_paths_stay_in_their_folder() {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-http01-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(dir.join("http-01")).unwrap();
        std::fs::write(http01_file(&dir, TOKEN), format!("{TOKEN}.thumb\n")).unwrap();
        std::fs::write(dir.join("http-01").join("other"), "other.thumb").unwrap();
        let answers = answers(vec![dir.clone()]);
        assert_eq!(
            answers.answer(&format!("{HTTP01_PREFIX}{TOKEN}")),
            Some(format!("{TOKEN}.thumb"))
        );
        // Too short to be a token, or not one at all: not looked up.
        assert_eq!(answers.answer(&format!("{HTTP01_PREFIX}other")), None);
        assert_eq!(
            answers.answer(&format!("{HTTP01_PREFIX}../http-01/{TOKEN}")),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    proptest! {
        #[test]
        fn any_path_is_answered_without_panic_and_odd_tokens_never(path in ".{0,300}") {
            let answers = answers(vec![std::env::temp_dir()]);
            let asked = format!("{HTTP01_PREFIX}{path}");
            let answer = answers.answer(&asked);
            if !plausible_token(&path) {
                prop_assert_eq!(answer, None);
            }
        }
    }
}
