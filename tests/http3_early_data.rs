//! HTTP/3 early data (0-RTT, RFC 8470) end to end: a client resumes a session and sends
//! requests in its first flight. A UDP relay between client and gatehouse holds the client's
//! Handshake packets (its Finished), so the server's handshake stays incomplete for as long as
//! the test needs, and the requests are in early data for certain, not by timing.

mod common;

use bytes::{Buf, Bytes, BytesMut};
use common::pki::{Issued, Pki};
use common::{TestUpstream, WAIT, metric_sample, start_gatehouse};
use http::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::timeout;

fn config(cert: &Issued, upstream: SocketAddr, early_data: bool) -> String {
    let listener = format!("early_data = {early_data}");
    common::h3::http3_config(cert, upstream, &listener, "", "")
}

/// A client endpoint whose TLS settings remember sessions and offer early data on resumption.
fn resuming_client(pki: &Pki) -> quinn::Endpoint {
    let mut tls = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.enable_early_data = true;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type Stream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn h3_client(connection: quinn::Connection) -> SendRequest {
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    send
}

/// Sends a request with its whole body, without waiting for the answer.
async fn send(client: &mut SendRequest, method: &str, path: &str, body: &[u8]) -> Stream {
    let request = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let mut stream = client.send_request(request).await.unwrap();
    if !body.is_empty() {
        stream
            .send_data(Bytes::copy_from_slice(body))
            .await
            .unwrap();
    }
    stream.finish().await.unwrap();
    stream
}

async fn answer(stream: &mut Stream, what: &str) -> (StatusCode, Bytes) {
    let read = async {
        let response = stream
            .recv_response()
            .await
            .unwrap_or_else(|e| panic!("no answer to {what}: {e:?}"));
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        (response.status(), body.freeze())
    };
    timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("no answer in time to {what}"))
}

/// A full handshake and one GET of `/first`, then the connection closed: the endpoint keeps
/// the session the server gave it.
async fn leave_a_session(endpoint: &quinn::Endpoint, addr: SocketAddr) {
    let first = timeout(WAIT, endpoint.connect(addr, "localhost").unwrap())
        .await
        .expect("a handshake in time")
        .unwrap();
    let mut client = h3_client(first.clone()).await;
    let mut stream = send(&mut client, "GET", "/first", b"").await;
    assert_eq!(answer(&mut stream, "the first GET").await.0, StatusCode::OK);
    first.close(quinn::VarInt::from_u32(0), b"done");
}

// ---------------------------------------------------------------------------------------
// The relay.

/// Whether a QUIC datagram holds a Handshake packet (long header, type 2), walking its
/// coalesced long-header packets (RFC 9000 §17.2, §12.2).
fn carries_handshake_packet(mut datagram: &[u8]) -> bool {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let first = *bytes.first()?;
        let len = 1usize << (first >> 6);
        if bytes.len() < len {
            return None;
        }
        let mut value = u64::from(first & 0x3f);
        for byte in &bytes[1..len] {
            value = (value << 8) | u64::from(*byte);
        }
        *bytes = &bytes[len..];
        Some(value)
    }
    fn skip(bytes: &mut &[u8], n: usize) -> Option<()> {
        *bytes = bytes.get(n..)?;
        Some(())
    }
    let mut walk = || -> Option<bool> {
        while let Some(&first) = datagram.first() {
            if first & 0x80 == 0 {
                // A short-header (1-RTT) packet takes the rest of the datagram.
                return Some(false);
            }
            let kind = (first >> 4) & 0x03;
            if kind == 2 {
                return Some(true);
            }
            skip(&mut datagram, 5)?;
            let dcid = usize::from(*datagram.first()?);
            skip(&mut datagram, 1 + dcid)?;
            let scid = usize::from(*datagram.first()?);
            skip(&mut datagram, 1 + scid)?;
            if kind == 0 {
                let token = usize::try_from(varint(&mut datagram)?).ok()?;
                skip(&mut datagram, token)?;
            }
            let length = usize::try_from(varint(&mut datagram)?).ok()?;
            skip(&mut datagram, length)?;
        }
        Some(false)
    };
    walk().unwrap_or(false)
}

