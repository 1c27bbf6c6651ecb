#!/usr/bin/env python3
"""The workload a profile-guided build of gatehouse learns from (scripts/build-pgo).

Starts the same three nginx upstreams as compare.py, then a gatehouse built with
`-Cprofile-generate` behind one plain listener, and sends it, a few seconds each:
HTTP/1.1 keep-alive GETs (64 connections, 200-byte and 1 KiB answers), 1 KiB POST bodies,
HTTP/2 cleartext clients with 4 streams each, and cache hits. gatehouse is then stopped with
SIGTERM, so that it exits through its normal shutdown and the profile runtime writes its
counters (a process killed outright writes none).

What the profile sees is what the build favours: the proxied keep-alive request first, as in
production. Usage: benches/load/pgo_train.py BINARY [--seconds 4]
Needs nginx, wrk and h2load (apt-get install nginx wrk nghttp2-client).
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import compare

PORT = 18085


ROUTES = """
[[route]]
path_prefix = "/cached/"
upstream = "app"
cache = "hits"
[[route]]
path_prefix = "/"
upstream = "app"
[cache.hits]
max_size = "64MiB"
"""


def run(command):
    subprocess.run(command, check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    compare.ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="gatehouse-pgo-"))
    work.chmod(0o755)
    procs = []
    try:
        procs.append(compare.start_upstreams(work))
        for port in compare.UPSTREAM_PORTS:
            compare.wait_ready(port)
        conf = work / "gatehouse.toml"
        conf.write_text(compare.gatehouse_config(PORT, ROUTES))
        gatehouse = subprocess.Popen([args.binary, "run", "--config", str(conf)])
        procs.append(gatehouse)
        compare.wait_ready(PORT)
        url = f"http://127.0.0.1:{PORT}"
        duration = f"{args.seconds}s"
        post = work / "post.lua"
        post.write_text('wrk.method = "POST"\nwrk.body = string.rep("p", 1024)\n')
        print("training: HTTP/1.1 keep-alive GETs", flush=True)
        run(["wrk", "-t1", "-c64", f"-d{duration}", f"{url}/"])
        run(["wrk", "-t1", "-c256", f"-d{duration}", f"{url}/"])
        print("training: 1 KiB POST bodies", flush=True)
        run(["wrk", "-t1", "-c64", f"-d{duration}", "-s", str(post), f"{url}/"])
        print("training: HTTP/2 cleartext, 4 streams per connection", flush=True)
        run(["h2load", "-t1", "-c64", "-m4", "-D", str(args.seconds), f"{url}/"])
        print("training: cache hits", flush=True)
        run(["wrk", "-t1", "-c64", f"-d{duration}", f"{url}/cached/hit"])
        gatehouse.send_signal(signal.SIGTERM)
        if gatehouse.wait(timeout=30) != 0:
            raise RuntimeError("gatehouse did not exit cleanly: its profile may be missing")
    finally:
        compare.stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
