// Micro-benchmark of the final per-row select of slot-score HISA rows (the
// tail of the decode token stage, bench --trace's ticket -> tail_end): one
// CTA per row picks the k largest of n slot scores, ties to the lower slot,
// and writes positions in slot order, two ways in the same run:
//   radix: SelectFromSlotScores's primitives (RadixSelectKey from scratch,
//          CompactByKey), the baseline;
//   hist:  SelectFromSlotKeys's (the decode kernel's): a kKeyHistBins
//          histogram of the keys (counted by the scoring CTAs in the
//          kernel, here by the same CTA in its own timed phase), then
//          HistSelectKey (the bin's keys gathered and radix-selected),
//          then the same CompactByKey.
// Each CTA times its phases with clock64 (load + keys, histogram,
// threshold, compaction + writes); the launch is timed with CUDA events
// (median of many runs); every output is checked against a host sort.
//
//   hisa_select_microbench [--rows=64] [--n=8192] [--k=2048] [--reps=200]
//                          [--distinct=0]  (> 0: scores take that many
//                                           values: ties, crowded digits)
//                          [--list_cap=5504] (hist: gather room)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/gpu/cuda_ok.h"
#include "kernels/cuda/select_primitives.cuh"

namespace hisa::cuda {
namespace {

constexpr int kPhases = 5;  // start, keys, histogram, threshold, written

template <bool kHist>
__global__ void __launch_bounds__(kSelectThreads)
    SelectTail(const float* scores, int n, int k, int list_cap,
               int32_t* out_pos, long long* clocks) {
  extern __shared__ __align__(16) uint8_t smem[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(smem);
  uint32_t* hist = reinterpret_cast<uint32_t*>(smem + n * 4);
  uint32_t* list = hist + kKeyHistBins;  // n entries
  RadixShared& rs =
      *reinterpret_cast<RadixShared*>(smem + n * 8 + kKeyHistBins * 4);
  const float* row = scores + static_cast<int64_t>(blockIdx.x) * n;
  int32_t* out = out_pos + static_cast<int64_t>(blockIdx.x) * k;
  long long t[kPhases];
  __syncthreads();
  t[0] = clock64();
  for (int base = 4 * threadIdx.x; base < n; base += 4 * kSelectThreads) {
    const float4 v = __ldcg(reinterpret_cast<const float4*>(row + base));
    keys[base] = max(OrderedKey(v.x), 1u);
    keys[base + 1] = max(OrderedKey(v.y), 1u);
    keys[base + 2] = max(OrderedKey(v.z), 1u);
    keys[base + 3] = max(OrderedKey(v.w), 1u);
  }
  if (kHist) {
    for (int i = threadIdx.x; i < kKeyHistBins; i += kSelectThreads) {
      hist[i] = 0;
    }
  }
  __syncthreads();
  t[1] = clock64();
  if (kHist) {
    for (int i = threadIdx.x; i < n; i += kSelectThreads) {
      atomicAdd(&hist[keys[i] >> kKeyHistShift], 1u);
    }
    __syncthreads();
  }
  t[2] = clock64();
  auto key_of = [&](int i) { return keys[i]; };
  const KeyThreshold th =
      kHist ? HistSelectKey(keys, n, k, hist, list, list_cap, rs)
            : RadixSelectKey(n, k, key_of, rs);
  __syncthreads();
  t[3] = clock64();
  CompactByKey(
      n, key_of, th, [&](int dst, int i) { out[dst] = i; }, rs);
  __syncthreads();
  t[4] = clock64();
  if (threadIdx.x == 0) {
    for (int p = 0; p < kPhases; ++p) clocks[blockIdx.x * kPhases + p] = t[p];
  }
}

int Flag(int argc, char** argv, const char* name, int def) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return std::atoi(argv[i] + prefix.size());
    }
  }
  return def;
}

struct Result {
  double launch_us = 0;
  double phase_us[kPhases - 1] = {};
  int bad_rows = 0;
};

