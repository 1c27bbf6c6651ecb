//! Static files (nginx's `root`, `index` and `try_files`): a route's `files` compiled, and a
//! request answered from the directory it names.
//!
//! The policy is pure and tested without a disk: `path` turns a request path into a path
//! under the root or refuses it, `lookup` applies `index` and `try_files` over a filesystem
//! trait, `answer` decides validators, conditional requests, ranges and the precompressed
//! sibling (with the cache's RFC 9110 rules). `disk` is the only file that touches the
//! filesystem; `hot` keeps small files in memory for a route that asks for it. A route's
//! `Files` is compiled with each snapshot: a reload opens the root anew and starts with an
//! empty `hot`.

mod answer;
mod disk;
mod hot;
mod listing;
mod lookup;
mod path;

pub use answer::Part;
pub use disk::{FileBody, FileRange};
pub use path::{Refusal, decode, relative};

use crate::compress::Encoding;
use crate::config::{FilesConfig, TryEntry, try_entries};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use lookup::{Filesystem, Found, Probe, Rules};
use std::time::{Instant, SystemTime};

/// A route's `files`, compiled.
pub struct Files {
    root: disk::Root,
    index: Vec<String>,
    try_files: Vec<TryEntry>,
    hidden: bool,
    listing: Option<listing::Format>,
    symlinks_outside_root: bool,
    precompressed: [Option<Encoding>; 3],
    cache_control: Option<HeaderValue>,
    max_ranges: usize,
    chunk_size: usize,
    /// Small files kept in memory, when the route asks for it.
    hot: Option<hot::HotFiles>,
    /// What of the request's path names the root: the route's prefix when it strips it
    /// (nginx's `alias`), with what replaces it.
    prefix: Option<(String, String)>,
}

/// How a route's path maps onto the root.
pub struct PathMapping<'a> {
    pub prefix: &'a str,
    pub strip_prefix: bool,
    pub replace_prefix: Option<&'a str>,
}

/// The answer to a request for files.
pub enum Served {
    /// A file (or a range, or a 304/412/416 about one).
    File {
        status: StatusCode,
        headers: HeaderMap,
        body: Body,
    },
    /// The path names a directory: redirect to it with a trailing `/`.
    AddSlash,
    /// An answer without a file: 400, 403, 404, a `try_files` `=CODE`, 500 on a read error.
    Status(StatusCode),
    /// Neither GET nor HEAD, and nothing to forward it to.
    MethodNotAllowed,
    /// `try_files` ended at `@NAME`: forward to the route's upstream.
    Upstream,
}

/// A file answer's body.
pub enum Body {
    /// Read whole already (small, or empty).
    Bytes(Bytes),
    Stream(FileBody),
}

impl Files {
    pub fn compile(config: &FilesConfig, mapping: &PathMapping<'_>) -> Result<Self, String> {
        let try_files =
            try_entries(config).map_err(|(_, key, message)| format!("{key}: {message}"))?;
        let mut precompressed = [None; 3];
        for (slot, coding) in precompressed.iter_mut().zip(config.precompressed.get_ref()) {
            *slot = match coding.as_str() {
                "br" => Some(Encoding::Brotli),
                "zstd" => Some(Encoding::Zstd),
                "gzip" => Some(Encoding::Gzip),
                other => return Err(format!("files.precompressed: unknown coding {other:?}")),
            };
        }
        let cache_control = match &config.cache_control {
            Some(value) => Some(
                HeaderValue::from_str(value.get_ref())
                    .map_err(|_| "files.cache_control: not a valid header value".to_owned())?,
            ),
            None => None,
        };
        let listing = match &config.listing {
            Some(name) => Some(
                listing::Format::parse(name.get_ref())
                    .ok_or_else(|| format!("files.listing: unknown format {:?}", name.get_ref()))?,
            ),
            None => None,
        };
        let prefix = match (mapping.strip_prefix, mapping.replace_prefix) {
            (_, Some(replacement)) => Some((mapping.prefix.to_owned(), replacement.to_owned())),
            (true, None) if mapping.prefix.len() > 1 => {
                Some((mapping.prefix.to_owned(), "/".to_owned()))
            }
            _ => None,
        };
        Ok(Self {
            root: disk::Root::open(config.root.get_ref())?,
            index: config.index.get_ref().clone(),
            try_files,
            hidden: config.hidden,
            listing,
            symlinks_outside_root: config.symlinks_outside_root,
            precompressed,
            cache_control,
            max_ranges: *config.max_ranges.get_ref() as usize,
            chunk_size: usize::try_from(config.chunk_size.0).unwrap_or(64 << 10),
            hot: (config.memory_cache.0 > 0)
                .then(|| hot::HotFiles::new(config.memory_cache.0, config.revalidate_after.0)),
            prefix,
        })
    }

