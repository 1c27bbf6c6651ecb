#!/usr/bin/env python3
"""Origin requests behind two gatehouse replicas, with and without the shared cache tier.

Two gatehouse processes (one core each) cache the same origin; wrk sends each replica the
same load over a working set of K URLs (random picks), as a round-robin balancer in front of
them would. The origin counts what reaches it. Without the shared tier each replica fetches
each object once per freshness period; with it, a response fetched by one replica is a
shared-tier hit for the other. Printed: origin requests per run and their ratio, and each
replica's req/s (the replicas, Redis, the origin and wrk share the machine: read the ratio).

Usage: benches/load/shared_origin.py [--rounds 3] [--duration 10] [--urls 200] [--max-age 2]
Needs: redis-server, wrk, a release build (target/release/gatehouse).
"""

import argparse
import http.server
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "gatehouse"


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


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, max_age: int):
        self.count = 0
        self.lock = threading.Lock()
        self.max_age = max_age
        super().__init__(("127.0.0.1", 0), OriginHandler)

    def handle_error(self, request, client_address):
        pass


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with self.server.lock:
            self.server.count += 1
        body = (self.path * 8)[:200].encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", f"public, max-age={self.server.max_age}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def config(port: int, admin: int, origin: int, redis: int, shared: bool) -> str:
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
upstream = "origin"
cache = "items"
[cache.items]
max_size = "64MiB"
shared = {"true" if shared else "false"}
[upstream.origin]
servers = ["127.0.0.1:{origin}"]
keepalive = 64
"""


def run_once(args, work: Path, shared: bool, redis_port: int) -> tuple[int, list[float]]:
    origin = Origin(args.max_age)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    procs = []
    ports = []
    try:
        for name in ("a", "b"):
            port, admin = free_port(), free_port()
            path = work / f"{name}.toml"
            path.write_text(config(port, admin, origin.server_address[1], redis_port, shared))
            procs.append(subprocess.Popen([str(BINARY), "run", "--config", str(path)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        for port in ports:
            wait_port(port)
        script = work / "urls.lua"
        script.write_text(
            f'math.randomseed(os.time() + {os.getpid()})\n'
            f'request = function() return wrk.format("GET", "/item/" .. math.random(1, {args.urls})) end\n')
        # One Host for both, as behind one balancer: the cache key is the host and the target.
        wrks = [subprocess.Popen(["wrk", "-t1", "-c16", f"-d{args.duration}s", "-s", str(script),
                                  "-H", "Host: shop.test",
                                  f"http://127.0.0.1:{port}/"],
                                 stdout=subprocess.PIPE, text=True) for port in ports]
        rates = []
        for w in wrks:
            out, _ = w.communicate()
            found = re.search(r"Requests/sec:\s+([\d.]+)", out)
            rates.append(float(found.group(1)) if found else 0.0)
        return origin.count, rates
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        origin.shutdown()
        origin.server_close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--urls", type=int, default=200)
    parser.add_argument("--max-age", type=int, default=2)
    args = parser.parse_args()
    for tool in ("redis-server", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"missing {tool}: apt-get install redis-server wrk")
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(redis_port)
            results = {False: [], True: []}
            for _ in range(args.rounds):
                for shared in (False, True):
                    subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"],
                                   stdout=subprocess.DEVNULL, check=False)
                    count, rates = run_once(args, work, shared, redis_port)
                    results[shared].append((count, rates))
                    label = "shared" if shared else "local "
                    print(f"{label}: origin requests {count:6d}   req/s A {rates[0]:9.0f}  B {rates[1]:9.0f}",
                          flush=True)
            local = statistics.median(c for c, _ in results[False])
            shared = statistics.median(c for c, _ in results[True])
            periods = args.duration / args.max_age
            print(f"median origin requests: local tiers only {local:.0f}, shared tier {shared:.0f}, "
                  f"ratio {shared / local:.2f} (one fetch per object per freshness period would be "
                  f"about {args.urls * periods:.0f})")
        finally:
            redis.terminate()
            redis.wait(timeout=10)


if __name__ == "__main__":
    main()
