//! Static files through a running gatehouse on real sockets: types and validators,
//! conditional requests, byte ranges, HEAD, precompressed siblings, index and `try_files`
//! (a single-page app, a fallback to a real upstream), and a root no request can leave
//! (a table of traversal attempts against a secret beside the root, symbolic links, hidden
//! files). `files_memory.rs` streams a 1 GiB file in a process of its own.

mod common;

use common::{Reply, TestUpstream, WAIT};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "TOP-SECRET-BESIDE-THE-ROOT";

const HEAD: &str = common::ONE_LISTENER;

/// A directory of its own for one test, removed when dropped: `root/` is served, `secret.txt`
/// sits beside it.
struct Site {
    dir: PathBuf,
}

static SITES: AtomicUsize = AtomicUsize::new(0);

impl Site {
    fn new() -> Self {
        let n = SITES.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gatehouse-files-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
        std::fs::write(root.join("index.html"), "<h1>app shell</h1>").unwrap();
        std::fs::write(root.join("style.css"), "body { color: red }").unwrap();
        std::fs::write(root.join("app.js"), "console.log('identity')").unwrap();
        std::fs::write(root.join("app.js.gz"), "gzip bytes").unwrap();
        std::fs::write(root.join("app.js.br"), "brotli bytes").unwrap();
        std::fs::write(root.join("docs/index.html"), "docs index").unwrap();
        std::fs::write(root.join("digits.txt"), "0123456789").unwrap();
        std::fs::write(root.join(".env"), "PASSWORD=hunter2").unwrap();
        std::fs::write(root.join(".git/config"), "[core]").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("style.css"), root.join("inside.css")).unwrap();
        Site { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files_route(root: &Path, extra: &str) -> String {
    format!(
        "{HEAD}\n[[route]]\npath_prefix = \"/\"\nfiles = {{ root = \"{}\"{extra} }}\n",
        root.display()
    )
}

async fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    common::send_to_host(addr, "site.example", method, target, headers).await
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    send(addr, "GET", target, &[]).await
}

/// One request written as raw bytes (for targets an HTTP library would not send), and the
/// status and whole response that came back.
async fn raw_get(addr: SocketAddr, target: &[u8]) -> (u16, String) {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: site.example\r\nConnection: close\r\n\r\n");
    let text = common::raw_exchange(addr, &request).await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn content_types_validators_and_head() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(
        &site.root(),
        ", cache_control = \"public, max-age=60\"",
    ))
    .await;
    let addr = gatehouse.listener_addrs[0];

