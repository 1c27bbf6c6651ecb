#!/usr/bin/env python3
"""Cache comparison: gatehouse's cache against nginx proxy_cache, in the same run.

One upstream (nginx serving static files with `Cache-Control: public, max-age=3600`, and the
same files under /nocache/ with `no-store`) on core 1 with wrk and h2load; the proxy under
test on core 0 with one worker. nginx's cache lives on /dev/shm (memory-backed), with
`proxy_cache_lock on` so that it coalesces misses too.

Scenarios, each alternating nginx and gatehouse for --rounds rounds:
  hit-200    wrk on a stored 200-byte response
  hit-100k   wrk on a stored 100 KiB response
  miss       wrk on /nocache/small (forwarded every time through the cached route) against
             /plain/small on a route without a cache: the cost of the cache on the miss path
  coalesce   1,000 concurrent requests (h2load, 1,000 connections) for one uncached URI of a
             demo backend that answers after 300 ms; counts how many reached the backend

Prints req/s, p99 and CPU-seconds per 100k requests (proxy utime + stime from /proc) with
medians and gatehouse/nginx ratios. Usage: benches/load/cache_compare.py [--rounds 3]
[--duration 8] [--no-build]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (shared helpers: tool install, readiness, /proc CPU, wrk parsing)

ROOT = compare.ROOT
UPSTREAM_PORT = 18201
DEMO_PORT = 18202
NGINX_PORT = 18280
GATEHOUSE_PORT = 18281


def write_files(www: Path):
    (www / "files").mkdir(parents=True)
    (www / "files" / "small").write_text("x" * 199 + "\n")
    (www / "files" / "large").write_bytes(b"y" * (100 * 1024))


def start_upstream(work: Path):
    conf = work / "upstream.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; error_log {work}/upstream-error.log warn; pid {work}/upstream.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; default_type text/plain;
  server {{ listen 127.0.0.1:{UPSTREAM_PORT}; keepalive_requests 1000000;
    location /files/ {{ root {work}/www; add_header Cache-Control "public, max-age=3600"; }}
    location /nocache/ {{ alias {work}/www/files/; add_header Cache-Control "no-store"; }}
    location /plain/ {{ alias {work}/www/files/; add_header Cache-Control "no-store"; }}
  }}
}}
""")
    return subprocess.Popen(["taskset", "-c", "1", compare.nginx_bin(), "-c", str(conf), "-p", str(work)])


def start_demo(binary: Path):
    return subprocess.Popen(["taskset", "-c", "1", str(binary), "demo-backend", "--bind",
                             f"127.0.0.1:{DEMO_PORT}", "--name", "slow"],
                            stderr=subprocess.DEVNULL)


def start_nginx(work: Path):
    cache_dir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-nginx-cache-", dir="/dev/shm"))
    conf = work / "proxy.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; error_log {work}/proxy-error.log warn; pid {work}/proxy.pid;
events {{ worker_connections 4096; }}
http {{ access_log off;
  proxy_cache_path {cache_dir} levels=1:2 keys_zone=c:16m max_size=256m inactive=1h use_temp_path=off;
  upstream files {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 512; }}
  upstream demo {{ server 127.0.0.1:{DEMO_PORT}; keepalive 512; }}
  server {{ listen 127.0.0.1:{NGINX_PORT} backlog=4096; keepalive_requests 1000000;
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;
    location /plain/ {{ proxy_pass http://files; }}
    location /orders {{ proxy_pass http://demo; proxy_cache c; proxy_cache_lock on;
                       proxy_cache_lock_timeout 10s; add_header Cache-Status $upstream_cache_status; }}
    location / {{ proxy_pass http://files; proxy_cache c; proxy_cache_lock on;
                 add_header Cache-Status $upstream_cache_status; }}
  }}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", "0", compare.nginx_bin(), "-c", str(conf), "-p", str(work)])
    return proc, cache_dir


def start_gatehouse(work: Path, binary: Path):
    conf = work / "gatehouse.toml"
    conf.write_text(f"""
[process]
worker_threads = 1
[log]
level = "warn"
access = "off"
[admin]
bind = ""
[[listener]]
name = "bench"
bind = "127.0.0.1:{GATEHOUSE_PORT}"
[[route]]
path_prefix = "/plain/"
upstream = "files"
[[route]]
path_prefix = "/orders"
upstream = "demo"
cache = "c"
[[route]]
path_prefix = "/"
upstream = "files"
cache = "c"
[upstream.files]
servers = ["127.0.0.1:{UPSTREAM_PORT}"]
keepalive = 512
[upstream.demo]
servers = ["127.0.0.1:{DEMO_PORT}"]
keepalive = 512
[cache.c]
max_size = "256MiB"
""")
    return subprocess.Popen(["taskset", "-c", "0", str(binary), "run", "--config", str(conf)])


def wrk(port: int, path: str, pids, duration: int, connections: int):
    url = f"http://127.0.0.1:{port}{path}"
    subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", "-d2s", url],
                   check=True, capture_output=True)
    before = compare.cpu_seconds(pids)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                          "--latency", url], check=True, capture_output=True, text=True).stdout
    cpu = compare.cpu_seconds(pids) - before
    requests, rps, p99, errors = compare.parse_wrk(out)
    return rps, p99, cpu / requests * 100_000, errors


