#!/usr/bin/env bash
# Configures and builds one build tree.
#   scripts/build.sh <build-dir> [extra cmake args...] [-- targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
cmake_args=(); targets=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; targets=("$@"); break; fi
  cmake_args+=("$1"); shift
done
cuda=OFF
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  cuda=ON
  export PATH=/usr/local/cuda/bin:$PATH
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHISA_ENABLE_CUDA=$cuda "${cmake_args[@]}" >/dev/null
jobs=$(nproc)
if [ ${#targets[@]} -gt 0 ]; then
  ninja -C "$dir" -j "$jobs" "${targets[@]}"
else
  ninja -C "$dir" -j "$jobs"
fi
