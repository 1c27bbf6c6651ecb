//! Load balancing through a running gatehouse: how real requests spread over real upstream
//! servers under round robin, weighted round robin, least connections and p2c EWMA.

mod common;

use bytes::Bytes;
use common::{Client, HeldUpstream, TestUpstream, WAIT, balanced_config, server_entries};
use gatehouse::app::Running;
use http::Response;
use http_body_util::Full;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// Three named upstreams, `a`, `b` and `c`.
async fn three_upstreams() -> [TestUpstream; 3] {
    [
        TestUpstream::named("a").await,
        TestUpstream::named("b").await,
        TestUpstream::named("c").await,
    ]
}

/// gatehouse balancing with `balance` over `servers` entries (see `common::balanced_config`).
async fn start_balanced(balance: &str, servers: &[String]) -> Running {
    common::start_gatehouse(&balanced_config(balance, servers)).await
}

/// Sends `n` sequential GETs on one keep-alive connection and counts replies by body (the
/// upstream's name), checking each is a 200.
async fn count_sequential(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut client = Client::connect(addr).await;
    let mut counts = HashMap::new();
    for i in 0..n {
        let reply = client.get(&format!("/seq/{i}")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        *counts.entry(reply.text()).or_insert(0) += 1;
    }
    counts
}

/// Runs `tasks` concurrent `count_sequential` clients of `per_task` GETs each (each within
/// `WAIT`) and sums their counts.
async fn count_concurrent(
    addr: SocketAddr,
    tasks: usize,
    per_task: usize,
) -> HashMap<String, usize> {
    let tasks: Vec<_> = (0..tasks)
        .map(|_| tokio::spawn(count_sequential(addr, per_task)))
        .collect();
    let mut total: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let counts = timeout(WAIT, task)
            .await
            .expect("client task finishes in time")
            .expect("client task did not panic");
        for (name, n) in counts {
            *total.entry(name).or_insert(0) += n;
        }
    }
    total
}

