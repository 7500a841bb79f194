#include "kernels/cpu/score_kernels.h"

#include <algorithm>
#include <cstring>

#if HISA_CPU_HAVE_X86
#include <immintrin.h>
#endif

namespace hisa::cpu {
namespace {

constexpr int kGroupVectors = 4;  // head vectors (of 8 heads) per group

int GroupWidth(int num_vectors, int first_vector) {
  return std::min(kGroupVectors, num_vectors - first_vector);
}

void ScoreKeysScalar(const float* packed, int num_heads, int head_dim,
                     const float* keys, int64_t stride, int64_t n, float* out) {
  const int hpad = PaddedHeads(num_heads);
  const int num_vectors = hpad / 8;
  const float* weights = packed + int64_t{hpad} * head_dim;
  for (int64_t j = 0; j < n; ++j) {
    const float* key = keys + j * stride;
    float total = 0.0f;
    const float* group = packed;
    for (int v0 = 0; v0 < num_vectors; v0 += kGroupVectors) {
      const int width = 8 * GroupWidth(num_vectors, v0);
      float acc[8 * kGroupVectors] = {};
      for (int d = 0; d < head_dim; ++d) {
        const float kd = key[d];
        const float* qd = group + int64_t{d} * width;
        for (int l = 0; l < width; ++l) acc[l] += qd[l] * kd;
      }
      const float* w = weights + 8 * v0;
      for (int l = 0; l < width; ++l) total += w[l] * std::max(acc[l], 0.0f);
      group += int64_t{head_dim} * width;
    }
    out[j] = total;
  }
}

#if HISA_CPU_HAVE_X86

// Accumulates KB keys x G head vectors over d, then folds w * ReLU(acc)
// into part[0..KB). key[j] points at key j's fp32 row.
//
// Register budget (16 ymm): KB * G accumulators + KB broadcast keys <= 15,
// with the query vectors used straight from L1 as FMA memory operands. For
// G = 4 that is 3 keys: 12 independent FMA chains, enough to hide the 4-cycle
// FMA latency on two ports, and 15 loads per 12 FMAs, within the three load
// ports. Measured on this machine's Xeon: ~95% of the FMA peak, against ~75%
// for 2 keys x 4 vectors (8 chains) with the queries held in registers.
// noinline keeps register allocation local: inlined into the tile loop, GCC
// hoists the weight vectors into registers and spills accumulators instead.
template <int KB, int G>
HISA_TARGET_AVX2 __attribute__((noinline)) void ScoreGroupBlock(
    const float* group, const float* w, int head_dim, const float* const* key,
    __m256* part) {
  __m256 acc[KB][G];
#pragma GCC unroll 8
  for (int j = 0; j < KB; ++j) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) acc[j][g] = _mm256_setzero_ps();
  }
  const float* qd = group;
#pragma GCC unroll 2
  for (int d = 0; d < head_dim; ++d, qd += 8 * G) {
    __m256 k[KB];
#pragma GCC unroll 8
    for (int j = 0; j < KB; ++j) k[j] = _mm256_broadcast_ss(key[j] + d);
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
#pragma GCC unroll 8
      for (int j = 0; j < KB; ++j) {
        acc[j][g] =
            _mm256_fmadd_ps(_mm256_load_ps(qd + 8 * g), k[j], acc[j][g]);
      }
    }
  }
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int j = 0; j < KB; ++j) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      part[j] = _mm256_fmadd_ps(_mm256_max_ps(acc[j][g], zero),
                                _mm256_load_ps(w + 8 * g), part[j]);
    }
  }
}

