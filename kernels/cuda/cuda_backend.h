// The CUDA backend (SPEC 6): GPU-resident key caches and block summaries in
// pages of one device reservation made at start, and batched selection
// kernels (DENSE and HISA, prefill and decode shapes, one launch sequence
// per engine batch).
//
//   if (hisa::CudaDeviceAvailable()) {
//     ASSIGN_OR_RETURN(std::unique_ptr<hisa::Backend> backend,
//                      hisa::MakeCudaBackend(/*device=*/0, int64_t{8} << 30));
//   }
//
// MakeCudaBackend reserves ceil(budget / 66 KiB) cache pages plus staging and
// scratch (about 300 MB) with one cudaMalloc, and pinned host staging; it
// returns FAILED_PRECONDITION when the device is not an sm_90 GPU (the
// kernels are built for sm_90a) and RESOURCE_EXHAUSTED when the reservation
// does not fit. Byte accounting: cuda_store.h. Kernels: select_kernels.cuh.
// Numerics (SPEC 4.4): FP8 keys with FP8 queries and D in {64, 128} are
// scored on tensor cores (FP8 products exact, tensor-core fp32
// accumulation: Hopper wgmma for D = 128 and 33..64 heads, mma.sync
// otherwise; block scores on the block means' bf16 copy, or bf16 hi + lo,
// about 16 significant bits, with HISA_CUDA_BLOCK_MEANS_LO=1); every other
// combination runs an fp32 FMA path on dequantized
// values. A/B switches read at creation: HISA_CUDA_MMA_SYNC=1 (no wgmma),
// HISA_CUDA_PAIR_HISA=1 (pair HISA rows), HISA_CUDA_SLOT_SCORES=0,
// HISA_CUDA_PAIR_BLOCKS=0, HISA_CUDA_TMA=0 (token tiles by per-thread
// copies instead of bulk tensor copies), HISA_CUDA_SLOT_SCORE_SCRATCH=0
// (slot scores in the pooled form's slices), HISA_CUDA_SPLIT_SELECT=0 (a
// split row's last item selects it alone), HISA_CUDA_CLUSTER_ITEMS=2..8
// (split selects with that many items per row, even when their clusters
// need several waves), HISA_CUDA_TOKEN_CHOICE=0 (split-select rows read
// the union that the block stage chose), HISA_CUDA_BALANCE_CLUSTERS=0
// (no spread cluster launches: the default scheduling policy and shared
// memory size; LaunchSpec::balance_clusters), HISA_CUDA_TOKENS_SCORE_BLOCKS=0
// (decode batches keep their block launch), HISA_CUDA_BLOCK_MEANS_LO=1
// (block scores from hi + lo means); select_plan.h PlanOptions.
// Stage times (SelectStageTimes): `prepare` (planning into pinned staging)
// and `finish` (the downloaded outputs copied into the rows' results) on
// every batch; the GPU stages
// on one batch in 16 of each select context (the others leave them 0),
// since timing them costs the kernels their overlap.
//
// Thread safety: Backend (backend.h). Selects run concurrently on up to
// DeviceOptions::select_contexts streams; a further Select waits for one.
#ifndef HISA_KERNELS_CUDA_CUDA_BACKEND_H_
#define HISA_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"

namespace hisa {
namespace cuda {
class DeviceState;
struct DeviceOptions;
struct PlanOptions;
}  // namespace cuda

// True when CUDA device 0 exists and is an sm_90 GPU (H100 / H200).
bool CudaDeviceAvailable();

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    int device, int64_t memory_budget_bytes);

class CudaBackend final : public Backend {
 public:
  // Reserves everything per `options` (device_state.h).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(
      const cuda::DeviceOptions& options);
  ~CudaBackend() override;

  absl::string_view name() const override { return "cuda"; }
  std::string device_description() const override;
  absl::StatusOr<std::unique_ptr<RequestStore>> CreateStore(
      const RequestConfig& config) override;
  void Select(absl::Span<const SelectTask> tasks, SelectStageTimes* times,
              HostParallel* parallel) override;

  // The device resources (benchmarks and tests).
  cuda::DeviceState& device() { return *device_; }
  // Planner options used by Select.
  const cuda::PlanOptions& plan_options() const { return *plan_options_; }

 private:
  CudaBackend(std::unique_ptr<cuda::DeviceState> device);
  void RunBatch(absl::Span<const SelectTask> tasks, void* context,
                SelectStageTimes* times, HostParallel* parallel);

  std::unique_ptr<cuda::DeviceState> device_;
  std::unique_ptr<cuda::PlanOptions> plan_options_;
};

}  // namespace hisa

#endif  // HISA_KERNELS_CUDA_CUDA_BACKEND_H_
