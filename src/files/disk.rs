//! The filesystem side of serving files: opening a path under the root and checking what was
//! opened (a regular file or a directory, still under the root once every symbolic link is
//! followed), and the body that streams a file's ranges in bounded chunks.
//!
//! Opening and `fstat` run on the serving thread, as nginx's do: they are answered from the
//! kernel's caches for the files a site serves. Bodies up to one chunk are read there too, in
//! one `pread`; longer ones are read a chunk at a time on the blocking pool, so a slow disk
//! holds up only its own response and a 1 GiB file costs one chunk of memory.

use super::answer::Part;
use super::lookup::{Filesystem, Probe};
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::fs::{File, Metadata, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// A file opened for serving, with what `fstat` said of it.
pub struct OpenFile {
    pub file: File,
    pub meta: Metadata,
}

/// The root as the disk has it.
pub struct Disk<'a> {
    /// Canonical (no symbolic link in it), so that the real path of anything opened under it
    /// starts with it.
    pub root: &'a Path,
    pub symlinks_outside_root: bool,
}

impl Filesystem for Disk<'_> {
    type File = OpenFile;

    fn probe(&self, relative: &str) -> Probe<OpenFile> {
        let path = self.root.join(relative);
        // Non-blocking: opening a FIFO someone left in the root must not wait for a writer.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(error) => {
                return match error.kind() {
                    io::ErrorKind::PermissionDenied => Probe::Refused(StatusCode::FORBIDDEN),
                    _ => Probe::Missing,
                };
            }
        };
        if !self.symlinks_outside_root && !self.under_root(&file) {
            return Probe::Refused(StatusCode::NOT_FOUND);
        }
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

impl Disk<'_> {
    /// Whether the file opened is under the root: its real path, read from the descriptor
    /// itself, so that nothing can swap a link between the check and the read.
    fn under_root(&self, file: &File) -> bool {
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        match std::fs::read_link(link) {
            Ok(real) => real.starts_with(self.root),
            Err(_) => false,
        }
    }
}

/// The canonical form of a configured root.
pub fn canonical_root(root: &str) -> Result<PathBuf, String> {
    let canonical = std::fs::canonicalize(root).map_err(|e| format!("files.root {root:?}: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!("files.root {root:?} is not a directory"));
    }
    Ok(canonical)
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

impl FileBody {
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
                if start + size > *range.end() {
                    self.parts.pop_front();
                } else {
                    *range = start + size..=*range.end();
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
    fn probes_see_files_directories_and_links_out_of_the_root() {
        let dir = scratch("probe");
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("in")).unwrap();
        let disk = Disk {
            root: &root,
            symlinks_outside_root: false,
        };
        assert!(matches!(disk.probe("a.txt"), Probe::File(_)));
        assert!(matches!(disk.probe("in"), Probe::File(_)));
        assert!(matches!(disk.probe("sub"), Probe::Dir));
        assert!(matches!(disk.probe(""), Probe::Dir));
        assert!(matches!(disk.probe("nope"), Probe::Missing));
        assert!(matches!(disk.probe("a.txt/x"), Probe::Missing));
        assert!(matches!(
            disk.probe("out"),
            Probe::Refused(StatusCode::NOT_FOUND)
        ));
        let following = Disk {
            root: &root,
            symlinks_outside_root: true,
        };
        assert!(matches!(following.probe("out"), Probe::File(_)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
