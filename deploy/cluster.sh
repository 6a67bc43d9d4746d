#!/usr/bin/env bash
# A local cluster on loopback: a Redis Cluster of 3 masters, each with a
# replica (a master lost is replaced by its replica), and 3 Herald nodes
# working as one (server.cluster = true: pushes to users connected to
# another node travel over Redis pub/sub), their log partitions
# replicated 3 times (Raft per partition: any one node may be lost with
# its disk).
#
#   deploy/cluster.sh up           start everything, print one line per node, return once ready
#   deploy/cluster.sh status       one line per node: pid, alive, ready
#   deploy/cluster.sh stop NAME    stop one Herald node (SIGTERM, then SIGKILL after 10 s)
#   deploy/cluster.sh start NAME   start a stopped node again with its config and
#                                  whatever its data directory holds (empty included);
#                                  print its line, return once it is ready
#   deploy/cluster.sh join NAME    start a new node (the next port) and add it to the
#                                  node set: replicas move onto it while appends go on
#   deploy/cluster.sh leave NAME   remove a node from the node set, wait until it holds
#                                  no replica (up to 5 min), then stop it
#   deploy/cluster.sh down         stop everything it started
#
# A node line: node <name> http://127.0.0.1:<port> pid <pid> role <role> data <dir>
#
# Settings (environment): HERALD_CLUSTER_DIR (state, default
# /tmp/herald-cluster), REDIS_BASE_PORT (7001: the masters, then their
# replicas, six consecutive ports), HERALD_BASE_PORT (7411),
# HERALD_BIN (default: a release build, built if missing), HERALD_NODES
# (Herald nodes, default 3; the Redis Cluster keeps 3 masters),
# HERALD_ROLES (each node's role in order, default all of them "all"; e.g.
# "ingest ingest edge edge" with HERALD_NODES=4: clients go to the edges,
# events to any node), HERALD_REPLICATION (log.replication_factor: default
# 3 when at least 3 nodes hold a log, else 1; 1 shares partitions by
# leases in Redis instead).
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
# One replica per master.
servers=$((masters * 2))

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
    if [ $((rbase + servers - 1 + 10000)) -gt 65535 ]; then
        echo "REDIS_BASE_PORT=$rbase is too high: Redis Cluster also listens on port + 10000 (its bus)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    # The secret the nodes present to each other (fresh per cluster).
    key="${HERALD_CLUSTER_KEY:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
    seeds=""
    addrs=""
    for i in $(seq 0 $((servers - 1))); do
        port=$((rbase + i))
        mkdir -p "$dir/redis-$port"
        # An append-only file synced every second: a master restarted
        # after a crash comes back with its data (its replica may have
        # taken over meanwhile).
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --save "" --appendonly yes --appendfsync everysec --dir "$dir/redis-$port" \
            --daemonize yes --pidfile "$dir/redis-$port/pid" --logfile "$dir/redis-$port/log"
        seeds="$seeds${seeds:+, }\"redis://127.0.0.1:$port\""
        addrs="$addrs 127.0.0.1:$port"
    done
    for i in $(seq 0 $((servers - 1))); do
        port=$((rbase + i))
        for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
        redis-cli -p "$port" ping >/dev/null 2>&1 || {
            echo "redis-server on port $port did not start:" >&2
            tail -n 20 "$dir/redis-$port/log" >&2 || true
            exit 1
        }
    done
    # shellcheck disable=SC2086
    redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes >"$dir/cluster-create.log" 2>&1 || {
        echo "redis-cli --cluster create failed:" >&2
        cat "$dir/cluster-create.log" >&2
        exit 1
    }
    for _ in $(seq 200); do
        redis-cli -p "$rbase" cluster info 2>/dev/null | grep -q cluster_state:ok && break
        sleep 0.05
    done
    read -r -a roles <<<"${HERALD_ROLES:-}"
    # Replication: the nodes that hold a log are its peers.
    peers=""
    ingest=0
    for i in $(seq 1 "$nodes"); do
        role="${roles[$((i - 1))]:-all}"
        [ "$role" = edge ] && continue
        ingest=$((ingest + 1))
        peers="$peers${peers:+, }\"node-$i=127.0.0.1:$((hbase + i - 1))\""
    done
    default_rf=1
    [ "$ingest" -ge 3 ] && default_rf=3
    rf="${HERALD_REPLICATION:-$default_rf}"
    if [ "$rf" -gt "$ingest" ]; then
        echo "HERALD_REPLICATION=$rf needs at least $rf nodes that hold a log ($ingest here)" >&2
        exit 1
    fi
    # What `start NAME` needs later: the binary, the key, the seeds, the
    # replication factor and its peers.
    printf '%s\n%s\n%s\n%s\n%s\n' "$bin" "$key" "$seeds" "$rf" "$peers" >"$dir/env"
    : >"$dir/nodes"
    for i in $(seq 1 "$nodes"); do
        port=$((hbase + i - 1))
        name="node-$i"
        role="${roles[$((i - 1))]:-all}"
        launch "$name" "$port" "$role"
    done
    while read -r name port pid _; do
        wait_ready "$name" "$port" "$pid"
    done <"$dir/nodes"
    while read -r name port pid role; do
        line "$name" "$port" "$pid" "$role"
    done <"$dir/nodes"
}

line() { # name port pid role
    echo "node $1 http://127.0.0.1:$2 pid $3 role $4 data $dir/$1"
}

