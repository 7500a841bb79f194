#!/usr/bin/env bash
# Sets up and runs every test (the README's test command; CI runs it too):
#   1. Release build with -Werror (CUDA sources compiled when nvcc exists),
#      every test (GPU-labelled tests only when a GPU is present);
#   2. ASan + UBSan build (CPU backend), every non-GPU test;
#   3. ThreadSanitizer build (CPU backend): the concurrent tests (the engine
#      under concurrent append/select/release/expiry; the server's batcher,
#      executor and integration tests; the client against a live server).
# Build trees: build/, build-asan/, build-tsan/. Needs root or sudo for
# apt-get on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

gpu_filter=(-LE gpu)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu_filter=()
fi

echo "== [1/3] release build (-Werror)"
scripts/build.sh build -DHISA_WERROR=ON
ctest --test-dir build --output-on-failure -j "$(nproc)" "${gpu_filter[@]}"

echo "== [2/3] ASan + UBSan build"
# The test binaries and the server and CLI they start, not the benchmarks
# and tools (the release build above compiles those): minutes less on CI.
scripts/build.sh build-asan -DHISA_SANITIZE=address -DHISA_ENABLE_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -- hisa_server hisa_cli
mapfile -t asan_tests < <(ninja -C build-asan -t targets all |
  sed -n 's#^\(tests/[^:]*\): CXX_EXECUTABLE_LINKER.*#\1#p')
ninja -C build-asan -j "$(nproc)" "${asan_tests[@]}"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -LE gpu

echo "== [3/3] ThreadSanitizer build"
# Only the binaries of the tests below (and the server and CLI that the
# integration and end-to-end tests start): a minute less than the whole tree.
tsan_tests='^(EngineConcurrency|ServiceIntegrationTest|Formats/WireEqualsEngineTest|SelectBatcherTest|ExecutorTest|ServiceMetricsTest|ClientE2eTest|ClientLibraryTest)'
scripts/build.sh build-tsan -DHISA_SANITIZE=thread -DHISA_ENABLE_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -- hisa_engine_concurrency_test \
  hisa_service_integration_test hisa_server_unit_test hisa_client_e2e_test \
  hisa_client_library_test hisa_server hisa_cli
ctest --test-dir build-tsan --output-on-failure -j "$(nproc)" -R "$tsan_tests"
