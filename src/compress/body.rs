//! A body compressed as it streams: each frame of the inner body goes through the encoder as
//! it comes, and whatever the encoder has ready goes on at once. When the inner body pauses
//! (its poll is pending) the encoder is flushed, so a slow upstream's bytes still reach the
//! client when they are sent rather than when a codec block fills; a fast one pays for no
//! flushes. Memory stays the encoder's, however long the body.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Encoder;

pub struct CompressedBody<B> {
    inner: B,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Bytes were given to the encoder since its last flush.
    unflushed: bool,
    /// The inner body's trailers, sent after the encoder's last bytes.
    trailers: Option<HeaderMap>,
    bytes_in: u64,
    bytes_out: u64,
    counters: Option<(IntCounter, IntCounter)>,
    /// Set when the encoded body is also wanted whole (a cache keeps it).
    copy: Option<Box<KeptCopy>>,
}

/// The whole encoded body, kept as it streams up to a limit, and handed over at its end.
pub struct KeptCopy {
    kept: Vec<u8>,
    limit: usize,
    done: Box<dyn FnOnce(Bytes) + Send>,
}

impl KeptCopy {
    /// Keeps at most `limit` bytes (past it the copy is given up) and gives them to `done`
    /// once the encoder has finished.
    pub fn new(limit: usize, done: Box<dyn FnOnce(Bytes) + Send>) -> Self {
        Self {
            kept: Vec::new(),
            limit,
            done,
        }
    }
}

impl<B> CompressedBody<B> {
    /// `counters` (bytes in, bytes out) are added to when the body is done or dropped.
    pub fn new(inner: B, encoder: Encoder, counters: Option<(IntCounter, IntCounter)>) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
            unflushed: false,
            trailers: None,
            bytes_in: 0,
            bytes_out: 0,
            counters,
            copy: None,
        }
    }

    /// Also keeps the encoded body whole, for `copy`'s owner.
    pub fn keep_copy(&mut self, copy: KeptCopy) {
        self.copy = Some(Box::new(copy));
    }

    fn out<E>(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        self.bytes_out += data.len() as u64;
        if let Some(copy) = &mut self.copy {
            if copy.kept.len() + data.len() > copy.limit {
                self.copy = None;
            } else {
                copy.kept.extend_from_slice(&data);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// The encoder is done: the copy, if still kept, goes to its owner.
    fn hand_over_copy(&mut self) {
        if let Some(copy) = self.copy.take() {
            let KeptCopy { kept, done, .. } = *copy;
            done(Bytes::from(kept));
        }
    }
}

impl<B> Drop for CompressedBody<B> {
    fn drop(&mut self) {
        if let Some((bytes_in, bytes_out)) = &self.counters {
            bytes_in.inc_by(self.bytes_in);
            bytes_out.inc_by(self.bytes_out);
        }
    }
}

/// What went wrong: the inner body's error, or (rarely) the encoder's.
#[derive(Debug)]
pub enum CompressError<E> {
    Inner(E),
    Encoder(std::io::Error),
}

impl<E: std::fmt::Display> std::fmt::Display for CompressError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompressError::Inner(e) => e.fmt(f),
            CompressError::Encoder(e) => write!(f, "compressing the response: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CompressError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompressError::Inner(e) => Some(e),
            CompressError::Encoder(e) => Some(e),
        }
    }
}

