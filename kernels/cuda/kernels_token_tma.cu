// Instantiation of the bulk-tensor-copy token kernel (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/tma_token_kernel.cuh"

namespace hisa::cuda {

static_assert(FitsPerSm(kTmaTokenCtasPerSm, TmaTokenLayout::kBytes),
              "TMA token kernel must fit kTmaTokenCtasPerSm times per SM");

KernelHandle TokenKernelTma(bool pooled) {
  if (pooled) {
    return MakeHandle<&TmaTokenKernel<true>>(TmaTokenLayout::kBytes);
  }
  return MakeHandle<&TmaTokenKernel<false>>(TmaTokenLayout::kBytes);
}

}  // namespace hisa::cuda
