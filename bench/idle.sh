#!/usr/bin/env bash
# RSS while holding N idle keep-alive client connections, nginx beside
# waygate, same origin, same harness (bench/idle-conns.py). Loopback only.
#   bench/idle.sh                 # N=10000, 3 rounds each, after `cargo build --release`
#   N=2000 ROUNDS=1 bench/idle.sh
#   IDLE_WAIT=6 bench/idle.sh     # measure after 6 s idle instead of 1 s
#   WAYGATE_BIN=target/pgo/release/waygate bench/idle.sh   # another build
# nginx runs like the shared rig's: 1 worker, upstream keepalive 256.
# waygate runs bench/waygate-cmd.sh (1 worker thread, access log off).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-10000}"
ROUNDS="${ROUNDS:-3}"
W="$(mktemp -d /tmp/waygate-idle.XXXXXX)"
mkdir -p "$W/tmp"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
command -v nginx >/dev/null || { echo "bench/idle.sh: needs nginx" >&2; exit 2; }
# waygate-cmd.sh runs WAYGATE_BIN if set (another build), else this one.
[ -x "${WAYGATE_BIN:-$root/target/release/waygate}" ] || { echo "bench/idle.sh: run cargo build --release first" >&2; exit 2; }

common="worker_processes 1; daemon off; master_process on; error_log $W/error.log;"
http_common="access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path $W/tmp/body; proxy_temp_path $W/tmp/proxy; fastcgi_temp_path $W/tmp/fcgi;
  uwsgi_temp_path $W/tmp/uwsgi; scgi_temp_path $W/tmp/scgi;"
cat > "$W/origin.conf" <<NGINX
$common pid $W/origin.pid; events { worker_connections 4096; }
http { $http_common
  server { listen 127.0.0.1:9001; listen 127.0.0.1:9002; location / { return 200 "hello\n"; } } }
NGINX
cat > "$W/nginx.conf" <<NGINX
$common pid $W/nginx.pid; events { worker_connections $((N + 1000)); }
http { $http_common
  upstream backends { server 127.0.0.1:9001; server 127.0.0.1:9002; keepalive 256; }
  server { listen 127.0.0.1:8081 backlog=4096;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
ulimit -n $((N * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
setsid nginx -c "$W/origin.conf" & pids+=($!)
sleep 0.5

wait_port() { for _ in $(seq 100); do curl -sf "http://$1/" >/dev/null && return 0; sleep 0.1; done; return 1; }

measure() { # name addr command...
  local name=$1 addr=$2; shift 2
  setsid "$@" >"$W/$name.log" 2>&1 &
  local pid=$!
  wait_port "$addr" || { echo "$name did not start" >&2; cat "$W/$name.log" >&2; exit 1; }
  printf '%s ' "$name"
  python3 "$root/bench/idle-conns.py" "$pid" "$addr" "$N"
  kill -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 0.5
}

export BENCH_WORK="$W" BENCH_UPSTREAM1=127.0.0.1:9001 BENCH_UPSTREAM2=127.0.0.1:9002
for _ in $(seq "$ROUNDS"); do
  measure nginx 127.0.0.1:8081 nginx -c "$W/nginx.conf"
  measure waygate 127.0.0.1:8090 "$root/bench/waygate-cmd.sh"
done | tee "$W/results.txt"
echo "results: $W/results.txt"
