//! Drives the demo backend over real loopback HTTP: the order API, its error answers, fault
//! injection and graceful shutdown, exactly as gatehouse and its load tests will see them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::demo::{
    DemoBackend, Faults, MAX_BODY_BYTES, Order, OrderStatus, OrderStore, SHUTDOWN_GRACE, serve,
};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound for any single exchange; nothing here should come close on loopback.
const PATIENCE: Duration = Duration::from_secs(5);
const NAME: &str = "kitchen-1";

struct Backend {
    addr: SocketAddr,
    demo: Arc<DemoBackend>,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<io::Result<()>>,
}

impl Backend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let demo = DemoBackend::new(
            NAME,
            Arc::new(OrderStore::new()),
            Faults::new(Duration::ZERO, 0.0),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, Arc::clone(&demo), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            demo,
            stop: Some(stop),
            served,
        }
    }

    async fn client(&self) -> Client {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits up to `within` for `serve` to return.
    async fn stopped(self, within: Duration) -> io::Result<()> {
        timeout(within, self.served)
            .await
            .expect("serve returned in time")
            .expect("serve task did not panic")
    }
}

struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn send(&mut self, method: Method, path: &str, body: impl Into<Bytes>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "demo")
            .body(Full::new(body.into()))
            .expect("well-formed request");
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let answer = timeout(PATIENCE, exchange)
            .await
            .expect("answered in time")
            .expect("HTTP exchange");
        answer.assert_demo_headers();
        answer
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Method::GET, path, Bytes::new()).await
    }

    async fn post(&mut self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, body.to_string()).await
    }

    async fn patch(&mut self, path: &str, body: &Value) -> Answer {
        self.send(Method::PATCH, path, body.to_string()).await
    }

    async fn delete(&mut self, path: &str) -> Answer {
        self.send(Method::DELETE, path, Bytes::new()).await
    }

    /// Sends each `(body, expected)` case to `method path` and asserts a 422 whose error
    /// message starts with `expected`.
    async fn assert_unprocessable(&mut self, method: Method, path: &str, cases: &[(&str, &str)]) {
        for &(body, expected) in cases {
            let answer = self.send(method.clone(), path, body.to_owned()).await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(
                answer.error().starts_with(expected),
                "{body}: got {:?}, wanted {expected:?}",
                answer.error()
            );
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn order(&self) -> Order {
        serde_json::from_slice(&self.body).expect("order body")
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("error message")
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn assert_demo_headers(&self) {
        assert_eq!(self.header("x-served-by"), Some(NAME), "{}", self.status);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.status
        );
    }
}

fn order_draft(customer: &str, items: &[&str]) -> Value {
    json!({ "customer": customer, "items": items })
}

/// Reads until the end of a response head, for interim responses on a held-open connection.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("head arrived in time")
            .expect("read head");
        assert_eq!(read, 1, "connection closed mid-head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ASCII head")
}

