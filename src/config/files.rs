//! `files = { ... }` on a route: serve a directory instead of forwarding (nginx's `root`,
//! `index` and `try_files`), and the grammar of its `try_files` entries, parsed here so that
//! a bad entry is reported with its place when the config is checked.

use super::location::Located;
use super::{ByteSize, ConfigDuration, RouteConfig};
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// `files = { root = "...", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory served (nginx `root`; relative to the working directory).
    pub root: Spanned<String>,
    /// Files tried, in order, for a path that names a directory (nginx `index`).
    #[serde(default = "default_index")]
    pub index: Spanned<Vec<String>>,
    /// What to try for a request, in order (nginx `try_files`); by default the path as a
    /// file, and a directory's index when the path ends in `/`.
    #[serde(default)]
    pub try_files: Option<Spanned<Vec<String>>>,
    /// Serve files and directories whose name starts with `.` (refused with 404 by default).
    #[serde(default)]
    pub hidden: bool,
    /// List a directory that has no index file (nginx's `autoindex`): `"html"` or `"json"`
    /// (nginx's `autoindex_format`); off by default, when such a directory is 403.
    #[serde(default)]
    pub listing: Option<Spanned<String>>,
    /// Follow symbolic links that lead out of `root` (refused with 404 by default; nginx's
    /// `disable_symlinks` is the other way round).
    #[serde(default)]
    pub symlinks_outside_root: bool,
    /// Precompressed siblings to look for (`"br"`, `"zstd"`, `"gzip"`: `x.css.br`, `x.css.zst`,
    /// `x.css.gz`), preferred in this order among the codings the client takes equally
    /// (nginx `gzip_static` / `brotli_static`); none by default.
    #[serde(default = "no_codings")]
    pub precompressed: Spanned<Vec<String>>,
    /// The Cache-Control value of every file served (nginx `expires` / `add_header`).
    #[serde(default)]
    pub cache_control: Option<Spanned<String>>,
    /// The most ranges one request may ask for; a request for more gets the whole file.
    #[serde(default = "default_max_ranges")]
    pub max_ranges: Spanned<u32>,
    /// Files up to this size are read in one piece when opened; larger ones stream in chunks
    /// of this size.
    #[serde(default = "default_chunk")]
    pub chunk_size: ByteSize,
    /// Keep files up to `chunk_size` in memory, up to this much in all (nginx's
    /// `open_file_cache`, with the content); off (0) by default.
    #[serde(default = "no_memory_cache")]
    pub memory_cache: ByteSize,
    /// How long a file kept in memory is served before the disk is looked at again (nginx's
    /// `open_file_cache_valid`): a file changed on disk may be served as it was for this long.
    #[serde(default = "default_revalidate")]
    pub revalidate_after: ConfigDuration,
}

fn no_memory_cache() -> ByteSize {
    ByteSize(0)
}

fn default_revalidate() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}

fn default_index() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["index.html".into()])
}

fn no_codings() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

fn default_max_ranges() -> Spanned<u32> {
    Spanned::new(0..0, 16)
}

fn default_chunk() -> ByteSize {
    ByteSize::kib(64)
}

/// One `try_files` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryEntry {
    /// A path under the root with `$uri` standing for the request's path; `dir` when it ends
    /// in `/` (it then matches a directory, whose index is served).
    Path { pieces: Vec<PathPiece>, dir: bool },
    /// `=404`: answer with this status (last entry only).
    Status(u16),
    /// `@NAME`: forward to the route's upstream, which must be NAME (last entry only).
    Upstream(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPiece {
    Text(String),
    Uri,
}

/// Parses one entry; `last` says whether it is the final one (the only place for `=CODE` and
/// `@NAME`, as in nginx).
pub fn parse_try_entry(entry: &str, last: bool) -> Result<TryEntry, String> {
    if let Some(code) = entry.strip_prefix('=') {
        if !last {
            return Err(format!("{entry:?} may only be the last entry"));
        }
        return match code.parse::<u16>() {
            Ok(code) if (200..=599).contains(&code) => Ok(TryEntry::Status(code)),
            _ => Err(format!(
                "{entry:?}: expected a status from 200 to 599 after '='"
            )),
        };
    }
    if let Some(name) = entry.strip_prefix('@') {
        if !last {
            return Err(format!("{entry:?} may only be the last entry"));
        }
        if name.is_empty() {
            return Err("'@' needs the name of the route's upstream".into());
        }
        return Ok(TryEntry::Upstream(name.to_owned()));
    }
    let mut pieces = Vec::new();
    let mut rest = entry;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            pieces.push(PathPiece::Text(rest[..at].to_owned()));
        }
        let after = &rest[at + 1..];
        let Some(tail) = after.strip_prefix("uri") else {
            return Err(format!(
                "{entry:?}: the only variable a try_files entry may use is $uri"
            ));
        };
        pieces.push(PathPiece::Uri);
        rest = tail;
    }
    if !rest.is_empty() {
        pieces.push(PathPiece::Text(rest.to_owned()));
    }
    match pieces.first() {
        Some(PathPiece::Uri) => {}
        Some(PathPiece::Text(text)) if text.starts_with('/') => {}
        _ => {
            return Err(format!(
                "{entry:?}: an entry is a path starting with '/' or $uri, =CODE, or @NAME"
            ));
        }
    }
    let literal_escape = pieces.iter().any(|piece| match piece {
        PathPiece::Text(text) => {
            text.split('/').any(|segment| segment == "..") || text.contains(['\\', '\0'])
        }
        PathPiece::Uri => false,
    });
    if literal_escape {
        return Err(format!(
            "{entry:?}: no '..' segment, backslash or NUL in a path"
        ));
    }
    Ok(TryEntry::Path {
        dir: entry.ends_with('/'),
        pieces,
    })
}

