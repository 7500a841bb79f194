// The resources object of one GPU (FAISS GpuResources style): the single
// device reservation made at start and everything carved from it, with no
// cudaMalloc afterwards.
//
//   ASSIGN_OR_RETURN(auto state, DeviceState::Create(options));
//   std::vector<uint32_t> pages;
//   RETURN_IF_ERROR(state->AllocatePages(3, &pages));   // all or nothing
//   SelectContext* ctx = state->AcquireContext();        // blocks if none free
//   ...
//   state->ReleaseContext(ctx);
//
// The reservation holds: the cache pages (ceil(budget / kPageBytes) pages of
// kPageBytes, so any set of requests within the byte budget fits, with no
// fragmentation because every page has the same size), the append staging
// buffer, and one scratch region per select context. Pinned host buffers of
// the same sizes are allocated once too.
//
// Thread safety: AllocatePages / FreePages / AcquireContext / ReleaseContext
// may be called from any thread. The append staging is shared: hold
// append_mutex() while using it (and its stream).
#ifndef HISA_KERNELS_CUDA_DEVICE_STATE_H_
#define HISA_KERNELS_CUDA_DEVICE_STATE_H_

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "kernels/cuda/select_plan.h"

namespace hisa::cuda {

struct DeviceOptions {
  int device = 0;
  // Cache budget; the page pool holds ceil(budget / kPageBytes) pages.
  int64_t memory_budget_bytes = int64_t{4} << 30;
  // Device scratch (and pinned host staging) per select context.
  int64_t select_scratch_bytes = int64_t{128} << 20;
  int select_contexts = 2;
  // Device and pinned host staging for appends and Matches.
  int64_t append_staging_bytes = int64_t{32} << 20;
};

// One in-flight Select: a stream, device scratch and pinned host staging,
// and the plan of its batch (select_plan.h; its vectors keep their capacity
// from batch to batch, so planning a batch no bigger than an earlier one
// allocates nothing).
struct SelectContext {
  SelectPlan plan;
  cudaStream_t stream = nullptr;
  uint8_t* device = nullptr;
  int64_t device_bytes = 0;
  uint8_t* host = nullptr;
  int64_t host_bytes = 0;
  cudaEvent_t events[6] = {};
  // Batches run on this context (CudaBackend samples stage times by it).
  int64_t batches = 0;
};

// INTERNAL status for a failed CUDA call: "<what>: <cuda error string>".
absl::Status CudaError(cudaError_t err, const char* what);

class DeviceState {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceState>> Create(
      const DeviceOptions& options);
  ~DeviceState();

  DeviceState(const DeviceState&) = delete;
  DeviceState& operator=(const DeviceState&) = delete;

  int device() const { return options_.device; }
  int num_sms() const { return num_sms_; }
  const std::string& device_name() const { return device_name_; }
  uint8_t* arena() const { return base_; }
  int64_t num_pages() const { return num_pages_; }
  // The cache pages as one 2-D tensor for the bulk copy engine: rows of 128
  // bytes (row r at arena + 128 r, so page p's byte x is row
  // p * kPageBytes / 128 + x / 128), boxes of 128 rows x 128 bytes landing
  // in shared memory with the 128-byte swizzle of the wgmma operands. Null
  // when the driver offers no tensor-map encoder (the kernels then use
  // per-thread copies).
  const CUtensorMap* key_tensor_map() const {
    return has_key_map_ ? &key_map_ : nullptr;
  }
  int64_t free_pages() const;

  // Appends `n` page indices to `out`, or leaves it unchanged and returns
  // RESOURCE_EXHAUSTED when fewer than n pages are free.
  absl::Status AllocatePages(int64_t n, std::vector<uint32_t>* out);
  void FreePages(absl::Span<const uint32_t> pages);

  SelectContext* AcquireContext();
  void ReleaseContext(SelectContext* context);

  absl::Mutex* append_mutex() { return &append_mu_; }
  cudaStream_t append_stream() const { return append_stream_; }
  uint8_t* append_device() const { return append_device_; }
  uint8_t* append_host() const { return append_host_; }
  int64_t append_staging_bytes() const { return options_.append_staging_bytes; }

 private:
  explicit DeviceState(const DeviceOptions& options) : options_(options) {}

  const DeviceOptions options_;
  int num_sms_ = 0;
  std::string device_name_;
  uint8_t* base_ = nullptr;  // the one reservation; pages first
  int64_t num_pages_ = 0;
  CUtensorMap key_map_{};
  bool has_key_map_ = false;
  uint8_t* append_device_ = nullptr;
  uint8_t* append_host_ = nullptr;
  cudaStream_t append_stream_ = nullptr;
  std::vector<std::unique_ptr<SelectContext>> contexts_;

  mutable absl::Mutex pages_mu_;
  std::vector<uint32_t> free_list_ ABSL_GUARDED_BY(pages_mu_);

  absl::Mutex contexts_mu_;
  std::vector<SelectContext*> idle_contexts_ ABSL_GUARDED_BY(contexts_mu_);

  absl::Mutex append_mu_;
};

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_DEVICE_STATE_H_