    /// Whether requests the files do not answer go to the route's upstream.
    pub fn falls_back_to_upstream(&self) -> bool {
        matches!(self.try_files.last(), Some(TryEntry::Upstream(_)))
    }

    /// The path under the root that `path` (the routed path) names, before decoding.
    fn mapped<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        match &self.prefix {
            Some((prefix, replacement)) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) => {
                    let mut mapped = String::with_capacity(replacement.len() + rest.len() + 1);
                    mapped.push_str(replacement);
                    if !replacement.ends_with('/') && !rest.starts_with('/') {
                        mapped.push('/');
                    }
                    mapped.push_str(rest);
                    std::borrow::Cow::Owned(mapped)
                }
                None => std::borrow::Cow::Borrowed(path),
            },
            None => std::borrow::Cow::Borrowed(path),
        }
    }

    /// Answers `method` on `path` (the routed path, still percent-encoded) with `request`'s
    /// fields.
    pub fn serve(&self, method: &Method, path: &str, request: &HeaderMap) -> Served {
        if *method != Method::GET && *method != Method::HEAD {
            return if self.falls_back_to_upstream() {
                Served::Upstream
            } else {
                Served::MethodNotAllowed
            };
        }
        let mapped = self.mapped(path);
        let uri = match decode(&mapped) {
            Ok(uri) => uri,
            Err(refusal) => return Served::Status(refusal.into()),
        };
        let offers_precompressed = self.precompressed.iter().any(Option::is_some);
        let wanted = if offers_precompressed {
            answer::wanted_encodings(request, &self.precompressed)
        } else {
            Vec::new()
        };
        let remembered = self
            .hot
            .as_ref()
            .map(|hot| (hot, codings_key(&wanted), Instant::now()));
        if let Some((hot, key, now)) = &remembered
            && let Some(file) = hot.get(&uri, *key, *now)
        {
            return self.answer_bytes(method, request, &file.facts, &file.bytes);
        }
        let disk = disk::Disk {
            root: &self.root,
            symlinks_outside_root: self.symlinks_outside_root,
        };
        let rules = Rules {
            index: &self.index,
            try_files: &self.try_files,
            hidden: self.hidden,
            listing: self.listing.is_some(),
        };
        let (mut opened, relative) = match lookup::lookup(&disk, &rules, &uri) {
            Found::File { file, relative } => (file, relative),
            Found::AddSlash => return Served::AddSlash,
            Found::Status(status) => return Served::Status(status),
            Found::Upstream => return Served::Upstream,
            Found::Listing { relative } => return self.list(method, &disk, &relative, path),
        };
        let content_type = mime_guess::from_path(&relative).first_raw().map_or(
            HeaderValue::from_static("application/octet-stream"),
            HeaderValue::from_static,
        );
        let mut encoding = None;
        for wanted in wanted {
            let sibling = format!("{relative}{}", answer::sibling_suffix(wanted));
            if let Probe::File(file) = disk.probe(&sibling) {
                opened = file;
                encoding = Some(wanted);
                break;
            }
        }
        let facts = answer::FileFacts::new(
            opened.meta.len(),
            opened.meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            content_type,
            encoding,
        );
        if let Some((hot, key, now)) = remembered
            && facts.len <= self.chunk_size as u64
        {
            let whole = whole_file(facts.len);
            let bytes = match disk::read_parts(&opened.file, &whole, facts.len) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(file = %relative, %error, "reading a file failed");
                    return Served::Status(StatusCode::INTERNAL_SERVER_ERROR);
                }
            };
            let served = self.answer_bytes(method, request, &facts, &bytes);
            hot.insert(
                &uri,
                key,
                hot::HotFile {
                    facts,
                    bytes,
                    checked: now,
                },
            );
            return served;
        }
        let answer = self.answer(method, request, &facts);
        let body = if *method == Method::HEAD || answer.parts.is_empty() {
            Body::Bytes(Bytes::new())
        } else if answer.len <= self.chunk_size as u64 {
            match disk::read_parts(&opened.file, &answer.parts, answer.len) {
                Ok(bytes) => Body::Bytes(bytes),
                Err(error) => {
                    tracing::warn!(file = %relative, %error, "reading a file failed");
                    return Served::Status(StatusCode::INTERNAL_SERVER_ERROR);
                }
            }
        } else {
            Body::Stream(FileBody::new(
                opened.file,
                answer.parts,
                answer.len,
                self.chunk_size,
            ))
        };
        Served::File {
            status: answer.status,
            headers: answer.headers,
            body,
        }
    }

    /// The listing of the directory at `relative`, asked for at `path`.
    fn list(&self, method: &Method, disk: &disk::Disk<'_>, relative: &str, path: &str) -> Served {
        let Some(format) = self.listing else {
            return Served::Status(StatusCode::FORBIDDEN);
        };
        let (mut entries, truncated) = match disk.list(relative, self.hidden) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(directory = %relative, %error, "listing a directory failed");
                return Served::Status(match error.kind() {
                    std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                    std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                });
            }
        };
        listing::sort(&mut entries);
        let title = decode(path).unwrap_or(std::borrow::Cow::Borrowed(path));
        let body = listing::render(format, &title, &entries, truncated);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(cache_control) = &self.cache_control {
            headers.insert(http::header::CACHE_CONTROL, cache_control.clone());
        }
        Served::File {
            status: StatusCode::OK,
            headers,
            body: Body::Bytes(if *method == Method::HEAD {
                Bytes::new()
            } else {
                body
            }),
        }
    }

    /// The answer's head for the file, with its Content-Length.
    fn answer(
        &self,
        method: &Method,
        request: &HeaderMap,
        facts: &answer::FileFacts,
    ) -> answer::Answer {
        let shape = answer::Shape {
            cache_control: self.cache_control.as_ref(),
            varies: self.precompressed.iter().any(Option::is_some),
            max_ranges: self.max_ranges,
        };
        let boundary = if request.contains_key(http::header::RANGE) {
            format!("{:016x}", fastrand::u64(..))
        } else {
            String::new()
        };
        let mut answer =
            answer::answer(method, request, facts, &shape, SystemTime::now(), &boundary);
        // A 304 says nothing of the length (RFC 9110 §8.6: it would have to be the 200's).
        if answer.status != StatusCode::NOT_MODIFIED {
            answer
                .headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(answer.len));
        }
        answer
    }

    /// The answer for a file whose bytes are all in memory.
    fn answer_bytes(
        &self,
        method: &Method,
        request: &HeaderMap,
        facts: &answer::FileFacts,
        bytes: &Bytes,
    ) -> Served {
        let answer = self.answer(method, request, facts);
        let slice = |range: &std::ops::RangeInclusive<u64>| {
            let (start, end) = (*range.start() as usize, *range.end() as usize);
            bytes.slice(start.min(bytes.len())..(end + 1).min(bytes.len()))
        };
        let body = match answer.parts.as_slice() {
            _ if *method == Method::HEAD => Bytes::new(),
            [] => Bytes::new(),
            [Part::File(range)] => slice(range),
            parts => {
                let mut body = bytes::BytesMut::with_capacity(answer.len as usize);
                for part in parts {
                    match part {
                        Part::Text(text) => body.extend_from_slice(text),
                        Part::File(range) => body.extend_from_slice(&slice(range)),
                    }
                }
                body.freeze()
            }
        };
        Served::File {
            status: answer.status,
            headers: answer.headers,
            body: Body::Bytes(body),
        }
    }
}

/// The precompressed codings a request takes, in its order, two bits each.
fn codings_key(wanted: &[Encoding]) -> u8 {
    wanted
        .iter()
        .fold(0u8, |key, encoding| key << 2 | (encoding.index() as u8 + 1))
}

fn whole_file(len: u64) -> Vec<Part> {
    match len.checked_sub(1) {
        Some(last) => vec![Part::File(0..=last)],
        None => Vec::new(),
    }
}
