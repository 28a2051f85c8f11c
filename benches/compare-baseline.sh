#!/usr/bin/env bash
# The headline of BENCHMARKS.md: `runyard webhook` (full injection) against a
# minimal admission server that adds one label (benches/baseline_webhook.rs),
# same TLS configuration, same body, same core, in one run:
#
#   bash benches/compare-baseline.sh [BODY] [PAIRS] [SECONDS] [CONNECTIONS] [RATE]
#   RUNYARD_BIN=/path/to/runyard bash benches/compare-baseline.sh ...
#
# Defaults: benches/data/review-6k.json, 20 pairs of 3 s, 32 kept-alive TLS
# connections, closed loop (RATE 0; give e.g. 2000 for a fixed rate). Both
# servers are pinned to CPU 0, the load generator to CPU 1; each pair runs
# both servers back to back, in alternating order, so drift in this machine's
# CPU speed cancels out in the per-pair ratio. Prints each pair, then the
# median and range of the throughput ratio, p99 latencies, server CPU µs per
# review (from /proc/PID/stat) and peak RSS, and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
body=${1:-benches/data/review-6k.json}
pairs=${2:-20}
secs=${3:-3}
conns=${4:-32}
rate=${5:-0}
# RUNYARD_BIN: compare another build of runyard (e.g. a copy of an older one)
# with the same baseline, without building.
if [ -z "${RUNYARD_BIN:-}" ]; then
  cargo build --release --quiet --bin runyard --example loadgen --example baseline_webhook
fi
bin=${RUNYARD_BIN:-target/release/runyard}
gen=target/release/examples/loadgen
base=target/release/examples/baseline_webhook
tmp=$(mktemp -d)
trap 'kill "${rpid:-}" "${bpid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$bin" certs --out-dir "$tmp" --namespace bench >/dev/null
rport=18443
bport=18444
taskset -c 0 "$bin" webhook --listen "127.0.0.1:$rport" --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" \
  --pools benches/data/pools.yaml --log-level warn &
rpid=$!
taskset -c 0 "$base" --listen "127.0.0.1:$bport" --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" 2>/dev/null &
bpid=$!

load() { # port pid label
  taskset -c 1 "$gen" --addr "127.0.0.1:$1" --ca "$tmp/ca.crt" --pid "$2" --body "$body" \
    --connections "$conns" --rate "$rate" --duration "${secs}s" --label "$3" | grep '^SUMMARY'
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

load "$rport" "$rpid" warm-up >/dev/null
load "$bport" "$bpid" warm-up >/dev/null
echo "body $body, $pairs pairs of ${secs}s, $conns connections, rate ${rate:-0} (0 = closed loop)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %12s %12s %7s %10s %10s %10s %10s\n' pair runyard/s baseline/s ratio r_p99_ms b_p99_ms r_cpu_us b_cpu_us
results=$tmp/results
for i in $(seq 1 "$pairs"); do
  if (( i % 2 )); then
    r=$(load "$rport" "$rpid" runyard); b=$(load "$bport" "$bpid" baseline)
  else
    b=$(load "$bport" "$bpid" baseline); r=$(load "$rport" "$rpid" runyard)
  fi
  rr=$(echo "$r" | field rps); br=$(echo "$b" | field rps)
  ratio=$(awk -v a="$rr" -v b="$br" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
  line="$i $rr $br $ratio $(echo "$r" | field p99_ms) $(echo "$b" | field p99_ms) $(echo "$r" | field cpu_us) $(echo "$b" | field cpu_us) $(echo "$r" | field other) $(echo "$b" | field other) $(echo "$r" | field user_us) $(echo "$b" | field user_us)"
  echo "$line" >>"$results"
  printf '%-5s %12s %12s %7s %10s %10s %10s %10s\n' $(echo "$line" | cut -d" " -f1-8)
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$1" '{ print $c }' "$results"; }
echo "throughput ratio runyard/baseline: median $(col 4 | median), range $(col 4 | sort -g | head -1)–$(col 4 | sort -g | tail -1)"
echo "p99 ms: runyard median $(col 5 | median), baseline median $(col 6 | median)"
echo "server CPU µs per review: runyard median $(col 7 | median), baseline median $(col 8 | median)"
echo "  of which user space: runyard median $(col 11 | median), baseline median $(col 12 | median)"
sum() { awk '{ s += $1 } END { print s + 0 }'; }
echo "non-200 answers: runyard $(col 9 | sum), baseline $(col 10 | sum)"
echo "RSS at end: runyard $(awk '/VmRSS/ { print $2 / 1024 " MiB" }' /proc/$rpid/status), baseline $(awk '/VmRSS/ { print $2 / 1024 " MiB" }' /proc/$bpid/status)"
