#!/usr/bin/env bash
# A local cluster on loopback: a Redis Cluster of 3 masters and 3 Herald
# nodes working as one (server.cluster = true: pushes to users connected
# to another node travel over Redis pub/sub).
#
#   deploy/cluster.sh up       start everything, print one line per node, return once ready
#   deploy/cluster.sh status   one line per node: pid, alive, ready
#   deploy/cluster.sh down     stop everything it started
#
# Settings (environment): HERALD_CLUSTER_DIR (state, default
# /tmp/herald-cluster), REDIS_BASE_PORT (7001), HERALD_BASE_PORT (7411),
# HERALD_BIN (default: a release build, built if missing), HERALD_NODES
# (Herald nodes, default 3; the Redis Cluster keeps 3 masters),
# HERALD_ROLES (each node's role in order, default all of them "all"; e.g.
# "ingest ingest edge edge" with HERALD_NODES=4: clients go to the edges,
# events to any node).
# Then, for example:
#   target/release/herald-loadgen run --scenario smoke --strict \
#     --targets 127.0.0.1:7411,127.0.0.1:7412,127.0.0.1:7413
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${HERALD_CLUSTER_DIR:-/tmp/herald-cluster}"
rbase="${REDIS_BASE_PORT:-7001}"
hbase="${HERALD_BASE_PORT:-7411}"
nodes="${HERALD_NODES:-3}"
masters=3

alive() { kill -0 "$1" 2>/dev/null; }

ready() { # port
    curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null
}

up() {
    if [ -f "$dir/nodes" ]; then
        echo "a cluster is already up (state in $dir); run: $0 down" >&2
        exit 1
    fi
    deploy/ensure-deps.sh
    command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
    bin="${HERALD_BIN:-target/release/herald}"
    if [ ! -x "$bin" ]; then
        cargo build --release -p herald >&2
    fi
    if [ $((rbase + masters - 1 + 10000)) -gt 65535 ]; then
        echo "REDIS_BASE_PORT=$rbase is too high: Redis Cluster also listens on port + 10000 (its bus)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    # The secret the nodes present to each other (fresh per cluster).
    key="${HERALD_CLUSTER_KEY:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
    seeds=""
    addrs=""
    for i in $(seq 0 $((masters - 1))); do
        port=$((rbase + i))
        mkdir -p "$dir/redis-$port"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --save "" --appendonly no --dir "$dir/redis-$port" \
            --daemonize yes --pidfile "$dir/redis-$port/pid" --logfile "$dir/redis-$port/log"
        seeds="$seeds${seeds:+, }\"redis://127.0.0.1:$port\""
        addrs="$addrs 127.0.0.1:$port"
    done
    for i in $(seq 0 $((masters - 1))); do
        port=$((rbase + i))
        for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
        redis-cli -p "$port" ping >/dev/null 2>&1 || {
            echo "redis-server on port $port did not start:" >&2
            tail -n 20 "$dir/redis-$port/log" >&2 || true
            exit 1
        }
    done
    # shellcheck disable=SC2086
    redis-cli --cluster create $addrs --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1 || {
        echo "redis-cli --cluster create failed:" >&2
        cat "$dir/cluster-create.log" >&2
        exit 1
    }
    for _ in $(seq 200); do
        redis-cli -p "$rbase" cluster info 2>/dev/null | grep -q cluster_state:ok && break
        sleep 0.05
    done
    : >"$dir/nodes"
    read -r -a roles <<<"${HERALD_ROLES:-}"
    for i in $(seq 1 "$nodes"); do
        port=$((hbase + i - 1))
        name="node-$i"
        role="${roles[$((i - 1))]:-all}"
        HERALD_SERVER__CLUSTER=true HERALD_SERVER__NODE_ID="$name" \
            HERALD_SERVER__CLUSTER_KEY="$key" \
            HERALD_REDIS__CLUSTER_NODES="[$seeds]" HERALD_LOG="${HERALD_LOG:-warn}" \
            nohup "$bin" --config config/default.toml --listen "127.0.0.1:$port" --role "$role" \
            --data-dir "$dir/$name" >"$dir/$name.log" 2>&1 &
        echo "$name $port $! $role" >>"$dir/nodes"
    done
    while read -r name port pid _; do
        for _ in $(seq 300); do
            ready "$port" && break
            alive "$pid" || { echo "$name exited; see $dir/$name.log" >&2; exit 1; }
            sleep 0.1
        done
        ready "$port" || { echo "$name never became ready; see $dir/$name.log" >&2; exit 1; }
    done <"$dir/nodes"
    while read -r name port pid role; do
        echo "node $name http://127.0.0.1:$port pid $pid role $role"
    done <"$dir/nodes"
}

status() {
    [ -f "$dir/nodes" ] || { echo "no cluster (state dir $dir)"; return 0; }
    while read -r name port pid role; do
        state="down"
        alive "$pid" && state="up"
        r="not ready"
        ready "$port" && r="ready"
        echo "node $name http://127.0.0.1:$port pid $pid role $role $state $r"
    done <"$dir/nodes"
    for i in $(seq 0 $((masters - 1))); do
        port=$((rbase + i))
        echo "redis 127.0.0.1:$port $(redis-cli -p "$port" ping 2>/dev/null || echo down)"
    done
}

down() {
    if [ -f "$dir/nodes" ]; then
        while read -r _ _ pid _; do alive "$pid" && kill "$pid" || true; done <"$dir/nodes"
        while read -r _ _ pid _; do
            for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && kill -9 "$pid" || true
        done <"$dir/nodes"
    fi
    for i in $(seq 0 $((masters - 1))); do
        port=$((rbase + i))
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
    echo "cluster down"
}

case "${1:-}" in
    up) up ;;
    status) status ;;
    down) down ;;
    *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
