//! The nginx importer against the real nginx: each config of `tests/nginx_corpus/` runs in
//! nginx (`nginx -p TMP -c conf -g 'daemon off; ...'`, on free loopback ports) and, imported
//! with `gatehouse import nginx`, in gatehouse, with the same echoing backends. The same
//! requests go to both, and what the client and the backend saw is compared: status,
//! Location, WWW-Authenticate, chosen response headers, which backend got the request, with
//! what URI and which headers. nginx missing is a failure, never a skip (`scripts/test`
//! installs it).
//!
//! Corpus files whose translation needs route keys not yet in this build fail at config
//! loading (after nginx's answers are printed) until those land:
//! (a) `path_exact`, `path_regex`, `prefix_stops_regex`, `replace_prefix`, `slash_redirect`,
//!     `rewrite`, `return`, `forward_auth`;
//! (d) `return`, `slash_redirect`, `basic_auth`;
//! (e) `split`, `split_by`, `mirror`.
//! (b), (c), (f) and (g) use only keys of today's build and pass.

mod common;

use bytes::Bytes;
use common::{Recorded, TestUpstream, WAIT};
use http::Response;
use http_body_util::Full;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn nginx_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.extend(
        [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .map(PathBuf::from),
    );
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("nginx is not installed: these tests compare gatehouse with a real nginx. Install it (`apt-get install nginx-light`, or run scripts/test, which does)")
    })
}

