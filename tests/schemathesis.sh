#!/usr/bin/env bash
# Schemathesis against the Admin API's own OpenAPI document, on a real stack (etcd +
# admin-api on free loopback ports): every operation fuzzed from the schema, positive and
# negative, checked for server errors and for answers that break the schema. Figures of
# the documented run are in docs/security.md. Not part of scripts/test.sh (minutes).
#   tests/schemathesis.sh [examples per operation, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
examples=${1:-100}

scripts/install-deps.sh python3-venv
cargo build --locked -p admin-api --bin admin-api
venv="$root/.local/schemathesis-venv"
[ -x "$venv/bin/schemathesis" ] || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
}

. bench/lib.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

client=$(port); peer=$(port); admin=$(port)
etcd --name st --data-dir "$work/etcd" --log-level warn \
  --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "st=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_port "$client"
key=schemathesis-admin-key
"${CARGO_TARGET_DIR:-$root/target}/debug/admin-api" --etcd-endpoints "http://127.0.0.1:$client" \
  --listen "127.0.0.1:$admin" --admin-key "$key" >"$work/admin.log" 2>&1 &
pids+=($!)
wait_port "$admin"

status=0
"$venv/bin/schemathesis" run "http://127.0.0.1:$admin/apisix/admin/openapi.json" \
  -H "X-API-KEY: $key" --max-examples "$examples" --seed 1 --workers 1 \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --report junit --report-junit-path "$root/.local/schemathesis-junit.xml" \
  --no-color || status=$?
if grep -q "panicked\|overflow" "$work/admin.log"; then
  echo "admin-api log shows a panic:" >&2; grep -n "panicked\|overflow" "$work/admin.log" >&2; status=1
fi
kill -0 "${pids[1]}" 2>/dev/null || { echo "admin-api died during the run" >&2; status=1; }
exit "$status"
