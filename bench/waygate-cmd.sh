#!/usr/bin/env bash
# PROXY_CMD for ../shared/bench/proxy-bench.sh: waygate with one worker thread,
# access log off, round robin over the rig's two origins (like the peers).
# Usage (from the repository root, after `cargo build --release`):
#   PROXY_NAME=waygate PROXY_URL=http://127.0.0.1:8090/ \
#   PROXY_CMD="exec $PWD/bench/waygate-cmd.sh" TARGETS="nginx haproxy custom" \
#   RUNS=3 DURATION=8s ../shared/bench/proxy-bench.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cat > "$BENCH_WORK/waygate.toml" <<TOML
[[listener]]
name = "bench"
listen = "127.0.0.1:8090"

[access_log]
target = "off"

[[route]]
upstream = "origin"

[upstream.origin]
servers = ["$BENCH_UPSTREAM1", "$BENCH_UPSTREAM2"]
balance = "round_robin"
TOML
exec "$here/target/release/waygate" --log-level warn run --config "$BENCH_WORK/waygate.toml" --workers "${WAYGATE_WORKERS:-1}"
