"""The status page in headless Chromium, driven over the WebDriver protocol (chromedriver):
it loads with no console errors, shows the three demo servers, and turns one red within one
health interval of its health checks failing. Saves a screenshot as an artifact.

Run by tests/e2e/run.sh (which starts gatehouse and chromedriver) with ADMIN_URL, DRIVER_URL,
BACKEND_URLS and E2E_ARTIFACTS set. Standard library only."""

import base64
import json
import os
import sys
import threading
import time
import urllib.request

ADMIN = os.environ["ADMIN_URL"]
PROXY = os.environ["PROXY_URL"]
DRIVER = os.environ["DRIVER_URL"]
BACKENDS = os.environ["BACKEND_URLS"].split()
ARTIFACTS = os.environ["E2E_ARTIFACTS"]
CONFIG = os.path.join(os.environ["E2E_TMP"], "gatehouse.toml")
# The e2e config's health interval for upstream "orders".
HEALTH_INTERVAL = 2.0


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        fail(f"{method} {url}: HTTP {error.code} {error.read()[:500]!r}")


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def driver_ready():
    try:
        with urllib.request.urlopen(DRIVER + "/status", timeout=2) as response:
            return json.loads(response.read())["value"].get("ready")
    except OSError:
        return False


def server_status(addr):
    with urllib.request.urlopen(ADMIN + "/status", timeout=5) as response:
        status = json.loads(response.read())
    return next(s for s in status["upstreams"]["orders"]["servers"] if s["addr"] == addr)


def main():
    wait_for("chromedriver", driver_ready, 20)
    binary = "/usr/lib/chromium/chromium"
    if not os.path.exists(binary):
        binary = "/usr/bin/chromium"
    capabilities = {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": binary,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1500",
            ],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    }
    session = call("POST", DRIVER + "/session", {"capabilities": {"alwaysMatch": capabilities}})
    sid = session["value"]["sessionId"]
    base = f"{DRIVER}/session/{sid}"
    # Light traffic throughout, so that the page (and its screenshot) shows live rates.
    stop = threading.Event()
    traffic = threading.Thread(target=send_traffic, args=(stop,))
    traffic.start()
    try:
        check_page(base)
    finally:
        stop.set()
        traffic.join()
        call("DELETE", base)


def send_traffic(stop):
    paths = ["/orders?limit=1", "/cached/orders?limit=3", "/slow/orders"]
    i = 0
    while not stop.wait(0.1):
        try:
            urllib.request.urlopen(PROXY + paths[i % len(paths)], timeout=5).read()
        except OSError:
            pass  # a 5xx while a server goes down is what the page is there to show
        i += 1


def script(base, source):
    return call("POST", base + "/execute/sync", {"script": source, "args": []})["value"]


ROWS = """return Array.from(document.querySelectorAll('section[data-upstream="orders"] tr[data-server]'))
  .map(row => [row.dataset.server, row.className, getComputedStyle(row.cells[0]).backgroundColor]);"""


def check_page(base):
    started = time.monotonic()
    call("POST", base + "/url", {"url": ADMIN + "/"})
    if script(base, "return document.title") != "gatehouse status":
        fail("unexpected page title")
    addrs = [b.removeprefix("http://") for b in BACKENDS]
    rows = wait_for(
        "the three demo servers, all up",
        lambda: (r := script(base, ROWS)) and len(r) == 3 and all(c == "" for _, c, _ in r) and r,
        15,
    )
    if sorted(a for a, _, _ in rows) != sorted(addrs):
        fail(f"servers shown {rows}, expected {addrs}")
    print(f"ok: the page shows the three demo servers: {', '.join(a for a, _, _ in rows)}")

    victim = addrs[1]
    call("POST", BACKENDS[1] + "/_demo/faults", {"healthy": False})
    faulted = time.monotonic()
    wait_for(f"/status to report {victim} down", lambda: not server_status(victim)["health"]["up"], 15)
    down_at = time.monotonic()
    red = wait_for(
        f"{victim}'s row to turn red",
        lambda: next((r for r in script(base, ROWS) if r[0] == victim and "down" in r[1]), None),
        HEALTH_INTERVAL,
    )
    red_at = time.monotonic()
    print(
        f"ok: {victim} row red ({red[2]}) {red_at - down_at:.2f} s after /status said down "
        f"(health interval {HEALTH_INTERVAL} s; {red_at - faulted:.1f} s after its /healthz began failing)"
    )
    others = [r for r in script(base, ROWS) if r[0] != victim]
    if any(r[1] for r in others):
        fail(f"other rows changed too: {others}")
    why = script(base, f"""return document.querySelector('tr[data-server="{victim}"] td.why').textContent""")
    if not why:
        fail("the red row does not say why")
    print(f"ok: the row says why: {why!r}")

    # A bad edit of the config file: the watcher's reload fails, and the page lists it with
    # the error's file:line:column; the good text back is listed as a reload that worked.
    with open(CONFIG) as f:
        good = f.read()
    with open(CONFIG, "w") as f:
        f.write("bogus_key = 1\n" + good)
    RELOADS = """return Array.from(document.querySelectorAll('#reloads tbody tr'))
      .map(row => [row.className, row.textContent]);"""
    failed = wait_for(
        "the failed reload on the page",
        lambda: next((r for r in script(base, RELOADS) if r[0] == "down" and "gatehouse.toml:1:1" in r[1]), None),
        10,
    )
    print(f"ok: the failed reload is listed with its error: {failed[1]!r}")
    with open(CONFIG, "w") as f:
        # A comment more: text the same as the config in force would be no reload at all.
        f.write(good + "# restored\n")
    wait_for(
        "the good config's reload on the page",
        lambda: (rows := script(base, RELOADS)) and rows[0][0] == "" and "ok" in rows[0][1],
        10,
    )
    print("ok: the config restored is listed as a reload that worked")

    time.sleep(1.2)  # one more poll, so that the screenshot shows the per-second rates
    png = base64.b64decode(call("GET", base + "/screenshot")["value"])
    path = os.path.join(ARTIFACTS, "status-page.png")
    with open(path, "wb") as f:
        f.write(png)
    print(f"ok: screenshot {path} ({len(png)} bytes)")

    logs = call("POST", base + "/se/log", {"type": "browser"})["value"]
    errors = [entry for entry in logs if entry.get("level") == "SEVERE"]
    if errors:
        fail(f"console errors: {errors}")
    print(f"ok: no console errors ({len(logs)} console entries in all)")
    call("POST", BACKENDS[1] + "/_demo/faults", {"healthy": True})
    print(f"status page checks passed in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
