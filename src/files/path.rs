//! From a request's path to a path under the root, or a refusal: percent-decoding done once,
//! then every segment checked. Pure; nothing here touches the filesystem (symbolic links are
//! checked on the opened file, in `disk`).
//!
//! What is refused, and why:
//! - a malformed escape, or an escape of `/`, `\` or NUL: a name that decodes to a separator
//!   would reach another file than the path routed (400);
//! - control characters, a literal `\` anywhere, and bytes that are not UTF-8 once decoded
//!   (overlong encodings of `.` and `/` among them) (400);
//! - a `..` segment: the router's normal form has none left, so one here was smuggled past it
//!   (400);
//! - a segment starting with `.` (hidden files and directories, `.git`, `.env`) unless the
//!   route allows them (404);
//! - a segment with a character that some layer could fold into `.` or a separator (the
//!   fullwidth and small forms of `.`, `/` and `\`, the one-dot leader, division and fraction
//!   slashes): harmless on this filesystem, but never a name worth serving (404).
//!
//! Decoding once means `%252e%252e` is the literal name `%2e%2e`, not `..`.

use crate::route::escaped_byte;
use std::borrow::Cow;

/// Why a path is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The path is malformed or tries to leave the root: 400.
    BadPath,
    /// The path names something that is never served: 404, as if it were not there.
    Hidden,
}

/// The request path percent-decoded once (borrowed when it has no escape).
pub fn decode(path: &str) -> Result<Cow<'_, str>, Refusal> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        if bytes.iter().any(|&b| b == b'\\' || b < 0x20 || b == 0x7f) {
            return Err(Refusal::BadPath);
        }
        return Ok(Cow::Borrowed(path));
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let byte = escaped_byte(bytes, i).map_err(|_| Refusal::BadPath)?;
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    if decoded.iter().any(|&b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err(Refusal::BadPath);
    }
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| Refusal::BadPath)
}

/// Characters that look like, or fold (NFKC) into, a dot or a separator.
const CONFUSABLE: &[char] = &[
    '\u{2024}', // one dot leader
    '\u{2025}', // two dot leader
    '\u{fe52}', // small full stop
    '\u{ff0e}', // fullwidth full stop
    '\u{2215}', // division slash
    '\u{2044}', // fraction slash
    '\u{ff0f}', // fullwidth solidus
    '\u{fe68}', // small reverse solidus
    '\u{ff3c}', // fullwidth reverse solidus
    '\u{29f5}', // reverse solidus operator
];