    for (path, content_type) in [
        ("/style.css", "text/css"),
        ("/index.html", "text/html"),
        ("/digits.txt", "text/plain"),
    ] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        assert!(reply.header("etag").is_some_and(|t| t.starts_with('"')));
        assert!(
            reply
                .header("last-modified")
                .is_some_and(|d| d.ends_with(" GMT"))
        );
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
        assert_eq!(reply.header("cache-control"), Some("public, max-age=60"));
    }
    let reply = get(addr, "/digits.txt").await;
    assert_eq!(reply.text(), "0123456789");
    assert_eq!(reply.header("content-length"), Some("10"));

    let head = send(addr, "HEAD", "/digits.txt", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(head.header("etag"), reply.header("etag"));
    assert!(head.body.is_empty());
    // And on the wire: the head, nothing after it.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"HEAD /digits.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.ends_with("\r\n\r\n"), "{raw}");

    let post = send(addr, "POST", "/digits.txt", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn answers_are_counted_per_route_and_go_over_http2() {
    let site = Site::new();
    let config = format!(
        "{}\n[[route]]\nname = \"site\"\npath_prefix = \"/\"\nfiles = {{ root = \"{}\", chunk_size = \"4KiB\" }}\n",
        HEAD.replace("bind = \"\"", "bind = \"127.0.0.1:0\""),
        site.root().display()
    );
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(site.root().join("streamed.bin"), &content).unwrap();
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];
    let admin = gatehouse.admin_addr.unwrap();
    assert_eq!(get(addr, "/digits.txt").await.status, 200);
    assert_eq!(get(addr, "/nope").await.status, 404);
    let reply = common::get_h2(addr, "/digits.txt").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "0123456789")
    );
    let reply = common::get_h2(addr, "/streamed.bin").await;
    assert!(reply.body == content[..], "a streamed file over HTTP/2");

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = common::get(admin, "/metrics").await.text();
        let count = |code: &str, protocol: &str| {
            common::metric_sample(
                &text,
                "gatehouse_http_requests_total",
                &[("route", "site"), ("code", code), ("protocol", protocol)],
            )
        };
        if count("200", "HTTP/1.1") == Some(1.0)
            && count("200", "HTTP/2") == Some(2.0)
            && count("404", "HTTP/1.1") == Some(1.0)
            && count("404", "HTTP/2").is_none()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn a_routes_cors_and_response_headers_apply_to_files() {
    let site = Site::new();
    let config = format!(
        "{HEAD}\n[cors.web]\norigins = [\"https://app.example\"]\n\n[[route]]\npath_prefix = \"/\"\ncors = \"web\"\nresponse_headers = {{ set = {{ \"x-frame-options\" = \"DENY\" }} }}\nfiles = {{ root = \"{}\" }}\n",
        site.root().display()
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];
    let reply = send(
        addr,
        "GET",
        "/digits.txt",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    let reply = send(
        addr,
        "GET",
        "/digits.txt",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(
        get(addr, "/nope").await.header("x-frame-options"),
        Some("DENY")
    );
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn small_files_kept_in_memory_answer_alike_and_are_looked_at_again() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(
        &site.root(),
        ", memory_cache = \"1MiB\", revalidate_after = \"200ms\", precompressed = [\"br\", \"gzip\"]",
    ))
    .await;
    let addr = gatehouse.listener_addrs[0];
    for _ in 0..2 {
        let reply = get(addr, "/digits.txt").await;
        assert_eq!(reply.text(), "0123456789");
        assert_eq!(reply.header("content-length"), Some("10"));
        let tag = reply.header("etag").unwrap().to_owned();
        assert_eq!(
            send(addr, "GET", "/digits.txt", &[("if-none-match", &tag)])
                .await
                .status,
            304
        );
        let ranged = send(addr, "GET", "/digits.txt", &[("range", "bytes=1-2,-1")]).await;
        assert_eq!(ranged.status, 206);
        assert!(
            ranged.text().contains("\r\n\r\n12\r\n") && ranged.text().contains("\r\n\r\n9\r\n")
        );
        let head = send(addr, "HEAD", "/digits.txt", &[]).await;
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), Some("10"));
        // Each set of codings a client takes finds its own file.
        let br = send(addr, "GET", "/app.js", &[("accept-encoding", "br")]).await;
        assert_eq!(br.text(), "brotli bytes");
        let plain = get(addr, "/app.js").await;
        assert_eq!(plain.text(), "console.log('identity')");
        assert_eq!(get(addr, "/").await.text(), "<h1>app shell</h1>");
    }
    // A change on disk is served once the entry is due for a look at the disk.
    std::fs::write(site.root().join("digits.txt"), "abcdefghij").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if get(addr, "/digits.txt").await.text() == "abcdefghij" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the change was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::fs::remove_file(site.root().join("digits.txt")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while get(addr, "/digits.txt").await.status != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the removal was never seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gatehouse.shutdown().await;

    // Within the window the disk is not looked at: what was read is what is served.
    let gatehouse = common::start_gatehouse(&files_route(
        &site.root(),
        ", memory_cache = \"1MiB\", revalidate_after = \"1h\"",
    ))
    .await;
    let addr = gatehouse.listener_addrs[0];
    assert_eq!(get(addr, "/style.css").await.text(), "body { color: red }");
    std::fs::write(site.root().join("style.css"), "body { color: blue }").unwrap();
    assert_eq!(get(addr, "/style.css").await.text(), "body { color: red }");
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn a_reload_moves_the_root_and_a_missing_root_keeps_the_old_one() {
    let first = Site::new();
    let second = Site::new();
    std::fs::write(second.root().join("digits.txt"), "9876543210").unwrap();
    let path = first.dir.join("gatehouse.toml");
    std::fs::write(&path, files_route(&first.root(), "")).unwrap();
    let running = gatehouse::app::Running::start_file(&path).await.unwrap();
    let addr = running.listener_addrs[0];
    assert_eq!(get(addr, "/digits.txt").await.text(), "0123456789");

    std::fs::write(&path, files_route(&second.root(), "")).unwrap();
    let report = serde_json::to_value(running.reloader.reload("test").await).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(get(addr, "/digits.txt").await.text(), "9876543210");

    std::fs::write(&path, files_route(&first.dir.join("gone"), "")).unwrap();
    let report = serde_json::to_value(running.reloader.reload("test").await).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(report.to_string().contains("files.root"), "{report}");
    assert_eq!(get(addr, "/digits.txt").await.text(), "9876543210");
    running.shutdown().await;
}

#[tokio::test]
async fn conditional_requests_answer_304_and_412() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(&site.root(), "")).await;
    let addr = gatehouse.listener_addrs[0];
    let full = get(addr, "/style.css").await;
    let etag = full.header("etag").unwrap().to_owned();
    let modified = full.header("last-modified").unwrap().to_owned();

    let reply = send(addr, "GET", "/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some(etag.as_str()));
    let reply = send(
        addr,
        "GET",
        "/style.css",
        &[("if-modified-since", &modified)],
    )
    .await;
    assert_eq!(reply.status, 304);
    let reply = send(addr, "HEAD", "/style.css", &[("if-none-match", "\"x\", *")]).await;
    assert_eq!(reply.status, 304);
    let reply = send(addr, "GET", "/style.css", &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "body { color: red }");

    let reply = send(addr, "GET", "/style.css", &[("if-match", "\"stale\"")]).await;
    assert_eq!(reply.status, 412);
    let reply = send(addr, "GET", "/style.css", &[("if-match", &etag)]).await;
    assert_eq!(reply.status, 200);
    let reply = send(
        addr,
        "GET",
        "/style.css",
        &[("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    )
    .await;
    assert_eq!(reply.status, 412);
    let reply = send(
        addr,
        "GET",
        "/style.css",
        &[("if-unmodified-since", &modified)],
    )
    .await;
    assert_eq!(reply.status, 200);
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn byte_ranges_single_multiple_and_unsatisfiable() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(&site.root(), "")).await;
    let addr = gatehouse.listener_addrs[0];

    let reply = send(addr, "GET", "/digits.txt", &[("range", "bytes=2-4")]).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(reply.text(), "234");
    let reply = send(addr, "GET", "/digits.txt", &[("range", "bytes=-3")]).await;
    assert_eq!(reply.text(), "789");

    let reply = send(addr, "GET", "/digits.txt", &[("range", "bytes=0-1,6-7")]).await;
    assert_eq!(reply.status, 206);
    let content_type = reply.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    let expected = format!(
        "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
         \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 6-7/10\r\n\r\n67\
         \r\n--{boundary}--\r\n"
    );
    assert_eq!(reply.text(), expected);
    assert_eq!(
        reply.header("content-length"),
        Some(expected.len().to_string().as_str())
    );

    let reply = send(addr, "GET", "/digits.txt", &[("range", "bytes=10-")]).await;
    assert_eq!(reply.status, 416);
    assert_eq!(reply.header("content-range"), Some("bytes */10"));
    assert!(reply.body.is_empty());

    // A stale If-Range gets the whole file.
    let reply = send(
        addr,
        "GET",
        "/digits.txt",
        &[("range", "bytes=0-0"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "0123456789");
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(
        &site.root(),
        ", precompressed = [\"br\", \"zstd\", \"gzip\"]",
    ))
    .await;
    let addr = gatehouse.listener_addrs[0];
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
    let cases: [Case<'_>; 5] = [
        (
            &[("accept-encoding", "gzip, br")],
            "brotli bytes",
            Some("br"),
        ),
        (&[("accept-encoding", "gzip")], "gzip bytes", Some("gzip")),
        (
            &[("accept-encoding", "zstd")],
            "console.log('identity')",
            None,
        ),
        (
            &[("accept-encoding", "br;q=0.1, gzip;q=0.9")],
            "gzip bytes",
            Some("gzip"),
        ),
        (&[], "console.log('identity')", None),
    ];
    let mut tags = Vec::new();
    for (headers, body, encoding) in cases {
        let reply = send(addr, "GET", "/app.js", headers).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), body, "{headers:?}");
        assert_eq!(reply.header("content-encoding"), encoding, "{headers:?}");
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
        assert_eq!(reply.header("content-type"), Some("text/javascript"));
        tags.push((encoding, reply.header("etag").unwrap().to_owned()));
    }
    // Each coding is its own representation, with its own validator.
    assert_ne!(tags[0].1, tags[1].1);
    // A sibling is never asked for by its own name through the coding.
    let reply = send(addr, "GET", "/style.css", &[("accept-encoding", "br")]).await;
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn index_files_directories_and_the_default_lookup() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(&site.root(), "")).await;
    let addr = gatehouse.listener_addrs[0];
    let reply = get(addr, "/").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "<h1>app shell</h1>")
    );
    let reply = get(addr, "/docs/").await;
    assert_eq!(reply.text(), "docs index");
    let reply = get(addr, "/docs?x=1").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/docs/?x=1"));
    // No listing: a directory without an index is forbidden, as nginx's autoindex off.
    assert_eq!(get(addr, "/empty/").await.status, 403);
    assert_eq!(get(addr, "/missing.html").await.status, 404);
    assert_eq!(get(addr, "/digits.txt/").await.status, 404);
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn directories_without_an_index_are_listed_where_the_route_says_so() {
    let site = Site::new();
    let root = site.root();
    std::fs::write(root.join("empty/report <1>.txt"), "twelve bytes").unwrap();
    std::fs::create_dir(root.join("empty/nested")).unwrap();
    std::fs::write(root.join("empty/.hidden"), "no").unwrap();
    std::os::unix::fs::symlink(site.dir.join("secret.txt"), root.join("empty/leak.txt")).unwrap();
    std::os::unix::fs::symlink(root.join("digits.txt"), root.join("empty/digits.txt")).unwrap();
    let gatehouse = common::start_gatehouse(&files_route(&root, ", listing = \"html\"")).await;
    let addr = gatehouse.listener_addrs[0];

    let reply = get(addr, "/empty/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = reply.text();
    assert!(page.contains("<title>Index of /empty/</title>"), "{page}");
    let nested = page.find("<a href=\"nested/\">nested/</a>").expect(&page);
    let report = page
        .find("<a href=\"report%20%3C1%3E.txt\">report &lt;1&gt;.txt</a></td><td>")
        .expect(&page);
    let digits = page
        .find("<a href=\"digits.txt\">digits.txt</a>")
        .expect(&page);
    assert!(
        nested < digits && digits < report,
        "directories first, then by name"
    );
    assert!(page.contains("<td>12</td>") && page.contains("<td>10</td>"));
    for absent in [".hidden", "leak.txt", SECRET] {
        assert!(!page.contains(absent), "{absent} listed: {page}");
    }
    // A listed link is served, and a listing's HEAD has its length without the body.
    assert_eq!(
        get(addr, "/empty/report%20%3C1%3E.txt").await.text(),
        "twelve bytes"
    );
    let head = send(addr, "HEAD", "/empty/", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(page.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    // A directory with an index still serves it; one without the slash is redirected.
    assert_eq!(get(addr, "/docs/").await.text(), "docs index");
    assert_eq!(get(addr, "/empty").await.status, 301);
    gatehouse.shutdown().await;

    let gatehouse = common::start_gatehouse(&files_route(&root, ", listing = \"json\"")).await;
    let reply = get(gatehouse.listener_addrs[0], "/empty/nested/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), "[]");
    let reply = get(gatehouse.listener_addrs[0], "/empty/").await;
    let listed: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["name"].as_str())
        .collect();
    assert_eq!(names, ["nested", "digits.txt", "report <1>.txt"]);
    assert_eq!(listed[0]["type"], "directory");
    assert_eq!(listed[2]["size"], 12);
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn try_files_serves_a_single_page_app() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(
        &site.root(),
        ", try_files = [\"$uri\", \"$uri/\", \"/index.html\"]",
    ))
    .await;
    let addr = gatehouse.listener_addrs[0];
    assert_eq!(get(addr, "/style.css").await.text(), "body { color: red }");
    assert_eq!(get(addr, "/docs/").await.text(), "docs index");
    // `$uri/` finds the directory; as in nginx, its path gets the slash first.
    let reply = get(addr, "/docs").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/docs/"));
    for path in ["/orders/42", "/settings", "/"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.text(), "<h1>app shell</h1>", "{path}");
        assert_eq!(reply.header("content-type"), Some("text/html"));
    }
    // Hidden files are refused outright, not answered with the app shell.
    assert_eq!(get(addr, "/.env").await.status, 404);
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn try_files_falls_back_to_the_routes_upstream() {
    let site = Site::new();
    let backend = TestUpstream::named("backend").await;
    let config = format!(
        "{HEAD}\n[upstream.backend]\nservers = [\"{}\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"backend\"\nfiles = {{ root = \"{}\", try_files = [\"$uri\", \"@backend\"] }}\n",
        backend.addr,
        site.root().display()
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];
    assert_eq!(get(addr, "/style.css").await.text(), "body { color: red }");
    let reply = get(addr, "/api/orders?page=2").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "backend");
    let reply = send(addr, "POST", "/api/orders", &[]).await;
    assert_eq!(reply.text(), "backend", "other methods go to the upstream");
    let received = backend.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].uri.path_and_query().unwrap(),
        "/api/orders?page=2"
    );
    assert_eq!(received[1].method, http::Method::POST);
    // A traversal is refused at the edge, never handed to the upstream.
    let (status, _) = raw_get(addr, b"/%2e%2e/secret.txt").await;
    assert_eq!(status, 400);
    assert_eq!(get(addr, "/.env").await.status, 404);
    assert_eq!(backend.received().len(), 2);
    gatehouse.shutdown().await;
}

