#!/usr/bin/env bash
# Instructions per HTTPS review, exact (valgrind's callgrind counts
# instructions, whatever else the machine does): `runyard webhook` and the
# baseline (benches/baseline_webhook.rs) each run under callgrind; after a
# warm-up the counters are zeroed, one kept-alive TLS connection posts the body
# for SECONDS, the counters are dumped and divided by the reviews answered.
#
#   bash benches/callgrind-https.sh [BODY] [SECONDS]
#   RUNYARD_BIN=/path/to/runyard bash benches/callgrind-https.sh
#
# Includes everything the server process does for those reviews: TLS, HTTP,
# the handler, logging and metrics (and one TLS handshake, amortised).
set -euo pipefail
cd "$(dirname "$0")/.."
body=${1:-benches/data/review-6k.json}
secs=${2:-20}
# RUNYARD_BIN: measure another build of runyard (e.g. a copy of an older one),
# without building.
if [ -z "${RUNYARD_BIN:-}" ]; then
  cargo build --release --quiet --bin runyard --example loadgen --example baseline_webhook
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=${RUNYARD_BIN:-$target_dir/release/runyard}
gen=$target_dir/release/examples/loadgen
base=$target_dir/release/examples/baseline_webhook
tmp=$(mktemp -d)
trap 'kill "${spid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$bin" certs --out-dir "$tmp" --namespace bench >/dev/null

measure() { # label port command...
  local label=$1 port=$2
  shift 2
  valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$label.%p" "$@" 2>"$tmp/$label.log" &
  spid=$!
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  "$gen" --addr "127.0.0.1:$port" --ca "$tmp/ca.crt" --body "$body" --connections 1 \
    --duration 3s --label warm-up >/dev/null
  callgrind_control -z "$spid" >/dev/null 2>&1
  local out
  out=$("$gen" --addr "127.0.0.1:$port" --ca "$tmp/ca.crt" --body "$body" --connections 1 \
    --duration "${secs}s" --label "$label" | grep '^SUMMARY')
  callgrind_control -d "$spid" >/dev/null 2>&1
  sleep 1
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  local ok total
  ok=$(echo "$out" | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
  # Part 1 is the dump requested after zeroing (the last part is the exit).
  total=$(sed -n 's/^summary: //p; s/^totals: //p' "$tmp"/cg."$label".*.1 | head -1)
  awk -v l="$label" -v t="$total" -v n="$ok" \
    'BEGIN { printf "%-9s %8d reviews  %12.0f instructions  %8.1f k per review\n", l, n, t, t / n / 1000 }'
}

echo "body $body, one kept-alive TLS connection, ${secs}s under callgrind"
measure runyard 18453 "$bin" webhook --listen 127.0.0.1:18453 --tls-cert "$tmp/tls.crt" \
  --tls-key "$tmp/tls.key" --pools benches/data/pools.yaml --log-level warn
measure baseline 18454 "$base" --listen 127.0.0.1:18454 --tls-cert "$tmp/tls.crt" \
  --tls-key "$tmp/tls.key"
