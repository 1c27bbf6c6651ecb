//! Authentication files and key sets kept current: the htpasswd and JWKS files in use are
//! watched and read again when they change (a bad file keeps the users or keys in force and
//! is logged), and each `jwks_url` is fetched over HTTPS every `refresh` (a failed fetch keeps
//! the last good set and is tried again sooner).

use super::file_watch::WatchedFiles;
use crate::auth::{AuthRegistry, JwtAuth, KeySource};
use crate::config::UpstreamTlsConfig;
use crate::tls::client::UpstreamTls;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A fetch that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// After a failed fetch, the next try comes at most this much later.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Watches the htpasswd and JWKS files in use, following config reloads.
pub fn spawn_file_watch(
    registry: Arc<AuthRegistry>,
    debounce: Duration,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let mut watched = WatchedFiles::new()?;
    let mut changes = registry.subscribe();
    Ok(tokio::spawn(async move {
        loop {
            changes.mark_unchanged();
            let files = registry.files();
            watched.follow(&files, "an authentication file");
            tokio::select! {
                arrived = watched.arrivals.recv() => {
                    if arrived.is_none() || !watched.settle(debounce).await {
                        return;
                    }
                    let registry = Arc::clone(&registry);
                    let _ = tokio::task::spawn_blocking(move || registry.reload_files()).await;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }))
}

/// Fetches each `jwks_url` in use now and every `refresh` after.
pub fn spawn_jwks_refresh(registry: Arc<AuthRegistry>) -> tokio::task::JoinHandle<()> {
    let mut changes = registry.subscribe();
    tokio::spawn(async move {
        // When each key set (by the address of its JwtAuth) is due.
        let mut due: HashMap<usize, Instant> = HashMap::new();
        loop {
            changes.mark_unchanged();
            let auths: Vec<Arc<JwtAuth>> = registry
                .jwt_auths()
                .into_iter()
                .filter(|a| matches!(a.settings.source, KeySource::Url { .. }))
                .collect();
            let ids: HashSet<usize> = auths.iter().map(|a| Arc::as_ptr(a) as usize).collect();
            due.retain(|id, _| ids.contains(id));
            let mut next: Option<Instant> = None;
            for auth in &auths {
                let KeySource::Url {
                    url,
                    ca_file,
                    refresh,
                } = &auth.settings.source
                else {
                    continue;
                };
                let id = Arc::as_ptr(auth) as usize;
                let when = *due.entry(id).or_insert_with(Instant::now);
                let when = if when <= Instant::now() {
                    let fetched = fetch(url, ca_file.as_deref()).await.and_then(|bytes| {
                        crate::auth::jwt::parse_jwks(&bytes, &auth.settings.algorithms)
                    });
                    let wait = match auth.install(fetched.map_err(|e| format!("{url}: {e}"))) {
                        Ok(keys) => {
                            tracing::debug!(jwt = %auth.name, url = %url, keys, "JWKS fetched");
                            *refresh
                        }
                        Err(e) => {
                            tracing::error!(jwt = %auth.name, error = %e, "cannot fetch the JWKS; the keys in force stay");
                            (*refresh).min(RETRY_AFTER_FAILURE)
                        }
                    };
                    let when = Instant::now() + wait;
                    due.insert(id, when);
                    when
                } else {
                    when
                };
                next = Some(next.map_or(when, |n| n.min(when)));
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// GETs an https URL, verifying the server with `ca_file` or the system's roots.
pub async fn fetch(url: &str, ca_file: Option<&str>) -> Result<Bytes, String> {
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, ca_file)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
    }
}

async fn fetch_inner(url: &str, ca_file: Option<&str>) -> Result<Bytes, String> {
    let (host, port, path) = crate::config::parse_jwks_url(url)?;
    let settings = UpstreamTlsConfig {
        ca: ca_file.map(|ca| toml::Spanned::new(0..0, ca.to_owned())),
        ..UpstreamTlsConfig::default()
    };
    let tls = UpstreamTls::build(Some(&settings), false)?;
    let name = tls.name_for(&host)?;
    // An IPv6 host keeps its brackets here.
    let tcp = tokio::net::TcpStream::connect(format!("{host}:{port}"))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let stream = tls
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let connection = tokio::spawn(connection);
    let authority = if port == 443 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "gatehouse")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    connection.abort();
    if status != http::StatusCode::OK {
        return Err(format!("answered {status}"));
    }
    Ok(body)
}