/// Each attempt to read outside the root, or what the root hides. None may answer 200 (but
/// with a single-page app's shell), and no answer may carry the secret beside the root or a
/// hidden file's content.
const TRAVERSALS: &[&[u8]] = &[
    b"/../secret.txt",
    b"/../../secret.txt",
    b"/docs/../../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E/secret.txt",
    b"/.%2e/secret.txt",
    b"/%2e./secret.txt",
    b"/..%2fsecret.txt",
    b"/..%2Fsecret.txt",
    b"/%2e%2e%2fsecret.txt",
    b"/..%5csecret.txt",
    b"/..\\secret.txt",
    b"/%252e%252e/secret.txt",
    b"/%252e%252e%252fsecret.txt",
    b"/%c0%ae%c0%ae/secret.txt",
    b"/%c0%ae%c0%ae%c0%afsecret.txt",
    b"/%e0%80%ae%e0%80%ae/secret.txt",
    b"/%ef%bc%8e%ef%bc%8e/secret.txt",
    b"/%ef%bc%8e%ef%bc%8e%ef%bc%8fsecret.txt",
    b"/digits.txt%00.html",
    b"/%00/../secret.txt",
    b"/leak.txt",
    b"/up/secret.txt",
    b"/.env",
    b"/%2eenv",
    b"/.git/config",
    b"/docs/../.env",
    b"//../secret.txt",
    b"/./../secret.txt",
    b"/docs/./../../secret.txt",
    b"/%5c..%5csecret.txt",
];

