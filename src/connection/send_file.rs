//! Sending a file's bytes from the page cache straight into a plain TCP socket with
//! `sendfile(2)`, as nginx's `sendfile on` does: no copy through user space and no read on the
//! blocking pool. TLS streams cannot (their bytes must be encrypted on the way), so they say no
//! and their files are read and written as every other body.

use super::CountingStream;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, ready};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one `sendfile` call is asked for (Linux sends at most 0x7ffff000 bytes per call;
/// a non-blocking socket takes what fits in its buffer anyway).
const MOST_PER_CALL: usize = 1 << 30;

/// A client stream that may be able to send a file's bytes by itself.
pub trait SendFile {
    /// Whether `poll_send_file` works on this stream.
    fn can_send_file(&self) -> bool {
        false
    }

    /// Holds partial segments back (`TCP_CORK`) while on, so that a head and the file after it
    /// leave in full segments (nginx's `tcp_nopush`); turning it off sends what is held.
    fn cork(&self, _on: bool) {}

    /// Sends up to `len` bytes of `file` from `offset` on, as many as the socket takes now:
    /// the count sent, 0 when the file ends before `offset`.
    fn poll_send_file(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &File,
        _offset: u64,
        _len: u64,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl SendFile for TcpStream {
    fn can_send_file(&self) -> bool {
        true
    }

    fn cork(&self, on: bool) {
        let _ = socket2::SockRef::from(self).set_tcp_cork(on);
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Poll<io::Result<usize>> {
        let mut start = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        let count = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(MOST_PER_CALL);
        let (socket, source) = (self.as_raw_fd(), file.as_raw_fd());
        loop {
            ready!(self.poll_write_ready(cx))?;
            let sent = self.try_io(Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the duration of the call (borrowed
                // from their owners) and `start` is a valid, exclusively borrowed offset.
                let sent = unsafe { libc::sendfile(socket, source, &mut start, count) };
                usize::try_from(sent).map_err(|_| io::Error::last_os_error())
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }
}

impl<S> SendFile for tokio_rustls::server::TlsStream<S> {}

impl<S: SendFile> SendFile for CountingStream<S> {
    fn can_send_file(&self) -> bool {
        self.inner.can_send_file()
    }

    fn cork(&self, on: bool) {
        self.inner.cork(on);
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Poll<io::Result<usize>> {
        let polled = self.inner.poll_send_file(cx, file, offset, len);
        if let Poll::Ready(Ok(sent)) = &polled {
            super::bump64(&self.control.bytes_written, *sent as u64);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_file_range_goes_out_whole_past_a_full_socket_buffer() {
        let path = std::env::temp_dir().join(format!("gatehouse-sendfile-{}", std::process::id()));
        let content: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        File::create(&path).unwrap().write_all(&content).unwrap();
        let file = File::open(&path).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // Small buffers, so that the range cannot fit in them at once.
        socket2::SockRef::from(&server)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        // Nothing is read until the sender has met a full buffer (a sent count short of what
        // was asked) and waited for room.
        let (start, len) = (1_000u64, 3_500_000u64);
        let sender = async {
            let mut sent = 0u64;
            let mut calls = 0;
            while sent < len {
                let n = std::future::poll_fn(|cx| {
                    server.poll_send_file(cx, &file, start + sent, len - sent)
                })
                .await
                .unwrap();
                assert!(n > 0);
                sent += n as u64;
                calls += 1;
            }
            calls
        };
        let receiver = async {
            let mut received = vec![0u8; len as usize];
            client.read_exact(&mut received).await.unwrap();
            received
        };
        let (calls, received) = tokio::join!(sender, receiver);
        assert!(calls > 1, "the socket's buffer filled at least once");
        assert!(received == content[start as usize..(start + len) as usize]);
        // Past the file's end there is nothing to send.
        let past = std::future::poll_fn(|cx| server.poll_send_file(cx, &file, 4_000_000, 10))
            .await
            .unwrap();
        assert_eq!(past, 0);
        std::fs::remove_file(path).unwrap();
    }
}
