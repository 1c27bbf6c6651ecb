//! Large bodies stream through gatehouse in bounded memory: a 256 MiB upload and a 256 MiB
//! download, made and checked chunk by chunk, with the process's resident memory watched.

mod common;

use bytes::Bytes;
use common::{TestUpstream, WAIT};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bytes sent each way.
const TOTAL: u64 = 256 << 20;
/// The size of each generated chunk.
const CHUNK: usize = 64 << 10;
/// The content repeats with this period, not a multiple of `CHUNK`, so that chunks differ and
/// a lost, repeated or reordered chunk shows as a mismatch.
const PERIOD: usize = (1 << 20) + 7;
/// How much resident memory may grow while a transfer runs.
const RSS_BUDGET: u64 = 64 << 20;
/// Resident memory is sampled each time this many more bytes have passed a producer or consumer.
const SAMPLE_EVERY: u64 = 8 << 20;
/// A whole 256 MiB transfer in a debug build must finish within this.
const TRANSFER_WAIT: Duration = Duration::from_secs(6 * WAIT.as_secs());

/// The tests here measure the memory of the whole process, so they must not run at once.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Twice `PERIOD` bytes of a fixed pseudo-random sequence: the content at stream offset `o` is
/// `pattern[o % PERIOD..]`, and any chunk of at most `PERIOD` bytes is one slice of it.
fn pattern() -> Bytes {
    let mut state: u32 = 0x9E37_79B9;
    let mut bytes = Vec::with_capacity(2 * PERIOD);
    for _ in 0..PERIOD {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        bytes.push((state >> 24) as u8);
    }
    bytes.extend_from_within(..PERIOD);
    bytes.into()
}

/// This process's resident memory, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// The highest resident memory seen by the samples taken during a transfer.
#[derive(Default)]
struct RssPeak(AtomicU64);

