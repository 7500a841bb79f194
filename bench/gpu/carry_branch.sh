#!/usr/bin/env bash
# Adds another commit's GPU binaries to build-gpu-carry/ for a same-call
# A/B on the GPU machine: builds hisa_gpu_bench and hisa_gpu_test of REV in
# a git worktree (build-branch/<name>/, ignored) and copies them, stripped,
# as build-gpu-carry/hisa_gpu_bench_<name> and hisa_gpu_test_<name>. Run it
# after bench/gpu/prepare_carry.sh (which empties build-gpu-carry/); the
# carried Abseil libraries serve both builds.
#
#   bash bench/gpu/prepare_carry.sh
#   bash bench/gpu/carry_branch.sh exp/compact-runs-s18 compact
#   bash bench/gpu/carry_branch.sh main~1 before
#   # on the device (carry build-gpu-carry):
#   OUT=$OUT ROUNDS=2 BENCH_ARGS="--lengths=65536 --shapes=causal" \
#     bash bench/gpu/sweep.sh new= compact=EXE=build-gpu-carry/hisa_gpu_bench_compact
#   LD_LIBRARY_PATH=build-gpu-carry/lib build-gpu-carry/hisa_gpu_test_compact
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 REV NAME" >&2
  exit 2
fi
REV=$1
NAME=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=$ROOT/build-gpu-carry
TREE=$ROOT/build-branch/$NAME
[[ -d $DEST ]] || { echo "run bench/gpu/prepare_carry.sh first" >&2; exit 1; }
git -C "$ROOT" worktree remove --force "$TREE" 2> /dev/null || rm -rf "$TREE"
git -C "$ROOT" worktree add --detach "$TREE" "$REV" > /dev/null
cmake -S "$TREE" -B "$TREE/build" -G Ninja -DHISA_ENABLE_CUDA=ON \
  -DHISA_ENABLE_SERVICE=OFF > /dev/null
ninja -C "$TREE/build" -j"${HISA_JOBS:-2}" hisa_gpu_bench hisa_gpu_test
strip -o "$DEST/hisa_gpu_bench_$NAME" "$TREE/build/bench/gpu/hisa_gpu_bench"
strip -o "$DEST/hisa_gpu_test_$NAME" "$TREE/build/tests/gpu/hisa_gpu_test"
git -C "$ROOT" worktree remove --force "$TREE"
du -sh "$DEST"
