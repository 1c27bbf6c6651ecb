//! Certificates ordered from a real ACME directory: Pebble (Let's Encrypt's test server),
//! started by PID on free loopback ports with a generated config, validating challenges
//! against gatehouse's own listeners (its `httpPort`/`tlsPort` point at them, names resolve
//! to 127.0.0.1 through pebble-challtestsrv's DNS). Nothing is mocked: accounts, orders,
//! HTTP-01 and TLS-ALPN-01 validation, issuance and the handshakes that follow are real. The
//! one addition is renewal information (RFC 9773), which Pebble 2.4 lacks: a front serves
//! Pebble's own directory with that resource added, and answers it.

mod common;

use common::{WAIT, metric_sample, unclaimed_port};
use gatehouse::app::Running;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOMAIN: &str = "shop.gatehouse.test";

/// How long an order may take from gatehouse's start (Pebble validates at once with
/// PEBBLE_VA_NOSLEEP; this bounds a slow machine).
const ORDER_WAIT: Duration = Duration::from_secs(60);

fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the ACME tests need Pebble (Debian package `pebble`; \
                 scripts/test installs it with apt-get install pebble)"
            )
        })
}

/// A folder for one test's files, removed at its end unless the test failed (then it is kept
/// for its logs: pebble.log is there).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn temp_dir(name: &str) -> TempDir {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "acme-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Pebble and its DNS (pebble-challtestsrv answering every name with 127.0.0.1), killed by
/// PID when dropped.
struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: SocketAddr,
    /// The CA of Pebble's own HTTPS (a self-signed certificate for 127.0.0.1 made here).
    https_ca: PathBuf,
}

impl Pebble {
    /// Validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of 127.0.0.1;
    /// certificates live `validity` seconds (Pebble's default, five years, when `None`).
    fn start(dir: &Path, http_port: u16, tls_port: u16, validity: Option<u64>) -> Self {
        Self::start_at(dir, unclaimed_port(), http_port, tls_port, validity)
    }

    /// The same, with the directory on `listen` (a directory started afresh on the same URL).
    fn start_at(
        dir: &Path,
        listen: u16,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
    ) -> Self {
        let pebble = binary("pebble");
        let challtestsrv = binary("pebble-challtestsrv");
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let https_ca = dir.join("pebble-https.pem");
        let https_key = dir.join("pebble-https-key.pem");
        std::fs::write(&https_ca, cert.pem()).unwrap();
        std::fs::write(&https_key, key.serialize_pem()).unwrap();

        let (dns_port, dns_management) = (unclaimed_port(), unclaimed_port());
        let dns = Command::new(challtestsrv)
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");

        let management = unclaimed_port();
        let validity = validity.map_or(String::new(), |secs| {
            format!(",\n    \"certificateValidityPeriod\": {secs}")
        });
        let config = format!(
            "{{\n  \"pebble\": {{\n    \"listenAddress\": \"127.0.0.1:{listen}\",\n    \
             \"managementListenAddress\": \"127.0.0.1:{management}\",\n    \
             \"certificate\": {:?},\n    \"privateKey\": {:?},\n    \
             \"httpPort\": {http_port},\n    \"tlsPort\": {tls_port},\n    \
             \"ocspResponderURL\": \"\",\n    \"externalAccountBindingRequired\": false{validity}\n  }}\n}}\n",
            https_ca.display().to_string(),
            https_key.display().to_string(),
        );
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let server = Command::new(pebble)
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every nonce is honoured: the client's retry of a rejected one is not under test.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Each order validates again rather than reusing an earlier authorization.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        let pebble = Self {
            children: vec![server, dns],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            https_ca,
        };
        let deadline = Instant::now() + WAIT;
        for port in [listen, management, dns_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "pebble did not listen on {port} in time; log in {}",
                    dir.join("pebble.log").display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        pebble
    }

