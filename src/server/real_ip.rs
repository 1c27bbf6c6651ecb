//! A listener's clients behind load balancers: its `trusted_proxies`, `real_ip_header` and
//! `proxy_protocol` compiled into `RealIp`, the PROXY protocol header read off a new
//! connection, and each request's client taken from what a trusted proxy says.
//!
//! One rule throughout, nginx's `set_real_ip_from`: a hop is believed about the hop before it
//! only when it is trusted. The socket's peer is believed about the PROXY header's source, and
//! that peer (the PROXY header's source when believed) about the request's X-Forwarded-For
//! or Forwarded. A listener with no trusted proxies has no `RealIp` and pays nothing.
//!
//! What a `proxy_protocol = true` listener does with what opens a connection (each case pinned
//! by the test named, in `tests/real_ip.rs` unless it says otherwise):
//!
//! | first bytes | outcome | test |
//! |---|---|---|
//! | v1 `TCP4`/`TCP6`, v2 PROXY over IPv4/IPv6 (TLVs skipped) | the source is the peer | `proxy_protocol_v1_and_v2_name_the_client` |
//! | the same before a TLS ClientHello | the same, then the handshake | `the_proxy_header_comes_before_the_tls_handshake` |
//! | v2 LOCAL, v1 `UNKNOWN`, v2 UNSPEC | the socket's address stays | `proxy_protocol_v1_and_v2_name_the_client` |
//! | a header from a socket peer outside `trusted_proxies` | read, its address not used | `from_an_untrusted_peer_nothing_changes_the_client` |
//! | no header, a malformed or over-long one | closed, reason `proxy_protocol` | `a_missing_or_malformed_proxy_header_closes_the_connection` |
//! | part of a header, then nothing | closed at `header_read_timeout`, reason `header_timeout` | the same |
//! | nothing, then the peer closes (a TCP health check) | closed, reason `client` | `no_header_and_an_early_close_are_told_apart` (here) |

use crate::config::{ListenerConfig, RealIpHeader};
use crate::connection::CloseReason;
use crate::connection::client_address::{self, IpRange, TrustedProxies};
use crate::connection::proxy_protocol::{self, Parsed, ProxyHeader, ProxyHeaderError};
use crate::headers::X_FORWARDED_FOR;
use crate::proxy::ClientInfo;
use http::HeaderMap;
use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// A listener's trusted proxies and how they name the client.
#[derive(Debug)]
pub struct RealIp {
    listener: String,
    trusted: TrustedProxies,
    header: RealIpHeader,
    /// Every connection opens with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl RealIp {
    /// `None` for a listener that trusts no proxy (the config check refuses `proxy_protocol`
    /// without trusted proxies).
    pub fn build(config: &ListenerConfig) -> Result<Option<Self>, String> {
        if config.trusted_proxies.is_empty() {
            return Ok(None);
        }
        let ranges = config
            .trusted_proxies
            .iter()
            .map(|entry| IpRange::parse(entry.get_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            listener: config.name.get_ref().clone(),
            trusted: TrustedProxies::new(ranges),
            header: *config.real_ip_header.get_ref(),
            proxy_protocol: *config.proxy_protocol.get_ref(),
        }))
    }

    /// The connection's peer once its PROXY header is read: the header's source when the
    /// socket's peer is trusted and the header names one, else the socket's peer.
    pub fn peer_after(&self, socket_peer: SocketAddr, header: &ProxyHeader) -> SocketAddr {
        match header.source() {
            Some(source) if self.trusted.contains(socket_peer.ip()) => source,
            Some(source) => {
                tracing::debug!(
                    listener = %self.listener,
                    peer = %socket_peer,
                    claimed = %source,
                    "PROXY header from an untrusted peer; its address is not used"
                );
                socket_peer
            }
            None => socket_peer,
        }
    }

    /// Whether the requests of a connection from `peer` name their client in a header that is
    /// believed: decided once per connection, so that the rest pay nothing per request.
    pub fn reads_requests_from(&self, peer: IpAddr) -> bool {
        self.header != RealIpHeader::ProxyProtocol && self.trusted.contains(peer)
    }

    /// The client of a request that came from a trusted peer: the address its header names,
    /// or the peer when it names none.
    pub fn client_of<'c>(
        &self,
        client: &'c ClientInfo,
        headers: &HeaderMap,
    ) -> Cow<'c, ClientInfo> {
        let lines = |name| headers.get_all(name).into_iter().map(|v| v.as_bytes());
        let named = match self.header {
            RealIpHeader::XForwardedFor => {
                client_address::client_from_x_forwarded_for(lines(&X_FORWARDED_FOR), &self.trusted)
            }
            RealIpHeader::Forwarded => client_address::client_from_forwarded(
                lines(&http::header::FORWARDED),
                &self.trusted,
            ),
            RealIpHeader::ProxyProtocol => None,
        };
        match named {
            Some(hop) => Cow::Owned(client.with_addr(hop.socket_addr())),
            None => Cow::Borrowed(client),
        }
    }

    /// Logs a connection closed for its PROXY header: each at debug level, and at most one a
    /// minute at warn (a scanner, or a balancer not set to send the header, makes many).
    pub fn note_refused(&self, peer: SocketAddr, error: ProxyHeaderError) {
        static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
        tracing::debug!(listener = %self.listener, %peer, %error, "connection closed: PROXY protocol");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let last = LAST_WARNING.load(Ordering::Relaxed);
        if now >= last + 60
            && LAST_WARNING
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                listener = %self.listener,
                %peer,
                %error,
                "a connection without a valid PROXY protocol header was closed (proxy_protocol = \
                 true); further ones are logged at debug level for a minute and counted in \
                 gatehouse_connections_closed_total{{reason=\"proxy_protocol\"}}"
            );
        }
    }
}

