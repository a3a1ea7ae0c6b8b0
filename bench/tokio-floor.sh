#!/usr/bin/env bash
# The floor of memory per idle keepalive connection for a server that gives each
# connection a tokio task (the gateway does), against which docs/benchmarks.md §1d reads
# the gateway's own figure: bench/tokio-floor/ is a task that only waits to read its
# socket, with and without an idle timer. Two runs of each; loopback only; stops by itself.
#   bench/tokio-floor.sh [CONNECTIONS]     (default 9000, as bench/instructions.sh)
set -euo pipefail
cd "$(dirname "$0")/tokio-floor"
n=${1:-9000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet
for mode in plain timer; do
  for run in 1 2; do
    ./target/release/tokio-floor "$n" "$mode" |
      awk -v m="$mode" -v r="$run" '{ printf "%s (run %s): %d B per idle connection\n", m, r, $1 / $2 }'
  done
done
