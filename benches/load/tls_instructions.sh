#!/usr/bin/env bash
# Instructions per TLS handshake and per HTTPS keep-alive request, counted by callgrind
# (deterministic, unlike rates on a shared machine): gatehouse and nginx terminate TLS with the
# same ECDSA P-256 certificate (from `gatehouse cert`) in front of the same nginx upstream,
# each under `valgrind --tool=callgrind`, and h2load (HTTP/1.1, TLS 1.3) sends first H
# one-request connections (H full handshakes, in batches of 50 clients), then R requests on 16
# keep-alive connections. Each proxy runs twice, with and without the keep-alive part, so that
# the handshake figure is (total of run 1) / H and the keep-alive figure is
# (total of run 2 - total of run 1) / R; startup is included in the first, which H = 1000
# makes a few percent at most.
#
# Usage: benches/load/tls_instructions.sh [H] [R] [gatehouse-binary]
# Needs: valgrind, nginx, h2load (apt-get install valgrind nginx nghttp2-client).
set -euo pipefail
H=${1:-1000}
R=${2:-20000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BINARY=${3:-$ROOT/target/release/gatehouse}
for tool in valgrind nginx h2load callgrind_annotate bc; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install valgrind nginx nghttp2-client bc" >&2; exit 1; }
done
[ -x "$BINARY" ] || (cd "$ROOT" && cargo build --release)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
"$BINARY" cert --hosts localhost,127.0.0.1 --out "$WORK/certs" >/dev/null
CERT=$WORK/certs/cert.pem
KEY=$WORK/certs/key.pem
BODY=$(printf 'x%.0s' $(seq 199))
cat > "$WORK/upstream.conf" <<CONF
daemon off; worker_processes 1; error_log $WORK/upstream-error.log warn; pid $WORK/upstream.pid;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:18201; keepalive_requests 1000000;
    location / { default_type text/plain; return 200 '$BODY\n'; } } }
CONF
cat > "$WORK/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log $WORK/nginx-error.log warn; pid $WORK/nginx.pid;
events { worker_connections 1024; }
http { access_log off;
  upstream app { server 127.0.0.1:18201; keepalive 512; }
  server { listen 127.0.0.1:18280 ssl; ssl_certificate $CERT; ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https; } } }
CONF
cat > "$WORK/gatehouse.toml" <<CONF
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
bind = "127.0.0.1:18281"
tls = { certs = [ { cert = "$CERT", key = "$KEY" } ], alpn = ["http/1.1"] }
[[route]]
upstream = "app"
[upstream.app]
servers = ["127.0.0.1:18201"]
keepalive = 512
CONF
nginx -c "$WORK/upstream.conf" -p "$WORK" & PIDS+=($!)

run() { # out-name port keepalive(0|1) command...
    local name=$1 port=$2 keepalive=$3; shift 3
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" "$@" 2>"$WORK/$name.valgrind.log" &
    local pid=$!
    for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$port/" && break; sleep 0.3; done
    local done_=1  # the readiness probe above was one handshake too
    while [ "$done_" -lt "$H" ]; do
        local batch=$(( H - done_ < 50 ? H - done_ : 50 ))
        h2load --h1 -n "$batch" -c "$batch" -t 1 "https://127.0.0.1:$port/" | grep -q "succeeded, 0 failed, 0 errored"
        done_=$(( done_ + batch ))
    done
    if [ "$keepalive" = 1 ]; then
        h2load --h1 -n "$R" -c 16 -t 1 "https://127.0.0.1:$port/" | grep -E "^requests:" >&2
    fi
    kill -TERM "$pid"; wait "$pid" || true
    callgrind_annotate "$WORK/$name.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
measure() { # name port command...
    local name=$1 port=$2; shift 2
    local handshakes both
    handshakes=$(run "$name-hs" "$port" 0 "$@")
    both=$(run "$name-ka" "$port" 1 "$@")
    printf '%-10s %7.1fk instructions per full handshake (with startup), %5.1fk per keep-alive request\n' \
        "$name" "$(echo "$handshakes / $H / 1000" | bc -l)" "$(echo "($both - $handshakes) / $R / 1000" | bc -l)"
}
measure gatehouse 18281 "$BINARY" run --config "$WORK/gatehouse.toml"
measure nginx 18280 nginx -c "$WORK/nginx.conf" -p "$WORK"
