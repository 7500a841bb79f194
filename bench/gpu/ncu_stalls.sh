#!/usr/bin/env bash
# Why a selection kernel waits: Nsight Compute warp-stall breakdown (per
# issued instruction) plus speed-of-light lines for the HISA token kernel of
# one shape (the second HISA launch after the DENSE warm-ups) and the HISA
# block kernel. Writes $OUT/ncu_<shape>.txt.
#   OUT=/tmp/x bench/gpu/ncu_stalls.sh decode64|prefill1024 [L]
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/out-gpu}
SHAPE=${1:-decode64}
L=${2:-65536}
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
mkdir -p "$OUT"
STALLS=""
for r in long_scoreboard short_scoreboard barrier membar wait math_pipe_throttle \
         mio_throttle lg_throttle no_instruction dispatch_stall not_selected selected \
         tex_throttle drain sleeping branch_resolving imc_miss misc; do
  STALLS+="smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio,"
done
METRICS="${STALLS}gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.avg,sm__cycles_elapsed.avg,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active"
# DENSE runs 2 warm-ups + 3 timed launches first; HISA token kernels are
# WgmmaTokenScorer<1> (decode: also DENSE's kernel, hence the skip).
SKIP=6; [[ $SHAPE == prefill1024 ]] && SKIP=1
for k in "WgmmaTokenScorerILi1EEELi1E:$SKIP" "Bf16BlockScorer:1"; do
  LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}" timeout 200 ncu --kernel-name-base mangled \
    --kernel-name "regex:${k%%:*}" --launch-skip "${k##*:}" --launch-count 1 --metrics "$METRICS" \
    "$BIN/hisa_gpu_bench" --lengths="$L" --shapes="$SHAPE" --reps=3 --no-causal \
    --json=/tmp/ncu_stalls.json
done > "$OUT/ncu_$SHAPE.txt" 2>&1
grep -E "TileKernel|stalled|duration|throughput|cycles|inst_executed|warps_active" "$OUT/ncu_$SHAPE.txt" \
  | sed -e 's/(SelectBuffers.*//' -e 's/smsp__average_warps_issue_stalled_//' -e 's/_per_issue_active.ratio//' \
  | awk '{ if ($0 ~ /TileKernel/ || $NF+0 >= 0.05 || $0 !~ /stalled|ratio/) print }'
