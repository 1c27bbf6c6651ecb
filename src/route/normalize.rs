//! The path a request is routed by (and forwarded with): percent-encodings of unreserved
//! characters decoded, dot segments removed (RFC 3986 §5.2.4), repeated slashes merged (as
//! nginx's `merge_slashes on` and Envoy's `normalize_path` + `merge_slashes`). Matched as sent,
//! `/%61dmin/x`, `//admin/x` and `/x/../admin/x` would all miss a route on `/admin/` and reach
//! an upstream that reads them as `/admin/x`.
//!
//! What stays ambiguous is refused: an encoded `/` or `\` (an upstream that decodes it sees
//! another path than the one routed), an encoded NUL, a malformed escape, and a path whose dot
//! segments climb above the root.

use std::borrow::Cow;

/// Why a path cannot be routed: the request gets 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`, `%5C` or `%00`.
    AmbiguousEscape,
    /// More `..` segments than segments before them.
    AboveRoot,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::AmbiguousEscape => "an encoded '/', '\\' or NUL in the path",
            PathError::AboveRoot => "the path climbs above the root",
        }
    }
}

/// The byte the escape `%XY` starting at `bytes[i]` stands for. Not two hex digits is
/// `BadEscape`; `/`, `\` and NUL are `AmbiguousEscape`: no path may hide a separator or a NUL
/// in an escape, whatever reads it next.
pub(crate) fn escaped_byte(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    let (Some(high), Some(low)) = (
        bytes.get(i + 1).copied().and_then(hex),
        bytes.get(i + 2).copied().and_then(hex),
    ) else {
        return Err(PathError::BadEscape);
    };
    let value = high << 4 | low;
    if matches!(value, b'/' | b'\\' | 0) {
        return Err(PathError::AmbiguousEscape);
    }
    Ok(value)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` may need work: a `%`, or a `/` followed by `/` (when merging) or `.`.
/// One pass over the bytes; most paths need none.
fn needs_work(path: &[u8], merge_slashes: bool) -> bool {
    let mut previous_slash = false;
    for &b in path {
        match b {
            b'%' => return true,
            b'/' if previous_slash && merge_slashes => return true,
            b'.' if previous_slash => return true,
            _ => {}
        }
        previous_slash = b == b'/';
    }
    false
}

/// The normalized form of an origin-form `path` (without its query), borrowed when it is
/// already normal. Paths that do not start with `/` (`*` of `OPTIONS *`) are left alone.
pub fn normalize_path(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if !bytes.starts_with(b"/") || !needs_work(bytes, merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    // Decode unreserved characters; keep other escapes, their hex digits uppercased.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let value = escaped_byte(bytes, i)?;
        if is_unreserved(value) {
            decoded.push(value);
        } else {
            decoded.push(b'%');
            decoded.push(bytes[i + 1].to_ascii_uppercase());
            decoded.push(bytes[i + 2].to_ascii_uppercase());
        }
        i += 3;
    }
    // Dot segments and empty segments, over the segments after the leading `/`.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut ends_with_slash = false;
    for segment in decoded[1..].split(|&b| b == b'/') {
        ends_with_slash = false;
        match segment {
            b"." => ends_with_slash = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                ends_with_slash = true;
            }
            b"" if merge_slashes => ends_with_slash = true,
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        // Every byte is one the path had or an unreserved ASCII character decoded from it.
        out.push_str(&String::from_utf8_lossy(segment));
    }
    if ends_with_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn normal(path: &str) -> Result<String, PathError> {
        normalize_path(path, true).map(Cow::into_owned)
    }

    #[test]
    fn the_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/orders/1", Ok("/orders/1")),
            ("/admin/", Ok("/admin/")),
            ("/%61dmin/x", Ok("/admin/x")),
            ("/%41DMIN/x", Ok("/ADMIN/x")),
            ("//admin/x", Ok("/admin/x")),
            ("/admin//x///", Ok("/admin/x/")),
            ("/x/../admin/x", Ok("/admin/x")),
            ("/x/%2e%2e/admin/x", Ok("/admin/x")),
            ("/x/%2E./admin", Ok("/admin")),
            ("/./admin/./x/.", Ok("/admin/x/")),
            ("/admin/x/..", Ok("/admin/")),
            ("/a/b/../../c", Ok("/c")),
            ("/a.b/c..d/.e", Ok("/a.b/c..d/.e")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%20b", Ok("/a%20b")),
            ("/%7euser", Ok("/~user")),
            ("/..", Err(PathError::AboveRoot)),
            ("/x/../../etc/passwd", Err(PathError::AboveRoot)),
            ("/%2e%2e/admin", Err(PathError::AboveRoot)),
            ("/admin%2Fx", Err(PathError::AmbiguousEscape)),
            ("/admin%2fx", Err(PathError::AmbiguousEscape)),
            ("/admin%5Cx", Err(PathError::AmbiguousEscape)),
            ("/a%00b", Err(PathError::AmbiguousEscape)),
            ("/a%zz", Err(PathError::BadEscape)),
            ("/a%4", Err(PathError::BadEscape)),
            ("*", Ok("*")),
        ];
        for (path, want) in cases {
            let got = normal(path);
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{path}");
        }
        // Without merging, empty segments stay.
        assert_eq!(normalize_path("//a//b", false).unwrap(), "//a//b");
        assert_eq!(normalize_path("//a/./b", false).unwrap(), "//a/b");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/orders/1", "/a-b_c~d.e", "/x.y/z"] {
            assert!(
                matches!(normalize_path(path, true), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// No path panics it; what it returns is normal (normalizing again changes nothing)
        /// and never longer than what it was given.
        #[test]
        fn normalizing_is_idempotent_and_never_grows(path in "/[a-zA-Z0-9/.%~_-]{0,40}") {
            if let Ok(once) = normalize_path(&path, true) {
                prop_assert!(once.len() <= path.len().max(1));
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.contains("/./") && !once.contains("/../"));
                let twice = normalize_path(&once, true).map(Cow::into_owned);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
            }
        }

        #[test]
        fn no_bytes_panic_it(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let path = format!("/{}", String::from_utf8_lossy(&bytes));
            let _ = normalize_path(&path, true);
            let _ = normalize_path(&path, false);
        }
    }
}
