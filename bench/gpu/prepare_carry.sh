#!/usr/bin/env bash
# On a build machine without a GPU: builds hisa_gpu_test and hisa_gpu_bench
# and copies them, stripped, with the shared libraries they load (Abseil; and
# libstdc++ / libgcc_s as a fallback) into build-gpu-carry/ (ignored by git),
# for bench/gpu_suite.sh on a GPU machine that lacks Abseil and GoogleTest.
#
#   bench/gpu/prepare_carry.sh [build-dir]      # default build-cuda
#   HISA_JOBS=1 bench/gpu/prepare_carry.sh      # build jobs (default 2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build-cuda}
DEST=$ROOT/build-gpu-carry
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DHISA_ENABLE_CUDA=ON -DHISA_ENABLE_SERVICE=OFF > /dev/null
ninja -C "$BUILD" -j${HISA_JOBS:-2} hisa_gpu_test hisa_gpu_bench hisa_select_microbench hisa_l2_bench
rm -rf "$DEST"
mkdir -p "$DEST/lib" "$DEST/lib-stdcxx"
for b in tests/gpu/hisa_gpu_test bench/gpu/hisa_gpu_bench bench/gpu/hisa_select_microbench bench/gpu/hisa_l2_bench; do
  strip -o "$DEST/$(basename $b)" "$BUILD/$b"
done
for lib in $(ldd "$DEST/hisa_gpu_test" "$DEST/hisa_gpu_bench" | awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libabsl_*) cp -L "$lib" "$DEST/lib/" ;;
    libstdc++*|libgcc_s*) cp -L "$lib" "$DEST/lib-stdcxx/" ;;
  esac
done
du -sh "$DEST"
