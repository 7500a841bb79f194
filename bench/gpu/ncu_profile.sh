#!/usr/bin/env bash
# Nsight Compute views of the HISA kernels of one benchmark shape (the
# second HISA token launch after the DENSE warm-ups, and the first HISA
# block launch), for why a kernel runs at the speed it does:
#   stalls: warp-stall breakdown per issued instruction, speed-of-light and
#           instruction counts of the token and block kernels
#           ($OUT/ncu_<shape>.txt);
#   sass:   per-SASS-instruction executed counts and stall samples of the
#           token kernel ($OUT/sass_<shape>.csv; the 40 hottest printed).
#   sol:    speed of light, memory and compute workload sections (L2 and
#           tensor-pipe utilization) of the token and block kernels
#           ($OUT/sol_<shape>.txt); shape causal runs the full causal
#           prefill (use a small L: every launch is replayed).
#   OUT=/tmp/x bench/gpu/ncu_profile.sh stalls|sass decode64|prefill1024 [L]
#   OUT=/tmp/x bench/gpu/ncu_profile.sh sass select   # the decode tail alone
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/out-gpu}
MODE=${1:-stalls}
SHAPE=${2:-decode64}
L=${3:-65536}
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
mkdir -p "$OUT"
# The HISA token kernel of FP8 D = 128 rows is TmaTokenKernel (its first
# launch is a warm-up: skip 1). KERNEL / SKIP override, e.g. the per-thread
# copy kernel: KERNEL=WgmmaTokenScorerILi1EEELi1E SKIP=6 with HISA_CUDA_TMA=0
# (in decode, DENSE runs that kernel for 2 warm-ups + 3 timed launches
# first), or the block kernel for sass: KERNEL=Bf16BlockScorer SKIP=1.
SKIP=${SKIP:-1}
TOKEN=${KERNEL:-TmaTokenKernel}
bench_args=(--lengths="$L" --shapes="$SHAPE" --reps=3 --json=/tmp/ncu_profile.json)
[[ $SHAPE == causal ]] || bench_args+=(--no-causal)
run_ncu() { LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}" timeout 200 ncu --kernel-name-base mangled "$@"; }

if [[ $MODE == sass ]]; then
  # Shape "select": the histogram form of hisa_select_microbench's kernel
  # (the decode tail alone) instead of a bench shape.
  target=("$BIN/hisa_gpu_bench" "${bench_args[@]}")
  [[ $SHAPE == select ]] && TOKEN=SelectTailILb1 SKIP=2 &&
    target=("$BIN/hisa_select_microbench" --reps=2)
  run_ncu --kernel-name "regex:$TOKEN" --launch-skip "$SKIP" --launch-count 1 \
    --section SourceCounters --section WarpStateStats -o /tmp/ncu_sass -f \
    "${target[@]}" > "$OUT/sass_$SHAPE.log" 2>&1
  ncu --import /tmp/ncu_sass.ncu-rep --page source --csv --print-source sass \
    > "$OUT/sass_$SHAPE.csv" 2>> "$OUT/sass_$SHAPE.log"
  python3 - "$OUT/sass_$SHAPE.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr, data = rows[1], rows[2:]
src, ex, st = (hdr.index(k) for k in ("Source", "Instructions Executed",
                                      "Warp Stall Sampling (All Samples)"))
print("instructions", sum(int(r[ex]) for r in data),
      "stall samples", sum(int(r[st]) for r in data))
by_op = {}
for r in data:
    op = r[src].strip().lstrip("@!P0123456789T ").split(" ")[0].split(".")[0]
    by_op[op] = by_op.get(op, 0) + int(r[st])
print("stall samples by opcode:", ", ".join(
    f"{k} {v}" for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:16]))
for r in sorted(data, key=lambda r: -int(r[st]))[:60]:
    print(r[st], r[ex], r[src].strip())
PY
  exit 0
fi

if [[ $MODE == sol ]]; then
  for k in "$TOKEN:$SKIP" "Bf16BlockScorer:1"; do
    run_ncu --kernel-name "regex:${k%%:*}" --launch-skip "${k##*:}" --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section ComputeWorkloadAnalysis --section Occupancy \
      "$BIN/hisa_gpu_bench" "${bench_args[@]}"
  done > "$OUT/sol_$SHAPE.txt" 2>&1
  grep -vE "^\s*$|----" "$OUT/sol_$SHAPE.txt" | grep -E "Kernel|TmaToken|TileKernel|Throughput|Busy|Pipe|Bandwidth|Hit Rate|Active|Occupancy|Duration|Issue|Executed Ipc" | head -80
  exit 0
fi

STALLS=""
for r in long_scoreboard short_scoreboard barrier membar wait math_pipe_throttle \
         mio_throttle lg_throttle no_instruction dispatch_stall not_selected selected \
         tex_throttle drain sleeping branch_resolving imc_miss misc; do
  STALLS+="smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio,"
done
METRICS="${STALLS}gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.avg,sm__cycles_elapsed.avg,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active"
for k in "$TOKEN:$SKIP" "Bf16BlockScorer:1"; do
  run_ncu --kernel-name "regex:${k%%:*}" --launch-skip "${k##*:}" --launch-count 1 \
    --metrics "$METRICS" "$BIN/hisa_gpu_bench" "${bench_args[@]}"
done > "$OUT/ncu_$SHAPE.txt" 2>&1
grep -E "TileKernel|TmaTokenKernel|stalled|duration|throughput|cycles|inst_executed|warps_active" "$OUT/ncu_$SHAPE.txt" \
  | sed -e 's/(SelectBuffers.*//' -e 's/smsp__average_warps_issue_stalled_//' -e 's/_per_issue_active.ratio//' \
  | awk '{ if ($0 ~ /TileKernel|TmaTokenKernel/ || $NF+0 >= 0.05 || $0 !~ /stalled|ratio/) print }'
