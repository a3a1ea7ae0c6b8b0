#!/usr/bin/env bash
# Scale of change (issue 3, item 5): cold start with many routes in etcd, single-change
# propagation to every replica, no-op writes, sustained route writes under keepalive
# traffic. Builds the release binaries, then runs `scale` (tests/src/bin/scale.rs) with
# the arguments given; it starts its own etcd, admin-api, gateways and backend on loopback
# and stops them by itself. Prints a markdown summary (docs/benchmarks.md quotes it).
#
#   bench/scale.sh [--routes 50000] [--hosts 1000] [--seconds 30] ...   (--help lists all)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p gateway -p admin-api -p e2e --bins >/dev/null
bin=${CARGO_TARGET_DIR:-$(pwd)/target}/release
echo "<!-- $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)'), $(date -u +%Y-%m-%dT%H:%MZ) -->"
exec "$bin/scale" "$@"
