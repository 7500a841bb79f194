// Google Benchmark of the CUDA backend's host-side batch planning
// (select_plan.h BuildSelectPlanInto: what CudaBackend::Select does before
// its upload, on the request path of every batch), against writing the same
// number of bytes with memcpy into the same buffer, in the same run: the
// floor of producing the upload image. Needs no GPU: the request stores are
// CudaRequestStore(nullptr), which hold no pages, so the per-row page tables
// (about 550 bytes per row at 64K) are the one part of a real image left
// out. Shapes at L = 64K, fp8, H = 64, D = 128, B = 128, m = 64, k = 2048:
//   decode/64, decode/256   that many requests x 1 HISA row at t = L - 1
//                           (64 rows plan split selects as clusters on an
//                           H200's cluster residency; 256 rows do not),
//   prefill/1024            1024 HISA rows of one request at the end.
//
//   build/bench/gpu/hisa_plan_benchmark [--benchmark_filter=...]
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_store.h"
#include "kernels/cuda/select_layout.h"
#include "kernels/cuda/select_plan.h"
#include "kernels/types.h"

namespace hisa::cuda {
namespace {

constexpr int kHeads = 64, kDim = 128, kLength = 65536;

// One batch: `requests` stores with `rows_per_request` rows each, the last
// positions of a kLength-token context.
struct Batch {
  RequestConfig config{1, kDim, 128, KeyFormat::kFp8E4M3,
                       BlockPooling::kMean};
  std::vector<std::unique_ptr<CudaRequestStore>> stores;
  std::vector<QueryRow> rows;
  std::vector<RowResult> results;
  std::vector<SelectTask> tasks;
  // Every row's query (rows hold views).
  const std::vector<uint8_t> q = std::vector<uint8_t>(kHeads * kDim, 0x38);
  const std::vector<float> scales = std::vector<float>(kHeads, 0.25f);
  const std::vector<float> weights = std::vector<float>(kHeads, 0.5f);

  Batch(int requests, int rows_per_request) {
    for (int r = 0; r < requests; ++r) {
      stores.push_back(std::make_unique<CudaRequestStore>(nullptr, config));
      for (int i = 0; i < rows_per_request; ++i) {
        QueryRow row;
        row.request_id = std::to_string(r);
        row.position = kLength - rows_per_request + i;
        row.num_heads = kHeads;
        row.q_format = KeyFormat::kFp8E4M3;
        row.q = q;
        row.q_scales = scales;
        row.weights = weights;
        row.mode = SelectMode::kHisa;
        row.k = 2048;
        row.m = 64;
        rows.push_back(std::move(row));
      }
    }
    results.resize(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      tasks.push_back(SelectTask{stores[i / rows_per_request].get(), &config,
                                 &rows[i], SelectMode::kHisa, &results[i]});
    }
  }
};

// An H200's planner options (132 SMs; clusters of the split-select kernel
// resident at once by size, as CudaBackend queries them).
PlanOptions H200() {
  PlanOptions o;
  o.num_sms = 132;
  o.use_tma = true;
  o.clusters_known = true;
  const int resident[kMaxClusterItems + 1] = {0, 0, 198, 124, 92,
                                              69, 62, 47, 45};
  for (int c = 0; c <= kMaxClusterItems; ++c) {
    o.clusters_resident[c] = resident[c];
  }
  return o;
}

// state.range(0): requests, state.range(1): rows per request.
void BM_Plan(benchmark::State& state) {
  const Batch batch(static_cast<int>(state.range(0)),
                    static_cast<int>(state.range(1)));
  const PlanOptions options = H200();
  std::vector<uint8_t> image(size_t{256} << 20);
  SelectPlan plan;  // reused, as the backend's thread reuses its own
  for (auto _ : state) {
    const absl::Status s = BuildSelectPlanInto(
        batch.tasks, options, image.data(),
        static_cast<int64_t>(image.size()), &plan);
    if (!s.ok() || plan.image_bytes > static_cast<int64_t>(image.size())) {
      state.SkipWithError("plan failed or does not fit");
      break;
    }
    benchmark::DoNotOptimize(image.data());
  }
  state.SetBytesProcessed(state.iterations() * plan.image_bytes);
  state.counters["image_bytes"] = static_cast<double>(plan.image_bytes);
  state.counters["rows"] = static_cast<double>(batch.rows.size());
}

// The baseline: memcpy of the same plan's image size.
void BM_CopyImageBytes(benchmark::State& state) {
  const Batch batch(static_cast<int>(state.range(0)),
                    static_cast<int>(state.range(1)));
  SelectPlan plan;
  std::vector<uint8_t> image(size_t{256} << 20);
  if (!BuildSelectPlanInto(batch.tasks, H200(), image.data(),
                           static_cast<int64_t>(image.size()), &plan)
           .ok()) {
    state.SkipWithError("plan failed");
    return;
  }
  const std::vector<uint8_t> src(plan.image_bytes, 0x5A);
  for (auto _ : state) {
    std::memcpy(image.data(), src.data(), src.size());
    benchmark::DoNotOptimize(image.data());
  }
  state.SetBytesProcessed(state.iterations() * plan.image_bytes);
  state.counters["image_bytes"] = static_cast<double>(plan.image_bytes);
}

// Both benchmarks run the same batches.
void Batches(benchmark::internal::Benchmark* b) {
  b->ArgNames({"requests", "rows"})
      ->Args({64, 1})
      ->Args({256, 1})
      ->Args({1, 1024})
      ->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_Plan)->Apply(Batches);
BENCHMARK(BM_CopyImageBytes)->Apply(Batches);

}  // namespace
}  // namespace hisa::cuda

BENCHMARK_MAIN();
