#!/usr/bin/env bash
# Webhook throughput on this machine: a private redis-server (port 6402), a
# webhook receiver (herald-loadgen receive on 127.0.0.1:7480, answering 200
# after DELAY_MS), a fresh release herald on 127.0.0.1:7402 whose webhook
# points at it, then `herald-loadgen ingest` posting likes to 1,000 offline
# users at <rate> events/s for <secs> s. Folding is off, so every like is
# one notification parked in an inbox and sent to the webhook. Prints what
# the receiver got (notifications/s from its first request to its last),
# herald's and Redis' CPU seconds and herald's webhook counters.
#
#   cargo build --release -p herald -p herald-loadgen
#   loadtest/bench-webhook.sh 20000 10 [HERALD_WEBHOOK__BATCH=200 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BENCH_DIR:-/tmp/herald-bench-webhook}"
rate=$1 secs=$2
shift 2
mkdir -p "$dir"
redis-cli -p 6402 ping >/dev/null 2>&1 ||
    redis-server --port 6402 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile "$dir/redis.log"
sleep 0.3
pkill -f "listen 127.0.0.1:7402" || true
pkill -f "receive --listen 127.0.0.1:7480" || true
sleep 1
redis-cli -p 6402 flushall >/dev/null
rm -rf "$dir/data"
timeout 900 target/release/herald-loadgen receive --listen 127.0.0.1:7480 --delay-ms "${DELAY_MS:-0}" \
    --duration 600 --idle 5 >"$dir/receiver.out" 2>&1 &
recv=$!
env HERALD_LOG=warn HERALD_AGGREGATION__THRESHOLD=1000000 HERALD_AGGREGATION__RATE_PER_RECIPIENT=0 \
    HERALD_WEBHOOK__URL=http://127.0.0.1:7480/hooks HERALD_WEBHOOK__SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
    "$@" target/release/herald --config config/default.toml --listen 127.0.0.1:7402 \
    --redis redis://127.0.0.1:6402 --data-dir "$dir/data" >"$dir/herald.out" 2>&1 &
hp=$!
for _ in $(seq 50); do curl -sf 127.0.0.1:7402/readyz >/dev/null && break; sleep 0.2; done
rp=$(redis-cli -p 6402 info server | awk -F: '/^process_id/{print $2}' | tr -d '\r')
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
r0=$(cpu "$rp")
timeout 900 target/release/herald-loadgen ingest --target 127.0.0.1:7402 --rate "$rate" --duration "$secs" \
    --batch 100 --connections 8 >"$dir/ingest.out" 2>&1 || true
# The receiver stops 5 s after its last request.
wait "$recv" || true
echo "herald cpu_s $(cpu "$hp")"
echo "redis cpu_s $(awk -v a="$(cpu "$rp")" -v b="$r0" 'BEGIN{print a-b}')"
grep -E "accepted|events/s" "$dir/ingest.out" | head -3 || true
tail -1 "$dir/receiver.out"
curl -s 127.0.0.1:7402/metrics | grep -E '^herald_webhook_(parked|sent|retried|dead_lettered)_total|^herald_webhook_requests_total|^herald_webhook_backlog' || true
kill "$hp"
