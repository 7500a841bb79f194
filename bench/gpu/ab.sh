#!/usr/bin/env bash
# A/B of two hisa_gpu_bench binaries on the GPU machine, alternating in one
# call so that both see the same card, clocks and neighbours:
#   build here:  bash bench/gpu/prepare_carry.sh
#                (and the "before" binary, stripped, into
#                 build-gpu-carry/hisa_gpu_bench_before)
#   on the device:
#     OUT=$OUT ROUNDS=2 BENCH_ARGS="--lengths=65536 --shapes=decode64" \
#       bash bench/gpu/ab.sh
# Logs: $OUT/ab_{before,after}_<round>.log; a table of the timing lines last.
# One binary, two settings: without hisa_gpu_bench_before both sides run
# hisa_gpu_bench, with BEFORE_ENV / AFTER_ENV (e.g.
# BEFORE_ENV=HISA_CUDA_SPLIT_SELECT=0) set for their side.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
OUT=${OUT:-/tmp/hisa_ab}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for side in before after; do
    exe="$BIN/hisa_gpu_bench"
    side_env=${AFTER_ENV:-}
    if [ "$side" = before ]; then
      [ -x "$BIN/hisa_gpu_bench_before" ] && exe="$BIN/hisa_gpu_bench_before"
      side_env=${BEFORE_ENV:-}
    fi
    # shellcheck disable=SC2086
    env $side_env "$exe" ${BENCH_ARGS:-} > "$OUT/ab_${side}_${round}.log" 2>&1 ||
      echo "$side round $round: exit $?"
  done
done
# Timing lines of every run, side by side by round.
for f in "$OUT"/ab_*_*.log; do
  echo "== $(basename "$f" .log)"
  grep -E " ms \(min|streams|end-to-end" "$f"
done
