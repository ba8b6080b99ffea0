#!/usr/bin/env bash
# Everything issue #4 measures, in one command: the build, then
#   1. the shared rig beside nginx, HAProxy and Caddy: HTTP/1.1 at c=64 and
#      c=256 and h2c (h2load -c64 -m10); req/s, p99, peak RSS, CPU per request
#      (bench/run.sh);
#   2. RSS holding 10,000 idle keep-alive connections, beside nginx
#      (bench/idle.sh);
#   3. 1 GiB down and up, against direct and nginx (bench/large-body.sh);
#   4. what the features cost: access log, health checks, a rate-limit
#      policy and the admin listener, in interleaved rounds
#      (FEATURES2=1 bench/cpu-split.sh).
# Each part's full output is kept in OUT (printed at the start); the end
# prints the lines that answer the issue's targets.
#   bench/full.sh                 # the profile-guided build (bench/pgo.sh)
#   PGO=0 bench/full.sh           # cargo build --release instead
#   RUNS=5 DURATION=10s bench/full.sh
# About 25 minutes on this 2-core machine with PGO. Needs what the parts
# need: nginx, haproxy, caddy, wrk, h2load (nghttp2-client), curl, python3.
# Loopback only; every part stops what it started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/waygate-full.XXXXXX)}"
mkdir -p "$OUT"
echo "bench/full.sh: output in $OUT"
if [ "${PGO:-1}" = 1 ]; then
  bin="$root/target/pgo/release/waygate"
else
  bin="$root/target/release/waygate"
fi

echo "== 1/4 the rig (bench/run.sh)"
PGO="${PGO:-1}" H2=1 PROXY_H2_URL=http://127.0.0.1:8090/ RUNS="${RUNS:-3}" \
  DURATION="${DURATION:-8s}" OUT_DIR="$OUT/rig" "$root/bench/run.sh" > "$OUT/rig.log" 2>&1 \
  || { echo "the rig failed: $OUT/rig.log" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench/full.sh: $bin was not built" >&2; exit 1; }

echo "== 2/4 idle connections (bench/idle.sh)"
WAYGATE_BIN="$bin" ROUNDS=3 "$root/bench/idle.sh" > "$OUT/idle.log" 2>&1 \
  || echo "idle.sh failed: $OUT/idle.log" >&2

echo "== 3/4 large bodies (bench/large-body.sh)"
BIN="$bin" RUNS=3 "$root/bench/large-body.sh" > "$OUT/large-body.log" 2>&1 \
  || echo "large-body.sh failed: $OUT/large-body.log" >&2

echo "== 4/4 the features' cost (FEATURES2=1 bench/cpu-split.sh)"
BIN="$bin" FEATURES2=1 ROUNDS=5 "$root/bench/cpu-split.sh" > "$OUT/features.log" 2>&1 \
  || echo "cpu-split.sh failed: $OUT/features.log" >&2

echo
echo "== results ($(basename "$bin"), $(git -C "$root" rev-parse --short HEAD))"
sed -n '/== medians/,$p' "$OUT/rig/summary.txt" 2>/dev/null || tail -30 "$OUT/rig.log"
echo
echo "-- idle keep-alive connections"
tail -8 "$OUT/idle.log"
echo
echo "-- large bodies"
grep -vE "^\s*$" "$OUT/large-body.log" | tail -6
echo
echo "-- features on (waygate2) against off (waygate), CPU per request"
grep -E "^(target|nginx|waygate)" "$OUT/features.log" | tail -7
