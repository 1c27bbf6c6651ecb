#!/usr/bin/env bash
# Instructions per request, counted by callgrind (deterministic, unlike timings on a shared
# machine): gatehouse and nginx each proxy N requests (h2load, 16 keep-alive connections) to
# the same nginx upstream, under `valgrind --tool=callgrind`; the program's total instruction
# count divided by N is printed (startup included, which N = 20000 makes negligible).
#
# With SCENARIO=hit both proxies cache the upstream's response (nginx proxy_cache on /dev/shm,
# gatehouse `cache = ...`) and every request after the first is a 200-byte cache hit.
# With SCENARIO=h2 the clients speak HTTP/2 cleartext by prior knowledge (h2c), 4 streams at a
# time on each connection; the proxies still reach the upstream over HTTP/1.1.
# With SCENARIO=https-upstream the proxies reach the upstream over TLS 1.3 (HTTP/1.1, pooled
# keep-alive connections; gatehouse verifies the certificate, nginx by default does not).
#
# Routes with more to do than a prefix, each next to the plain proxy above:
# SCENARIO=regex routes by a regex location and rewrites the path with a capture (nginx
# `location ~` + `rewrite ... break`), SCENARIO=basic checks Basic credentials against an
# htpasswd file ({SHA}; nginx's auth_basic), SCENARIO=jwt verifies an HS256 bearer token
# (gatehouse only: nginx has no JWT outside its paid edition; nginx runs the plain proxy).
# SCENARIO=limit passes a per-process rate limit by client address that admits everything
# (nginx `limit_req` with the same rate and burst); SCENARIO=shared-limit the same limit with
# `shared = true`, counted in a redis-server this script starts on 127.0.0.1:18190 (nginx runs
# its per-process limit_req: it has no shared one).
#
# SCENARIO=traced and SCENARIO=traced-1pct are the plain proxy with `[tracing]` on, every new
# trace sampled or 1% of them, exporting OTLP/HTTP to a sink this script starts on
# 127.0.0.1:18191 (a Python server that answers 200); nginx runs untraced (Debian's has no
# OpenTelemetry module), so compare the gatehouse line with SCENARIO=proxy's.
#
# KEEP=DIR keeps the callgrind profiles there (for callgrind_annotate). CONNECTIONS=N sets
# h2load's connection count (16), BODY_BYTES=N the upstream's response size (200).
# Usage: [SCENARIO=proxy|hit|h2|https-upstream|regex|basic|jwt|limit|shared-limit|traced|traced-1pct] [KEEP=DIR] [CONNECTIONS=N] [BODY_BYTES=N] benches/load/instructions.sh [N] [gatehouse-binary]
# Needs: valgrind, nginx, h2load (apt-get install valgrind nginx nghttp2-client).
set -euo pipefail
N=${1:-20000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BINARY=${2:-$ROOT/target/release/gatehouse}
SCENARIO=${SCENARIO:-proxy}
for tool in valgrind nginx h2load callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install valgrind nginx nghttp2-client" >&2; exit 1; }
done
[ -x "$BINARY" ] || (cd "$ROOT" && cargo build --release)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK" "/dev/shm/gatehouse-instructions-$$"; }
trap cleanup EXIT
BODY=$(printf 'x%.0s' $(seq $((${BODY_BYTES:-200} - 1))))
UPSTREAM_LISTEN="127.0.0.1:18101" UPSTREAM_TLS="" NGINX_UPSTREAM="http://app"
GATEHOUSE_SERVER='"127.0.0.1:18101"' GATEHOUSE_TLS=""
if [ "$SCENARIO" = https-upstream ]; then
    "$BINARY" cert --hosts localhost,127.0.0.1 --out "$WORK/certs" >/dev/null
    UPSTREAM_LISTEN="127.0.0.1:18101 ssl"
    UPSTREAM_TLS="ssl_certificate $WORK/certs/cert.pem; ssl_certificate_key $WORK/certs/key.pem; ssl_protocols TLSv1.3;"
    NGINX_UPSTREAM="https://app; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on"
    GATEHOUSE_SERVER='"https://127.0.0.1:18101"'
    GATEHOUSE_TLS="tls = { ca = \"$WORK/certs/cert.pem\", server_name = \"localhost\" }"
fi
cat > "$WORK/upstream.conf" <<CONF
daemon off; worker_processes 1; error_log $WORK/upstream-error.log warn; pid $WORK/upstream.pid;
events { worker_connections 1024; }
http { access_log off;
  server { listen $UPSTREAM_LISTEN; keepalive_requests 1000000; $UPSTREAM_TLS
    location / { default_type text/plain; add_header Cache-Control "public, max-age=3600"; return 200 '$BODY\n'; } } }
CONF
NGINX_CACHE="" NGINX_CACHE_ZONE="" GATEHOUSE_CACHE="" GATEHOUSE_CACHE_SECTION=""
NGINX_LISTEN_HTTP2="" H2LOAD_MODE="--h1" H2LOAD_STREAMS=1 CURL_MODE="--http1.1"
if [ "$SCENARIO" = h2 ]; then
    NGINX_LISTEN_HTTP2=" http2" H2LOAD_MODE="" H2LOAD_STREAMS=4 CURL_MODE="--http2-prior-knowledge"
fi
if [ "$SCENARIO" = hit ]; then
    mkdir -p /dev/shm/gatehouse-instructions-$$
    NGINX_CACHE_ZONE="proxy_cache_path /dev/shm/gatehouse-instructions-$$ keys_zone=hits:10m;"
    NGINX_CACHE="proxy_cache hits;"
    GATEHOUSE_CACHE='cache = "hits"'
    GATEHOUSE_CACHE_SECTION='[cache.hits]
max_size = "64MiB"'
fi
REQUEST_PATH="/" NGINX_ROUTE="" GATEHOUSE_ROUTE="" GATEHOUSE_ROUTE_SECTION="" AUTHORIZATION=""
if [ "$SCENARIO" = regex ]; then
    REQUEST_PATH="/users/42/orders"
    NGINX_ROUTE="rewrite ^/users/(\\d+)/orders\$ /orders?user=\$1 break;"
    GATEHOUSE_ROUTE="path_regex = '^/users/(\\d+)/orders\$'
[[route.rewrite]]
regex = '^/users/(\\d+)/orders\$'
to = '/orders?user=\$1'
flag = 'break'"
fi
if [ "$SCENARIO" = basic ]; then
    # staff:secret
    echo 'staff:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=' > "$WORK/htpasswd"
    AUTHORIZATION="Basic c3RhZmY6c2VjcmV0"
    NGINX_ROUTE="auth_basic staff; auth_basic_user_file $WORK/htpasswd;"
    GATEHOUSE_ROUTE='basic_auth = "staff"'
    GATEHOUSE_ROUTE_SECTION="[basic_auth.staff]
realm = \"staff\"
htpasswd = \"$WORK/htpasswd\""
fi
if [ "$SCENARIO" = jwt ]; then
    printf 'bench-secret-bench-secret-bench-secret' > "$WORK/jwt-secret"
    AUTHORIZATION="Bearer $(python3 - "$WORK/jwt-secret" <<'PY'
import base64, hashlib, hmac, json, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = open(sys.argv[1], "rb").read()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "bench", "exp": 4102444800}).encode())
sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
)"
    GATEHOUSE_ROUTE='jwt = "api"'
    GATEHOUSE_ROUTE_SECTION="[jwt.api]
