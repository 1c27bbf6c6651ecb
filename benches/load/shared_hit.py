#!/usr/bin/env python3
"""A shared-tier hit against a local hit and a miss, under load, in one run.

One gatehouse process (one worker, core 0) is measured; the origin (nginx, one worker),
redis-server and wrk share core 1. Every case picks its URL at random out of --urls per
request (a wrk Lua script), so that concurrent requests rarely share a key and the cache's
coalescing of concurrent misses does not stand in for the work measured. Cases, each for
--rounds rounds of --duration seconds (after a 2 s warm-up), in turn within each round:

  local hit    /local/N through cache `roomy` (64 MiB, shared = true): every URL was
               fetched once before the rounds, so each request is a hit in the local tier,
               which never touches Redis.
  shared hit   /shared/N through cache `tiny` (shared = true, but a local tier of 512 bytes,
               smaller than any stored response): the local store refuses every entry, so
               every request is a local miss that finds a fresh response in Redis. The
               responses were put there before the rounds by a second gatehouse (replica A,
               with cache `tiny` at full size, the same Host and paths), which is then stopped:
               B serves what A stored, as replicas do. Other ways to get shared hits
               give a mix: B reading A's entries in the ordinary way keeps each in its local
               tier after the first read (one shared hit per URL, then local hits), and a
               small local tier over many URLs still hits locally part of the time. The
               difference from an ordinary shared hit is that B's store turns the entry
               away instead of keeping it (the same insert call, no eviction of another).
               The few requests that arrive while another for the same URL is being looked
               up join it (counted as coalesced) and are served the entry it found.
  miss         /miss/N through the same shared cache `tiny`; the origin answers `no-store`:
               a local miss, a shared-tier miss (HMGET), the claim of the origin fetch among
               replicas (SET NX PX) and its release, and the origin request. What a miss
               costs with the shared tier on.
  no cache     /pass/N on a route without a cache (the origin's no-store answer): the plain
               proxied request, for reference.

Checked, not assumed: one request of each case is sent first and its Cache-Status printed;
for every measured run B's metrics are read before and after, and the counts of shared-tier
hits and misses, local cache hits and coalesced requests are printed beside wrk's count of
requests (a few more on gatehouse's side: requests completed while wrk was stopping).
Printed per case: req/s and p99 (medians of the rounds), gatehouse's and Redis's CPU-seconds
per 100k requests, and the ratios of req/s and p99 to the local hit. Each run also prints the
cores that other processes on the machine kept busy meanwhile (all busy time in /proc/stat
less this benchmark's processes): on a shared machine, runs where that is not near zero are
not comparable.

Usage: benches/load/shared_hit.py [--binary PATH] [--rounds 3] [--duration 10]
       [--connections 64] [--urls 10000]
The binary is --binary, else $GATEHOUSE_BINARY, else target/release/gatehouse (a release
build: `cargo build --release`). Needs redis-server, nginx, wrk and taskset; installs redis-server,
nginx and wrk with apt-get when they are missing.
"""

import argparse
import http.client
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (shared helpers: nginx binary, /proc CPU, wrk parsing, stop_all)

