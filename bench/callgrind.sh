#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a
# repeatable number on a noisy machine, for before/after comparisons of
# hot-path changes (wall-clock A/B runs move by ±10 % between runs here).
#   bench/callgrind.sh                      # target/release/waygate
#   BIN=/tmp/waygate-old bench/callgrind.sh # another build
#   N=20000 bench/callgrind.sh
#   LOAD="-c 64 -m 10" bench/callgrind.sh   # h2c, 640 streams in flight
#   FEATURES=1 bench/callgrind.sh           # access log, health checks, rate
#                                           # limit, admin on (waygate-cmd.sh)
#   KEEP=/tmp/cg bench/callgrind.sh         # the profile in that directory
#   CACHE=1 bench/callgrind.sh              # also simulate the caches: data
#                                           # misses per request, by function
# Needs valgrind, nginx (the origin) and h2load (nghttp2-client). Loopback only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
BIN="${BIN:-$root/target/release/waygate}"
N="${N:-10000}"
# h2load's load shape: HTTP/1.1 over 8 connections by default.
LOAD="${LOAD:---h1 -c 8}"
cache=()
[[ "${CACHE:-0}" == 1 ]] && cache=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,8,64)
W="${KEEP:-$(mktemp -d /tmp/waygate-callgrind.XXXXXX)}"; mkdir -p "$W"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
write_origin_config "$W/origin.conf" "$W" 9101 9102
write_waygate_config "$W/waygate.toml" 127.0.0.1:8190 127.0.0.1:9101 127.0.0.1:9102
if [[ "${FEATURES:-0}" == 1 ]]; then
  add_waygate_features "$W/waygate.toml" "$W/access.log" 127.0.0.1:8191
fi
nginx -c "$W/origin.conf" & pids+=($!)
valgrind --tool=callgrind "${cache[@]}" --compress-strings=no --callgrind-out-file="$W/callgrind.out" \
  "$BIN" --log-level warn run --config "$W/waygate.toml" --workers 1 >"$W/valgrind.log" 2>&1 &
vg=$!; pids+=($vg)
for _ in $(seq 300); do curl -sf http://127.0.0.1:8190/ >/dev/null 2>&1 && break; sleep 0.1; done
# Warm up (connections pooled, caches filled), then count N requests only.
# shellcheck disable=SC2086 # LOAD is a list of arguments
h2load $LOAD -n 2000 http://127.0.0.1:8190/ >/dev/null
callgrind_control -z "$vg" >/dev/null
# shellcheck disable=SC2086
h2load $LOAD -n "$N" http://127.0.0.1:8190/ >"$W/h2load.txt"
callgrind_control -d "$vg" >/dev/null
grep -E "succeeded" "$W/h2load.txt" | sed 's/^/# /'
out=$(ls -t "$W"/callgrind.out.* | head -1)
total=$(grep -E "^(summary|totals):" "$out" | head -1 | awk '{print $2}')
echo "instructions: $total for $N requests = $((total / N)) per request ($(basename "$BIN"), h2load $LOAD)"
if [[ ${#cache[@]} -gt 0 ]]; then
  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  grep -E "^(summary|totals):" "$out" | head -1 | awk -v n="$N" '{
    printf "per request: I1 misses %.0f, D1 misses %.0f (read %.0f, write %.0f), L2 misses %.0f (instr %.0f, data %.0f)\n",
      $5/n, ($6+$7)/n, $6/n, $7/n, ($8+$9+$10)/n, $8/n, ($9+$10)/n }'
  echo "by function (D1 misses): callgrind_annotate --sort=D1mr,D1mw $out"
fi
