#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) from its seed corpus.
# Exit 1 if any target finds a crash (the input is left in artifacts/).
#   fuzz/run.sh          # 60 s each
#   fuzz/run.sh 10       # the smoke run of .ci/run
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
targets=(config duration route forwarding header_values request)
cargo +nightly fuzz build
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 -timeout=10 >"$log" 2>&1; then
    stats="$(grep -E '^#[0-9]+.*DONE' "$log" | tail -1)"
    echo "fuzz $t: ok ${secs}s: ${stats:-no stats}"
  else
    echo "fuzz $t: FAILED (see fuzz/artifacts/$t):"
    grep -E 'panicked|ERROR|SUMMARY|Test unit' "$log" | head -10
    failed=1
  fi
  rm -f "$log"
done
exit "$failed"