secret_file = \"$WORK/jwt-secret\"
algorithms = [\"HS256\"]"
fi
NGINX_ZONE="" GATEHOUSE_TOP=""
if [ "$SCENARIO" = limit ] || [ "$SCENARIO" = shared-limit ]; then
    NGINX_ZONE="limit_req_zone \$binary_remote_addr zone=all:10m rate=1000000r/s;"
    NGINX_ROUTE="limit_req zone=all burst=100000 nodelay;"
    GATEHOUSE_ROUTE='limits = ["all"]'
    GATEHOUSE_ROUTE_SECTION='[limit.all]
rate = "1000000/s"
burst = 100000
nodelay = true
headers = false'
fi
if [ "$SCENARIO" = shared-limit ]; then
    command -v redis-server >/dev/null || { echo "missing redis-server: apt-get install redis-server" >&2; exit 1; }
    redis-server --port 18190 --bind 127.0.0.1 --save '' --appendonly no >/dev/null & PIDS+=($!)
    GATEHOUSE_TOP='[redis]
url = "redis://127.0.0.1:18190"'
    GATEHOUSE_ROUTE_SECTION="$GATEHOUSE_ROUTE_SECTION
shared = true"
fi
if [ "$SCENARIO" = traced ] || [ "$SCENARIO" = traced-1pct ]; then
    python3 -c '
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 18191), Sink).serve_forever()
' & PIDS+=($!)
    RATIO=1.0
    if [ "$SCENARIO" = traced-1pct ]; then RATIO=0.01; fi
    GATEHOUSE_TOP="[tracing]
