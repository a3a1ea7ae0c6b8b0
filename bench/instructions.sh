#!/usr/bin/env bash
# What one proxied request costs nginx, haproxy and the gateway, in counts that do not drift
# with the VM (issue 16): user-space instructions per request (valgrind's callgrind),
# system calls per request (strace -c -f), and resident memory per idle keepalive client
# connection. One run, the same shape for each proxy; docs/benchmarks.md quotes it.
#
#   bench/instructions.sh [REQUESTS] [IDLE_CONNECTIONS]     (defaults 20000 and 9000)
#
# Shape: one worker each (nginx `worker_processes 1`, `master_process off`; haproxy
# `nbthread 1`; gateway `--workers 1`, access log off, as nginx's); the origin is nginx
# answering the 2-byte body `ok`; every proxy keeps keepalive connections to it. The client
# (python, 8 keepalive connections, GET /) sends a warm-up of 2,000 requests, then REQUESTS:
#   - instructions: the proxy runs under callgrind; the counters are zeroed after the warm-up
#     (`callgrind_control -z`) and dumped after the run (`-d`): total / REQUESTS.
#   - syscalls: `strace -c -f` attached after the warm-up, detached after the run: calls /
#     REQUESTS, with the commonest calls.
#   - memory: VmRSS before and after opening IDLE_CONNECTIONS connections that each made one
#     request and stay open: the difference / IDLE_CONNECTIONS, in bytes; read 1 s after
#     the last one opened, and again 3 s later, by when the gateway has parked them all.
# Loopback only; stops by itself. Needs valgrind, strace, nginx, haproxy (installed here
# from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20000}
# 9,000, not the issue's 10,000: haproxy reserves two descriptors per `maxconn`, and this
# machine's hard limit is 20,000.
idle=${2:-9000}
scripts/install-deps.sh nginx haproxy valgrind strace
cargo build --release --locked -p gateway --bin gateway >/dev/null 2>&1
bin=${CARGO_TARGET_DIR:-$(pwd)/target}/release
# Room for the idle connections (and their upstream side).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
source bench/lib.sh
ORIGIN=$(port); ETCD=$(port); PEER=$(port)
ok_server "$work/origin" $ORIGIN 1
etcd_with_route "$work/etcd" $ETCD $PEER $ORIGIN

