// Instantiations of the bf16 hi/lo tensor-core block kernel
// (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/select_kernels.cuh"

namespace hisa::cuda {
namespace {

template <int MT, int KS, int G>
KernelHandle Block() {
  using S = Bf16BlockScorer<MT, KS, G>;
  static_assert(FitsPerSm(S::kMinBlocks, TileLayout<S, G>::kBytes),
                "block kernel does not fit kMinBlocks CTAs per SM");
  return MakeHandle<&TileKernel<S, G>>(TileLayout<S, G>::kBytes);
}

template <int MT, int KS>
KernelHandle BlockRows(int rows) {
  return rows == 1 ? Block<MT, KS, 1>() : Block<MT, KS, 2>();
}

template <int MT>
KernelHandle BlockKs(int ks, int rows) {
  if (ks == 4) return BlockRows<MT, 4>(rows);
  return BlockRows<MT, 8>(rows);
}

}  // namespace

KernelHandle BlockKernelBf16(int mt, int ks, int rows) {
  if ((ks != 4 && ks != 8) || (rows != 1 && rows != 2)) return {};
  switch (mt) {
    case 1: return BlockKs<1>(ks, rows);
    case 2: return BlockKs<2>(ks, rows);
    case 4: return BlockKs<4>(ks, rows);
    case 8: return BlockKs<8>(ks, rows);
  }
  return {};
}

}  // namespace hisa::cuda
