#!/usr/bin/env bash
# A profile-guided (PGO) release build of waygate: builds an instrumented
# binary, runs it under representative proxy traffic on loopback (HTTP/1.1
# keep-alive, h2c, and a configuration with the access log, health checks,
# a rate limit and the admin listener on; then TLS with HTTP/1.1 and h2, TLS
# handshakes, and 502s from a refusing server), merges the profile and
# rebuilds with it. The result is target/pgo/release/waygate; the usual
# target/release/waygate is untouched.
#   bench/pgo.sh                # build (about 7 minutes on 2 cores)
#   N=100000 bench/pgo.sh       # requests per training load (default 200000)
#   BOLT=1 bench/pgo.sh         # then lay the code out anew with LLVM BOLT:
#                               # the PGO binary is instrumented by BOLT,
#                               # trained again on the same loads, and
#                               # rewritten with its hot code together:
#                               # target/pgo/release/waygate-bolt
# Needs rustup's llvm-tools (installed if missing), nginx (the origin),
# h2load (nghttp2-client) and openssl (a throwaway certificate); BOLT=1
# needs llvm-bolt (Debian 12: apt-get install bolt-19).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/common.sh
. "$root/bench/common.sh"
N="${N:-200000}"
BOLT="${BOLT:-0}"
bolt_bin() { command -v "llvm-$1-19" || command -v "llvm-$1" || ls /usr/lib/llvm-*/bin/"llvm-$1" 2>/dev/null | tail -1; }
if [[ "$BOLT" == 1 ]]; then
  # Resolved: BOLT finds its instrumentation runtime beside its real path.
  LLVM_BOLT="$(readlink -f "$(bolt_bin bolt)" || true)"
  [[ -x "$LLVM_BOLT" ]] || { echo "bench/pgo.sh: llvm-bolt not found (Debian 12: apt-get install bolt-19)" >&2; exit 2; }
  MERGE_FDATA="$(dirname "$(readlink -f "$LLVM_BOLT")")/merge-fdata"
fi
gen_dir="$root/target/pgo-gen"
use_dir="$root/target/pgo"
data="$root/target/pgo-data"
sysroot="$(rustc --print sysroot)"
profdata() { find "$sysroot/lib/rustlib" -name llvm-profdata -type f | head -1; }
if [[ -z "$(profdata)" ]]; then
  rustup component add llvm-tools-preview
fi
PROFDATA="$(profdata)"
[[ -x "$PROFDATA" ]] || { echo "bench/pgo.sh: llvm-profdata not found under $sysroot" >&2; exit 2; }

rm -rf "$data" && mkdir -p "$data"
env -u OUT_DIR RUSTFLAGS="-Cprofile-generate=$data" CARGO_TARGET_DIR="$gen_dir" \
  cargo build --release --manifest-path "$root/Cargo.toml" -p waygate
