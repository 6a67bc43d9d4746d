#!/usr/bin/env bash
# The nemesis, long form: three replicated nodes in network namespaces,
# a Redis Cluster (3 masters with a replica each, redis.wait_replicas = 1)
# in a fourth, a producer posting throughout to offline users and to one
# connected user per node, and ROUNDS rounds of faults (the busiest leader
# cut off the network past the election timeout; frozen with SIGSTOP;
# killed with SIGKILL and its disk wiped, then started empty; the Redis
# master of an inbox killed with SIGKILL, then started again). Prints each
# fault with its recovery time and how soon connected users were served
# once it was over, and the verdict: events accepted, lost (must be 0; a
# connected user must have received its events, not merely have them in
# its inbox), order and ids checked, and connected users served within
# the goal after every fault (NEMESIS_SERVED_GOAL_MS, default 1000; the
# run fails past it).
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
NEMESIS_SERVED_GOAL_MS="${NEMESIS_SERVED_GOAL_MS:-1000}" NEMESIS_ROUNDS="$rounds" cargo test -q -p herald --test it nemesis:: -- --nocapture >"$out" 2>&1 || status=$?
grep -E "^nemesis: " "$out" | sed 's/^nemesis: //'
if [ "$status" -ne 0 ]; then
    echo "FAILED:" >&2
    grep -E "panicked|assert|lost|past the goal" "$out" | head -20 >&2
fi
exit "$status"
