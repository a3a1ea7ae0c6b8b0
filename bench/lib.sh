# Helpers shared by the bench scripts (sourced, not run).

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
