// Helper for kernel_registry.h implementations: raises a kernel's dynamic
// shared memory limit once (per process and kernel) and returns its handle.
//
//   return MakeHandle<&TileKernel<S, G>>(TileLayout<S, G>::kBytes);
//
// A failure of cudaFuncSetAttribute is not reported here: it surfaces as the
// launch error of the first launch, which the launcher returns.
#ifndef HISA_KERNELS_CUDA_REGISTRY_UTIL_CUH_
#define HISA_KERNELS_CUDA_REGISTRY_UTIL_CUH_

#include <cuda_runtime.h>

#include <mutex>

#include "kernels/cuda/kernel_registry.h"

namespace hisa::cuda {

// Whether `ctas` CTAs of `smem_bytes` dynamic shared memory each fit on one
// SM (sm_90: 228 KB per SM, 1 KB of it reserved per CTA): the resident
// CTAs per SM a kernel's launch bounds and the planner count on.
constexpr bool FitsPerSm(int ctas, int smem_bytes) {
  return ctas * (smem_bytes + 1024) <= 228 * 1024;
}

// One static once_flag per kernel: Kernel is the function itself.
// `max_smem_bytes` (> smem_bytes): what a launch may ask for instead
// (LaunchSpec::smem_bytes).
template <auto Kernel>
KernelHandle MakeHandle(int smem_bytes, int max_smem_bytes = 0) {
  static std::once_flag once;
  const void* fn = reinterpret_cast<const void*>(Kernel);
  std::call_once(once, [&] {
    const int most = max_smem_bytes > smem_bytes ? max_smem_bytes : smem_bytes;
    if (most > 48 * 1024) {
      // An error here surfaces as a launch failure, reported by the launcher.
      (void)cudaFuncSetAttribute(
          fn, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    }
  });
  KernelHandle h;
  h.fn = fn;
  h.smem_bytes = smem_bytes;
  return h;
}

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_REGISTRY_UTIL_CUH_
