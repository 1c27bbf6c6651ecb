//! Reading a connection onto its buffer, client side and upstream side alike: reads start at
//! 8 KiB of room and double, up to 64 KiB, while they keep filling it (a large body: fewer
//! system calls per byte, as hyper's adaptive reads give), and go back to 8 KiB for each new
//! message.

use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Room read into at a time, at first.
const START: usize = 8 * 1024;

/// Room read into at a time once reads keep filling it.
const MAX: usize = 64 * 1024;

/// Less room than this left in the buffer and it grows first. A message that does not fit in
/// the room left costs a second read: at 1 KiB, a 1 KiB response with its head (about 1.25 KiB)
/// took two reads about one time in six, as the room shrank message by message.
const MIN_ROOM: usize = 4 * 1024;

/// How much room the next read gets.
#[derive(Debug)]
pub struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> Self {
        Self(START)
    }
}

impl ReadSize {
    /// Back to the first size, for a new message.
    pub fn reset(&mut self) {
        self.0 = START;
    }

    /// Ready to read a new message onto `buf`: back to the first size, and an empty buffer back
    /// to the start of its allocation when no earlier message's bytes still share it. Reads
    /// then land on the lines the last message warmed instead of walking on through the
    /// buffer onto cold ones: with hundreds of connections, each walking its own 8 KiB,
    /// every message's bytes missed the caches.
    pub fn start_message(&mut self, buf: &mut BytesMut) {
        self.reset();
        if buf.is_empty() {
            // Never allocates: it moves the start back, or leaves the buffer as it is.
            let _ = buf.try_reclaim(buf.capacity() + 1);
        }
    }

    /// A buffer for a new connection.
    pub fn buffer() -> BytesMut {
        BytesMut::with_capacity(START)
    }
}

/// Reads what `io` has onto `buf`, growing `buf` first when little room is left.
pub fn poll_read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_ROOM {
        buf.reserve(size.0);
    }
    let room = buf.capacity() - buf.len();
    // `read_buf` keeps no state between polls: a new one each time is the same future.
    let read = ready!(pin!(io.read_buf(buf)).poll(cx));
    if let Ok(n) = read
        && n == room
    {
        size.0 = (size.0 * 2).min(MAX);
    }
    Poll::Ready(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_grow_while_they_fill_the_buffer_and_start_again_after_reset() {
        let (mut near, mut far) = tokio::io::duplex(256 * 1024);
        far.write_all(&vec![7u8; 200 * 1024]).await.unwrap();
        let mut buf = BytesMut::new();
        let mut size = ReadSize::default();
        let mut reads = Vec::new();
        while buf.len() < 200 * 1024 {
            let before = buf.len();
            std::future::poll_fn(|cx| poll_read_more(&mut near, &mut buf, &mut size, cx))
                .await
                .unwrap();
            reads.push(buf.len() - before);
        }
        assert_eq!(reads[0], START, "{reads:?}");
        assert!(reads.iter().any(|&n| n > START), "{reads:?}");
        assert!(size.0 <= MAX);
        size.reset();
        assert_eq!(size.0, START);
    }

    #[test]
    fn a_new_message_starts_at_the_front_of_an_empty_buffer_that_nothing_else_shares() {
        let mut buf = ReadSize::buffer();
        let start = buf.as_ptr();
        let mut size = ReadSize::default();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(buf.len()).freeze();
        // The head still shares the allocation: the buffer stays where it is.
        size.start_message(&mut buf);
        assert_ne!(buf.as_ptr(), start);
        drop(head);
        size.start_message(&mut buf);
        assert_eq!(buf.as_ptr(), start);
        assert!(buf.capacity() >= START);
        // Bytes of a next message already read stay where they are, and in order.
        buf.extend_from_slice(b"GET /a HTTP/1.1\r\n\r\nGET");
        let first = buf.split_to(buf.len() - 3);
        drop(first);
        size.start_message(&mut buf);
        assert_eq!(&buf[..], b"GET");
    }
}
