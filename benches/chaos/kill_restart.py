#!/usr/bin/env python3
"""Chaos benchmark: kill one of three upstreams under load, restart it, and see what each proxy
makes of it — gatehouse (active health checks), haproxy (active `check`, same interval and
thresholds) and nginx open source (passive max_fails/fail_timeout).

Setup. Three standalone demo backends (`gatehouse demo-backend`, separate processes on
127.0.0.1:28001-28003), wrk, tcpdump and this script share core 1; the proxy under test runs
alone on core 0, with one worker. The proxies run one at a time (an idle proxy's health checks
would also reach the dead port), each freshly started with all three backends up:

- gatehouse: worker_threads 1, round robin, retries 2 (its default), health checks
  GET /healthz every 1s, timeout 500ms, unhealthy_threshold 2, healthy_threshold 2, no
  breaker; log level info, access log off;
- gatehouse-breaker (not run by default): the same plus the shipped config's breaker
  (5 consecutive failures, or 50% of at least 20 in 10s; open for 30s);
- haproxy: nbthread 1, roundrobin, `option httpchk GET /healthz`, `default-server check inter
  1000ms fall 2 rise 2`, `timeout check 500ms`, `retries 2`, `option redispatch 1` (every
  retry goes to another server);
- haproxy-retry-on (not run by default): the same plus `retry-on conn-failure empty-response`;
- nginx: one worker, `max_fails=2 fail_timeout=2s` on each server (2s to match rise 2 x inter
  1s; --nginx-fail-timeout), `proxy_next_upstream error timeout`, upstream keepalive 64.

Scenario, per run: a 2 s warm-up fills the proxy's upstream pools; then wrk (1 thread, 16
keep-alive connections, --duration seconds) sends `GET /orders?limit=1`, which the demo
backend always answers 200. Backend 2 gets SIGKILL at --kill-at seconds and is started again
on the same port at --restart-at seconds, each plus a random part of a check interval, so
that over the rounds the kill and the restart fall anywhere in the check cycle.

What is measured, and how (the same for the three proxies):

- total and failed requests: from wrk. Failed = any status other than 200 (a small Lua script
  counts statuses exactly) plus wrk's socket errors (connect, read, write, timeout).
- ejection, "time until the dead server stops getting traffic". A dead server receives no
  requests, only attempts, so it is observed on the wire: tcpdump captures on loopback, with
  kernel timestamps, every SYN and every packet starting with "GET " sent to backend 2's port.
  Data traffic to the dead server = connection attempts (SYN) plus requests written on pooled
  connections the proxy had not yet seen closed. Health-check probes are taken out: before the
  kill each probe is known exactly (a SYN whose connection then sends GET /healthz); after it
  they keep the proxy's cadence, so from the last known probe the SYN nearest each expected
  probe time (within 15% of the interval) is a probe, and the next is expected one interval
  after it. (Inside a dense burst this may pick a neighbour of the real probe, an error
  smaller than the burst's spacing, well under a millisecond.) Ejection = from the kill to
  the last data event of the burst that follows it (events less than half a check interval
  apart, 500 ms for nginx). Data events after that, while the server is still dead, are
  "later" attempts (nginx tries a failed server again with a live request every fail_timeout;
  each such attempt fails and is passed to the next server). For the checking proxies the
  script also reports which probe after the kill ended the burst and how long after it the
  last data event came: the proxy's own reaction, separated from where the kill fell in the
  check cycle (which alone puts a fall-2, 1s-interval ejection anywhere between 1 and 2 s).
- return, "time until it gets traffic again": from the moment the restarted backend accepts
  connections (the script connects every 2 ms after starting it) to the first "GET /orders"
  packet sent to it (the capture); for the checking proxies also from the `rise`-th passing
  probe (GET /healthz packets after the restart). Cross-check: the restarted backend's own
  count of order requests (`GET /_demo/stats`, polled every 20 ms on a keep-alive
  connection), whose first non-zero reading must come within a poll of the capture's figure.

The script exits non-zero when anything could not be measured: no probe seen before the kill,
no data request after the restart, packets dropped by the capture, a backend or proxy that
would not start, and so on.

Usage: benches/chaos/kill_restart.py [--rounds 3] [--duration 20] [--kill-at 5]
           [--restart-at 12] [--proxies gatehouse,haproxy,nginx] [--no-build] [--keep]
Installs nginx, haproxy, wrk and tcpdump with apt-get when they are missing (needs root, as
does the capture); builds gatehouse in release mode unless --no-build. Ports 28001-28003 and
28080-28082 on 127.0.0.1 must be free.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches" / "load"))
from compare import nginx_bin, sh, to_ms, write_nginx_conf  # noqa: E402

BACKEND_PORTS = [28001, 28002, 28003]
VICTIM = 1  # index of the backend that is killed: backend-2
PROXY_PORT = {"gatehouse": 28080, "gatehouse-breaker": 28080, "haproxy": 28081, "haproxy-retry-on": 28081,
              "nginx": 28082}
PATH = "/orders?limit=1"
CONNECTIONS = 16
CHECK_INTERVAL = 1.0  # seconds, gatehouse and haproxy
FALL = 2
RISE = 2
PROXY_CORE, LOAD_CORE = "0", "1"

WRK_LUA = """
-- Counts responses by status; done() prints them as "STATUS <code> <count>" lines.
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do total[status] = (total[status] or 0) + n end
  end
  for status, n in pairs(total) do io.write(string.format("STATUS %d %d\\n", status, n)) end
