#!/usr/bin/env python3
"""TLS comparison: gatehouse against nginx terminating HTTPS with the same ECDSA P-256
certificate (made by `gatehouse cert`), proxying to the same three fast upstreams.

Two figures, both with h2load over HTTP/1.1 (`--h1`, TLS 1.3 as negotiated by both):
  - full handshakes per second: `-c N -n N`, each client opens one connection, does one
    handshake (h2load keeps no session between clients, so none is resumed) and one request;
  - HTTPS keep-alive requests per second: 64 connections for --duration seconds.
Both proxies run one worker pinned to core 0; upstreams and h2load share core 1. Rounds
alternate nginx and gatehouse; the medians and the gatehouse/nginx ratios are printed, with
the proxy's CPU time per 1,000 handshakes and per 100k keep-alive requests (from /proc).

Usage: benches/load/tls_compare.py [--rounds 5] [--duration 5] [--handshakes 1000]
Installs nginx and h2load (nghttp2-client) with apt-get when missing; builds gatehouse.
"""

import argparse
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the plain-HTTP comparison: upstreams, process helpers)

NGINX_TLS_PORT = 18443
GATEHOUSE_TLS_PORT = 18444


def ensure_tools():
    compare.ensure_tools()
    if not shutil.which("h2load"):
        print("installing h2load with apt-get ...", flush=True)
        compare.sh("apt-get", "install", "-y", "-qq", "nghttp2-client")


def start_nginx(workdir: Path, cert: Path, key: Path):
    upstream = "\n".join(f"        server 127.0.0.1:{p};" for p in compare.UPSTREAM_PORTS)
    conf = workdir / "tls-proxy.conf"
    conf.write_text(
        compare.write_nginx_conf(
            conf,
            f"""http {{
    access_log off;
    upstream app {{
{upstream}
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{NGINX_TLS_PORT} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
""",
            workdir,
        )
    )
    return subprocess.Popen(["taskset", "-c", "0", compare.nginx_bin(), "-c", str(conf), "-p", str(workdir)])


def start_gatehouse(workdir: Path, binary: Path, cert: Path, key: Path):
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in compare.UPSTREAM_PORTS)
    conf = workdir / "gatehouse-tls.toml"
    conf.write_text(
        f"""
[process]
worker_threads = 1
[log]
level = "warn"
access = "off"
[admin]
bind = ""
[reload]
watch = false
[[listener]]
name = "bench"
bind = "127.0.0.1:{GATEHOUSE_TLS_PORT}"
tls = {{ certs = [ {{ cert = "{cert}", key = "{key}" }} ], alpn = ["http/1.1"] }}
[[route]]
upstream = "app"
[upstream.app]
servers = [{servers}]
keepalive = 512
"""
    )
    return subprocess.Popen(["taskset", "-c", "0", str(binary), "run", "--config", str(conf)])


def wait_tls(port: int, deadline_s: float = 10.0):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=1, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered 200 over TLS on port {port}")


def h2load(*args):
    out = subprocess.run(["taskset", "-c", "1", "h2load", "--h1", *args],
                         check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    total, succeeded = int(m.group(1)), int(m.group(3))
    protocol = re.search(r"Protocol: (\S+)", out)
    cipher = re.search(r"Cipher: (\S+)", out)
    tls = f"{protocol.group(1) if protocol else '?'} {cipher.group(1) if cipher else '?'}"
    return rate, total, succeeded, tls


def measure(name, port, pids, args):
    url = f"https://127.0.0.1:{port}/"
    # Full handshakes: every client one connection, one handshake, one request.
    before = compare.cpu_seconds(pids)
    hs_rate, hs_total, hs_ok, protocol = h2load("-c", str(args.handshakes), "-n", str(args.handshakes), "-t", "1", url)
    hs_cpu = (compare.cpu_seconds(pids) - before) / max(hs_ok, 1) * 1000
    # Keep-alive: 64 connections for the duration, after a warm-up of the upstream pools.
    before = compare.cpu_seconds(pids)
    ka_rate, ka_total, ka_ok, _ = h2load("-c", "64", "-t", "1", "-D", str(args.duration), "--warm-up-time", "1", url)
    ka_cpu = (compare.cpu_seconds(pids) - before) / max(ka_ok, 1) * 100_000
    failed = (hs_total - hs_ok) + (ka_total - ka_ok)
    print(f"  {name:9s} {hs_rate:>8.0f} handshakes/s ({hs_cpu:.3f} CPU-s/1k)  "
          f"{ka_rate:>8.0f} keep-alive req/s ({ka_cpu:.2f} CPU-s/100k)  failed {failed}  {protocol}",
          flush=True)
    return hs_rate, ka_rate, hs_cpu, ka_cpu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--handshakes", type=int, default=1000)
    parser.add_argument("--binary", default=str(compare.ROOT / "target/release/gatehouse"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()

    ensure_tools()
    if not args.no_build:
        compare.sh("cargo", "build", "--release", cwd=compare.ROOT)
    binary = Path(args.binary)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-tls-bench-"))
    procs = []
    try:
        certs = workdir / "certs"
        compare.sh(str(binary), "cert", "--hosts", "localhost,127.0.0.1", "--out", str(certs),
                   stdout=subprocess.DEVNULL)
        cert, key = certs / "cert.pem", certs / "key.pem"
        upstreams = compare.start_upstreams(workdir)
        procs.append(upstreams)
        for p in compare.UPSTREAM_PORTS:
            compare.wait_ready(p)
        nginx = start_nginx(workdir, cert, key)
        procs.append(nginx)
        gatehouse = start_gatehouse(workdir, binary, cert, key)
        procs.append(gatehouse)
        wait_tls(NGINX_TLS_PORT)
        wait_tls(GATEHOUSE_TLS_PORT)
        results = {"nginx": [], "gatehouse": []}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            results["nginx"].append(measure("nginx", NGINX_TLS_PORT, compare.process_tree(nginx.pid), args))
            results["gatehouse"].append(measure("gatehouse", GATEHOUSE_TLS_PORT, [gatehouse.pid], args))
        med = {k: [statistics.median(col) for col in zip(*v)] for k, v in results.items()}
        n, g = med["nginx"], med["gatehouse"]
        print()
        print(f"medians over {args.rounds} rounds: {args.handshakes} one-request connections (full "
              f"handshakes), then 64 keep-alive connections for {args.duration}s; ECDSA P-256, one "
              f"core per proxy ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
        print(f"{'':10s} {'handshakes/s':>13s} {'keep-alive req/s':>17s} {'CPU-s/1k hs':>12s} {'CPU-s/100k req':>15s}")
        print(f"{'nginx':10s} {n[0]:>13.0f} {n[1]:>17.0f} {n[2]:>12.3f} {n[3]:>15.2f}")
        print(f"{'gatehouse':10s} {g[0]:>13.0f} {g[1]:>17.0f} {g[2]:>12.3f} {g[3]:>15.2f}")
        print(f"{'ratio g/n':10s} {g[0] / n[0]:>13.2f} {g[1] / n[1]:>17.2f} {g[2] / n[2]:>12.2f} {g[3] / n[3]:>15.2f}")
    finally:
        compare.stop_all(procs)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
