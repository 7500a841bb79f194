#include "kernels/cpu/key_decode.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kernels/formats.h"

#if HISA_CPU_HAVE_X86
#include <immintrin.h>
#endif

namespace hisa::cpu {
namespace {

// Stack scratch for one decoded row in PoolRows (head_dim <= 256).
constexpr int kMaxDim = 256;

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i)
      t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

void DecodeFp8Scalar(const uint8_t* src, int64_t n, float scale, float* dst) {
  const std::array<float, 256>& table = Fp8Table();
  for (int64_t i = 0; i < n; ++i) dst[i] = table[src[i]] * scale;
}

void DecodeBf16Scalar(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, sizeof(h));
    dst[i] = Bf16ToFloat(h);
  }
}

#if HISA_CPU_HAVE_X86

// 16 e4m3 bytes -> 16 fp16 bit patterns of (value * 2^-8): e4m3 and fp16
// share the mantissa layout and subnormal scheme, and their exponent biases
// differ by 8. Sign-extending the byte to 16 bits and shifting left by 7
// puts exponent and mantissa in place and the sign in bit 15 (bit 14 gets a
// copy of the sign too, which the mask clears).
HISA_TARGET_AVX2 inline __m256i Fp8x16ToHalfBits(const uint8_t* src) {
  const __m256i x = _mm256_cvtepi8_epi16(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  return _mm256_and_si256(_mm256_slli_epi16(x, 7), _mm256_set1_epi16(0xBFFF));
}

HISA_TARGET_AVX2 inline void Fp8x16ToHalfScaled(const uint8_t* src, __m256* lo,
                                                __m256* hi) {
  const __m256i h = Fp8x16ToHalfBits(src);
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// Multiplies fp16-decoded values (fp8 * 2^-8) so the result is fp8 * scale
// with one rounding: by 256 * scale when that is finite (exact), else by 256
// and then by scale.
struct Fp8Scaler {
  __m256 first;
  __m256 second;
  bool two_step;
};

HISA_TARGET_AVX2 inline Fp8Scaler MakeFp8Scaler(float scale) {
  const float folded = scale * 256.0f;
  if (std::isfinite(folded)) {
    return {_mm256_set1_ps(folded), _mm256_set1_ps(1.0f), false};
  }
  return {_mm256_set1_ps(256.0f), _mm256_set1_ps(scale), true};
}

HISA_TARGET_AVX2 inline __m256 ApplyScaler(const Fp8Scaler& s, __m256 v) {
  v = _mm256_mul_ps(v, s.first);
  return s.two_step ? _mm256_mul_ps(v, s.second) : v;
}

HISA_TARGET_AVX2 void DecodeFp8Avx2(const uint8_t* src, int64_t n, float scale,
                                    float* dst) {
  const Fp8Scaler s = MakeFp8Scaler(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 lo, hi;
    Fp8x16ToHalfScaled(src + i, &lo, &hi);
    _mm256_storeu_ps(dst + i, ApplyScaler(s, lo));
    _mm256_storeu_ps(dst + i + 8, ApplyScaler(s, hi));
  }
  if (i < n) DecodeFp8Scalar(src + i, n - i, scale, dst + i);
}

HISA_TARGET_AVX2 inline __m256 Bf16x8(const uint8_t* src) {
  const __m256i w = _mm256_cvtepu16_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

HISA_TARGET_AVX2 void DecodeBf16Avx2(const uint8_t* src, int64_t n,
                                     float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, Bf16x8(src + 2 * i));
  if (i < n) DecodeBf16Scalar(src + 2 * i, n - i, dst + i);
}

// GCC 12's avx512fintrin.h initializes _mm512_undefined_ps() from itself,
// which -Wmaybe-uninitialized flags where _mm512_cvtph_ps inlines (fixed in
// GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// fp8 rows with per-row scales (dim % 16 == 0), 16 values per zmm.
HISA_TARGET_AVX512 void DecodeFp8RowsAvx512(const uint8_t* src,
                                            const float* scales, int64_t rows,
                                            int dim, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float folded = scales[r] * 256.0f;
    const bool two_step = !std::isfinite(folded);
    const __m512 first = _mm512_set1_ps(two_step ? 256.0f : folded);
    const __m512 second = _mm512_set1_ps(scales[r]);
    const uint8_t* in = src + r * dim;
    float* out = dst + r * dim;
    for (int d = 0; d < dim; d += 16) {
      __m512 v =
          _mm512_mul_ps(_mm512_cvtph_ps(Fp8x16ToHalfBits(in + d)), first);
      if (two_step) v = _mm512_mul_ps(v, second);
      _mm512_storeu_ps(out + d, v);
    }
  }
}

#pragma GCC diagnostic pop

// fp8 rows with per-row scales (dim % 16 == 0), AVX2.
HISA_TARGET_AVX2 void DecodeFp8RowsAvx2(const uint8_t* src, const float* scales,
                                        int64_t rows, int dim, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const Fp8Scaler s = MakeFp8Scaler(scales[r]);
    const uint8_t* in = src + r * dim;
    float* out = dst + r * dim;
    for (int d = 0; d < dim; d += 16) {
      __m256 lo, hi;
      Fp8x16ToHalfScaled(in + d, &lo, &hi);
      _mm256_storeu_ps(out + d, ApplyScaler(s, lo));
      _mm256_storeu_ps(out + d + 8, ApplyScaler(s, hi));
    }
  }
}