/// What the relay lets through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Gate {
    /// Everything, both ways.
    Open,
    /// Nothing back to the client, and none of the client's Handshake packets on.
    HoldBoth,
    /// Everything back to the client; still none of its Handshake packets on.
    HoldClientHandshake,
}

/// A UDP relay to `server` on its own loopback port.
struct Relay {
    addr: SocketAddr,
    gate: watch::Sender<Gate>,
    /// Client datagrams with a Handshake packet that were held back, forwarded or not.
    held: Arc<Mutex<usize>>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let (gate, mut watch) = watch::channel(Gate::Open);
        let held = Arc::new(Mutex::new(0));
        let held_count = Arc::clone(&held);
        tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut to_server: Vec<Vec<u8>> = Vec::new();
            let mut to_client: Vec<Vec<u8>> = Vec::new();
            let mut from_client = vec![0u8; 65536];
            let mut from_server = vec![0u8; 65536];
            loop {
                let gate = *watch.borrow_and_update();
                if gate != Gate::HoldBoth
                    && let Some(client) = client
                {
                    for datagram in to_client.drain(..) {
                        let _ = front.send_to(&datagram, client).await;
                    }
                }
                if gate == Gate::Open {
                    for datagram in to_server.drain(..) {
                        let _ = back.send(&datagram).await;
                    }
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    received = front.recv_from(&mut from_client) => {
                        let Ok((n, from)) = received else { return };
                        client = Some(from);
                        let datagram = &from_client[..n];
                        // The gate as set now, not as it was when the wait began.
                        let gate = *watch.borrow();
                        if gate != Gate::Open && carries_handshake_packet(datagram) {
                            *held_count.lock().unwrap() += 1;
                            to_server.push(datagram.to_vec());
                        } else {
                            let _ = back.send(datagram).await;
                        }
                    }
                    received = back.recv(&mut from_server) => {
                        let Ok(n) = received else { return };
                        let gate = *watch.borrow();
                        match (gate, client) {
                            (Gate::HoldBoth, _) | (_, None) => to_client.push(from_server[..n].to_vec()),
                            (_, Some(client)) => { let _ = front.send_to(&from_server[..n], client).await; }
                        }
                    }
                }
            }
        });
        Self { addr, gate, held }
    }

    fn set(&self, gate: Gate) {
        self.gate.send_replace(gate);
    }
}

// ---------------------------------------------------------------------------------------

