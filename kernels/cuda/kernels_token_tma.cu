// Instantiation of the bulk-tensor-copy token kernel (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/tma_token_kernel.cuh"

namespace hisa::cuda {

static_assert(FitsPerSm(kTmaTokenCtasPerSm, TmaTokenLayout::kBytes),
              "TMA token kernel must fit kTmaTokenCtasPerSm times per SM");
static_assert(kTmaSpreadSmemBytes >= TmaTokenLayout::kBytes &&
                  FitsPerSm(kTmaSpreadCtasPerSm, kTmaSpreadSmemBytes) &&
                  !FitsPerSm(kTmaSpreadCtasPerSm + 1, kTmaSpreadSmemBytes),
              "a spread launch must hold kTmaSpreadCtasPerSm CTAs per SM");

KernelHandle TokenKernelTma(bool pooled) {
  if (pooled) {
    return MakeHandle<&TmaTokenKernel<true>>(TmaTokenLayout::kBytes);
  }
  // Clustered (split-select) launches may be spread.
  return MakeHandle<&TmaTokenKernel<false>>(TmaTokenLayout::kBytes,
                                            kTmaSpreadSmemBytes);
}

}  // namespace hisa::cuda
