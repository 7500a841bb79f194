// Instantiations of the FP8 tensor-core token kernels (kernel_registry.h).
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/registry_util.cuh"
#include "kernels/cuda/select_kernels.cuh"

namespace hisa::cuda {
namespace {

template <int MT, int KS, int G>
KernelHandle Token() {
  using S = Fp8TokenScorer<MT, KS, G>;
  return MakeHandle<&TileKernel<S, G>>(TileLayout<S, G>::kBytes);
}

template <int MT, int KS>
KernelHandle TokenRows(int rows) {
  return rows == 1 ? Token<MT, KS, 1>() : Token<MT, KS, 2>();
}

template <int MT>
KernelHandle TokenKs(int ks, int rows) {
  if (ks == 2) return TokenRows<MT, 2>(rows);
  return TokenRows<MT, 4>(rows);
}

}  // namespace

static_assert(FitsPerSm(kWgmmaTokenCtasPerSm,
                        TileLayout<WgmmaTokenScorer<2>, 2>::kBytes),
              "wgmma token kernel (2 rows) must fit twice per SM");
static_assert(FitsPerSm(kWgmmaTokenCtasPerSm,
                        TileLayout<WgmmaTokenScorer<1>, 1>::kBytes),
              "wgmma token kernel (1 row) must fit twice per SM");

template <int G, bool kTma>
KernelHandle Wgmma() {
  using S = WgmmaTokenScorer<G, kTma>;
  return MakeHandle<&TileKernel<S, G>>(TileLayout<S, G>::kBytes);
}

KernelHandle TokenKernelWgmma(int rows, bool tma) {
  if (rows == 1) return tma ? Wgmma<1, true>() : Wgmma<1, false>();
  if (rows == 2) return tma ? Wgmma<2, true>() : Wgmma<2, false>();
  return {};
}

KernelHandle TokenKernelFp8(int mt, int ks, int rows) {
  if ((ks != 2 && ks != 4) || (rows != 1 && rows != 2)) return {};
  switch (mt) {
    case 1: return TokenKs<1>(ks, rows);
    case 2: return TokenKs<2>(ks, rows);
    case 4: return TokenKs<4>(ks, rows);
  }
  return {};
}

}  // namespace hisa::cuda