fn located(span: Range<usize>, key: &str, message: impl Into<String>) -> Located {
    (span, format!("files.{key}"), message.into())
}

/// The route's `try_files`, parsed.
pub fn try_entries(files: &FilesConfig) -> Result<Vec<TryEntry>, Located> {
    let Some(entries) = &files.try_files else {
        return Ok(Vec::new());
    };
    let count = entries.get_ref().len();
    if count == 0 {
        return Err(located(
            entries.span(),
            "try_files",
            "give at least one entry, or leave try_files out",
        ));
    }
    entries
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_try_entry(entry, i + 1 == count)
                .map_err(|message| located(entries.span(), "try_files", message))
        })
        .collect()
}

/// Checks a route's `files`: the root is a directory, the entries parse, `@NAME` is the
/// route's upstream, the codings are known, and nothing else claims the route's answer.
pub fn check(route: &RouteConfig, errors: &mut Vec<Located>) {
    let Some(files) = &route.files else {
        return;
    };
    match std::fs::metadata(files.root.get_ref()) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => errors.push(located(
            files.root.span(),
            "root",
            format!("{:?} is not a directory", files.root.get_ref()),
        )),
        Err(e) => errors.push(located(
            files.root.span(),
            "root",
            format!("cannot read {:?}: {e}", files.root.get_ref()),
        )),
    }
    for name in files.index.get_ref() {
        if name.is_empty() || name.contains(['/', '\\', '\0']) || name == ".." || name == "." {
            errors.push(located(
                files.index.span(),
                "index",
                format!("{name:?} is not a file name"),
            ));
        }
    }
    match try_entries(files) {
        Ok(entries) => {
            if let Some(TryEntry::Upstream(name)) = entries.last() {
                let upstream = route.upstream.as_ref().map(|u| u.get_ref());
                if upstream != Some(name) {
                    let span = files.try_files.as_ref().map_or(0..0, Spanned::span);
                    errors.push(located(
                        span,
                        "try_files",
                        format!(
                            "@{name} forwards to the route's upstream: set `upstream = {name:?}` on the route"
                        ),
                    ));
                }
            }
        }
        Err(e) => errors.push(e),
    }
    for coding in files.precompressed.get_ref() {
        if !matches!(coding.as_str(), "br" | "zstd" | "gzip") {
            errors.push(located(
                files.precompressed.span(),
                "precompressed",
                format!("unknown coding {coding:?}; expected \"br\", \"zstd\" or \"gzip\""),
            ));
        }
    }
    if let Some(listing) = &files.listing
        && !matches!(listing.get_ref().as_str(), "html" | "json")
    {
        errors.push(located(
            listing.span(),
            "listing",
            format!(
                "unknown listing format {:?}; expected \"html\" or \"json\" (or leave listing out)",
                listing.get_ref()
            ),
        ));
    }
    if let Some(value) = &files.cache_control
        && http::HeaderValue::from_str(value.get_ref()).is_err()
    {
        errors.push(located(
            value.span(),
            "cache_control",
            "not a valid header value",
        ));
    }
    if *files.max_ranges.get_ref() == 0 {
        errors.push(located(
            files.max_ranges.span(),
            "max_ranges",
            "at least 1 (a request for more ranges gets the whole file)",
        ));
    }
    if files.chunk_size.0 == 0 || files.chunk_size.0 > 16 << 20 {
        errors.push(located(0..0, "chunk_size", "from 1 byte to 16MiB"));
    }
    if let Some(answer) = &route.answer {
        errors.push(located(
            answer.status.span(),
            "root",
            "a route either serves files or has a `return`, not both",
        ));
    }
    if !route.split.is_empty() || !route.pick_upstream.is_empty() {
        errors.push(located(
            files.root.span(),
            "root",
            "a route that serves files forwards only through try_files' @NAME: remove its split",
        ));
    }
    if route.cache.is_some() {
        errors.push(located(
            files.root.span(),
            "root",
            "files are served from disk with their own validators: remove the route's cache",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(entry: &str) -> TryEntry {
        parse_try_entry(entry, false).unwrap()
    }

    #[test]
    fn entries_parse_as_nginx_writes_them() {
        assert_eq!(
            path("$uri"),
            TryEntry::Path {
                pieces: vec![PathPiece::Uri],
                dir: false
            }
        );
        assert_eq!(
            path("$uri/"),
            TryEntry::Path {
                pieces: vec![PathPiece::Uri, PathPiece::Text("/".into())],
                dir: true
            }
        );
        assert_eq!(
            path("$uri.html"),
            TryEntry::Path {
                pieces: vec![PathPiece::Uri, PathPiece::Text(".html".into())],
                dir: false
            }
        );
        assert_eq!(
            path("/index.html"),
            TryEntry::Path {
                pieces: vec![PathPiece::Text("/index.html".into())],
                dir: false
            }
        );
        assert_eq!(parse_try_entry("=404", true), Ok(TryEntry::Status(404)));
        assert_eq!(
            parse_try_entry("@backend", true),
            Ok(TryEntry::Upstream("backend".into()))
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        for (entry, last) in [
            ("=404", false),
            ("@backend", false),
            ("=99", true),
            ("=abc", true),
            ("@", true),
            ("$host", false),
            ("index.html", false),
            ("/../secret", false),
            ("/a\\b", false),
            ("", false),
        ] {
            assert!(parse_try_entry(entry, last).is_err(), "{entry:?}");
        }
    }
}
