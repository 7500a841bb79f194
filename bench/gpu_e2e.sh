#!/usr/bin/env bash
# End-to-end GPU run in one command, for a machine with an H100/H200 (sm_90)
# that lacks gRPC, protobuf, Abseil, prometheus-cpp and GoogleTest:
#   1. environment (GPU, driver, glibc),
#   2. correctness: hisa_gpu_test (CUDA backend through the Engine against
#      the float64 oracle and the CPU engine; seed printed),
#   3. a quick kernel bench (hisa_gpu_bench at 64K, no causal shape: prefill
#      1024 rows, decode 64 / 256 requests, and the end-to-end
#      Backend::Select line for decode 64 x 64K); after step 4's CUDA
#      runs, the same binary built from the previous host path
#      (hisa_gpu_bench_before) when carried, for an A/B of that end-to-end
#      line in one run,
#   4. the service over loopback gRPC: hisa_loadgen starts hisa_server
#      (--backend=cuda, then --backend=cpu) on an ephemeral 127.0.0.1 port
#      and a plain gRPC echo server of the same message sizes, and measures
#      decode messages of 1 and 64 rows (one row per request) and a prefill
#      message (E2E_PREFILL_ROWS rows of one request), H = 64, D = 128, fp8,
#      k = 2048, m = 64, at each context length in E2E_CONTEXTS,
#   5. a summary table, printed last.
# Logs land in $OUT (default ./out-e2e), at most 8 files: e2e.log
# gpu_test.log bench.log bench_before.log loadgen.log loadgen.md summary.md.
#
#   bench/gpu_e2e.sh --prepare            # build machine: build + carry dir
#   OUT=/tmp/e2e bench/gpu_e2e.sh         # GPU machine
#   E2E_PARTS=lg_cpu E2E_CONTEXTS=4096 bench/gpu_e2e.sh   # no GPU needed
#
# --prepare builds hisa_server, hisa_loadgen, hisa_echo_server,
# hisa_gpu_test and hisa_gpu_bench in build-e2e (Release, CUDA on) and
# copies them, stripped, into .carry-e2e/ (ignored through
# .git/info/exclude) with every shared library they load except the C
# library's own (libc, libm, ld-linux, ...), which the GPU machine's newer
# glibc provides; libstdc++ and libgcc_s go to lib-stdcxx/, used only when
# the machine's own are older than the build's.
#
# Knobs: E2E_PARTS (env,test,bench,lg_cuda,bench_before,lg_cpu; run in
# this order), E2E_CONTEXTS
# (4096,65536), E2E_PREFILL_ROWS (1024), E2E_SECONDS (2: measured seconds
# per loadgen phase), E2E_BUDGET_S (450: every step gets at most what is
# left of it, so the summary prints inside one device call),
# E2E_SERVER_ARGS (more hisa_server flags, comma-separated), HISA_E2E_BIN
# (.carry-e2e, or build-e2e's outputs when absent).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ "${1:-}" == "--prepare" ]]; then
  set -e
  BUILD=$ROOT/build-e2e
  DEST=$ROOT/.carry-e2e
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DHISA_ENABLE_CUDA=ON > /dev/null
  ninja -C "$BUILD" -j2 hisa_server hisa_loadgen hisa_echo_server \
    hisa_gpu_test hisa_gpu_bench
  grep -qx '/.carry-e2e/' "$ROOT/.git/info/exclude" 2>/dev/null ||
    echo '/.carry-e2e/' >> "$ROOT/.git/info/exclude"
  # Keep a carried hisa_gpu_bench_before (built by hand from the previous
  # host path) across re-preparations.
  before=""
  [[ -f "$DEST/hisa_gpu_bench_before" ]] &&
    before=$(mktemp) && cp "$DEST/hisa_gpu_bench_before" "$before"
  rm -rf "$DEST"
  mkdir -p "$DEST/lib" "$DEST/lib-stdcxx"
  for b in server/hisa_server bench/loadgen/hisa_loadgen \
           bench/loadgen/hisa_echo_server tests/gpu/hisa_gpu_test \
           bench/gpu/hisa_gpu_bench; do
    strip -o "$DEST/$(basename "$b")" "$BUILD/$b"
  done
  # With its symbols, for perf (bench/gpu/host_profile.sh).
  cp "$BUILD/server/hisa_server" "$DEST/hisa_server_syms"
  [[ -n "$before" ]] && mv "$before" "$DEST/hisa_gpu_bench_before" &&
    chmod +x "$DEST/hisa_gpu_bench_before"
  for lib in $(ldd "$DEST"/hisa_* | awk '/=> \// {print $3}' | sort -u); do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libresolv.so*) ;;
      libstdc++*|libgcc_s*) cp -L "$lib" "$DEST/lib-stdcxx/" ;;
      libcuda.so*|libnvidia*) ;;
      *) cp -L "$lib" "$DEST/lib/" ;;
    esac
  done
  du -sh "$DEST"
  exit 0
