#!/usr/bin/env bash
# Where a proxied request's CPU goes: user space (the proxy's own code) and
# kernel (sockets, loopback TCP, wake-ups), read from /proc/PID/stat of each
# proxy while it serves the same load, in interleaved rounds; and each
# proxy's peak RSS over the whole run (VmHWM).
#   bench/cpu-split.sh                 # HTTP/1.1, c=64: nginx vs waygate
#   H2=1 bench/cpu-split.sh            # h2c, -c64 -m10: HAProxy vs waygate
#   ROUNDS=5 N=300000 bench/cpu-split.sh
#   LOAD="--h1 -c 256" bench/cpu-split.sh   # h2load's load options
#   BIN2=target/pgo/release/waygate bench/cpu-split.sh   # a second build,
#                                      # interleaved in the same rounds
#   FEATURES2=1 bench/cpu-split.sh     # a second waygate (BIN2, else BIN)
#                                      # with issue #4's features on: access
#                                      # log to a file, health checks, a
#                                      # rate limit, the admin listener
# Each proxy runs alone on CPU 0, the load (h2load) and the origin (nginx,
# one worker) on CPU 1, as in ../shared/bench. Loopback only; every process
# started here is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
BIN="${BIN:-$root/target/release/waygate}"
FEATURES2="${FEATURES2:-0}"
BIN2="${BIN2:-}"
[ "$FEATURES2" = 1 ] && [ -z "$BIN2" ] && BIN2="$BIN"
ROUNDS="${ROUNDS:-3}"
N="${N:-200000}"
H2="${H2:-0}"
for t in nginx h2load taskset; do
  command -v "$t" >/dev/null || { echo "cpu-split.sh: $t not found" >&2; exit 2; }
done
[ "$H2" = 1 ] && { command -v haproxy >/dev/null || { echo "cpu-split.sh: haproxy not found" >&2; exit 2; }; }
[ -x "$BIN" ] || { echo "cpu-split.sh: $BIN not built (cargo build --release)" >&2; exit 2; }
W="$(mktemp -d /tmp/waygate-cpusplit.XXXXXX)"
mkdir -p "$W/tmp"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -f "$W/access.log"; }
trap cleanup EXIT
temp="client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy; fastcgi_temp_path $W/tmp/fcgi; uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;"
write_origin_config "$W/origin.conf" "$W" 9301 9302
cat > "$W/proxy.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $W/proxy.pid; error_log $W/proxy.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s; $temp
  upstream o { server 127.0.0.1:9301; server 127.0.0.1:9302; keepalive 256; }
  server { listen 127.0.0.1:9310; location / { proxy_pass http://o; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
NGINX
cat > "$W/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:9311 proto h2
  default_backend b
backend b
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:9301
  server s2 127.0.0.1:9302
HAP
write_waygate_config "$W/waygate.toml" 127.0.0.1:9312 127.0.0.1:9301 127.0.0.1:9302
taskset -c 1 nginx -c "$W/origin.conf" & pids+=($!)
if [ "$H2" = 1 ]; then
  peer=haproxy
  taskset -c 0 haproxy -db -f "$W/haproxy.cfg" & peer_pid=$!
  peer_url=http://127.0.0.1:9311/
  read -ra load <<< "${LOAD:--c 64 -m 10}"
else
  peer=nginx
  taskset -c 0 nginx -c "$W/proxy.conf" & peer_pid=$!
  peer_url=http://127.0.0.1:9310/
  read -ra load <<< "${LOAD:---h1 -c 64}"
fi
pids+=($peer_pid)
taskset -c 0 "$BIN" --log-level warn run --config "$W/waygate.toml" --workers 1 >"$W/waygate.log" 2>&1 &
wg=$!; pids+=($wg)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9312/ >/dev/null 2>&1 && break; sleep 0.1; done
if [ -n "$BIN2" ]; then
  write_waygate_config "$W/waygate2.toml" 127.0.0.1:9313 127.0.0.1:9301 127.0.0.1:9302
  [ "$FEATURES2" = 1 ] && add_waygate_features "$W/waygate2.toml" "$W/access.log" 127.0.0.1:9314
  taskset -c 0 "$BIN2" --log-level warn run --config "$W/waygate2.toml" --workers 1 >"$W/waygate2.log" 2>&1 &
  wg2=$!; pids+=($wg2)
  for _ in $(seq 100); do curl -sf http://127.0.0.1:9313/ >/dev/null 2>&1 && break; sleep 0.1; done
  taskset -c 1 h2load "${load[@]}" -n 20000 http://127.0.0.1:9313/ >/dev/null
fi
tck=$(getconf CLK_TCK)
# One measurement: N requests through the proxy with pid $1 at url $2;
# prints "req/s user_us sys_us minor_faults" per request.
measure() {
  local pid=$1 url=$2 u0 s0 f0 u1 s1 f1 rps
  read -r u0 s0 f0 < <(awk '{print $14, $15, $10}' "/proc/$pid/stat")
  rps=$(taskset -c 1 h2load "${load[@]}" -n "$N" "$url" | awk '/^finished/ {print $4}')
  read -r u1 s1 f1 < <(awk '{print $14, $15, $10}' "/proc/$pid/stat")
  python3 -c "print($rps, ($u1-$u0)/$tck*1e6/$N, ($s1-$s0)/$tck*1e6/$N, ($f1-$f0)/$N)"
}
# Warm up both (connections pooled).
taskset -c 1 h2load "${load[@]}" -n 20000 "$peer_url" >/dev/null
taskset -c 1 h2load "${load[@]}" -n 20000 http://127.0.0.1:9312/ >/dev/null
: > "$W/results"
for r in $(seq "$ROUNDS"); do
  echo "$peer $(measure "$peer_pid" "$peer_url")" >> "$W/results"
  echo "waygate $(measure "$wg" http://127.0.0.1:9312/)" >> "$W/results"
  if [ -n "$BIN2" ]; then
    echo "waygate2 $(measure "$wg2" http://127.0.0.1:9313/)" >> "$W/results"
  fi
done
python3 - "$W/results" "$peer" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
peer = sys.argv[2]
targets = [peer, "waygate"] + (["waygate2"] if any(x[0] == "waygate2" for x in rows) else [])
med = {}
print(f"{'target':8} {'req/s':>8} {'user us/req':>12} {'sys us/req':>11} {'total':>7} {'faults/req':>10}  (medians of {len(rows)//len(targets)} rounds)")
for t in targets:
    r = [list(map(float, x[1:])) for x in rows if x[0] == t]
    m = [statistics.median(c) for c in zip(*r)]
    med[t] = m
    print(f"{t:8} {m[0]:8.0f} {m[1]:12.2f} {m[2]:11.2f} {m[1]+m[2]:7.2f} {m[3]:10.4f}")
def ratio(a, b):
    w, p = med[a], med[b]
    print(f"{a}/{b}: user {w[1]/p[1]:.2f}x, sys {w[2]/p[2]:.2f}x, total {(w[1]+w[2])/(p[1]+p[2]):.2f}x")
ratio("waygate", peer)
if "waygate2" in med:
    ratio("waygate2", peer)
    ratio("waygate2", "waygate")
PY
# Peak resident memory over the whole run (warm-up and all rounds).
hwm() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
echo "peak RSS MB: $peer $(hwm "$peer_pid"), waygate $(hwm "$wg")$([ -n "$BIN2" ] && echo ", waygate2 $(hwm "$wg2")")"
[ -n "$BIN2" ] && echo "# waygate: $BIN, waygate2: $BIN2$([ "$FEATURES2" = 1 ] && echo ' with the features on')"
echo "# raw rounds: $W/results"
