#!/usr/bin/env bash
# Large bodies: a SIZE (default 1 GiB) download and upload, direct to an
# nginx origin and through waygate (one worker), RUNS times each, plus
# waygate's peak RSS, each core's busy share and waygate's CPU time per
# GiB; downloads also through nginx as the proxy. waygate (and the nginx
# proxy) run on CPU 0, the nginx origin and curl on CPU 1.
#
#   cargo build --release && bench/large-body.sh
#   BIN=/tmp/waygate-old RUNS=5 bench/large-body.sh
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
# A peer for downloads: nginx as the proxy, on waygate's core, with its
# default proxy buffers. (Not for uploads: the origin answers before it
# reads the body, and nginx then drops the rest of the body instead of
# forwarding it, so it moves half the bytes waygate moves.)
cat > "$work/proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/proxy.pid;
error_log $work/proxy-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_max_body_size 0;
  upstream origin { server 127.0.0.1:18281; keepalive 16; }
  server {
    listen 127.0.0.1:18282;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
taskset -c 0 nginx -c "$work/proxy.conf" -p "$work" &
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
taskset -c 0 "${BIN:-$here/target/release/waygate}" --log-level warn run --config "$work/waygate.toml" --workers 1 &
wg=$!
pids+=($wg)
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18290/sink && break; sleep 0.1; done

# MiB/s of one transfer.
down() { taskset -c 1 curl -fs -o /dev/null -w '%{speed_download}' "$1/big" | awk '{ printf "%.0f", $1 / 1048576 }'; }
up() { taskset -c 1 curl -fs -o /dev/null -X POST -H 'content-type: application/octet-stream' -T "$work/www/big" -w '%{speed_upload}' "$1/sink" | awk '{ printf "%.0f", $1 / 1048576 }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# Busy and idle jiffies of CPU 0 and CPU 1, and waygate's own CPU ticks.
ticks() {
  awk '$1 == "cpu0" || $1 == "cpu1" { printf "%d %d ", $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
  awk '{ print $14 + $15 }' "/proc/$wg/stat"
}
# Which core limits the transfers through waygate: each core's busy share
# and waygate's CPU time per GiB, over all of them.
# Arguments: the summed deltas of ticks' five numbers.
report_cpu() {
  awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" -v w="$5" -v n="$RUNS" \
    -v size="$SIZE" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    printf "      busy through waygate: CPU 0 (waygate) %d%%, CPU 1 (curl, origin) %d%%; waygate CPU %.2f s per GiB\n",
      100 * b0 / (b0 + i0 + 1), 100 * b1 / (b1 + i1 + 1), w / hz / (n * size / 1073741824) }'
}

# The first transfer of the sparse file runs at a fraction of the speed
# of the later ones: warm up both paths once.
for dir in down up; do
  $dir http://127.0.0.1:18281 >/dev/null
  $dir http://127.0.0.1:18290 >/dev/null
done
peer=""
for _ in $(seq "$RUNS"); do peer="$peer $(down http://127.0.0.1:18282)"; done
for dir in down up; do
  d="" w="" sum=(0 0 0 0 0)
  for _ in $(seq "$RUNS"); do
    d="$d $($dir http://127.0.0.1:18281)"
    read -ra t0 <<< "$(ticks)"
    w="$w $($dir http://127.0.0.1:18290)"
    read -ra t1 <<< "$(ticks)"
    for k in 0 1 2 3 4; do sum[k]=$((sum[k] + t1[k] - t0[k])); done
  done
  dm=$(echo "$d" | median)
  wm=$(echo "$w" | median)
  printf '%-5s direct MiB/s:%s (median %s)  waygate MiB/s:%s (median %s)  ratio %.2f\n' \
    "$dir" "$d" "$dm" "$w" "$wm" "$(echo "$wm $dm" | awk '{ print $1 / $2 }')"
  report_cpu "${sum[@]}"
  if [ "$dir" = down ]; then
    pm=$(echo "$peer" | median)
    printf '      nginx as the proxy MiB/s:%s (median %s)  waygate / nginx %.2f\n' \
      "$peer" "$pm" "$(echo "$wm $pm" | awk '{ print $1 / $2 }')"
  fi
done
echo "waygate peak RSS: $(awk '/VmHWM/ { print $2, $3 }' "/proc/$wg/status")"
