#!/usr/bin/env bash
# The connect cost of 15,000 followers of a celebrity whose outbox holds
# POSTS posts they all received (read cursor at the newest) but never
# marked read in their feed, so every hello counts them unread: a private
# redis-server on port 6404, a release herald of REPO on 127.0.0.1:7404,
# then herald-loadgen connecting 15,000 clients. Prints herald's CPU
# seconds during the loadgen run.
#
#   loadtest/bench-storm-pulled.sh . 1000
set -euo pipefail
repo=$(cd "$1" && pwd) posts=$2
dir=/tmp/herald-storm; mkdir -p $dir
redis-cli -p 6404 ping >/dev/null 2>&1 || redis-server --port 6404 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile $dir/redis.log
sleep 0.3
pkill -f "listen 127.0.0.1:7404" || true; sleep 1
redis-cli -p 6404 flushall >/dev/null; rm -rf $dir/data
cd $repo
env HERALD_LOG=warn HERALD_CELEBRITY__THRESHOLD=1000 HERALD_AGGREGATION__THRESHOLD=1000000 target/release/herald --config config/default.toml --listen 127.0.0.1:7404 \
  --redis redis://127.0.0.1:6404 --data-dir $dir/data > $dir/herald.out 2>&1 &
hp=$!
for _ in $(seq 50); do curl -sf 127.0.0.1:7404/readyz >/dev/null && break; sleep 0.2; done
python3 - $posts <<'PY'
import http.client, json, sys, time
posts = int(sys.argv[1]); C = 9_000_000
c = http.client.HTTPConnection("127.0.0.1", 7404, timeout=60)
def call(m, p, b=None):
    c.request(m, p, body=json.dumps(b).encode() if b is not None else None, headers={"content-type": "application/json"})
    r = c.getresponse(); out = r.read()
    if r.status >= 300: sys.exit(f"{p}: {r.status} {out[:200]}")
call("POST", "/v1/graph/follows", {"follows": [[u, C] for u in range(1, 15001)]})
ev = [{"kind": "post", "actor": C, "object": f"post:{i}", "text": f"post {i}"} for i in range(posts)]
for i in range(0, len(ev), 500): call("POST", "/v1/events", {"events": ev[i:i+500]})
PY
for _ in $(seq 100); do n=$(redis-cli -p 6404 zcard "h:{u:9000000}:outbox"); [ "$n" -ge "$posts" ] && break; sleep 0.2; done
last=$(redis-cli -p 6404 zrange "h:{u:9000000}:outbox" -1 -1 withscores | tail -1)
# Every follower received and acked them all: cursor at the newest.
for u in $(seq 1 15000); do echo "HSET h:{u:$u}:seen 9000000 $last"; done | redis-cli -p 6404 --pipe >/dev/null
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }
c0=$(cpu $hp)
timeout 300 target/release/herald-loadgen run --scenario custom --clients 15000 --rate 1 --duration 2 \
  --target 127.0.0.1:7404 --herald-pid $hp --out $dir/reports > $dir/lg.out 2>&1 || true
c1=$(cpu $hp)
echo "outbox $(redis-cli -p 6404 zcard 'h:{u:9000000}:outbox') posts; herald cpu during the run: $(awk -v a=$c1 -v b=$c0 'BEGIN{print a-b}') s"
grep -E "unexpected|lost  |verdict" $dir/lg.out | head -3
kill $hp
