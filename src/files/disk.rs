//! The filesystem side of serving files: opening a path under the root so that no resolution
//! leaves it (`openat2` with RESOLVE_BENEATH, else a check of the opened file's real path),
//! telling a regular file from a directory or anything else, and the body that streams a
//! file's ranges in bounded chunks.
//!
//! Opening and `fstat` run on the serving thread, as nginx's do: they are answered from the
//! kernel's caches for the files a site serves. Bodies up to one chunk are read there too, in
//! one `pread`; longer ones are read a chunk at a time on the blocking pool, so a slow disk
//! holds up only its own response and a 1 GiB file costs one chunk of memory.

use super::answer::Part;
use super::listing::Entry;
use super::lookup::{Filesystem, Probe};
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::task::JoinHandle;

/// A file opened for serving, with what `fstat` said of it.
pub struct OpenFile {
    pub file: File,
    pub meta: Metadata,
}

/// The served directory: its canonical path (no symbolic link in it, so that the real path
/// of anything opened under it starts with it) and the directory itself, held open to open
/// files beneath it.
pub struct Root {
    path: PathBuf,
    dir: File,
}

impl Root {
    /// Opens a configured root.
    pub fn open(root: &str) -> Result<Self, String> {
        let path = std::fs::canonicalize(root).map_err(|e| format!("files.root {root:?}: {e}"))?;
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&path)
            .map_err(|e| format!("files.root {root:?}: {e}"))?;
        Ok(Self { path, dir })
    }
}

/// Whether the kernel has `openat2` (Linux 5.6) and lets this process call it; set to false
/// at the first ENOSYS (or a filter's EPERM), after which files are opened and then checked.
static OPENAT2: AtomicBool = AtomicBool::new(true);

const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;

/// The root as the disk has it.
pub struct Disk<'a> {
    pub root: &'a Root,
    pub symlinks_outside_root: bool,
}

impl Filesystem for Disk<'_> {
    type File = OpenFile;

    fn probe(&self, relative: &str) -> Probe<OpenFile> {
        let file = match self.open(relative) {
            Ok(file) => file,
            Err(Opening::Outside) => return Probe::Refused(StatusCode::NOT_FOUND),
            Err(Opening::Failed(error)) => {
                return match error.kind() {
                    io::ErrorKind::PermissionDenied => Probe::Refused(StatusCode::FORBIDDEN),
                    _ => Probe::Missing,
                };
            }
        };
        let Ok(meta) = file.metadata() else {
            return Probe::Missing;
        };
        if meta.is_dir() {
            Probe::Dir
        } else if meta.is_file() {
            Probe::File(OpenFile { file, meta })
        } else {
            Probe::Refused(StatusCode::NOT_FOUND)
        }
    }
}

/// The most entries one listing shows: a directory with more is listed up to here and says
/// so, so that one request cannot build an answer without bound.
pub const MAX_LISTED: usize = 10_000;

enum Opening {
    /// What the path leads to lies outside the root.
    Outside,
    Failed(io::Error),
}