end
"""


class Unmeasured(Exception):
    """Something the run needed could not be observed."""


# ---------------------------------------------------------------------------------------------
# tools and processes


def ensure_tools():
    wanted = {"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "tcpdump": "tcpdump"}
    missing = [pkg for tool, pkg in wanted.items()
               if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def port_is_free(port):
    """True when nothing listens on the port (a plain bind, no SO_REUSEPORT, succeeds)."""
    with socket.socket() as s:
        # SO_REUSEADDR: TIME_WAIT leftovers of an earlier run do not count, listeners do.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_listening(port, deadline_s=10.0, step=0.002):
    """Connects every `step` seconds until the port accepts; returns the time it did."""
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.time()
        except OSError:
            time.sleep(step)
    raise Unmeasured(f"nothing listens on port {port} after {deadline_s:.0f}s")


def wait_ok(port, path=PATH, deadline_s=10.0):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise Unmeasured(f"port {port} did not answer 200 to GET {path}")


def stop(proc, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_backend(binary, index, workdir):
    port = BACKEND_PORTS[index]
    log = open(workdir / f"backend-{index + 1}.log", "a")
    # taskset execs the binary, so the Popen pid is the backend's: SIGKILL reaches it.
    return subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, str(binary), "demo-backend", "--bind", f"127.0.0.1:{port}",
         "--name", f"backend-{index + 1}"],
        stdout=log, stderr=subprocess.STDOUT)


def backend_requests(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/_demo/stats")
        return int(json.loads(conn.getresponse().read())["requests"])
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# the proxies under test


def start_gatehouse(binary, workdir, breaker):
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in BACKEND_PORTS)
    conf = workdir / "gatehouse.toml"
    conf.write_text(f"""
