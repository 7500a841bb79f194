// Google Benchmark of the compact position codec (proto/compact_positions.h)
// on the rows the service returns, against the raw int32 form it replaces
// (a copy of the k positions: what a server without the compact form would
// hand to protobuf), in the same run:
//   hisa_row   2048 positions = a quarter of the slots of 64 blocks of 128
//              chosen among 512 (a HISA decode row at 64K; bitmask form),
//   dense_row  2048 positions spread over 64K tokens (delta form).
// The server encodes every row of a message on one executor thread and the
// client decodes every row, so per-row time adds up over a 64-row message.
//
//   build/bench/codec/hisa_codec_benchmark [--benchmark_filter=...]
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "proto/compact_positions.h"

namespace hisa {
namespace {

constexpr int kK = 2048;
constexpr int kBlock = 128;

// Ascending positions, -1 padded to kK; fixed seed: the same rows each run.
std::vector<int32_t> HisaRow() {
  std::mt19937 rng(7);
  std::vector<int32_t> blocks(512);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin() + 1, blocks.end() - 1, rng);
  blocks.resize(62);
  blocks.push_back(511);
  std::vector<int32_t> slots;
  for (int32_t b : blocks) {
    for (int i = 0; i < kBlock; ++i) slots.push_back(b * kBlock + i);
  }
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(kK);
  std::sort(slots.begin(), slots.end());
  return slots;
}

std::vector<int32_t> DenseRow() {
  std::mt19937 rng(11);
  std::vector<int32_t> all(65536);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(kK);
  std::sort(all.begin(), all.end());
  return all;
}

const std::vector<int32_t>& Row(int which) {
  static const std::vector<int32_t> hisa = HisaRow();
  static const std::vector<int32_t> dense = DenseRow();
  return which == 0 ? hisa : dense;
}

void BM_Encode(benchmark::State& state) {
  const std::vector<int32_t>& row = Row(static_cast<int>(state.range(0)));
  v1::CompactPositions wire;
  for (auto _ : state) {
    EncodePositions(row, kBlock, &wire);
    benchmark::DoNotOptimize(wire);
  }
  state.counters["bytes"] = static_cast<double>(wire.ByteSizeLong());
  state.SetLabel(state.range(0) == 0 ? "hisa_row" : "dense_row");
}

void BM_Decode(benchmark::State& state) {
  const std::vector<int32_t>& row = Row(static_cast<int>(state.range(0)));
  v1::CompactPositions wire;
  EncodePositions(row, kBlock, &wire);
  for (auto _ : state) {
    auto decoded = DecodePositions(wire, kK);
    benchmark::DoNotOptimize(decoded);
    if (!decoded.ok() || *decoded != row) state.SkipWithError("bad decode");
  }
  state.SetLabel(state.range(0) == 0 ? "hisa_row" : "dense_row");
}

// Baseline: the raw int32 positions, copied once (no compact form).
void BM_RawInt32Copy(benchmark::State& state) {
  const std::vector<int32_t>& row = Row(static_cast<int>(state.range(0)));
  std::vector<int32_t> out(kK);
  for (auto _ : state) {
    std::memcpy(out.data(), row.data(), kK * sizeof(int32_t));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["bytes"] = kK * sizeof(int32_t);
  state.SetLabel(state.range(0) == 0 ? "hisa_row" : "dense_row");
}

BENCHMARK(BM_RawInt32Copy)->Arg(0)->Arg(1);
BENCHMARK(BM_Encode)->Arg(0)->Arg(1);
BENCHMARK(BM_Decode)->Arg(0)->Arg(1);

}  // namespace
}  // namespace hisa

BENCHMARK_MAIN();
