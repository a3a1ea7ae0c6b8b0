#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests and end-to-end tests against
# real etcd processes. The end-to-end tests start the workspace's binaries, so they are
# built first (one debug build shared by every test binary).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
