#!/usr/bin/env python3
"""Compression comparison: gatehouse's gzip against nginx's gzip at the same level, same run.

One upstream (nginx serving a ~100 KiB JSON order list as application/json, uncompressed) on
core 1 with wrk; the proxy under test on core 0 with one worker. Both proxies compress with
gzip at --level (nginx `gzip_comp_level`, gatehouse `gzip_level`), min length 256, for
application/json. gatehouse also offers brotli (level 4) and zstd (level 3), measured for
reference with `Accept-Encoding: br` and `zstd`; nginx has neither without third-party modules.

Scenarios, each alternating the proxies for --rounds rounds:
  identity   `Accept-Encoding: identity`: proxying the same body uncompressed (the baseline)
  gzip       `Accept-Encoding: gzip` through both proxies
  br, zstd   through gatehouse only

For each it records requests per second and the proxy's CPU time (utime + stime from /proc),
and prints medians of CPU-milliseconds per request and CPU-seconds per MiB compressed (MiB of
the identity body put through the encoder), the compression's own share (minus identity's
cost per request), the bytes sent per response, and gatehouse/nginx ratios.

Usage: benches/load/compress_compare.py [--rounds 5] [--duration 6] [--connections 16]
       [--level 1] [--gatehouse-level N] [--no-build]
"""

import argparse
import json
import random
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
UPSTREAM_PORT = 18301
NGINX_PORT = 18380
GATEHOUSE_PORT = 18381
TARGET_BYTES = 100 * 1024


def order_list(target: int) -> bytes:
    """A JSON list of orders like the demo backend's `/orders`, about `target` bytes."""
    rng = random.Random(14)
    orders, size = [], 2
    statuses = ["new", "paid", "shipped", "delivered", "cancelled"]
    while size < target:
        order = {
            "id": len(orders) + 1,
            "customer": f"customer-{rng.randrange(5000):04d}",
            "status": rng.choice(statuses),
            "items": [
                {"sku": f"SKU-{rng.randrange(100000):05d}", "quantity": rng.randrange(1, 6),
                 "unit_price_cents": rng.randrange(199, 99999)}
                for _ in range(rng.randrange(1, 4))
            ],
            "created_at": f"2026-12-{rng.randrange(1, 7):02d}T{rng.randrange(24):02d}:"
                          f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
        }
        orders.append(order)
        size += len(json.dumps(order)) + 2
    return json.dumps({"orders": orders, "next": None}, indent=None).encode()


def start_upstream(work: Path):
    conf = work / "upstream.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; error_log {work}/upstream-error.log warn; pid {work}/upstream.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; types {{ application/json json; }}
  server {{ listen 127.0.0.1:{UPSTREAM_PORT}; keepalive_requests 1000000;
    location / {{ root {work}/www; try_files /orders.json =404; default_type application/json; }}
  }}
}}
""")
    return subprocess.Popen(["taskset", "-c", compare.REST_CPUS, compare.nginx_bin(), "-c", str(conf),
                             "-p", str(work)])


def start_nginx(work: Path, level: int):
    conf = work / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; error_log {work}/nginx-error.log warn; pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream app {{ server 127.0.0.1:{UPSTREAM_PORT}; keepalive 512; }}
  server {{ listen 127.0.0.1:{NGINX_PORT}; keepalive_requests 1000000;
    gzip on; gzip_types application/json; gzip_min_length 256; gzip_comp_level {level};
    gzip_vary on; gzip_proxied any;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    return subprocess.Popen(["taskset", "-c", compare.PROXY_CPUS, compare.nginx_bin(), "-c", str(conf),
                             "-p", str(work)])


def start_gatehouse(work: Path, binary: Path, level: int):
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
path_prefix = "/"
upstream = "app"
compression = "json"
[upstream.app]
servers = ["127.0.0.1:{UPSTREAM_PORT}"]
keepalive = 512
[compression.json]
types = ["application/json"]
min_length = "256B"
encodings = ["gzip", "br", "zstd"]
gzip_level = {level}
brotli_level = 4
zstd_level = 3
""")
    return subprocess.Popen(["taskset", "-c", compare.PROXY_CPUS, str(binary), "run", "--config", str(conf)])


