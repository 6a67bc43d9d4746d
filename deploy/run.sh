#!/usr/bin/env bash
# Starts one Herald node for local use: installs redis-server if missing,
# starts a private Redis (unless HERALD_REDIS__URL is set), builds the
# release binary and runs it with config/default.toml. Extra arguments go
# to herald (for example --listen 127.0.0.1:7500).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/ensure-deps.sh

if [ -z "${HERALD_REDIS__URL:-}" ]; then
    port="${HERALD_PRIVATE_REDIS_PORT:-6390}"
    mkdir -p data/redis
    if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
        redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/data/redis" \
            --save "" --appendonly yes --daemonize yes \
            --pidfile "$PWD/data/redis/redis.pid" --logfile "$PWD/data/redis/redis.log"
        for _ in $(seq 50); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
    export HERALD_REDIS__URL="redis://127.0.0.1:$port"
    echo "private redis at $HERALD_REDIS__URL (stop it with: redis-cli -p $port shutdown)"
fi

cargo build --release --bin herald
exec target/release/herald --config config/default.toml "$@"
