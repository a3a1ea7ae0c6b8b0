#!/usr/bin/env bash
# What the plugin chain costs per proxied request, in user-space instructions counted by
# callgrind (exact and repeatable, unlike wall clock on this VM), all side by side in one
# run, each row the same route to the same origin:
#   /plain   no plugins
#   /chain   key-auth + proxy-rewrite + request-id + cors
#   /limit   limit-count, local policy
#   /redis   limit-count, redis policy (a real redis-server on loopback)
#   /metrc   prometheus
#   /lprom   limit-count (local) + prometheus
# and, from a second gateway process with the access log on (to a file): /plain and
# /metrc ("prometheus + access log"). Every path is six bytes long, so that routing and
# path normalisation cost the same on each row. PATHS="/plain /limit" measures only those,
# access log off. Limits are never reached (count 10^9).
#
#   bench/plugin-cost.sh [REQUESTS] [GATEWAY_BINARY ...]
#
# Each binary (default: this tree's release build) runs under callgrind with one worker;
# after a warm-up, the counters are zeroed, exactly REQUESTS requests are sent on one
# keepalive connection to one path, and the dump is read: instructions / REQUESTS. A
# binary from before the chain existed gives the no-plugin baseline (a route with plugins
# it does not know is refused there, so only its "plain" row is meaningful):
#   git worktree add /tmp/base 1dd4c0c && (cd /tmp/base && cargo build --release -p gateway --bin gateway)
# The origin is nginx answering `ok`. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
shift || true
scripts/install-deps.sh nginx redis-server
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ $# -eq 0 ]; then
  cargo build --release --locked -p gateway --bin gateway >/dev/null
  set -- "${CARGO_TARGET_DIR:-$(pwd)/target}/release/gateway"
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
source bench/lib.sh
ORIGIN=$(port); ETCD=$(port); PEER=$(port)
ok_server "$work/origin" $ORIGIN 1
etcd_with_route "$work/etcd" $ETCD $PEER $ORIGIN
put() { ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:$ETCD put "/bench/$1" "$2" >/dev/null; }
up="{\"nodes\":{\"127.0.0.1:$ORIGIN\":1}}"
put routes/1 "{\"uri\":\"/plain\",\"upstream\":$up}"
put routes/2 "{\"uri\":\"/chain\",\"upstream\":$up,\"plugins\":{\"key-auth\":{},\"proxy-rewrite\":{\"uri\":\"/x\",\"headers\":{\"set\":{\"X-Api-Version\":\"v1\"}}},\"request-id\":{},\"cors\":{}}}"
put consumers/jack '{"username":"jack","plugins":{"key-auth":{"key":"bench-key-0123456789"}}}'
REDIS=$(port)
redis-server --port $REDIS --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port $REDIS
local_count='"limit-count":{"count":1000000000,"time_window":3600}'
redis_count="\"limit-count\":{\"count\":1000000000,\"time_window\":3600,\"policy\":\"redis\",\"redis_host\":\"127.0.0.1\",\"redis_port\":$REDIS}"
put routes/3 "{\"uri\":\"/limit\",\"upstream\":$up,\"plugins\":{$local_count}}"
put routes/4 "{\"uri\":\"/redis\",\"upstream\":$up,\"plugins\":{$redis_count}}"
put routes/5 "{\"uri\":\"/metrc\",\"upstream\":$up,\"plugins\":{\"prometheus\":{}}}"
put routes/6 "{\"uri\":\"/lprom\",\"upstream\":$up,\"plugins\":{$local_count,\"prometheus\":{}}}"

# Sends $3 GET requests to 127.0.0.1:$1$2 on one keepalive connection; fails on any non-200.
send() {
  python3 - "$@" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", path, headers={"apikey": "bench-key-0123456789", "Origin": "http://a.example"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"{path}: {r.status}")
PY
}

echo "| binary | access log | path | requests | instructions/request |"
echo "|---|---|---|---:|---:|"
# One gateway process under callgrind ($1: binary, $2: access log target), then each path.
measure() {
  local binary=$1 log=$2
  shift 2
  GW=$(port); GWS=$(port)
  out="$work/callgrind.out"
  GATEWAY_ACCESS_LOG=$log GATEWAY_WORKERS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
    "$binary" --etcd-endpoints http://127.0.0.1:$ETCD --etcd-prefix /bench \
    --listen 127.0.0.1:$GW --tls-listen 127.0.0.1:$(port) --status-listen 127.0.0.1:$GWS \
    >"$work/gateway.log" 2>&1 &
  pid=$!
  pids+=($pid)
  for _ in $(seq 1 600); do curl -fs http://127.0.0.1:$GWS/readyz >/dev/null 2>&1 && break; sleep 0.1; done
  local shown=$log
  [ "$log" = off ] || shown=file
  for path in "$@"; do
    if ! send $GW $path 200 2>/dev/null; then
      echo "| $binary | $shown | $path | – | not served by this build |"
      continue
    fi
    callgrind_control -z $pid >/dev/null 2>&1
    send $GW $path "$requests"
    callgrind_control -d $pid >/dev/null 2>&1
    dump=$(ls -t "$out.$pid".* | head -1)
    total=$(awk '/^(summary|totals):/ {print $2}' "$dump" | tail -1)
    echo "| $binary | $shown | $path | $requests | $((total / requests)) |"
    [ -n "${KEEP_DUMPS:-}" ] && cp "$dump" "$KEEP_DUMPS/$(basename "$binary")-$shown$(echo $path | tr / -).callgrind"
    rm -f "$dump"
  done
  kill $pid; wait $pid 2>/dev/null || true
}
for binary in "$@"; do
  if [ -n "${PATHS:-}" ]; then
    # Only these paths, access log off (bench/budget.sh).
    measure "$binary" off $PATHS
    continue
  fi
  # Redis last: its connection stays open on the worker once used.
  measure "$binary" off /plain /chain /limit /metrc /lprom /redis
  measure "$binary" "$work/access.log" /plain /metrc
done
