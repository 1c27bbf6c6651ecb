//! Small files kept in memory (`memory_cache`): what a request path came to (the file found,
//! its validators and its bytes) served for `revalidate_after` without opening anything, as
//! nginx's `open_file_cache` with the content beside it. Bounded by bytes; the least used
//! go first.

use super::answer::FileFacts;
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A file as it was found for a request path.
pub struct HotFile {
    pub facts: FileFacts,
    pub bytes: Bytes,
    /// When the disk was looked at.
    pub checked: Instant,
}

/// The request path, and the precompressed codings the request would take (their order
/// packed in two bits each): two requests with the same key find the same file.
#[derive(Clone, Hash, PartialEq, Eq)]
struct HotKey {
    codings: u8,
    uri: String,
}

/// A key to look up without making one.
#[derive(Hash)]
struct HotRef<'a> {
    codings: u8,
    uri: &'a str,
}

impl Equivalent<HotKey> for HotRef<'_> {
    fn equivalent(&self, key: &HotKey) -> bool {
        self.codings == key.codings && self.uri == key.uri
    }
}

#[derive(Clone)]
struct ByBytes;

/// What an entry holds besides its bytes, roughly.
const ENTRY_OVERHEAD: u64 = 256;

impl Weighter<HotKey, Arc<HotFile>> for ByBytes {
    fn weight(&self, key: &HotKey, value: &Arc<HotFile>) -> u64 {
        key.uri.len() as u64 + value.bytes.len() as u64 + ENTRY_OVERHEAD
    }
}

pub struct HotFiles {
    entries: Cache<HotKey, Arc<HotFile>, ByBytes>,
    revalidate_after: Duration,
}

impl HotFiles {
    pub fn new(max_bytes: u64, revalidate_after: Duration) -> Self {
        let items = (max_bytes / 4096).clamp(16, 1 << 20) as usize;
        Self {
            entries: Cache::with_weighter(items, max_bytes, ByBytes),
            revalidate_after,
        }
    }

    /// The file `uri` came to, if it was looked at recently enough.
    pub fn get(&self, uri: &str, codings: u8, now: Instant) -> Option<Arc<HotFile>> {
        let hot = self.entries.get(&HotRef { codings, uri })?;
        (now.saturating_duration_since(hot.checked) < self.revalidate_after).then_some(hot)
    }

    pub fn insert(&self, uri: &str, codings: u8, file: HotFile) {
        self.entries.insert(
            HotKey {
                codings,
                uri: uri.to_owned(),
            },
            Arc::new(file),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::SystemTime;

    fn file(content: &'static str, checked: Instant) -> HotFile {
        HotFile {
            facts: FileFacts::new(
                content.len() as u64,
                SystemTime::UNIX_EPOCH,
                HeaderValue::from_static("text/plain"),
                None,
            ),
            bytes: Bytes::from_static(content.as_bytes()),
            checked,
        }
    }

    #[test]
    fn entries_serve_until_they_are_due_for_a_look_at_the_disk() {
        let hot = HotFiles::new(1 << 20, Duration::from_secs(1));
        let start = Instant::now();
        hot.insert("/a", 0, file("a", start));
        hot.insert("/a", 1, file("a.br", start));
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(&hot.get("/a", 0, at(999)).unwrap().bytes[..], b"a");
        assert_eq!(&hot.get("/a", 1, at(0)).unwrap().bytes[..], b"a.br");
        assert!(hot.get("/a", 0, at(1000)).is_none());
        assert!(hot.get("/b", 0, at(0)).is_none());
    }

    #[test]
    fn the_bytes_held_are_bounded() {
        let hot = HotFiles::new(64 << 10, Duration::from_secs(60));
        let now = Instant::now();
        let big: &'static str = Box::leak("x".repeat(4096).into_boxed_str());
        for i in 0..100 {
            hot.insert(&format!("/{i}"), 0, file(big, now));
        }
        let held = (0..100)
            .filter(|i| hot.get(&format!("/{i}"), 0, now).is_some())
            .count();
        assert!(held > 0 && held * 4096 <= 64 << 10, "{held} held");
    }
}
