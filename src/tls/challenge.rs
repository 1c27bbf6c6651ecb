//! What answers an ACME directory's checks while an order is pending: HTTP-01 key
//! authorizations by token (served on plain-HTTP listeners) and TLS-ALPN-01 certificates by
//! name (served to handshakes offering `acme-tls/1`, RFC 8737). Empty when nothing is pending;
//! filled and emptied by the ACME client.

use super::sni::SniResolver;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
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

impl AcmeChallenges {
    /// The key authorization for an HTTP-01 request path, if its token is pending.
    pub fn http01_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.http01.load().get(token).cloned()
    }

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

    #[test]
    fn only_pending_tokens_under_the_prefix_are_answered() {
        let challenges = AcmeChallenges::default();
        assert_eq!(
            challenges.http01_answer("/.well-known/acme-challenge/abc"),
            None
        );
        challenges.add_http01("abc", "abc.thumb");
        assert_eq!(
            challenges
                .http01_answer("/.well-known/acme-challenge/abc")
                .as_deref(),
            Some("abc.thumb")
        );
        assert_eq!(challenges.http01_answer("/abc"), None);
        assert_eq!(
            challenges.http01_answer("/.well-known/acme-challenge/abd"),
            None
        );
        challenges.remove_http01("abc");
        assert_eq!(
            challenges.http01_answer("/.well-known/acme-challenge/abc"),
            None
        );
    }
}