def demo_requests() -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{DEMO_PORT}/_demo/stats", timeout=2) as r:
        return int(json.load(r)["requests"])


def coalesce(port: int, unique: int) -> int:
    before = demo_requests()
    subprocess.run(["taskset", "-c", "1", "h2load", "--h1", "-n", "1000", "-c", "1000", "-t", "1",
                    f"http://127.0.0.1:{port}/orders?limit=1&bench={unique}"],
                   check=True, capture_output=True, timeout=60)
    return demo_requests() - before


def report(name, results):
    n = [statistics.median(c) for c in zip(*results["nginx"])]
    g = [statistics.median(c) for c in zip(*results["gatehouse"])]
    print(f"\n{name}: medians of {len(results['nginx'])} rounds")
    print(f"{'':10s} {'req/s':>10s} {'p99 ms':>8s} {'CPU-s/100k':>11s} {'errors':>7s}")
    print(f"{'nginx':10s} {n[0]:>10.0f} {n[1]:>8.2f} {n[2]:>11.2f} {n[3]:>7.0f}")
    print(f"{'gatehouse':10s} {g[0]:>10.0f} {g[1]:>8.2f} {g[2]:>11.2f} {g[3]:>7.0f}")
    print(f"{'ratio g/n':10s} {g[0] / n[0]:>10.2f} {g[1] / n[1]:>8.2f} {g[2] / n[2]:>11.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--binary", default=str(ROOT / "target/release/gatehouse"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    compare.ensure_tools()
    if not shutil.which("h2load"):
        compare.sh("apt-get", "install", "-y", "-qq", "nghttp2-client")
    if not args.no_build:
        compare.sh("cargo", "build", "--release", cwd=ROOT)
    binary = Path(args.binary)
    work = Path(tempfile.mkdtemp(prefix="gatehouse-cache-bench-"))
    # nginx's workers run as an unprivileged user: they must be able to read the files.
    work.chmod(0o755)
    write_files(work / "www")
    procs, cache_dir = [], None
    try:
        procs.append(start_upstream(work))
        procs.append(start_demo(binary))
        nginx, cache_dir = start_nginx(work)
        procs.append(nginx)
        gatehouse = start_gatehouse(work, binary)
        procs.append(gatehouse)
        for port, path in [(UPSTREAM_PORT, "/files/small"), (NGINX_PORT, "/files/small"),
                           (GATEHOUSE_PORT, "/files/small")]:
            compare.wait_ready_path(port, path)
        compare.wait_ready_path(DEMO_PORT, "/healthz")
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{DEMO_PORT}/_demo/faults",
                        "-d", '{"latency":"300ms"}'], check=True)
        proxies = {"nginx": (NGINX_PORT, compare.process_tree(nginx.pid)),
                   "gatehouse": (GATEHOUSE_PORT, [gatehouse.pid])}
        for name, path in [("hit-200", "/files/small"), ("hit-100k", "/files/large"),
                           ("miss (no-store through the cache)", "/nocache/small"),
                           ("no cache (route without one)", "/plain/small")]:
            results = {"nginx": [], "gatehouse": []}
            for _ in range(args.rounds):
                for proxy, (port, pids) in proxies.items():
                    results[proxy].append(wrk(port, path, pids, args.duration, args.connections))
            report(f"{name} {path}", results)
        print("\ncoalesce: 1,000 concurrent requests for one uncached URI (origin answers in 300 ms)")
        for round_no in range(args.rounds):
            counts = {proxy: coalesce(port, round_no * 10 + i)
                      for i, (proxy, (port, _)) in enumerate(proxies.items())}
            print(f"  round {round_no + 1}: origin requests: nginx {counts['nginx']}, gatehouse {counts['gatehouse']}")
    finally:
        compare.stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
