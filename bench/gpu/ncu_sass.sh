#!/usr/bin/env bash
# Per-SASS-instruction profile (executed instructions and warp-stall
# samples) of the HISA token kernel of one shape: which instructions the
# kernel spends its issue slots and stalls on. Writes $OUT/sass_<shape>.csv
# and prints the 40 instructions with the most stall samples.
#   OUT=/tmp/x bench/gpu/ncu_sass.sh prefill1024|decode64 [L]
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/out-gpu}
SHAPE=${1:-prefill1024}
L=${2:-65536}
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
SKIP=6; [[ $SHAPE == prefill1024 ]] && SKIP=1
mkdir -p "$OUT"
LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}" timeout 240 ncu --kernel-name-base mangled \
  --kernel-name "regex:WgmmaTokenScorerILi1EEELi1E" --launch-skip "$SKIP" --launch-count 1 \
  --section SourceCounters --section WarpStateStats -o /tmp/sass_rep -f \
  "$BIN/hisa_gpu_bench" --lengths="$L" --shapes="$SHAPE" --reps=3 --no-causal \
  --json=/tmp/ncu_sass.json > "$OUT/sass_$SHAPE.log" 2>&1
ncu --import /tmp/sass_rep.ncu-rep --page source --csv --print-source sass > "$OUT/sass_$SHAPE.csv" 2>> "$OUT/sass_$SHAPE.log"
head -3 "$OUT/sass_$SHAPE.csv" | cut -c1-600
wc -l "$OUT/sass_$SHAPE.csv"
