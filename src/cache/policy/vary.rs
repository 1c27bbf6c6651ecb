//! Which stored variant a request selects (RFC 9111 §4.1): the names a response varies on, the
//! request's values for them in normal form, and the comparison of the two.

use super::directives::{field_members, list_members};
use http::header::{ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, VARY};
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
/// absent). A single line already in normal form is shared, not copied. The preference fields
/// (see [`is_preference_set`]) are further put in set form: members in canonical case and
/// spacing, sorted, repeats dropped.
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
                            // Written as stored (the same client again): no normal form built.
                            list_members(stored.as_bytes()).eq(field_members(request_headers, name))
                                || (is_preference_set(name)
                                    && same_preference_set(
                                        stored.as_bytes(),
                                        request_headers,
                                        name,
                                    ))
                        }
                    }
                })
        }
    }
}

fn normalized_field(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if is_preference_set(name) {
        // Canonical members of valid values are valid; the fallback is unreachable in practice.
        let set = preference_set(headers, name);
        return Some(HeaderValue::from_bytes(&set).unwrap_or_else(|_| first.clone()));
    }
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

/// Whether two requests that list the same members of this field in another order, case or
/// spacing may share a stored variant.
///
/// Only for the proactive-negotiation fields Accept, Accept-Encoding and Accept-Language
/// (RFC 9110 §12.5): each member is an alternative carrying its own weight (`q`, §12.4.2),
/// so the weights, not the order, state the preference; and their names are case-insensitive
/// (media types §8.3.1, content codings §8.4.1, language tags RFC 4647 §2.1). For any other
/// field nothing says order or case is meaningless — in Cookie, Origin, Authorization or an
/// application's own field it can be the whole difference between two users' answers — so
/// those are compared as written (whitespace around members aside, which §5.6.1 makes
/// insignificant everywhere). A parameter value other than `q` keeps its case: a quoted
/// media-type parameter may be case-sensitive.
fn is_preference_set(name: &HeaderName) -> bool {
    name == ACCEPT_LANGUAGE || name == ACCEPT_ENCODING || name == ACCEPT
}

/// A preference field's members in canonical form (see [`canonical_member`]), sorted, without
/// repeats, joined by ", ".
fn preference_set(headers: &HeaderMap, name: &HeaderName) -> Vec<u8> {
    let mut members: Vec<Vec<u8>> = field_members(headers, name)
        .map(|member| {
            let mut canonical = Vec::with_capacity(member.len());
            write_canonical(member, &mut |bytes| canonical.extend_from_slice(bytes));
            canonical
        })
        // `;` alone says nothing, and would vanish from the joined list anyway.
        .filter(|canonical| !canonical.is_empty())
        .collect();
    members.sort_unstable();
    members.dedup();
    members.join(&b", "[..])
}

/// Whether the request's preference field is, as a set, the stored one (a [`preference_set`]):
/// `preference_set(request) == stored` without building it, for lookups. Every request member
/// is put in canonical form in a buffer on the stack and must be one of the stored members,
/// and every stored member must be met. Members too long for the buffer, more stored members
/// than the bit set holds, or quotes (an unbalanced one joins members once they are joined)
/// take the long way.
fn same_preference_set(stored: &[u8], headers: &HeaderMap, name: &HeaderName) -> bool {
    let stored_members = list_members(stored).count();
    if stored_members > 64 || stored.contains(&b'"') {
        return preference_set(headers, name) == stored;
    }
    let mut met = 0u64;
    for member in field_members(headers, name) {
        let mut canonical = Scratch::default();
        write_canonical(member, &mut |bytes| canonical.push(bytes));
        let Some(canonical) = canonical.as_slice() else {
            return preference_set(headers, name) == stored;
        };
        if canonical.is_empty() {
            continue;
        }
        let Some(index) = list_members(stored).position(|s| s == canonical) else {
            return false;
        };
        met |= 1 << index;
    }
    let all = match stored_members {
        64 => u64::MAX,
        n => (1u64 << n) - 1,
    };
    met == all
}

/// A canonical member built on the stack.
struct Scratch {
    bytes: [u8; 128],
    len: usize,
    overflowed: bool,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            bytes: [0; 128],
            len: 0,
            overflowed: false,
        }
    }
}

