#!/usr/bin/env bash
# PROXY_CMD for ../shared/bench/proxy-bench.sh: waygate with one worker thread,
# access log off, round robin over the rig's two origins (like the peers).
# Usage (from the repository root, after `cargo build --release`):
#   PROXY_NAME=waygate PROXY_URL=http://127.0.0.1:8090/ \
#   PROXY_CMD="exec $PWD/bench/waygate-cmd.sh" TARGETS="nginx haproxy custom" \
#   RUNS=3 DURATION=8s ../shared/bench/proxy-bench.sh
# WAYGATE_FEATURES=1 turns on the access log (to a file), active health
# checks, a rate-limit policy on the route (per client IP, never reached)
# and the admin listener (metrics are always counted), to measure what they
# cost. WAYGATE_BIN picks another build (bench/pgo.sh makes
# target/pgo/release/waygate).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
log_target="off"
health=""
route_extra=""
features=""
if [ "${WAYGATE_FEATURES:-0}" = 1 ]; then
  log_target="$BENCH_WORK/access.log"
  health=$'\n[upstream.origin.health_check]\ninterval = "1s"\n'
  route_extra='rate_limit = "per_client"'
  features=$'[rate_limit.per_client]\nrate = 10000000\nper = "1s"\nburst = 10000000\nkey = "client_ip"\n\n[admin]\nlisten = "127.0.0.1:8091"\n'
fi
cat > "$BENCH_WORK/waygate.toml" <<TOML
[[listener]]
name = "bench"
listen = "127.0.0.1:8090"

[access_log]
target = "$log_target"

[[route]]
upstream = "origin"
$route_extra

$features
[upstream.origin]
servers = ["$BENCH_UPSTREAM1", "$BENCH_UPSTREAM2"]
balance = "round_robin"
$health
TOML
exec "${WAYGATE_BIN:-$here/target/release/waygate}" --log-level warn run --config "$BENCH_WORK/waygate.toml" --workers "${WAYGATE_WORKERS:-1}"