[process]
worker_threads = 1
[log]
level = "info"
access = "off"
[admin]
bind = ""
[[listener]]
name = "chaos"
bind = "127.0.0.1:{PROXY_PORT['gatehouse']}"
[[route]]
path_prefix = "/"
upstream = "app"
[upstream.app]
servers = [{servers}]
retries = 2
keepalive = 64
[upstream.app.health]
path = "/healthz"
interval = "{CHECK_INTERVAL:g}s"
timeout = "500ms"
unhealthy_threshold = {FALL}
healthy_threshold = {RISE}
""" + ("""[upstream.app.breaker]
consecutive_failures = 5
failure_rate = 0.5
window = "10s"
min_requests = 20
open_for = "30s"
""" if breaker else ""))
    log = open(workdir / "gatehouse.log", "a")
    return subprocess.Popen(["taskset", "-c", PROXY_CORE, str(binary), "run", "--config", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)


def start_haproxy(workdir, retry_on):
    servers = "\n".join(f"    server backend-{i + 1} 127.0.0.1:{p}" for i, p in enumerate(BACKEND_PORTS))
    conf = workdir / "haproxy.cfg"
    conf.write_text(f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 15s
    timeout check 500ms
    retries 2
    option redispatch 1
{"    retry-on conn-failure empty-response" if retry_on else ""}
frontend chaos
    bind 127.0.0.1:{PROXY_PORT['haproxy']}
    default_backend app
backend app
    balance roundrobin
    option httpchk GET /healthz
    default-server check inter {int(CHECK_INTERVAL * 1000)}ms fall {FALL} rise {RISE}
{servers}
""")
    log = open(workdir / "haproxy.log", "a")
    return subprocess.Popen(["taskset", "-c", PROXY_CORE, tool("haproxy"), "-db", "-f", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)


def start_nginx(workdir, fail_timeout):
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=2 fail_timeout={fail_timeout:g}s;"
                        for p in BACKEND_PORTS)
    conf = workdir / "nginx.conf"
    conf.write_text(write_nginx_conf(conf, f"""http {{
    access_log off;
    upstream app {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{PROXY_PORT['nginx']};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
""", workdir))
    return subprocess.Popen(["taskset", "-c", PROXY_CORE, nginx_bin(), "-c", str(conf), "-p", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# capture


def start_capture(workdir, run_name):
    port = BACKEND_PORTS[VICTIM]
    pcap = workdir / f"{run_name}.pcap"
    # SYNs (without ACK) and packets whose TCP payload starts with "GET ", towards the victim.
    bpf = (f"tcp dst port {port} and ((tcp[tcpflags] & (tcp-syn|tcp-ack)) == tcp-syn"
           f" or tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)")
    err = open(workdir / f"{run_name}.tcpdump.log", "w")
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, tool("tcpdump"), "-i", "lo", "-n", "-s", "96", "-B", "16384",
         "-Z", "root", "-w", str(pcap), bpf],
        stdout=subprocess.DEVNULL, stderr=err)
    log = workdir / f"{run_name}.tcpdump.log"
    end = time.time() + 10
    while "listening on" not in log.read_text():
        if proc.poll() is not None or time.time() > end:
            raise Unmeasured(f"tcpdump did not start: {log.read_text().strip()}")
        time.sleep(0.02)
    return proc, pcap, log


def stop_capture(proc, log):
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    text = log.read_text()
    for line in text.splitlines():
        if "dropped by kernel" in line and int(line.split()[0]) > 0:
            raise Unmeasured(f"the capture lost packets: {line.strip()}")
    return text


SYN, ACK = 0x02, 0x10


