#!/usr/bin/env python3
"""Load comparison: gatehouse against nginx, proxying to the same three fast upstreams.

Both proxies run with one worker, pinned to one core; the upstreams and wrk share the other.
Rounds alternate nginx and gatehouse so that the machine's noise hits both alike. For each run
it records requests per second and p99 latency (wrk) and the proxy's CPU time (utime + stime
from /proc) per 100k requests, then prints medians and gatehouse/nginx ratios.

With --workers N (N > 1) both proxies get N workers (gatehouse `worker_threads = N` with
`--scheduler per_core|work_stealing`, nginx `worker_processes N`) and nothing is pinned: proxies,
upstreams and wrk share every core, as they would on a host that runs them all.
--body-bytes sets the upstreams' response size (served from a file above 4 KiB), --post-bytes
makes every request a POST with a body of that size (nginx buffers it, gatehouse streams it).
--cpu-quota F runs each proxy in its own cgroup limited to F of one core (cgroup v2 cpu.max,
or v1's CFS quota), so that the proxy, not the load side, is what runs out: at one core each, wrk
and the upstreams cost about as much CPU per request as either proxy, their core saturates first,
and req/s then says more about the load side than about the proxy. Under a quota, req/s compares
what each proxy serves from the same CPU budget, as in a container with a CPU limit; its p99
includes the quota's throttling and says little. Each run also reports the load side's CPU per
request (upstreams and wrk or h2load) and how busy each core was.
--h2 makes the clients speak HTTP/2 cleartext by prior knowledge (h2load, --streams requests in
flight on each connection, 4 by default as `h2load -c64 -m4`); both proxies still reach the
upstreams over HTTP/1.1. h2load reports no percentiles: the latency column is then its mean
time per request.

Usage: benches/load/compare.py [--rounds 5] [--duration 10] [--connections 64]
       [--body-bytes 200] [--post-bytes 0] [--workers 1] [--scheduler per_core]
       [--cpu-quota F] [--h2 [--streams 4]]
Installs nginx, wrk and h2load with apt-get when they are missing; builds gatehouse in release mode.
"""

import argparse
import json
import resource
import threading
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_PORTS = [18001, 18002, 18003]
NGINX_PORT = 18080
GATEHOUSE_PORT = 18081
BODY = "x" * 199 + "\n"  # 200-byte responses (--body-bytes changes it)
# CPU sets: one core for the proxy and one for the rest, unless --workers asks for more.
PROXY_CPUS = "0"
REST_CPUS = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The quota's accounting period: short, so that a throttled proxy stalls for milliseconds only.
QUOTA_PERIOD_US = 10_000


def cpu_quota_group(name: str, share: float) -> Path:
    """A cgroup limited to `share` of one core; its processes file is returned."""
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        subtree = v2 / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            subtree.write_text("+cpu")
        group = v2 / name
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{int(share * QUOTA_PERIOD_US)} {QUOTA_PERIOD_US}")
        return group / "cgroup.procs"
    v1 = Path("/sys/fs/cgroup/cpu")
    if not (v1 / "cpu.cfs_quota_us").exists():
        raise SystemExit("--cpu-quota needs the cgroup cpu controller (v2 cpu.max or v1 CFS quota)")
    group = v1 / name
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(str(QUOTA_PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(int(share * QUOTA_PERIOD_US)))
    return group / "cgroup.procs"


def remove_quota_groups():
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")):
        for name in ("gatehouse-bench-nginx", "gatehouse-bench-gatehouse"):
            try:
                (root / name).rmdir()
            except OSError:
                pass


def proxy_command(name: str, command: list, quota):
    """`command` pinned to the proxy's cores, and inside its quota's cgroup when there is one."""
    command = ["taskset", "-c", PROXY_CPUS] + command
    if quota is None:
        return command
    procs = cpu_quota_group(f"gatehouse-bench-{name}", quota)
    return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"] + command


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    if (not shutil.which("wrk") or not shutil.which("h2load")
            or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists())):
        print("installing nginx, wrk and h2load with apt-get ...", flush=True)
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", "nginx", "wrk", "nghttp2-client")


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write_nginx_conf(path: Path, body: str, workdir: Path):
    events = "events { worker_connections 4096; }"
    common = f"""
daemon off;
worker_processes 1;
error_log {workdir}/nginx-error.log warn;
pid {path}.pid;
{events}
"""
    return common + body


