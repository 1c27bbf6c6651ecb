//! The Redis client's round trips against a real redis-server on loopback (started here by
//! PID, on a free port, killed at the end). `fred` was measured beside it by the same loops
//! when the client was chosen (benches/README.md has both sets of figures). Figures: one EVALSHA round trip (a GCRA step, as the shared
//! rate limits send), 100 EVALSHAs pipelined, and 64 EVALSHAs in flight at once from
//! concurrent tasks (what many requests of one process do). A timed loop, not criterion: a
//! round trip on loopback is what is measured, and the figures go into benches/README.md.
//!
//! Run: `cargo bench --bench redis_client` (needs `redis-server` on PATH).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
redis.call('SET', KEYS[1], tat + 1, 'PX', 60000)
return tat
";

const ROUNDS: usize = 5;
const SEQUENTIAL: usize = 5_000;
const PIPELINED: usize = 100;
const BATCHES: usize = 200;
const CONCURRENT: usize = 64;

struct RedisServer {
    child: Child,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> (RedisServer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (RedisServer { child }, format!("redis://127.0.0.1:{port}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(what: &str, micros: Vec<f64>) {
    println!("{what:<44} {:>8.1} µs (median of {ROUNDS})", median(micros));
}

async fn redis_crate(url: &str) {
    use redis::AsyncCommands as _;
    let client = redis::Client::open(url).expect("url");
    let mut manager = client.get_connection_manager().await.expect("connect");
    let script = redis::Script::new(SCRIPT);
    let _: i64 = script
        .key("warm")
        .arg(1)
        .invoke_async(&mut manager)
        .await
        .expect("load");
    let sha = script.get_hash().to_owned();
    let evalsha = |i: usize| {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&sha).arg(1).arg(format!("k{}", i % 16)).arg(i);
        cmd
    };
    let mut one = Vec::new();
    let mut piped = Vec::new();
    let mut concurrent = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..SEQUENTIAL {
            let _: i64 = evalsha(i).query_async(&mut manager).await.expect("evalsha");
        }
        one.push(start.elapsed().as_secs_f64() * 1e6 / SEQUENTIAL as f64);

        let start = Instant::now();
        for _ in 0..BATCHES {
            let mut pipe = redis::pipe();
            for i in 0..PIPELINED {
                pipe.add_command(evalsha(i));
            }
            let _: Vec<i64> = pipe.query_async(&mut manager).await.expect("pipeline");
        }
        piped.push(start.elapsed().as_secs_f64() * 1e6 / BATCHES as f64);

        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..CONCURRENT {
            let mut manager = manager.clone();
            let cmd = evalsha(t);
            tasks.push(tokio::spawn(async move {
                for _ in 0..SEQUENTIAL / CONCURRENT {
                    let _: i64 = cmd.query_async(&mut manager).await.expect("evalsha");
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let done = (SEQUENTIAL / CONCURRENT) * CONCURRENT;
        concurrent.push(start.elapsed().as_secs_f64() * 1e6 / done as f64);
    }
    let _: () = manager.del("warm").await.expect("del");
    report("redis: one EVALSHA round trip", one);
    report("redis: 100 EVALSHAs pipelined (per batch)", piped);
    report("redis: 64 tasks in flight (per call)", concurrent);
}

fn main() {
    let (_server, url) = start_redis();
    // One thread, as one per-core worker of gatehouse sends its requests' calls.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for _ in 0..2 {
            redis_crate(&url).await;
        }
    });
}
