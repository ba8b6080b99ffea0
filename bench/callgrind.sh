#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a
# repeatable number on a noisy machine, for before/after comparisons of
# hot-path changes (wall-clock A/B runs move by ±10 % between runs here).
#   bench/callgrind.sh                      # target/release/waygate
#   BIN=/tmp/waygate-old bench/callgrind.sh # another build
#   N=20000 bench/callgrind.sh
# Needs valgrind, nginx (the origin) and h2load (nghttp2-client). Loopback only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
BIN="${BIN:-$root/target/release/waygate}"
N="${N:-10000}"
W="$(mktemp -d /tmp/waygate-callgrind.XXXXXX)"
mkdir -p "$W/tmp"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
cat > "$W/origin.conf" <<NGINX
worker_processes 1; daemon off; pid $W/origin.pid; error_log $W/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy; fastcgi_temp_path $W/tmp/fcgi;
  uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;
  server { listen 127.0.0.1:9101; listen 127.0.0.1:9102; location / { return 200 "hello\n"; } } }
NGINX
write_waygate_config "$W/waygate.toml" 127.0.0.1:8190 127.0.0.1:9101 127.0.0.1:9102
nginx -c "$W/origin.conf" & pids+=($!)
valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$W/callgrind.out" \
  "$BIN" --log-level warn run --config "$W/waygate.toml" --workers 1 >"$W/valgrind.log" 2>&1 &
vg=$!; pids+=($vg)
for _ in $(seq 300); do curl -sf http://127.0.0.1:8190/ >/dev/null 2>&1 && break; sleep 0.1; done
# Warm up (connections pooled, caches filled), then count N requests only.
h2load --h1 -n 2000 -c 8 http://127.0.0.1:8190/ >/dev/null
callgrind_control -z "$vg" >/dev/null
h2load --h1 -n "$N" -c 8 http://127.0.0.1:8190/ >"$W/h2load.txt"
callgrind_control -d "$vg" >/dev/null
grep -E "succeeded" "$W/h2load.txt" | sed 's/^/# /'
out=$(ls -t "$W"/callgrind.out.* | head -1)
total=$(grep -E "^(summary|totals):" "$out" | head -1 | awk '{print $2}')
echo "instructions: $total for $N requests = $((total / N)) per request ($(basename "$BIN"))"