fn count_of(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn round_robin_gives_each_server_an_exact_share_on_one_connection() {
    let [a, b, c] = three_upstreams().await;
    let gatehouse = start_balanced("round_robin", &server_entries(&[a.addr, b.addr, c.addr])).await;

    let counts = count_sequential(gatehouse.listener_addrs[0], 300).await;

    assert_eq!(counts.len(), 3, "every server answers: {counts:?}");
    for name in ["a", "b", "c"] {
        assert_eq!(count_of(&counts, name), 100, "{name}: {counts:?}");
    }
    // The upstreams agree with what the client saw.
    assert_eq!(a.received().len(), 100);
    assert_eq!(b.received().len(), 100);
    assert_eq!(c.received().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_stays_exact_under_concurrency() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 60;
    let [a, b, c] = three_upstreams().await;
    let gatehouse = start_balanced("round_robin", &server_entries(&[a.addr, b.addr, c.addr])).await;
    let addr = gatehouse.listener_addrs[0];

    let total = count_concurrent(addr, TASKS, PER_TASK).await;

    let n = TASKS * PER_TASK;
    let share = n / 3;
    assert_eq!(total.values().sum::<usize>(), n, "{total:?}");
    for name in ["a", "b", "c"] {
        let got = count_of(&total, name);
        assert!(
            got.abs_diff(share) <= 1,
            "{name} got {got}, expected {share} ± 1: {total:?}"
        );
    }
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights_exactly() {
    let [a, b, c] = three_upstreams().await;
    let servers = vec![
        format!("{{ addr = \"{}\", weight = 3 }}", a.addr),
        format!("{{ addr = \"{}\", weight = 2 }}", b.addr),
        format!("{{ addr = \"{}\", weight = 1 }}", c.addr),
    ];
    let gatehouse = start_balanced("weighted_round_robin", &servers).await;

    let counts = count_sequential(gatehouse.listener_addrs[0], 600).await;

    assert_eq!(count_of(&counts, "a"), 300, "{counts:?}");
    assert_eq!(count_of(&counts, "b"), 200, "{counts:?}");
    assert_eq!(count_of(&counts, "c"), 100, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_a_server_with_requests_parked_on_it() {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let slow = HeldUpstream::named("slow").await;
    let gatehouse = start_balanced(
        "least_connections",
        &server_entries(&[a.addr, slow.addr, b.addr]),
    )
    .await;
    let addr = gatehouse.listener_addrs[0];

    // Phase 1: send requests one at a time until one parks on the slow server. With every
    // server idle, ties rotate, so this happens within three requests.
    let mut parked = None;
    for attempt in 0..6 {
        let mut request = tokio::spawn(common::get(addr, "/park"));
        let outcome = timeout(WAIT, async {
            tokio::select! {
                () = slow.wait_arrival() => None,
                reply = &mut request => Some(reply.expect("request task did not panic")),
            }
        })
        .await
        .expect("a request either parks or is answered in time");
        match outcome {
            None => {
                parked = Some(request);
                break;
            }
            Some(reply) => {
                assert_eq!(reply.status, 200, "attempt {attempt}");
                assert!(
                    ["a", "b"].contains(&reply.text().as_str()),
                    "answered by a fast server: {}",
                    reply.text()
                );
            }
        }
    }
    let parked = parked.expect("a request reached the slow server within 6 tries");
    assert_eq!(slow.arrivals(), 1);

    // Phase 2: while that request is in flight on the slow server, every new request goes to
    // one of the idle fast servers.
    let counts = count_sequential(addr, 90).await;
    assert_eq!(count_of(&counts, "slow"), 0, "{counts:?}");
    assert_eq!(
        count_of(&counts, "a") + count_of(&counts, "b"),
        90,
        "{counts:?}"
    );
    assert!(
        count_of(&counts, "a") > 0 && count_of(&counts, "b") > 0,
        "both fast servers share the load: {counts:?}"
    );
    assert_eq!(
        slow.arrivals(),
        1,
        "no second request reached the busy slow server"
    );
    assert_eq!(slow.arrivals_not_waited_for(), 0);

    // Phase 3: release the parked request; it completes with the slow server's answer.
    slow.release_one();
    let reply = timeout(WAIT, parked)
        .await
        .expect("parked request completes once released")
        .expect("request task did not panic");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow");

    // Phase 4: with nothing in flight anywhere, ties rotate again: three sequential requests
    // reach each server once, the slow one included.
    slow.release_one();
    let counts = count_sequential(addr, 3).await;
    for name in ["a", "b", "slow"] {
        assert_eq!(count_of(&counts, name), 1, "{name}: {counts:?}");
    }
}

/// An upstream that takes about `delay` to answer each request.
async fn delayed_upstream(name: &'static str, delay: Duration) -> TestUpstream {
    TestUpstream::with_handler(
        name,
        Arc::new(move |_request| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Response::builder()
                    .header("x-upstream", name)
                    .body(Full::new(Bytes::from(name)))
                    .unwrap()
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_sends_little_to_a_slow_server() {
    let fast_1 = TestUpstream::named("fast-1").await;
    let slow = delayed_upstream("slow", Duration::from_millis(50)).await;
    let fast_2 = TestUpstream::named("fast-2").await;
    let gatehouse = start_balanced(
        "p2c_ewma",
        &server_entries(&[fast_1.addr, slow.addr, fast_2.addr]),
    )
    .await;
    let addr = gatehouse.listener_addrs[0];

    // Warm-up: until every server has answered at least once, so each has a latency estimate.
    let mut client = Client::connect(addr).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let reply = client.get("/warm-up").await;
        assert_eq!(reply.status, 200);
        *seen.entry(reply.text()).or_insert(0) += 1;
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "every server was probed in warm-up: {seen:?}"
    );

    // Measure: 4 clients × 50 requests.
    let total = count_concurrent(addr, 4, 50).await;
    assert_eq!(total.values().sum::<usize>(), 200, "{total:?}");
    let slow_share = count_of(&total, "slow");
    assert!(
        slow_share < 40,
        "the slow server got {slow_share} of 200 (must be < 20%): {total:?}"
    );
    assert!(
        count_of(&total, "fast-1") > 20 && count_of(&total, "fast-2") > 20,
        "both fast servers carry the load: {total:?}"
    );
}
