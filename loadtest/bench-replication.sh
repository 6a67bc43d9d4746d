#!/usr/bin/env bash
# Replicated partitions on this machine: a private redis-server on 6621 and
# NODES release herald nodes on 127.0.0.1:7521.. with
# log.replication_factor = RF (1: one node, today's path), then one
# measurement:
#
#   loadtest/bench-replication.sh ingest RF [herald-loadgen ingest flags]
#       e.g. ingest 3 --connections 16 --batch 1000 --duration 8
#       (with RF > 1 it starts once leadership has settled)
#   loadtest/bench-replication.sh failover
#       3 nodes, RF 3: kill -9 the node leading the most partitions; prints
#       how long until every partition has a live leader again and until a
#       batch touching every partition is answered 202.
#   loadtest/bench-replication.sh refill MB
#       3 nodes, RF 3: about MB megabytes of events, then one node is
#       stopped, its disk wiped and it is started again; prints how long
#       until it holds every partition's log again (in sync), and MB/s.
#   loadtest/bench-replication.sh join MB [RATE]
#       3 nodes, RF 3: about MB megabytes of events, then node-4 is started
#       and added to the node set (herald cluster add) while a paced ingest
#       of RATE events/s (default 10000) runs; prints how long until every
#       partition's replicas are where the 4-node set places them (in
#       sync), the MB node-4 received, and the paced ingest's answers.
#       JOIN_CONTROL=1: the same without adding node-4 (the baseline).
#
#   cargo build --release -p herald -p herald-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BENCH_DIR:-/tmp/herald-bench-repl}"
mode=$1
shift
# HERALD_BIN and HERALD_CONFIG: another build to compare (a base build
# with its own config/default.toml).
bin="${HERALD_BIN:-target/release/herald}"
config="${HERALD_CONFIG:-config/default.toml}"
lg=target/release/herald-loadgen
rport=6621
base=7521

now_ms() { date +%s%3N; }

start_redis() {
    mkdir -p "$dir"
    redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true
    sleep 0.3
    redis-server --port $rport --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --logfile "$dir/redis.log"
    for _ in $(seq 50); do redis-cli -p $rport ping >/dev/null 2>&1 && break; sleep 0.1; done
}

# start_nodes N RF: nodes node-1..N, recorded in $dir/pids.
start_nodes() {
    local n=$1 rf=$2 peers="" i
    for i in $(seq 1 "$n"); do
        peers="$peers${peers:+, }\"node-$i=127.0.0.1:$((base + i - 1))\""
    done
    : >"$dir/pids"
    for i in $(seq 1 "$n"); do start_node "$i" "$n" "$rf" "$peers"; done
    for i in $(seq 1 "$n"); do wait_ready $((base + i - 1)); done
}

start_node() { # i n rf peers
    local i=$1 n=$2 rf=$3 peers=$4
    local extra=()
    # One node alone gets no cluster settings (a base build knows none).
    if [ "$n" -gt 1 ]; then
        extra=(HERALD_SERVER__CLUSTER=true HERALD_SERVER__NODE_ID="node-$i"
            HERALD_SERVER__CLUSTER_KEY=bench-cluster-key HERALD_LOG__REPLICATION_FACTOR="$rf"
            HERALD_REPLICATION__PEERS="[$peers]")
    fi
    env HERALD_LOG="${BENCH_LOG:-warn}" "${extra[@]}" \
        "$bin" --config "$config" --listen "127.0.0.1:$((base + i - 1))" \
        --redis "redis://127.0.0.1:$rport" --data-dir "$dir/node-$i" >>"$dir/node-$i.out" 2>&1 &
    echo "$i $!" >>"$dir/pids"
}

wait_ready() { # port
    for _ in $(seq 600); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "node on $1 never became ready" >&2
    exit 1
}

pid_of() { awk -v i="$1" '$1 == i {print $2}' "$dir/pids" | tail -n 1; }

stop_all() {
    [ -f "$dir/pids" ] && while read -r _ pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
    sleep 1
    redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true
}
trap stop_all EXIT

