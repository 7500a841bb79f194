#!/usr/bin/env bash
# Runs hisa_gpu_bench once per setting, round-robin for ROUNDS rounds, so
# that every setting sees the same card, clocks and neighbours (ab.sh
# compares two binaries; this, settings of one):
#   OUT=$OUT ROUNDS=2 BENCH_ARGS="--lengths=65536 --shapes=decode64 --trace" \
#     bash bench/gpu/sweep.sh base= nochoice=HISA_CUDA_TOKEN_CHOICE=0 \
#       nosplit=HISA_CUDA_SPLIT_SELECT=0,HISA_CUDA_TOKEN_CHOICE=0
# Each argument is name=VAR=value,VAR=value (nothing after the first '=':
# the defaults). Logs: $OUT/<name>_<round>.log; every traced CTA of a
# setting in $OUT/<name>.csv (HISA_TRACE_CSV); the HISA timing lines last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
OUT=${OUT:-/tmp/hisa_sweep}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for setting in "$@"; do
    name=${setting%%=*}
    vars=${setting#*=}
    # shellcheck disable=SC2086
    env ${vars//,/ } HISA_TRACE_CSV="$OUT/$name.csv" "$BIN/hisa_gpu_bench" \
      ${BENCH_ARGS:-} > "$OUT/${name}_${round}.log" 2>&1 ||
      echo "$name round $round: exit $?"
  done
done
for setting in "$@"; do
  name=${setting%%=*}
  for f in "$OUT/${name}"_*.log; do
    echo "== $(basename "$f" .log)"
    grep -E "HISA  rows" "$f"
  done
done
