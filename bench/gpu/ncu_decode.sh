#!/usr/bin/env bash
# Nsight Compute on the decode-shape kernels (64 requests x L tokens): the
# DENSE and HISA token kernels and the HISA block kernel, first launches
# after warm-up. Writes $OUT/ncu_decode.txt and prints the key lines.
#   OUT=/tmp/x bench/gpu/ncu_decode.sh [L]
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/out-gpu}
L=${1:-65536}
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
mkdir -p "$OUT"
LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}" timeout 240 ncu \
  --kernel-name-base mangled --kernel-name 'regex:TileKernel' \
  --launch-skip 4 --launch-count 8 \
  --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy \
  "$BIN/hisa_gpu_bench" --lengths="$L" --shapes=decode64 --reps=3 --no-causal \
  --json=/tmp/ncu_decode.json > "$OUT/ncu_decode.txt" 2>&1
grep -E "TileKernel|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Achieved Occupancy|Stall [A-Z][a-z ]+ +[a-z]+ +[0-9.]+$|Grid Size" "$OUT/ncu_decode.txt" | sed 's/(SelectBuffers.*//' | head -120