def read_pcap(path):
    """(timestamp, source port, tcp flags, payload prefix) of each captured IPv4 TCP packet."""
    data = path.read_bytes()
    if len(data) < 24:
        raise Unmeasured(f"empty capture {path}")
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack(">I", data[:4])[0]
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {0: 4, 1: 14, 113: 16, 276: 20}.get(linktype)
    if link_len is None:
        raise Unmeasured(f"unexpected link type {linktype} in {path}")
    packets, offset = [], 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        ip = frame[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        tcp = ip[(ip[0] & 0x0F) * 4:]
        if len(tcp) < 20:
            continue
        sport = struct.unpack(">H", tcp[:2])[0]
        payload = tcp[(tcp[12] >> 4) * 4:]
        packets.append((sec + frac * scale, sport, tcp[13], bytes(payload[:32])))
    return packets


# ---------------------------------------------------------------------------------------------
# one run


def analyse(packets, t_kill, t_spawn, t_listen, interval):
    """Ejection and return times from the capture (see the module docstring)."""
    syns = [(t, sport) for t, sport, flags, _ in packets if flags & (SYN | ACK) == SYN]
    gets = [(t, sport, p) for t, sport, _, p in packets if p.startswith(b"GET ")]
    result = {"data_before_kill": sum(1 for t, _, p in gets if t < t_kill and p.startswith(b"GET /orders"))}
    if result["data_before_kill"] == 0:
        raise Unmeasured("backend 2 got no requests before the kill")

    # Everything sent to the dead port: connection attempts, and requests written on pooled
    # connections the proxy had not yet seen closed (the kernel answers both with a reset).
    dead = sorted([t for t, _ in syns if t_kill <= t < t_spawn]
                  + [t for t, _, p in gets if t_kill <= t < t_spawn and p.startswith(b"GET /orders")])
    probes_dead = []
    if interval:
        # Probes before the kill, exactly: the SYN of each connection that sent GET /healthz.
        last_syn, probes = {}, []
        events = sorted([(t, 0, sport, b"") for t, sport in syns if t < t_kill]
                        + [(t, 1, sport, p) for t, sport, p in gets if t < t_kill])
        for t, kind, sport, p in events:
            if kind == 0:
                last_syn[sport] = t
            elif p.startswith(b"GET /healthz") and sport in last_syn:
                probes.append(last_syn.pop(sport))
        if not probes:
            raise Unmeasured("no health-check probe seen before the kill")
        # After the kill, on their cadence: from the last probe before it, the SYN nearest each
        # expected time is a probe, and the next one is expected an interval after it. Inside a
        # dense burst of data attempts this may take a neighbour of the real probe: an error
        # smaller than the spacing of the burst's attempts, which does not move the burst's end.
        tolerance = 0.15 * interval
        expected = probes[-1] + interval
        while expected < t_spawn and dead:
            near = [t for t in dead if abs(t - expected) <= tolerance]
            if near:
                probe = min(near, key=lambda t: abs(t - expected))
                dead.remove(probe)
                probes_dead.append(probe)
                expected = probe + interval
            else:
                expected += interval
    # The burst that follows the kill: data events closer than `gap` to the previous one (or,
    # for the first, to the kill); later ones are stray attempts at a server already ejected.
    gap = interval / 2 if interval else 0.5
    burst_end, burst = t_kill, 0
    for t in dead:
        if t - burst_end >= gap:
            break
        burst_end, burst = t, burst + 1
    result.update(ejection=burst_end - t_kill, burst=burst, later=len(dead) - burst)

    if interval:
        # Did a probe end the burst? The last data attempts may come just before or just after
        # it (picks made before the server was marked down), so "at" means within 50 ms. Its
        # time is taken as the next probe's minus the interval (the cadence after the burst,
        # with the proxy no longer busy failing, is the steadiest reference). Which probe after
        # the kill it was: the `fall`-th if the proxy does as configured. No probe there:
        # the proxy ejected the server on its own count of failures (passive), shown as 0.
        at_end = [i for i, t in enumerate(probes_dead) if abs(t - burst_end) <= 0.05]
        if at_end:
            i = at_end[-1]
            ejecting = probes_dead[i + 1] - interval if i + 1 < len(probes_dead) else probes_dead[i]
            result["ejecting_probe"] = round((ejecting - probes[-1]) / interval)
            result["ejection_after_probe"] = burst_end - ejecting
        else:
            result["ejecting_probe"] = 0
        quiet = [t for t in probes_dead if t > burst_end + 0.05]
        result["jitter"] = max((abs(b - a - interval) for a, b in zip(quiet, quiet[1:])), default=0.0)

    after = [(t, p) for t, _, p in gets if t >= t_spawn]
    first_data = next((t for t, p in after if p.startswith(b"GET /orders")), None)
    if first_data is None:
        raise Unmeasured("backend 2 got no request after its restart")
    result["return"] = first_data - t_listen
    if interval:
        passes = [t for t, p in after if p.startswith(b"GET /healthz")]
        if len(passes) < RISE:
            raise Unmeasured("fewer passing probes than rise before traffic returned")
        result["return_after_probe"] = first_data - passes[RISE - 1]
    return result


def parse_wrk(output):
    out = {"requests": None, "statuses": {}, "socket_errors": 0, "rps": None, "p99": None}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("STATUS "):
            out["statuses"][int(parts[1])] = int(parts[2])
        elif "requests in" in line:
            out["requests"] = int(parts[0])
        elif line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif line.strip().startswith("99%"):
            out["p99"] = to_ms(parts[1])
        elif line.strip().startswith("Socket errors:"):
            out["socket_errors"] = sum(int(x.strip(",")) for x in parts if x.strip(",").isdigit())
            out["socket_detail"] = line.split(":", 1)[1].strip()
    if out["requests"] is None:
        raise Unmeasured(f"could not read wrk's output:\n{output}")
    return out


def run_once(name, args, binary, workdir, backends, run_no):
    run_name = f"{name}-{run_no}"
    port = PROXY_PORT[name]
    if name.startswith("gatehouse"):
        proxy = start_gatehouse(binary, workdir, breaker=name == "gatehouse-breaker")
    elif name.startswith("haproxy"):
        proxy = start_haproxy(workdir, retry_on=name == "haproxy-retry-on")
    else:
        proxy = start_nginx(workdir, args.nginx_fail_timeout)
    capture = None
    try:
        wait_ok(port)
        url = f"http://127.0.0.1:{port}{PATH}"
        lua = workdir / "statuses.lua"
        subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", "-d2s", url],
                       check=True, capture_output=True, timeout=30)
        capture, pcap, capture_log = start_capture(workdir, run_name)
        victim_port = BACKEND_PORTS[VICTIM]
        before = backend_requests(victim_port)
        t0 = time.time()
        wrk = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{args.duration}s",
             "--latency", "-s", str(lua), url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # A random part of a check interval added to both moments, so that over the rounds the
        # kill and the restart fall anywhere in the proxies' check cycles.
        kill_at = args.kill_at + random.uniform(0, CHECK_INTERVAL)
        restart_at = args.restart_at + random.uniform(0, CHECK_INTERVAL)
        time.sleep(max(0.0, t0 + kill_at - time.time()))
        t_kill = time.time()
        backends[VICTIM].send_signal(signal.SIGKILL)
        backends[VICTIM].wait(timeout=5)
        time.sleep(max(0.0, t0 + restart_at - time.time()))
        t_spawn = time.time()
        backends[VICTIM] = start_backend(binary, VICTIM, workdir)
        t_listen = wait_listening(victim_port)
        # The restarted backend's own count, on one keep-alive connection, every 20 ms.
        t_counted = None
        stats = http.client.HTTPConnection("127.0.0.1", victim_port, timeout=1)
        while time.time() < t0 + args.duration and t_counted is None:
            stats.request("GET", "/_demo/stats")
            if int(json.loads(stats.getresponse().read())["requests"]) > 0:
                t_counted = time.time()
            else:
                time.sleep(0.02)
        stats.close()
        output, _ = wrk.communicate(timeout=args.duration + 30)
        stop_capture(capture, capture_log)
        capture = None
        wrk_result = parse_wrk(output)
        if t_counted is None:
            raise Unmeasured("the restarted backend counted no request before wrk ended")
        interval = None if name == "nginx" else CHECK_INTERVAL
        (workdir / f"{run_name}.json").write_text(json.dumps(
            {"t_kill": t_kill, "t_spawn": t_spawn, "t_listen": t_listen, "interval": interval}))
        result = analyse(read_pcap(pcap), t_kill, t_spawn, t_listen, interval)
        ok = wrk_result["statuses"].get(200, 0)
        result.update(
            requests=wrk_result["requests"],
            failed=wrk_result["requests"] - ok + wrk_result["socket_errors"],
            statuses=wrk_result["statuses"],
            socket_errors=wrk_result["socket_errors"],
            socket_detail=wrk_result.get("socket_detail", ""),
            rps=wrk_result["rps"],
            p99=wrk_result["p99"],
            return_counter=t_counted - t_listen,
            counted_before_kill=before,
        )
        if not args.keep:
            pcap.unlink(missing_ok=True)
        return result
    finally:
        if capture is not None:
            capture.send_signal(signal.SIGINT)
            capture.wait(timeout=10)
        stop(proxy)


