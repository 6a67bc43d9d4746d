#!/usr/bin/env bash
# Runs the chaos scenario against a fresh release node and a private Redis:
# sustained traffic while Herald is killed with SIGKILL and restarted
# KILLS times and Redis is stopped once. Usage:
#   loadtest/chaos.sh [clients] [rate] [seconds] [kills]
# Prints the load generator's summary; reports go to loadtest/reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${1:-1000}"; RATE="${2:-1000}"; SECS="${3:-60}"; KILLS="${4:-6}"
deploy/ensure-deps.sh
cargo build --release -p herald -p herald-loadgen >/dev/null
work="$(mktemp -d)"
rport=$(( 20000 + RANDOM % 10000 )); hport=$(( rport + 1 ))
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
rpid=$!
trap 'kill "$rpid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
target/release/herald-loadgen run --scenario chaos --clients "$CLIENTS" --rate "$RATE" \
  --duration "$SECS" --kills "$KILLS" --strict \
  --target "127.0.0.1:$hport" --redis-pid "$rpid" \
  --herald-cmd "target/release/herald --config config/default.toml --listen 127.0.0.1:$hport --redis redis://127.0.0.1:$rport --data-dir $work/data" \
  --out loadtest/reports
