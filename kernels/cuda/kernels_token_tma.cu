// Instantiation of the bulk-tensor-copy token kernel (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/tma_token_kernel.cuh"

namespace hisa::cuda {

// kTmaTokenCtasPerSm CTAs per SM (228 KB of shared memory, 1 KB reserved
// per CTA).
static_assert(kTmaTokenCtasPerSm * (TmaTokenLayout::kBytes + 1024) <=
                  228 * 1024,
              "TMA token kernel must fit kTmaTokenCtasPerSm times per SM");

KernelHandle TokenKernelTma() {
  return MakeHandle<&TmaTokenKernel>(TmaTokenLayout::kBytes);
}

}  // namespace hisa::cuda