impl Scratch {
    fn push(&mut self, bytes: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflowed = true,
        }
    }

    fn as_slice(&self) -> Option<&[u8]> {
        (!self.overflowed).then(|| &self.bytes[..self.len])
    }
}

/// Writes a member's canonical form: `Text/HTML ; Q=0.50 ;level=1` → `text/html;q=0.5;level=1`,
/// the value lower-cased, spaces around `;` and `=` dropped, parameter names lower-cased, `q`
/// written without trailing zeros; other parameter values (quoted strings may be
/// case-sensitive) and the parameters' order kept. Bytes outside ASCII are kept as they are.
fn write_canonical(member: &[u8], put: &mut impl FnMut(&[u8])) {
    let lower = |bytes: &[u8], put: &mut dyn FnMut(&[u8])| {
        for byte in bytes {
            put(&[byte.to_ascii_lowercase()]);
        }
    };
    for (i, piece) in split_outside_quotes(member, b';').enumerate() {
        let piece = piece.trim_ascii();
        if i == 0 {
            lower(piece, put);
            continue;
        }
        if piece.is_empty() {
            continue;
        }
        put(b";");
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &b""[..]),
        };
        let name = name.trim_ascii();
        lower(name, put);
        put(b"=");
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"q") {
            put(canonical_weight(value));
        } else {
            put(value);
        }
    }
}

/// `1.000` → `1`, `0.50` → `0.5`, `0.` → `0`: one weight, one spelling.
/// Anything but digits and a dot is not a weight (§12.4.2) and is kept as written: trimming
/// it could leave an edge that list splitting trims again.
fn canonical_weight(weight: &[u8]) -> &[u8] {
    if !weight.contains(&b'.') || !weight.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return weight;
    }
    let mut end = weight.len();
    while end > 0 && weight[end - 1] == b'0' {
        end -= 1;
    }
    if end > 0 && weight[end - 1] == b'.' {
        end -= 1;
    }
    &weight[..end]
}

