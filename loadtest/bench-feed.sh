#!/usr/bin/env bash
# A feed page's time for a user who follows <celebrities> celebrities
# (<posts> posts each, on the pull path) and has <own> notifications of
# their own: a private redis-server on port 6403, a fresh release herald on
# 127.0.0.1:7403, then <pages> GETs of /v1/users/U/notifications?limit=50
# over one keep-alive connection (python3's http.client), timed each.
# Prints p50/p90/p99/max in ms and the page's unread count.
#
#   cargo build --release -p herald
#   loadtest/bench-feed.sh 20 50 100 500
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BENCH_DIR:-/tmp/herald-bench-feed}"
celebs=$1 posts=$2 own=$3 pages=$4
mkdir -p "$dir"
redis-cli -p 6403 ping >/dev/null 2>&1 ||
    redis-server --port 6403 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile "$dir/redis.log"
sleep 0.3
pkill -f "listen 127.0.0.1:7403" || true
sleep 1
redis-cli -p 6403 flushall >/dev/null
rm -rf "$dir/data"
env HERALD_LOG=warn HERALD_CELEBRITY__THRESHOLD=100 HERALD_AGGREGATION__THRESHOLD=1000000 \
    "${@:5}" target/release/herald --config config/default.toml --listen 127.0.0.1:7403 \
    --redis redis://127.0.0.1:6403 --data-dir "$dir/data" >"$dir/herald.out" 2>&1 &
hp=$!
trap 'kill $hp 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf 127.0.0.1:7403/readyz >/dev/null && break; sleep 0.2; done
timeout 600 python3 - "$celebs" "$posts" "$own" "$pages" <<'PY'
import http.client, json, sys, time
celebs, posts, own, pages = map(int, sys.argv[1:5])
U = 5
c = http.client.HTTPConnection("127.0.0.1", 7403, timeout=30)
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, path, body=data, headers={"content-type": "application/json"})
    r = c.getresponse()
    out = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {out[:200]}")
    return json.loads(out) if out else None
# Celebrities 1000.. with 150 followers each (U among them): the import
# puts them on the pull path.
follows = [[U, 1000 + k] for k in range(celebs)]
follows += [[10_000 + f, 1000 + k] for k in range(celebs) for f in range(150)]
call("POST", "/v1/graph/follows", {"follows": follows})
events = [{"kind": "post", "actor": 1000 + k, "object": f"post:{k}-{p}", "text": f"post {p}"}
          for p in range(posts) for k in range(celebs)]
events += [{"kind": "like", "actor": 20_000 + i, "recipient": U, "object": f"post:own{i}"} for i in range(own)]
for i in range(0, len(events), 500):
    call("POST", "/v1/events", {"events": events[i:i + 500]})
want = celebs * posts + own
deadline = time.time() + 120
while True:
    unread = call("GET", f"/v1/users/{U}/notifications?limit=1")["unread"]
    if unread >= want or time.time() > deadline:
        break
    time.sleep(0.2)
took = []
for _ in range(pages):
    t = time.perf_counter()
    page = call("GET", f"/v1/users/{U}/notifications?limit=50")
    took.append((time.perf_counter() - t) * 1000)
took.sort()
q = lambda p: took[min(len(took) - 1, int(p * len(took)))]
print(f"feed page ms: p50 {q(0.5):.2f}, p90 {q(0.9):.2f}, p99 {q(0.99):.2f}, max {took[-1]:.2f} "
      f"(n = {pages}, {len(page['notifications'])} per page, unread {unread} of {want} expected)")
PY
