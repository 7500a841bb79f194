// Instantiations of the generic (any format) kernels (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/select_kernels.cuh"

namespace hisa::cuda {
namespace {

template <int G, bool kBlocks>
KernelHandle Generic() {
  using S = GenericScorer<G, kBlocks>;
  return MakeHandle<&TileKernel<S, G>>(TileLayout<S, G>::kBytes);
}

}  // namespace

KernelHandle TokenKernelGeneric(int rows) {
  if (rows == 1) return Generic<1, false>();
  if (rows == 2) return Generic<2, false>();
  return {};
}

KernelHandle BlockKernelGeneric(int rows) {
  if (rows == 1) return Generic<1, true>();
  if (rows == 2) return Generic<2, true>();
  return {};
}

}  // namespace hisa::cuda
