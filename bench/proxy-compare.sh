#!/usr/bin/env bash
# Proxy throughput, latency and CPU per request: our gateway vs nginx vs haproxy vs the
# direct path, in one run, same shape for each (docs/benchmarks.md quotes the results).
#
#   bench/proxy-compare.sh [DURATION_SECONDS]
#
# Shape: the proxy under test runs one worker pinned to core 0; wrk (-t1 -c32) and the
# origin (nginx, one worker, 2-byte body) share core 1; every proxy keeps keepalive
# connections to the origin. CPU per request = the proxy's user+system CPU time during
# the run divided by the requests wrk completed, also shown split into user and system.
# The three "floor" rows show what the HTTP stack alone costs on core 0: nginx and a bare
# hyper server answering `ok` themselves, and a bare hyper proxy (gateway/examples/
# hyper_floor.rs: server + pooled client, no routing). Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
scripts/install-deps.sh nginx haproxy wrk
cargo build --release --locked -p gateway -p e2e --bin gateway --bin echo-backend >/dev/null
cargo build --release --locked -p gateway --example hyper_floor >/dev/null
bin=${CARGO_TARGET_DIR:-$(pwd)/target}/release

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

source bench/lib.sh
ORIGIN=$(port); NGINX=$(port); HAPROXY=$(port); GW=$(port); GWS=$(port); ETCD=$(port); PEER=$(port)
NSERVE=$(port); HSERVE=$(port); HPROXY=$(port)


# Origin: nginx, one worker on core 1, answers "ok".
ok_server "$work/origin" $ORIGIN 1
mkdir -p "$work/nginx"

# nginx as a reverse proxy: one worker on core 0, keepalive to the origin.
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/nginx/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server { listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx.log" & pids+=($!)
nginx_pid=$!

# The floors, on core 0 like the proxies: nginx and a bare hyper server answering `ok`
# themselves, and a bare hyper proxy (server + pooled client, nothing else) to the origin.
ok_server "$work/nserve" $NSERVE 0
nserve_pid=$!
taskset -c 0 "$bin/examples/hyper_floor" serve 127.0.0.1:$HSERVE & pids+=($!)
hserve_pid=$!
taskset -c 0 "$bin/examples/hyper_floor" proxy 127.0.0.1:$HPROXY 127.0.0.1:$ORIGIN & pids+=($!)
hproxy_pid=$!

# haproxy: one thread on core 0, connection reuse to the origin.
haproxy_config "$work/haproxy.cfg" $HAPROXY $ORIGIN
taskset -c 0 haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" & pids+=($!)
haproxy_pid=$!

# etcd (core 1, idle during the runs) and our gateway: one tokio worker on core 0.
etcd_with_route "$work/etcd" $ETCD $PEER $ORIGIN
GATEWAY_ACCESS_LOG=off GATEWAY_WORKERS=1 RUST_LOG=warn taskset -c 0 "$bin/gateway" --etcd-endpoints http://127.0.0.1:$ETCD \
  --etcd-prefix /bench --listen 127.0.0.1:$GW --tls-listen 127.0.0.1:$(port) --status-listen 127.0.0.1:$GWS \
  >"$work/gateway.log" 2>&1 & pids+=($!)
gw_pid=$!
for p in $ORIGIN $NGINX $HAPROXY $GW $GWS $NSERVE $HSERVE $HPROXY; do wait_port $p; done
until curl -fs http://127.0.0.1:$GWS/readyz >/dev/null; do sleep 0.05; done
for p in $ORIGIN $NGINX $HAPROXY $GW $NSERVE $HSERVE $HPROXY; do
  [ "$(curl -fs http://127.0.0.1:$p/)" = "ok" ] || { echo "port $p does not answer ok" >&2; exit 1; }
done

# CPU ticks of a process and its child processes: "user system".
ticks() {
  local user=0 sys=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [ -r /proc/$p/stat ] || continue
    read -r u s < <(awk '{print $14, $15}' /proc/$p/stat)
    user=$((user + u)); sys=$((sys + s))
  done
  echo "$user $sys"
}
hz=$(getconf CLK_TCK)

printf "| target | req/s | p50 | p99 | proxy CPU µs/req | user | system |\n|---|---:|---:|---:|---:|---:|---:|\n"
run() { # name port pid...
  local name=$1 port=$2; shift 2
  taskset -c 1 wrk -t1 -c32 -d2s http://127.0.0.1:$port/ >/dev/null # warm-up
  local before after out reqs
  read -r bu bs < <(ticks "$@")
  out=$(taskset -c 1 wrk -t1 -c32 -d${duration}s --latency http://127.0.0.1:$port/)
  read -r au as < <(ticks "$@")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps p50 p99 cpu=— user=— sys=—
  rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  per() { awk -v t="$1" -v hz=$hz -v n=$reqs 'BEGIN {printf "%.1f", t / hz * 1e6 / n}'; }
  if [ $# -gt 0 ]; then
    cpu=$(per $((au + as - bu - bs))); user=$(per $((au - bu))); sys=$(per $((as - bs)))
  fi
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then name="$name (errors: $(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ' | tr '\n' ' '))"; fi
  printf "| %s | %s | %s | %s | %s | %s | %s |\n" "$name" "$rps" "$p50" "$p99" "$cpu" "$user" "$sys"
}
run "direct (origin only)" $ORIGIN
run "gateway (this project)" $GW $gw_pid
run "nginx 1.22 proxy" $NGINX $nginx_pid
run "haproxy 2.6" $HAPROXY $haproxy_pid
run "floor: nginx serving ok" $NSERVE $nserve_pid
run "floor: hyper serving ok" $HSERVE $hserve_pid
run "floor: bare hyper proxy" $HPROXY $hproxy_pid
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"