/// Splits at `separator` except inside quoted strings (with their backslash escapes).
fn split_outside_quotes(value: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut in_quotes = false;
    let mut escaped = false;
    value.split(move |&b| {
        if escaped {
            escaped = false;
            return false;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            _ => return b == separator && !in_quotes,
        }
        false
    })
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
        let vary = names(&["x-list", "accept-language", "origin"]);
        let request = headers(&[
            ("x-list", " gzip,br "),
            ("x-list", "zstd"),
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
        let same = headers(&[("x-list", "gzip, br, zstd"), ("accept-language", " ")]);
        assert_eq!(vary_values(&vary, &request), vary_values(&vary, &same));
        // Outside the preference fields, order is significant.
        let other = headers(&[("x-list", "br, gzip, zstd"), ("accept-language", "")]);
        assert_ne!(vary_values(&vary, &request), vary_values(&vary, &other));
    }

    fn same_variant(name: &'static str, stored: &str, request: &[&str]) -> bool {
        let vary = names(&[name]);
        let stored = vary_values(&vary, &headers(&[(name, stored)])).unwrap();
        let request: Vec<_> = request.iter().map(|line| (name, *line)).collect();
        let request = headers(&request);
        let matched = vary_matches(&vary, &stored, &request);
        // Storing and looking up agree.
        assert_eq!(
            matched,
            vary_values(&vary, &request).unwrap() == stored,
            "{name}: {stored:?} / {request:?}"
        );
        matched
    }

    #[test]
    fn preference_fields_are_compared_as_sets() {
        for name in ["accept-language", "accept-encoding", "accept"] {
            assert!(same_variant(name, "en, fr", &["FR,en"]), "{name}");
            assert!(same_variant(name, "en, fr", &["fr", " EN "]), "{name}");
            assert!(same_variant(name, "en, en, fr", &["fr, en"]), "{name}");
            assert!(!same_variant(name, "en, fr", &["en"]), "{name}");
            assert!(!same_variant(name, "en", &["en, fr"]), "{name}");
            assert!(!same_variant(name, "en", &["de"]), "{name}");
        }
        assert_eq!(
            vary_values(
                &names(&["accept-language"]),
                &headers(&[("accept-language", "FR-ch, fr;q=0.9, en;q=0.8, *;q=0.5")])
            ),
            Some(vec![Some(HeaderValue::from_static(
                "*;q=0.5, en;q=0.8, fr-ch, fr;q=0.9"
            ))])
        );
    }

    #[test]
    fn weights_stay_significant_in_one_spelling() {
        let lang = "accept-language";
        assert!(same_variant(lang, "en;q=0.5, fr", &["fr, en;q=0.5"]));
        assert!(same_variant(lang, "en;q=0.5", &["EN ; Q=0.50"]));
        assert!(same_variant(lang, "en;q=1", &["en;q=1.000"]));
        assert!(same_variant(lang, "en;q=0", &["en;q=0.0"]));
        assert!(!same_variant(lang, "en;q=0.5, fr", &["en, fr;q=0.5"]));
        assert!(!same_variant(lang, "en;q=0.5", &["en;q=0.6"]));
        assert!(
            !same_variant(lang, "en;q=1", &["en"]),
            "an explicit weight is compared as written, not as its default"
        );
    }

    #[test]
    fn media_type_parameters_keep_their_values() {
        let accept = "accept";
        assert!(same_variant(
            accept,
            "text/html;level=1, application/json",
            &["Application/JSON, TEXT/html ; level=1"]
        ));
        assert!(!same_variant(
            accept,
            "text/html;foo=\"A\"",
            &["text/html;foo=\"a\""]
        ));
        assert!(same_variant(
            accept,
            "text/html;foo=\"a;b, c\"",
            &["text/html ; foo=\"a;b, c\""]
        ));
    }

    #[test]
    fn odd_lists_found_by_proptest() {
        // An unbalanced quote joins the stored members once they are joined.
        assert!(same_variant("accept", "1,#\"", &["1,#\""]));
        assert!(same_variant("accept", "#\", 1", &["1, #\""]));
        // A member that is only `;` says nothing.
        assert!(same_variant("accept", ";", &[""]));
        assert!(same_variant("accept", "en, ;", &["EN"]));
    }

    #[test]
    fn long_members_and_long_lists_are_compared_too() {
        let long = format!("x-{}", "a".repeat(200));
        let stored = format!("en, {long}");
        let reordered = format!("{}, EN", long.to_uppercase());
        assert!(same_variant("accept-language", &stored, &[&reordered]));
        assert!(!same_variant("accept-language", &stored, &[&long]));
        let many: Vec<String> = (0..70).map(|i| format!("l{i}")).collect();
        let mut backwards = many.clone();
        backwards.reverse();
        assert!(same_variant(
            "accept-language",
            &many.join(", "),
            &[&backwards.join(",")]
        ));
        assert!(!same_variant(
            "accept-language",
            &many.join(", "),
            &[&backwards[1..].join(",")]
        ));
        // Exactly 64 stored members fill the bit set.
        assert!(same_variant(
            "accept-language",
            &many[..64].join(", "),
            &[&backwards[6..].join(",")]
        ));
        assert!(!same_variant(
            "accept-language",
            &many[..64].join(", "),
            &[&backwards[7..].join(",")]
        ));
    }

    proptest::proptest! {
        /// The lookup's comparison agrees with comparing the stored forms, whatever the lists.
        #[test]
        fn lookups_agree_with_stored_forms(
            stored in "[a-cA-C ;=q0-9.,\"]{0,24}",
            request in "[a-cA-C ;=q0-9.,\"]{0,24}",
        ) {
            let name = HeaderName::from_static("accept");
            let vary = Vary::Names(vec![name.clone()]);
            let stored_request = headers(&[("accept", &stored)]);
            let request = headers(&[("accept", &request)]);
            let values = vary_values(&vary, &stored_request).unwrap();
            proptest::prop_assert_eq!(
                vary_matches(&vary, &values, &request),
                vary_values(&vary, &request).unwrap() == values
            );
            proptest::prop_assert!(vary_matches(&vary, &values, &stored_request));
        }
    }

    #[test]
    fn other_fields_keep_order_and_case() {
        assert!(!same_variant("x-list", "a, b", &["b, a"]));
        assert!(!same_variant(
            "origin",
            "https://a.example",
            &["https://A.example"]
        ));
        assert!(same_variant("x-list", "a, b", &["a,b"]));
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