    /// Pebble's root CA (made anew at each start), from its management interface.
    async fn root(&self) -> CertificateDer<'static> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.https_ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut stream = tls_connect(self.management, roots, "127.0.0.1", &[])
            .await
            .expect("pebble's management interface");
        stream
            .write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("root in time")
            .ok();
        let text = String::from_utf8_lossy(&response);
        let begin = text
            .find("-----BEGIN CERTIFICATE-----")
            .expect("a PEM root");
        let end = text[begin..].find("-----END CERTIFICATE-----").unwrap() + begin + 25;
        CertificateDer::from_pem_slice(text[begin..end].as_bytes()).unwrap()
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn tls_connect(
    addr: SocketAddr,
    roots: RootCertStore,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The leaf certificate gatehouse serves for `DOMAIN`, verified against `root`; an error
/// when the handshake fails.
async fn served_certificate(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> std::io::Result<CertificateDer<'static>> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let stream = tls_connect(addr, roots, DOMAIN, &[b"http/1.1"]).await?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .cloned()
        .ok_or_else(|| std::io::Error::other("no certificate"))?;
    Ok(leaf.into_owned())
}

/// Polls until gatehouse serves a certificate for `DOMAIN` that chains to `root`.
async fn wait_for_certificate(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + ORDER_WAIT;
    loop {
        match served_certificate(addr, root).await {
            Ok(leaf) => return leaf,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no certificate chaining to Pebble's root was served in time: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn orders(running: &Running, result: &str) -> f64 {
    metric_sample(
        &running.metrics.render(),
        "gatehouse_acme_orders_total",
        &[("listener", "secure"), ("result", result)],
    )
    .unwrap_or(0.0)
}

struct Ports {
    plain: u16,
    secure: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            plain: unclaimed_port(),
            secure: unclaimed_port(),
        }
    }

    fn secure_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.secure))
    }
}

/// A plain listener redirecting to HTTPS (HTTP-01 is answered there) and a TLS listener with its certificate from
/// `directory`; `extra` adds keys to the `acme` table.
fn config(ports: &Ports, directory: &str, ca: &Path, state_dir: &Path, extra: &str) -> String {
    format!(
        r#"[admin]
bind = ""

[[listener]]
name = "plain"
bind = "127.0.0.1:{plain}"
# Challenges are answered before the redirect: followed, it would reach a TLS listener
# without a certificate yet, and validation would fail.
redirect_https = "https://{{host}}:{secure}{{path}}"

[[listener]]
name = "secure"
bind = "127.0.0.1:{secure}"
tls = {{ acme = {{ directory = "{directory}", contact = ["mailto:ops@gatehouse.test"], domains = ["{DOMAIN}"], state_dir = {state_dir:?}, directory_ca = {ca:?}, retry = "200ms"{extra} }} }}

[[route]]
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:1"]
"#,
        plain = ports.plain,
        secure = ports.secure,
        state_dir = state_dir.display().to_string(),
        ca = ca.display().to_string(),
    )
}

async fn start(toml: &str) -> Running {
    let config = gatehouse::config::load_str(Path::new("acme.toml"), toml)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    Running::start(config).await.expect("gatehouse starts")
}

