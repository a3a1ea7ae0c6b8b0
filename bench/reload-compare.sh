#!/usr/bin/env bash
# Zero downtime, compared: 64 never-retrying keepalive clients for 20 s while the routing
# changes every 100 ms — through our gateway (changes via the Admin API, `churn`), through
# nginx (config rewritten + `nginx -s reload`) and haproxy (config rewritten + seamless
# reload with socket hand-over, `-x ... -sf`). Loopback only; stops by itself.
#
#   bench/reload-compare.sh [SECONDS] [INTERVAL_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
interval_ms=${2:-100}
scripts/install-deps.sh nginx haproxy
cargo build --release --locked -p gateway -p admin-api -p e2e --bins >/dev/null
bin=${CARGO_TARGET_DIR:-$(pwd)/target}/release
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx/pid" ] && kill "$(cat "$work/nginx/pid")" 2>/dev/null || true
  [ -f "$work/haproxy.pid" ] && kill $(cat "$work/haproxy.pid") 2>/dev/null || true
  pkill -f "haproxy -f $work" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source bench/lib.sh
A=$(port); B=$(port); NGINX=$(port); HAPROXY=$(port)
sleep_s=$(awk -v ms="$interval_ms" 'BEGIN {printf "%.3f", ms / 1000}')

# Two origins answering 200 with their name.
mkdir -p "$work/origin" "$work/nginx"
cat >"$work/origin/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/origin/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$A; location / { add_header x-backend a; return 200 "a"; } }
  server { listen 127.0.0.1:$B; location / { add_header x-backend b; return 200 "b"; } } }
CONF
nginx -c "$work/origin/nginx.conf" -p "$work/origin" 2>"$work/origin.log" & pids+=($!)

nginx_conf() { # upstream port
  cat >"$work/nginx/nginx.conf.tmp" <<CONF
worker_processes 1; pid $work/nginx/pid; error_log $work/nginx/error.log error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$1; keepalive 64; }
  server { listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  mv "$work/nginx/nginx.conf.tmp" "$work/nginx/nginx.conf"
}
haproxy_conf() { # upstream port
  haproxy_config "$work/haproxy.cfg" $HAPROXY "$1" \
    "  stats socket $work/haproxy.sock mode 600 level admin expose-fd listeners"
}

echo "| proxy | how the change is applied | requests | failed | reconnects |"
echo "|---|---|---:|---:|---:|"

# nginx: rewrite + reload every interval.
nginx_conf $A
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port $NGINX
( end=$((SECONDS + seconds)); i=0
  while [ $SECONDS -lt $end ]; do
    i=$((i + 1)); if [ $((i % 2)) -eq 0 ]; then nginx_conf $A; else nginx_conf $B; fi
    nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -s reload 2>/dev/null || true
    sleep "$sleep_s"
  done ) & reloader=$!
out=$("$bin/churn" external 127.0.0.1:$NGINX 64 "$seconds")
wait $reloader || true
echo "$out" | awk '{printf "| nginx 1.22 | rewrite config + nginx -s reload every %s ms | %s | %s | %s |\n", "'"$interval_ms"'", $3, $5, $7}'

# haproxy: rewrite + seamless reload (listening sockets handed over) every interval.
haproxy_conf $A
haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"
wait_port $HAPROXY
( end=$((SECONDS + seconds)); i=0
  while [ $SECONDS -lt $end ]; do
    i=$((i + 1)); if [ $((i % 2)) -eq 0 ]; then haproxy_conf $A; else haproxy_conf $B; fi
    haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid" -x "$work/haproxy.sock" -sf $(cat "$work/haproxy.pid") 2>/dev/null || true
    sleep "$sleep_s"
  done ) & reloader=$!
out=$("$bin/churn" external 127.0.0.1:$HAPROXY 64 "$seconds")
wait $reloader || true
echo "$out" | awk '{printf "| haproxy 2.6 | rewrite config + seamless reload (-x, -sf) every %s ms | %s | %s | %s |\n", "'"$interval_ms"'", $3, $5, $7}'

# Our gateway: two replicas, every change through the Admin API.
all=$("$bin/churn" 64 "$seconds" "$interval_ms")
out=$(echo "$all" | head -1)
echo "$out" | awk '{printf "| gateway (2 replicas) | one Admin API change every %s ms | %s | %s | %s |\n", "'"$interval_ms"'", $5, $7, $9}'
echo
echo "gateway: $out"
echo "gateway: $(echo "$all" | grep -m1 propagation)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"