impl Disk<'_> {
    /// Opens `relative` under the root: where the kernel can, in one `openat2` that refuses any
    /// resolution leaving the root (RESOLVE_BENEATH); a path it refuses (an absolute symbolic
    /// link, which may still land inside) is opened as usual and checked by its real path.
    // Non-blocking: opening a FIFO someone left in the root must not wait for a writer.
    fn open(&self, relative: &str) -> Result<File, Opening> {
        if self.symlinks_outside_root {
            return self.open_plain(&self.root.path.join(relative));
        }
        if OPENAT2.load(Ordering::Relaxed) {
            match self.open_beneath(relative) {
                Ok(file) => return Ok(file),
                Err(error) => match error.raw_os_error() {
                    Some(libc::EXDEV | libc::ELOOP) => {}
                    Some(libc::ENOSYS | libc::EPERM) => OPENAT2.store(false, Ordering::Relaxed),
                    _ => return Err(Opening::Failed(error)),
                },
            }
        }
        self.open_checked(relative)
    }

    /// The entries of the directory at `relative` as a listing shows them, and whether some
    /// were left out past [`MAX_LISTED`]. Left out too: names that are not UTF-8 (no request
    /// could name them), hidden names unless `hidden`, anything but files and directories, and
    /// links that serving would refuse to follow (a link is listed as what it leads to).
    pub fn list(&self, relative: &str, hidden: bool) -> io::Result<(Vec<Entry>, bool)> {
        let dir = self.open(relative).map_err(|opening| match opening {
            Opening::Outside => io::Error::from(io::ErrorKind::NotFound),
            Opening::Failed(error) => error,
        })?;
        // Read through the descriptor just opened (and checked), not by the path again.
        let items = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        let mut entries = Vec::new();
        for item in items {
            let Ok(item) = item else { continue };
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            if !hidden && name.starts_with('.') {
                continue;
            }
            if entries.len() == MAX_LISTED {
                return Ok((entries, true));
            }
            let Ok(kind) = item.file_type() else { continue };
            let meta = if kind.is_symlink() {
                let child = if relative.is_empty() {
                    name.clone()
                } else {
                    format!("{relative}/{name}")
                };
                match self.open(&child).map(|file| file.metadata()) {
                    Ok(Ok(meta)) => meta,
                    _ => continue,
                }
            } else {
                match item.metadata() {
                    Ok(meta) => meta,
                    Err(_) => continue,
                }
            };
            if meta.is_dir() || meta.is_file() {
                entries.push(Entry {
                    name,
                    dir: meta.is_dir(),
                    len: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok((entries, false))
    }

    /// Opens `relative` following every link, then checks where it landed.
    fn open_checked(&self, relative: &str) -> Result<File, Opening> {
        let file = self.open_plain(&self.root.path.join(relative))?;
        if self.under_root(&file) {
            Ok(file)
        } else {
            Err(Opening::Outside)
        }
    }

    fn open_plain(&self, path: &Path) -> Result<File, Opening> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(Opening::Failed)
    }

    fn open_beneath(&self, relative: &str) -> io::Result<File> {
        let relative = if relative.is_empty() { "." } else { relative };
        let path = CString::new(relative).map_err(io::Error::other)?;
        // SAFETY: `open_how` is plain data; zeroed, then its fields set.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = OPEN_FLAGS as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: the directory descriptor is open for as long as `self.root` lives, the path
        // is NUL-terminated, and `how` is a valid `open_how` of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Whether the file opened is under the root: its real path, read from the descriptor
    /// itself, so that nothing can swap a link between the check and the read.
    fn under_root(&self, file: &File) -> bool {
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        match std::fs::read_link(link) {
            Ok(real) => real.starts_with(&self.root.path),
            Err(_) => false,
        }
    }
}

/// The body's bytes read now, in one piece (for bodies up to a chunk).
pub fn read_parts(file: &File, parts: &[Part], len: u64) -> io::Result<Bytes> {
    let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    for part in parts {
        match part {
            Part::Text(text) => body.extend_from_slice(text),
            Part::File(range) => {
                let start = body.len();
                let size = usize::try_from(range.end() - range.start() + 1)
                    .map_err(|_| io::Error::other("range too large"))?;
                body.resize(start + size, 0);
                file.read_exact_at(&mut body[start..], *range.start())?;
            }
        }
    }
    Ok(Bytes::from(body))
}

/// A file's ranges (and the text between them), streamed in chunks read on the blocking pool.
pub struct FileBody {
    file: Arc<File>,
    parts: VecDeque<Part>,
    chunk: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    remaining: u64,
}

/// Up to `size` bytes of `file` at `start`, read only if the page cache holds them (`preadv2`
/// with `RWF_NOWAIT`): `None` when the read would wait for the disk, when the kernel cannot
/// tell (an old kernel, a filesystem without it), or at the file's end.
fn read_cached(file: &File, start: u64, size: usize) -> Option<Bytes> {
    let offset = libc::off_t::try_from(start).ok()?;
    let mut buffer = Vec::<u8>::with_capacity(size);
    let iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: size,
    };
    // SAFETY: `iov` points at `size` bytes of `buffer`'s spare capacity, which outlives the call.
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    let read = usize::try_from(read).ok().filter(|&n| n > 0)?;
    // SAFETY: the kernel wrote `read` (at most `size`) bytes at the start of the buffer.
    unsafe { buffer.set_len(read) };
    Some(Bytes::from(buffer))
}

/// One contiguous range of a file, to be sent as it is.
pub struct FileRange {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

impl FileBody {
    /// The whole body when it is one range of the file and nothing of it has gone yet, taken
    /// out to be sent by the kernel (`sendfile`); the body is then at its end.
    pub fn take_single_range(&mut self) -> Option<FileRange> {
        match (self.reading.is_none(), self.parts.len(), self.parts.front()) {
            (true, 1, Some(Part::File(range))) => {
                let taken = FileRange {
                    file: Arc::clone(&self.file),
                    offset: *range.start(),
                    len: range.end() - range.start() + 1,
                };
                self.parts.clear();
                self.remaining = 0;
                Some(taken)
            }
            _ => None,
        }
    }

    pub fn new(file: File, parts: Vec<Part>, len: u64, chunk: usize) -> Self {
        Self {
            file: Arc::new(file),
            parts: parts.into(),
            chunk: chunk.max(1) as u64,
            reading: None,
            remaining: len,
        }
    }

    /// Starts reading the next chunk of the first part, or gives the first part's text.
    fn next_step(&mut self) -> Option<Bytes> {
        match self.parts.front_mut()? {
            Part::Text(_) => match self.parts.pop_front() {
                Some(Part::Text(text)) => Some(text),
                _ => None,
            },
            Part::File(range) => {
                let start = *range.start();
                let size = (range.end() - start + 1).min(self.chunk);
                // Pages the kernel has cached are read here at once, as a cache hit would be;
                // only a read that would wait for the disk goes to the blocking pool.
                let cached = read_cached(&self.file, start, size as usize);
                let taken = cached.as_ref().map_or(size, |bytes| bytes.len() as u64);
                if start + taken > *range.end() {
                    self.parts.pop_front();
                } else {
                    *range = start + taken..=*range.end();
                }
                if cached.is_some() {
                    return cached;
                }
                let file = Arc::clone(&self.file);
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    let mut buffer = vec![0; size as usize];
                    file.read_exact_at(&mut buffer, start)?;
                    Ok(Bytes::from(buffer))
                }));
                None
            }
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(reading) = &mut this.reading {
                let read = match Pin::new(reading).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(read)) => read,
                    Poll::Ready(Err(joined)) => Err(io::Error::other(joined)),
                };
                this.reading = None;
                return Poll::Ready(Some(read.map(|bytes| {
                    this.remaining = this.remaining.saturating_sub(bytes.len() as u64);
                    Frame::data(bytes)
                })));
            }
            if this.parts.is_empty() {
                return Poll::Ready(None);
            }
            if let Some(text) = this.next_step() {
                this.remaining = this.remaining.saturating_sub(text.len() as u64);
                return Poll::Ready(Some(Ok(Frame::data(text))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reading.is_none() && self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::canonicalize(dir).unwrap()
    }

    #[tokio::test]
    async fn a_body_streams_its_parts_in_chunks() {
        let dir = scratch("chunks");
        let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("f"), &content).unwrap();
        let parts = vec![
            Part::Text(Bytes::from_static(b"<")),
            Part::File(10..=509),
            Part::Text(Bytes::from_static(b">")),
            Part::File(990..=999),
        ];
        let file = File::open(dir.join("f")).unwrap();
        let mut body = FileBody::new(file, parts.clone(), 512, 64);
        let mut frames = 0;
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= 64);
            received.extend_from_slice(&data);
            frames += 1;
        }
        let mut expected = b"<".to_vec();
        expected.extend_from_slice(&content[10..510]);
        expected.push(b'>');
        expected.extend_from_slice(&content[990..]);
        assert_eq!(received, expected);
        assert!(frames >= 10);
        assert!(body.is_end_stream());
        let file = File::open(dir.join("f")).unwrap();
        assert_eq!(read_parts(&file, &parts, 512).unwrap(), expected);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cached_pages_are_read_at_once_and_the_end_gives_nothing() {
        let dir = scratch("cached");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 249) as u8).collect();
        std::fs::write(dir.join("f"), &content).unwrap();
        let file = File::open(dir.join("f")).unwrap();
        // Just written, so in the page cache.
        assert_eq!(read_cached(&file, 0, 4096).unwrap(), content[..4096]);
        assert_eq!(read_cached(&file, 9_000, 4096).unwrap(), content[9_000..]);
        assert_eq!(read_cached(&file, 10_000, 4096), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn probes_see_files_directories_and_links_out_of_the_root() {
        let dir = scratch("probe");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("in")).unwrap();
        std::os::unix::fs::symlink("../root/a.txt", root.join("relative-in")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("relative-out")).unwrap();
        let opened = Root::open(root.to_str().unwrap()).unwrap();
        let disk = Disk {
            root: &opened,
            symlinks_outside_root: false,
        };
        assert!(matches!(disk.probe("a.txt"), Probe::File(_)));
        assert!(matches!(disk.probe("in"), Probe::File(_)));
        assert!(matches!(disk.probe("sub"), Probe::Dir));
        assert!(matches!(disk.probe(""), Probe::Dir));
        assert!(matches!(disk.probe("nope"), Probe::Missing));
        assert!(matches!(disk.probe("a.txt/x"), Probe::Missing));
        assert!(matches!(disk.probe("relative-in"), Probe::File(_)));
        for out in ["out", "relative-out"] {
            assert!(matches!(
                disk.probe(out),
                Probe::Refused(StatusCode::NOT_FOUND)
            ));
        }
        // Where openat2 is missing, the check by real path gives the same answers.
        for (path, inside) in [
            ("a.txt", true),
            ("in", true),
            ("relative-in", true),
            ("out", false),
            ("relative-out", false),
        ] {
            assert_eq!(disk.open_checked(path).is_ok(), inside, "{path}");
        }
        let following = Disk {
            root: &opened,
            symlinks_outside_root: true,
        };
        assert!(matches!(following.probe("out"), Probe::File(_)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
