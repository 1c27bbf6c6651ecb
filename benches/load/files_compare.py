#!/usr/bin/env python3
"""Static files: gatehouse's `files` against nginx's `root`, serving the same directory, in
the same run.

Both servers run one worker pinned to core 0 (gatehouse `worker_threads = 1`; its blocking
pool, which reads files larger than a chunk, inherits the pinning and counts in its CPU);
wrk runs on core 1. nginx serves with its defaults for a static site (`sendfile on`, no
open_file_cache). Rounds alternate nginx and gatehouse so that the machine's noise hits both
alike.

Scenarios: a 1 KiB file and a 1 MiB file, wrk at --connections keep-alive connections; then
the 1 KiB file from gatehouse's `memory_cache`, and as a hit of gatehouse's proxy cache (a
route caching what its own second listener serves), each beside nginx's plain 1 KiB file:
what a small hot file costs against what a cache hit costs, in the same run.
For each: req/s, p99 and CPU-seconds per 100k requests (utime + stime from /proc), medians of
--rounds rounds, and the gatehouse/nginx ratios. Then one 1 GiB sparse file is fetched from
each (curl to /dev/null) while the server's resident set is sampled: its peak growth.

Usage: benches/load/files_compare.py GATEHOUSE_BINARY [--rounds 3] [--duration 8]
       [--connections 64]
The binary should be a release build (`cargo build --release` makes target/release/gatehouse).
Installs nginx and wrk with apt-get when they are missing. Ports are free loopback ports found
at start; every process is started here and ended by its PID.
"""

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (shared helpers: tool install, readiness, /proc CPU, wrk parsing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site(www: Path):
    www.mkdir(parents=True)
    (www / "1k.txt").write_bytes(b"k" * 1024)
    (www / "1m.bin").write_bytes(bytes(range(256)) * 4096)
    with open(www / "1g.bin", "wb") as f:
        f.truncate(1 << 30)  # sparse: a GiB of zeros that takes no disk


def start_nginx(work: Path, port: int):
    conf = work / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; error_log {work}/nginx-error.log warn; pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  types {{ text/plain txt; application/octet-stream bin; }}
  server {{ listen 127.0.0.1:{port} backlog=4096; keepalive_requests 1000000;
    location / {{ root {work}/www; add_header Cache-Control "public, max-age=3600"; }}
  }}
}}
""")
    return subprocess.Popen(["taskset", "-c", "0", compare.nginx_bin(), "-c", str(conf), "-p", str(work)])


def start_gatehouse(work: Path, binary: Path, port: int, origin_port: int):
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
bind = "127.0.0.1:{port}"
[[listener]]
name = "origin"
bind = "127.0.0.1:{origin_port}"
[upstream.self]
servers = ["127.0.0.1:{origin_port}"]
keepalive = 512
[cache.c]
max_size = "64MiB"
# The same files kept in memory (memory_cache), and as proxy-cache hits: what a small file
# costs against what a cache hit costs, in the same process.
[[route]]
listener = "bench"
path_prefix = "/hot/"
strip_prefix = true
files = {{ root = "{work}/www", cache_control = "public, max-age=3600", memory_cache = "16MiB" }}
[[route]]
listener = "bench"
path_prefix = "/cached/"
strip_prefix = true
upstream = "self"
cache = "c"
[[route]]
path_prefix = "/"
files = {{ root = "{work}/www", cache_control = "public, max-age=3600" }}
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


def peak_rss_growth(port: int, pids) -> tuple[float, float]:
    """Fetches the 1 GiB file once; returns (peak RSS growth in MiB, seconds taken)."""
    base = compare.rss_mib(pids)
    peak = base
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, compare.rss_mib(pids))

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.time()
    try:
        out = subprocess.run(["taskset", "-c", "1", "curl", "-s", "-o", "/dev/null", "-w",
                              "%{size_download}", f"http://127.0.0.1:{port}/1g.bin"],
                             check=True, capture_output=True, text=True, timeout=300).stdout
    finally:
        done.set()
        sampler.join()
    if int(out) != 1 << 30:
        raise RuntimeError(f"the 1 GiB file came back as {out} bytes")
    return peak - base, time.time() - start


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
    parser.add_argument("binary", help="the gatehouse binary (a release build)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    compare.ensure_tools()
    binary = Path(args.binary).resolve()
    work = Path(tempfile.mkdtemp(prefix="gatehouse-files-bench-"))
    # nginx's workers run as an unprivileged user: they must be able to read the files.
    work.chmod(0o755)
    write_site(work / "www")
    nginx_port, gatehouse_port, origin_port = free_port(), free_port(), free_port()
    procs = []
    try:
        nginx = start_nginx(work, nginx_port)
        procs.append(nginx)
        gatehouse = start_gatehouse(work, binary, gatehouse_port, origin_port)
        procs.append(gatehouse)
        for port in (nginx_port, gatehouse_port, origin_port):
            compare.wait_ready_path(port, "/1k.txt")
        servers = {"nginx": (nginx_port, compare.process_tree(nginx.pid)),
                   "gatehouse": (gatehouse_port, [gatehouse.pid])}
        scenarios = [
            ("1 KiB file", "/1k.txt", "/1k.txt"),
            ("1 MiB file", "/1m.bin", "/1m.bin"),
            ("1 KiB file; gatehouse with memory_cache", "/1k.txt", "/hot/1k.txt"),
            ("1 KiB file; gatehouse answering proxy-cache hits", "/1k.txt", "/cached/1k.txt"),
        ]
        for name, nginx_path, gatehouse_path in scenarios:
            paths = {"nginx": nginx_path, "gatehouse": gatehouse_path}
            results = {"nginx": [], "gatehouse": []}
            for _ in range(args.rounds):
                for server, (port, pids) in servers.items():
                    results[server].append(
                        wrk(port, paths[server], pids, args.duration, args.connections))
            report(f"{name} (nginx {nginx_path}, gatehouse {gatehouse_path})", results)
        print("\n1 GiB sparse file, fetched once with curl: peak growth of the resident set")
        for server, (port, pids) in servers.items():
            growth, seconds = peak_rss_growth(port, pids)
            print(f"  {server:10s} +{growth:.1f} MiB in {seconds:.1f} s", flush=True)
    finally:
        compare.stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
