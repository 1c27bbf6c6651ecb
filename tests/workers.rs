//! Thread per core, in the real binary: with two workers every listener has two accepting
//! sockets, connections spread over both are all served, each worker keeps its own upstream
//! connections, a reload reaches both, and SIGTERM drains both.

mod common;

use common::process::Process;
use common::{TestUpstream, WAIT, unclaimed_port};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn config(upstream: SocketAddr, listen: SocketAddr, tag: &str) -> String {
    format!(
        r#"
[process]
worker_threads = 2
scheduler = "per_core"

[log]
access = "json"

[admin]
bind = ""

[[listener]]
name = "public"
bind = "{listen}"

[[route]]
path_prefix = "/"
upstream = "app"
response_headers = {{ set = {{ x-config = "{tag}" }} }}

[upstream.app]
servers = ["{upstream}"]
"#
    )
}

/// Listening TCP sockets on 127.0.0.1:`port`, from the kernel's table.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// Sends `count` GETs, each on a new connection, and returns their `x-config` values.
async fn tags_over_new_connections(listen: SocketAddr, count: usize) -> Vec<String> {
    let mut tags = Vec::new();
    for _ in 0..count {
        let reply = tokio::time::timeout(WAIT, common::get(listen, "/"))
            .await
            .expect("every connection is served, whichever worker accepted it");
        assert_eq!(reply.status, 200);
        tags.push(
            reply
                .headers
                .get("x-config")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        );
    }
    tags
}

#[tokio::test]
async fn two_workers_accept_on_their_own_sockets_and_serve_reload_and_drain_together() {
    let upstream = TestUpstream::named("app").await;
    let listen = SocketAddr::from(([127, 0, 0, 1], unclaimed_port()));
    let mut process = Process::spawn(&config(upstream.addr, listen, "first"), "workers");
    process.addr_logged("listening").await;

    assert_eq!(listening_sockets(listen.port()), 2, "one socket per worker");
    let tags = tags_over_new_connections(listen, 40).await;
    assert!(tags.iter().all(|t| t == "first"), "{tags:?}");
    // One after another, the requests reused an idle upstream connection whenever their
    // worker had one: each worker keeps its own, so the upstream saw exactly two (40 new
    // client connections all landing on one socket has a chance of 2^-39).
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);

    // The watched file changes: both workers serve the new config.
    std::fs::write(
        process.config_path(),
        config(upstream.addr, listen, "second"),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let tags = tags_over_new_connections(listen, 40).await;
        if tags.iter().all(|t| t == "second") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload not seen everywhere: {tags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    process.sigterm();
    let exit = process.exit_by(Instant::now() + WAIT).await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(listening_sockets(listen.port()), 0);
}
