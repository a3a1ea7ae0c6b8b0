#!/usr/bin/env bash
# Runs the README's two commands on a fresh Debian machine, as a newcomer would: a minimal
# Debian 12 root made by debootstrap (minbase: no compiler, no protoc, no etcd, no curl),
# the host's Rust toolchain bind-mounted read-only, and a clean clone of this repository's
# HEAD. Inside it: `scripts/stack.sh` must answer the demo curl, then `scripts/test.sh`
# must pass. Catches set-up steps that only work because the developer's machine already
# had a package (issue: libprotobuf-dev). Takes long (two cold builds); not part of
# scripts/test.sh. Run it, as root, before calling any change to the set-up done.
#
#   scripts/fresh-machine-check.sh [--rebuild-root] [-- args for scripts/test.sh]
#
# Files go in .local/fresh/ (git-ignored): the pristine root is kept as a tarball so a
# second run skips debootstrap but still starts from an untouched root; --rebuild-root
# makes it again. Logs: .local/fresh/stack.log, .local/fresh/test.log.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild-root) rebuild=1; shift ;;
    --) shift; break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, chroot and bind mounts need it)" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
}

rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
[ -d "$rustup_home/toolchains" ] && [ -x "$cargo_bin/cargo" ] ||
  { echo "no rustup toolchain at $rustup_home / $cargo_bin" >&2; exit 1; }

work="$repo/.local/fresh"
root="$work/root"
tarball="$work/minbase.tar"
mkdir -p "$work"

mounts=()
stack_pid=""
cleanup() {
  set +e
  [ -n "$stack_pid" ] && kill -TERM "$stack_pid" 2>/dev/null && wait "$stack_pid" 2>/dev/null
  # Whatever the stack left running inside the root would keep its mounts busy.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null; done
}
trap cleanup EXIT

if [ "$rebuild" -eq 1 ] || [ ! -f "$tarball" ]; then
  echo "== debootstrap: minimal Debian 12 root"
  rm -rf "$work/boot"
  debootstrap --variant=minbase bookworm "$work/boot" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/boot" -cf "$tarball" .
  rm -rf "$work/boot"
fi

echo "== fresh root from $tarball"
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The network of this machine, not a set-up step: where HTTPS goes through an
# intercepting proxy, the host's CA bundle is what lets cargo reach crates.io. Kept apart
# from the root's own bundle, which installing ca-certificates rewrites.
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
ca_env=""
if [ -f "$host_ca" ]; then
  mkdir -p "$root/opt"
  cp "$host_ca" "$root/opt/host-ca.crt"
  ca_env="CARGO_HTTP_CAINFO=/opt/host-ca.crt SSL_CERT_FILE=/opt/host-ca.crt"
fi

bind() { # source, target inside the root, [ro]
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  mounts+=("$root$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$root$2"; fi
}
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
bind /dev /dev
bind /dev/pts /dev/pts
mount -t tmpfs tmpfs "$root/tmp"; mounts+=("$root/tmp")
bind "$rustup_home" /opt/rustup ro
bind "$cargo_bin" /opt/cargo-bin ro

echo "== clean clone of HEAD ($(git rev-parse --short HEAD))"
[ -z "$(git status --porcelain)" ] || echo "   note: uncommitted changes are not part of the check"
git clone -q "$repo" "$root/src"

# The newcomer's shell: the toolchain on PATH, a writable CARGO_HOME for the registry.
root_env=(HOME=/root TERM=dumb
  PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo
  RUSTUP_TOOLCHAIN="$(rustup show active-toolchain | cut -d' ' -f1)" $ca_env)
in_root() {
  chroot "$root" /usr/bin/env -i "${root_env[@]}" /bin/bash -c "$1"
}

echo "== README command 1: scripts/stack.sh (log: $work/stack.log)"
# exec all the way down, so that $! is stack.sh itself and SIGTERM reaches its trap.
(exec chroot "$root" /usr/bin/env -i "${root_env[@]}" /bin/bash -c 'cd /src && exec scripts/stack.sh') >"$work/stack.log" 2>&1 &
stack_pid=$!
ok=0
# A cold release build comes first: allow it 30 minutes.
for _ in $(seq 1 1800); do
  if ! kill -0 "$stack_pid" 2>/dev/null; then break; fi
  if grep -q "The stack is up" "$work/stack.log" &&
    in_root 'curl -fsS http://127.0.0.1:9080/demo/hello && curl -fsS http://127.0.0.1:9081/demo/hello' >"$work/demo-curl.out" 2>&1; then
    ok=1; break
  fi
  sleep 1
done
if [ "$ok" -ne 1 ]; then
  echo "FAIL: the stack did not answer the demo curl" >&2
  tail -30 "$work/stack.log" >&2
  exit 1
fi
echo "   both replicas answered: $(tr '\n' ' ' <"$work/demo-curl.out" | head -c 200)"
kill -TERM "$stack_pid"
wait "$stack_pid" 2>/dev/null || true
stack_pid=""
grep -q "stopping" "$work/stack.log" || { echo "FAIL: the stack did not stop on SIGTERM" >&2; exit 1; }

echo "== README command 2: scripts/test.sh (log: $work/test.log)"
status=0
in_root "cd /src && scripts/test.sh $*" >"$work/test.log" 2>&1 || status=$?
tail -3 "$work/test.log"
if [ "$status" -ne 0 ]; then
  echo "FAIL: scripts/test.sh exited $status on the fresh root" >&2
  grep -E '^(error|FAILED|failures:|test .* FAILED)' "$work/test.log" | head -30 >&2
  exit 1
fi
echo "PASS: both README commands work on a fresh Debian root"