def start_upstreams(workdir: Path):
    if len(BODY) > 4096:
        # Long bodies from a file (`return` takes a short string).
        www = workdir / "www"
        www.mkdir(exist_ok=True)
        (www / "body.txt").write_text(BODY)
        answer = f"root {www}; try_files /body.txt =404;"
    else:
        answer = f"return 200 '{BODY[:-1]}\\n';"
    # POSTs to a static file get 405 from nginx: `error_page 405 =200` answers them alike.
    servers = "\n".join(
        f"    server {{ listen 127.0.0.1:{p} reuseport; keepalive_requests 1000000; "
        f"location / {{ default_type text/plain; error_page 405 =200 $uri; {answer} }} }}"
        for p in UPSTREAM_PORTS
    )
    conf = workdir / "upstreams.conf"
    conf.write_text(
        write_nginx_conf(conf, f"http {{ access_log off;\n{servers}\n}}\n", workdir)
    )
    return subprocess.Popen(["taskset", "-c", REST_CPUS, nginx_bin(), "-c", str(conf), "-p", str(workdir)])


def start_nginx_proxy(workdir: Path, resilience: bool, workers: int, h2: bool, quota=None):
    # nginx open source has passive checks only: max_fails within fail_timeout.
    options = " max_fails=3 fail_timeout=10s" if resilience else ""
    upstream = "\n".join(f"        server 127.0.0.1:{p}{options};" for p in UPSTREAM_PORTS)
    conf = workdir / "proxy.conf"
    conf.write_text(
        write_nginx_conf(
            conf,
            f"""http {{
    access_log off;
    upstream app {{
{upstream}
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{NGINX_PORT}{" http2" if h2 else ""};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
""",
            workdir,
        )
    )
    text = conf.read_text().replace("worker_processes 1;", f"worker_processes {workers};")
    conf.write_text(text)
    master = subprocess.Popen(proxy_command("nginx", [nginx_bin(), "-c", str(conf), "-p", str(workdir)], quota))
    return master


RESILIENCE = """
[upstream.app.health]
path = "/healthz"
interval = "2s"
timeout = "1s"
[upstream.app.breaker]
consecutive_failures = 5
failure_rate = 0.5
"""


def gatehouse_config(listen_port: int, routes: str, workers: int = 1, scheduler: str = "per_core",
                     admin: str = "") -> str:
    """A benchmark config: one listener, quiet logs, the three upstreams as `app` (keepalive
    512), and the routes given (TOML `[[route]]` tables)."""
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in UPSTREAM_PORTS)
    return f"""
[process]
worker_threads = {workers}
scheduler = "{scheduler}"
[log]
level = "warn"
access = "off"
[admin]
bind = "{admin}"
[[listener]]
name = "bench"
bind = "127.0.0.1:{listen_port}"
{routes}
[upstream.app]
servers = [{servers}]
keepalive = 512
"""


def start_gatehouse(workdir: Path, binary: Path, resilience: bool, workers: int, scheduler: str,
                    quota=None):
    conf = workdir / "gatehouse.toml"
    routes = '[[route]]\npath_prefix = "/"\nupstream = "app"'
    conf.write_text(
        gatehouse_config(GATEHOUSE_PORT, routes, workers, scheduler, admin="127.0.0.1:18091")
        + (RESILIENCE if resilience else "")
    )
    return subprocess.Popen(proxy_command("gatehouse", [str(binary), "run", "--config", str(conf)], quota))


