//! Route authentication over real sockets: Basic against an htpasswd file (challenge, users,
//! wrong passwords, the file changed under a running proxy) and bearer JWTs (expired tokens,
//! wrong audiences, claims as headers with spoofed copies removed, a JWKS served over HTTPS
//! and rotated), with the config checks that name a bad setting's place.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::{Client, Reply, TestUpstream, WAIT};
use gatehouse::app::Running;
use http::{Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-auth-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces a file as editors and deploy tools do: write aside, then rename over it.
fn replace(path: &Path, text: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn config(upstream: SocketAddr, sections: &str, route_keys: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access = "off"

[reload]
debounce = "50ms"

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
name = "private"
path_prefix = "/private/"
upstream = "app"
{route_keys}

[[route]]
name = "open"
path_prefix = "/"
upstream = "app"

[upstream.app]
servers = ["{upstream}"]

{sections}
"#
    )
}

fn request(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

async fn send(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::connect(proxy)
        .await
        .send(request(path, headers))
        .await
}

/// Asks until `check` holds for the reply, or fails at the test deadline.
async fn until(
    proxy: SocketAddr,
    headers: &[(&str, &str)],
    what: &str,
    check: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = send(proxy, "/private/x", headers).await;
        if check(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {} {:?}",
            reply.status,
            reply.header("www-authenticate")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(running: &Running) -> String {
    let admin = running.admin_addr.unwrap();
    common::get(admin, "/metrics").await.text()
}

fn auth_count(exposition: &str, kind: &str, outcome: &str) -> f64 {
    common::metric_sample(
        exposition,
        "gatehouse_auth_requests_total",
        &[("route", "private"), ("kind", kind), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn basic_auth_challenges_then_lets_users_through() {
    let upstream = TestUpstream::named("app").await;
    let sections = format!(
        "[basic_auth.staff]\nrealm = 'Staff \"only\"'\nhtpasswd = \"{}\"\n",
        fixture("htpasswd").display()
    );
    let running =
        common::start_gatehouse(&config(upstream.addr, &sections, "basic_auth = \"staff\"")).await;
    let proxy = running.listener_addrs[0];

    let missing = send(proxy, "/private/x", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Basic realm="Staff \"only\"""#)
    );
    let wrong = send(
        proxy,
        "/private/x",
        &[("authorization", &basic("alice", "nope"))],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("www-authenticate").is_some());
    // Every supported hash, twice over one keep-alive connection (the second from the cache).
    let mut client = Client::connect(proxy).await;
    for user in ["alice", "bob", "carol", "dave"] {
        let credentials = basic(user, &format!("{user}-pass"));
        for _ in 0..2 {
            let reply = client
                .send(request("/private/x", &[("authorization", &credentials)]))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{user}");
        }
    }
    // Users in unsupported formats were left out.
    let plaintext = send(
        proxy,
        "/private/x",
        &[("authorization", &basic("frank", "frank-pass"))],
    )
    .await;
    assert_eq!(plaintext.status, StatusCode::UNAUTHORIZED);
    // The open route needs nothing; the upstream got the Authorization header (as nginx).
    assert_eq!(send(proxy, "/other", &[]).await.status, StatusCode::OK);
    let received = upstream.received();
    assert_eq!(
        received.len(),
        9,
        "only the let-in requests reached the upstream"
    );
    assert_eq!(
        received[0].headers.get("authorization").unwrap(),
        &basic("alice", "alice-pass")
    );

    let exposition = metrics(&running).await;
    assert_eq!(auth_count(&exposition, "basic", "allowed"), 8.0);
    assert_eq!(auth_count(&exposition, "basic", "missing"), 1.0);
    assert_eq!(auth_count(&exposition, "basic", "denied"), 2.0);
    let status = gatehouse::admin::status_json(running.admin_state());
    let route = &status["routes"][0];
    assert_eq!(route["name"], "private");
    assert_eq!(route["auth"]["basic"]["name"], "staff");
    assert_eq!(route["auth"]["basic"]["users"], 4);
    assert_eq!(route["auth"]["basic"]["denied"], 2);
    assert!(status["routes"][1]["auth"].is_null());
    running.shutdown().await;
}

#[tokio::test]
async fn access_rules_come_before_authentication() {
    let upstream = TestUpstream::named("app").await;
    let sections = format!(
        "[basic_auth.staff]\nhtpasswd = \"{}\"\n",
        fixture("htpasswd").display()
    );
    let running = common::start_gatehouse(&config(
        upstream.addr,
        &sections,
        "basic_auth = \"staff\"\naccess = [\"deny all\"]",
    ))
    .await;
    let proxy = running.listener_addrs[0];
    let reply = send(
        proxy,
        "/private/x",
        &[("authorization", &basic("alice", "alice-pass"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        auth_count(&metrics(&running).await, "basic", "allowed"),
        0.0
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_changed_htpasswd_file_is_picked_up() {
    let dir = scratch("htpasswd-change");
    let file = dir.join("htpasswd");
    std::fs::write(&file, "carol:{SHA}cOCGGs60OasSaxetg905pbDY2Zs=\n").unwrap();
    let upstream = TestUpstream::named("app").await;
    let sections = format!("[basic_auth.staff]\nhtpasswd = \"{}\"\n", file.display());
    let running =
        common::start_gatehouse(&config(upstream.addr, &sections, "basic_auth = \"staff\"")).await;
    let proxy = running.listener_addrs[0];
    let carol = basic("carol", "carol-pass");
    let bob = basic("bob", "bob-pass");
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &carol)])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &bob)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // bob in, carol out: the cache of accepted credentials goes with the old file.
    replace(&file, b"bob:$apr1$s4ltB0b1$FotLhlaWoTEfb9o08FSAO1\n");
    until(proxy, &[("authorization", &bob)], "bob let in", |r| {
        r.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &carol)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // A file that cannot be read as text keeps the users in force (and says so on /status);
    // a good one after it counts.
    replace(&file, &[0xff, 0xfe, b'\n']);
    let deadline = Instant::now() + WAIT;
    loop {
        let status = gatehouse::admin::status_json(running.admin_state());
        if let Some(error) = status["routes"][0]["auth"]["basic"]["last_error"].as_str() {
            assert!(error.contains("not UTF-8"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "the bad file was not read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &bob)])
            .await
            .status,
        StatusCode::OK
    );
    replace(&file, b"carol:{SHA}cOCGGs60OasSaxetg905pbDY2Zs=\n");
    until(proxy, &[("authorization", &carol)], "carol back", |r| {
        r.status == StatusCode::OK
    })
    .await;
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn token(kid: &str, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(&header, &claims, key).unwrap()
}

fn claims() -> Value {
    json!({"iss": "https://issuer.test", "aud": "orders", "sub": "user-7", "tenant": 42, "exp": now() + 600})
}

fn jwt_section(keys: &str) -> String {
    format!(
        r#"
[jwt.api]
issuer = "https://issuer.test"
audiences = ["orders", "billing"]
{keys}
claims_to_headers = {{ sub = "x-user-id", tenant = "x-tenant" }}
"#
    )
}

#[tokio::test]
async fn bearer_tokens_are_verified_and_claims_become_headers() {
    let upstream = TestUpstream::named("app").await;
    let sections = jwt_section(&format!(
        "jwks_file = \"{}\"",
        fixture("jwks.json").display()
    ));
    let running = common::start_gatehouse(&config(upstream.addr, &sections, "jwt = \"api\"")).await;
    let proxy = running.listener_addrs[0];
    let key = rsa("rsa.pem");

    let missing = send(proxy, "/private/x", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );

    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let reply = send(
        proxy,
        "/private/x",
        &[(
            "authorization",
            &format!("Bearer {}", token("rsa-1", &key, expired)),
        )],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(
            r#"Bearer realm="api", error="invalid_token", error_description="the token has expired""#
        )
    );
    let mut other_audience = claims();
    other_audience["aud"] = json!(["shipping"]);
    let reply = send(
        proxy,
        "/private/x",
        &[(
            "authorization",
            &format!("Bearer {}", token("rsa-1", &key, other_audience)),
        )],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("audience"),
        "{:?}",
        reply.header("www-authenticate")
    );
    let garbage = send(proxy, "/private/x", &[("authorization", "Bearer a.b.c")]).await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert!(
        upstream.received().is_empty(),
        "nothing refused went upstream"
    );

    // A good token, with spoofed copies of the claim headers: only the claims' values arrive.
    let good = format!("Bearer {}", token("rsa-1", &key, claims()));
    let reply = send(
        proxy,
        "/private/x",
        &[
            ("authorization", &good),
            ("x-user-id", "admin"),
            ("x-tenant", "1"),
            ("x-tenant", "2"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // A good token without the claims: the spoofed headers are removed all the same.
    let mut no_claims = claims();
    no_claims.as_object_mut().unwrap().remove("sub");
    no_claims.as_object_mut().unwrap().remove("tenant");
    let reply = send(
        proxy,
        "/private/x",
        &[
            (
                "authorization",
                &format!("Bearer {}", token("rsa-1", &key, no_claims)),
            ),
            ("x-user-id", "admin"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    let values = |i: usize, name: &str| -> Vec<String> {
        received[i]
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(0, "x-user-id"), ["user-7"]);
    assert_eq!(values(0, "x-tenant"), ["42"]);
    assert_eq!(values(0, "authorization"), [good]);
    assert!(values(1, "x-user-id").is_empty());
    assert!(values(1, "x-tenant").is_empty());

    let exposition = metrics(&running).await;
    assert_eq!(auth_count(&exposition, "jwt", "allowed"), 2.0);
    assert_eq!(auth_count(&exposition, "jwt", "missing"), 1.0);
    assert_eq!(auth_count(&exposition, "jwt", "denied"), 3.0);
    let status = gatehouse::admin::status_json(running.admin_state());
    assert_eq!(status["routes"][0]["auth"]["jwt"]["keys"], 3);
    running.shutdown().await;
}

/// A JWKS served over HTTPS by a real server with an rcgen certificate; the body can be
/// swapped while it runs.
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    fetches: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(dir: &Path, body: String) -> Self {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let generated = gatehouse::tls::generate::self_signed(&["localhost".into()], dir).unwrap();
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(&generated.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&generated.key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(gatehouse::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body));
        let fetches = Arc::new(Mutex::new(0));
        let (serve_body, serve_fetches) = (Arc::clone(&body), Arc::clone(&fetches));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (body, fetches) = (Arc::clone(&serve_body), Arc::clone(&serve_fetches));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (body, fetches) = (Arc::clone(&body), Arc::clone(&fetches));
                        async move {
                            *fetches.lock().unwrap() += 1;
                            let response = if request.uri().path() == "/keys" {
                                let text = body.lock().unwrap().clone();
                                http::Response::new(Full::new(Bytes::from(text)))
                            } else {
                                let mut r = http::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            body,
            fetches,
            task,
        }
    }
}

fn jwks_of(keys: &[(&str, &EncodingKey)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, key)| {
            let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).unwrap();
            jwk.common.key_id = Some((*kid).into());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[tokio::test]
async fn a_jwks_over_https_is_fetched_and_refreshed() {
    let dir = scratch("jwks-https");
    let (first, second) = (rsa("rsa.pem"), rsa("rsa-2.pem"));
    let server = JwksServer::start(&dir, jwks_of(&[("rsa-1", &first)])).await;
    let upstream = TestUpstream::named("app").await;
    let sections = jwt_section(&format!(
        "jwks_url = \"https://localhost:{}/keys\"\nca_file = \"{}\"\nrefresh = \"1s\"",
        server.addr.port(),
        dir.join("cert.pem").display()
    ));
    let running = common::start_gatehouse(&config(upstream.addr, &sections, "jwt = \"api\"")).await;
    let proxy = running.listener_addrs[0];
    let old = format!("Bearer {}", token("rsa-1", &first, claims()));
    let new = format!("Bearer {}", token("rsa-2", &second, claims()));

    until(
        proxy,
        &[("authorization", &old)],
        "first key set fetched",
        |r| r.status == StatusCode::OK,
    )
    .await;
    let reply = send(proxy, "/private/x", &[("authorization", &new)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").unwrap().contains("no key"));

    // Rotation: the server now offers only the second key.
    *server.body.lock().unwrap() = jwks_of(&[("rsa-2", &second)]);
    until(
        proxy,
        &[("authorization", &new)],
        "rotated key set fetched",
        |r| r.status == StatusCode::OK,
    )
    .await;
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &old)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // A broken answer keeps the last good set.
    let fetched = *server.fetches.lock().unwrap();
    *server.body.lock().unwrap() = "not json".into();
    let deadline = Instant::now() + WAIT;
    while *server.fetches.lock().unwrap() < fetched + 2 {
        assert!(Instant::now() < deadline, "no refetch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &new)])
            .await
            .status,
        StatusCode::OK
    );
    let status = gatehouse::admin::status_json(running.admin_state());
    let error = status["routes"][0]["auth"]["jwt"]["last_error"]
        .as_str()
        .unwrap();
    assert!(error.contains("not a JWKS document"), "{error}");
    running.shutdown().await;
    server.task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_are_reported_at_their_place() {
    let dir = scratch("check");
    let empty_jwks = dir.join("empty-jwks.json");
    std::fs::write(&empty_jwks, r#"{"keys": []}"#).unwrap();
    let text = format!(
        r#"[[listener]]
name = "l"
bind = "127.0.0.1:0"

[[route]]
upstream = "app"
basic_auth = "nobody"
jwt = "nothing"

[[route]]
path_prefix = "/both/"
upstream = "app"
basic_auth = "staff"
jwt = "b"

[upstream.app]
servers = ["127.0.0.1:1"]

[basic_auth.staff]
htpasswd = "{missing}"

[jwt.a]
jwks_url = "http://keys.example/jwks"
algorithms = ["RS256", "none"]

[jwt.b]
jwks_file = "{empty_jwks}"
claims_to_headers = {{ sub = "bad header" }}

[jwt.c]
issuer = "x"
"#,
        missing = dir.join("missing").display(),
        empty_jwks = empty_jwks.display(),
    );
    let errors = gatehouse::config::load_str(Path::new("gh.toml"), &text)
        .unwrap_err()
        .to_string();
    for expected in [
        "gh.toml:7:14: route[0].basic_auth: no basic_auth named \"nobody\" (configured: staff)",
        "gh.toml:8:7: route[0].jwt: no jwt named \"nothing\" (configured: a, b, c)",
        "gh.toml:14:7: route[1].jwt: basic_auth and this jwt both read the Authorization header",
        "gh.toml:20:12: basic_auth.staff.htpasswd:",
        "gh.toml:23:12: jwt.a.jwks_url: \"http://keys.example/jwks\": jwks_url must be an https:// URL",
        "gh.toml:24:14: jwt.a.algorithms: unsupported algorithm \"none\"",
        "gh.toml:28:29: jwt.b.claims_to_headers.sub: \"bad header\" is not a valid header name",
        "gh.toml:30:1: jwt.c: no keys: give jwks_file, jwks_url or secret_file",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    // A JWKS without keys is not an error (a set being rotated may be empty).
    assert!(!errors.contains("jwt.b.jwks_file"), "{errors}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_config_reload_reads_the_htpasswd_file_again() {
    let dir = scratch("htpasswd-reload");
    let file = dir.join("htpasswd");
    std::fs::write(&file, "carol:{SHA}cOCGGs60OasSaxetg905pbDY2Zs=\n").unwrap();
    let upstream = TestUpstream::named("app").await;
    let sections = format!("[basic_auth.staff]\nhtpasswd = \"{}\"\n", file.display());
    // No file watching: only the reload reads the file.
    let text = config(upstream.addr, &sections, "basic_auth = \"staff\"")
        .replace("debounce = \"50ms\"", "watch = false");
    let config_path = dir.join("gatehouse.toml");
    std::fs::write(&config_path, &text).unwrap();
    let running = Running::start_file(&config_path)
        .await
        .expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let bob = basic("bob", "bob-pass");
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &bob)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    replace(&file, b"bob:$apr1$s4ltB0b1$FotLhlaWoTEfb9o08FSAO1\n");
    let report = running.reloader.reload("test").await;
    assert!(report.ok, "{:?}", report.errors);
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &bob)])
            .await
            .status,
        StatusCode::OK
    );
    // A reload to a config whose htpasswd cannot be read fails; the users in force stay.
    let broken = text.replace(
        &file.display().to_string(),
        &dir.join("gone").display().to_string(),
    );
    std::fs::write(&config_path, broken).unwrap();
    let report = running.reloader.reload("test").await;
    assert!(!report.ok);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("basic_auth.staff.htpasswd")),
        "{:?}",
        report.errors
    );
    assert_eq!(
        send(proxy, "/private/x", &[("authorization", &bob)])
            .await
            .status,
        StatusCode::OK
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gatehouse_check_names_a_bad_auth_file_and_passes_a_good_one() {
    let dir = scratch("check-cli");
    let config_path = dir.join("gatehouse.toml");
    let text = |htpasswd: &Path| {
        format!(
            "[admin]\nbind = \"\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"app\"\nbasic_auth = \"staff\"\njwt = \"api\"\n\n[upstream.app]\nservers = [\"127.0.0.1:1\"]\n\n[basic_auth.staff]\nhtpasswd = \"{}\"\n\n[jwt.api]\njwks_file = \"{}\"\nheader = \"x-token\"\n",
            htpasswd.display(),
            fixture("jwks.json").display()
        )
    };
    std::fs::write(&config_path, text(&fixture("htpasswd"))).unwrap();
    let config_arg = config_path.to_str().unwrap();
    let good = common::process::run_gatehouse(&["check", "--config", config_arg]);
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    assert!(good.stdout.contains("config ok"), "{}", good.stdout);
    // Users in formats gatehouse cannot check are named with their file and line.
    let plaintext = format!(
        "warning: {}:7: user \"frank\"",
        fixture("htpasswd").display()
    );
    assert!(good.stderr.contains(&plaintext), "{}", good.stderr);

    std::fs::write(&config_path, text(&dir.join("absent"))).unwrap();
    let bad = common::process::run_gatehouse(&["check", "--config", config_arg]);
    assert_ne!(bad.code, Some(0));
    let expected = format!("{config_arg}:17:12: basic_auth.staff.htpasswd: ");
    assert!(bad.stderr.contains(&expected), "{}", bad.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reload_that_changes_a_jwt_section_applies_it() {
    let dir = scratch("jwt-reload");
    let upstream = TestUpstream::named("app").await;
    let sections = jwt_section(&format!(
        "jwks_file = \"{}\"",
        fixture("jwks.json").display()
    ));
    let text = config(upstream.addr, &sections, "jwt = \"api\"");
    let config_path = dir.join("gatehouse.toml");
    std::fs::write(&config_path, &text).unwrap();
    let running = Running::start_file(&config_path)
        .await
        .expect("gatehouse starts");
    let proxy = running.listener_addrs[0];
    let good = format!("Bearer {}", token("rsa-1", &rsa("rsa.pem"), claims()));
    let status = |reply: Reply| reply.status;
    assert_eq!(
        status(send(proxy, "/private/x", &[("authorization", &good)]).await),
        StatusCode::OK
    );
    // The token's audience is no longer accepted.
    std::fs::write(
        &config_path,
        text.replace(
            r#"audiences = ["orders", "billing"]"#,
            r#"audiences = ["billing"]"#,
        ),
    )
    .unwrap();
    let report = running.reloader.reload("test").await;
    // (The file watcher may have applied it first: either way it is in force now.)
    assert!(report.ok, "{:?}", report.errors);
    let reply = send(proxy, "/private/x", &[("authorization", &good)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("audience")
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bcrypt check runs off the thread serving requests: on a one-thread runtime, a request
/// to another route is answered while a wrong password's bcrypt (cost 13, hundreds of
/// milliseconds) is still being verified, not after it.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_password_hash_does_not_hold_other_requests() {
    let upstream = TestUpstream::named("app").await;
    let dir = scratch("slow-hash");
    let hash = bcrypt::hash("right", 13).unwrap();
    std::fs::write(dir.join("htpasswd"), format!("slow:{hash}\n")).unwrap();
    let sections = format!(
        "[basic_auth.staff]\nrealm = \"staff\"\nhtpasswd = \"{}\"\n",
        dir.join("htpasswd").display()
    );
    let running =
        common::start_gatehouse(&config(upstream.addr, &sections, "basic_auth = \"staff\"")).await;
    let proxy = running.listener_addrs[0];

    // The wrong password is written on its own connection, and the runtime given turns
    // enough to accept it and reach the check. Served on this thread, the check would run
    // to its end within those turns and its 401 would already be there.
    let mut wrong = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "GET /private/x HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\r\n",
        basic("slow", "wrong")
    );
    tokio::io::AsyncWriteExt::write_all(&mut wrong, head.as_bytes())
        .await
        .unwrap();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let open = send(proxy, "/menu", &[]).await;
    assert_eq!(open.status, StatusCode::OK);
    let mut early = [0u8; 64];
    assert!(
        matches!(wrong.try_read(&mut early), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the 401 came before the open route's answer: the bcrypt check held the thread"
    );
    let answer = tokio::time::timeout(WAIT, common::read_head(&mut wrong))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
