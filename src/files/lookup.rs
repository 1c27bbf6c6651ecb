//! Which file answers a request: the path as a file, a directory's index, or the `try_files`
//! entries in order (nginx's), over a [`Filesystem`] that only says what a relative path is.
//! Pure: the disk is behind the trait, so the rules are tested over a tree in memory.

use super::path::{Refusal, relative};
use crate::config::{PathPiece, TryEntry};
use http::StatusCode;

/// What a relative path is, as far as serving goes.
pub enum Probe<F> {
    /// A regular file, opened.
    File(F),
    Dir,
    Missing,
    /// There, but not to be served (a symbolic link out of the root, a device, no permission):
    /// answered with this status at once.
    Refused(StatusCode),
}

/// The filesystem under the root.
pub trait Filesystem {
    type File;
    /// `relative` is `a/b/c` (empty for the root), already checked by [`relative`].
    fn probe(&self, relative: &str) -> Probe<Self::File>;
}

/// The outcome of a lookup.
pub enum Found<F> {
    /// Serve this file, found at `relative` (its precompressed siblings sit beside it).
    File { file: F, relative: String },
    /// The path names a directory without the trailing `/`: 301 to it with one.
    AddSlash,
    /// Answer with this status.
    Status(StatusCode),
    /// `@NAME`: forward the request to the route's upstream.
    Upstream,
    /// A directory without an index file, on a route that lists directories.
    Listing { relative: String },
}

/// How a route looks files up.
pub struct Rules<'a> {
    pub index: &'a [String],
    /// Empty: nginx's default (the path as a file; a directory's index for a path ending in
    /// `/`; a redirect to add the `/` to a directory's path).
    pub try_files: &'a [TryEntry],
    pub hidden: bool,
    /// List a directory that has no index file (else 403, as nginx's `autoindex off`).
    pub listing: bool,
}

impl From<Refusal> for StatusCode {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BadPath => StatusCode::BAD_REQUEST,
            Refusal::Hidden => StatusCode::NOT_FOUND,
        }
    }
}

/// Looks up `uri`, the request's path decoded (it starts with `/`).
pub fn lookup<FS: Filesystem>(fs: &FS, rules: &Rules<'_>, uri: &str) -> Found<FS::File> {
    // The request's own path is checked first: a traversal or a hidden name is refused
    // outright, never handed to a fallback.
    let request = match relative(uri, rules.hidden) {
        Ok(request) => request,
        Err(refusal) => return Found::Status(refusal.into()),
    };
    if rules.try_files.is_empty() {
        return default_lookup(fs, rules, uri, &request);
    }
    let last = rules.try_files.len() - 1;
    for (i, entry) in rules.try_files.iter().enumerate() {
        let (pieces, dir) = match entry {
            TryEntry::Status(code) => {
                return Found::Status(StatusCode::from_u16(*code).unwrap_or(StatusCode::NOT_FOUND));
            }
            TryEntry::Upstream(_) => return Found::Upstream,
            TryEntry::Path { pieces, dir } => (pieces, *dir),
        };
        let filled = fill(pieces, uri);
        // nginx tests a directory entry without its last `/`, and what it found is then served
        // as that path: `$uri/` of `/docs/` is the directory's index, of `/docs` a redirect to
        // add the slash.
        let names_dir_path = dir && (filled == "/" || filled[..filled.len() - 1].ends_with('/'));
        // A filled-in entry is checked like a request path: `$uri.html` of `/` is the hidden
        // `.html`, which does not match.
        let Ok(candidate) = relative(&filled, rules.hidden) else {
            continue;
        };
        let found = match fs.probe(&candidate) {
            Probe::File(file) if !dir => Some(Found::File {
                file,
                relative: candidate.into_owned(),
            }),
            Probe::Dir if dir && names_dir_path => Some(index(fs, rules, &candidate)),
            Probe::Dir if dir => Some(Found::AddSlash),
            Probe::Refused(status) => Some(Found::Status(status)),
            _ => None,
        };
        if let Some(found) = found {
            return found;
        }
        if i == last {
            // nginx redirects internally to the last entry; here it names a file under the
            // root, and a missing one is 404.
            return Found::Status(StatusCode::NOT_FOUND);
        }
    }
    Found::Status(StatusCode::NOT_FOUND)
}

fn fill(pieces: &[PathPiece], uri: &str) -> String {
    let mut path = String::with_capacity(uri.len() + 16);
    for piece in pieces {
        match piece {
            PathPiece::Text(text) => path.push_str(text),
            PathPiece::Uri => path.push_str(uri),
        }
    }
    path
}

fn default_lookup<FS: Filesystem>(
    fs: &FS,
    rules: &Rules<'_>,
    uri: &str,
    request: &str,
) -> Found<FS::File> {
    match fs.probe(request) {
        // `/file.txt/` names no directory (nginx: ENOTDIR, 404).
        Probe::File(_) if uri.ends_with('/') => Found::Status(StatusCode::NOT_FOUND),
        Probe::File(file) => Found::File {
            file,
            relative: request.to_owned(),
        },
        Probe::Dir if uri.ends_with('/') => index(fs, rules, request),
        Probe::Dir => Found::AddSlash,
        Probe::Missing => Found::Status(StatusCode::NOT_FOUND),
        Probe::Refused(status) => Found::Status(status),
    }
}

