//! One spare write buffer per thread. A message is encoded into the buffer the thread's last
//! message went out from, which that write left in the cache, instead of into a buffer of
//! each connection's own: at a few hundred connections those are cold (and idle ones hold
//! theirs for nothing). A buffer is taken for one message's writing and given back once it is
//! all written; a message still being written when another one starts makes that one take a
//! new buffer.

use bytes::BytesMut;
use std::cell::Cell;

thread_local! {
    static SPARE: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// A spare buffer grown past this goes back to the allocator instead.
pub const SPARE_LIMIT: usize = 64 * 1024;

/// A buffer to encode a message into: the thread's spare when it has one.
pub fn take_write_buffer() -> BytesMut {
    SPARE.with(Cell::take).unwrap_or_default()
}

/// Keeps a written-out buffer as the thread's spare, from the start of its allocation.
pub fn give_back_write_buffer(mut buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    // Never allocates: it moves the start back when nothing else shares the allocation.
    let _ = buf.try_reclaim(buf.capacity() + 1);
    if buf.capacity() <= SPARE_LIMIT {
        SPARE.with(|spare| spare.set(Some(buf)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_written_out_buffer_is_the_next_one_taken_on_its_thread_from_its_start() {
        let mut buf = take_write_buffer();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let start = buf.as_ptr();
        // Written out by parts, as a short write leaves it.
        buf.advance(4);
        buf.advance(buf.len());
        give_back_write_buffer(buf);
        let again = take_write_buffer();
        assert_eq!(again.as_ptr(), start);
        assert!(again.is_empty());
        // Taken: the next one is a buffer of its own.
        assert_ne!(take_write_buffer().as_ptr(), start);
    }

    #[test]
    fn a_buffer_with_bytes_left_or_grown_past_the_limit_is_not_kept() {
        let mut unsent = take_write_buffer();
        unsent.extend_from_slice(b"not yet written");
        let allocation = unsent.as_ptr();
        give_back_write_buffer(unsent);
        let next = take_write_buffer();
        assert_ne!(next.as_ptr(), allocation);
        assert!(next.is_empty());

        let mut grown = BytesMut::with_capacity(SPARE_LIMIT + 1);
        grown.extend_from_slice(b"x");
        grown.clear();
        give_back_write_buffer(grown);
        assert!(take_write_buffer().capacity() <= SPARE_LIMIT);
    }
}
