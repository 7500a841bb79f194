// The CPU backend (SPEC 6): host-memory key caches with block summaries
// (cpu_request_store.h) and multi-threaded, vectorized DENSE / HISA
// selection. Always built; the peer of the float64 test oracle and the
// serving path on machines without a GPU.
//
//   std::unique_ptr<hisa::Backend> backend = hisa::MakeCpuBackend(0);
//   hisa::Engine engine(options, std::move(backend));
//
// Select runs a batch in five fork-join stages on one thread pool sized at
// construction (the calling thread works too), splitting work across rows
// AND across key ranges so that one decode row over a 128K cache still uses
// every core:
//   1. prepare:        decode each row's query to fp32, pack it (per row);
//   2. block scoring:  J(t, b) for HISA rows with c + 1 > m, over the fp32
//                      block summaries, in ranges of blocks;
//   3. block choice:   blocks 0 and c plus the max(0, m - 2) others of largest
//                      J (ties: lower block), as sorted token ranges (per row);
//                      DENSE rows, and HISA rows with c + 1 <= m, take [0, t];
//   4. token scoring:  I(t, s) over candidate tokens in segments of 512 to
//                      32K tokens; each segment keeps its own top-k, and
//                      drops on the fly the tokens below the k-th best score
//                      any finished segment of its row has seen (a lower
//                      bound on the row's final k-th score: exact);
//   5. top-k:          per row, radix partial selection over the segments'
//                      winners, positions ascending, -1 / NaN padding.
// The packed (score, position) order (topk.h) makes the result independent
// of the segmentation, and a token's score does not depend on which segment
// or tile computed it, so HISA with every block chosen returns exactly
// DENSE's answer.
//
// Kernels: AVX-512 / AVX2+FMA+F16C / scalar, chosen at run time
// (cpu_features.h); fp8 keys are decoded to fp32 tiles of 48 tokens in L1
// and scored against the row's query packed once (score_kernels.h).
//
// Numerics (SPEC 4.4): keys and queries are dequantized to fp32 exactly up
// to one rounding of fp8 * scale (key_decode.h); dot products, the weighted
// ReLU sum over heads and the block sums accumulate in fp32. The only
// difference from the float64 oracle is fp32 rounding of those sums, bounded
// by about (D + H) * 2^-24 * sum_h |w_h| sum_d |q_hd k_sd| for I(t, s), so a
// tolerance of a few times that (per the oracle's token_magnitudes) covers
// every key format; fp8 and bf16 need nothing extra because their decode is
// exact.
//
// Threading: one ThreadPool per backend (num_threads - 1 workers + the
// caller). Select may be called from several threads at once; concurrent
// calls share the pool's workers, and each caller keeps working on its own
// batch. Per-call scratch is allocated per call; per-thread decode tiles are
// thread_local.
//
// Stage times: `times` (when not null) is ADDED to, per stage, with the wall
// time of this call's stages. Stage 4 also runs each segment's local top-k;
// its wall time is split between token_scoring and topk in proportion to the
// thread time spent scoring and selecting.
#ifndef HISA_KERNELS_CPU_CPU_BACKEND_H_
#define HISA_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"

namespace hisa {

struct CpuBackendOptions {
  // Total threads per Select (workers + caller); 0 = hardware concurrency.
  int num_threads = 0;
  // kAuto picks the best tier this CPU runs (AVX-512, AVX2+FMA+F16C,
  // scalar). A forced tier (tests, comparisons) the CPU lacks falls back to
  // the best one below it (cpu::ResolveCpuIsa).
  cpu::CpuIsa isa = cpu::CpuIsa::kAuto;
};

// A CPU backend with `num_threads` threads (0 = hardware concurrency) and the
// best kernels this CPU runs. Never null.
std::unique_ptr<Backend> MakeCpuBackend(int num_threads);
std::unique_ptr<Backend> MakeCpuBackend(const CpuBackendOptions& options);

}  // namespace hisa

#endif  // HISA_KERNELS_CPU_CPU_BACKEND_H_
