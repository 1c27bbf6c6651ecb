#!/usr/bin/env bash
# The end-to-end tier: gatehouse as operators run it, checked with the real tools.
#
#   tests/e2e/run.sh            (as root on Debian: installs what is missing with apt)
#
# It builds gatehouse, starts it on free loopback ports with three embedded demo backends
# (plus a slow one), and runs, in order:
#   1. promtool check metrics    on a live /metrics after traffic;
#   2. promtool check rules      on docker/prometheus/*rules*.yml;
#   3. a real Prometheus         scraping gatehouse every second: PromQL through its HTTP API
#                                (up, request rate, p99 from the histogram, cache hit ratio),
#                                the alert rules loaded, and every Grafana dashboard expression
#                                evaluated without error on scraped metric names;
#   4. headless Chromium         (WebDriver through chromedriver) on the status page: no console
#                                errors, the three demo servers shown, one turned red after its
#                                health check is made to fail, a failed reload listed with its
#                                error; screenshot in tests/e2e/artifacts/.
#
# Plug-in steps: after these, every executable tests/e2e/steps/*.sh runs in name order (e.g.
# steps/50-deploy.sh), from the repository root, with these variables set:
#   GATEHOUSE_BIN   the gatehouse binary just built
#   E2E_ARTIFACTS   a directory for screenshots, logs and reports (gitignored)
#   E2E_TMP         a scratch directory removed at the end
# A step that exits non-zero fails the tier. Steps must end the processes they start.
#
# Every process this script starts is ended by its PID (or its own process group) on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
E2E="$ROOT/tests/e2e"
export E2E_ARTIFACTS="$E2E/artifacts"
mkdir -p "$E2E_ARTIFACTS"
E2E_TMP="$(mktemp -d /tmp/gatehouse-e2e.XXXXXX)"
export E2E_TMP
STARTED_AT=$SECONDS

PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        # Negative: the process group of a process started with setsid (chromedriver and
        # the browsers it starts).
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        local waited=0
        while kill -0 "${pid#-}" 2>/dev/null && [ $waited -lt 50 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$E2E_TMP"
    if [ $status -ne 0 ]; then
        echo "e2e: FAILED (logs in $E2E_ARTIFACTS)" >&2
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo; echo "=== e2e: $* ($((SECONDS - STARTED_AT)) s)"; }

step "installing what is missing"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        "${missing[@]}" >/dev/null
fi
promtool --version 2>&1 | head -1
chromium --version 2>/dev/null
chromedriver --version | head -1

step "building gatehouse"
cargo build --quiet
export GATEHOUSE_BIN="$ROOT/target/debug/gatehouse"

# Free loopback ports for gatehouse, its four demo backends, Prometheus and chromedriver.
read -r PROXY ADMIN B1 B2 B3 SLOW PROM DRIVER < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
export ADMIN_URL="http://127.0.0.1:$ADMIN" PROXY_URL="http://127.0.0.1:$PROXY"
export PROMETHEUS_URL="http://127.0.0.1:$PROM" DRIVER_URL="http://127.0.0.1:$DRIVER"
export BACKEND_URLS="http://127.0.0.1:$B1 http://127.0.0.1:$B2 http://127.0.0.1:$B3"

step "starting gatehouse (proxy :$PROXY, admin :$ADMIN)"
cat > "$E2E_TMP/gatehouse.toml" <<TOML
[log]
access = "combined"

[admin]
bind = "127.0.0.1:$ADMIN"

[[listener]]
name = "public"
bind = "127.0.0.1:$PROXY"

[[route]]
name = "api"
path_prefix = "/"
upstream = "orders"

[[route]]
name = "cached"
path_prefix = "/cached"
strip_prefix = true
upstream = "orders"
cache = "orders"

[[route]]
name = "slow"
path_prefix = "/slow"
strip_prefix = true
upstream = "slow"

[upstream.orders]
servers = ["127.0.0.1:$B1", "127.0.0.1:$B2", "127.0.0.1:$B3"]

[upstream.orders.health]
interval = "2s"
unhealthy_threshold = 2
healthy_threshold = 1

[upstream.slow]
servers = ["127.0.0.1:$SLOW"]

[cache.orders]

[demo]
backends = ["127.0.0.1:$B1", "127.0.0.1:$B2", "127.0.0.1:$B3", { addr = "127.0.0.1:$SLOW", latency = "200ms" }]
TOML
"$GATEHOUSE_BIN" run --config "$E2E_TMP/gatehouse.toml" \
    >"$E2E_ARTIFACTS/access.log" 2>"$E2E_ARTIFACTS/gatehouse.log" &
PIDS+=($!)
for _ in $(seq 100); do
    curl -sf "$ADMIN_URL/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "$ADMIN_URL/readyz" >/dev/null || { echo "gatehouse did not become ready" >&2; cat "$E2E_ARTIFACTS/gatehouse.log" >&2; exit 1; }

step "1. promtool check metrics"
for path in /orders /orders/1 /cached/orders /cached/orders /nowhere-else; do
    curl -s -o /dev/null "$PROXY_URL$path"
done
curl -sf "$ADMIN_URL/metrics" >"$E2E_ARTIFACTS/metrics.txt"
promtool check metrics <"$E2E_ARTIFACTS/metrics.txt"
echo "ok: $(grep -c '^# TYPE' "$E2E_ARTIFACTS/metrics.txt") families pass promtool's lint"

step "2. promtool check rules"
promtool check rules docker/prometheus/*rules*.yml

step "3. Prometheus scraping gatehouse every second (:$PROM)"
cat > "$E2E_TMP/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
$(for f in "$ROOT"/docker/prometheus/*rules*.yml; do echo "  - $f"; done)
scrape_configs:
  - job_name: gatehouse
    static_configs:
      - targets: ["127.0.0.1:$ADMIN"]
YAML
prometheus --config.file="$E2E_TMP/prometheus.yml" --storage.tsdb.path="$E2E_TMP/prometheus" \
    --web.listen-address="127.0.0.1:$PROM" --log.level=warn \
    >"$E2E_ARTIFACTS/prometheus.log" 2>&1 &
PIDS+=($!)
python3 "$E2E/prometheus_check.py"

step "4. status page in headless Chromium (chromedriver :$DRIVER)"
setsid chromedriver --port="$DRIVER" >"$E2E_ARTIFACTS/chromedriver.log" 2>&1 &
PIDS+=("-$!")
python3 "$E2E/status_page_check.py"

for plugin in "$E2E"/steps/*.sh; do
    [ -x "$plugin" ] || continue
    step "plug-in step $(basename "$plugin")"
    "$plugin"
done

step "passed in $((SECONDS - STARTED_AT)) s"