# Starts node NAME on PORT with ROLE and records it in $dir/nodes.
launch() { # name port role
    local bin key seeds rf peers
    { read -r bin; read -r key; read -r seeds; read -r rf; read -r peers; } <"$dir/env"
    HERALD_SERVER__CLUSTER=true HERALD_SERVER__NODE_ID="$1" \
        HERALD_SERVER__CLUSTER_KEY="$key" \
        HERALD_LOG__REPLICATION_FACTOR="$rf" HERALD_REPLICATION__PEERS="[$peers]" \
        HERALD_REDIS__CLUSTER_NODES="[$seeds]" HERALD_LOG="${HERALD_LOG:-warn}" \
        nohup "$bin" --config config/default.toml --listen "127.0.0.1:$2" --role "$3" \
        --data-dir "$dir/$1" >>"$dir/$1.log" 2>&1 &
    echo "$1 $2 $! $3" >>"$dir/nodes"
}

wait_ready() { # name port pid
    for _ in $(seq 300); do
        ready "$2" && return 0
        alive "$3" || { echo "$1 exited; see $dir/$1.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "$1 never became ready; see $dir/$1.log" >&2
    exit 1
}

# The recorded line of node NAME (name port pid role), or nothing.
find_node() {
    [ -f "$dir/nodes" ] || return 0
    awk -v n="$1" '$1 == n' "$dir/nodes"
}

stop_node() { # name
    local rec name port pid role
    rec="$(find_node "$1")"
    [ -n "$rec" ] || { echo "no node named $1 (see: $0 status)" >&2; exit 1; }
    read -r name port pid role <<<"$rec"
    if alive "$pid"; then
        kill "$pid" || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid" || true
    fi
    echo "node $name stopped"
}

start_node() { # name
    local rec name port pid role
    rec="$(find_node "$1")"
    [ -n "$rec" ] || { echo "no node named $1 (see: $0 status)" >&2; exit 1; }
    read -r name port pid role <<<"$rec"
    if alive "$pid"; then
        echo "node $name is running (pid $pid); stop it first" >&2
        exit 1
    fi
    awk -v n="$name" '$1 != n' "$dir/nodes" >"$dir/nodes.tmp" && mv "$dir/nodes.tmp" "$dir/nodes"
    launch "$name" "$port" "$role"
    read -r _ _ pid _ <<<"$(find_node "$name")"
    wait_ready "$name" "$port" "$pid"
    line "$name" "$port" "$pid" "$role"
}

# Runs `herald cluster ARGS` against the first live node.
herald_cluster() {
    local bin rec_port
    { read -r bin; } <"$dir/env"
    rec_port=""
    while read -r _ port pid _; do
        alive "$pid" && { rec_port="$port"; break; }
    done <"$dir/nodes"
    [ -n "$rec_port" ] || { echo "no live node to ask" >&2; exit 1; }
    "$bin" --config config/default.toml cluster "$@" --url "http://127.0.0.1:$rec_port"
}

join_node() { # name
    [ -f "$dir/nodes" ] || { echo "no cluster (state dir $dir); run: $0 up" >&2; exit 1; }
    [ -z "$(find_node "$1")" ] || { echo "a node named $1 exists (see: $0 status)" >&2; exit 1; }
    local port
    port=$(($(awk 'BEGIN{m=0} $2 > m {m=$2} END{print m}' "$dir/nodes") + 1))
    launch "$1" "$port" all
    read -r _ _ pid _ <<<"$(find_node "$1")"
    wait_ready "$1" "$port" "$pid"
    herald_cluster add "$1" "127.0.0.1:$port"
    line "$1" "$port" "$pid" all
}

leave_node() { # name
    local rec name port pid role
    rec="$(find_node "$1")"
    [ -n "$rec" ] || { echo "no node named $1 (see: $0 status)" >&2; exit 1; }
    read -r name port pid role <<<"$rec"
    herald_cluster remove "$name"
    # Until no partition lists it among its replicas.
    for _ in $(seq 300); do
        if ! herald_cluster status | awk 'f && NF >= 4 {print $4} /^PARTITION/ {f=1}' | tr ',' '\n' | grep -qx "$name"; then
            stop_node "$name"
            awk -v n="$name" '$1 != n' "$dir/nodes" >"$dir/nodes.tmp" && mv "$dir/nodes.tmp" "$dir/nodes"
            return 0
        fi
        sleep 1
    done
    echo "$name still holds replicas after 5 min; left running (see: herald cluster status)" >&2
    exit 1
}

status() {
    [ -f "$dir/nodes" ] || { echo "no cluster (state dir $dir)"; return 0; }
    while read -r name port pid role; do
        state="down"
        alive "$pid" && state="up"
        r="not ready"
        ready "$port" && r="ready"
        echo "node $name http://127.0.0.1:$port pid $pid role $role $state $r data $dir/$name"
    done <"$dir/nodes"
    for i in $(seq 0 $((servers - 1))); do
        port=$((rbase + i))
        r="$(redis-cli -p "$port" role 2>/dev/null | head -n 1 || true)"
        echo "redis 127.0.0.1:$port $(redis-cli -p "$port" ping 2>/dev/null || echo down) ${r:-}"
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
    for i in $(seq 0 $((servers - 1))); do
        port=$((rbase + i))
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
    echo "cluster down"
}

case "${1:-}" in
    up) up ;;
    status) status ;;
    stop) [ -n "${2:-}" ] || { echo "usage: $0 stop NAME" >&2; exit 2; }; stop_node "$2" ;;
    start) [ -n "${2:-}" ] || { echo "usage: $0 start NAME" >&2; exit 2; }; start_node "$2" ;;
    join) [ -n "${2:-}" ] || { echo "usage: $0 join NAME" >&2; exit 2; }; join_node "$2" ;;
    leave) [ -n "${2:-}" ] || { echo "usage: $0 leave NAME" >&2; exit 2; }; leave_node "$2" ;;
    down) down ;;
    *) echo "usage: $0 up|status|stop NAME|start NAME|join NAME|leave NAME|down" >&2; exit 2 ;;
esac