impl RssPeak {
    fn sample(&self) {
        self.0.fetch_max(rss_bytes(), Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn crossed_sample_point(before: u64, after: u64) -> bool {
    before / SAMPLE_EVERY != after / SAMPLE_EVERY
}

/// A body of `total` pattern bytes, made a chunk at a time as it is polled (each chunk a
/// slice of the shared pattern, so nothing is ever held whole).
struct PatternBody {
    pattern: Bytes,
    sent: u64,
    total: u64,
    /// Tell the length up front (Content-Length) or not (chunked).
    known_length: bool,
    rss: Arc<RssPeak>,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent >= this.total {
            return Poll::Ready(None);
        }
        let n = CHUNK.min((this.total - this.sent) as usize);
        let start = (this.sent % PERIOD as u64) as usize;
        let chunk = this.pattern.slice(start..start + n);
        let before = this.sent;
        this.sent += n as u64;
        if crossed_sample_point(before, this.sent) {
            this.rss.sample();
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_length {
            SizeHint::with_exact(self.total - self.sent)
        } else {
            SizeHint::default()
        }
    }
}

/// Checks a received stream against the pattern as it arrives, piece by piece.
struct Checker {
    pattern: Bytes,
    received: u64,
    first_mismatch: Option<u64>,
    rss: Arc<RssPeak>,
}

impl Checker {
    fn new(rss: Arc<RssPeak>) -> Self {
        Self {
            pattern: pattern(),
            received: 0,
            first_mismatch: None,
            rss,
        }
    }

    fn take(&mut self, mut data: &[u8]) {
        let before = self.received;
        while !data.is_empty() {
            let start = (self.received % PERIOD as u64) as usize;
            let n = data.len().min(PERIOD);
            if self.first_mismatch.is_none() && data[..n] != self.pattern[start..start + n] {
                self.first_mismatch = Some(self.received);
            }
            self.received += n as u64;
            data = &data[n..];
        }
        if crossed_sample_point(before, self.received) {
            self.rss.sample();
        }
    }
}

/// Reads a body to its end through a `Checker`, never keeping more than one frame.
async fn check_stream(mut body: Incoming, checker: &mut Checker) {
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            checker.take(data);
        }
    }
}

fn streaming_config(servers: &[SocketAddr]) -> String {
    common::simple_config(
        servers,
        r#"response_timeout = "60s"

[limits]
max_body_bytes = "1GiB"
"#,
    )
}

/// Aborts a spawned server when the test ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An upstream answering every request with `TOTAL` pattern bytes (with Content-Length),
/// produced as the connection asks for them.
async fn download_upstream(rss: Arc<RssPeak>) -> (SocketAddr, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let pattern = pattern();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let pattern = pattern.clone();
            let rss = Arc::clone(&rss);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let total = if request.uri().path() == "/small" {
                        1 << 20
                    } else {
                        TOTAL
                    };
                    let body = PatternBody {
                        pattern: pattern.clone(),
                        sent: 0,
                        total,
                        known_length: true,
                        rss: Arc::clone(&rss),
                    };
                    async move { Ok::<_, Infallible>(Response::new(body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, AbortOnDrop(task))
}

/// An upstream that reads each request body through a `Checker` and answers
/// "<bytes received> <offset of the first mismatch or 'none'>".
async fn upload_upstream(rss: Arc<RssPeak>) -> TestUpstream {
    TestUpstream::with_handler(
        "sink",
        Arc::new(move |request: Request<Incoming>| {
            let rss = Arc::clone(&rss);
            Box::pin(async move {
                let mut checker = Checker::new(rss);
                check_stream(request.into_body(), &mut checker).await;
                let mismatch = checker
                    .first_mismatch
                    .map_or_else(|| "none".to_owned(), |o| o.to_string());
                Response::new(Full::new(Bytes::from(format!(
                    "{} {mismatch}",
                    checker.received
                ))))
            })
        }),
    )
    .await
}

/// Uploads `total` pattern bytes (chunked) and returns the upstream's answer.
async fn upload(addr: SocketAddr, total: u64, rss: &Arc<RssPeak>) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let body = PatternBody {
        pattern: pattern(),
        sent: 0,
        total,
        known_length: false,
        rss: Arc::clone(rss),
    };
    let request = Request::post("/upload")
        .header("host", "upload.test")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.expect("upload response");
    assert_eq!(response.status(), 200);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Downloads `path`, checking the stream; returns the bytes received and the first mismatch.
async fn download(addr: SocketAddr, path: &str, rss: &Arc<RssPeak>) -> (u64, Option<u64>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "download.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("download response");
    assert_eq!(response.status(), 200);
    let mut checker = Checker::new(Arc::clone(rss));
    check_stream(response.into_body(), &mut checker).await;
    (checker.received, checker.first_mismatch)
}

fn assert_memory_bounded(what: &str, baseline: u64, rss: &RssPeak) {
    rss.sample();
    let peak = rss.get();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{what}: baseline {} MiB, peak {} MiB, growth {} MiB",
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        growth < RSS_BUDGET,
        "{what}: resident memory grew by {} MiB (budget {} MiB) while streaming {} MiB",
        growth >> 20,
        RSS_BUDGET >> 20,
        TOTAL >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_through_in_bounded_memory() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rss = Arc::new(RssPeak::default());
    let upstream = upload_upstream(Arc::clone(&rss)).await;
    let gatehouse = common::start_gatehouse(&streaming_config(&[upstream.addr])).await;
    let addr = gatehouse.listener_addrs[0];

    // Warm up every part of the path with a small upload, then take the baseline.
    let small = timeout(WAIT, upload(addr, 1 << 20, &rss))
        .await
        .expect("small upload in time");
    assert_eq!(small, format!("{} none", 1 << 20));
    let baseline = rss_bytes();
    rss.0.store(baseline, Ordering::Relaxed);

    let started = Instant::now();
    let answer = timeout(TRANSFER_WAIT, upload(addr, TOTAL, &rss))
        .await
        .expect("256 MiB upload in time");
    eprintln!("upload: {} MiB in {:?}", TOTAL >> 20, started.elapsed());

    assert_eq!(
        answer,
        format!("{TOTAL} none"),
        "the upstream got every byte, in order"
    );
    assert_memory_bounded("upload", baseline, &rss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_through_in_bounded_memory() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let rss = Arc::new(RssPeak::default());
    let (upstream, _server) = download_upstream(Arc::clone(&rss)).await;
    let gatehouse = common::start_gatehouse(&streaming_config(&[upstream])).await;
    let addr = gatehouse.listener_addrs[0];

    let (small, mismatch) = timeout(WAIT, download(addr, "/small", &rss))
        .await
        .expect("small download in time");
    assert_eq!((small, mismatch), (1 << 20, None));
    let baseline = rss_bytes();
    rss.0.store(baseline, Ordering::Relaxed);

    let started = Instant::now();
    let (received, mismatch) = timeout(TRANSFER_WAIT, download(addr, "/large", &rss))
        .await
        .expect("256 MiB download in time");
    eprintln!("download: {} MiB in {:?}", TOTAL >> 20, started.elapsed());

    assert_eq!(received, TOTAL, "the client got every byte");
    assert_eq!(mismatch, None, "and in order");
    assert_memory_bounded("download", baseline, &rss);
}
