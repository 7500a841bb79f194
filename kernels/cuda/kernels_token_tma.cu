// Instantiation of the bulk-tensor-copy token kernel (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/tma_token_kernel.cuh"

namespace hisa::cuda {

static_assert(FitsPerSm(kTmaTokenCtasPerSm, TmaTokenLayout<false>::kBytes),
              "TMA token kernel must fit kTmaTokenCtasPerSm times per SM");
static_assert(FitsPerSm(kTmaSmemTokenCtasPerSm, TmaTokenLayout<true>::kBytes),
              "TMA token kernel (shared-memory scores) must fit "
              "kTmaSmemTokenCtasPerSm times per SM");

KernelHandle TokenKernelTma(bool smem_scores) {
  if (smem_scores) {
    return MakeHandle<&TmaTokenKernel<true>>(TmaTokenLayout<true>::kBytes);
  }
  return MakeHandle<&TmaTokenKernel<false>>(TmaTokenLayout<false>::kBytes);
}

}  // namespace hisa::cuda
