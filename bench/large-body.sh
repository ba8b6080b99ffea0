#!/usr/bin/env bash
# Large bodies: a SIZE (default 1 GiB) download and upload, direct to an
# nginx origin and through waygate (one worker), RUNS times each, plus
# waygate's peak RSS. waygate runs on CPU 0, nginx and curl on CPU 1.
#
#   cargo build --release && bench/large-body.sh
#
# Needs: nginx, curl, taskset (util-linux).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
SIZE="${SIZE:-1073741824}"
RUNS="${RUNS:-3}"
work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www"
truncate -s "$SIZE" "$work/www/big"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:18281;
    root $work/www;
    location /sink { return 200 "ok\n"; }
  }
}
CONF
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

cat > "$work/waygate.toml" <<TOML
[[listener]]
name = "public"
listen = "127.0.0.1:18290"

[access_log]
target = "off"

[upstream.origin]
servers = ["127.0.0.1:18281"]

[[route]]
upstream = "origin"
TOML
taskset -c 0 "$here/target/release/waygate" --log-level warn run --config "$work/waygate.toml" --workers 1 &
wg=$!
pids+=($wg)
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18290/sink && break; sleep 0.1; done

# MiB/s of one transfer.
down() { taskset -c 1 curl -fs -o /dev/null -w '%{speed_download}' "$1/big" | awk '{ printf "%.0f", $1 / 1048576 }'; }
up() { taskset -c 1 curl -fs -o /dev/null -X POST -H 'content-type: application/octet-stream' -T "$work/www/big" -w '%{speed_upload}' "$1/sink" | awk '{ printf "%.0f", $1 / 1048576 }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for dir in down up; do
  d="" w=""
  for _ in $(seq "$RUNS"); do
    d="$d $($dir http://127.0.0.1:18281)"
    w="$w $($dir http://127.0.0.1:18290)"
  done
  dm=$(echo "$d" | median)
  wm=$(echo "$w" | median)
  printf '%-5s direct MiB/s:%s (median %s)  waygate MiB/s:%s (median %s)  ratio %.2f\n' \
    "$dir" "$d" "$dm" "$w" "$wm" "$(echo "$wm $dm" | awk '{ print $1 / $2 }')"
done
echo "waygate peak RSS: $(awk '/VmHWM/ { print $2, $3 }' "/proc/$wg/status")"
