#!/usr/bin/env bash
# The GPU suite in one command, for a machine with an H100/H200 (sm_90):
#   1. environment (GPU, driver, nvcc, torch),
#   2. correctness: hisa_gpu_test (CUDA backend through the Engine against the
#      float64 oracle and the CPU engine; seed printed), then ("test2") its
#      FP8 cases again on the mma.sync kernel with paired HISA rows, on the
#      wgmma kernel without bulk tensor copies, with the bulk-copy
#      kernel's pooled form (slot scores in per-SM pool slices), with
#      split selects off (each split row's last item selects it alone),
#      with split selects in clusters of 8 items per row, and with the
#      block stage choosing split rows' blocks (HISA_CUDA_TOKEN_CHOICE=0);
#      SUITE_VARIANTS="VAR=1 VAR2=0;VAR3=0" picks others (';' between runs),
#   3. hisa_gpu_bench: kernel-level DENSE / HISA timings (prefill 1024 rows,
#      full causal prefill, decode 64 / 256 requests) at every length, and
#      hisa_l2_bench: the bulk-copy read ceiling from L2 and HBM,
#   4. the PyTorch reference and the card's ceilings,
#   5. compute-sanitizer memcheck on small cases,
#      (optional part "ncu": Nsight Compute sections of each kernel variant),
#   6. a summary table with ratios and the issue's targets (printed last).
# Full logs and JSON land in $OUT (default ./out-gpu), at most 8 files:
# suite.log gpu_test.log bench.log bench.json torch.log torch.json
# memcheck.log summary.md.
#
#   OUT=/tmp/gpu bench/gpu_suite.sh
#   SUITE_PARTS=test,bench BENCH_LENGTHS=8192,65536 bench/gpu_suite.sh
#
# Binaries: $HISA_BIN_DIR (default build-gpu-carry/, filled on a build machine
# by bench/gpu/prepare_carry.sh: hisa_gpu_test, hisa_gpu_bench and the shared
# libraries they need) or, when absent, a fresh build here (needs Abseil and
# GoogleTest: cmake -DHISA_ENABLE_CUDA=ON -DHISA_ENABLE_SERVICE=OFF).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/out-gpu}
mkdir -p "$OUT"
PARTS=${SUITE_PARTS:-env,test,test2,bench,torch,memcheck}
LENGTHS=${BENCH_LENGTHS:-8192,16384,32768,65536,131072}
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
has() { [[ ",$PARTS," == *",$1,"* ]]; }
# Every part gets at most its own limit and what is left of SUITE_BUDGET_S,
# so that the summary always prints inside one 10-minute device call.
BUDGET=${SUITE_BUDGET_S:-540}
T0=$(date +%s)
limit() { local left=$(( BUDGET - ($(date +%s) - T0) - 15 )); (( left < $1 )) && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
note() { echo "== $*" | tee -a "$OUT/suite.log"; }
status_line=()

if has env; then
  note "environment"
  { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    nvcc --version | tail -2; uname -r; (ldd --version | head -1)
    python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
  } 2>&1 | tee -a "$OUT/suite.log"
fi
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

if [[ ! -x "$BIN/hisa_gpu_test" ]]; then
  note "no prebuilt binaries in $BIN: building"
  BUILD=$ROOT/build-gpu
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DHISA_ENABLE_CUDA=ON -DHISA_ENABLE_SERVICE=OFF \
    -DCMAKE_BUILD_TYPE=Release > "$OUT/suite.build.txt" 2>&1 &&
    ninja -C "$BUILD" hisa_gpu_test hisa_gpu_bench >> "$OUT/suite.build.txt" 2>&1 ||
    { note "build failed:"; tail -20 "$OUT/suite.build.txt" | tee -a "$OUT/suite.log"; }
  rm -f "$OUT/suite.build.txt"
  BIN=$BUILD
  [[ -x $BUILD/tests/gpu/hisa_gpu_test ]] && ln -sf "$BUILD/tests/gpu/hisa_gpu_test" "$BUILD/hisa_gpu_test"
  [[ -x $BUILD/bench/gpu/hisa_gpu_bench ]] && ln -sf "$BUILD/bench/gpu/hisa_gpu_bench" "$BUILD/hisa_gpu_bench"
fi
LIBS=""
[[ -d "$BIN/lib" ]] && LIBS="$BIN/lib"
run_bin() { LD_LIBRARY_PATH="${LIBS}${LIBS:+:}${LD_LIBRARY_PATH:-}" "$@"; }
# Fall back to the carried libstdc++ when the system's is older than the build's.
if [[ -n "$LIBS" ]] && ! run_bin "$BIN/hisa_gpu_test" --gtest_list_tests > /dev/null 2>&1; then
  [[ -d "$BIN/lib-stdcxx" ]] && LIBS="$LIBS:$BIN/lib-stdcxx"
  run_bin "$BIN/hisa_gpu_test" --gtest_list_tests 2>&1 > /dev/null | tee -a "$OUT/suite.log"
  ldd "$BIN/hisa_gpu_test" | grep "not found" | tee -a "$OUT/suite.log"
fi

if has test; then
  note "correctness: hisa_gpu_test"
  start=$(date +%s)
  timeout $(limit 240) bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' '$BIN/hisa_gpu_test'" > "$OUT/gpu_test.log" 2>&1
  rc=$?
  grep -E "HISA_TEST_SEED|^device|overlap|\[  (PASSED|FAILED|SKIPPED) |tests ran" "$OUT/gpu_test.log" | tail -40
  grep -B3 -A12 -m 6 "Failure" "$OUT/gpu_test.log" | head -120
  status_line+=("tests rc=$rc ($(( $(date +%s) - start )) s): $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+' "$OUT/gpu_test.log" | tr '\n' ' ')")
fi
if has test2; then
  # The FP8 cases again on the other kernel paths: token items that wait
  # for a block launch instead of scoring their blocks, clustered launches left
  # to the default scheduling (not spread), the mma.sync token kernel
  # (fallback) with paired HISA rows (union of two rows' blocks), and the
  # wgmma kernel with per-thread copies instead of bulk tensor copies, the
  # pooled form, split rows selected by their last item alone, split
  # selects in clusters of 8 items per row, and split rows whose blocks the
  # block stage chooses.
  FP8='GpuShapesTest.*:*keys_FP8_E4M3_q_FP8_E4M3:GpuExactTest.*:GpuEdgeTest.NegativeFp8Scales:GpuConcurrencyTest.*-GpuExactTest.SplitSelectClustersInSeveralWaves'
  VARIANTS=${SUITE_VARIANTS:-HISA_CUDA_TOKENS_SCORE_BLOCKS=0;HISA_CUDA_BALANCE_CLUSTERS=0;HISA_CUDA_TOKEN_CHOICE=0;HISA_CUDA_MMA_SYNC=1 HISA_CUDA_PAIR_HISA=1;HISA_CUDA_TMA=0;HISA_CUDA_SLOT_SCORE_SCRATCH=0;HISA_CUDA_SPLIT_SELECT=0;HISA_CUDA_CLUSTER_ITEMS=8}
  IFS=';' read -r -a VARIANT_LIST <<< "$VARIANTS"
  for VARIANT in "${VARIANT_LIST[@]}"; do
    note "correctness: FP8 cases with $VARIANT"
    start=$(date +%s)
    echo "==== $VARIANT --gtest_filter=$FP8" >> "$OUT/gpu_test.log"
    timeout $(limit 200) bash -c "$VARIANT LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' '$BIN/hisa_gpu_test' --gtest_filter='$FP8'" > "$OUT/gpu_test_variant.tmp" 2>&1
    rc=$?
    grep -E "\[  (PASSED|FAILED) " "$OUT/gpu_test_variant.tmp" | tail -12
    grep -B3 -A12 -m 4 "Failure" "$OUT/gpu_test_variant.tmp" | head -60
    cat "$OUT/gpu_test_variant.tmp" >> "$OUT/gpu_test.log"; rm -f "$OUT/gpu_test_variant.tmp"
    status_line+=("tests ($VARIANT) rc=$rc ($(( $(date +%s) - start )) s)")
  done
fi

if has bench; then
  note "benchmark: hisa_gpu_bench --lengths=$LENGTHS"
  start=$(date +%s)
  timeout $(limit 240) bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' '$BIN/hisa_gpu_bench' --lengths=$LENGTHS --json='$OUT/bench.json' ${BENCH_ARGS:-}" 2>&1 | tee "$OUT/bench.log"
  status_line+=("bench rc=${PIPESTATUS[0]} ($(( $(date +%s) - start )) s)")
  # The token stage's data-path ceiling: bulk-copy reads from L2 and HBM
  # (hisa_l2_bench), against the causal rows' "streams ... GB/s" line.
  if [[ -x $BIN/hisa_l2_bench ]]; then
    note "ceiling: bulk-copy reads (hisa_l2_bench)"
    timeout $(limit 60) "$BIN/hisa_l2_bench" --reps=5 2>&1 | grep -v '^{' | tee -a "$OUT/bench.log"
  fi
fi

if has torch; then
  note "PyTorch reference"
  start=$(date +%s)
  timeout $(limit 150) python3 "$ROOT/bench/gpu/torch_reference.py" --lengths "$LENGTHS" \
    --json "$OUT/torch.json" ${TORCH_ARGS:-} 2>&1 | tee "$OUT/torch.log"
  status_line+=("torch rc=${PIPESTATUS[0]} ($(( $(date +%s) - start )) s)")
fi

if has memcheck; then
  note "compute-sanitizer memcheck"
  start=$(date +%s)
  FILTER='GpuEdgeTest.OneTokenAndTinyLayers:GpuExactTest.FirstAndOwnBlocksAreAlwaysCandidates:GpuExactTest.SplitSelectsAcrossWorkItems:GpuExactTest.BlockTiesGoToTheLowerIndex:*GpuFormatsTest.*keys_FP8_E4M3_q_FP8_E4M3:*GpuFormatsTest.*keys_BF16_q_FP32'
  timeout $(limit 200) bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' compute-sanitizer --tool memcheck --error-exitcode 97 '$BIN/hisa_gpu_test' --gtest_filter='$FILTER'" > "$OUT/memcheck.log" 2>&1
  rc=$?
  grep -E "ERROR SUMMARY|\[  (PASSED|FAILED) " "$OUT/memcheck.log" | tail -5
  grep -m 20 -A8 "Invalid\|========= Error" "$OUT/memcheck.log" | head -60
  status_line+=("memcheck rc=$rc ($(( $(date +%s) - start )) s): $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)")
fi

if has ncu; then
  # Nsight Compute on the first launch of each token / block kernel variant
  # of a 64K run (why the kernels run at the speed they do). Appended to
  # bench.log.
  note "ncu: first launch of each selection kernel at L=65536"
  start=$(date +%s)
  { echo "==== ncu"
    timeout $(limit 150) bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' ncu \
      --kernel-name-base mangled --kernel-id '::regex:TileKernel:1' --section SpeedOfLight --section Occupancy \
      --section WarpStateStats --section ComputeWorkloadAnalysis \
      '$BIN/hisa_gpu_bench' --lengths=65536 --no-causal --reps=1 --json=/tmp/ncu_bench.json"
  } > "$OUT/ncu.tmp" 2>&1
  grep -E "TileKernel|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Executed Ipc A|Issue Slots Busy|Stall|ERR|error" "$OUT/ncu.tmp" | head -80
  cat "$OUT/ncu.tmp" >> "$OUT/bench.log"; rm -f "$OUT/ncu.tmp"
  status_line+=("ncu ($(( $(date +%s) - start )) s)")
fi

# Keep every log under the 16 MiB a returned file may hold.
for f in "$OUT"/*.log; do [[ -f $f ]] && truncate -s '<15M' "$f"; done
note "summary"
python3 "$ROOT/bench/gpu/summarize.py" --bench "$OUT/bench.json" --torch "$OUT/torch.json" \
  --card "$CARD" --out "$OUT/summary.md"
for s in "${status_line[@]}"; do echo "$s"; done