# ---------------------------------------------------------------------------------------------
# report


def ms(value):
    if value is None:
        return "—"
    return f"{value * 1000:.1f} ms" if abs(value) < 0.01 else f"{value * 1000:.0f} ms"


def row(name, r):
    failures = [f"{n} x {st}" for st, n in sorted(r["statuses"].items()) if st != 200]
    if r["socket_errors"]:
        failures.append(f"socket errors: {r['socket_detail']}")
    probe = r.get("ejecting_probe")
    probe = "" if probe is None else " (passive)" if probe == 0 else f" (#{probe})"
    return (f"  {name:26s} {r['requests']:>9d} {r['failed']:>7d} {ms(r['ejection']):>9s} "
            f"{ms(r.get('ejection_after_probe')) + probe:>14s} {r['later']:>6d} {ms(r['return']):>9s} "
            f"{ms(r.get('return_after_probe')):>9s} {ms(r['return_counter']):>9s}"
            + (f"   {'; '.join(failures)}" if failures else ""))


HEADER = (f"  {'':26s} {'requests':>9s} {'failed':>7s} {'ejection':>9s} {'after ck (#)':>14s} {'later':>6s} "
          f"{'return':>9s} {'after ck':>9s} {'counter':>9s}")
LEGEND = """\
  requests/failed: wrk totals (failed = status other than 200, plus socket errors)
  ejection: kill -> last data connection attempt or request to the dead server (capture);
    after ck: the same, counted from the probe that ejected it, located one interval before
    the first probe after the burst; (#n): that was the n-th probe after the kill;
    (passive): the burst ended before any probe, on the proxy's own failure count
  later: data connection attempts to the dead server after that (nginx's fail_timeout retries)
  return: restarted server listening -> its first data request (capture);
    after ck: the same, counted from the 2nd passing check; counter: from the backend's own
    request count, polled every 20 ms (an upper bound of the capture's figure)"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--kill-at", type=float, default=5.0)
    parser.add_argument("--restart-at", type=float, default=12.0)
    parser.add_argument("--proxies", default="gatehouse,haproxy,nginx",
                        help="comma-separated, run in this order each round; also gatehouse-breaker (plus the "
                             "shipped config's breaker) and haproxy-retry-on (plus retry-on conn-failure "
                             "empty-response)")
    parser.add_argument("--nginx-fail-timeout", type=float, default=2.0)
    parser.add_argument("--binary", default=str(ROOT / "target/release/gatehouse"))
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = parser.parse_args()
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    for p in proxies:
        if p not in PROXY_PORT:
            parser.error(f"unknown proxy {p!r}")
    if not 0 < args.kill_at < args.restart_at - CHECK_INTERVAL < args.duration - 4 - 2 * CHECK_INTERVAL:
        parser.error("need 0 < --kill-at < --restart-at - 1 < --duration - 6")

    ensure_tools()
    if not args.no_build:
        sh("cargo", "build", "--release", cwd=ROOT)
    binary = Path(args.binary)
    busy = [p for p in BACKEND_PORTS + sorted(set(PROXY_PORT.values())) if not port_is_free(p)]
    if busy:
        print(f"ports already in use: {busy}", file=sys.stderr)
        return 2
    if os.cpu_count() and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # this script shares the load core
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-chaos-"))
    (workdir / "statuses.lua").write_text(WRK_LUA)
    backends = []
    results = {p: [] for p in proxies}
    failures = []
    try:
        for i in range(len(BACKEND_PORTS)):
            backends.append(start_backend(binary, i, workdir))
        for p in BACKEND_PORTS:
            wait_ok(p)
        print(f"kill backend-2 at {args.kill_at:g}-{args.kill_at + CHECK_INTERVAL:g}s, restart at "
              f"{args.restart_at:g}-{args.restart_at + CHECK_INTERVAL:g}s, "
              f"wrk {CONNECTIONS} connections for {args.duration}s, GET {PATH}", flush=True)
        for round_no in range(1, args.rounds + 1):
            for name in proxies:
                try:
                    r = run_once(name, args, binary, workdir, backends, round_no)
                    results[name].append(r)
                    print(f"round {round_no} {name}: {r['requests']} requests ({r['rps']:.0f}/s), "
                          f"{r['failed']} failed, p99 {r['p99']:.1f} ms; ejection {ms(r['ejection'])} ({r['burst']} attempts"
                          + ("" if "jitter" not in r else
                             f", passive: no probe at the burst's end" if r["ejecting_probe"] == 0 else
                             f", {ms(r['ejection_after_probe'])} after probe #{r['ejecting_probe']}, "
                             f"probe jitter {ms(r['jitter'])}")
                          + f"), {r['later']} later attempts; return {ms(r['return'])}"
                          + (f" ({ms(r['return_after_probe'])} after the 2nd passing probe)"
                             if "return_after_probe" in r else "")
                          + f", backend counter {ms(r['return_counter'])}", flush=True)
                except (Unmeasured, subprocess.SubprocessError, OSError) as e:
                    failures.append(f"round {round_no} {name}: {e}")
                    print(f"round {round_no} {name}: NOT MEASURED: {e}", flush=True)
                # Whatever happened, the next run starts with three live backends.
                if backends[VICTIM].poll() is not None:
                    backends[VICTIM] = start_backend(binary, VICTIM, workdir)
                wait_ok(BACKEND_PORTS[VICTIM])
    finally:
        for b in backends:
            stop(b)
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; each run below, then medians")
    print(HEADER)
    for name in proxies:
        for r in results[name]:
            print(row(name, r))
    print()
    print(HEADER)
    for name in proxies:
        rs = results[name]
        if not rs:
            continue

        def med(key):
            values = [r[key] for r in rs if r.get(key) is not None]
            return statistics.median(values) if values else None

        summary = {k: med(k) for k in ("ejection", "ejection_after_probe", "return", "return_after_probe",
                                      "return_counter")}
        summary.update(requests=int(med("requests")), failed=int(med("failed")), later=int(med("later")),
                       statuses={}, socket_errors=0)
        if all(r.get("ejecting_probe") is not None for r in rs):
            seen = sorted({r["ejecting_probe"] for r in rs})
            summary["ejecting_probe"] = seen[0] if len(seen) == 1 else "/".join(map(str, seen))
        print(row(f"{name} (median)", summary))
    print(LEGEND)
    if failures:
        print("\nnot measured:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