# Build scripts and proc macros were instrumented too and have written
# their own profiles: only the gateway's count.
rm -f "$data"/*.profraw

W="$(mktemp -d /tmp/waygate-pgo.XXXXXX)"
pids=()
# The training's scratch directory (configs, its access logs: 240 MB) goes
# too; the profiles are kept in $data.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
write_origin_config "$W/origin.conf" "$W" 9101 9102
nginx -c "$W/origin.conf" & pids+=($!)

# train CONFIG LOAD...: one run of the instrumented binary $train_bin; it
# writes its profile when it exits after SIGTERM.
train_bin="$gen_dir/release/waygate"
train() {
  local config="$1"; shift
  "$train_bin" --log-level warn run --config "$config" --workers 1 \
    >"$W/waygate.log" 2>&1 &
  local gw=$!
  for _ in $(seq 300); do curl -sf http://127.0.0.1:8190/ >/dev/null 2>&1 && break; sleep 0.1; done
  for load in "$@"; do
    # shellcheck disable=SC2086 # a list of h2load arguments (and a URL)
    case "$load" in
      *://*) h2load $load | grep -E "^requests:" ;;
      *) h2load $load -n "$N" http://127.0.0.1:8190/ | grep -E "^requests:" ;;
    esac
  done
  kill -TERM "$gw"
  wait "$gw" || true
}
# The training loads, shared by the PGO and the BOLT profiles.
train_all() {
  write_waygate_config "$W/bare.toml" 127.0.0.1:8190 127.0.0.1:9101 127.0.0.1:9102
  train "$W/bare.toml" "--h1 -c 64" "--h1 -c 256" "-c 64 -m 10"
  write_waygate_config "$W/features.toml" 127.0.0.1:8190 127.0.0.1:9101 127.0.0.1:9102
  add_waygate_features "$W/features.toml" "$W/access.log" 127.0.0.1:8191
  train "$W/features.toml" "--h1 -c 64" "-c 64 -m 10"

  # TLS (HTTP/1.1, and h2 chosen by ALPN), a handshake per request, and the
  # error path: 502s from a server that refuses connections.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$W/key.pem" -out "$W/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  write_waygate_config "$W/tls.toml" 127.0.0.1:8190 127.0.0.1:9101 127.0.0.1:9102
  cat >> "$W/tls.toml" <<TOML

[[listener]]
name = "tls"
listen = "127.0.0.1:8192"

[[listener.tls]]
cert = "$W/cert.pem"
key = "$W/key.pem"

[[route]]
path_prefix = "/down"
upstream = "down"

[upstream.down]
servers = ["127.0.0.1:9"]
TOML
  quarter=$((N / 4))
  train "$W/tls.toml" \
    "--h1 -c 64 -n $N https://127.0.0.1:8192/" \
    "-c 64 -m 10 -n $N https://127.0.0.1:8192/" \
    "--h1 -c 8 -H Connection:close -n $((N / 40)) https://127.0.0.1:8192/" \
    "--h1 -c 8 -n $quarter http://127.0.0.1:8190/down" \
    "-c 8 -m 10 -n $quarter http://127.0.0.1:8190/down"
}
train_all

"$PROFDATA" merge -o "$data/merged.profdata" "$data"/*.profraw
# cargo does not notice that the profile changed: build every crate anew.
rm -rf "$use_dir"
# With BOLT=1 the link keeps its relocations (`--emit-relocs`), which BOLT
# needs to move functions; the code is the same.
relocs=""
[[ "$BOLT" == 1 ]] && relocs=" -Clink-arg=-Wl,--emit-relocs"
env -u OUT_DIR RUSTFLAGS="-Cprofile-use=$data/merged.profdata$relocs" CARGO_TARGET_DIR="$use_dir" \
  cargo build --release --manifest-path "$root/Cargo.toml" -p waygate
echo "PGO build: $use_dir/release/waygate"
[[ "$BOLT" == 1 ]] || exit 0

# BOLT: instrument the PGO binary, train it on the same loads (each run
# writes its counts at exit, merged after), then rewrite it: basic blocks
# ordered by the profile (ext-tsp), functions ordered so that those called
# together sit together (cdsort), cold blocks split off to the end, and
# identical functions folded. The result has no line tables (BOLT drops
# them; `-update-debug-sections` keeps them, and about 0.7 MB more of the
# binary then stays resident).
rm -f "$data/bolt.fdata"
"$LLVM_BOLT" "$use_dir/release/waygate" -o "$data/waygate-bolt-inst" -instrument \
  -instrumentation-file="$data/bolt.fdata" -instrumentation-file-append-pid
rm -f "$data"/bolt.fdata.*
train_bin="$data/waygate-bolt-inst"
train_all
"$MERGE_FDATA" "$data"/bolt.fdata.* > "$data/bolt.fdata"
"$LLVM_BOLT" "$use_dir/release/waygate" -o "$use_dir/release/waygate-bolt" -data="$data/bolt.fdata" \
  -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
  -icf=1 -use-gnu-stack -dyno-stats
echo "PGO + BOLT build: $use_dir/release/waygate-bolt"
