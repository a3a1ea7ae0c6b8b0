#!/usr/bin/env bash
# Runs the whole stack locally: a single-node etcd (data in .local/, git-ignored), the
# admin-api, two gateway replicas and a demo upstream with a route. Ctrl-C stops it all.
#   scripts/stack.sh          the stack with etcd
#   scripts/stack.sh --file   one gateway in file mode (APISIX standalone): no etcd, no
#                             admin-api; edit .local/apisix.yaml and it applies in a second
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh
# Only what the stack runs: ingress-sync (and its Kubernetes crates) would add minutes.
cargo build --release --locked -p gateway -p admin-api -p e2e --bin gateway --bin admin-api --bin echo-backend
bin="${CARGO_TARGET_DIR:-$root/target}/release"

export ADMIN_KEY="${ADMIN_KEY:-demo-admin-key-local}"
export ETCD_ENDPOINTS="http://127.0.0.1:2379"
mkdir -p .local/logs
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

start() { # name, command...
  local name=$1; shift
  "$@" >".local/logs/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!, log .local/logs/$name.log)"
}

wait_http() { # url
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}

if [ "${1:-}" = "--file" ]; then
  file=.local/apisix.yaml
  if [ ! -f "$file" ]; then
    cat >"$file" <<'YAML'
# The gateway reads this file again whenever it changes; it must end with #END.
routes:
  - id: demo
    uri: /demo/*
    upstream_id: demo
upstreams:
  - id: demo
    nodes:
      "${{DEMO_UPSTREAM:=127.0.0.1:9100}}": 1
#END
YAML
  fi
  start demo-upstream "$bin/echo-backend" 127.0.0.1:9100 demo
  start gateway "$bin/gateway" --config-file "$file" --listen 127.0.0.1:9080 --tls-listen 127.0.0.1:9443 --status-listen 127.0.0.1:9090
  wait_http http://127.0.0.1:9090/readyz
  cat <<MSG

The gateway is up in file mode (no etcd). Try:
  curl -i http://127.0.0.1:9080/demo/hello     # through the gateway
  \$EDITOR $file                         # applied within a second of saving
  curl -s http://127.0.0.1:9090/status         # the file's generation and counts
Ctrl-C stops everything.
MSG
  wait
  exit 0
fi

start etcd etcd --name local --data-dir .local/etcd \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster local=http://127.0.0.1:2380 --log-level warn
wait_http http://127.0.0.1:2379/health

start admin-api "$bin/admin-api" --listen 127.0.0.1:9180
start gateway-1 "$bin/gateway" --listen 127.0.0.1:9080 --tls-listen 127.0.0.1:9443 --status-listen 127.0.0.1:9090
start gateway-2 "$bin/gateway" --listen 127.0.0.1:9081 --tls-listen 127.0.0.1:9444 --status-listen 127.0.0.1:9091
start demo-upstream "$bin/echo-backend" 127.0.0.1:9100 demo
wait_http http://127.0.0.1:9090/readyz
wait_http http://127.0.0.1:9091/readyz

admin() { curl -fsS -X "$1" "http://127.0.0.1:9180/apisix/admin$2" -H "X-API-KEY: $ADMIN_KEY" -d "$3"; echo; }
until curl -fsS -o /dev/null http://127.0.0.1:9180/apisix/admin/routes -H "X-API-KEY: $ADMIN_KEY"; do sleep 0.1; done
admin PUT /upstreams/demo '{"name":"demo","nodes":{"127.0.0.1:9100":1}}'
admin PUT /routes/demo '{"name":"demo","uri":"/demo/*","upstream_id":"demo"}'

cat <<MSG

The stack is up. Try:
  curl -i http://127.0.0.1:9080/demo/hello     # through gateway replica 1
  curl -i http://127.0.0.1:9081/demo/hello     # through gateway replica 2
  curl -s http://127.0.0.1:9090/status         # replica 1's revision and counts
  curl -s http://127.0.0.1:9180/apisix/admin/routes -H "X-API-KEY: $ADMIN_KEY"
Ctrl-C stops everything.
MSG
wait
