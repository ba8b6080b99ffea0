#!/usr/bin/env bash
# Why a slower proxy also spends more kernel time per request: wake-ups.
# Runs one proxy on CPU 0 (the load, h2load, and the nginx origin on CPU
# 1, as in cpu-split.sh) and counts, over N requests:
#   - the proxy's user and kernel CPU per request (/proc/PID/stat);
#   - the wake-ups of sleeping tasks started on CPU 0 (perf's
#     sched:sched_waking): a proxy write that finds the reader (h2load or
#     the origin) asleep must wake it;
#   - the interrupts between processors CPU 1 receives (RES and CAL in
#     /proc/interrupts): what such a wake-up across cores costs.
#   bench/wakeups.sh                      # waygate, then nginx, ROUNDS times
#   SLOW=100 bench/wakeups.sh             # nginx slowed down by 100 regex
#                                         # locations tried per request
#   LOAD="--h1 -c 256" N=300000 bench/wakeups.sh
# Needs nginx, h2load, taskset and perf (linux-perf). Loopback only; every
# process started here is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
BIN="${BIN:-$root/target/release/waygate}"
N="${N:-200000}"
ROUNDS="${ROUNDS:-2}"
SLOW="${SLOW:-0}"
read -ra load <<< "${LOAD:---h1 -c 64}"
for t in nginx h2load taskset perf; do
  command -v "$t" >/dev/null || { echo "wakeups.sh: $t not found" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "wakeups.sh: $BIN not built (cargo build --release)" >&2; exit 2; }
W="$(mktemp -d /tmp/waygate-wakeups.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

write_origin_config "$W/origin.conf" "$W" 9401 9402
# nginx as the proxy. SLOW adds regex locations that never match, so each
# request costs more user time and nothing else (no syscall, no I/O).
slow=""
for i in $(seq "$SLOW"); do slow="$slow location ~ ^/x$i(a|b)+c.*d\$ { return 404; }"; done
cat > "$W/proxy.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $W/proxy.pid; error_log $W/proxy.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy; fastcgi_temp_path $W/tmp/fcgi;
  uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;
  upstream o { server 127.0.0.1:9401; server 127.0.0.1:9402; keepalive 256; }
  server { listen 127.0.0.1:9410; $slow location / { proxy_pass http://o; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
NGINX
write_waygate_config "$W/waygate.toml" 127.0.0.1:9412 127.0.0.1:9401 127.0.0.1:9402
taskset -c 1 nginx -c "$W/origin.conf" & pids+=($!)
taskset -c 0 nginx -c "$W/proxy.conf" & ngx=$!; pids+=($ngx)
taskset -c 0 "$BIN" --log-level warn run --config "$W/waygate.toml" --workers 1 >"$W/waygate.log" 2>&1 &
wg=$!; pids+=($wg)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9412/ >/dev/null 2>&1 && break; sleep 0.1; done

ipis() { awk '/^ *(RES|CAL):/ { s += $3 } END { print s }' /proc/interrupts; }
# One measurement of the proxy with pid $2 at url $3, named $1.
measure() {
  local name=$1 pid=$2 url=$3 u0 s0 u1 s1 i0 i1 rps sleeper
  taskset -c 1 h2load "${load[@]}" -n 20000 "$url" >/dev/null
  # perf stat ends with its command: a sleep killed after the load.
  perf stat -x, -e sched:sched_waking -C 0 -o "$W/perf.txt" -- sleep 3600 >/dev/null 2>&1 &
  local ps=$!
  sleep 0.5
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  i0=$(ipis)
  rps=$(taskset -c 1 h2load "${load[@]}" -n "$N" "$url" | awk '/^finished/ {print $4}')
  i1=$(ipis)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  sleeper=$(pgrep -P "$ps" sleep || true)
  [ -n "$sleeper" ] && kill "$sleeper"
  wait "$ps" 2>/dev/null || true
  local wakes
  wakes=$(awk -F, '/sched_waking/ {print $1}' "$W/perf.txt")
  python3 -c "
tck = $(getconf CLK_TCK)
print(f'{\"$name\":14} {$rps:8.0f} {($u1-$u0)/tck*1e6/$N:9.2f} {($s1-$s0)/tck*1e6/$N:9.2f} {$wakes/$N:14.3f} {($i1-$i0)/$N:12.3f}')"
}
nginx_name="nginx"
[ "$SLOW" != 0 ] && nginx_name="nginx+$SLOW"
printf '%-14s %8s %9s %9s %14s %12s\n' proxy req/s "user us" "sys us" "wake-ups CPU0" "IPIs CPU1"
for _ in $(seq "$ROUNDS"); do
  measure waygate "$wg" http://127.0.0.1:9412/
  measure "$nginx_name" "$ngx" http://127.0.0.1:9410/
done
echo "(per request; $N requests per row, h2load ${load[*]})"
