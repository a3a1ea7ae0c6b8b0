#!/usr/bin/env bash
# Installs what building and testing need on Debian, skipping what is already there.
# Each check tests the capability the build uses, not merely a binary's presence: protoc
# alone is not enough, etcd-client's build script imports protobuf's well-known types
# (google/protobuf/descriptor.proto, in libprotobuf-dev), and a rustup toolchain brings
# no C compiler or linker (ring and the final link need one).
# Extra Debian package names may be passed as arguments (the bench scripts add theirs).
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# valgrind counts the instruction budget (bench/budget.sh); nginx is its origin.
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
# (nginx is in /usr/sbin, outside a normal user's PATH: asked of dpkg.)
dpkg -s nginx >/dev/null 2>&1 || need+=(nginx)
# promtool checks the metrics exposition; redis-server backs the cluster-wide limits.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The dashboard's end-to-end test renders it in a real browser (headless).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The bench scripts and a few test helpers pick free ports with python3.
command -v python3 >/dev/null 2>&1 || need+=(python3)

# Compiles a one-line file that imports a well-known type, exactly as etcd-client's build
# does; fails when protoc is missing or its include directory is.
well_known_types_ok() {
  command -v protoc >/dev/null 2>&1 || return 1
  local dir rc=0
  dir=$(mktemp -d)
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$dir/probe.proto"
  protoc -I "$dir" --descriptor_set_out="$dir/out" "$dir/probe.proto" >/dev/null 2>&1 || rc=1
  rm -rf "$dir"
  return "$rc"
}
well_known_types_ok || need+=(libprotobuf-dev)

for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Checked again after installing: a package that installed but does not give the build what
# it needs should stop here with a clear message, not minutes later inside a build script.
if ! well_known_types_ok; then
  echo "protoc cannot compile an import of google/protobuf/descriptor.proto: install libprotobuf-dev" >&2
  exit 1
fi
for cmd in etcd etcdctl curl cc python3 promtool redis-server redis-cli valgrind; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "$cmd is still missing after installing" >&2; exit 1; }
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
