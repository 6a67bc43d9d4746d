#!/usr/bin/env bash
# Installs what Herald needs on a Debian machine when it is missing:
# redis-server (from Debian's packages), curl, iproute2 (the nemesis
# tests' network namespaces), and with --with-browser Debian's
# chromium (the test suite renders the load report and drives the demo page
# in it) and Node.js with npm (the browser client's tests; Node.js 20.10 or
# newer, for its WebSocket client). The Rust toolchain must already be
# there (rustup); Debian's own cargo is too old for this workspace.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with rustup (https://rustup.rs), 1.85 or newer" >&2
    exit 1
fi

want=()
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v curl >/dev/null 2>&1 || want+=(curl)
# `ip netns` and veth pairs: the nemesis tests' network partitions.
command -v ip >/dev/null 2>&1 || want+=(iproute2)
if [ "${1:-}" = "--with-browser" ]; then
    command -v chromium >/dev/null 2>&1 || want+=(chromium)
    command -v node >/dev/null 2>&1 || want+=(nodejs)
    command -v npm >/dev/null 2>&1 || want+=(npm)
    # promtool: the test suite checks the alert rules and the /metrics text.
    command -v promtool >/dev/null 2>&1 || want+=(prometheus)
fi
if [ "${#want[@]}" -gt 0 ]; then
    echo "installing ${want[*]}..." >&2
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
# A Debian install starts a system Redis on 6379 on some machines; Herald's
# scripts never rely on it.
command -v redis-server >/dev/null
if [ "${1:-}" = "--with-browser" ]; then
    v="$(node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.stdout.write(String(a * 100 + b))')"
    if [ "$v" -lt 2010 ]; then
        echo "error: Node.js $(node --version) is too old for the browser client's tests (20.10 or newer: its WebSocket client)" >&2
        exit 1
    fi
fi
