// RequestStore of the CUDA backend: the keys and block summaries of every
// layer of one request, in device pages (select_layout.h), with host-side
// page tables.
//
//   CudaRequestStore store(device_state, config);
//   RETURN_IF_ERROR(store.Append(chunk));        // chunk.first_position == length
//   int64_t bytes = store.bytes_reserved();      // pages * kPageBytes
//
// Byte accounting (what the engine's budget counts): every page the store
// holds, kPageBytes each: per layer ceil(L / P) key pages (P tokens of keys
// and fp8 scales per page: 496 tokens for fp8 with D = 128, i.e. 132 B per
// token plus page slack) and ceil(ceil(L / B) / BPP) summary pages (BPP
// blocks of fp32 sums, bf16 mean hi/lo and a count: 63 blocks per page for
// D = 128). The device pool holds ceil(budget / kPageBytes) pages, so
// whatever the budget admits fits.
//
// Thread safety: as RequestStore (backend.h). Append and Matches use the
// device's append staging under its mutex and return when the device work is
// done, so a later Select sees the new keys.
#ifndef HISA_KERNELS_CUDA_CUDA_STORE_H_
#define HISA_KERNELS_CUDA_CUDA_STORE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/device_state.h"
#include "kernels/cuda/select_layout.h"
#include "kernels/types.h"

namespace hisa::cuda {

class CudaRequestStore final : public RequestStore {
 public:
  struct Layer {
    int64_t length = 0;
    std::vector<uint32_t> key_pages;
    std::vector<uint32_t> summary_pages;
  };

  CudaRequestStore(DeviceState* device, const RequestConfig& config);
  ~CudaRequestStore() override;

  int64_t length(int layer) const override { return layers_[layer].length; }
  int64_t bytes_reserved() const override { return pages_ * kPageBytes; }
  int64_t BytesAfterAppend(int layer, int64_t num_tokens) const override;
  absl::StatusOr<bool> Matches(const KeyChunk& chunk) const override;
  absl::Status Append(const KeyChunk& chunk) override;

  const RequestConfig& config() const { return config_; }
  const PageGeometry& geometry() const { return geo_; }
  const Layer& layer(int i) const { return layers_[i]; }

 private:
  DeviceState* const device_;
  const RequestConfig config_;
  const PageGeometry geo_;
  std::vector<Layer> layers_;
  int64_t pages_ = 0;
};

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_CUDA_STORE_H_
