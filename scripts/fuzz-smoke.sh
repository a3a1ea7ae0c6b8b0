#!/usr/bin/env bash
# A few seconds of every cargo-fuzz target (fuzz/), starting from the kept corpus: catches a
# target that no longer builds and a crash that a known input now finds. Long runs are
# documented in fuzz/README.md. Needs a nightly toolchain (cargo-fuzz builds with
# sanitizers); without one it says so and skips, since rustup cannot fetch one here.
#   scripts/fuzz-smoke.sh [seconds per target, default 5]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-5}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz smoke: SKIPPED, no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
# libfuzzer-sys builds libFuzzer, which is C++: a fresh machine with a nightly toolchain
# but no C++ compiler would fail here (found by fresh-machine-check.sh).
command -v c++ >/dev/null 2>&1 || ../scripts/install-deps.sh g++
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke: installing cargo-fuzz"
  if ! cargo +nightly install cargo-fuzz --locked --quiet; then
    echo "fuzz smoke: SKIPPED, cargo-fuzz could not be installed from crates.io" >&2
    exit 0
  fi
fi

cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  # New inputs go to the scratch folder; the kept corpus is only read.
  if ! cargo +nightly fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz smoke: $target FAILED (reproduce with the crash file named above)" >&2
    exit 1
  fi
  echo "fuzz smoke: $target ok ($(grep -o 'Done [0-9]* runs' "$scratch/$target.log" | tail -1))"
done
