#!/usr/bin/env bash
# Live delivery while the webhook's receiver is slow: loadtest/bench-node.sh
# with <clients> connected clients receiving <rate> events/s for <secs> s,
# while `herald-loadgen ingest` posts OFFLINE_RATE likes/s (default 2000)
# to 1,000 offline users, each parked in an inbox and, with WEBHOOK=1, sent
# to a receiver that takes DELAY_MS (default 5000) per request. Run it with
# WEBHOOK=0 and WEBHOOK=1 and compare the live latency rows.
#
#   cargo build --release -p herald -p herald-loadgen
#   WEBHOOK=1 loadtest/bench-webhook-slow.sh 15000 3000 20
set -euo pipefail
cd "$(dirname "$0")/.."
clients=$1 rate=$2 secs=$3
dir="${BENCH_DIR:-/tmp/herald-bench}"
mkdir -p "$dir"
pkill -f "receive --listen 127.0.0.1:7480" || true
extra=()
if [ "${WEBHOOK:-1}" = 1 ]; then
    timeout 900 target/release/herald-loadgen receive --listen 127.0.0.1:7480 --delay-ms "${DELAY_MS:-5000}" \
        --duration "$((secs + 120))" --idle 60 >"$dir/receiver.out" 2>&1 &
    extra=(HERALD_WEBHOOK__URL=http://127.0.0.1:7480/hooks HERALD_WEBHOOK__SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)
fi
(
    for _ in $(seq 100); do curl -sf 127.0.0.1:7401/readyz >/dev/null 2>&1 && break; sleep 0.2; done
    # Start once the clients are connecting (the run seeds and connects first).
    sleep 5
    timeout 900 target/release/herald-loadgen ingest --target 127.0.0.1:7401 --rate "${OFFLINE_RATE:-2000}" \
        --duration "$secs" --batch 100 --connections 2 >"$dir/offline.out" 2>&1 || true
) &
ing=$!
loadtest/bench-node.sh "$clients" "$rate" "$secs" HERALD_AGGREGATION__THRESHOLD=1000000 "${extra[@]}"
wait "$ing" || true
echo "offline: $(grep -E 'events accepted' "$dir/offline.out" || echo none)"
[ "${WEBHOOK:-1}" = 1 ] && { tail -3 "$dir/receiver.out"; pkill -f "receive --listen 127.0.0.1:7480" || true; }
true
