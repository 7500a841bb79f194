// Append path kernels: copy a chunk of keys into its layer's pages and
// update the summaries of the blocks it touches (and only those).
//
//   AppendLaunch a = ...;           // device pointers, see below
//   cudaError_t err = LaunchAppend(a, stream);
//
// Contract: tokens [first_pos, first_pos + n) are the next tokens of the
// layer (every earlier token is stored, and the pages covering the range
// exist). The summary of a block that already holds tokens is extended from
// its stored running sum (kMean) or max (kMax), count, and recomputed
// mean_hi / mean_lo; a block that starts in this range starts from empty.
// Asynchronous on `stream`; the staging buffers must stay valid until it
// completes.
#ifndef HISA_KERNELS_CUDA_APPEND_KERNELS_H_
#define HISA_KERNELS_CUDA_APPEND_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/select_layout.h"

namespace hisa::cuda {

struct AppendLaunch {
  uint8_t* arena = nullptr;  // page p at arena + p * kPageBytes
  PageGeometry geo;
  // Page indices of key pages first_key_page, first_key_page + 1, ...
  // covering the range, and of summary pages likewise (device memory).
  const uint32_t* key_pages = nullptr;
  int64_t first_key_page = 0;
  const uint32_t* summary_pages = nullptr;
  int64_t first_summary_page = 0;
  int64_t first_pos = 0;
  int64_t n = 0;
  // The chunk as sent: n * row_bytes key bytes; n fp32 scales for fp8.
  const uint8_t* keys = nullptr;
  const float* scales = nullptr;
};

cudaError_t LaunchAppend(const AppendLaunch& a, cudaStream_t stream);

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_APPEND_KERNELS_H_
