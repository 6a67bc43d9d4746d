#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (redis-server),
# then unit, property, crash and integration tests (the harness starts its
# own redis-server and herald processes on free ports), then the format and
# lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/ensure-deps.sh

cargo build --workspace --all-targets
cargo test --workspace
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