def response_bytes(port: int, coding: str) -> int:
    """The body length a client gets with `Accept-Encoding: coding` (checked to be that coding)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/orders.json",
                                     headers={"Accept-Encoding": coding})
    with urllib.request.urlopen(request, timeout=5) as response:
        got = response.headers.get("Content-Encoding", "identity")
        if got != coding:
            raise RuntimeError(f"port {port}: asked for {coding}, got {got}")
        return len(response.read())


def run_wrk(port: int, coding: str, duration: str, connections: int):
    command = ["taskset", "-c", compare.REST_CPUS, "wrk", "-t1", f"-c{connections}", f"-d{duration}",
               "-H", f"Accept-Encoding: {coding}", f"http://127.0.0.1:{port}/orders.json"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def measure(name: str, port: int, pids, coding: str, args):
    run_wrk(port, coding, "2s", args.connections)  # warm-up
    before = compare.cpu_seconds(pids)
    out = run_wrk(port, coding, f"{args.duration}s", args.connections)
    cpu = compare.cpu_seconds(pids) - before
    requests, rps, _p99, errors = compare.parse_wrk(out)
    if errors:
        raise RuntimeError(f"{name} {coding}: {errors} errors")
    ms_per_request = cpu / requests * 1000
    print(f"  {name:9s} {coding:8s} {rps:>8.0f} req/s  {ms_per_request:>7.4f} CPU-ms/request", flush=True)
    return rps, ms_per_request


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--level", type=int, default=1, help="gzip level for both proxies")
    parser.add_argument("--gatehouse-level", type=int, default=None,
                        help="gatehouse's gzip level, when it should differ (zlib-rs's level 1 is "
                             "looser than zlib's: its level 2 gives about nginx's level-1 size)")
    parser.add_argument("--binary", default=str(ROOT / "target/release/gatehouse"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()

    compare.ensure_tools()
    if not args.no_build:
        compare.sh("cargo", "build", "--release", cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="gatehouse-compress-"))
    work.chmod(0o755)  # nginx's workers (user nobody when started as root) read the file
    (work / "www").mkdir()
    (work / "www").chmod(0o755)
    body = order_list(TARGET_BYTES)
    (work / "www" / "orders.json").write_bytes(body)
    identity_mib = len(body) / (1 << 20)
    procs = []
    try:
        procs.append(start_upstream(work))
        compare.wait_ready_path(UPSTREAM_PORT, "/orders.json")
        nginx = start_nginx(work, args.level)
        procs.append(nginx)
        gatehouse_level = args.level if args.gatehouse_level is None else args.gatehouse_level
        gatehouse = start_gatehouse(work, Path(args.binary), gatehouse_level)
        procs.append(gatehouse)
        compare.wait_ready_path(NGINX_PORT, "/orders.json")
        compare.wait_ready_path(GATEHOUSE_PORT, "/orders.json")
        proxies = {"nginx": (NGINX_PORT, lambda: compare.process_tree(nginx.pid)),
                   "gatehouse": (GATEHOUSE_PORT, lambda: [gatehouse.pid])}
        runs = [("nginx", "identity"), ("gatehouse", "identity"), ("nginx", "gzip"),
                ("gatehouse", "gzip"), ("gatehouse", "br"), ("gatehouse", "zstd")]
        sizes = {(name, coding): response_bytes(proxies[name][0], coding) for name, coding in runs}
        results = {run: [] for run in runs}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            for name, coding in runs:
                port, pids = proxies[name]
                results[(name, coding)].append(measure(name, port, pids(), coding, args))
        med = {run: [statistics.median(col) for col in zip(*values)] for run, values in results.items()}
        print()
        print(f"medians over {args.rounds} rounds, {args.connections} connections, {args.duration}s each, "
              f"a {len(body)}-byte JSON body, gzip level {args.level} (gatehouse {gatehouse_level}), "
              f"one core per proxy "
              f"({time.strftime('%Y-%m-%d')})")
        print(f"{'':21s} {'req/s':>8s} {'bytes out':>10s} {'CPU-ms/req':>11s} {'CPU-s/MiB':>10s} "
              f"{'codec CPU-s/MiB':>16s}")
        for name, coding in runs:
            rps, ms = med[(name, coding)]
            per_mib = ms / 1000 / identity_mib
            baseline = med[(name, "identity")][1]
            codec = (ms - baseline) / 1000 / identity_mib if coding != "identity" else 0.0
            print(f"{name + ' ' + coding:21s} {rps:>8.0f} {sizes[(name, coding)]:>10d} {ms:>11.4f} "
                  f"{per_mib:>10.4f} {codec:>16.4f}")
        n, g = med[("nginx", "gzip")], med[("gatehouse", "gzip")]
        n_codec = n[1] - med[("nginx", "identity")][1]
        g_codec = g[1] - med[("gatehouse", "identity")][1]
        print(f"gzip ratio g/n: req/s {g[0] / n[0]:.2f}, CPU per request {g[1] / n[1]:.2f}, "
              f"compression's own CPU {g_codec / n_codec:.2f}, bytes out "
              f"{sizes[('gatehouse', 'gzip')] / sizes[('nginx', 'gzip')]:.3f}")
    finally:
        compare.stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
