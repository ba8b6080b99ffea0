#!/usr/bin/env bash
# Builds waygate in release mode and measures it beside nginx, HAProxy and
# Caddy with the shared rig (../shared/bench/proxy-bench.sh). Environment
# variables are passed through (RUNS, CONNS, DURATION, TARGETS, OUT_DIR, ...).
#   bench/run.sh                       # 3 rounds, c=64 and c=256
#   RUNS=5 bench/run.sh
#   WAYGATE_WORKERS=2 bench/run.sh     # waygate with two worker threads
#   PGO=1 bench/run.sh                 # the profile-guided build (bench/pgo.sh)
#   PGO=1 BOLT=1 bench/run.sh          # the same, its code laid out by BOLT
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rig="$root/../shared/bench/proxy-bench.sh"
[ -x "$rig" ] || { echo "bench/run.sh: $rig not found" >&2; exit 2; }
# OUT_DIR is the rig's output directory, but to cargo it is the build
# scripts' one: keep it away from the build.
if [ "${PGO:-0}" = 1 ]; then
  env -u OUT_DIR "$root/bench/pgo.sh"
  export WAYGATE_BIN="$root/target/pgo/release/waygate"
  if [ "${BOLT:-0}" = 1 ]; then
    export WAYGATE_BIN="$root/target/pgo/release/waygate-bolt"
  fi
else
  env -u OUT_DIR cargo build --release --manifest-path "$root/Cargo.toml" -p waygate
fi
export PROXY_NAME="${PROXY_NAME:-waygate}"
export PROXY_URL="${PROXY_URL:-http://127.0.0.1:8090/}"
export PROXY_CMD="exec $root/bench/waygate-cmd.sh"
export TARGETS="${TARGETS:-direct nginx haproxy caddy custom}"
export RUNS="${RUNS:-3}"
exec "$rig"
