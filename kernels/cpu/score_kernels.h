// The indexer score kernel of the CPU backend (SPEC 3):
//   out[j] = sum_h w_h * ReLU(q_h . key_j)
// for fp32 keys, against one query row packed once per row. The same kernel
// scores tokens (keys decoded to fp32 tiles) and blocks (the fp32 summaries).
//
//   AlignedBuffer<float> packed;
//   packed.Allocate(PackedQueryFloats(H, D));
//   PackQuery(isa, q, w, H, D, packed.data());       // q[H][D] fp32, w[H]
//   ScoreKeys(isa, packed.data(), H, D, keys, /*stride=*/D, n, scores);
//
// Packed query layout (both ISAs): heads are padded to Hpad = 8 * ceil(H/8)
// with q = 0 and w = 0 (a padded head contributes w * ReLU(0) = 0). The
// Hpad / 8 head vectors form groups of up to 4; group g is stored as
// [D][8 * width_g] floats (the transpose of its queries), groups back to
// back, followed by the Hpad weights. The AVX2 kernel keeps a 3-key x
// 4-head-vector block of accumulators in registers (12 FMA chains: more than
// the 8 needed to cover the FMA latency on two ports), broadcasts one value
// per key per d and takes the group's 4 query vectors as FMA memory operands
// from L1, where the query group (16 KiB at D = 128) and a 48-key tile
// (24 KiB) stay resident. Narrower groups (H not a multiple of 32) take 3, 4
// or 8 keys at a time. The weighted ReLU sum over heads is vertical per key
// until one horizontal add at the end. The AVX-512 tier runs full groups as
// 8 keys x 2 zmm (16 chains, queries in registers) and the narrow last group,
// if any, with the AVX2 code.
//
// Precision: fp32 accumulation over d in index order, then over heads. Each
// key's score is computed by the same instruction sequence whatever its
// position in a tile or the tile's length, so the same (query, key) always
// gets the same score bits within one ISA: HISA with every block chosen
// returns DENSE's answer exactly. The ISAs differ by rounding only (FMA vs
// mul+add in the scalar path, the order of the final sum over heads). Error
// bound against exact arithmetic, per head: |fl(q.k) - q.k| <= D * 2^-24 *
// sum_d |q_d k_d| (+ one rounding of the ReLU/weight step), i.e. well inside
// SPEC 4.4's tolerance, which is set in units of sum_h |w_h| sum_d |q_hd k_sd|
// times a few D * 2^-24.
#ifndef HISA_KERNELS_CPU_SCORE_KERNELS_H_
#define HISA_KERNELS_CPU_SCORE_KERNELS_H_

#include <cstdint>

#include "kernels/cpu/cpu_features.h"

namespace hisa::cpu {

// Keys per inner tile of ScoreKeys: callers that decode keys to fp32 before
// scoring do so in tiles of this many rows.
inline constexpr int kScoreTileKeys = 48;

inline constexpr int PaddedHeads(int num_heads) {
  return (num_heads + 7) / 8 * 8;
}

// Floats of a packed query: Hpad * D query values + Hpad weights.
inline constexpr int64_t PackedQueryFloats(int num_heads, int head_dim) {
  return int64_t{PaddedHeads(num_heads)} * head_dim + PaddedHeads(num_heads);
}

// Packs q[num_heads][head_dim] (fp32, head-major) and weights[num_heads]
// into `packed` (PackedQueryFloats floats, 32-byte aligned; every float is
// written). head_dim >= 1; num_heads in [1, 128]. The AVX2 and AVX-512
// ISAs transpose 8 x 8 blocks in registers; every ISA writes the same
// bytes.
void PackQuery(CpuIsa isa, const float* q, const float* weights, int num_heads,
               int head_dim, float* packed);

// out[j] = sum_h w_h * ReLU(q_h . keys[j * stride .. j * stride + head_dim))
// for j in [0, n). Reads exactly rows 0..n-1 of `keys` (any alignment).
// `packed` from PackQuery with the same num_heads and head_dim.
void ScoreKeys(CpuIsa isa, const float* packed, int num_heads, int head_dim,
               const float* keys, int64_t stride, int64_t n, float* out);

}  // namespace hisa::cpu

#endif  // HISA_KERNELS_CPU_SCORE_KERNELS_H_