#[tokio::test]
async fn traversal_attempts_never_leave_the_root() {
    let site = Site::new();
    for extra in ["", ", try_files = [\"$uri\", \"$uri/\", \"/index.html\"]"] {
        let gatehouse = common::start_gatehouse(&files_route(&site.root(), extra)).await;
        let addr = gatehouse.listener_addrs[0];
        for target in TRAVERSALS {
            let (status, text) = raw_get(addr, target).await;
            let shown = String::from_utf8_lossy(target);
            // A single-page app answers a name it does not have with its shell; nothing
            // else is a 200.
            let shell = !extra.is_empty() && status == 200 && text.ends_with("<h1>app shell</h1>");
            assert!(
                [400, 403, 404].contains(&status) || shell,
                "{shown} ({extra}): {status}\n{text}"
            );
            assert!(!text.contains(SECRET), "{shown}: the secret leaked");
            assert!(
                !text.contains("hunter2") && !text.contains("[core]"),
                "{shown}"
            );
        }
        // The same directory is served as usual.
        assert_eq!(get(addr, "/inside.css").await.text(), "body { color: red }");
        gatehouse.shutdown().await;
    }
}

/// Targets put together at random from the pieces traversals are made of: whatever comes
/// back, it is never the secret beside the root nor a hidden file.
#[tokio::test]
async fn random_targets_never_leave_the_root() {
    const PIECES: &[&str] = &[
        "/",
        "..",
        ".",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "%25",
        "%00",
        "%c0%ae",
        "%ef%bc%8e",
        "secret.txt",
        "root",
        "up",
        "leak.txt",
        ".env",
        "docs",
        "%252e",
        "//",
    ];
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(&site.root(), "")).await;
    let addr = gatehouse.listener_addrs[0];
    let mut rng = fastrand::Rng::with_seed(0x5eed_f11e);
    for _ in 0..300 {
        let mut target = String::from("/");
        for _ in 0..rng.usize(1..8) {
            target.push_str(PIECES[rng.usize(..PIECES.len())]);
        }
        let (status, text) = raw_get(addr, target.as_bytes()).await;
        assert!(status != 0, "{target}: no answer");
        assert!(!text.contains(SECRET), "{target}: the secret leaked");
        assert!(
            !text.contains("hunter2"),
            "{target}: a hidden file was served"
        );
    }
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn symlinks_out_of_the_root_and_hidden_files_only_when_allowed() {
    let site = Site::new();
    let gatehouse = common::start_gatehouse(&files_route(&site.root(), "")).await;
    let addr = gatehouse.listener_addrs[0];
    assert_eq!(get(addr, "/leak.txt").await.status, 404);
    assert_eq!(get(addr, "/.env").await.status, 404);
    assert_eq!(get(addr, "/inside.css").await.status, 200);
    gatehouse.shutdown().await;

    let gatehouse = common::start_gatehouse(&files_route(
        &site.root(),
        ", symlinks_outside_root = true, hidden = true",
    ))
    .await;
    let addr = gatehouse.listener_addrs[0];
    assert_eq!(get(addr, "/leak.txt").await.text(), SECRET);
    assert_eq!(get(addr, "/.env").await.text(), "PASSWORD=hunter2");
    // `..` is refused whatever the settings.
    assert_eq!(raw_get(addr, b"/%2e%2e/secret.txt").await.0, 400);
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn a_prefix_route_serves_the_example_directory() {
    let config = format!(
        "{HEAD}\n[[route]]\npath_prefix = \"/static/\"\nstrip_prefix = true\nfiles = {{ root = \"config/examples/static\" }}\n"
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];
    let reply = get(addr, "/static/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert!(reply.text().contains("Served from disk by gatehouse"));
    let reply = get(addr, "/static/style.css").await;
    assert_eq!(reply.header("content-type"), Some("text/css"));
    assert_eq!(get(addr, "/static").await.status, 301);
    gatehouse.shutdown().await;
}

#[tokio::test]
async fn a_file_larger_than_a_chunk_streams_whole_and_in_ranges() {
    let site = Site::new();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(site.root().join("big.bin"), &content).unwrap();
    let gatehouse =
        common::start_gatehouse(&files_route(&site.root(), ", chunk_size = \"16KiB\"")).await;
    let addr = gatehouse.listener_addrs[0];
    let reply = get(addr, "/big.bin").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.body.len(), content.len());
    assert!(reply.body == content[..]);
    let reply = send(
        addr,
        "GET",
        "/big.bin",
        &[("range", "bytes=100000-199999,2999990-")],
    )
    .await;
    assert_eq!(reply.status, 206);
    let text = reply.body;
    let first = &content[100_000..200_000];
    assert!(text.windows(first.len()).any(|w| w == first));
    assert!(text.windows(10).any(|w| w == &content[2_999_990..]));
    gatehouse.shutdown().await;
}

/// Over plain HTTP/1.1 a file's single range goes out by `sendfile`: pipelined behind a full
/// socket buffer, its bytes exact, the next response on the connection intact, and the bytes
/// counted as sent.
#[tokio::test]
async fn a_single_range_sent_by_the_kernel_keeps_the_connection_and_its_count() {
    let site = Site::new();
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.root().join("big.bin"), &content).unwrap();
    let config = format!(
        "{}\n[[route]]\nname = \"site\"\npath_prefix = \"/\"\nfiles = {{ root = \"{}\" }}\n",
        HEAD.replace("bind = \"\"", "bind = \"127.0.0.1:0\""),
        site.root().display()
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /big.bin HTTP/1.1\r\nHost: site.example\r\nRange: bytes=5-1999994\r\n\r\n\
              GET /big.bin HTTP/1.1\r\nHost: site.example\r\n\r\n\
              GET /digits.txt HTTP/1.1\r\nHost: site.example\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let expected_len = 2 * content.len();
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed early");
            received.extend_from_slice(&buf[..n]);
            if received.len() > expected_len && received.ends_with(b"0123456789") {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("all three answers in time");

    let (first, rest) = split_response(&received);
    assert!(first.0.starts_with("http/1.1 206"), "{}", first.0);
    assert!(
        first.0.contains("content-range: bytes 5-1999994/2000000"),
        "{}",
        first.0
    );
    assert!(*first.1 == content[5..1_999_995]);
    let (second, rest) = split_response(rest);
    assert!(second.0.starts_with("http/1.1 200"), "{}", second.0);
    assert!(*second.1 == content[..]);
    let (third, rest) = split_response(rest);
    assert!(third.0.starts_with("http/1.1 200"), "{}", third.0);
    assert_eq!(third.1, b"0123456789");
    assert!(rest.is_empty());

    let admin = gatehouse.admin_addr.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let expected = (1_999_990 + 2_000_000 + 10) as f64;
    loop {
        let text = common::get(admin, "/metrics").await.text();
        let sent = common::metric_sample(
            &text,
            "gatehouse_http_sent_bytes_total",
            &[("route", "site")],
        );
        if sent == Some(expected) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sent {sent:?}, not {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gatehouse.shutdown().await;
}

/// One response off the front of `bytes` (its head as text, its Content-Length body), and what
/// follows it.
fn split_response(bytes: &[u8]) -> ((String, &[u8]), &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let (body, rest) = bytes[end..].split_at(length);
    ((head, body), rest)
}

#[test]
fn bad_files_settings_are_reported_with_their_place() {
    let site = Site::new();
    let root = site.root();
    let cases = [
        (
            format!(
                "files = {{ root = \"{}\", try_files = [\"=404\", \"$uri\"] }}",
                root.display()
            ),
            "may only be the last entry",
        ),
        (
            format!(
                "files = {{ root = \"{}\", try_files = [\"$uri\", \"@api\"] }}",
                root.display()
            ),
            "set `upstream = \"api\"`",
        ),
        (
            format!(
                "files = {{ root = \"{}\", try_files = [\"$host\"] }}",
                root.display()
            ),
            "only variable",
        ),
        (
            format!(
                "files = {{ root = \"{}\", precompressed = [\"deflate\"] }}",
                root.display()
            ),
            "unknown coding",
        ),
        (
            "files = { root = \"/no/such/dir\" }".to_owned(),
            "cannot read",
        ),
        (
            format!(
                "files = {{ root = \"{}\", listing = \"xml\" }}",
                root.display()
            ),
            "unknown listing format",
        ),
        (
            format!("files = {{ root = \"{}\", hiden = true }}", root.display()),
            "hiden",
        ),
    ];
    for (files, expected) in cases {
        let config = format!("{HEAD}\n[[route]]\npath_prefix = \"/\"\n{files}\n");
        let error = gatehouse::config::load_str(Path::new("site.toml"), &config)
            .err()
            .unwrap_or_else(|| panic!("{files} was accepted"))
            .to_string();
        assert!(error.contains(expected), "{files}: {error}");
        assert!(error.contains("site.toml:"), "{error}");
    }
}