impl<B> Body for CompressedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = CompressError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if !this.unflushed {
                        return Poll::Pending;
                    }
                    this.unflushed = false;
                    let flushed = encoder.flush().map_err(CompressError::Encoder)?;
                    if flushed.is_empty() {
                        return Poll::Pending;
                    }
                    return this.out(flushed);
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(CompressError::Inner(e))));
                }
                Poll::Ready(Some(Ok(frame))) => Some(frame),
                Poll::Ready(None) => None,
            };
            match frame.map(Frame::into_data) {
                Some(Ok(data)) => {
                    this.bytes_in += data.len() as u64;
                    this.unflushed = true;
                    let ready = encoder.write(&data).map_err(CompressError::Encoder)?;
                    if !ready.is_empty() {
                        return this.out(ready);
                    }
                }
                Some(Err(not_data)) => {
                    // Trailers end the body: the encoder finishes before them.
                    if let Ok(trailers) = not_data.into_trailers() {
                        this.trailers = Some(trailers);
                    }
                    return this.finish();
                }
                None => return this.finish(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<B> CompressedBody<B> {
    fn finish<E>(&mut self) -> Poll<Option<Result<Frame<Bytes>, CompressError<E>>>> {
        let Some(encoder) = self.encoder.take() else {
            return Poll::Ready(None);
        };
        let rest = encoder.finish().map_err(CompressError::Encoder)?;
        if rest.is_empty() {
            self.hand_over_copy();
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let last = self.out(rest);
        self.hand_over_copy();
        last
    }
}

#[cfg(test)]
mod tests {
    use super::super::Encoding;
    use super::super::encoder::tests::decode;
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body that yields its pieces, pausing (pending) before each one marked so.
    struct Scripted {
        steps: VecDeque<Option<Bytes>>,
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.steps.pop_front() {
                Some(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(None),
            }
        }
    }

    fn poll_all(body: &mut CompressedBody<Scripted>) -> Vec<Option<Bytes>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut seen = Vec::new();
        loop {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => seen.push(frame.into_data().ok()),
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                Poll::Ready(None) => return seen,
                Poll::Pending => seen.push(None),
            }
        }
    }

    #[test]
    fn a_pause_flushes_what_came_before_it() {
        let part = Bytes::from(vec![b'a'; 1000]);
        let body = Scripted {
            steps: VecDeque::from([Some(part.clone()), None, Some(part.clone())]),
        };
        let encoder = Encoder::new(Encoding::Gzip, 1).expect("encoder");
        let mut compressed = CompressedBody::new(body, encoder, None);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // Until the pause is seen, and the frame that answered it.
        let mut before_second = Vec::new();
        while compressed.inner.steps.len() > 1 {
            if let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut compressed).poll_frame(&mut cx)
                && let Ok(data) = frame.into_data()
            {
                before_second.extend_from_slice(&data);
            }
        }
        let mut partial = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&before_second[..]),
            &mut partial,
        );
        assert_eq!(
            partial, part,
            "the first piece is decodable before the second comes"
        );
        let rest = poll_all(&mut compressed);
        let all: Vec<u8> = before_second
            .into_iter()
            .chain(rest.iter().flatten().flat_map(|b| b.to_vec()))
            .collect();
        assert_eq!(decode(Encoding::Gzip, &all), [part.clone(), part].concat());
        assert!(compressed.is_end_stream());
    }

    /// Two data frames, then trailers.
    struct WithTrailers(VecDeque<Frame<Bytes>>);

    impl Body for WithTrailers {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[test]
    fn trailers_follow_the_encoders_last_bytes() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let body = WithTrailers(VecDeque::from([
            Frame::data(Bytes::from_static(b"hello, ")),
            Frame::data(Bytes::from_static(b"world")),
            Frame::trailers(trailers.clone()),
        ]));
        let encoder = Encoder::new(Encoding::Zstd, 3).expect("encoder");
        let mut compressed = CompressedBody::new(body, encoder, None);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut data = Vec::new();
        let mut seen_trailers = None;
        loop {
            match Pin::new(&mut compressed).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    assert!(seen_trailers.is_none(), "nothing after the trailers");
                    match frame.into_data() {
                        Ok(bytes) => data.extend_from_slice(&bytes),
                        Err(frame) => seen_trailers = frame.into_trailers().ok(),
                    }
                }
                Poll::Ready(None) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(decode(Encoding::Zstd, &data), b"hello, world");
        assert_eq!(seen_trailers, Some(trailers));
        assert!(compressed.is_end_stream());
    }

    #[test]
    fn a_copy_is_the_whole_encoded_body_or_nothing() {
        let pieces: VecDeque<Option<Bytes>> = (0..50)
            .map(|i| Some(Bytes::from(format!("line {i}\n"))))
            .collect();
        let expected: Vec<u8> = pieces.iter().flatten().flat_map(|b| b.to_vec()).collect();
        for (limit, kept) in [(1 << 20, true), (10, false)] {
            let handed = std::sync::Arc::new(std::sync::Mutex::new(None));
            let slot = std::sync::Arc::clone(&handed);
            let mut compressed = CompressedBody::new(
                Scripted {
                    steps: pieces.clone(),
                },
                Encoder::new(Encoding::Gzip, 1).expect("encoder"),
                None,
            );
            compressed.keep_copy(KeptCopy::new(
                limit,
                Box::new(move |copy| *slot.lock().expect("lock") = Some(copy)),
            ));
            let sent: Vec<u8> = poll_all(&mut compressed)
                .iter()
                .flatten()
                .flat_map(|b| b.to_vec())
                .collect();
            let copy = handed.lock().expect("lock").take();
            assert_eq!(copy.is_some(), kept, "limit {limit}");
            if let Some(copy) = copy {
                assert_eq!(copy, sent);
                assert_eq!(decode(Encoding::Gzip, &copy), expected);
            }
        }
    }

    #[test]
    fn without_pauses_nothing_is_flushed_early() {
        let pieces: VecDeque<Option<Bytes>> = (0..100)
            .map(|i| Some(Bytes::from(format!("line {i} of a steady body\n"))))
            .collect();
        let expected: Vec<u8> = pieces.iter().flatten().flat_map(|b| b.to_vec()).collect();
        for encoding in Encoding::ALL {
            let encoder = Encoder::new(encoding, 3).expect("encoder");
            let body = Scripted {
                steps: pieces.clone(),
            };
            let mut compressed = CompressedBody::new(body, encoder, None);
            let seen = poll_all(&mut compressed);
            assert!(seen.iter().all(Option::is_some), "{encoding:?}: no pending");
            assert!(seen.len() <= 2, "{encoding:?}: {} frames", seen.len());
            let all: Vec<u8> = seen.iter().flatten().flat_map(|b| b.to_vec()).collect();
            assert_eq!(decode(encoding, &all), expected);
            assert_eq!(compressed.bytes_in, expected.len() as u64);
            assert_eq!(compressed.bytes_out, all.len() as u64);
        }
    }
}