def stop_all(procs):
    """SIGTERM the processes this script started (newest first), SIGKILL any still up after 15 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def reload_loop(config: Path, every: float, stop: threading.Event):
    """Rewrites the config (alternating a comment, so the text changes) and POSTs /reload."""
    text = config.read_text()
    flip = False
    while not stop.wait(every):
        flip = not flip
        config.write_text(text + ("# reload\n" if flip else ""))
        request = urllib.request.Request("http://127.0.0.1:18091/reload", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            if json.load(response).get("ok") is not True:
                raise RuntimeError("reload failed during the benchmark")


def wait_ready_path(port: int, path: str, deadline_s: float = 10.0):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered 200 on port {port}{path}")


def wait_ready(port: int, deadline_s: float = 10.0):
    wait_ready_path(port, "/", deadline_s)


def wait_listening(port: int, deadline_s: float = 10.0):
    """For nginx's h2c-only listener, which answers HTTP/1.1 with an HTTP/2 frame."""
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def process_tree(pid: int):
    """The pid and its children (nginx's master and worker)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    return pids


def cpu_seconds(pids):
    """CPU time of the processes, user and system, in seconds."""
    return sum(cpu_split(pids))


def cpu_split(pids):
    """User and system CPU time of the processes, in seconds."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user / CLK_TCK, system / CLK_TCK


def rss_mib(pids):
    """Resident memory of the processes (nginx: master and workers), in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def parse_wrk(output: str):
    requests = rps = p99 = None
    errors = 0
    for line in output.splitlines():
        parts = line.split()
        if line.strip().startswith("99%"):
            p99 = to_ms(parts[1])
        elif line.startswith("Requests/sec:"):
            rps = float(parts[1])
        elif "requests in" in line:
            requests = int(parts[0])
        elif line.strip().startswith("Non-2xx") or line.strip().startswith("Socket errors"):
            errors += sum(int(x.strip(",")) for x in parts if x.strip(",").isdigit())
    return requests, rps, p99, errors


def to_ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def wrk_command(port, args, duration, latency):
    command = ["taskset", "-c", REST_CPUS, "wrk", f"-t{args.workers}", f"-c{args.connections}", f"-d{duration}"]
    if latency:
        command.append("--latency")
    if args.post_script:
        command += ["-s", args.post_script]
    return command + [f"http://127.0.0.1:{port}/"]


def h2load_command(port, args, duration):
    return ["taskset", "-c", REST_CPUS, "h2load", f"-t{args.workers}", f"-c{args.connections}",
            f"-m{args.streams}", "-D", str(duration), f"http://127.0.0.1:{port}/"]


def parse_h2load(output: str):
    """Requests done, req/s, mean time per request (ms) and failed or errored requests."""
    requests = rps = mean = None
    errors = 0
    for line in output.splitlines():
        parts = line.replace(",", "").split()
        if line.startswith("finished in"):
            rps = float(parts[3])
        elif line.startswith("requests:"):
            requests = int(parts[7])  # succeeded
            errors += int(parts[9]) + int(parts[11])  # failed, errored
        elif line.startswith("time for request:"):
            mean = to_ms(parts[5])
    return requests, rps, mean, errors


def core_times():
    """Per core: total and idle (idle + iowait) jiffies, from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0].startswith("cpu") and fields[0] != "cpu":
            values = [int(v) for v in fields[1:]]
            times[int(fields[0][3:])] = (sum(values), values[3] + values[4])
    return times


