#!/usr/bin/env bash
# The instruction budget (issue 16): user-space instructions per proxied request of the
# gateway, as bench/plugin-cost.sh counts them with callgrind, must not exceed the figures
# recorded in bench/budget.txt by more than 5%. Run by scripts/test.sh (SKIP_BUDGET=1
# leaves it out locally). A speed-up lowers the budget in the same commit:
#   bench/budget.sh --record
# Counts are exact for a given binary; rebuilding the same code moves them by up to
# ±0.4% (code layout), and another compiler by a few percent, hence the 5%.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=3000
paths="/plain /lprom"
out=$(PATHS="$paths" bench/plugin-cost.sh $requests)
echo "$out"
if [ "${1:-}" = --record ]; then
  {
    echo "# bench/budget.sh: user-space instructions per request (callgrind), $requests requests"
    echo "# after a warm-up, one keepalive connection, one worker, access log off."
    echo "# toolchain: $(rustc -V); recorded $(date -u +%Y-%m-%d) at $(git rev-parse --short HEAD)"
    for p in $paths; do
      echo "$p $(echo "$out" | awk -F'|' -v p=" $p " '$4 == p {gsub(/ /, "", $6); print $6}')"
    done
  } >bench/budget.txt
  cat bench/budget.txt
  exit 0
fi
failed=0
for p in $paths; do
  budget=$(awk -v p="$p" '$1 == p {print $2}' bench/budget.txt)
  got=$(echo "$out" | awk -F'|' -v p=" $p " '$4 == p {gsub(/ /, "", $6); print $6}')
  [ -n "$budget" ] && [ -n "$got" ] || { echo "budget: no figure for $p (budget '$budget', measured '$got')" >&2; exit 1; }
  limit=$((budget * 105 / 100))
  if [ "$got" -gt "$limit" ]; then
    echo "budget: $p costs $got instructions per request, over its budget of $budget by more than 5% (limit $limit); $(rustc -V)" >&2
    failed=1
  else
    echo "budget: $p $got instructions per request (budget $budget, limit $limit)"
  fi
done
exit $failed
