#!/usr/bin/env bash
# A/B of two gateway builds: CPU per proxied request, both running at once on core 0 and
# measured in interleaved rounds against the same nginx origin, so the VM's drift hits both.
#
#   bench/gateway-ab.sh OLD_GATEWAY_BINARY NEW_GATEWAY_BINARY [ROUNDS] [SECONDS]
#
# Build the old one from another commit, e.g.:
#   git worktree add /tmp/ab fec9769 && (cd /tmp/ab && cargo build --release -p gateway --bin gateway)
# Shape as bench/proxy-compare.sh: wrk -t1 -c32 on core 1, 2-byte origin. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-10} secs=${4:-5}
scripts/install-deps.sh nginx wrk
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
source bench/lib.sh
ORIGIN=$(port); ETCD=$(port); PEER=$(port)
ok_server "$work/origin" $ORIGIN 1
etcd_with_route "$work/etcd" $ETCD $PEER $ORIGIN
start() { # binary -> "pid port"
  local p=$(port) s=$(port)
  GATEWAY_ACCESS_LOG=off TOKIO_WORKER_THREADS=1 GATEWAY_WORKERS=1 RUST_LOG=warn taskset -c 0 "$1" --etcd-endpoints http://127.0.0.1:$ETCD \
    --etcd-prefix /bench --listen 127.0.0.1:$p --tls-listen 127.0.0.1:$(port) \
    --status-listen 127.0.0.1:$s >"$work/gw-$p.log" 2>&1 &
  local pid=$!
  wait_port $s
  until curl -fs http://127.0.0.1:$s/readyz >/dev/null; do sleep 0.05; done
  echo "$pid $p"
}
read -r old_pid old_port < <(start "$old")
read -r new_pid new_port < <(start "$new")
pids+=("$old_pid" "$new_pid")
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
echo "| round | build | req/s | p99 | CPU µs/req |"
echo "|---:|---|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  for t in "old $old_pid $old_port" "new $new_pid $new_port"; do
    set -- $t
    taskset -c 1 wrk -t1 -c32 -d1s http://127.0.0.1:$3/ >/dev/null
    b=$(ticks $2); out=$(taskset -c 1 wrk -t1 -c32 -d${secs}s --latency http://127.0.0.1:$3/); a=$(ticks $2)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    printf "| %s | %s | %s | %s | %s |\n" "$round" "$1" \
      "$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')" \
      "$(echo "$out" | awk '$1=="99%" {print $2}')" \
      "$(awk -v t=$((a - b)) -v hz=$hz -v n=$n 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
  done
done
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"