# Waits until every partition has a leader and leadership has not moved
# for 2 s (a new cluster hands partitions to their preferred leaders in
# its first seconds; a measurement taken then includes those moves).
settled() {
    local t0 last="" same=0 now
    t0=$(now_ms)
    while [ $(( $(now_ms) - t0 )) -lt 30000 ]; do
        now="$(curl -fsS "http://127.0.0.1:$base/v1/admin/cluster" 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); ls=[p['leader'] or '' for p in v['partitions']]; print(','.join(ls) if all(ls) else '')" 2>/dev/null || true)"
        if [ -n "$now" ] && [ "$now" = "$last" ]; then
            same=$((same + 1))
            [ "$same" -ge 10 ] && return 0
        else
            same=0
        fi
        last="$now"
        sleep 0.2
    done
    echo "leadership did not settle within 30 s; measuring anyway" >&2
}

fresh() { stop_all; rm -rf "$dir"; mkdir -p "$dir"; start_redis; }

# A batch of 64 likes to 64 recipients: every partition (of 8) gets some.
batch_body() {
    local ev="" k
    for k in $(seq 0 63); do
        ev="$ev${ev:+,}{\"kind\":\"like\",\"actor\":$((k + 1)),\"recipient\":$((900000 + k)),\"object\":\"post:$k\"}"
    done
    echo "{\"events\":[$ev]}"
}

case "$mode" in
ingest)
    rf=$1
    shift
    fresh
    n=1
    [ "$rf" -gt 1 ] && n=$rf
    start_nodes "$n" "$rf"
    [ "$n" -gt 1 ] && settled
    targets=""
    for i in $(seq 1 "$n"); do targets="$targets${targets:+,}127.0.0.1:$((base + i - 1))"; done
    "$lg" ingest --targets "$targets" "$@"
    ;;
failover)
    fresh
    start_nodes 3 3
    body="$(batch_body)"
    view="$(curl -fsS http://127.0.0.1:$base/v1/admin/cluster)"
    victim="$(echo "$view" | python3 -c 'import json,sys,collections; v=json.load(sys.stdin); c=collections.Counter(p["leader"] for p in v["partitions"] if p["leader"]); print(c.most_common(1)[0][0])')"
    led="$(echo "$view" | python3 -c "import json,sys; v=json.load(sys.stdin); print(sum(1 for p in v['partitions'] if p['leader']=='$victim'))")"
    i="${victim#node-}"
    other=$(( i % 3 + 1 ))
    oport=$((base + other - 1))
    curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$oport/v1/events"
    t0=$(now_ms)
    kill -9 "$(pid_of "$i")"
    elected=""
    accepted=""
    while [ -z "$elected" ] && [ $(( $(now_ms) - t0 )) -lt 30000 ]; do
        if curl -fsS "http://127.0.0.1:$oport/v1/admin/cluster" 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if all(p['leader'] and p['leader']!='$victim' for p in v['partitions']) else 1)"; then
            elected=$(( $(now_ms) - t0 ))
        fi
        sleep 0.02
    done
    while [ -z "$accepted" ] && [ $(( $(now_ms) - t0 )) -lt 30000 ]; do
        code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$oport/v1/events" || true)"
        [ "$code" = 202 ] && accepted=$(( $(now_ms) - t0 ))
        sleep 0.02
    done
    echo "failover: killed $victim (leader of $led of 8 partitions); every partition led again after ${elected:-?} ms; a batch touching every partition answered 202 after ${accepted:-never} ms"
    ;;
