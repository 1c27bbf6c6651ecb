//! The HTTP client the ACME account talks to its directory with: one connection per request
//! (an order makes a handful), HTTPS verified with rustls (ring) against the system's roots
//! or the CA bundle configured for the directory, plain HTTP where the URL says so.

use bytes::Bytes;
use http::Request;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// How long one request to the directory may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DirectoryClient {
    tls: TlsConnector,
}

impl DirectoryClient {
    /// Trusts `ca` (a PEM bundle) if given, else the system's roots.
    pub fn new(ca: Option<&str>) -> Result<Self, String> {
        let roots = match ca {
            Some(ca) => crate::certs::read_roots(ca)?,
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                roots
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(crate::certs::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings for the ACME directory: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }
}

fn failure(message: impl Into<String>) -> instant_acme::Error {
    instant_acme::Error::Other(message.into().into())
}

async fn send(
    tls: TlsConnector,
    mut request: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error> {
    let uri = request.uri().clone();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(failure(format!("{uri}: not an http(s) URL"))),
    };
    let host = uri
        .host()
        .ok_or_else(|| failure(format!("{uri}: no host")))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|e| failure(format!("{host}:{port}: cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // HTTP/1.1 over a fresh connection: the request carries its origin-form target and Host.
    let authority = uri
        .authority()
        .map_or(host.clone(), |a| a.as_str().to_owned());
    if let Ok(value) = http::HeaderValue::from_str(&authority) {
        request.headers_mut().insert(http::header::HOST, value);
    }
    let target = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<http::Uri>()
        .map_err(|e| failure(format!("{uri}: {e}")))?;
    *request.uri_mut() = target;
    if https {
        let name = ServerName::try_from(bare_host.clone())
            .map_err(|_| failure(format!("{host}: not a valid TLS server name")))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| failure(format!("{host}:{port}: TLS: {e}")))?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failure(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failure(format!("HTTP request: {e}")))?;
    Ok(BytesResponse::from(response))
}

impl HttpClient for DirectoryClient {
    fn request(
        &self,
        request: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let uri = request.uri().to_string();
            tokio::time::timeout(REQUEST_TIMEOUT, send(tls, request))
                .await
                .unwrap_or_else(|_| Err(failure(format!("{uri}: no answer within 30s"))))
        })
    }
}