fi

OUT=${OUT:-$ROOT/out-e2e}
mkdir -p "$OUT"
PARTS=${E2E_PARTS:-env,test,bench,lg_cuda,bench_before,lg_cpu}
CONTEXTS=${E2E_CONTEXTS:-4096,65536}
PREFILL_ROWS=${E2E_PREFILL_ROWS:-1024}
SECONDS_PER_PHASE=${E2E_SECONDS:-2}
BUDGET=${E2E_BUDGET_S:-450}
BIN=${HISA_E2E_BIN:-$ROOT/.carry-e2e}
SERVER_ARGS=${E2E_SERVER_ARGS:-}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
has() { [[ ",$PARTS," == *",$1,"* ]]; }
# Seconds a step may take: at most $1 and what is left of the budget.
limit() {
  local left=$(( BUDGET - ($(date +%s) - T0) - 10 ))
  (( left < $1 )) && echo $(( left > 5 ? left : 5 )) || echo "$1"
}
note() { echo "== $* (t=$(( $(date +%s) - T0 )) s)" | tee -a "$OUT/e2e.log"; }
steps=()

if [[ ! -x "$BIN/hisa_server" ]]; then
  B=$ROOT/build-e2e
  note "no carried binaries in $BIN: using $B"
  mkdir -p "$OUT/bin"
  for b in server/hisa_server bench/loadgen/hisa_loadgen \
           bench/loadgen/hisa_echo_server tests/gpu/hisa_gpu_test \
           bench/gpu/hisa_gpu_bench; do
    [[ -x "$B/$b" ]] && ln -sf "$B/$b" "$OUT/bin/$(basename "$b")"
  done
  BIN=$OUT/bin
fi
LIBS=""
[[ -d "$BIN/lib" ]] && LIBS="$BIN/lib"
run_bin() { LD_LIBRARY_PATH="${LIBS}${LIBS:+:}${LD_LIBRARY_PATH:-}" "$@"; }
# The carried libstdc++ only when the machine's own is older than the build's.
missing() { run_bin ldd "$@" 2>&1 | grep -E "not found"; }
if [[ -n "$LIBS" ]] && [[ -n "$(missing "$BIN/hisa_server" "$BIN/hisa_gpu_test")" ]]; then
  [[ -d "$BIN/lib-stdcxx" ]] && LIBS="$LIBS:$BIN/lib-stdcxx"
  note "using carried libstdc++"
fi
if [[ -n "$(missing "$BIN/hisa_server" "$BIN/hisa_gpu_test")" ]]; then
  note "missing libraries:"
  missing "$BIN/hisa_server" "$BIN/hisa_gpu_test" | tee -a "$OUT/e2e.log"
fi

if has env; then
  note "environment"
  { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    uname -r; ldd --version | head -1; nproc
    grep -m1 "model name" /proc/cpuinfo
  } 2>&1 | tee -a "$OUT/e2e.log"
fi
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
CARD=${CARD:-no GPU}

if has test; then
  note "correctness: hisa_gpu_test"
  start=$(date +%s)
  timeout "$(limit 120)" bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' '$BIN/hisa_gpu_test'" \
    > "$OUT/gpu_test.log" 2>&1
  rc=$?
  grep -E "HISA_TEST_SEED|^\[  (PASSED|FAILED) |^\[  SKIPPED \] [0-9]|tests ran|^device|overlap" "$OUT/gpu_test.log" | tail -40 | tee -a "$OUT/e2e.log"
  grep -B3 -A12 -m 4 "Failure" "$OUT/gpu_test.log" | head -80 | tee -a "$OUT/e2e.log"
  steps+=("| hisa_gpu_test | rc=$rc, $(( $(date +%s) - start )) s, $(grep -oE 'HISA_TEST_SEED=[0-9]+' "$OUT/gpu_test.log" | head -1), $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+' "$OUT/gpu_test.log" | tr '\n' ' ') |")
fi

