#!/usr/bin/env bash
# The cost of the cross-node hop: the same load against a local cluster of
# <nodes> Herald nodes (deploy/cluster.sh: a Redis Cluster of 3 masters on
# loopback), clients and posts spread over the nodes. With 1 node nothing
# crosses; with 3, about two thirds of the pushes do. Prints the summary,
# the CPU seconds of every herald process and of the Redis masters, and CPU
# per delivered notification.
#
#   cargo build --release -p herald -p herald-loadgen
#   loadtest/bench-cluster.sh <nodes> <clients> <rate> <secs>
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=$1 clients=$2 rate=$3 secs=$4
export HERALD_CLUSTER_DIR="${BENCH_DIR:-/tmp/herald-bench-cluster}"
export REDIS_BASE_PORT=7101 HERALD_BASE_PORT=7511 HERALD_NODES="$nodes"
export HERALD_BIN=target/release/herald
deploy/cluster.sh down >/dev/null 2>&1 || true
up=$(deploy/cluster.sh up)
pids=$(awk '/^node /{print $5}' <<<"$up")
targets=$(awk '/^node /{sub("http://","",$3); printf "%s%s", sep, $3; sep=","}' <<<"$up")
rpids=$(for p in 7101 7102 7103; do cat "$HERALD_CLUSTER_DIR/redis-$p/pid"; done)
ticks() { for p in "$@"; do awk '{print $14+$15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
sleep 3
graph=(--users "$clients" --mean-follows 20 --celebrities 2 --celebrity-share 0.05)
target/release/herald-loadgen seed --target "${targets%%,*}" "${graph[@]}" >/dev/null
# CPU is counted from here: connecting, sending, draining.
h0=$(ticks $pids) r0=$(ticks $rpids)
timeout 900 target/release/herald-loadgen run --scenario custom --clients "$clients" --rate "$rate" \
    --duration "$secs" --targets "$targets" --no-seed "${graph[@]}" \
    --out "$HERALD_CLUSTER_DIR/reports" >"$HERALD_CLUSTER_DIR/lg.out" 2>&1 || true
h1=$(ticks $pids) r1=$(ticks $rpids)
grep -v "^\[" "$HERALD_CLUSTER_DIR/lg.out" | grep -v "^reports:" | grep -v "^seeding"
delivered=$(awk '/^notifications/{for(i=1;i<=NF;i++) if($i=="live"){gsub(",","",$(i+1)); print $(i+1)}}' "$HERALD_CLUSTER_DIR/lg.out")
hz=$(getconf CLK_TCK)
echo "herald cpu_s $(echo "($h1-$h0)/$hz" | bc -l | cut -c1-6) (all $nodes nodes), redis cpu_s $(echo "($r1-$r0)/$hz" | bc -l | cut -c1-6)"
echo "herald us/notification $(echo "($h1-$h0)*1000000/$hz/$delivered" | bc -l | cut -c1-6) (live notifications: $delivered)"
deploy/cluster.sh down >/dev/null