/// A directory removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-import-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx in the foreground, stopped by its PID.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, conf: &Path) -> Self {
        let globals = format!(
            "daemon off; master_process on; worker_processes 1; pid {0}/nginx.pid; error_log {0}/logs/error.log;",
            dir.display()
        );
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg(globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        Self {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits until nginx accepts on `port`, or fails with its error log.
    async fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                panic!("nginx exited ({status}):\n{stderr}\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        // SIGTERM lets the master stop its workers; SIGKILL if it does not go.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend answering with what it received: `x-backend`, `x-uri`, and each request header
/// as `x-seen-NAME`; a 2 KiB text/html body (so that compression applies). One whose name
/// starts with `auth` is an auth service: 401 with a challenge unless `Authorization: Bearer
/// good`, then 200 with `x-user: alice`.
async fn echo_backend(name: &str) -> TestUpstream {
    let owned = name.to_owned();
    TestUpstream::with_responder(
        name,
        Arc::new(move |r: &Recorded| {
            let mut b = Response::builder()
                .header("x-backend", owned.as_str())
                .header("x-uri", r.uri.to_string())
                .header("x-powered-by", "test")
                .header("content-type", "text/html");
            for (k, v) in &r.headers {
                b = b.header(format!("x-seen-{k}"), v.clone());
            }
            if owned.starts_with("auth") {
                if r.headers
                    .get("authorization")
                    .is_none_or(|v| v != "Bearer good")
                {
                    b = b
                        .status(401)
                        .header("www-authenticate", "Bearer realm=\"api\"");
                } else {
                    b = b.header("x-user", "alice");
                }
            }
            b.body(Full::new(Bytes::from(vec![b'a'; 2048]))).unwrap()
        }),
    )
    .await
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_client() -> Arc<ClientConfig> {
    let provider = gatehouse::tls::provider();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request: where it goes (a listen placeholder), and what it carries.
#[derive(Clone)]
struct Case {
    listen: &'static str,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: usize,
    /// Response headers compared besides status, Location and WWW-Authenticate.
    response: Vec<&'static str>,
    /// Headers the backend received that are compared.
    seen: Vec<&'static str>,
    /// When the backend is chosen at random, the set it must be in.
    any_backend: Option<Vec<&'static str>>,
}

fn get(listen: &'static str, path: &'static str, host: &'static str) -> Case {
    Case {
        listen,
        method: "GET",
        path,
        host,
        headers: Vec::new(),
        body: 0,
        response: Vec::new(),
        seen: vec!["host"],
        any_backend: None,
    }
}

impl Case {
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn response(mut self, names: &[&'static str]) -> Self {
        self.response.extend(names);
        self
    }
    fn seen(mut self, names: &[&'static str]) -> Self {
        self.seen.extend(names);
        self
    }
    fn what(&self) -> String {
        format!(
            "{} {} (Host: {}) on {}",
            self.method, self.path, self.host, self.listen
        )
    }
    fn post(mut self, body: usize) -> Self {
        self.method = "POST";
        self.body = body;
        self
    }
}

/// What one side answered, ports replaced by `PORT` (each side listens on its own).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, Option<String>>,
    backend: Option<String>,
    uri: Option<String>,
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    case: &Case,
) -> (u16, Vec<(String, String)>) {
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        case.method, case.path, case.host
    );
    for (k, v) in &case.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if case.method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", case.body));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend(std::iter::repeat_n(b'x', case.body));
    stream.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("response within the deadline")
            .unwrap_or(0);
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&buf[..head_end])
        .expect("a valid response head");
    let status = response.code.unwrap_or(0);
    let list = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (status, list)
}

async fn ask(addr: SocketAddr, tls: bool, case: &Case) -> Seen {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (status, headers) = if tls {
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls_client())
            .connect(name, tcp)
            .await
            .unwrap();
        exchange(stream, case).await
    } else {
        exchange(tcp, case).await
    };
    let port = format!(":{}", addr.port());
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.replace(&port, ":PORT"))
    };
    let mut compared = BTreeMap::new();
    // A relative Location (RFC 9110 §10.2.2) is compared as the absolute URL it stands for:
    // nginx writes it absolute (`absolute_redirect on`), gatehouse as the route computes it.
    let resolve = |location: Option<String>| {
        location.map(|value| match value.starts_with('/') {
            true => {
                let scheme = if tls { "https" } else { "http" };
                format!("{scheme}://{}:PORT{value}", case.host)
            }
            false => value,
        })
    };
    compared.insert("location".to_owned(), resolve(find("location")));
    for name in ["www-authenticate"].iter().chain(case.response.iter()) {
        compared.insert((*name).to_owned(), find(name));
    }
    let backend = find("x-backend");
    if backend.is_some() {
        for name in &case.seen {
            compared.insert(
                format!("upstream got {name}"),
                find(&format!("x-seen-{name}")),
            );
        }
    }
    Seen {
        status,
        headers: compared,
        backend,
        uri: find("x-uri"),
    }
}

/// The files a corpus config may serve: `__DIR__/www` and `__DIR__/media`.
fn write_site(dir: &Path) {
    for (path, content) in [
        ("www/index.html", "<h1>the app shell</h1>\n"),
        ("www/style.css", "body { margin: 0 }\n"),
        ("www/docs/index.html", "<h1>docs</h1>\n"),
        ("www/downloads/report.txt", "quarterly numbers\n"),
        ("www/api/openapi.json", "{\"openapi\": \"3.1.0\"}\n"),
        ("media/logo.txt", "a logo, in words\n"),
    ] {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Runs one corpus file in both and compares every case.
async fn compare(
    file: &str,
    backends: &[&str],
    listens: &[(&'static str, bool)],
    cases: &[Case],
) -> Vec<TestUpstream> {
    let dir = TempDir::new(file.trim_end_matches(".conf"));
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/nginx_corpus")
            .join(file),
    )
    .unwrap();
    let mut servers = Vec::new();
    for name in backends {
        let b = echo_backend(name).await;
        text = text.replace(
            &format!("__B_{}__", name.to_ascii_uppercase()),
            &b.addr.to_string(),
        );
        servers.push(b);
    }
    let mut ports = BTreeMap::new();
    for (placeholder, _) in listens {
        let port = common::unclaimed_port();
        text = text.replace(&format!("__{placeholder}__"), &port.to_string());
        ports.insert(*placeholder, port);
    }
    let generated =
        gatehouse::tls::generate::self_signed(&["localhost".into(), "127.0.0.1".into()], &dir.0)
            .unwrap();
    text = text
        .replace("__CERT__", &generated.cert.display().to_string())
        .replace("__KEY__", &generated.key.display().to_string())
        .replace("__DIR__", &dir.0.display().to_string());
    // staff:secret, as `openssl passwd -apr1` writes it (both read apr1-MD5).
    std::fs::write(
        dir.0.join("htpasswd"),
        "staff:$apr1$gatehse$EFDZWyJfZv2AZDOEUGyPB1\n",
    )
    .unwrap();
    write_site(&dir.0);
    let conf = dir.0.join("nginx.conf");
    std::fs::write(&conf, &text).unwrap();

    // The importer, as a user runs it.
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["import", "nginx"])
        .arg(&conf)
        .output()
        .unwrap();
    let toml = String::from_utf8(out.stdout).unwrap();
    let reports = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "import failed:\n{reports}");
    eprintln!("--- {file}: not translated:\n{reports}--- TOML:\n{toml}");
    // nginx first: its answers are printed even when gatehouse cannot load the translation.
    let mut nginx = Nginx::start(&dir.0, &conf);
    for port in ports.values() {
        nginx.wait_ready(*port).await;
    }
    let mut from_nginx = Vec::new();
    for case in cases {
        let tls = listens.iter().any(|(p, t)| *p == case.listen && *t);
        let seen = ask(
            SocketAddr::from(([127, 0, 0, 1], ports[case.listen])),
            tls,
            case,
        )
        .await;
        eprintln!(
            "{}: nginx {} {:?} {:?} {:?}",
            case.what(),
            seen.status,
            seen.backend,
            seen.uri,
            seen.headers
        );
        from_nginx.push(seen);
    }
    drop(nginx);

    let config = gatehouse::config::load_str(Path::new("imported.toml"), &toml)
        .unwrap_or_else(|e| panic!("{file}: the imported config does not load:\n{e}"));
    drop(config);
    // gatehouse listens on ports of its own, with the listeners' names the importer derived.
    let mut doc: toml_edit::DocumentMut = toml.parse().unwrap();
    let mut names = Vec::new();
    if let Some(listeners) = doc
        .get_mut("listener")
        .and_then(|l| l.as_array_of_tables_mut())
    {
        for l in listeners.iter_mut() {
            names.push(l["name"].as_str().unwrap().to_owned());
            l["bind"] = toml_edit::value("127.0.0.1:0");
        }
    }
    doc["admin"] = toml_edit::table();
    doc["admin"]["bind"] = toml_edit::value("");
    doc["log"] = toml_edit::table();
    doc["log"]["access"] = toml_edit::value("off");
    let config = gatehouse::config::load_str(Path::new("imported.toml"), &doc.to_string()).unwrap();
    let running = gatehouse::app::Running::start(config)
        .await
        .expect("gatehouse starts");
    let mut failures = Vec::new();
    for (case, nginx_seen) in cases.iter().zip(from_nginx) {
        let tls = listens.iter().any(|(p, t)| *p == case.listen && *t);
        let name = gatehouse::import::translate::listener_name(
            &format!("127.0.0.1:{}", ports[case.listen]),
            tls,
        );
        let index = names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no listener {name}"));
        let gatehouse_seen = ask(running.listener_addrs[index], tls, case).await;
        let same = match &case.any_backend {
            Some(set) => {
                let ok = |s: &Seen| s.backend.as_deref().is_some_and(|b| set.contains(&b));
                ok(&nginx_seen)
                    && ok(&gatehouse_seen)
                    && nginx_seen.status == gatehouse_seen.status
                    && nginx_seen.uri == gatehouse_seen.uri
                    && nginx_seen.headers == gatehouse_seen.headers
            }
            None => nginx_seen == gatehouse_seen,
        };
        if !same {
            failures.push(format!(
                "{}:\n  nginx:     {nginx_seen:?}\n  gatehouse: {gatehouse_seen:?}",
                case.what()
            ));
        }
    }
    running.shutdown().await;
    assert!(
        failures.is_empty(),
        "{file}: gatehouse answers differently from nginx:\n{}",
        failures.join("\n")
    );
    servers
}

#[tokio::test]
async fn a_api_gateway_with_regex_locations_and_rewrites() {
    let h = "api.example.com";
    compare(
        "a_api_gateway.conf",
        &["users", "orders", "authsvc"],
        &[("PORT_HTTP", false)],
        &[
            get("PORT_HTTP", "/healthz", h).response(&["content-type"]),
            get("PORT_HTTP", "/users/42/orders", h),
            get("PORT_HTTP", "/users/x/orders", h),
            get("PORT_HTTP", "/index.PHP", h),
            get("PORT_HTTP", "/v1/profile?x=1", h),
            get("PORT_HTTP", "/v1/profile?x=1", h)
                .header("Authorization", "Bearer good")
                .seen(&["authorization"]),
            get("PORT_HTTP", "/v1/profile?x=1", h).header("Authorization", "Bearer bad"),
            get("PORT_HTTP", "/v1", h),
            get("PORT_HTTP", "/old/a/b", h),
            get("PORT_HTTP", "/users/static/logo.php", h),
            get("PORT_HTTP", "/users/static/app.js", h),
            get("PORT_HTTP", "/anything/else", h),
        ],
    )
    .await;
}

#[tokio::test]
async fn b_single_page_app_and_api() {
    let h = "app.example.com";
    let common = [
        "x-frame-options",
        "x-api",
        "x-powered-by",
        "content-encoding",
    ];
    compare(
        "b_spa_api.conf",
        &["web", "api"],
        &[("PORT_HTTP", false)],
        &[
            get("PORT_HTTP", "/", h).response(&common),
            get("PORT_HTTP", "/app/route?q=1", h)
                .response(&common)
                .header("Accept-Encoding", "gzip"),
            get("PORT_HTTP", "/api/orders?page=2", h)
                .response(&common)
                .seen(&["x-app", "x-drop", "x-forwarded-for"])
                .header("X-Drop", "secret"),
            get("PORT_HTTP", "/api/", h)
                .response(&common)
                .header("Accept-Encoding", "gzip"),
            get("PORT_HTTP", "/static/app.css", h).response(&common),
            get("PORT_HTTP", "/staticfile", "other.example").response(&common),
            get("PORT_HTTP", "/", h).post(2000),
            get("PORT_HTTP", "/api/upload", h).post(2000),
            get("PORT_HTTP", "/api/upload", h).post(5000),
        ],
    )
    .await;
}

#[tokio::test]
async fn c_several_hosts_wildcards_and_a_default_server() {
    let limited = get("PORT_HTTP", "/limited", "www.example.com");
    compare(
        "c_multi_host.conf",
        &["main", "wild", "fallback", "admin"],
        &[("PORT_HTTP", false)],
        &[
            get("PORT_HTTP", "/", "www.example.com"),
            get("PORT_HTTP", "/x", "example.com"),
            get("PORT_HTTP", "/", "example.org"),
            get("PORT_HTTP", "/", "shop.example.org"),
            get("PORT_HTTP", "/", "a.b.example.net"),
            get("PORT_HTTP", "/", "example.net"),
            get("PORT_HTTP", "/", "unknown.test"),
            get("PORT_HTTP", "/admin/users", "unknown.test"),
            get("PORT_HTTP", "/admin/users", "unknown.test").header("X-Forwarded-For", "10.1.2.3"),
            get("PORT_HTTP", "/admin/users", "unknown.test").header("X-Forwarded-For", "192.0.2.1"),
            limited.clone(),
            limited.clone(),
            limited.clone(),
            limited,
        ],
    )
    .await;
}

#[tokio::test]
async fn d_tls_termination_with_redirects_and_basic_auth() {
    let h = "secure.example.com";
    let hsts = ["strict-transport-security"];
    compare(
        "d_tls_redirect.conf",
        &["app"],
        &[("PORT_HTTP", false), ("PORT_HTTPS", true)],
        &[
            get("PORT_HTTP", "/a/b?c=d", h),
            get("PORT_HTTPS", "/", h)
                .response(&hsts)
                .seen(&["x-forwarded-proto"]),
            get("PORT_HTTPS", "/private/x", h).response(&hsts),
            get("PORT_HTTPS", "/private/x", h)
                .response(&hsts)
                .header("Authorization", "Basic c3RhZmY6d3Jvbmc="),
            get("PORT_HTTPS", "/private/x", h)
                .response(&hsts)
                .header("Authorization", "Basic c3RhZmY6c2VjcmV0")
                .seen(&["authorization"]),
            get("PORT_HTTPS", "/private", h).response(&hsts),
        ],
    )
    .await;
}

#[tokio::test]
async fn e_canary_with_split_clients_and_a_mirror() {
    let h = "shop.example.com";
    let mut case = get("PORT_HTTP", "/cart?id=7", h);
    case.any_backend = Some(vec!["stable", "canary"]);
    let backends = compare(
        "e_canary.conf",
        &["stable", "canary", "shadow"],
        &[("PORT_HTTP", false)],
        &[case.clone(), case],
    )
    .await;
    // Both mirrored each request to the shadow, with the URI the client sent.
    let shadow = &backends[2];
    let deadline = Instant::now() + WAIT;
    while shadow.received().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the shadow got {} mirrored requests, not 4",
            shadow.received().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for r in shadow.received() {
        assert_eq!(r.uri, "/cart?id=7");
        assert_eq!(r.headers["host"], "shop.example.com");
    }
}

#[tokio::test]
async fn f_tls_termination_in_front_of_one_service() {
    compare(
        "f_tls_termination.conf",
        &["svc"],
        &[("PORT_HTTPS", true)],
        &[
            get("PORT_HTTPS", "/", "localhost").seen(&["x-forwarded-proto", "x-tls"]),
            get("PORT_HTTPS", "/deep/path?q=1", "other.example").seen(&["x-tls"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn g_static_files_a_single_page_app_a_listing_and_an_api_fallback() {
    let h = "site.example.com";
    let file = [
        "content-type",
        "content-length",
        "last-modified",
        "cache-control",
    ];
    compare(
        "g_static_files.conf",
        &["app"],
        &[("PORT_HTTP", false)],
        &[
            get("PORT_HTTP", "/", h).response(&file),
            get("PORT_HTTP", "/style.css", h).response(&file),
            get("PORT_HTTP", "/orders/42", h).response(&file),
            get("PORT_HTTP", "/docs", h),
            get("PORT_HTTP", "/docs/", h).response(&file),
            get("PORT_HTTP", "/downloads/report.txt", h).response(&file),
            // Listed by both (the pages differ; gatehouse says its charset).
            get("PORT_HTTP", "/downloads/", h),
            get("PORT_HTTP", "/media/logo.txt", h).response(&file),
            get("PORT_HTTP", "/media/missing.txt", h),
            get("PORT_HTTP", "/api/openapi.json", h).response(&file),
            get("PORT_HTTP", "/api/orders?page=2", h),
        ],
    )
    .await;
}

/// Every corpus file imports, and `--strict` fails exactly when something was reported.
#[test]
fn strict_fails_on_reports_only() {
    let dir = TempDir::new("strict");
    let clean = dir.0.join("clean.conf");
    std::fs::write(&clean, "events {}\nhttp { server { listen 127.0.0.1:8080; location / { proxy_pass http://127.0.0.1:9000; } } }\n").unwrap();
    let ok = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["import", "nginx", "--strict"])
        .arg(&clean)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        ok.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dirty = dir.0.join("dirty.conf");
    std::fs::write(&dirty, "events {}\nhttp {\n server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; sub_filter a b; } } }\n").unwrap();
    let lenient = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["import", "nginx"])
        .arg(&dirty)
        .output()
        .unwrap();
    assert!(lenient.status.success());
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:3: sub_filter: ", dirty.display())),
        "{stderr}"
    );
    let strict = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["import", "nginx", "--strict"])
        .arg(&dirty)
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));

    let broken = dir.0.join("broken.conf");
    std::fs::write(&broken, "http {\n server {\n").unwrap();
    let failed = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["import", "nginx"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr).starts_with(&format!("{}:2: ", broken.display()))
    );
}
