//! Which certificate answers a handshake: the one with the client's server name (SNI) among
//! its DNS names, else one whose wildcard (`*.example.com`, one label deep) covers it, else
//! the first certificate configured.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Certificate indexes by the DNS names they carry. The first certificate to claim a name
/// keeps it, so the config's order decides overlaps.
#[derive(Debug, Default)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<String, usize>,
}

impl NameIndex {
    pub fn new<'a>(names_per_cert: impl IntoIterator<Item = Vec<&'a str>>) -> Self {
        let mut index = Self::default();
        for (i, names) in names_per_cert.into_iter().enumerate() {
            for name in names {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => index.wildcard.entry(parent.to_owned()).or_insert(i),
                    None => index.exact.entry(name).or_insert(i),
                };
            }
        }
        index
    }

    /// The certificate for `server_name`; 0 (the first) when none matches or no name was sent.
    pub fn pick(&self, server_name: Option<&str>) -> usize {
        let Some(name) = server_name else {
            return 0;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

/// rustls's certificate choice for one listener.
#[derive(Debug)]
pub struct SniResolver {
    index: NameIndex,
    certs: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// `certs` pairs each certificate with its DNS names; it must not be empty.
    pub fn new(certs: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Self {
        let index = NameIndex::new(
            certs
                .iter()
                .map(|(_, names)| names.iter().map(String::as_str).collect()),
        );
        Self {
            index,
            certs: certs.into_iter().map(|(key, _)| key).collect(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certs
            .get(self.index.pick(hello.server_name()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> NameIndex {
        NameIndex::new([
            vec!["orders.example.com", "orders.internal"],
            vec!["admin.example.com"],
            vec!["*.example.com", "example.com"],
            vec!["admin.example.com", "*.example.com"],
        ])
    }

    #[test]
    fn exact_names_win_over_wildcards() {
        let index = index();
        assert_eq!(index.pick(Some("orders.example.com")), 0);
        assert_eq!(index.pick(Some("orders.internal")), 0);
        assert_eq!(index.pick(Some("admin.example.com")), 1);
        assert_eq!(index.pick(Some("example.com")), 2);
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let index = index();
        assert_eq!(index.pick(Some("shop.example.com")), 2);
        assert_eq!(
            index.pick(Some("a.b.example.com")),
            0,
            "two labels: no match"
        );
    }

    #[test]
    fn names_match_without_case_or_trailing_dot() {
        let index = index();
        assert_eq!(index.pick(Some("ADMIN.Example.COM.")), 1);
    }

    #[test]
    fn no_name_or_an_unknown_one_gets_the_first_certificate() {
        let index = index();
        assert_eq!(index.pick(None), 0);
        assert_eq!(index.pick(Some("elsewhere.org")), 0);
    }
}