/// A decoded path (as `decode` gives, or a `try_files` entry with `$uri` filled in) as a path
/// relative to the root: `a/b/c`, empty for the root itself. Empty and `.` segments go
/// (borrowed when there are none but the leading and trailing ones).
pub fn relative(decoded: &str, hidden: bool) -> Result<Cow<'_, str>, Refusal> {
    let trimmed = decoded.strip_prefix('/').unwrap_or(decoded);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut normal = true;
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." {
            normal = false;
            continue;
        }
        if segment == ".." || segment.contains(['\\', '\0']) {
            return Err(Refusal::BadPath);
        }
        if (!hidden && segment.starts_with('.')) || segment.contains(CONFUSABLE) {
            return Err(Refusal::Hidden);
        }
    }
    if normal || trimmed.is_empty() {
        return Ok(Cow::Borrowed(trimmed));
    }
    let mut relative = String::with_capacity(trimmed.len());
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." {
            continue;
        }
        if !relative.is_empty() {
            relative.push('/');
        }
        relative.push_str(segment);
    }
    Ok(Cow::Owned(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resolve(path: &str) -> Result<String, Refusal> {
        relative(&decode(path)?, false).map(Cow::into_owned)
    }

    #[test]
    fn ordinary_paths_resolve_under_the_root() {
        assert_eq!(resolve("/"), Ok(String::new()));
        assert_eq!(resolve("/index.html"), Ok("index.html".into()));
        assert_eq!(resolve("/a/b/c.css"), Ok("a/b/c.css".into()));
        assert_eq!(resolve("/a//b/./c"), Ok("a/b/c".into()));
        assert_eq!(resolve("/caf%C3%A9.txt"), Ok("café.txt".into()));
        assert_eq!(resolve("/with%20space"), Ok("with space".into()));
        assert_eq!(resolve("/%252e%252e/x"), Ok("%2e%2e/x".into()));
        assert_eq!(resolve("/a..b"), Ok("a..b".into()));
    }

    /// Each attempt and how it is refused.
    const TRAVERSALS: &[(&str, Refusal)] = &[
        ("/../secret", Refusal::BadPath),
        ("/a/../../secret", Refusal::BadPath),
        ("/%2e%2e/secret", Refusal::BadPath),
        ("/%2E%2E/secret", Refusal::BadPath),
        ("/.%2e/secret", Refusal::BadPath),
        ("/..%2fsecret", Refusal::BadPath),
        ("/..%2Fsecret", Refusal::BadPath),
        ("/..%5csecret", Refusal::BadPath),
        ("/..\\secret", Refusal::BadPath),
        ("/a%00.html", Refusal::BadPath),
        ("/a%0a", Refusal::BadPath),
        ("/%c0%ae%c0%ae/secret", Refusal::BadPath),
        ("/%e0%80%ae%e0%80%ae/secret", Refusal::BadPath),
        ("/%c0%af", Refusal::BadPath),
        ("/%", Refusal::BadPath),
        ("/%2", Refusal::BadPath),
        ("/%zz", Refusal::BadPath),
        ("/.env", Refusal::Hidden),
        ("/.git/config", Refusal::Hidden),
        ("/a/.hidden/b", Refusal::Hidden),
        ("/%2egit/config", Refusal::Hidden),
        ("/%ef%bc%8e%ef%bc%8e/secret", Refusal::Hidden),
        ("/\u{ff0e}\u{ff0e}/secret", Refusal::Hidden),
        ("/a%e2%88%95..%e2%88%95secret", Refusal::Hidden),
        ("/%ef%bc%8f..", Refusal::Hidden),
    ];

    #[test]
    fn traversal_attempts_are_refused() {
        for (path, refusal) in TRAVERSALS {
            assert_eq!(resolve(path), Err(*refusal), "{path}");
        }
    }

    #[test]
    fn hidden_names_are_served_when_allowed() {
        assert_eq!(relative("/.well-known/x", true).unwrap(), ".well-known/x");
        assert_eq!(relative("/docs/", false).unwrap(), "docs");
        assert_eq!(relative("//", false).unwrap(), "");
        assert_eq!(relative("/a/./b//", false).unwrap(), "a/b");
        assert_eq!(relative("/../x", true), Err(Refusal::BadPath));
    }

    proptest! {
        /// Whatever the bytes, the result is relative, has no `..` or empty segment, and
        /// never a separator other than `/`.
        #[test]
        fn no_path_leaves_the_root(path in "/[a-zA-Z0-9%./\\\\\u{ff0e}\u{2215}_-]{0,40}") {
            if let Ok(relative) = resolve(&path) {
                prop_assert!(!relative.starts_with('/'));
                prop_assert!(!relative.contains('\\') && !relative.contains('\0'));
                for segment in relative.split('/') {
                    prop_assert!(segment != ".." && segment != ".");
                    prop_assert!(!segment.starts_with('.'));
                    prop_assert!(relative.is_empty() || !segment.is_empty());
                }
                let joined = std::path::Path::new("/root").join(&relative);
                prop_assert!(joined.starts_with("/root"));
                for part in joined.components() {
                    prop_assert!(part != std::path::Component::ParentDir);
                }
            }
        }

        #[test]
        fn any_bytes_never_panic(path in any::<String>(), hidden in any::<bool>()) {
            if let Ok(decoded) = decode(&path) {
                let _ = relative(&decoded, hidden);
            }
        }
    }
}