def busy_share(before, after, cpus: str):
    """How busy the cores in `cpus` ("0", "1", "0-1") were between two `core_times()`."""
    first, _, last = cpus.partition("-")
    cores = range(int(first), int(last or first) + 1)
    total = sum(after[c][0] - before[c][0] for c in cores)
    idle = sum(after[c][1] - before[c][1] for c in cores)
    return 1 - idle / total if total else float("nan")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name, port, pids, args):
    """One measured run against the proxy on `port` whose processes are `pids`: req/s, p99,
    the proxy's CPU and user CPU per 100k requests, the load side's CPU per 100k (upstreams
    and the load generator), and how busy the proxy's core and the load side's core were."""
    if args.h2:
        subprocess.run(h2load_command(port, args, 2), check=True, capture_output=True)
        command = h2load_command(port, args, args.duration)
    else:
        # Warm-up: fill the upstream pools.
        subprocess.run(wrk_command(port, args, "2s", False), check=True, capture_output=True)
        command = wrk_command(port, args, f"{args.duration}s", True)
    before, load_before, generator_before, cores_before = (
        cpu_split(pids), cpu_seconds(args.upstream_pids), children_cpu(), core_times())
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    after, load_after, generator_after, cores_after = (
        cpu_split(pids), cpu_seconds(args.upstream_pids), children_cpu(), core_times())
    requests, rps, p99, errors = (parse_h2load if args.h2 else parse_wrk)(out)
    user, system = (a - b for a, b in zip(after, before))
    per_100k = 100_000 / requests if requests else float("nan")
    cpu_per_100k = (user + system) * per_100k
    # The user-space share: the part of the CPU that the proxy's own code decides; the rest is
    # the kernel's sockets and loopback TCP, much the same for any proxy.
    user_per_100k = user * per_100k
    load_per_100k = (load_after - load_before + generator_after - generator_before) * per_100k
    proxy_busy = busy_share(cores_before, cores_after, PROXY_CPUS)
    load_busy = busy_share(cores_before, cores_after, REST_CPUS)
    print(f"  {name:9s} {rps:>10.0f} req/s  p99 {p99:>7.2f} ms  {cpu_per_100k:>6.2f} CPU-s/100k "
          f"(user {user_per_100k:.2f})  load side {load_per_100k:.2f}  cores busy "
          f"{proxy_busy:.0%}/{load_busy:.0%}  errors {errors}", flush=True)
    return rps, p99, cpu_per_100k, user_per_100k, load_per_100k, proxy_busy, load_busy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--binary", default=str(ROOT / "target/release/gatehouse"))
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--reload-every", type=float, default=0.0,
                        help="also measure gatehouse while its config is reloaded every N seconds")
    parser.add_argument("--resilience", action="store_true",
                        help="gatehouse with health checks (2s) and breakers on; nginx with max_fails")
    parser.add_argument("--body-bytes", type=int, default=200, help="upstream response size")
    parser.add_argument("--post-bytes", type=int, default=0, help="POST bodies of this size")
    parser.add_argument("--workers", type=int, default=1, help="workers per proxy (and wrk threads)")
    parser.add_argument("--scheduler", default="per_core", choices=["per_core", "work_stealing"])
    parser.add_argument("--h2", action="store_true", help="HTTP/2 cleartext clients (h2load)")
    parser.add_argument("--streams", type=int, default=4, help="with --h2: requests in flight per connection")
    parser.add_argument("--cpu-quota", type=float, default=None,
                        help="limit each proxy to this share of one core (cgroup), so that it is the bottleneck")
    args = parser.parse_args()
    if args.cpu_quota is not None and not 0.05 <= args.cpu_quota <= args.workers:
        parser.error("--cpu-quota is a share of one core per worker: between 0.05 and --workers")
    global BODY, PROXY_CPUS, REST_CPUS
    BODY = "x" * (args.body_bytes - 1) + "\n"
    if args.workers > 1:
        every = f"0-{os.cpu_count() - 1}"
        PROXY_CPUS = REST_CPUS = every

    ensure_tools()
    if not args.no_build:
        sh("cargo", "build", "--release", cwd=ROOT)
    binary = Path(args.binary)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    # nginx's workers (user nobody when started as root) read the body file from here.
    workdir.chmod(0o755)
    args.post_script = None
    if args.post_bytes > 0:
        script = workdir / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("p", {args.post_bytes})\n'
                          'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        args.post_script = str(script)
    procs = []
    try:
        upstreams = start_upstreams(workdir)
        procs.append(upstreams)
        for p in UPSTREAM_PORTS:
            wait_ready(p)
        args.upstream_pids = process_tree(upstreams.pid)
        nginx = start_nginx_proxy(workdir, args.resilience, args.workers, args.h2, args.cpu_quota)
        procs.append(nginx)
        gatehouse = start_gatehouse(workdir, binary, args.resilience, args.workers, args.scheduler,
                                    args.cpu_quota)
        procs.append(gatehouse)
        (wait_listening if args.h2 else wait_ready)(NGINX_PORT)
        wait_ready(GATEHOUSE_PORT)
        results = {"nginx": [], "gatehouse": []}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}", flush=True)
            results["nginx"].append(measure("nginx", NGINX_PORT, process_tree(nginx.pid), args))
            results["gatehouse"].append(measure("gatehouse", GATEHOUSE_PORT, [gatehouse.pid], args))
        if args.reload_every > 0:
            results["gatehouse+reloads"] = []
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no}/{args.rounds} with a reload every {args.reload_every}s", flush=True)
                stop = threading.Event()
                reloads = threading.Thread(target=reload_loop, args=(workdir / "gatehouse.toml", args.reload_every, stop))
                reloads.start()
                try:
                    results["gatehouse+reloads"].append(measure("gh+reload", GATEHOUSE_PORT, [gatehouse.pid], args))
                finally:
                    stop.set()
                    reloads.join()
        rss = {"nginx": rss_mib(process_tree(nginx.pid)), "gatehouse": rss_mib([gatehouse.pid])}
        med = {k: [statistics.median(col) for col in zip(*v)] for k, v in results.items()}
        n, g = med["nginx"], med["gatehouse"]
        print()
        if args.resilience:
            print("gatehouse: health checks every 2s and breakers on; nginx: max_fails=3 fail_timeout=10s")
        shape = ((f"HTTP/2 clients, {args.streams} streams each, latency column is the mean, " if args.h2 else "")
                 + f"{args.body_bytes}-byte responses"
                 + (f", {args.post_bytes}-byte POST bodies" if args.post_bytes else ", GETs"))
        cores = ("one core per proxy" if args.workers == 1
                 else f"{args.workers} workers per proxy (gatehouse {args.scheduler}), all sharing every core")
        if args.cpu_quota is not None:
            cores += f", each proxy limited to {args.cpu_quota:g} of a core"
        print(f"medians over {args.rounds} rounds, {args.connections} connections, {args.duration}s each, "
              f"{shape}, {cores} ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
        print(f"{'':10s} {'req/s':>10s} {'p99 ms':>8s} {'CPU-s/100k':>11s} {'user':>6s}")
        print(f"{'nginx':10s} {n[0]:>10.0f} {n[1]:>8.2f} {n[2]:>11.2f} {n[3]:>6.2f}")
        print(f"{'gatehouse':10s} {g[0]:>10.0f} {g[1]:>8.2f} {g[2]:>11.2f} {g[3]:>6.2f}")
        print(f"{'ratio g/n':10s} {g[0] / n[0]:>10.2f} {g[1] / n[1]:>8.2f} {g[2] / n[2]:>11.2f} {g[3] / n[3]:>6.2f}")
        print(f"resident memory after the runs: nginx {rss['nginx']:.1f} MiB (master and workers), "
              f"gatehouse {rss['gatehouse']:.1f} MiB, ratio {rss['gatehouse'] / rss['nginx']:.2f}")
        print(f"load side (upstreams and {'h2load' if args.h2 else 'wrk'}), CPU-s/100k: "
              f"{n[4]:.2f} with nginx, {g[4]:.2f} with gatehouse; cores busy (proxy/load side): "
              f"nginx {n[5]:.0%}/{n[6]:.0%}, gatehouse {g[5]:.0%}/{g[6]:.0%}")
        if args.workers == 1 and max(n[6], g[6]) >= 0.95:
            print("the load side's core was saturated: req/s is bounded by it more than by either proxy; "
                  "compare CPU per request, or run with --cpu-quota")
        if "gatehouse+reloads" in med:
            r = med["gatehouse+reloads"]
            print(f"{'gh+reload':10s} {r[0]:>10.0f} {r[1]:>8.2f} {r[2]:>11.2f}   "
                  f"(a reload every {args.reload_every}s; p99 ratio to no reloads {r[1] / g[1]:.2f})")
    finally:
        stop_all(procs)
        if args.cpu_quota is not None:
            remove_quota_groups()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
