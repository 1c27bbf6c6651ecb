//! Admin write protection over real sockets: `[admin] token_file` guards `POST /reload` and
//! `POST /cache/purge` with a bearer token (401 with WWW-Authenticate otherwise), reads stay
//! open, `writes = false` answers 403, the token file is read again at each reload, and
//! `gatehouse check` refuses a network-reachable admin listener with open writes.

mod common;

use bytes::Bytes;
use common::{Client, Reply, TestUpstream};
use gatehouse::app::Running;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("admin-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(admin_bind: &str, admin_extra: &str, upstream: SocketAddr) -> String {
    format!(
        r#"
[admin]
bind = "{admin_bind}"
{admin_extra}

[log]
access = "off"

[reload]
watch = false

[[listener]]
name = "test"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/"
upstream = "app"
cache = "pages"

[upstream.app]
servers = ["{upstream}"]

[cache.pages]
"#
    )
}

/// Writes `text` to `dir/gatehouse.toml` and starts gatehouse from it.
async fn start(dir: &Path, text: &str) -> Running {
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    Running::start_file(&path).await.expect("gatehouse starts")
}

/// The admin listener as a loopback address (it may be bound to 0.0.0.0).
fn admin_of(running: &Running) -> SocketAddr {
    let addr = running.admin_addr.expect("admin listener");
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

async fn post(admin: SocketAddr, path: &str, authorization: Option<&str>, body: &str) -> Reply {
    let mut request = Request::post(path);
    if let Some(value) = authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    Client::connect(admin)
        .await
        .send(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
}

async fn reload(admin: SocketAddr, authorization: Option<&str>) -> Reply {
    post(admin, "/reload", authorization, "").await
}

async fn purge(admin: SocketAddr, authorization: Option<&str>) -> Reply {
    post(
        admin,
        "/cache/purge",
        authorization,
        r#"{"prefix": "http://example.test/"}"#,
    )
    .await
}

fn assert_unauthorized(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse-admin\"")
    );
}

async fn reads_are_open(admin: SocketAddr) {
    for path in ["/", "/healthz", "/readyz", "/metrics", "/status"] {
        let reply = common::get(admin, path).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}");
    }
}

