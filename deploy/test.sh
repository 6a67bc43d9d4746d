#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (redis-server,
# chromium, Node.js and the browser client's TypeScript compiler),
# then unit, property, crash and integration tests (the harness starts its
# own redis-server and herald processes on free ports), then the format and
# lint checks, and closes with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/ensure-deps.sh --with-browser
# The browser client's compiler (its committed build is checked against it).
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
# The contracts' reference validators (@asyncapi/parser, swagger-parser).
(cd tests/validators && npm ci --no-audit --no-fund --loglevel=error)
export HERALD_REQUIRE_NODE=1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo build --workspace --all-targets
# Every test runs even after one fails; the status is kept for the end.
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=1
cargo fmt --all -- --check || status=1
cargo clippy --workspace --all-targets -- -D warnings || status=1
failed="$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort -u | tr '\n' ' ' || true)"
if [ -n "$failed" ]; then
    echo "failed tests: $failed"
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
