// Instantiation of the bulk-tensor-copy token kernel (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/tma_token_kernel.cuh"

namespace hisa::cuda {

// The resident CTAs per SM the planner counts on (228 KB of shared memory,
// 1 KB reserved per CTA).
static_assert(kTmaTokenCtasPerSm * (TmaTokenLayout<false>::kBytes + 1024) <=
                  228 * 1024,
              "TMA token kernel must fit kTmaTokenCtasPerSm times per SM");
static_assert(kTmaSmemTokenCtasPerSm * (TmaTokenLayout<true>::kBytes + 1024) <=
                  228 * 1024,
              "TMA token kernel (shared-memory scores) must fit "
              "kTmaSmemTokenCtasPerSm times per SM");

KernelHandle TokenKernelTma(bool smem_scores) {
  if (smem_scores) {
    return MakeHandle<&TmaTokenKernel<true>>(TmaTokenLayout<true>::kBytes);
  }
  return MakeHandle<&TmaTokenKernel<false>>(TmaTokenLayout<false>::kBytes);
}

}  // namespace hisa::cuda