template <bool kHist>
Result Run(const std::vector<float>& scores, int rows, int n, int k,
           int list_cap, int reps) {
  float* d_scores;
  int32_t* d_pos;
  long long* d_clocks;
  CUDA_OK(cudaMalloc(&d_scores, scores.size() * 4));
  CUDA_OK(cudaMalloc(&d_pos, static_cast<size_t>(rows) * k * 4));
  CUDA_OK(cudaMalloc(&d_clocks, static_cast<size_t>(rows) * kPhases * 8));
  CUDA_OK(cudaMemcpy(d_scores, scores.data(), scores.size() * 4,
                     cudaMemcpyHostToDevice));
  const int smem =
      n * 8 + kKeyHistBins * 4 + static_cast<int>(sizeof(RadixShared));
  CUDA_OK(cudaFuncSetAttribute(SelectTail<kHist>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               smem));
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  int clock_khz = 0;
  CUDA_OK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  std::vector<double> ms, phase[kPhases - 1];
  std::vector<long long> clocks(static_cast<size_t>(rows) * kPhases);
  for (int r = 0; r < reps + 5; ++r) {
    CUDA_OK(cudaEventRecord(start));
    SelectTail<kHist>
        <<<rows, kSelectThreads, smem>>>(d_scores, n, k, list_cap, d_pos,
                                         d_clocks);
    CUDA_OK(cudaEventRecord(stop));
    CUDA_OK(cudaEventSynchronize(stop));
    float x = 0;
    CUDA_OK(cudaEventElapsedTime(&x, start, stop));
    if (r < 5) continue;
    ms.push_back(x * 1e3);
    CUDA_OK(cudaMemcpy(clocks.data(), d_clocks, clocks.size() * 8,
                       cudaMemcpyDeviceToHost));
    for (int p = 0; p + 1 < kPhases; ++p) {
      double worst = 0;
      for (int b = 0; b < rows; ++b) {
        worst = std::max<double>(
            worst, clocks[b * kPhases + p + 1] - clocks[b * kPhases + p]);
      }
      phase[p].push_back(worst / clock_khz * 1e3);
    }
  }
  // Check: positions of the k largest (ties to the lower slot), ascending.
  std::vector<int32_t> got(static_cast<size_t>(rows) * k);
  CUDA_OK(cudaMemcpy(got.data(), d_pos, got.size() * 4,
                     cudaMemcpyDeviceToHost));
  Result res;
  for (int b = 0; b < rows; ++b) {
    std::vector<int32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    const float* s = scores.data() + static_cast<size_t>(b) * n;
    std::stable_sort(idx.begin(), idx.end(),
                     [&](int x, int y) { return s[x] > s[y]; });
    idx.resize(k);
    std::sort(idx.begin(), idx.end());
    if (!std::equal(idx.begin(), idx.end(), got.begin() + b * k)) {
      ++res.bad_rows;
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  res.launch_us = median(ms);
  for (int p = 0; p + 1 < kPhases; ++p) res.phase_us[p] = median(phase[p]);
  CUDA_OK(cudaFree(d_scores));
  CUDA_OK(cudaFree(d_pos));
  CUDA_OK(cudaFree(d_clocks));
  return res;
}

int Main(int argc, char** argv) {
  const int rows = Flag(argc, argv, "rows", 64);
  const int n = Flag(argc, argv, "n", 8192);
  const int k = Flag(argc, argv, "k", 2048);
  const int reps = Flag(argc, argv, "reps", 200);
  const int distinct = Flag(argc, argv, "distinct", 0);
  // Gather room of the decode kernel's select (TmaTokenLayout<false>::
  // kSelectListCap): a bigger threshold bin is split once more first.
  const int list_cap = std::min(n, Flag(argc, argv, "list_cap", 5504));
  if (n % 4 != 0 || n > kSlotSelectCap || k < 1 || k > n) {
    std::fprintf(stderr, "need n %% 4 == 0, n <= %d, 1 <= k <= n\n",
                 kSlotSelectCap);
    return 1;
  }
  const unsigned seed = std::random_device{}();
  std::printf("select tail: %d rows x top-%d of %d, %s, seed %u\n", rows, k,
              n, distinct > 0 ? "quantized scores" : "distinct scores", seed);
  // Scores like a decode row's: a weighted sum of 64 ReLU'd dot products,
  // positive and within a few tenths of their mean; --distinct rounds them
  // to that many levels.
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(1.0f, 0.15f);
  std::vector<float> scores(static_cast<size_t>(rows) * n);
  for (float& s : scores) {
    s = normal(rng);
    if (distinct > 0) {
      s = std::round(std::clamp(s - 0.5f, 0.f, 1.f) * (distinct - 1));
    }
  }
  const Result radix = Run<false>(scores, rows, n, k, list_cap, reps);
  const Result hist = Run<true>(scores, rows, n, k, list_cap, reps);
  for (const auto& [name, r] : {std::pair<const char*, const Result&>{
                                    "radix", radix},
                                {"hist ", hist}}) {
    std::printf(
        "%s launch %.2f us | slowest CTA: keys %.2f, histogram %.2f, "
        "threshold %.2f, compaction + writes %.2f us | %s\n",
        name, r.launch_us, r.phase_us[0], r.phase_us[1], r.phase_us[2],
        r.phase_us[3], r.bad_rows == 0 ? "correct" : "WRONG");
  }
  std::printf("hist / radix, threshold + compaction: %.2fx\n",
              (hist.phase_us[2] + hist.phase_us[3]) /
                  (radix.phase_us[2] + radix.phase_us[3]));
  return radix.bad_rows == 0 && hist.bad_rows == 0 ? 0 : 1;
}

}  // namespace
}  // namespace hisa::cuda

int main(int argc, char** argv) { return hisa::cuda::Main(argc, argv); }
