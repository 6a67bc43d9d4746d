#!/usr/bin/env bash
# The nemesis, long form: three replicated nodes in network namespaces,
# Redis in a fourth, a producer posting throughout, and ROUNDS rounds of
# faults (the busiest leader cut off the network past the election
# timeout; frozen with SIGSTOP; killed with SIGKILL and its disk wiped,
# then started empty). Prints each fault with its recovery time and the
# verdict: events accepted, lost (must be 0), order and ids checked.
# Needs root (network namespaces) and iproute2, curl, redis-server.
#
#   loadtest/nemesis.sh [ROUNDS]      (default 5; CI plays 1)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
deploy/ensure-deps.sh >&2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
NEMESIS_ROUNDS="$rounds" cargo test -q -p herald --test nemesis -- --nocapture >"$out" 2>&1 || status=$?
grep -E "^nemesis: " "$out" | sed 's/^nemesis: //'
if [ "$status" -ne 0 ]; then
    echo "FAILED:" >&2
    grep -E "panicked|assert|lost" "$out" | head -20 >&2
fi
exit "$status"
