//! Connections handed over by an upgrade (101 Switching Protocols, e.g. WebSocket): on either
//! side, whichever HTTP/1.1 implementation read the head (hyper's or gatehouse's own codec),
//! what remains is a byte stream plus the bytes already read past the head. The proxy joins
//! the client's and the upstream's byte for byte.

use bytes::{Buf, Bytes};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// A byte stream that can be handed over: TCP, TLS over TCP, hyper's upgraded connection.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A stream some bytes of which were read already: a connection after its switch of
/// protocol (the bytes past the HTTP head), or one whose first bytes were read to tell
/// HTTP/2's preface apart. Reads give those bytes first, then the stream's.
pub struct Upgraded {
    io: Box<dyn Io>,
    read_ahead: Bytes,
}

impl Upgraded {
    pub fn new(io: Box<dyn Io>, read_ahead: Bytes) -> Self {
        Self { io, read_ahead }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead[..n]);
            this.read_ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One side of an upgrade, available once its 101 has gone out (client side) or come in
/// (upstream side).
pub enum PendingUpgrade {
    /// A connection served or driven by hyper.
    Hyper(hyper::upgrade::OnUpgrade),
    /// A connection served by gatehouse's own HTTP/1.1 loop, which sends the stream once the
    /// 101 response is written.
    Own(oneshot::Receiver<Upgraded>),
    /// Already handed over (an upstream connection read by gatehouse's own client).
    Ready(Upgraded),
}

/// Where a request read by gatehouse's own HTTP/1.1 loop carries the client side of the
/// upgrade it asked for: in its extensions, which must be `Clone + Sync`.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl UpgradeSlot {
    /// A slot for the stream the connection sends once it has written a 101.
    pub fn new(receiver: oneshot::Receiver<Upgraded>) -> Self {
        Self(Arc::new(Mutex::new(Some(receiver))))
    }

    /// The pending upgrade, once.
    pub fn take(&self) -> Option<PendingUpgrade> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(PendingUpgrade::Own)
    }
}

impl PendingUpgrade {
    pub async fn resolve(self) -> io::Result<Upgraded> {
        match self {
            PendingUpgrade::Hyper(on_upgrade) => {
                let upgraded = on_upgrade.await.map_err(io::Error::other)?;
                Ok(Upgraded::new(
                    Box::new(TokioIo::new(upgraded)),
                    Bytes::new(),
                ))
            }
            PendingUpgrade::Own(receiver) => receiver.await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the connection ended before its upgrade",
                )
            }),
            PendingUpgrade::Ready(upgraded) => Ok(upgraded),
        }
    }
}

/// Joins two upgraded connections byte for byte until both directions end.
pub async fn bridge(client: PendingUpgrade, upstream: PendingUpgrade) {
    match tokio::try_join!(client.resolve(), upstream.resolve()) {
        Ok((mut client, mut upstream)) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn read_ahead_bytes_come_before_the_stream() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut upgraded = Upgraded::new(Box::new(near), Bytes::from_static(b"early "));
        far.write_all(b"late").await.unwrap();
        drop(far);
        let mut text = String::new();
        upgraded.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "early late");
    }

    #[tokio::test]
    async fn bridge_joins_both_ways_including_read_ahead() {
        let (client_near, mut client_far) = tokio::io::duplex(64);
        let (upstream_near, mut upstream_far) = tokio::io::duplex(64);
        let client = PendingUpgrade::Ready(Upgraded::new(
            Box::new(client_near),
            Bytes::from_static(b"frame-from-client "),
        ));
        let upstream = PendingUpgrade::Ready(Upgraded::new(Box::new(upstream_near), Bytes::new()));
        let joined = tokio::spawn(bridge(client, upstream));
        client_far.write_all(b"more").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut seen = vec![0u8; b"frame-from-client more".len()];
        upstream_far.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen, b"frame-from-client more");
        upstream_far.write_all(b"reply").await.unwrap();
        drop(upstream_far);
        let mut reply = String::new();
        client_far.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "reply");
        joined.await.unwrap();
    }
}