/// A directory's first index file; when it has none, its listing where the route offers one,
/// else 403 (nginx's `autoindex off`).
fn index<FS: Filesystem>(fs: &FS, rules: &Rules<'_>, dir: &str) -> Found<FS::File> {
    for name in rules.index {
        let path = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        match fs.probe(&path) {
            Probe::File(file) => {
                return Found::File {
                    file,
                    relative: path,
                };
            }
            Probe::Refused(status) => return Found::Status(status),
            Probe::Dir | Probe::Missing => {}
        }
    }
    if rules.listing {
        Found::Listing {
            relative: dir.to_owned(),
        }
    } else {
        Found::Status(StatusCode::FORBIDDEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_try_entry;
    use std::collections::BTreeMap;

    /// A tree in memory: paths to files (their content) and directories.
    struct Tree(BTreeMap<&'static str, Option<&'static str>>);

    impl Filesystem for Tree {
        type File = &'static str;
        fn probe(&self, relative: &str) -> Probe<&'static str> {
            match self.0.get(relative) {
                Some(Some(content)) => Probe::File(content),
                Some(None) => Probe::Dir,
                None if relative == "escape" => Probe::Refused(StatusCode::NOT_FOUND),
                None => Probe::Missing,
            }
        }
    }

    fn tree() -> Tree {
        Tree(BTreeMap::from([
            ("", None),
            ("index.html", Some("root index")),
            ("app.js", Some("app")),
            ("about.html", Some("about page")),
            ("docs", None),
            ("docs/index.html", Some("docs index")),
            ("empty", None),
        ]))
    }

    fn entries(list: &[&str]) -> Vec<TryEntry> {
        list.iter()
            .enumerate()
            .map(|(i, e)| parse_try_entry(e, i + 1 == list.len()).unwrap())
            .collect()
    }

    fn describe(found: Found<&'static str>) -> String {
        match found {
            Found::File { file, relative } => format!("{file} ({relative})"),
            Found::AddSlash => "301".into(),
            Found::Status(status) => status.as_u16().to_string(),
            Found::Upstream => "upstream".into(),
            Found::Listing { relative } => format!("listing of {relative:?}"),
        }
    }

    fn look(try_files: &[&str], uri: &str) -> String {
        look_listing(try_files, uri, false)
    }

    fn look_listing(try_files: &[&str], uri: &str, listing: bool) -> String {
        let index = vec!["index.html".to_owned()];
        let try_files = entries(try_files);
        let rules = Rules {
            index: &index,
            try_files: &try_files,
            hidden: false,
            listing,
        };
        describe(lookup(&tree(), &rules, uri))
    }

    #[test]
    fn by_default_files_directories_and_their_index() {
        assert_eq!(look(&[], "/app.js"), "app (app.js)");
        assert_eq!(look(&[], "/"), "root index (index.html)");
        assert_eq!(look(&[], "/docs/"), "docs index (docs/index.html)");
        assert_eq!(look(&[], "/docs"), "301");
        assert_eq!(look(&[], "/empty/"), "403");
        assert_eq!(look(&[], "/missing"), "404");
        assert_eq!(look(&[], "/app.js/"), "404");
        assert_eq!(look(&[], "/escape"), "404");
        assert_eq!(look(&[], "/../x"), "400");
        assert_eq!(look(&[], "/.env"), "404");
    }

    #[test]
    fn try_files_for_a_single_page_app() {
        let spa = ["$uri", "$uri/", "/index.html"];
        assert_eq!(look(&spa, "/app.js"), "app (app.js)");
        assert_eq!(look(&spa, "/docs/"), "docs index (docs/index.html)");
        assert_eq!(look(&spa, "/docs"), "301", "as nginx: the slash is added");
        assert_eq!(look(&spa, "/orders/42"), "root index (index.html)");
        assert_eq!(look(&spa, "/empty/"), "403");
        assert_eq!(
            look(&spa, "/.git/config"),
            "404",
            "hidden is never a fallback"
        );
        assert_eq!(look(&spa, "/a/../../x"), "400");
    }

    #[test]
    fn try_files_with_variables_codes_and_an_upstream() {
        assert_eq!(
            look(&["$uri", "$uri.html", "=404"], "/about"),
            "about page (about.html)"
        );
        assert_eq!(look(&["$uri", "$uri.html", "=404"], "/nope"), "404");
        assert_eq!(look(&["$uri", "=410"], "/nope"), "410");
        assert_eq!(look(&["$uri", "@backend"], "/api/x"), "upstream");
        assert_eq!(look(&["$uri", "@backend"], "/app.js"), "app (app.js)");
        assert_eq!(look(&["$uri", "$uri.html", "@backend"], "/"), "upstream");
        assert_eq!(look(&["$uri", "/missing.html"], "/x"), "404");
    }

    #[test]
    fn a_directory_without_an_index_is_listed_only_where_the_route_says_so() {
        assert_eq!(look_listing(&[], "/empty/", true), "listing of \"empty\"");
        assert_eq!(look_listing(&[], "/", true), "root index (index.html)");
        assert_eq!(
            look_listing(&[], "/docs/", true),
            "docs index (docs/index.html)"
        );
        assert_eq!(look_listing(&[], "/empty", true), "301");
        assert_eq!(
            look_listing(&["$uri", "$uri/", "=404"], "/empty/", true),
            "listing of \"empty\""
        );
        assert_eq!(look_listing(&[], "/empty/", false), "403");
    }
}
