#!/usr/bin/env bash
# The cost of redis.wait_replicas: one Redis with a replica on loopback
# (ports 6601, 6602), a release node on 7501 with wait_replicas = $1 (0 or 1),
# then `herald-loadgen storage` (100,000 comments to 10,000 offline users);
# prints its lines and the herald process CPU ticks (user + sys) it took.
# Needs `cargo build --release -p herald -p herald-loadgen`. Usage:
#   for r in 1 2 3; do for w in 0 1; do loadtest/bench-wait-replicas.sh $w; done; done
set -u
cd "$(dirname "$0")/.."
W=$1
D=$(mktemp -d)
redis-server --port 6601 --bind 127.0.0.1 --save "" --appendonly no --dir $D --daemonize yes --pidfile $D/m.pid --logfile $D/m.log
mkdir $D/r
redis-server --port 6602 --bind 127.0.0.1 --save "" --appendonly no --dir $D/r --replicaof 127.0.0.1 6601 --daemonize yes --pidfile $D/r.pid --logfile $D/r.log
for i in $(seq 100); do redis-cli -p 6601 info replication | grep -q "state=online" && break; sleep 0.1; done
HERALD_REDIS__WAIT_REPLICAS=$W HERALD_LOG=warn target/release/herald --config config/default.toml --listen 127.0.0.1:7501 --redis redis://127.0.0.1:6601 --data-dir $D/node > $D/h.log 2>&1 &
HP=$!
for i in $(seq 100); do curl -fs http://127.0.0.1:7501/readyz >/dev/null && break; sleep 0.1; done
c0=$(awk '{print $14+$15}' /proc/$HP/stat)
target/release/herald-loadgen storage --target 127.0.0.1:7501 --redis 127.0.0.1:6601 --users 10000 --per-user 10 --followers 0 2>&1 | grep -i "inbox\|s " | head -3
c1=$(awk '{print $14+$15}' /proc/$HP/stat)
echo "herald cpu ticks: $((c1-c0)) (1 tick = 10 ms) for 100000 notifications"
kill $HP; wait $HP 2>/dev/null
redis-cli -p 6602 shutdown nosave >/dev/null 2>&1; redis-cli -p 6601 shutdown nosave >/dev/null 2>&1
rm -rf $D
