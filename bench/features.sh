#!/usr/bin/env bash
# What the features cost: nginx and waygate at c=64, 3 rounds of 5 s,
# alternating WAYGATE_FEATURES=0 and 1 (see waygate-cmd.sh), RUNS_EACH times.
# Usage (from the repository root, after `cargo build --release`):
#   bench/features.sh            # prints the h1 summary rows of each run
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out_base="${OUT_BASE:-$(mktemp -d /tmp/waygate-features.XXXXXX)}"
mkdir -p "$out_base"
for i in $(seq 1 "${RUNS_EACH:-2}"); do
  for f in 0 1; do
    out="$out_base/features-$f-$i"
    WAYGATE_FEATURES=$f PROXY_NAME=waygate PROXY_URL=http://127.0.0.1:8090/ \
      PROXY_CMD="exec $root/bench/waygate-cmd.sh" TARGETS="nginx custom" CONNS=64 \
      RUNS=3 DURATION=5s QUIET_WAIT=20 OUT_DIR="$out" \
      "$root/../shared/bench/proxy-bench.sh" > "$out.log" 2>&1 || echo "run failed: $out.log"
    echo "features=$f run=$i"
    grep -E "^h1 " "$out/summary.txt"
  done
done