/// Why no PROXY header was read.
#[derive(Debug)]
pub enum ProxyHeaderFailure {
    /// The peer closed first (a balancer's TCP health check does).
    Closed,
    Io(io::Error),
    Refused(ProxyHeaderError),
}

impl ProxyHeaderFailure {
    pub fn close_reason(&self) -> CloseReason {
        match self {
            ProxyHeaderFailure::Closed => CloseReason::Client,
            ProxyHeaderFailure::Io(_) => CloseReason::Error,
            ProxyHeaderFailure::Refused(_) => CloseReason::ProxyProtocol,
        }
    }
}

/// The header read so far, or what to do next.
enum Peeked {
    Header(ProxyHeader, usize),
    /// A version 2 header longer than the buffer: make room and look again.
    Grow(usize),
    Closed,
    Refused(ProxyHeaderError),
}

/// Room for any version 1 line and a version 2 header with a few TLVs; a longer one (up to
/// `proxy_protocol::MAX_HEADER_LEN`) grows it.
const FIRST_LOOK: usize = 256;

/// Reads the PROXY protocol header that opens `stream`, and not a byte more: what follows (a
/// TLS ClientHello, a request) stays on the socket for whoever reads next. The bytes are
/// peeked until they hold a whole header, then taken; the caller bounds the wait.
pub async fn read_proxy_header(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyHeaderFailure> {
    let peeker = peek_handle(stream).map_err(ProxyHeaderFailure::Io)?;
    let mut buf = vec![0u8; FIRST_LOOK];
    loop {
        stream.readable().await.map_err(ProxyHeaderFailure::Io)?;
        // The peek runs inside `try_io`: when it finds only part of a header, WouldBlock
        // clears the readiness it started from, so the next wait lasts until more arrives
        // (and bytes that came during the peek still wake it).
        let peeked = stream.try_io(Interest::READABLE, || {
            let seen = peeker.peek(&mut buf)?;
            if seen == 0 {
                return Ok(Peeked::Closed);
            }
            match proxy_protocol::parse(&buf[..seen]) {
                Ok(Parsed::Complete { header, len }) => Ok(Peeked::Header(header, len)),
                Ok(Parsed::Incomplete { total: Some(total) }) if total > buf.len() => {
                    Ok(Peeked::Grow(total))
                }
                Ok(Parsed::Incomplete { .. }) => Err(io::ErrorKind::WouldBlock.into()),
                Err(error) => Ok(Peeked::Refused(error)),
            }
        });
        match peeked {
            Ok(Peeked::Header(header, len)) => {
                stream
                    .read_exact(&mut buf[..len])
                    .await
                    .map_err(ProxyHeaderFailure::Io)?;
                return Ok(header);
            }
            Ok(Peeked::Grow(total)) => buf.resize(total, 0),
            Ok(Peeked::Closed) => return Err(ProxyHeaderFailure::Closed),
            Ok(Peeked::Refused(error)) => return Err(ProxyHeaderFailure::Refused(error)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ProxyHeaderFailure::Io(e)),
        }
    }
}

/// The socket once more, as a std stream, for `peek` within `try_io` (tokio's own `peek` is
/// async and cannot run there). The duplicate shares the socket's non-blocking mode.
#[cfg(unix)]
fn peek_handle(stream: &TcpStream) -> io::Result<std::net::TcpStream> {
    use std::os::fd::AsFd;
    Ok(std::net::TcpStream::from(
        stream.as_fd().try_clone_to_owned()?,
    ))
}

#[cfg(windows)]
fn peek_handle(stream: &TcpStream) -> io::Result<std::net::TcpStream> {
    use std::os::windows::io::AsSocket;
    Ok(std::net::TcpStream::from(
        stream.as_socket().try_clone_to_owned()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    fn real_ip(keys: &str) -> Option<RealIp> {
        let text = format!("name = \"edge\"\nbind = \"127.0.0.1:0\"\n{keys}");
        let config: ListenerConfig = toml::from_str(&text).unwrap();
        RealIp::build(&config).unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_listener_trusting_nobody_has_nothing_to_do() {
        assert!(real_ip("").is_none());
        assert!(real_ip("real_ip_header = \"forwarded\"").is_none());
    }

    #[test]
    fn a_proxy_header_is_believed_from_a_trusted_socket_peer_only() {
        let real_ip = real_ip("trusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol = true").unwrap();
        let header = ProxyHeader::Proxied {
            source: addr("203.0.113.7:4000"),
            destination: addr("10.0.0.1:80"),
        };
        assert_eq!(
            real_ip.peer_after(addr("10.0.0.2:1234"), &header),
            addr("203.0.113.7:4000")
        );
        assert_eq!(
            real_ip.peer_after(addr("192.0.2.1:1234"), &header),
            addr("192.0.2.1:1234")
        );
        assert_eq!(
            real_ip.peer_after(addr("10.0.0.2:1234"), &ProxyHeader::Local),
            addr("10.0.0.2:1234")
        );
    }

    #[test]
    fn requests_are_read_only_from_trusted_peers_and_only_for_a_header() {
        let xff = real_ip("trusted_proxies = [\"10.0.0.0/8\"]").unwrap();
        assert!(xff.reads_requests_from("10.1.2.3".parse().unwrap()));
        assert!(!xff.reads_requests_from("192.0.2.1".parse().unwrap()));
        let only_proxy = real_ip(
            "trusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol = true\nreal_ip_header = \"proxy_protocol\"",
        )
        .unwrap();
        assert!(!only_proxy.reads_requests_from("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn a_request_names_its_client_or_keeps_the_peer() {
        let xff = real_ip("trusted_proxies = [\"10.0.0.0/8\"]").unwrap();
        let client = ClientInfo::new(0, addr("10.0.0.2:5555"));
        let mut headers = HeaderMap::new();
        assert!(matches!(xff.client_of(&client, &headers), Cow::Borrowed(_)));
        headers.append(
            &X_FORWARDED_FOR,
            "198.51.100.1, 203.0.113.7".parse().unwrap(),
        );
        let named = xff.client_of(&client, &headers);
        assert_eq!(named.addr, addr("203.0.113.7:0"));
        assert_eq!(named.peer, client.peer);
        assert_eq!(
            named.forwarded_for, client.forwarded_for,
            "this hop appends its peer"
        );
        let forwarded =
            real_ip("trusted_proxies = [\"10.0.0.0/8\"]\nreal_ip_header = \"forwarded\"").unwrap();
        assert!(
            matches!(forwarded.client_of(&client, &headers), Cow::Borrowed(_)),
            "X-Forwarded-For is not read when Forwarded is asked for"
        );
        headers.append(
            http::header::FORWARDED,
            "for=\"[2001:db8::1]:80\"".parse().unwrap(),
        );
        assert_eq!(
            forwarded.client_of(&client, &headers).addr,
            addr("[2001:db8::1]:80")
        );
    }

    #[tokio::test]
    async fn reads_the_header_sent_in_pieces_and_leaves_what_follows() {
        let (mut client, mut server) = pair().await;
        let reading = tokio::spawn(async move {
            let header = read_proxy_header(&mut server).await;
            let mut rest = [0u8; 3];
            server.read_exact(&mut rest).await.unwrap();
            (header.unwrap(), rest)
        });
        client.write_all(b"PROXY TCP4 192.0.2.7 ").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        client
            .write_all(b"198.51.100.1 56324 443\r\nGET")
            .await
            .unwrap();
        let (header, rest) = tokio::time::timeout(std::time::Duration::from_secs(5), reading)
            .await
            .expect("no hang")
            .unwrap();
        assert_eq!(header.source(), Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(&rest, b"GET");
    }

    #[tokio::test]
    async fn a_long_v2_header_is_read_whole() {
        let (mut client, mut server) = pair().await;
        let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
        let tlvs = vec![0u8; 1000];
        header.extend_from_slice(&u16::try_from(12 + tlvs.len()).unwrap().to_be_bytes());
        header.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1, 0, 80, 1, 187]);
        header.extend_from_slice(&tlvs);
        header.extend_from_slice(b"X");
        client.write_all(&header).await.unwrap();
        let read = read_proxy_header(&mut server).await.unwrap();
        assert_eq!(read.source(), Some("192.0.2.7:80".parse().unwrap()));
        let mut rest = [0u8; 1];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"X");
    }

    #[tokio::test]
    async fn no_header_and_an_early_close_are_told_apart() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            read_proxy_header(&mut server).await,
            Err(ProxyHeaderFailure::Refused(ProxyHeaderError::Missing))
        ));
        let (client, mut server) = pair().await;
        drop(client);
        let failure = read_proxy_header(&mut server).await.unwrap_err();
        assert_eq!(failure.close_reason(), CloseReason::Client);
    }
}