// One thread: after the requests are written, one yield lets the client's connection driver
// (woken by the writes) send them before the test goes on.
#[tokio::test]
async fn a_safe_request_in_early_data_goes_on_marked_and_an_unsafe_one_gets_425() {
    let pki = Pki::new("early");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&cert, app.addr, true)).await;
    let relay = Relay::start(running.listener_addrs[0]).await;
    let endpoint = resuming_client(&pki);

    // A first, full handshake leaves the client a session to resume.
    leave_a_session(&endpoint, relay.addr).await;

    // The resumed connection: its requests go out with the ClientHello, before any reply
    // (held) could give the client its 1-RTT keys.
    relay.set(Gate::HoldBoth);
    let (resumed, _accepted) = endpoint
        .connect(relay.addr, "localhost")
        .unwrap()
        .into_0rtt()
        .unwrap_or_else(|_| panic!("the first connection left no session with early data"));
    let mut client = h3_client(resumed.clone()).await;
    let mut post = send(&mut client, "POST", "/orders", b"{\"dish\":\"soup\"}").await;
    let mut get = send(&mut client, "GET", "/menu", b"").await;
    // Sent as 0-RTT packets (the client has no other keys yet) once its driver has run.
    tokio::task::yield_now().await;
    // The server's replies reach the client, but not the client's Finished the server.
    relay.set(Gate::HoldClientHandshake);

    let (status, body) = answer(&mut post, "the POST in early data").await;
    assert_eq!(status, StatusCode::TOO_EARLY, "{body:?}");
    let (status, body) = answer(&mut get, "the GET in early data").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"app");
    let seen = app.received();
    assert_eq!(seen.len(), 2, "the POST in early data went nowhere");
    assert_eq!(seen[0].uri.path(), "/first");
    assert_eq!(seen[0].headers.get("early-data"), None);
    assert_eq!(seen[1].uri.path(), "/menu");
    assert_eq!(
        seen[1].headers.get("early-data").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "a request forwarded from early data is marked (RFC 8470 §5.1)"
    );

    // Once the handshake completes, the POST sent again goes through, unmarked.
    relay.set(Gate::Open);
    let mut post = send(&mut client, "POST", "/orders", b"{\"dish\":\"soup\"}").await;
    assert_eq!(
        answer(&mut post, "the POST after the handshake").await.0,
        StatusCode::OK
    );
    let seen = app.received();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].method, http::Method::POST);
    assert_eq!(&seen[2].body[..], b"{\"dish\":\"soup\"}");
    assert_eq!(seen[2].headers.get("early-data"), None);
    assert!(
        *relay.held.lock().unwrap() > 0,
        "the client's Finished was held until now"
    );

    let metrics = common::get(running.admin_addr.expect("admin"), "/metrics")
        .await
        .text();
    let too_early = metrics
        .lines()
        .filter(|l| l.starts_with("gatehouse_http_requests_total{") && l.contains("code=\"425\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert_eq!(too_early, 1.0, "the 425 is counted like any answer");
    assert_eq!(
        metric_sample(
            &metrics,
            "gatehouse_tls_handshakes_total",
            &[("listener", "quic"), ("result", "ok"), ("version", "1.3")]
        ),
        Some(2.0),
        "both handshakes counted once completed:\n{metrics}"
    );
    resumed.close(quinn::VarInt::from_u32(0), b"done");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_early_data_a_resumed_client_is_not_offered_0rtt() {
    let pki = Pki::new("no-early");
    let cert = pki.issue("site", &["localhost"]);
    let app = TestUpstream::named("app").await;
    let running = start_gatehouse(&config(&cert, app.addr, false)).await;
    let addr = running.listener_addrs[0];
    let endpoint = resuming_client(&pki);

    leave_a_session(&endpoint, addr).await;

    // The session resumes, but its ticket allows no early data: the client must wait for the
    // handshake.
    let connecting = endpoint.connect(addr, "localhost").unwrap();
    let connecting = match connecting.into_0rtt() {
        Ok(_) => panic!("early data offered by a listener without early_data"),
        Err(connecting) => connecting,
    };
    let second = timeout(WAIT, connecting)
        .await
        .expect("a handshake in time")
        .unwrap();
    let mut client = h3_client(second.clone()).await;
    let mut stream = send(&mut client, "POST", "/orders", b"{}").await;
    assert_eq!(answer(&mut stream, "the first GET").await.0, StatusCode::OK);
    assert!(
        app.received()
            .iter()
            .all(|r| r.headers.get("early-data").is_none())
    );
    second.close(quinn::VarInt::from_u32(0), b"done");
    running.shutdown().await;
}

#[test]
fn early_data_without_http3_is_a_config_error_naming_its_place() {
    let text = "[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\nearly_data = true\n\n[[route]]\nupstream = \"app\"\n\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n";
    let error = match gatehouse::config::load_str(std::path::Path::new("early.toml"), text) {
        Ok(_) => panic!("early_data without http3 accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("early.toml:4:14"), "{error}");
    assert!(error.contains("listener[0].early_data"), "{error}");
    assert!(error.contains("HTTP/3"), "{error}");
}

#[test]
fn the_relay_finds_handshake_packets_among_coalesced_ones() {
    // Initial (token 0, length 3) then Handshake; an Initial alone; a short header.
    let initial = [0xc0, 0, 0, 0, 1, 1, 0xaa, 0, 0x00, 0x03, 1, 2, 3];
    let handshake = [0xe0, 0, 0, 0, 1, 0, 0, 0x01, 9];
    let both = [&initial[..], &handshake[..]].concat();
    assert!(carries_handshake_packet(&both));
    assert!(carries_handshake_packet(&handshake));
    assert!(!carries_handshake_packet(&initial));
    assert!(!carries_handshake_packet(&[0x40, 1, 2, 3]));
    assert!(!carries_handshake_packet(&[0xc0, 0]));
}
