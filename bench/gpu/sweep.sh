#!/usr/bin/env bash
# Runs hisa_gpu_bench once per setting, round-robin for ROUNDS rounds, so
# that every setting sees the same card, clocks and neighbours:
#   OUT=$OUT ROUNDS=2 BENCH_ARGS="--lengths=65536 --shapes=decode64 --trace" \
#     bash bench/gpu/sweep.sh base= nochoice=HISA_CUDA_TOKEN_CHOICE=0 \
#       old=EXE=build-gpu-carry/hisa_gpu_bench_before
# Each argument is name=VAR=value,VAR=value (nothing after the first '=':
# the defaults); EXE=path runs that binary instead of hisa_gpu_bench (ab.sh
# compares two binaries this way). Logs: $OUT/<name>_<round>.log; every
# traced CTA of a setting in $OUT/<name>.csv (HISA_TRACE_CSV); the timing
# lines of every run last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${HISA_BIN_DIR:-$ROOT/build-gpu-carry}
OUT=${OUT:-/tmp/hisa_sweep}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$BIN/lib:${LD_LIBRARY_PATH:-}"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for setting in "$@"; do
    name=${setting%%=*}
    exe=$BIN/hisa_gpu_bench
    vars=()
    IFS=',' read -r -a assignments <<< "${setting#*=}"
    for a in "${assignments[@]}"; do
      case "$a" in
        EXE=*) exe=${a#EXE=} ;;
        ?*) vars+=("$a") ;;
      esac
    done
    # shellcheck disable=SC2086
    env "${vars[@]}" HISA_TRACE_CSV="$OUT/$name.csv" "$exe" ${BENCH_ARGS:-} \
      > "$OUT/${name}_${round}.log" 2>&1 ||
      echo "$name round $round: exit $?"
  done
done
for setting in "$@"; do
  name=${setting%%=*}
  for f in "$OUT/${name}"_*.log; do
    echo "== $(basename "$f" .log)"
    grep -E " ms \(min|streams|end-to-end" "$f"
  done
done
