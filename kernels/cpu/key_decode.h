// Vectorized decoding of stored keys and queries to fp32, and the running
// block pooling (sum or max) that maintains the HISA block summaries.
//
//   hisa::cpu::DecodeFp8(isa, bytes, n, scale, out);       // out = fp8*scale
//   hisa::cpu::DecodeRows(isa, KeyFormat::kBf16, bytes, nullptr, rows, dim,
//                         out);                           // out[rows][dim]
//   hisa::cpu::PoolRows(isa, format, BlockPooling::kMean, bytes, scales,
//                       rows, dim, /*init=*/true, summary);
//
// Exactness (the reason fp32 is enough here, SPEC 4.4): every decoded value
// is the exact dequantized value rounded once to fp32. fp8 e4m3 and bf16
// values are exact in fp32; fp8 * scale is a single fp32 multiply on both
// paths (the AVX2 path decodes e4m3 to fp16 bits, which is the value times
// 2^-8 exactly, and multiplies by 256 * scale, itself exact unless it
// overflows, in which case it multiplies by 256 and by scale in turn), so
// both paths equal Fp8E4M3ToFloat(b) * scale bit for bit. fp8 NaN codes
// (0x7F, 0xFF) are rejected by the engine and never reach these functions;
// their decoded value is unspecified.
//
// Functions take an explicit, resolved CpuIsa (kAvx512 has its own fp8 row
// decode and otherwise uses the AVX2 code); all are thread-safe and allocate
// nothing.
#ifndef HISA_KERNELS_CPU_KEY_DECODE_H_
#define HISA_KERNELS_CPU_KEY_DECODE_H_

#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/types.h"

namespace hisa::cpu {

// dst[i] = Fp8E4M3ToFloat(src[i]) * scale for i in [0, n).
void DecodeFp8(CpuIsa isa, const uint8_t* src, int64_t n, float scale,
               float* dst);
// dst[i] = the bf16 value of little-endian src[2i, 2i+1], for i in [0, n).
void DecodeBf16(CpuIsa isa, const uint8_t* src, int64_t n, float* dst);

// Decodes `rows` token-major rows of `dim` values in `format` (row r starts
// at src + r * dim * BytesPerValue(format); fp8 row r is scaled by
// scales[r], scales unused otherwise) into dst[rows][dim].
void DecodeRows(CpuIsa isa, KeyFormat format, const uint8_t* src,
                const float* scales, int64_t rows, int dim, float* dst);

// Folds `rows` rows (same layout as DecodeRows) into acc[dim], in row order:
// kMean adds each decoded row (acc is the running sum), kMax takes the
// element-wise maximum. With init, the first row is copied into acc instead
// of folded, which is how a block's first token starts its summary. The
// arithmetic (one fp32 add or max per element per row, in row order) is the
// same on both paths, so results are bit-identical to a scalar recompute.
void PoolRows(CpuIsa isa, KeyFormat format, BlockPooling pooling,
              const uint8_t* src, const float* scales, int64_t rows, int dim,
              bool init, float* acc);

}  // namespace hisa::cpu

#endif  // HISA_KERNELS_CPU_KEY_DECODE_H_
