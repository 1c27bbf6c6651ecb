#!/usr/bin/env python3
"""When a server dies under load: three demo backends behind gatehouse (round robin, health
checks every 2 s with the default thresholds, the default ejection after 3 refused connects),
wrk keeping 32 connections busy; one backend is SIGKILLed 3 s in and restarted 5 s later.

Prints, per round: failed requests (wrk's non-2xx and socket errors), the connects the dead
backend refused (gatehouse_upstream_requests_total{outcome="connect_error"}), the time from
the kill to the last of them (polled every 5 ms), each survivor's share of the requests while
the third was dead (from the backends' own /_demo/stats counters), and the time from the
restart to the first request it served.

Usage: benches/load/eject.py [ROUNDS] [gatehouse-binary]   (needs wrk)
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target/release/gatehouse")
BACKENDS = [("b1", 18201), ("b2", 18202), ("b3", 18203)]
PROXY, ADMIN = 18280, 18290


def get(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


def stats(port):
    return json.loads(get(f"http://127.0.0.1:{port}/_demo/stats"))["requests"]


def metric(name, labels):
    text = get(f"http://127.0.0.1:{ADMIN}/metrics")
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def start_backend(name, port):
    return subprocess.Popen(
        [BINARY, "demo-backend", "--bind", f"127.0.0.1:{port}", "--name", name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_up(url):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def one_round():
    backends = {name: start_backend(name, port) for name, port in BACKENDS}
    for _, port in BACKENDS:
        wait_up(f"http://127.0.0.1:{port}/healthz")
    servers = ", ".join(f'"127.0.0.1:{port}"' for _, port in BACKENDS)
    config = f"""
[process]
worker_threads = 1
[log]
level = "warn"
access = "off"
[admin]
bind = "127.0.0.1:{ADMIN}"
[[listener]]
name = "bench"
bind = "127.0.0.1:{PROXY}"
[[route]]
upstream = "app"
[upstream.app]
servers = [{servers}]
[upstream.app.health]
interval = "2s"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    proxy = subprocess.Popen([BINARY, "run", "--config", f.name],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(f"http://127.0.0.1:{ADMIN}/healthz")
        wrk = subprocess.Popen(
            ["wrk", "-t1", "-c32", "-d12s", f"http://127.0.0.1:{PROXY}/orders?limit=1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        survivors_before = {n: stats(p) for n, p in BACKENDS[:2]}
        dead = BACKENDS[2]
        backends[dead[0]].send_signal(signal.SIGKILL)
        backends[dead[0]].wait()
        killed = time.time()
        labels = {"server": f"127.0.0.1:{dead[1]}", "outcome": "connect_error"}
        refused, last_change = metric("gatehouse_upstream_requests_total", labels), killed
        while time.time() < killed + 5:
            now_refused = metric("gatehouse_upstream_requests_total", labels)
            if now_refused != refused:
                refused, last_change = now_refused, time.time()
            time.sleep(0.005)
        survivors_after = {n: stats(p) for n, p in BACKENDS[:2]}
        backends[dead[0]] = start_backend(*dead)
        restarted = time.time()
        back_after = None
        while time.time() < restarted + 3.5:
            try:
                if stats(dead[1]) > 0:
                    back_after = time.time() - restarted
                    break
            except OSError:
                pass
            time.sleep(0.01)
        out = wrk.communicate()[0]
        total = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        failed = (int(non2xx.group(1)) if non2xx else 0) + (
            sum(int(g) for g in errors.groups()) if errors else 0)
        during = {n: survivors_after[n] - survivors_before[n] for n in survivors_after}
        share = {n: v / max(1, sum(during.values())) for n, v in during.items()}
        return {
            "requests": total, "failed": failed, "refused_connects": int(refused),
            "kill_to_last_refused_ms": round((last_change - killed) * 1000, 1),
            "survivor_shares_while_dead": {n: round(v, 3) for n, v in share.items()},
            "first_request_after_restart_s": None if back_after is None else round(back_after, 2),
        }
    finally:
        proxy.terminate()
        proxy.wait()
        for process in backends.values():
            process.kill()
            process.wait()
        os.unlink(f.name)


def main():
    for tool in ("wrk",):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            raise SystemExit(f"missing {tool}: apt-get install {tool}")
    for i in range(ROUNDS):
        print(json.dumps({"round": i + 1, **one_round()}), flush=True)


if __name__ == "__main__":
    main()
