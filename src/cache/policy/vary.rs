//! Which stored variant a request selects (RFC 9111 §4.1): the names a response varies on, the
//! request's values for them in normal form, and the comparison of the two.

use super::directives::{field_members, list_members};
use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue};

/// §4.1 Vary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vary {
    None,
    Any,
    Names(Vec<HeaderName>),
}

/// The response's Vary: field names lower-cased, combined across lines, in order and without
/// repeats; `*` anywhere → Any. Members that are not field names are skipped: no request can
/// carry such a field, so they could never tell two requests apart.
pub fn vary(response_headers: &HeaderMap) -> Vary {
    let mut names: Vec<HeaderName> = Vec::new();
    for member in field_members(response_headers, &VARY) {
        if member == b"*" {
            return Vary::Any;
        }
        if let Ok(name) = HeaderName::from_bytes(member)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    if names.is_empty() {
        Vary::None
    } else {
        Vary::Names(names)
    }
}

/// The request's values for the Vary names, normalized (§4.1: combined lines, whitespace trimmed), to store with a variant and compare later; None for Vary::Any.
///
/// Normal form: every line's list members, trimmed, empty ones dropped, joined by ", ". An
/// absent field stays `None` and is distinct from an empty one (§4.1: absent only matches
/// absent). A single line already in normal form is shared, not copied.
pub fn vary_values(vary: &Vary, request_headers: &HeaderMap) -> Option<Vec<Option<HeaderValue>>> {
    match vary {
        Vary::None => Some(Vec::new()),
        Vary::Any => None,
        Vary::Names(names) => Some(
            names
                .iter()
                .map(|name| normalized_field(request_headers, name))
                .collect(),
        ),
    }
}

/// Whether a request selects the variant stored with `stored_values` (from [`vary_values`]),
/// comparing without building the request's normal form.
pub fn vary_matches(
    vary: &Vary,
    stored_values: &[Option<HeaderValue>],
    request_headers: &HeaderMap,
) -> bool {
    match vary {
        Vary::None => true,
        Vary::Any => false,
        Vary::Names(names) => {
            names.len() == stored_values.len()
                && names.iter().zip(stored_values).all(|(name, stored)| {
                    match (stored, request_headers.contains_key(name)) {
                        (None, present) => !present,
                        (Some(_), false) => false,
                        (Some(stored), true) => {
                            list_members(stored.as_bytes()).eq(field_members(request_headers, name))
                        }
                    }
                })
        }
    }
}

fn normalized_field(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.next().is_none() && is_normal_list(first.as_bytes()) {
        return Some(first.clone());
    }
    let mut normal = Vec::new();
    for member in field_members(headers, name) {
        if !normal.is_empty() {
            normal.extend_from_slice(b", ");
        }
        normal.extend_from_slice(member);
    }
    // Members of valid values joined by ", " are valid; the fallback is unreachable in practice.
    Some(HeaderValue::from_bytes(&normal).unwrap_or_else(|_| first.clone()))
}

/// Whether a value is already its members joined by ", ".
fn is_normal_list(value: &[u8]) -> bool {
    let mut rest = value;
    for (i, member) in list_members(value).enumerate() {
        if i > 0 {
            match rest.strip_prefix(b", ") {
                Some(after) => rest = after,
                None => return false,
            }
        }
        match rest.strip_prefix(member) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::directives::fixtures::headers;

    fn names(list: &[&'static str]) -> Vary {
        Vary::Names(list.iter().map(|n| HeaderName::from_static(n)).collect())
    }

    #[test]
    fn vary_names_are_lower_cased_combined_and_deduplicated() {
        assert_eq!(vary(&HeaderMap::new()), Vary::None);
        assert_eq!(vary(&headers(&[("vary", "")])), Vary::None);
        assert_eq!(
            vary(&headers(&[
                ("vary", "Accept-Encoding, accept-encoding"),
                ("vary", " User-Agent ,"),
            ])),
            names(&["accept-encoding", "user-agent"])
        );
        assert_eq!(vary(&headers(&[("vary", "*")])), Vary::Any);
        assert_eq!(
            vary(&headers(&[("vary", "accept"), ("vary", "*")])),
            Vary::Any
        );
        assert_eq!(
            vary(&headers(&[("vary", "accept, bad name, \"x\"")])),
            names(&["accept"])
        );
    }

    #[test]
    fn vary_values_are_normalized() {
        let vary = names(&["accept-encoding", "accept-language", "origin"]);
        let request = headers(&[
            ("accept-encoding", " gzip,br "),
            ("accept-encoding", "zstd"),
            ("accept-language", ""),
        ]);
        assert_eq!(
            vary_values(&vary, &request),
            Some(vec![
                Some(HeaderValue::from_static("gzip, br, zstd")),
                Some(HeaderValue::from_static("")),
                None,
            ])
        );
        // Written differently, the same request is the same variant.
        let same = headers(&[
            ("accept-encoding", "gzip, br, zstd"),
            ("accept-language", " "),
        ]);
        assert_eq!(vary_values(&vary, &request), vary_values(&vary, &same));
        let other = headers(&[
            ("accept-encoding", "br, gzip, zstd"),
            ("accept-language", ""),
        ]);
        assert_ne!(vary_values(&vary, &request), vary_values(&vary, &other));
    }

    #[test]
    fn vary_values_without_vary_or_with_star() {
        assert_eq!(
            vary_values(&Vary::None, &headers(&[("a", "b")])),
            Some(vec![])
        );
        assert_eq!(vary_values(&Vary::Any, &HeaderMap::new()), None);
    }

    #[test]
    fn vary_matches_compares_in_normal_form() {
        let vary = names(&["accept-encoding", "origin"]);
        let stored = vary_values(&vary, &headers(&[("accept-encoding", "gzip,br")])).unwrap();
        assert!(vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip, br")])
        ));
        assert!(vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip"), ("accept-encoding", " br")])
        ));
        assert!(!vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip")])
        ));
        assert!(!vary_matches(
            &vary,
            &stored,
            &headers(&[("accept-encoding", "gzip, br"), ("origin", "https://a")])
        ));
        assert!(!vary_matches(&vary, &stored, &HeaderMap::new()));
        assert!(!vary_matches(
            &vary,
            &stored[..1],
            &headers(&[("accept-encoding", "gzip, br")])
        ));
        assert!(vary_matches(&Vary::None, &[], &headers(&[("origin", "x")])));
        assert!(!vary_matches(&Vary::Any, &[], &HeaderMap::new()));
    }
}