// Runs ScoreGroupBlock over the n (<= kScoreTileKeys) keys of a tile, KB at
// a time. The last block repeats key n-1 in its unused slots (their results
// land in part[] entries that are never read), so no row past n is read.
template <int KB, int G>
HISA_TARGET_AVX2 void ScoreGroupTile(const float* group, const float* w,
                                     int head_dim, const float* keys,
                                     int64_t stride, int n, __m256* part) {
  static_assert(kScoreTileKeys % KB == 0, "KB must divide the tile");
  for (int j0 = 0; j0 < n; j0 += KB) {
    const float* key[KB];
#pragma GCC unroll 8
    for (int j = 0; j < KB; ++j)
      key[j] = keys + std::min(j0 + j, n - 1) * stride;
    ScoreGroupBlock<KB, G>(group, w, head_dim, key, part + j0);
  }
}

HISA_TARGET_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Scores head groups [first_vector / 4, ...) of a tile with the AVX2
// kernels, folding into part[0..nt). `group` points at the first group to
// score; only groups narrower than 4 vectors are skipped when skip_full.
HISA_TARGET_AVX2 void ScoreTileGroupsAvx2(const float* packed, int num_heads,
                                          int head_dim, const float* tile,
                                          int64_t stride, int nt,
                                          bool skip_full, __m256* part) {
  const int hpad = PaddedHeads(num_heads);
  const int num_vectors = hpad / 8;
  const float* weights = packed + int64_t{hpad} * head_dim;
  const float* group = packed;
  for (int v0 = 0; v0 < num_vectors; v0 += kGroupVectors) {
    const int g = GroupWidth(num_vectors, v0);
    const float* w = weights + 8 * v0;
    if (!(skip_full && g == kGroupVectors)) {
      switch (g) {
        case 4:
          ScoreGroupTile<3, 4>(group, w, head_dim, tile, stride, nt, part);
          break;
        case 3:
          ScoreGroupTile<3, 3>(group, w, head_dim, tile, stride, nt, part);
          break;
        case 2:
          ScoreGroupTile<4, 2>(group, w, head_dim, tile, stride, nt, part);
          break;
        default:
          ScoreGroupTile<8, 1>(group, w, head_dim, tile, stride, nt, part);
          break;
      }
    }
    group += int64_t{head_dim} * 8 * g;
  }
}

HISA_TARGET_AVX2 void ScoreKeysAvx2(const float* packed, int num_heads,
                                    int head_dim, const float* keys,
                                    int64_t stride, int64_t n, float* out) {
  alignas(32) __m256 part[kScoreTileKeys];
  for (int64_t t0 = 0; t0 < n; t0 += kScoreTileKeys) {
    const int nt = static_cast<int>(std::min<int64_t>(kScoreTileKeys, n - t0));
    for (int j = 0; j < nt; ++j) part[j] = _mm256_setzero_ps();
    ScoreTileGroupsAvx2(packed, num_heads, head_dim, keys + t0 * stride, stride,
                        nt, /*skip_full=*/false, part);
    for (int j = 0; j < nt; ++j) out[t0 + j] = HorizontalSum(part[j]);
  }
}

// GCC 12's avx512fintrin.h initializes _mm512_undefined_ps() from itself,
// which -Wuninitialized flags wherever _mm512_max_ps or
// _mm512_extractf64x4_pd inline (fixed in GCC 13). Silence just that here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// AVX-512 kernel for full groups (32 heads = 2 zmm per d): KB keys x 2
// vectors of accumulators. With 32 zmm registers, 8 keys give 16 FMA chains
// (more than the 8 that 2 ports x 4-cycle latency need) with the 2 query
// vectors and the broadcast key in registers: 10 loads per 16 FMAs. Measured
// ~90% of the per-core AVX-512 FMA peak (6 keys: the same; 4: 79%; 16: 81%).
// 8 divides the 48-key tile, 128-token blocks and 24-block summary pages.
constexpr int kAvx512Keys = 8;
static_assert(kScoreTileKeys % kAvx512Keys == 0, "KB must divide the tile");

