#!/usr/bin/env bash
# Runs the HTTPS load scenarios of BENCHMARKS.md against the release binary:
#   bash benches/run-loadgen.sh
# Starts `runyard webhook` on a free loopback port with fresh certificates and
# static pools, drives it with the `loadgen` example, and stops it. Loopback
# only. Builds into cargo's target directory (CARGO_TARGET_DIR or the
# configured one, as cargo itself resolves it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin runyard --example loadgen
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target_dir/release/runyard
gen=$target_dir/release/examples/loadgen
tmp=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$bin" certs --out-dir "$tmp" --namespace bench >/dev/null

# The server listens on port 0 (the kernel picks a free one) and logs the
# address it got; nothing else may be using a fixed port.
start_server() {
  : >"$tmp/server.log"
  "$bin" webhook --listen 127.0.0.1:0 --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" \
    --pools benches/data/pools.yaml --log-format json --log-level warn,runyard::webhook=info "$@" \
    2>"$tmp/server.log" &
  pid=$!
  addr=
  for _ in $(seq 1 100); do
    addr=$(grep -o '"addr":"[^"]*"' "$tmp/server.log" | head -n 1 | cut -d '"' -f 4 || true)
    [ -n "$addr" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$tmp/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "runyard webhook did not report its address:" >&2
  cat "$tmp/server.log" >&2
  exit 1
}
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
load() { "$gen" --addr "$addr" --ca "$tmp/ca.crt" --pid "$pid" "$@"; }

start_server
load --label "warm-up" --duration 2s >/dev/null
load --label "peak 6KB http/1.1" --connections 8 --duration 10s
load --label "peak 6KB h2" --connections 8 --duration 10s --h2
load --label "peak 16KB http/1.1" --connections 8 --duration 10s --body benches/data/review-16k.json
load --label "2000/s 6KB" --connections 8 --duration 10s --rate 2000
load --label "2000/s 16KB" --connections 8 --duration 10s --rate 2000 --body benches/data/review-16k.json
stop_server

# Overload: 256 connections sending back to back (8x the concurrency limit of
# 32 set here, and far more than the server can handle): excess reviews are
# answered 429 at once instead of queueing, so memory stays bounded.
start_server --max-in-flight 32
load --label "overload 256 conns, limit 32" --connections 256 --duration 10s
stop_server