# $1 port, $2 requests, $3 connections: GET / on keepalive connections; fails on non-200.
load() {
  python3 - "$@" <<'PY'
import http.client, sys, threading
port, total, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
errors = []
def run(n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(n):
        c.request("GET", "/")
        r = c.getresponse(); r.read()
        if r.status != 200:
            errors.append(r.status); return
share = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
ts = [threading.Thread(target=run, args=(n,)) for n in share]
for t in ts: t.start()
for t in ts: t.join()
if errors:
    sys.exit(f"non-200 answers: {errors[:5]}")
PY
}

# $1 port, $2 connections, $3 file to touch once they are all open: each makes one request
# and then stays open until the file named by $4 appears.
hold_idle() {
  python3 - "$@" <<'PY'
import os, resource, socket, sys, time
port, n, ready, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    got = b""
    while not got.endswith(b"ok"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection {i} closed")
        got += chunk
    socks.append(s)
open(ready, "w").close()
while not os.path.exists(stop):
    time.sleep(0.1)
PY
}

rss() { awk '/^VmRSS/ {print $2 * 1024}' /proc/$1/status; }

# Starts target $1 on port $2, under valgrind when $3 is "callgrind"; its pid in PID.
start() {
  local name=$1 port=$2 mode=$3 pre=()
  [ "$mode" = callgrind ] && pre=(valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg.%p")
  case $name in
    nginx)
      mkdir -p "$work/nginx-$port"
      cat >"$work/nginx-$port/nginx.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $work/nginx-$port/pid; error_log stderr error;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server { listen 127.0.0.1:$port;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
      "${pre[@]}" nginx -c "$work/nginx-$port/nginx.conf" -p "$work/nginx-$port" >"$work/nginx-$port.log" 2>&1 &
      ;;
    haproxy)
      haproxy_config "$work/haproxy-$port.cfg" $port $ORIGIN
      sed -i "s/maxconn 4096/maxconn $((idle + 500))/; s/timeout client 30s/timeout client 300s/" "$work/haproxy-$port.cfg"
      "${pre[@]}" haproxy -f "$work/haproxy-$port.cfg" -db >"$work/haproxy-$port.log" 2>&1 &
      ;;
    gateway)
      GATEWAY_ACCESS_LOG=off GATEWAY_WORKERS=1 RUST_LOG=warn "${pre[@]}" "$bin/gateway" \
        --etcd-endpoints http://127.0.0.1:$ETCD --etcd-prefix /bench \
        --listen 127.0.0.1:$port --tls-listen 127.0.0.1:$(port) --status-listen 127.0.0.1:$(port) \
        --worker-connections 30000 --keepalive-timeout 300s >"$work/gateway-$port.log" 2>&1 &
      ;;
  esac
  PID=$!
  pids+=($PID)
  for _ in $(seq 1 600); do
    [ "$(curl -fs http://127.0.0.1:$port/ 2>/dev/null)" = ok ] && break
    sleep 0.1
  done
  [ "$(curl -fs http://127.0.0.1:$port/)" = ok ] || { echo "$name does not answer on $port" >&2; exit 1; }
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

declare -A instr calls top mem parked
for name in nginx haproxy gateway; do
  # Instructions.
  p=$(port); start $name $p callgrind; pid=$PID
  load $p 2000 8
  callgrind_control -z $pid >/dev/null 2>&1
  load $p "$requests" 8
  callgrind_control -d $pid >/dev/null 2>&1
  dump=$(ls -t "$work/$name.cg.$pid".* | head -1)
  total=$(awk '/^(summary|totals):/ {print $2}' "$dump" | tail -1)
  instr[$name]=$((total / requests))
  [ -n "${KEEP_DUMPS:-}" ] && cp "$dump" "$KEEP_DUMPS/$name.callgrind"
  stop $pid

  # System calls.
  p=$(port); start $name $p plain; pid=$PID
  load $p 2000 8
  strace -c -U name,calls -f -q -p $pid -o "$work/$name.strace" &
  spid=$!
  sleep 1
  load $p "$requests" 8
  kill -INT $spid; wait $spid 2>/dev/null || true
  n=$(awk '$1=="total" {print $2}' "$work/$name.strace")
  calls[$name]=$(awk -v n="$n" -v r="$requests" 'BEGIN {printf "%.2f", n / r}')
  top[$name]=$(awk -v r="$requests" '$2 ~ /^[0-9]+$/ && $1 != "total" {printf "%s %.2f\n", $1, $2 / r}' "$work/$name.strace" \
    | sort -k2 -nr | head -4 | awk '{printf "%s%s %s", (NR>1?", ":""), $1, $2}')

  # Memory per idle keepalive connection.
  before=$(rss $pid)
  rm -f "$work/ready" "$work/stop"
  hold_idle $p "$idle" "$work/ready" "$work/stop" &
  hpid=$!
  for _ in $(seq 1 1200); do [ -e "$work/ready" ] && break; sleep 0.1; done
  [ -e "$work/ready" ] || { echo "$name: $idle idle connections were not all opened" >&2; exit 1; }
  sleep 1
  after=$(rss $pid)
  mem[$name]=$(( (after - before) / idle ))
  # Again once every connection has been idle for over two seconds: the gateway parks a
  # connection idle for a second outside its task (gateway/src/park.rs).
  sleep 3
  after=$(rss $pid)
  parked[$name]=$(( (after - before) / idle ))
  touch "$work/stop"; wait $hpid 2>/dev/null || true
  stop $pid
done

echo "| target | user-space instructions / request | syscalls / request (commonest) | RSS / idle keepalive connection, after 1 s | after 4 s |"
echo "|---|---:|---|---:|---:|"
for name in nginx haproxy gateway; do
  echo "| $name | ${instr[$name]} | ${calls[$name]} (${top[$name]}) | ${mem[$name]} B | ${parked[$name]} B |"
done
echo
echo "requests: $requests on 8 connections after 2,000 warm-up; idle connections: $idle"
echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), haproxy $(haproxy -v | awk 'NR==1 {print $3}'), gateway $(git rev-parse --short HEAD)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"
