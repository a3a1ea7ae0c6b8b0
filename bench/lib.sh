# Helpers shared by the bench scripts (sourced, not run).

# nginx and haproxy live in /usr/sbin, outside a normal user's PATH on Debian.
export PATH="$PATH:/usr/sbin:/sbin"

# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something listens on loopback port $1.
wait_port() {
  for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2; exit 1
}

# Writes haproxy config $1: one thread, listening on $2, proxying with connection reuse to
# loopback port $3; extra `global` lines may follow as $4.
haproxy_config() {
  cat >"$1.tmp" <<CONF
global
  nbthread 1
  maxconn 4096
${4:-}
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$2
  default_backend be
backend be
  server origin 127.0.0.1:$3
CONF
  mv "$1.tmp" "$1"
}

# Starts nginx with one worker on core $3, answering every request on loopback port $2
# with the 2-byte body `ok`; its files go in directory $1. Appends its pid to the
# caller's `pids` (and leaves it in `$!`).
ok_server() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $1/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { return 200 "ok"; } } }
CONF
  taskset -c "$3" nginx -c "$1/nginx.conf" -p "$1" 2>"$1.log" &
  pids+=($!)
}

# Starts a one-member etcd (data in $1, client port $2, peer port $3) and stores the
# route `/*` to loopback port $4 under the prefix /bench. Appends its pid to `pids`.
etcd_with_route() {
  etcd --name b --data-dir "$1" --listen-client-urls http://127.0.0.1:$2 \
    --advertise-client-urls http://127.0.0.1:$2 --listen-peer-urls http://127.0.0.1:$3 \
    --initial-advertise-peer-urls http://127.0.0.1:$3 --initial-cluster b=http://127.0.0.1:$3 \
    --log-level error >"$1.log" 2>&1 &
  pids+=($!)
  wait_port "$2"
  ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:$2 put /bench/routes/1 \
    "{\"uri\":\"/*\",\"upstream\":{\"nodes\":{\"127.0.0.1:$4\":1}}}" >/dev/null
}