async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("server closed in time")
        .expect("read response");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn orders_go_through_their_whole_life() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;

    let created = client
        .post("/orders", &order_draft("ada", &["falafel", "mint tea"]))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("location"), Some("/orders/1"));
    let order = created.order();
    assert_eq!(order.id, 1);
    assert_eq!(order.customer, "ada");
    assert_eq!(order.items, ["falafel", "mint tea"]);
    assert_eq!(order.status, OrderStatus::Pending);
    assert!(
        order.created_at > 1_600_000_000,
        "created_at is unix seconds"
    );
    assert_eq!(created.json()["status"], "pending");

    let fetched = client.get("/orders/1").await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.header("cache-control"), Some("public, max-age=5"));
    assert_eq!(fetched.order(), order);

    for customer in ["grace", "edsger", "barbara"] {
        let answer = client
            .post("/orders", &order_draft(customer, &["soup"]))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let page = client.get("/orders?limit=2&offset=1").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("cache-control"), Some("public, max-age=5"));
    let page = page.json();
    assert_eq!(page["total"], 4);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    let ids: Vec<u64> = page["orders"]
        .as_array()
        .expect("orders array")
        .iter()
        .filter_map(|order| order["id"].as_u64())
        .collect();
    assert_eq!(ids, [2, 3]);

    let everything = client.get("/orders").await.json();
    assert_eq!(everything["limit"], 20);
    assert_eq!(everything["offset"], 0);
    assert_eq!(everything["orders"].as_array().map(Vec::len), Some(4));
    let beyond = client.get("/orders?offset=10").await.json();
    assert_eq!(beyond["orders"], json!([]));
    assert_eq!(beyond["total"], 4);

    let ready = client
        .patch("/orders/1", &json!({ "status": "ready" }))
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.order().status, OrderStatus::Ready);
    assert_eq!(
        client.get("/orders/1").await.order().status,
        OrderStatus::Ready
    );

    let deleted = client.delete("/orders/1").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    let gone = client.get("/orders/1").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error(), "order 1 not found");
    assert_eq!(gone.header("cache-control"), None);
    assert_eq!(
        client.delete("/orders/1").await.status,
        StatusCode::NOT_FOUND
    );
    let absent = client
        .patch("/orders/7", &json!({ "status": "delivered" }))
        .await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert_eq!(absent.error(), "order 7 not found");
    assert_eq!(backend.demo.store.len(), 3);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_are_405_with_allow() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;

    for path in ["/", "/menu", "/orders/", "/orders/1/items"] {
        let answer = client.get(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.error().contains(path), "{path}: {}", answer.error());
    }
    let non_numeric = client.get("/orders/abc").await;
    assert_eq!(non_numeric.status, StatusCode::NOT_FOUND);
    assert_eq!(non_numeric.error(), "order abc not found");

    let cases = [
        (Method::PUT, "/orders", "GET, HEAD, POST"),
        (Method::DELETE, "/orders", "GET, HEAD, POST"),
        (Method::POST, "/orders/1", "GET, HEAD, PATCH, DELETE"),
        (Method::PUT, "/orders/abc", "GET, HEAD, PATCH, DELETE"),
        (Method::POST, "/healthz", "GET, HEAD"),
        (Method::DELETE, "/_demo/faults", "GET, HEAD, POST"),
    ];
    for (method, path, allow) in cases {
        let answer = client.send(method.clone(), path, Bytes::new()).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
        assert!(
            answer.error().contains(method.as_str()),
            "{}",
            answer.error()
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_naming_the_field() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;

    let bad_orders = [
        ("", "body is not valid JSON"),
        ("{\"customer\":", "body is not valid JSON"),
        ("[1, 2]", "body must be a JSON object"),
        ("{}", "customer is required"),
        (r#"{"items":["tea"]}"#, "customer is required"),
        (
            r#"{"customer":5,"items":["tea"]}"#,
            "customer must be a string",
        ),
        (
            r#"{"customer":"  ","items":["tea"]}"#,
            "customer must not be empty",
        ),
        (r#"{"customer":"ada"}"#, "items is required"),
        (
            r#"{"customer":"ada","items":"tea"}"#,
            "items must be a list of strings",
        ),
        (
            r#"{"customer":"ada","items":[]}"#,
            "items must contain at least one item",
        ),
        (
            r#"{"customer":"ada","items":["tea",3]}"#,
            "items[1] must be a string",
        ),
        (
            r#"{"customer":"ada","items":["tea"," "]}"#,
            "items[1] must not be empty",
        ),
    ];
    client
        .assert_unprocessable(Method::POST, "/orders", &bad_orders)
        .await;
    assert!(backend.demo.store.is_empty(), "nothing bad was filed");

    let created = client.post("/orders", &order_draft("ada", &["tea"])).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let bad_changes = [
        ("{}", "status is required"),
        (r#"{"status":"cooking"}"#, "status must be one of"),
        (r#"{"status":3}"#, "status must be one of"),
        ("nope", "body is not valid JSON"),
    ];
    client
        .assert_unprocessable(Method::PATCH, "/orders/1", &bad_changes)
        .await;
    assert_eq!(
        client.get("/orders/1").await.order().status,
        OrderStatus::Pending
    );

    let bad_pages = [
        (
            "/orders?limit=abc",
            "limit must be an integer from 0 to 100",
        ),
        (
            "/orders?limit=101",
            "limit must be an integer from 0 to 100",
        ),
        ("/orders?limit=-1", "limit must be an integer from 0 to 100"),
        ("/orders?offset=-5", "offset must be a non-negative integer"),
        (
            "/orders?limit=5&offset=",
            "offset must be a non-negative integer",
        ),
    ];
    for (path, expected) in bad_pages {
        let answer = client.get(path).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer.error(), expected, "{path}");
    }

    let bad_faults = [
        (r#"{"latency":"soon"}"#, "latency must be a duration"),
        (r#"{"latency":5}"#, "latency must be a duration string"),
        (
            r#"{"error_rate":1.5}"#,
            "error_rate must be between 0 and 1",
        ),
        (r#"{"error_rate":"half"}"#, "error_rate must be a number"),
        (
            r#"{"latency":"1s","error_rate":-1}"#,
            "error_rate must be between 0 and 1",
        ),
        ("[]", "body must be a JSON object"),
    ];
    client
        .assert_unprocessable(Method::POST, "/_demo/faults", &bad_faults)
        .await;
    assert_eq!(
        client.get("/_demo/faults").await.json(),
        json!({ "latency": "0s", "error_rate": 0.0, "healthy": true }),
        "rejected changes leave the knobs alone"
    );
}

#[tokio::test]
async fn bodies_past_one_mebibyte_are_413() {
    let backend = Backend::start().await;

    // Declared too large: refused before any body byte is sent.
    let mut stream = TcpStream::connect(backend.addr).await.expect("connect");
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: demo\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("x-served-by: kitchen-1"), "{response}");
    assert!(response.contains("exceeds 1048576 bytes"), "{response}");

    // Undeclared (chunked) and too large: refused once the running total passes the limit.
    // The last chunk is a single byte so hardly anything is left unread when refusing.
    let mut request =
        b"POST /orders HTTP/1.1\r\nhost: demo\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..MAX_BODY_BYTES / chunk.len() {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"1\r\n \r\n0\r\n\r\n");
    let mut stream = TcpStream::connect(backend.addr).await.expect("connect");
    stream.write_all(&request).await.expect("send request");
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");

    // Exactly at the limit is read in full and judged on content instead.
    let mut client = backend.client().await;
    let at_limit = client
        .send(Method::POST, "/orders", vec![b' '; MAX_BODY_BYTES])
        .await;
    assert_eq!(at_limit.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;
    client.post("/orders", &order_draft("ada", &["tea"])).await;

    for path in ["/orders/1", "/orders?limit=5", "/healthz", "/_demo/faults"] {
        let get = client.get(path).await;
        let head = client.send(Method::HEAD, path, Bytes::new()).await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert!(head.body.is_empty(), "{path}");
        let length = get.body.len().to_string();
        assert_eq!(
            head.header("content-length"),
            Some(length.as_str()),
            "{path}"
        );
        assert_eq!(
            head.header("cache-control"),
            get.header("cache-control"),
            "{path}"
        );
    }
    let missing = client.send(Method::HEAD, "/orders/9", Bytes::new()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.is_empty());
}

#[tokio::test]
async fn health_reports_the_backend_name() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;
    let health = client.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), json!({ "status": "ok", "backend": NAME }));
    assert_eq!(health.header("cache-control"), None);
}

#[tokio::test]
async fn health_can_be_made_to_fail_and_recover_at_runtime() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;
    let set = client
        .post("/_demo/faults", &json!({ "healthy": false }))
        .await;
    assert_eq!(set.json()["healthy"], false);
    let health = client.get("/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(health.error().contains("unhealthy"), "{}", health.error());
    assert_eq!(
        client.get("/orders").await.status,
        StatusCode::OK,
        "orders still served"
    );
    client
        .assert_unprocessable(
            Method::POST,
            "/_demo/faults",
            &[(r#"{"healthy":"no"}"#, "healthy must be true or false")],
        )
        .await;
    client
        .post("/_demo/faults", &json!({ "healthy": true }))
        .await;
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn stats_count_order_requests_only() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;
    let stats = client.get("/_demo/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.json(), json!({ "requests": 0 }));
    assert_eq!(stats.header("cache-control"), None);

    // Health checks, fault and stats requests are not counted; every order request is,
    // whatever its method and answer (a 404 and an injected 500 included).
    client.get("/healthz").await;
    client.get("/_demo/faults").await;
    client.get("/orders?limit=1").await;
    client
        .post("/orders", &order_draft("ada", &["falafel"]))
        .await;
    client.get("/orders/1").await;
    client.get("/orders/999").await;
    client
        .post("/_demo/faults", &json!({ "error_rate": 1.0 }))
        .await;
    assert_eq!(
        client.get("/orders").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        client.get("/_demo/stats").await.json(),
        json!({ "requests": 5 })
    );
    assert_eq!(backend.demo.requests(), 5);

    let refused = client
        .send(Method::POST, "/_demo/stats", Bytes::new())
        .await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn injected_errors_hit_orders_but_never_health() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;
    client.post("/orders", &order_draft("ada", &["tea"])).await;

    let set = client
        .post("/_demo/faults", &json!({ "error_rate": 1.0 }))
        .await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(
        set.json(),
        json!({ "latency": "0s", "error_rate": 1.0, "healthy": true })
    );
    assert_eq!(backend.demo.faults.error_rate(), 1.0);

    for (method, path) in [
        (Method::GET, "/orders"),
        (Method::GET, "/orders/1"),
        (Method::POST, "/orders"),
        (Method::DELETE, "/orders/1"),
    ] {
        let answer = client.send(method.clone(), path, Bytes::new()).await;
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {path}"
        );
        assert_eq!(answer.error(), "injected fault");
        assert_eq!(answer.header("cache-control"), None);
    }
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(client.get("/_demo/faults").await.status, StatusCode::OK);

    let cleared = client
        .post("/_demo/faults", &json!({ "error_rate": 0 }))
        .await;
    assert_eq!(cleared.json()["error_rate"], 0.0);
    assert_eq!(client.get("/orders/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn added_latency_delays_orders_only() {
    let backend = Backend::start().await;
    let mut client = backend.client().await;
    let latency = Duration::from_millis(200);

    let set = client
        .post("/_demo/faults", &json!({ "latency": "200ms" }))
        .await;
    assert_eq!(
        set.json(),
        json!({ "latency": "200ms", "error_rate": 0.0, "healthy": true })
    );
    assert_eq!(backend.demo.faults.latency(), latency);

    let started = Instant::now();
    assert_eq!(client.get("/orders").await.status, StatusCode::OK);
    let elapsed = started.elapsed();
    assert!(elapsed >= latency, "answered after {elapsed:?}");

    // Health is exempt; a 200 ms sleep there would make this loop take at least a second.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    }
    assert!(started.elapsed() < latency * 5, "health was delayed");

    backend.demo.faults.set_latency(Duration::ZERO);
    assert_eq!(
        client.get("/_demo/faults").await.json()["latency"],
        json!("0s")
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_on_the_same_port() {
    let backend = Backend::start().await;
    let stream = TcpStream::connect(backend.addr).await.expect("connect");
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let base = format!("http://{}", backend.addr);

    let mut exchange = async |method: Method, path: &str, body: Value| {
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .body(Full::new(body))
            .expect("well-formed request");
        let response = timeout(PATIENCE, sender.send_request(request))
            .await
            .expect("answered in time")
            .expect("HTTP/2 exchange");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let answer = Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        answer.assert_demo_headers();
        answer
    };

    let health = exchange(Method::GET, "/healthz", Value::Null).await;
    assert_eq!(health.status, StatusCode::OK);
    let created = exchange(Method::POST, "/orders", order_draft("ada", &["tea"])).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let get = exchange(Method::GET, "/orders/1", Value::Null).await;
    let head = exchange(Method::HEAD, "/orders/1", Value::Null).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    let length = get.body.len().to_string();
    assert_eq!(head.header("content-length"), Some(length.as_str()));
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_then_returns() {
    let mut backend = Backend::start().await;
    let mut stream = TcpStream::connect(backend.addr).await.expect("connect");
    let body = order_draft("ada", &["tea"]).to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: demo\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    // The server sends 100 Continue only once the handler asks for the body, so from here on
    // the request is in flight inside the backend.
    let interim = read_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    backend.begin_shutdown();
    assert!(
        !backend.served.is_finished(),
        "serve must wait for the in-flight request"
    );
    stream.write_all(body.as_bytes()).await.expect("send body");
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("x-served-by: kitchen-1"), "{response}");

    let addr = backend.addr;
    backend.stopped(PATIENCE).await.expect("clean shutdown");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener must be closed after serve returns"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_promptly() {
    let mut backend = Backend::start().await;
    let mut client = backend.client().await;
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);

    backend.begin_shutdown();
    // Well under the grace period: an idle connection must not hold shutdown up.
    backend
        .stopped(SHUTDOWN_GRACE / 2)
        .await
        .expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_gives_up_on_stuck_requests_after_the_grace_period() {
    let mut backend = Backend::start().await;
    let mut stream = TcpStream::connect(backend.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /orders HTTP/1.1\r\nhost: demo\r\nexpect: 100-continue\r\ncontent-length: 10\r\n\r\n",
        )
        .await
        .expect("send head");
    let interim = read_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    // The body never comes, so only the grace period can end this request.
    let started = Instant::now();
    backend.begin_shutdown();
    backend
        .stopped(SHUTDOWN_GRACE + PATIENCE)
        .await
        .expect("clean shutdown");
    assert!(started.elapsed() >= SHUTDOWN_GRACE);
    let mut rest = Vec::new();
    let closed = timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the stuck connection is dropped");
}