#[tokio::test]
async fn a_token_guards_reload_and_purge_and_reads_stay_open() {
    let upstream = TestUpstream::named("app").await;
    let dir = scratch_dir("token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let extra = format!("token_file = {:?}", token.display().to_string());
    let running = start(&dir, &config("127.0.0.1:0", &extra, upstream.addr)).await;
    let admin = admin_of(&running);

    reads_are_open(admin).await;
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret-token"),
        Some("Bearer s3cret-toke"),
    ] {
        assert_unauthorized(&reload(admin, authorization).await);
        assert_unauthorized(&purge(admin, authorization).await);
    }
    let reply = reload(admin, Some("Bearer s3cret-token")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = purge(admin, Some("bearer s3cret-token")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.text().contains("\"purged\""), "{}", reply.text());

    // GET on a write endpoint is still 405, not a token question.
    assert_eq!(
        common::get(admin, "/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let status: serde_json::Value =
        serde_json::from_slice(&common::get(admin, "/status").await.body).unwrap();
    assert_eq!(status["admin"]["token"], true, "{status}");
    assert_eq!(status["admin"]["writes"], true, "{status}");
    // Refusals are not reloads: one reload ran.
    assert_eq!(status["config"]["reloads_ok"], 1, "{status}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_network_bound_listener_with_a_token_takes_only_the_token() {
    let upstream = TestUpstream::named("app").await;
    let dir = scratch_dir("wildcard");
    let token = dir.join("token");
    std::fs::write(&token, "abc123").unwrap();
    let extra = format!("token_file = {:?}", token.display().to_string());
    let running = start(&dir, &config("0.0.0.0:0", &extra, upstream.addr)).await;
    let admin = admin_of(&running);
    reads_are_open(admin).await;
    assert_unauthorized(&reload(admin, None).await);
    assert_eq!(
        reload(admin, Some("Bearer abc123")).await.status,
        StatusCode::OK
    );

    // A reload that drops the token and moves the bind to loopback cannot open writes: the
    // socket stays where it is, on every address, so writes are refused without a token.
    std::fs::write(
        dir.join("gatehouse.toml"),
        config("127.0.0.1:0", "", upstream.addr),
    )
    .unwrap();
    let reply = reload(admin, Some("Bearer abc123")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = reload(admin, None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(purge(admin, None).await.status, StatusCode::FORBIDDEN);
    running.shutdown().await;
}

#[tokio::test]
async fn writes_off_answers_403_even_with_the_token() {
    let upstream = TestUpstream::named("app").await;
    let dir = scratch_dir("off");
    let token = dir.join("token");
    std::fs::write(&token, "tok").unwrap();
    let extra = format!(
        "token_file = {:?}\nwrites = false",
        token.display().to_string()
    );
    let running = start(&dir, &config("127.0.0.1:0", &extra, upstream.addr)).await;
    let admin = admin_of(&running);
    reads_are_open(admin).await;
    for authorization in [None, Some("Bearer tok")] {
        assert_eq!(
            reload(admin, authorization).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            purge(admin, authorization).await.status,
            StatusCode::FORBIDDEN
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn loopback_without_a_token_stays_open_as_before() {
    let upstream = TestUpstream::named("app").await;
    let dir = scratch_dir("loopback");
    let running = start(&dir, &config("127.0.0.1:0", "", upstream.addr)).await;
    let admin = admin_of(&running);
    assert_eq!(reload(admin, None).await.status, StatusCode::OK);
    assert_eq!(purge(admin, None).await.status, StatusCode::OK);

    // A reload to a network-reachable bind with open writes is refused at its place, and the
    // config in force stays.
    std::fs::write(
        dir.join("gatehouse.toml"),
        config("0.0.0.0:19091", "", upstream.addr),
    )
    .unwrap();
    let reply = reload(admin, None).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains(
            "gatehouse.toml:3:8: admin.bind: the admin listener on 0.0.0.0:19091 is reachable"
        ),
        "{}",
        reply.text()
    );
    let status: serde_json::Value =
        serde_json::from_slice(&common::get(admin, "/status").await.body).unwrap();
    assert_eq!(status["config"]["reloads_failed"], 1, "{status}");
    running.shutdown().await;
}

#[tokio::test]
async fn the_token_file_is_read_again_at_each_reload() {
    let upstream = TestUpstream::named("app").await;
    let dir = scratch_dir("rotate");
    let token = dir.join("token");
    std::fs::write(&token, "first\n").unwrap();
    let extra = format!("token_file = {:?}", token.display().to_string());
    let running = start(&dir, &config("127.0.0.1:0", &extra, upstream.addr)).await;
    let admin = admin_of(&running);

    // Rotated: the reload (with the old token) reads the new one, which is then required.
    std::fs::write(&token, "second\n").unwrap();
    assert_eq!(
        reload(admin, Some("Bearer first")).await.status,
        StatusCode::OK
    );
    assert_unauthorized(&reload(admin, Some("Bearer first")).await);
    assert_eq!(
        reload(admin, Some("Bearer second")).await.status,
        StatusCode::OK
    );

    // Emptied: the reload fails with the token file's place, and the token in force stays.
    std::fs::write(&token, "\n").unwrap();
    let reply = reload(admin, Some("Bearer second")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    let report: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("gatehouse.toml:4:14: admin.token_file") && errors.contains("is empty"),
        "{errors}"
    );
    assert_eq!(
        reload(admin, Some("Bearer second")).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_unauthorized(&reload(admin, None).await);
    running.shutdown().await;
}

#[test]
fn check_refuses_open_writes_on_a_network_bound_admin_listener() {
    let dir = scratch_dir("check");
    let path = dir.join("gatehouse.toml");
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    std::fs::write(&path, config("0.0.0.0:19090", "", upstream)).unwrap();
    let outcome = common::process::run_gatehouse(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(
            "gatehouse.toml:3:8: admin.bind: the admin listener on 0.0.0.0:19090 is reachable"
        ),
        "{}",
        outcome.stderr
    );

    // Either a token or writes = false makes it acceptable.
    let token = dir.join("token");
    std::fs::write(&token, "t\n").unwrap();
    for extra in [
        format!("token_file = {:?}", token.display().to_string()),
        "writes = false".to_owned(),
    ] {
        std::fs::write(&path, config("0.0.0.0:19090", &extra, upstream)).unwrap();
        let outcome =
            common::process::run_gatehouse(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(outcome.code, Some(0), "{extra}: {}", outcome.stderr);
    }

    // A token file that is missing or empty is an error at its place.
    for (content, want) in [(None, "cannot read token file"), (Some(""), "is empty")] {
        let missing = dir.join("absent-or-empty");
        let _ = std::fs::remove_file(&missing);
        if let Some(content) = content {
            std::fs::write(&missing, content).unwrap();
        }
        let extra = format!("token_file = {:?}", missing.display().to_string());
        std::fs::write(&path, config("127.0.0.1:19090", &extra, upstream)).unwrap();
        let outcome =
            common::process::run_gatehouse(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(outcome.code, Some(1));
        assert!(
            outcome
                .stderr
                .contains("gatehouse.toml:4:14: admin.token_file: ")
                && outcome.stderr.contains(want),
            "{}",
            outcome.stderr
        );
    }
}