// PoolRows for fp8 and bf16 rows without a round trip through memory: each
// 8-value vector is decoded and folded straight into acc. Same arithmetic as
// the scalar fold (one add, or max(row, acc) == (row > acc ? row : acc), per
// element per row, in row order).
// GCC contracts a*b + c into an FMA by default (-ffp-contract=fast in GNU
// mode), which would fuse the decode's scale multiply into the summary add
// and round differently from decode-then-add. An empty asm makes the decoded
// value opaque, so it is rounded on its own first, as in the scalar path.
HISA_TARGET_AVX2 inline __m256 Rounded(__m256 v) {
  asm("" : "+x"(v));
  return v;
}

HISA_TARGET_AVX2 inline void Fold(float* a, __m256 v, bool first,
                                  bool take_max) {
  v = Rounded(v);
  if (first) {
    _mm256_storeu_ps(a, v);
  } else {
    const __m256 old = _mm256_loadu_ps(a);
    _mm256_storeu_ps(a,
                     take_max ? _mm256_max_ps(v, old) : _mm256_add_ps(old, v));
  }
}

HISA_TARGET_AVX2 void PoolRowsAvx2(KeyFormat format, BlockPooling pooling,
                                   const uint8_t* src, const float* scales,
                                   int64_t rows, int dim, bool init,
                                   float* acc) {
  const bool take_max = pooling == BlockPooling::kMax;
  const int64_t row_bytes = int64_t{dim} * BytesPerValue(format);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + r * row_bytes;
    const bool first = init && r == 0;
    if (format == KeyFormat::kFp8E4M3) {
      const Fp8Scaler s = MakeFp8Scaler(scales[r]);
      for (int d = 0; d < dim; d += 16) {
        __m256 lo, hi;
        Fp8x16ToHalfScaled(row + d, &lo, &hi);
        Fold(acc + d, ApplyScaler(s, lo), first, take_max);
        Fold(acc + d + 8, ApplyScaler(s, hi), first, take_max);
      }
    } else if (format == KeyFormat::kBf16) {
      for (int d = 0; d < dim; d += 8) {
        Fold(acc + d, Bf16x8(row + 2 * d), first, take_max);
      }
    } else {
      for (int d = 0; d < dim; d += 8) {
        Fold(acc + d, _mm256_loadu_ps(reinterpret_cast<const float*>(row) + d),
             first, take_max);
      }
    }
  }
}

#endif  // HISA_CPU_HAVE_X86

}  // namespace

void DecodeFp8(CpuIsa isa, const uint8_t* src, int64_t n, float scale,
               float* dst) {
#if HISA_CPU_HAVE_X86
  if (HasAvx2(isa)) return DecodeFp8Avx2(src, n, scale, dst);
#endif
  (void)isa;
  DecodeFp8Scalar(src, n, scale, dst);
}

void DecodeBf16(CpuIsa isa, const uint8_t* src, int64_t n, float* dst) {
#if HISA_CPU_HAVE_X86
  if (HasAvx2(isa)) return DecodeBf16Avx2(src, n, dst);
#endif
  (void)isa;
  DecodeBf16Scalar(src, n, dst);
}

void DecodeRows(CpuIsa isa, KeyFormat format, const uint8_t* src,
                const float* scales, int64_t rows, int dim, float* dst) {
  switch (format) {
    case KeyFormat::kFp8E4M3:
#if HISA_CPU_HAVE_X86
      if (dim % 16 == 0 && isa == CpuIsa::kAvx512) {
        return DecodeFp8RowsAvx512(src, scales, rows, dim, dst);
      }
      if (dim % 16 == 0 && isa == CpuIsa::kAvx2) {
        return DecodeFp8RowsAvx2(src, scales, rows, dim, dst);
      }
#endif
      for (int64_t r = 0; r < rows; ++r) {
        DecodeFp8(isa, src + r * dim, dim, scales[r], dst + r * dim);
      }
      return;
    case KeyFormat::kBf16:
      DecodeBf16(isa, src, rows * dim, dst);
      return;
    case KeyFormat::kFp32:
      std::memcpy(dst, src, static_cast<size_t>(rows * dim) * sizeof(float));
      return;
  }
}

void PoolRows(CpuIsa isa, KeyFormat format, BlockPooling pooling,
              const uint8_t* src, const float* scales, int64_t rows, int dim,
              bool init, float* acc) {
#if HISA_CPU_HAVE_X86
  // head_dim is a multiple of 16 (types.h), so the vector loops need no tail.
  if (HasAvx2(isa) && dim % 16 == 0) {
    return PoolRowsAvx2(format, pooling, src, scales, rows, dim, init, acc);
  }
#endif
  const int64_t row_bytes = int64_t{dim} * BytesPerValue(format);
  alignas(64) float row[kMaxDim];
  for (int64_t r = 0; r < rows; ++r) {
    // Portable path: decode a row to the stack, then fold it; each element
    // sees exactly one add or max, in row order, as in PoolRowsAvx2.
    DecodeRows(isa, format, src + r * row_bytes,
               scales == nullptr ? nullptr : scales + r, 1, dim, row);
    if (init && r == 0) {
      std::memcpy(acc, row, sizeof(float) * dim);
    } else if (pooling == BlockPooling::kMax) {
      for (int d = 0; d < dim; ++d) acc[d] = row[d] > acc[d] ? row[d] : acc[d];
    } else {
      for (int d = 0; d < dim; ++d) acc[d] += row[d];
    }
  }
}

}  // namespace hisa::cpu
