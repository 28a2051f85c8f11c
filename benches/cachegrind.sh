#!/usr/bin/env bash
# Cache misses per review, simulated and exact (valgrind's cachegrind: a
# 32 KiB 8-way L1 for instructions and one for data, 64-byte lines), for
# profile_once's modes on one body. Each mode runs N and 2N times; the
# difference divided by N is one review, without the setup.
#
#   bash benches/cachegrind.sh [BODY] [N] [MODE...]
#   PROFILE_BIN=/path/to/profile_once bash benches/cachegrind.sh
#
# Prints, per mode: instructions (Ir), L1 instruction misses (I1mr), data
# reads and writes (Dr+Dw) and L1 data misses (D1mr+D1mw). This VM has no
# hardware counters, so this is how "same instructions, more time" is seen:
# a miss in L1 that hits L2 costs ~12 cycles, an instruction ~0.3.
set -euo pipefail
cd "$(dirname "$0")/.."
body=${1:-benches/data/review-6k.json}
n=${2:-1000}
modes=("${@:3}")
[ ${#modes[@]} -gt 0 ] || modes=(review typed value lean)
if [ -z "${PROFILE_BIN:-}" ]; then
  cargo build --release --quiet --example profile_once
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=${PROFILE_BIN:-$target_dir/release/examples/profile_once}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The summary line of a cachegrind run: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw.
summary() {
  valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file="$tmp/out" \
    "$bin" "$1" "$body" "$2" >/dev/null 2>&1
  sed -n 's/^summary: //p' "$tmp/out"
}

printf '%-8s %10s %8s %10s %8s   (per review, %s)\n' mode Ir I1mr Dr+Dw D1mr+D1mw "$body"
for mode in "${modes[@]}"; do
  one=$(summary "$mode" "$n")
  two=$(summary "$mode" $((2 * n)))
  paste -d' ' <(tr ' ' '\n' <<<"$one") <(tr ' ' '\n' <<<"$two") |
    awk -v n="$n" -v mode="$mode" '
      { d[NR] = ($2 - $1) / n }
      END { printf "%-8s %10.0f %8.0f %10.0f %8.0f\n", mode, d[1], d[2], d[4] + d[7], d[5] + d[8] }'
done