refill)
    mb=$1
    fresh
    start_nodes 3 3
    # About 240 bytes a record on disk: MB megabytes of 1,000-event batches.
    secs=$(( mb / 40 + 2 ))
    "$lg" ingest --targets "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))" --connections 12 --batch 1000 --duration "$secs" | sed 's/^/fill: /'
    held="$(du -sm "$dir/node-3/log" | cut -f1)"
    kill "$(pid_of 3)"
    sleep 2
    rm -rf "$dir/node-3"
    peers="\"node-1=127.0.0.1:$base\", \"node-2=127.0.0.1:$((base + 1))\", \"node-3=127.0.0.1:$((base + 2))\""
    t0=$(now_ms)
    start_node 3 3 3 "$peers"
    until curl -fsS "http://127.0.0.1:$base/v1/admin/cluster" 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if all(len(p['in_sync'])==3 for p in v['partitions']) else 1)"; do
        sleep 0.1
        [ $(( $(now_ms) - t0 )) -gt 600000 ] && { echo "refill: not in sync after 600 s" >&2; exit 1; }
    done
    ms=$(( $(now_ms) - t0 ))
    got="$(du -sm "$dir/node-3/log" | cut -f1)"
    echo "refill: node-3 held ${held} MB; wiped and started again, in sync after ${ms} ms ($got MB now): $(python3 -c "print(round($got*1000/max($ms,1), 1))") MB/s"
    ;;
join)
    mb=$1
    rate=${2:-10000}
    fresh
    start_nodes 3 3
    secs=$(( mb / 40 + 2 ))
    "$lg" ingest --targets "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))" --connections 12 --batch 1000 --duration "$secs" | sed 's/^/fill: /'
    held="$(du -sm "$dir/node-1/log" | cut -f1)"
    peers="\"node-1=127.0.0.1:$base\", \"node-2=127.0.0.1:$((base + 1))\", \"node-3=127.0.0.1:$((base + 2))\""
    start_node 4 4 3 "$peers"
    wait_ready $((base + 3))
    "$lg" ingest --targets "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))" --connections 8 --batch 100 --rate "$rate" --duration 60 >"$dir/paced.out" 2>&1 &
    paced=$!
    sleep 2
    if [ -n "${JOIN_CONTROL:-}" ]; then
        # The same run without the join: what the fill's aftermath (its
        # fan-out still running) costs the paced ingest by itself.
        wait "$paced" || true
        sed 's/^/paced without a move (control): /' "$dir/paced.out"
        exit 0
    fi
    t0=$(now_ms)
    "$bin" --config "$config" cluster add node-4 "127.0.0.1:$((base + 3))" --url "http://127.0.0.1:$base" | sed 's/^/add: /'
    # Settled: every partition's replicas where herald-raft's placement
    # (FNV-1a of the name, splitmix64-mixed with the partition) puts them.
    until curl -fsS "http://127.0.0.1:$base/v1/admin/cluster" 2>/dev/null | python3 -c "
import json, sys
M = (1 << 64) - 1
def fnv(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & M
    return max(h, 1)
def mix(z):
    z = (z + 0x9e3779b97f4a7c15) & M
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    return z ^ (z >> 31)
names = ['node-1', 'node-2', 'node-3', 'node-4']
def placed(p):
    scored = sorted(((mix(fnv(n) ^ mix(p + 1)), fnv(n), n) for n in names), reverse=True)
    return sorted(n for _, _, n in scored[:3])
v = json.load(sys.stdin)
ok = all(sorted(p['replicas']) == placed(p['partition']) and sorted(p['in_sync']) == placed(p['partition']) for p in v['partitions'])
sys.exit(0 if ok else 1)"; do
        sleep 0.1
        [ $(( $(now_ms) - t0 )) -gt 600000 ] && { echo "join: not settled after 600 s" >&2; exit 1; }
    done
    ms=$(( $(now_ms) - t0 ))
    got="$(du -sm "$dir/node-4/log" | cut -f1)"
    on4="$(curl -fsS "http://127.0.0.1:$base/v1/admin/cluster" | python3 -c "import json,sys; v=json.load(sys.stdin); print(sum(1 for p in v['partitions'] if 'node-4' in p['replicas']))")"
    echo "join: each node held ${held} MB; node-4 added, replicas of $on4 of 8 partitions moved onto it in ${ms} ms ($got MB): $(python3 -c "print(round($got*1000/max($ms,1), 1))") MB/s"
    wait "$paced" || true
    sed 's/^/paced during the move: /' "$dir/paced.out"
    ;;
*)
    echo "usage: $0 ingest RF [flags] | failover | refill MB | join MB [RATE]" >&2
    exit 2
    ;;
esac