endpoint = \"http://127.0.0.1:18191\"
ratio = $RATIO"
fi
cat > "$WORK/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $WORK/nginx-error.log warn; pid $WORK/nginx.pid;
events { worker_connections 1024; }
http { access_log off;
  upstream app { server 127.0.0.1:18101; keepalive 512; } $NGINX_CACHE_ZONE $NGINX_ZONE
  server { listen 127.0.0.1:18180$NGINX_LISTEN_HTTP2; keepalive_requests 1000000; http2_max_requests 1000000;
    location / { $NGINX_CACHE $NGINX_ROUTE proxy_pass $NGINX_UPSTREAM; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
cat > "$WORK/gatehouse.toml" <<CONF
[process]
worker_threads = 1
[log]
level = "warn"
access = "off"
[admin]
bind = ""
$GATEHOUSE_TOP
[[listener]]
name = "bench"
bind = "127.0.0.1:18181"
[[route]]
upstream = "app"
$GATEHOUSE_CACHE
$GATEHOUSE_ROUTE
[upstream.app]
servers = [$GATEHOUSE_SERVER]
keepalive = 512
$GATEHOUSE_TLS
$GATEHOUSE_CACHE_SECTION
$GATEHOUSE_ROUTE_SECTION
CONF
nginx -c "$WORK/upstream.conf" -p "$WORK" & PIDS+=($!)

measure() { # name port command...
    local name=$1 port=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" "$@" 2>"$WORK/$name.valgrind.log" &
    local pid=$!
    local auth=()
    if [ -n "$AUTHORIZATION" ]; then auth=(-H "authorization: $AUTHORIZATION"); fi
    for _ in $(seq 100); do curl -s "$CURL_MODE" "${auth[@]}" -o /dev/null "http://127.0.0.1:$port$REQUEST_PATH" && break; sleep 0.3; done
    # Every request must be a 200 (a refused credential or a missed route would measure a 401 or 404).
    local code
    code=$(curl -s "$CURL_MODE" "${auth[@]}" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$REQUEST_PATH")
    [ "$code" = 200 ] || { echo "$name answers $code to $REQUEST_PATH" >&2; kill -TERM "$pid"; return 1; }
    # shellcheck disable=SC2086 # H2LOAD_MODE is one flag or none
    h2load $H2LOAD_MODE "${auth[@]}" -n "$N" -c "${CONNECTIONS:-16}" -m "$H2LOAD_STREAMS" -t 1 "http://127.0.0.1:$port$REQUEST_PATH" | grep -E "^requests:" >&2
    kill -TERM "$pid"; wait "$pid" || true
    local total
    total=$(callgrind_annotate "$WORK/$name.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    if [ -n "${KEEP:-}" ]; then cp "$WORK/$name.out" "$KEEP/$name-$SCENARIO.callgrind"; fi
    printf '%-10s %6.1fk instructions per request (%s in total for %s requests)\n' "$name" "$(echo "$total / $N / 1000" | bc -l)" "$total" "$N"
}
measure gatehouse 18181 "$BINARY" run --config "$WORK/gatehouse.toml"
measure nginx 18180 nginx -c "$WORK/nginx.conf" -p "$WORK"