ROOT = compare.ROOT
HOST = "shop.test"  # one Host for every request: the cache key is the host and the target
BODY = "x" * 199  # 200-byte responses with nginx's newline
# How long a claim of an origin fetch is held at most: the shared tier's 1 s, which the
# origin's default timeouts do not shorten.
CLAIM_EXPIRY = 1.0
PROXY_CPUS = "0"
REST_CPUS = "1"
CASES = [
    ("local hit", "/local/"),
    ("shared hit", "/shared/"),
    ("miss", "/miss/"),
    ("no cache", "/pass/"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {limit}s")


def ensure_tools() -> None:
    missing = [tool for tool in ("redis-server", "redis-cli", "wrk", "taskset")
               if not shutil.which(tool)]
    if not Path(compare.nginx_bin()).exists():
        missing.append("nginx")
    if missing:
        print(f"installing redis-server, nginx and wrk with apt-get (missing: {missing}) ...",
              flush=True)
        compare.sh("apt-get", "update", "-qq")
        compare.sh("apt-get", "install", "-y", "-qq", "redis-server", "nginx", "wrk")


def start_origin(work: Path, port: int) -> subprocess.Popen:
    conf = work / "origin.conf"
    fresh = f"""default_type text/plain; return 200 '{BODY}\\n';
               add_header Cache-Control "public, max-age=3600" always;"""
    uncached = f"""default_type text/plain; return 200 '{BODY}\\n';
                  add_header Cache-Control "no-store" always;"""
    conf.write_text(compare.write_nginx_conf(conf, f"""
http {{ access_log off;
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ {fresh} }}
    location /miss/ {{ {uncached} }}
    location /pass/ {{ {uncached} }}
  }}
}}
""", work))
    return subprocess.Popen(["taskset", "-c", REST_CPUS, compare.nginx_bin(), "-c", str(conf),
                             "-p", str(work)])


def start_redis(port: int) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", REST_CPUS, "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def gatehouse_config(port: int, admin: int, origin: int, redis: int, tiny_size: str) -> str:
    return f"""
[process]
worker_threads = 1
[log]
level = "warn"
access = "off"
[admin]
bind = "127.0.0.1:{admin}"
[redis]
url = "redis://127.0.0.1:{redis}"
timeout = "200ms"
[[listener]]
name = "bench"
bind = "127.0.0.1:{port}"
[[route]]
path_prefix = "/local/"
upstream = "origin"
cache = "roomy"
[[route]]
path_prefix = "/shared/"
upstream = "origin"
cache = "tiny"
[[route]]
path_prefix = "/miss/"
upstream = "origin"
cache = "tiny"
[[route]]
path_prefix = "/pass/"
upstream = "origin"
[cache.roomy]
max_size = "64MiB"
shared = true
[cache.tiny]
max_size = "{tiny_size}"
max_object_size = "{tiny_size}"
shared = true
[upstream.origin]
servers = ["127.0.0.1:{origin}"]
keepalive = 512
"""


def start_gatehouse(binary: Path, work: Path, name: str, config: str, cpus: str) -> subprocess.Popen:
    path = work / f"{name}.toml"
    path.write_text(config)
    check = subprocess.run([str(binary), "check", "--config", str(path)], capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise SystemExit(f"gatehouse check {path}:\n{check.stdout}{check.stderr}")
    return subprocess.Popen(["taskset", "-c", cpus, str(binary), "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"))


def fetch_all(port: int, prefix: str, urls: int) -> None:
    """GETs prefix1 .. prefixN once each over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(1, urls + 1):
            connection.request("GET", f"{prefix}{i}", headers={"Host": HOST})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"{prefix}{i}: {response.status}")
    finally:
        connection.close()


def cache_status(port: int, path: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": HOST})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
        return response.headers.get("Cache-Status", "(none)")


SHORT = {
    "gatehouse_cache_requests_total": "cache",
    "gatehouse_cache_coalesced_total": "coalesced",
    "gatehouse_cache_evictions_total": "evicted",
    "gatehouse_shared_cache_lookups_total": "shared lookup",
    "gatehouse_shared_cache_writes_total": "shared write",
    "gatehouse_shared_cache_fetch_claims_total": "claim",
    "gatehouse_shared_calls_total": "redis call",
}


METRIC = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def metrics(admin: int) -> dict:
    """The counters this benchmark checks, keyed by (family, cache, result or outcome)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = METRIC.match(line)
        if not match or match.group(1) not in SHORT:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        what = labels.get("result") or labels.get("outcome") or ""
        found[(match.group(1), labels.get("cache", ""), what)] = float(match.group(3))
    return found


def counted(before: dict, after: dict) -> dict:
    """Every counter of SHORT that moved, as "name cache result": count."""
    moved = {}
    for key in sorted(after):
        family, cache, what = key
        change = int(after[key] - before.get(key, 0))
        if change:
            moved[" ".join(filter(None, (SHORT[family], cache, what)))] = change
    return moved


def children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (every core), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / compare.CLK_TCK


def wrk(port: int, prefix: str, args, work: Path, gatehouse_pid: int, redis_pid: int, admin: int,
        origin_pids: list):
    script = work / f"urls-{prefix.strip('/')}.lua"
    script.write_text(
        f'math.randomseed({os.getpid()})\n'
        f'request = function() return wrk.format("GET", "{prefix}" .. math.random(1, {args.urls})) end\n')
    base = ["taskset", "-c", REST_CPUS, "wrk", "-t1", f"-c{args.connections}", "-s", str(script),
            "-H", f"Host: {HOST}"]
    url = f"http://127.0.0.1:{port}/"
    subprocess.run(base + ["-d2s", url], check=True, capture_output=True)
    # wrk ends the warm-up by closing its connections with requests in flight. A miss cancelled
    # while its claim of the origin fetch was on its way to Redis leaves that claim held until
    # it expires (1 s here), and the next request for the key waits for it: let them expire.
    time.sleep(CLAIM_EXPIRY + 0.5)
    before = metrics(admin)
    ours = [gatehouse_pid, redis_pid] + origin_pids
    cpu_before = (compare.cpu_seconds([gatehouse_pid]), compare.cpu_seconds([redis_pid]),
                  compare.cpu_seconds(ours), children_seconds(), busy_seconds())
    out = subprocess.run(base + [f"-d{args.duration}s", "--latency", url], check=True,
                         capture_output=True, text=True).stdout
    cpu_after = (compare.cpu_seconds([gatehouse_pid]), compare.cpu_seconds([redis_pid]),
                 compare.cpu_seconds(ours), children_seconds(), busy_seconds())
    after = metrics(admin)
    # What the rest of the machine took meanwhile (a shared machine): busy time less this
    # benchmark's processes (wrk's counted when it is reaped).
    others = (cpu_after[4] - cpu_before[4]) - (cpu_after[2] - cpu_before[2]) - (cpu_after[3] - cpu_before[3])
    requests, rps, p99, errors = compare.parse_wrk(out)
    return {
        "rps": rps,
        "p99": p99,
        "requests": requests,
        "errors": errors,
        "gatehouse cpu": (cpu_after[0] - cpu_before[0]) / requests * 100_000,
        "redis cpu": (cpu_after[1] - cpu_before[1]) / requests * 100_000,
        "others cpu": others / args.duration,
        "counted": counted(before, after),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.environ.get(
        "GATEHOUSE_BINARY", str(ROOT / "target" / "release" / "gatehouse")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--urls", type=int, default=10_000)
    args = parser.parse_args()
    binary = Path(args.binary)
    if not binary.exists():
        raise SystemExit(f"no gatehouse binary at {binary}: cargo build --release, or --binary PATH")
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="gatehouse-shared-hit-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user
    procs = []
    try:
        origin_port, redis_port = free_port(), free_port()
        origin = start_origin(work, origin_port)
        procs.append(origin)
        redis = start_redis(redis_port)
        procs.append(redis)
        wait_port(origin_port)
        wait_port(redis_port)

        # Replica A fills Redis with /shared/1 .. N, then stops.
        a_port, a_admin = free_port(), free_port()
        replica_a = start_gatehouse(binary, work, "replica-a",
                                    gatehouse_config(a_port, a_admin, origin_port, redis_port, "64MiB"),
                                    REST_CPUS)
        procs.append(replica_a)
        wait_port(a_port)
        started = time.monotonic()
        fetch_all(a_port, "/shared/", args.urls)
        # A writes to Redis in the background: wait until it has written every response.
        deadline = time.monotonic() + 30
        while True:
            written = metrics(a_admin).get(("gatehouse_shared_cache_writes_total", "tiny", "ok"), 0)
            if written >= args.urls:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"replica A wrote {written:.0f} of {args.urls} responses to Redis")
            time.sleep(0.05)
        print(f"replica A stored {args.urls} responses in Redis in {time.monotonic() - started:.1f} s",
              flush=True)
        replica_a.terminate()
        replica_a.wait(timeout=15)

        # Replica B, measured.
        b_port, b_admin = free_port(), free_port()
        replica_b = start_gatehouse(binary, work, "replica-b",
                                    gatehouse_config(b_port, b_admin, origin_port, redis_port, "512B"),
                                    PROXY_CPUS)
        procs.append(replica_b)
        wait_port(b_port)
        fetch_all(b_port, "/local/", args.urls)
        for name, prefix in CASES:
            print(f"{name:10s} {prefix}1  Cache-Status: {cache_status(b_port, f'{prefix}1')}")

        results = {name: [] for name, _ in CASES}
        for round_no in range(1, args.rounds + 1):
            for name, prefix in CASES:
                run = wrk(b_port, prefix, args, work, replica_b.pid, redis.pid, b_admin,
                          compare.process_tree(origin.pid))
                results[name].append(run)
                counts = ", ".join(f"{k} {v}" for k, v in run["counted"].items())
                print(f"round {round_no} {name:10s} {run['rps']:9.0f} req/s  p99 {run['p99']:6.2f} ms  "
                      f"errors {run['errors']}  others' CPU {run['others cpu']:.2f} cores  "
                      f"wrk requests {run['requests']}  gatehouse counted: {counts}",
                      flush=True)

        print(f"\nmedians of {args.rounds} rounds, {args.duration} s each, {args.connections} connections, "
              f"{args.urls} URLs, 200-byte responses")
        print(f"{'':11s} {'req/s':>9s} {'p99 ms':>7s} {'req/s ratio':>11s} {'p99 ratio':>9s} "
              f"{'gatehouse CPU-s/100k':>20s} {'Redis CPU-s/100k':>16s}")
        medians = {name: {key: statistics.median(run[key] for run in runs)
                          for key in ("rps", "p99", "gatehouse cpu", "redis cpu")}
                   for name, runs in results.items()}
        local = medians["local hit"]
        for name, m in medians.items():
            print(f"{name:11s} {m['rps']:9.0f} {m['p99']:7.2f} {m['rps'] / local['rps']:11.2f} "
                  f"{m['p99'] / local['p99']:9.2f} {m['gatehouse cpu']:20.2f} {m['redis cpu']:16.2f}")
    finally:
        compare.stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
