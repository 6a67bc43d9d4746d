#!/usr/bin/env bash
# One benchmark run on this machine: a private redis-server on port 6401, a
# fresh release herald on 127.0.0.1:7401 (extra HERALD_* settings may be
# given), then herald-loadgen with <clients> clients at <rate> events/s for
# <secs> s (SCENARIO=celebrity, reconnect-storm, ... picks a preset;
# LOADGEN_ARGS adds generator flags, e.g. --prefs; CONFIG another config file,
# e.g. an older build's). Prints herald's CPU seconds, its counters and the verdict.
#
#   cargo build --release -p herald -p herald-loadgen
#   loadtest/bench-node.sh 5000 5000 20 [HERALD_LOG__PARTITIONS=2 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BENCH_DIR:-/tmp/herald-bench}"
clients=$1 rate=$2 secs=$3
shift 3
mkdir -p "$dir"
redis-cli -p 6401 ping >/dev/null 2>&1 ||
    redis-server --port 6401 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile "$dir/redis.log"
sleep 0.3
pkill -f "listen 127.0.0.1:7401" || true
sleep 1
redis-cli -p 6401 flushall >/dev/null
rm -rf "$dir/data"
env HERALD_LOG=warn "$@" target/release/herald --config "${CONFIG:-config/default.toml}" --listen 127.0.0.1:7401 \
    --redis redis://127.0.0.1:6401 --data-dir "$dir/data" >"$dir/herald.out" 2>&1 &
hp=$!
sleep 1
rp=$(redis-cli -p 6401 info server | awk -F: '/^process_id/{print $2}' | tr -d '\r')
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
r0=$(cpu "$rp")
/usr/bin/time -o "$dir/lg.time" -f "%U %S" timeout 900 target/release/herald-loadgen run --scenario "${SCENARIO:-custom}" --clients "$clients" --rate "$rate" \
    --duration "$secs" ${LOADGEN_ARGS:-} --target 127.0.0.1:7401 --herald-pid "$hp" --out "$dir/reports" >"$dir/lg.out" 2>&1 || true
echo "herald cpu_s $(cpu "$hp")"
echo "redis cpu_s $(awk -v a="$(cpu "$rp")" -v b="$r0" 'BEGIN{print a-b}')"
echo "loadgen cpu_s $(awk '{print $1+$2}' "$dir/lg.time")"
curl -s 127.0.0.1:7401/metrics | grep -E '^herald_notifications_total\{route="pushed"\}|^herald_log_append_seconds_(sum|count)|^herald_celebrity_broadcast_seconds_(sum|count)' || true
grep -v "^\[" "$dir/lg.out" | grep -v "^reports:"
kill "$hp"