# One kernel bench run: $1 is hisa_gpu_bench or hisa_gpu_bench_before.
bench() {
  local variant=$1 log rc d h e shape
  [[ -x "$BIN/$variant" ]] || return 0
  log=$OUT/bench.log
  [[ $variant == hisa_gpu_bench_before ]] && log=$OUT/bench_before.log
  note "kernel bench: $variant --lengths=65536 --no-causal"
  timeout "$(limit 75)" bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' '$BIN/$variant' --lengths=65536 --no-causal --reps=5 --json=/tmp/$variant.json" \
    > "$log" 2>&1
  rc=$?
  grep -E "^(prefill1024|decode64|decode256) |end-to-end" "$log" | tee -a "$OUT/e2e.log"
  for shape in prefill1024 decode64 decode256; do
    d=$(awk -v s=$shape '$1==s && $3=="DENSE" {print $5; exit}' "$log")
    h=$(awk -v s=$shape '$1==s && $3=="HISA" {print $5; exit}' "$log")
    steps+=("| $variant $shape 64K (kernels only) | DENSE ${d:-?} ms, HISA ${h:-?} ms |")
  done
  e=$(grep -oE "end-to-end Backend::Select [0-9.]+ ms" "$log" | awk '{print $3}')
  steps+=("| $variant decode64 64K HISA end-to-end Backend::Select | ${e:-?} ms (rc=$rc) |")
}

# One loadgen run: $1 backend, $2 context. Its rows of loadgen.md (all in
# microseconds) go to the summary.
lg_rows=()
loadgen() {
  local backend=$1 L=$2 start rc before
  note "loadgen: backend $backend, L=$L, prefill $PREFILL_ROWS rows${SERVER_ARGS:+, server flags $SERVER_ARGS}"
  start=$(date +%s)
  before=$(cat "$OUT/loadgen.md" 2>/dev/null | wc -l)
  echo "### backend $backend, L=$L" >> "$OUT/loadgen.log"
  timeout "$(limit 100)" bash -c "LD_LIBRARY_PATH='${LIBS}:${LD_LIBRARY_PATH:-}' '$BIN/hisa_loadgen' \
      --server_binary='$BIN/hisa_server' --echo_binary='$BIN/hisa_echo_server' \
      --server_args=--backend=$backend,--metrics_listen=127.0.0.1:0,--memory_budget=8G${SERVER_ARGS:+,$SERVER_ARGS} \
      --streams=1 --decode_rows=1,64 --prefill_rows=$PREFILL_ROWS --context=$L \
      --seconds=$SECONDS_PER_PHASE --rounds=2 --warmup=5 \
      --results_md='$OUT/loadgen.md' --results_append" > "$OUT/lg_run.txt" 2>&1
  rc=$?
  cat "$OUT/lg_run.txt" >> "$OUT/loadgen.log"
  grep -E "^server|^append|^(decode|prefill) |rror" "$OUT/lg_run.txt" | head -20 | tee -a "$OUT/e2e.log"
  rm -f "$OUT/lg_run.txt"
  # | shape | streams | rows/msg | req B | resp B | msgs | rows/s | p50 | p99
  # | p99.9 | server p50 | rest p50 | echo p50 | echo p99 | echo p99.9
  # | p50 / echo | rest / echo |
  while IFS= read -r line; do lg_rows+=("$line"); done < <(
    tail -n +$(( before + 1 )) "$OUT/loadgen.md" 2>/dev/null |
    awk -F'|' -v b="$backend" -v L="$L" '$2 ~ /^ (decode|prefill) $/ {
      gsub(/ /, "", $0)
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
             b, L, $2, $4, $8, $9, $10, $12, $13, $14, $17 }')
  steps+=("| loadgen $backend L=$L | rc=$rc, $(( $(date +%s) - start )) s |")
}
IFS=, read -r -a LENGTHS <<< "$CONTEXTS"
has bench && bench hisa_gpu_bench
if has lg_cuda; then
  for L in "${LENGTHS[@]}"; do loadgen cuda "$L"; done
fi
has bench_before && bench hisa_gpu_bench_before
if has lg_cpu; then
  for L in "${LENGTHS[@]}"; do loadgen cpu "$L"; done
fi

{
  echo
  echo "Card: $CARD. Total $(( $(date +%s) - T0 )) s."
  echo
  echo "| step | result |"
  echo "|---|---|"
  for r in "${steps[@]}"; do echo "$r"; done
  echo
  echo "Service over loopback gRPC (1 stream, ping-pong; times in us; server = SelectResponse.server_seconds; echo = plain gRPC echo of the same sizes, same run):"
  echo
  echo "| backend | L | shape | rows/msg | rows/s | p50 | p99 | server p50 | rest p50 | echo p50 | p50 / echo |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${lg_rows[@]}"; do echo "$r"; done
} > "$OUT/summary.md"
cat "$OUT/summary.md" | tee -a "$OUT/e2e.log"
