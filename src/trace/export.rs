//! Spans leave in batches: requests hand theirs to a bounded queue without waiting, and one
//! task posts them to the collector (OTLP over HTTP/protobuf) on its own HTTP/1.1 connection,
//! never through the proxy (so exports are never traced). A slow or dead collector costs
//! dropped spans, counted, and one log line per outage; never a slower request.

use super::otlp;
use super::span::SpanRecord;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use prometheus::IntCounter;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Requests' spans the queue holds before new ones are dropped.
const QUEUE_REQUESTS: usize = 2048;
/// Spans sent in one export at most.
const MAX_BATCH_SPANS: usize = 512;
/// How long the first span of a batch waits for others.
const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// The most one export may take, connect included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a collector reached over TLS (`https://`) is verified.
#[derive(Clone)]
pub struct ExportTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// What the settings were built from: equal identities verify alike, so a reload that
    /// changes nothing keeps the connection.
    pub identity: u64,
}

impl std::fmt::Debug for ExportTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ExportTls {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Eq for ExportTls {}

/// Where spans go and what they say of who made them; replaced on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// Set for an `https://` collector.
    pub tls: Option<ExportTls>,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub service_name: String,
}

/// The queue to the export task (started on first use, on the runtime of the request that
/// used it) and the target, shared across snapshots.
pub struct Exporter {
    shared: Arc<Shared>,
    queue: OnceLock<Option<mpsc::Sender<Vec<SpanRecord>>>>,
}

struct Shared {
    target: ArcSwap<Target>,
    dropped: IntCounter,
}

impl Exporter {
    pub fn new(target: Target, dropped: IntCounter) -> Self {
        Self {
            shared: Arc::new(Shared {
                target: ArcSwap::from_pointee(target),
                dropped,
            }),
            queue: OnceLock::new(),
        }
    }

    pub fn target(&self) -> Arc<Target> {
        self.shared.target.load_full()
    }

    /// Points later exports at `target` (a reload).
    pub fn set_target(&self, target: Target) {
        if **self.shared.target.load() != target {
            self.shared.target.store(Arc::new(target));
        }
    }

    /// Queues one request's spans, or counts them dropped when the queue is full.
    pub fn submit(&self, spans: Vec<SpanRecord>) {
        let queue = self.queue.get_or_init(|| {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
            handle.spawn(run(Arc::clone(&self.shared), receiver));
            Some(sender)
        });
        let count = spans.len() as u64;
        let sent = queue
            .as_ref()
            .is_some_and(|queue| queue.try_send(spans).is_ok());
        if !sent {
            self.shared.dropped.inc_by(count);
        }
    }
}

/// The export task: gathers spans for `FLUSH_AFTER` (or up to `MAX_BATCH_SPANS`) and posts
/// them; ends when the exporter is dropped (tracing turned off).
async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Vec<SpanRecord>>) {
    let mut connection: Option<(ConnectionKey, Connection)> = None;
    let mut failing = false;
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        batch.extend(first);
        let flush_at = tokio::time::Instant::now() + FLUSH_AFTER;
        while batch.len() < MAX_BATCH_SPANS {
            match tokio::time::timeout_at(flush_at, queue.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        let target = shared.target.load_full();
        let body = otlp::encode(&target.service_name, &batch);
        let result = tokio::time::timeout(
            EXPORT_TIMEOUT,
            post(&mut connection, &target, Bytes::from(body)),
        )
        .await
        .unwrap_or_else(|_| Err("the collector did not answer in time".into()));
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(endpoint = %target.authority, "span export works again");
                    failing = false;
                }
            }
            Err(error) => {
                connection = None;
                shared.dropped.inc_by(batch.len() as u64);
                if !failing {
                    tracing::warn!(endpoint = %target.authority, error = %error, "span export failed; spans are dropped (counted in gatehouse_tracing_spans_dropped_total) until the collector takes them");
                    failing = true;
                }
            }
        }
        batch.clear();
    }
}

type Connection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Which collector a kept connection goes to: its authority, and its TLS settings' identity.
type ConnectionKey = (String, Option<u64>);

fn connection_key(target: &Target) -> ConnectionKey {
    (
        target.authority.clone(),
        target.tls.as_ref().map(|tls| tls.identity),
    )
}

/// Posts one encoded batch, on the kept connection when it is still to the target.
async fn post(
    connection: &mut Option<(ConnectionKey, Connection)>,
    target: &Target,
    body: Bytes,
) -> Result<(), String> {
    let key = connection_key(target);
    let reusable = connection
        .as_mut()
        .filter(|(kept, sender)| *kept == key && !sender.is_closed());
    let sender = match reusable {
        Some((_, sender)) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(target.authority.as_str())
                .await
                .map_err(|e| format!("connect to {}: {e}", target.authority))?;
            let _ = stream.set_nodelay(true);
            let sender = match &target.tls {
                Some(tls) => {
                    let stream = tls
                        .connector
                        .connect(tls.server_name.clone(), stream)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", target.authority))?;
                    handshake(stream).await?
                }
                None => handshake(stream).await?,
            };
            &mut connection.insert((key, sender)).1
        }
    };
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut request = Request::post(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    for (name, value) in &target.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read whole, so that the connection can take the next batch.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

/// An HTTP/1.1 client connection over `stream`, driven by a task of its own.
async fn handshake<S>(stream: S) -> Result<Connection, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
