#!/usr/bin/env bash
# Slow-client attacks with Debian's slowhttptest against waygate on loopback:
# slow headers (slowloris), slow body (R-U-Dead-Yet) and slow read, each with
# CONNS connections for LENGTH seconds. An nginx origin serves a small page
# and a 1 MiB file behind waygate (default limits).
#
#   cargo build --release && bench/slowhttptest.sh
#
# Prints, per attack: slow connections open at most, closed by the gateway,
# whether slowhttptest's probe was served all along, the median and worst
# latency of a normal client polling once a second, and waygate's peak RSS.
# Needs: slowhttptest, nginx, curl (apt-get install slowhttptest nginx curl).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
CONNS="${CONNS:-1000}"
LENGTH="${LENGTH:-30}"
work="$(mktemp -d)"
echo "work dir: $work" >&2
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

chmod 755 "$work"
mkdir -p "$work/www"
echo "hello" > "$work/www/index.html"
head -c 1048576 /dev/zero > "$work/www/big"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18181;
    root $work/www;
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

cat > "$work/waygate.toml" <<TOML
[[listener]]
name = "public"
listen = "127.0.0.1:18190"

[access_log]
target = "off"

[upstream.origin]
servers = ["127.0.0.1:18181"]

[[route]]
upstream = "origin"
TOML
"$here/target/release/waygate" --log-level warn run --config "$work/waygate.toml" --workers 1 &
wg=$!
pids+=($wg)
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18190/ && break; sleep 0.1; done

# A normal client: one request a second, its latency in ms.
poll() {
  local out="$1"
  : > "$out"
  while :; do
    curl -s -o /dev/null -m 10 -w '%{http_code} %{time_total}\n' http://127.0.0.1:18190/ >> "$out" || echo "000 10" >> "$out"
    sleep 1
  done
}

run() {
  local name="$1"
  shift
  poll "$work/$name.poll" &
  local poller=$!
  slowhttptest "$@" -c "$CONNS" -r 200 -l "$LENGTH" -p 3 -g -o "$work/$name" > "$work/$name.out" 2>&1 || true
  kill "$poller" 2>/dev/null || true
  wait "$poller" 2>/dev/null || true
  # CSV: seconds,closed,pending,connected,service available (the probe's
  # status, 0 when it got no answer)
  awk -F, -v name="$name" '
    NR > 1 { if ($4 > maxc) maxc = $4; closed = $2; if ($5 == 0 || $5 == "NO") down++ }
    END { printf "%-12s max open %5d  closed by gateway %5d  probe unavailable in %d of %d samples\n", name, maxc, closed, down, NR - 1 }
  ' "$work/$name.csv"
  sort -n -k2 "$work/$name.poll" | awk -v name="$name" '
    { t[NR] = $2 * 1000; if ($1 != 200) bad++ }
    END { printf "%-12s normal client: %d requests, %d failed, median %.1f ms, worst %.1f ms\n", "", NR, bad, t[int((NR + 1) / 2)], t[NR] }
  '
}

run slow-headers -H -i 5 -u http://127.0.0.1:18190/
run slow-body -B -i 5 -s 8192 -u http://127.0.0.1:18190/
run slow-read -X -k 3 -n 5 -w 512 -y 1024 -z 32 -u http://127.0.0.1:18190/big
echo "waygate peak RSS: $(awk '/VmHWM/ { print $2, $3 }' "/proc/$wg/status")"