HISA_TARGET_AVX512 __attribute__((noinline)) void ScoreFullGroupBlock512(
    const float* group, const float* w, int head_dim, const float* const* key,
    __m512* part) {
  constexpr int KB = kAvx512Keys;
  __m512 acc[KB][2];
#pragma GCC unroll 8
  for (int j = 0; j < KB; ++j) {
    acc[j][0] = _mm512_setzero_ps();
    acc[j][1] = _mm512_setzero_ps();
  }
  const float* qd = group;
#pragma GCC unroll 2
  for (int d = 0; d < head_dim; ++d, qd += 32) {
    const __m512 q0 = _mm512_load_ps(qd);
    const __m512 q1 = _mm512_load_ps(qd + 16);
#pragma GCC unroll 8
    for (int j = 0; j < KB; ++j) {
      const __m512 k = _mm512_set1_ps(key[j][d]);
      acc[j][0] = _mm512_fmadd_ps(q0, k, acc[j][0]);
      acc[j][1] = _mm512_fmadd_ps(q1, k, acc[j][1]);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  const __m512 w0 = _mm512_load_ps(w);
  const __m512 w1 = _mm512_load_ps(w + 16);
#pragma GCC unroll 8
  for (int j = 0; j < KB; ++j) {
    part[j] = _mm512_fmadd_ps(_mm512_max_ps(acc[j][0], zero), w0, part[j]);
    part[j] = _mm512_fmadd_ps(_mm512_max_ps(acc[j][1], zero), w1, part[j]);
  }
}

HISA_TARGET_AVX512 inline float HorizontalSum512(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi =
      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return HorizontalSum(_mm256_add_ps(lo, hi));
}

HISA_TARGET_AVX512 void ScoreKeysAvx512(const float* packed, int num_heads,
                                        int head_dim, const float* keys,
                                        int64_t stride, int64_t n, float* out) {
  const int hpad = PaddedHeads(num_heads);
  const int num_vectors = hpad / 8;
  const float* weights = packed + int64_t{hpad} * head_dim;
  const bool has_narrow = num_vectors % kGroupVectors != 0;
  alignas(64) __m512 part[kScoreTileKeys];
  alignas(32) __m256 narrow[kScoreTileKeys];
  for (int64_t t0 = 0; t0 < n; t0 += kScoreTileKeys) {
    const int nt = static_cast<int>(std::min<int64_t>(kScoreTileKeys, n - t0));
    const float* tile = keys + t0 * stride;
    for (int j = 0; j < nt; ++j) part[j] = _mm512_setzero_ps();
    const float* group = packed;
    for (int v0 = 0; v0 + kGroupVectors <= num_vectors; v0 += kGroupVectors) {
      for (int j0 = 0; j0 < nt; j0 += kAvx512Keys) {
        const float* key[kAvx512Keys];
#pragma GCC unroll 8
        for (int j = 0; j < kAvx512Keys; ++j) {
          key[j] = tile + std::min(j0 + j, nt - 1) * stride;
        }
        ScoreFullGroupBlock512(group, weights + 8 * v0, head_dim, key,
                               part + j0);
      }
      group += int64_t{head_dim} * 8 * kGroupVectors;
    }
    if (has_narrow) {
      // The last group has fewer than 4 vectors: AVX2 kernels.
      for (int j = 0; j < nt; ++j) narrow[j] = _mm256_setzero_ps();
      ScoreTileGroupsAvx2(packed, num_heads, head_dim, tile, stride, nt,
                          /*skip_full=*/true, narrow);
      for (int j = 0; j < nt; ++j) {
        out[t0 + j] = HorizontalSum512(part[j]) + HorizontalSum(narrow[j]);
      }
    } else {
      for (int j = 0; j < nt; ++j) out[t0 + j] = HorizontalSum512(part[j]);
    }
  }
}

#pragma GCC diagnostic pop

#endif  // HISA_CPU_HAVE_X86

}  // namespace

namespace {

#if HISA_CPU_HAVE_X86
// dst[i * dst_stride + j] = src[j * src_stride + i] for i, j in [0, 8).
HISA_TARGET_AVX2 inline void Transpose8x8(const float* src,
                                          int64_t src_stride, float* dst,
                                          int64_t dst_stride) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 2; ++i) {
    const __m256* x = t + 4 * i;
    u[4 * i + 0] = _mm256_shuffle_ps(x[0], x[2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(x[0], x[2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(x[1], x[3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(x[1], x[3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride,
                     _mm256_permute2f128_ps(u[i], u[4 + i], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride,
                     _mm256_permute2f128_ps(u[i], u[4 + i], 0x31));
  }
}

// The packed layout of one head group, 8 x 8 blocks at a time (8 real heads
// by 8 dimensions); the ragged edges (padded heads, head_dim % 8) go
// element by element.
HISA_TARGET_AVX2 void PackGroupAvx2(const float* q, int head_dim, int real,
                                    int width, float* at) {
  const int full_heads = real / 8 * 8;
  const int full_dims = head_dim / 8 * 8;
  for (int l = 0; l < full_heads; l += 8) {
    for (int d = 0; d < full_dims; d += 8) {
      Transpose8x8(q + int64_t{l} * head_dim + d, head_dim,
                   at + int64_t{d} * width + l, width);
    }
  }
  for (int d = 0; d < head_dim; ++d) {
    float* row = at + int64_t{d} * width;
    const int first = d < full_dims ? full_heads : 0;
    for (int l = first; l < real; ++l) row[l] = q[int64_t{l} * head_dim + d];
    for (int l = real; l < width; ++l) row[l] = 0.f;
  }
}
#endif  // HISA_CPU_HAVE_X86

// The same, one element at a time.
void PackGroupScalar(const float* q, int head_dim, int real, int width,
                     float* at) {
  // Written in order (d outer, head lane inner): the stores stream, the
  // strided reads stay in the cache.
  for (int d = 0; d < head_dim; ++d) {
    const float* src = q + d;
    for (int l = 0; l < real; ++l) at[l] = src[int64_t{l} * head_dim];
    for (int l = real; l < width; ++l) at[l] = 0.f;
    at += width;
  }
}

}  // namespace

void PackQuery(CpuIsa isa, const float* q, const float* weights, int num_heads,
               int head_dim, float* packed) {
  const int hpad = PaddedHeads(num_heads);
  const int num_vectors = hpad / 8;
  // Per group of head vectors: for each d, the group's `width` head lanes.
  // Padded heads get q = 0 and w = 0.
  float* at = packed;
  for (int v0 = 0; v0 < num_vectors; v0 += kGroupVectors) {
    const int width = 8 * GroupWidth(num_vectors, v0);
    const int h0 = 8 * v0;
    const int real = std::min(width, num_heads - h0);
    const float* group_q = q + int64_t{h0} * head_dim;
#if HISA_CPU_HAVE_X86
    if (HasAvx2(isa)) {
      PackGroupAvx2(group_q, head_dim, real, width, at);
    } else {
      PackGroupScalar(group_q, head_dim, real, width, at);
    }
#else
    (void)isa;
    PackGroupScalar(group_q, head_dim, real, width, at);
#endif
    at += int64_t{head_dim} * width;
  }
  std::memcpy(at, weights, sizeof(float) * num_heads);
  std::fill(at + num_heads, at + hpad, 0.f);
}

void ScoreKeys(CpuIsa isa, const float* packed, int num_heads, int head_dim,
               const float* keys, int64_t stride, int64_t n, float* out) {
#if HISA_CPU_HAVE_X86
  if (isa == CpuIsa::kAvx512) {
    return ScoreKeysAvx512(packed, num_heads, head_dim, keys, stride, n, out);
  }
  if (isa == CpuIsa::kAvx2) {
    return ScoreKeysAvx2(packed, num_heads, head_dim, keys, stride, n, out);
  }
#endif
  (void)isa;
  ScoreKeysScalar(packed, num_heads, head_dim, keys, stride, n, out);
}

}  // namespace hisa::cpu
