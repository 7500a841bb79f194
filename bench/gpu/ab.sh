#!/usr/bin/env bash
# A/B of two hisa_gpu_bench binaries on the GPU machine, alternating in one
# call so that both see the same card, clocks and neighbours (sweep.sh with
# two settings):
#   build here:  bash bench/gpu/prepare_carry.sh
#                (and the "before" binary, stripped, into
#                 build-gpu-carry/hisa_gpu_bench_before)
#   on the device:
#     OUT=$OUT ROUNDS=2 BENCH_ARGS="--lengths=65536 --shapes=decode64" \
#       bash bench/gpu/ab.sh
# Logs: $OUT/ab_{before,after}_<round>.log; the timing lines last.
# One binary, two settings: without hisa_gpu_bench_before both sides run
# hisa_gpu_bench, with BEFORE_ENV / AFTER_ENV (e.g.
# BEFORE_ENV=HISA_CUDA_SPLIT_SELECT=0; several separated by spaces) set for
# their side.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${HISA_BIN_DIR:-$HERE/../../build-gpu-carry}
before=()
[ -x "$BIN/hisa_gpu_bench_before" ] && before+=("EXE=$BIN/hisa_gpu_bench_before")
# shellcheck disable=SC2206
before+=(${BEFORE_ENV:-})
after=(${AFTER_ENV:-})
join() { local IFS=','; echo "$*"; }
exec bash "$HERE/sweep.sh" "ab_before=$(join "${before[@]}")" \
  "ab_after=$(join "${after[@]}")"