fn serial(der: &CertificateDer<'_>) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_a_certificate_served_at_once_that_chains_to_the_directory() {
    let dir = temp_dir("http01");
    let ports = Ports::new();
    let pebble = Pebble::start(&dir, ports.plain, ports.secure, None);
    let state = dir.join("state");
    let running = start(&config(
        &ports,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        "",
    ))
    .await;
    let root = pebble.root().await;

    let leaf = wait_for_certificate(ports.secure_addr(), &root).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert!(names.iter().any(|n| n.contains(DOMAIN)), "{names:?}");
    assert_eq!(orders(&running, "started"), 1.0);
    assert_eq!(orders(&running, "succeeded"), 1.0);
    assert_eq!(orders(&running, "failed"), 0.0);

    // Stored owner-only, and shown with its source and expiry.
    use std::os::unix::fs::PermissionsExt;
    for file in [
        state.join(DOMAIN).join("cert.pem"),
        state.join(DOMAIN).join("key.pem"),
    ] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let accounts: Vec<_> = std::fs::read_dir(state.join("accounts")).unwrap().collect();
    assert_eq!(accounts.len(), 1, "one account for the directory");
    let certificates = running.reloader.certificates();
    let acme = certificates
        .iter()
        .find(|c| c.listener == "secure")
        .expect("the ACME certificate is listed");
    assert_eq!(acme.info.source, "acme");
    assert_eq!(acme.info.not_after, parsed.validity().not_after.timestamp());
    let expiry = metric_sample(
        &running.metrics.render(),
        "gatehouse_tls_certificate_expiry_timestamp_seconds",
        &[("listener", "secure"), ("name", DOMAIN)],
    );
    assert_eq!(expiry, Some(parsed.validity().not_after.timestamp() as f64));

    // The challenge answer is gone once the order is over: the well-known path is
    // redirected like any other.
    let reply = common::get(
        SocketAddr::from(([127, 0, 0, 1], ports.plain)),
        "/.well-known/acme-challenge/anything",
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::PERMANENT_REDIRECT);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_a_certificate_on_the_tls_listener_itself() {
    let dir = temp_dir("tls-alpn01");
    let ports = Ports::new();
    // HTTP-01 would be checked on a port where nothing listens: only TLS-ALPN-01 can pass.
    let pebble = Pebble::start(&dir, unclaimed_port(), ports.secure, None);
    let state = dir.join("state");
    let toml = config(
        &ports,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        ", challenge = \"tls-alpn-01\"",
    );
    let running = start(&toml).await;
    let root = pebble.root().await;
    wait_for_certificate(ports.secure_addr(), &root).await;
    assert_eq!(orders(&running, "succeeded"), 1.0);
    assert_eq!(orders(&running, "failed"), 0.0);

    // Outside an order, a handshake asking for acme-tls/1 gets no certificate.
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let validation = tls_connect(ports.secure_addr(), roots, DOMAIN, &[b"acme-tls/1"]).await;
    assert!(validation.is_err(), "no challenge certificate is pending");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_stored_certificate_without_ordering() {
    let dir = temp_dir("restart");
    let ports = Ports::new();
    let pebble = Pebble::start(&dir, ports.plain, ports.secure, None);
    let state = dir.join("state");
    let toml = config(&ports, &pebble.directory, &pebble.https_ca, &state, "");
    let root = pebble.root().await;

    let first = start(&toml).await;
    let issued = wait_for_certificate(ports.secure_addr(), &root).await;
    assert_eq!(orders(&first, "succeeded"), 1.0);
    first.shutdown().await;

    let second = start(&toml).await;
    // The very first handshake gets the stored certificate: nothing is waited for.
    let served = served_certificate(ports.secure_addr(), &root)
        .await
        .expect("the stored certificate is served at once");
    assert_eq!(serial(&served), serial(&issued));
    // The task decides at its start; give it time to (wrongly) start an order.
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert_eq!(orders(&second, "started"), 0.0, "no new order");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_and_the_new_one_served() {
    let dir = temp_dir("renewal");
    let ports = Ports::new();
    // Twenty-second certificates renewed at half their life (less up to a second of jitter).
    let pebble = Pebble::start(&dir, ports.plain, ports.secure, Some(20));
    let state = dir.join("state");
    let toml = config(
        &ports,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        ", renew_at = 0.5",
    );
    let running = start(&toml).await;
    let root = pebble.root().await;
    let first = wait_for_certificate(ports.secure_addr(), &root).await;

    let deadline = Instant::now() + Duration::from_secs(30) + ORDER_WAIT;
    loop {
        // The old certificate keeps being served until the new one is in hand.
        let served = served_certificate(ports.secure_addr(), &root)
            .await
            .expect("a certificate is served throughout");
        if serial(&served) != serial(&first) {
            break;
        }
        assert!(Instant::now() < deadline, "not renewed in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(orders(&running, "succeeded") >= 2.0);
    assert_eq!(orders(&running, "failed"), 0.0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_directory_down_the_stored_certificate_stays_and_failures_back_off() {
    let dir = temp_dir("down");
    let ports = Ports::new();
    let mut pebble = Pebble::start(&dir, ports.plain, ports.secure, None);
    let state = dir.join("state");
    let root = pebble.root().await;
    let first = start(&config(
        &ports,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        "",
    ))
    .await;
    let issued = wait_for_certificate(ports.secure_addr(), &root).await;
    first.shutdown().await;
    pebble.stop();

    // Due for renewal at once (a tiny renew_at), and the directory gone.
    let toml = config(
        &ports,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        ", renew_at = 0.000000001",
    );
    let running = start(&toml).await;
    let mut failed_at = Vec::new();
    let deadline = Instant::now() + WAIT;
    while failed_at.len() < 4 {
        let failed = orders(&running, "failed") as usize;
        while failed_at.len() < failed {
            failed_at.push(Instant::now());
        }
        let served = served_certificate(ports.secure_addr(), &root)
            .await
            .expect("the stored certificate is served while the directory is down");
        assert_eq!(serial(&served), serial(&issued));
        assert!(Instant::now() < deadline, "failures: {}", failed_at.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(orders(&running, "succeeded"), 0.0);
    assert_eq!(orders(&running, "started"), orders(&running, "failed"));
    // 200ms, 400ms, 800ms: each wait at least doubles (give or take the polling).
    let gaps: Vec<Duration> = failed_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1] > gaps[0] + Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[2] > gaps[1] + Duration::from_millis(250), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(700), "{gaps:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_state_directory_order_once_and_answer_for_each_other() {
    let dir = temp_dir("replicas");
    // Pebble validates on replica A's ports; replica B listens elsewhere.
    let (ports_a, ports_b) = (Ports::new(), Ports::new());
    let pebble = Pebble::start(&dir, ports_a.plain, ports_a.secure, None);
    let state = dir.join("state");
    let root = pebble.root().await;

    // Another replica is ordering: B waits for it, and meanwhile has no certificate to serve.
    let held = gatehouse::acme::store::StateLock::acquire(
        &state.display().to_string(),
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    let b = start(&config(
        &ports_b,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        "",
    ))
    .await;
    let watch_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < watch_until {
        assert_eq!(
            orders(&b, "started"),
            0.0,
            "no order while the lock is held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = served_certificate(ports_b.secure_addr(), &root).await;
    assert!(refused.is_err(), "no certificate yet: the handshake fails");

    // Whichever replica gets the lock orders; Pebble's check reaches A, which answers from
    // the state directory if B ordered. The other finds the certificate stored.
    let a = start(&config(
        &ports_a,
        &pebble.directory,
        &pebble.https_ca,
        &state,
        "",
    ))
    .await;
    drop(held);
    let from_a = wait_for_certificate(ports_a.secure_addr(), &root).await;
    let from_b = wait_for_certificate(ports_b.secure_addr(), &root).await;
    assert_eq!(serial(&from_a), serial(&from_b));
    let sum = |result: &str| orders(&a, result) + orders(&b, result);
    assert_eq!(sum("started"), 1.0, "one order for both replicas");
    assert_eq!(sum("succeeded"), 1.0);
    assert_eq!(sum("failed"), 0.0);
    let leftovers = std::fs::read_dir(state.join("http-01")).map_or(0, |d| d.count());
    assert_eq!(
        leftovers, 0,
        "the shared answers are removed after the order"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_an_acme_listener_orders_its_certificate() {
    let dir = temp_dir("reload");
    let ports = Ports::new();
    let pebble = Pebble::start(&dir, ports.plain, ports.secure, None);
    let state = dir.join("state");
    let root = pebble.root().await;
    let full = config(&ports, &pebble.directory, &pebble.https_ca, &state, "");
    // The same config without the TLS listener.
    let start_at = full.find("[[listener]]\nname = \"secure\"").unwrap();
    let end_at = full.find("[[route]]").unwrap();
    let plain_only = format!("{}{}", &full[..start_at], &full[end_at..]);
    let running = start(&plain_only).await;
    assert_eq!(orders(&running, "started"), 0.0);

    let report = running
        .reloader
        .reload_text("test", Path::new("acme.toml"), &full)
        .await;
    assert!(report.ok, "{:?}", report.errors);
    wait_for_certificate(ports.secure_addr(), &root).await;
    assert_eq!(orders(&running, "succeeded"), 1.0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_directory_no_longer_knows_is_replaced() {
    let dir = temp_dir("account");
    let ports = Ports::new();
    let listen = unclaimed_port();
    let mut first_directory = Pebble::start_at(&dir, listen, ports.plain, ports.secure, None);
    let state = dir.join("state");
    let toml = config(
        &ports,
        &first_directory.directory,
        &first_directory.https_ca,
        &state,
        "",
    );
    let first_root = first_directory.root().await;
    let running = start(&toml).await;
    wait_for_certificate(ports.secure_addr(), &first_root).await;
    running.shutdown().await;
    first_directory.stop();

    // A directory started afresh at the same URL knows no account; the certificate is gone
    // too, so an order is due at once.
    let directory = Pebble::start_at(&dir, listen, ports.plain, ports.secure, None);
    let root = directory.root().await;
    std::fs::remove_dir_all(state.join(DOMAIN)).unwrap();
    let toml = config(
        &ports,
        &directory.directory,
        &directory.https_ca,
        &state,
        "",
    );
    let running = start(&toml).await;
    wait_for_certificate(ports.secure_addr(), &root).await;
    assert_eq!(
        orders(&running, "failed"),
        1.0,
        "the order with the old account"
    );
    assert_eq!(
        orders(&running, "succeeded"),
        1.0,
        "then one with a new account"
    );
    running.shutdown().await;
}

#[test]
fn acme_config_errors_name_their_place() {
    let toml = r#"[[listener]]
name = "secure"
bind = "127.0.0.1:0"
tls = { acme = { directory = "ftp://x", contact = ["ops@example.com"], domains = ["not a name"], challenge = "dns-01", renew_at = 1.5 } }

[[route]]
upstream = "app"

[upstream.app]
servers = ["127.0.0.1:1"]
"#;
    let errors = gatehouse::config::load_str(Path::new("acme.toml"), toml)
        .expect_err("invalid")
        .to_string();
    for (key, column) in [
        ("tls.acme.directory", 30),
        ("tls.acme.contact", 52),
        ("tls.acme.domains", 82),
        ("tls.acme.challenge", 110),
        ("tls.acme.renew_at", 131),
    ] {
        let line = errors
            .lines()
            .find(|line| line.contains(key))
            .unwrap_or_else(|| panic!("no error for {key}:\n{errors}"));
        assert!(
            line.starts_with(&format!("acme.toml:4:{column}")),
            "{key} at the wrong place: {line}"
        );
    }
    let both = toml.replace(
        "tls = { acme",
        "tls = { certs = [{ cert = \"c.pem\", key = \"k.pem\" }], acme",
    );
    let errors = gatehouse::config::load_str(Path::new("acme.toml"), &both)
        .expect_err("invalid")
        .to_string();
    assert!(errors.contains("not both"), "{errors}");

    // Neither: the error is at the listener.
    let neither = format!(
        "[admin]\nbind = \"\"\n\n{}",
        toml.replace(
            "tls = { acme = { directory = \"ftp://x\", contact = [\"ops@example.com\"], domains = [\"not a name\"], challenge = \"dns-01\", renew_at = 1.5 } }",
            "tls = { min_version = \"1.3\" }",
        )
    );
    let errors = gatehouse::config::load_str(Path::new("acme.toml"), &neither)
        .expect_err("invalid")
        .to_string();
    let line = errors
        .lines()
        .find(|line| line.contains("tls.certs"))
        .unwrap_or_else(|| panic!("{errors}"));
    assert!(line.starts_with("acme.toml:4:"), "{line}");
    assert!(line.contains("or tls.acme"), "{line}");
}

#[test]
fn the_readme_example_and_the_shipped_one_pass_the_check() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("### Certificates from ACME (Let's Encrypt)")
        .expect("the README section")
        .1;
    let example = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a toml example in the section")
        .0;
    // The shipped config's commented ACME listener, uncommented (without its private CA file).
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/gatehouse.toml"
    ))
    .unwrap();
    let block: String = shipped
        .split_once("# [[listener]]\n# name = \"public\"")
        .expect("the shipped ACME example")
        .1
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('#'))
        .filter(|line| !line.starts_with("#  ") && !line.contains("directory_ca"))
        .map(|line| format!("{}\n", line.trim_start_matches("# ")))
        .collect();
    let shipped_example = format!(
        "[[listener]]\nname = \"public\"\n{}",
        block.replace("0.0.0.0:443", "127.0.0.1:0")
    );
    for example in [example.to_owned(), shipped_example] {
        let text = format!(
            "[admin]\nbind = \"\"\n{example}\n[[route]]\nupstream = \"app\"\n\n[upstream.app]\nservers = [\"127.0.0.1:1\"]\n"
        );
        if let Err(errors) = gatehouse::config::load_str(Path::new("example.toml"), &text) {
            panic!("{text}\n{errors}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Renewal information (RFC 9773). Pebble 2.4 has none, so a front on its own port serves the
// directory with a `renewalInfo` URL added and answers that resource with the window the test
// sets; every other URL in the directory is Pebble's own, so accounts, orders and issuance
// stay Pebble's.

/// What the front answers and what it was asked.
#[derive(Default)]
struct AdviceState {
    /// The suggested window, as RFC 3339 texts.
    window: (String, String),
    /// The certificate identifiers asked about, in order.
    asked: Vec<String>,
}

struct RenewalInfoFront {
    directory: String,
    state: Arc<std::sync::Mutex<AdviceState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RenewalInfoFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

impl RenewalInfoFront {
    /// Serves with Pebble's own HTTPS certificate (so the same `directory_ca` trusts it).
    async fn start(pebble: &Pebble, dir: &Path) -> Self {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pebble.https_ca)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("pebble-https-key.pem"))
            .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(gatehouse::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pebble_addr: SocketAddr = pebble
            .directory
            .trim_start_matches("https://")
            .trim_end_matches("/dir")
            .parse()
            .unwrap();
        let https_ca = pebble.https_ca.clone();
        let state = Arc::new(std::sync::Mutex::new(AdviceState::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state, https_ca) =
                    (acceptor.clone(), Arc::clone(&shared), https_ca.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let (state, https_ca) = (Arc::clone(&state), https_ca.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                front_answer(request, port, pebble_addr, &https_ca, &state).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            directory: format!("https://127.0.0.1:{port}/dir"),
            state,
            task,
        }
    }

    fn set_window(&self, start: i64, end: i64) {
        self.state.lock().unwrap().window = (rfc3339(start), rfc3339(end));
    }

    fn asked(&self) -> Vec<String> {
        self.state.lock().unwrap().asked.clone()
    }
}

async fn front_answer(
    request: http::Request<hyper::body::Incoming>,
    port: u16,
    pebble: SocketAddr,
    https_ca: &Path,
    state: &std::sync::Mutex<AdviceState>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let path = request.uri().path().to_owned();
    let json = |status: u16, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("retry-after", "1")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    if path == "/dir" {
        // Pebble's directory, with the renewal-information resource added.
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(https_ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut stream = tls_connect(pebble, roots, "127.0.0.1", &[]).await.unwrap();
        // Pebble writes its URLs for the host asked for.
        let ask = format!("GET /dir HTTP/1.1\r\nHost: {pebble}\r\nConnection: close\r\n\r\n");
        stream.write_all(ask.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let mut directory: serde_json::Value = serde_json::from_str(body).unwrap();
        directory["renewalInfo"] =
            serde_json::Value::String(format!("https://127.0.0.1:{port}/renewal-info"));
        return json(200, directory.to_string());
    }
    if let Some(id) = path.strip_prefix("/renewal-info/") {
        let mut state = state.lock().unwrap();
        state.asked.push(id.to_owned());
        let (start, end) = state.window.clone();
        return json(
            200,
            format!(r#"{{"suggestedWindow":{{"start":"{start}","end":"{end}"}}}}"#),
        );
    }
    json(404, "{}".to_owned())
}

/// RFC 9773 §4.1: base64url of the authority key identifier's keyIdentifier, a dot, and
/// base64url of the serial number's DER content octets.
fn renewal_info_id(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
        .expect("an authority key identifier");
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}",
        engine.encode(aki),
        engine.encode(cert.raw_serial())
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_when_the_directorys_suggested_window_opens() {
    let dir = temp_dir("ari");
    let ports = Ports::new();
    let pebble = Pebble::start(&dir, ports.plain, ports.secure, None);
    let front = RenewalInfoFront::start(&pebble, &dir).await;
    // A window well ahead: nothing to do yet (Pebble's certificates last five years, so
    // renew_at alone would wait years too).
    front.set_window(unix_now() + 30 * 86_400, unix_now() + 31 * 86_400);
    let state = dir.join("state");
    let running = start(&config(
        &ports,
        &front.directory,
        &pebble.https_ca,
        &state,
        "",
    ))
    .await;
    let root = pebble.root().await;
    let first = wait_for_certificate(ports.secure_addr(), &root).await;
    let first_id = renewal_info_id(&first);

    // The directory is asked about the certificate, again as its Retry-After says.
    let deadline = Instant::now() + WAIT;
    while front.asked().iter().filter(|id| **id == first_id).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "renewal information not asked twice for {first_id}: {:?}",
            front.asked()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        orders(&running, "started"),
        1.0,
        "no renewal before the window"
    );

    // The window is now open (it began yesterday): renewed at the next look.
    front.set_window(unix_now() - 86_400, unix_now() - 3_600);
    let deadline = Instant::now() + ORDER_WAIT;
    loop {
        let served = served_certificate(ports.secure_addr(), &root)
            .await
            .expect("a certificate is served throughout");
        if serial(&served) != serial(&first) {
            break;
        }
        assert!(Instant::now() < deadline, "not renewed in the open window");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(orders(&running, "succeeded"), 2.0);
    assert_eq!(orders(&running, "failed"), 0.0);
    running.shutdown().await;
}
