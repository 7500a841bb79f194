// Tests of kernels/cpu/score_kernels.h: the AVX2 kernel and the scalar path
// against a plain double computation of sum_h w_h ReLU(q_h . k), for the
// head counts that exercise every head-group shape, and the property HISA ==
// DENSE relies on: a key's score bits do not depend on the tile or batch it
// is scored in.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/aligned_buffer.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/score_kernels.h"
#include "tests/reference/test_seed.h"

namespace hisa::cpu {
namespace {

std::vector<CpuIsa> Isas() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  if (HasAvx2(DetectCpuIsa())) isas.push_back(CpuIsa::kAvx2);
  if (DetectCpuIsa() == CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

struct Problem {
  int heads, dim;
  int64_t stride;  // floats between key rows (>= dim)
  std::vector<float> q, w, keys;
  AlignedBuffer<float> packed;
};

Problem RandomProblem(std::mt19937_64& rng, int heads, int dim, int64_t n) {
  Problem p;
  p.heads = heads;
  p.dim = dim;
  p.stride = dim + static_cast<int64_t>(rng() % 3) * 8;
  std::normal_distribution<float> normal;
  p.q.resize(int64_t{heads} * dim);
  for (float& v : p.q) v = normal(rng);
  p.w.resize(heads);
  for (float& v : p.w) v = normal(rng);  // about half negative
  p.keys.resize(n * p.stride);
  for (float& v : p.keys) v = normal(rng);
  EXPECT_TRUE(p.packed.Allocate(PackedQueryFloats(heads, dim)));
  PackQuery(CpuIsa::kScalar, p.q.data(), p.w.data(), heads, dim,
            p.packed.data());
  return p;
}

// The score and the scale of its fp32 rounding error,
// sum_h |w_h| sum_d |q_hd k_d|, in double.
void Reference(const Problem& p, int64_t j, double* score, double* magnitude) {
  const float* k = p.keys.data() + j * p.stride;
  *score = 0;
  *magnitude = 0;
  for (int h = 0; h < p.heads; ++h) {
    double dot = 0, abs_dot = 0;
    for (int d = 0; d < p.dim; ++d) {
      const double t = double{p.q[int64_t{h} * p.dim + d]} * k[d];
      dot += t;
      abs_dot += std::fabs(t);
    }
    *score += p.w[h] * std::max(dot, 0.0);
    *magnitude += std::fabs(p.w[h]) * abs_dot;
  }
}

TEST(CpuScoreKernelsTest, AvxAndScalarMatchDoubleReference) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 201);
  for (int dim : {64, 128}) {
    // 1, 3: one narrow group; 32: one full group; 64: two groups; 40: a
    // full group plus a 1-vector group; 88: 4 + 4 + 3; 112: 4 + 4 + 4 + 2.
    for (int heads : {1, 3, 32, 64, 40, 88, 112}) {
      for (int64_t n : {1, 2, 5, 47, 48, 49, 131}) {
        const Problem p = RandomProblem(rng, heads, dim, n);
        // fp32 accumulation bound (see score_kernels.h), with margin 2.
        const double rel = 2.0 * (dim + heads + 8) * std::ldexp(1.0, -24);
        for (CpuIsa isa : Isas()) {
          std::vector<float> out(n + 1, std::nanf(""));  // poisoned, + guard
          ScoreKeys(isa, p.packed.data(), heads, dim, p.keys.data(), p.stride,
                    n, out.data());
          EXPECT_TRUE(std::isnan(out[n])) << "wrote past n";
          for (int64_t j = 0; j < n; ++j) {
            double want, magnitude;
            Reference(p, j, &want, &magnitude);
            ASSERT_NEAR(out[j], want, rel * magnitude + 1e-30)
                << CpuIsaName(isa) << " D " << dim << " H " << heads << " n "
                << n << " key " << j;
          }
        }
      }
    }
  }
}

TEST(CpuScoreKernelsTest, ScoreBitsDoNotDependOnTileOrBatch) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 202);
  for (CpuIsa isa : Isas()) {
    for (int heads : {3, 64, 40}) {
      const int dim = 128;
      const int64_t n = 3 * kScoreTileKeys + 7;
      const Problem p = RandomProblem(rng, heads, dim, n);
      std::vector<float> all(n);
      ScoreKeys(isa, p.packed.data(), heads, dim, p.keys.data(), p.stride, n,
                all.data());
      // Every key alone, and every suffix starting at a random offset.
      for (int64_t j = 0; j < n; ++j) {
        float one;
        ScoreKeys(isa, p.packed.data(), heads, dim,
                  p.keys.data() + j * p.stride, p.stride, 1, &one);
        ASSERT_EQ(std::memcmp(&one, &all[j], sizeof(float)), 0)
            << CpuIsaName(isa) << " H " << heads << " key " << j;
      }
      for (int trial = 0; trial < 10; ++trial) {
        const int64_t off = static_cast<int64_t>(rng() % n);
        const int64_t len = 1 + static_cast<int64_t>(rng() % (n - off));
        std::vector<float> part(len);
        ScoreKeys(isa, p.packed.data(), heads, dim,
                  p.keys.data() + off * p.stride, p.stride, len, part.data());
        ASSERT_EQ(
            std::memcmp(part.data(), all.data() + off, len * sizeof(float)), 0)
            << CpuIsaName(isa) << " H " << heads << " offset " << off << " len "
            << len;
      }
    }
  }
}

TEST(CpuScoreKernelsTest, ResolveCpuIsaNeverUpgrades) {
  const CpuIsa best = DetectCpuIsa();
  EXPECT_EQ(ResolveCpuIsa(CpuIsa::kAuto), best);
  EXPECT_EQ(ResolveCpuIsa(CpuIsa::kScalar), CpuIsa::kScalar);
  EXPECT_EQ(ResolveCpuIsa(CpuIsa::kAvx2),
            HasAvx2(best) ? CpuIsa::kAvx2 : CpuIsa::kScalar);
  EXPECT_EQ(ResolveCpuIsa(CpuIsa::kAvx512), best);
}

// Every ISA's packing (8 x 8 register transposes on AVX2 / AVX-512) writes
// exactly the scalar packing's floats, ragged head counts and head_dims
// included, and writes every float of the buffer.
TEST(CpuScoreKernelsTest, PackQueryIsTheSameOnEveryIsa) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 205);
  std::normal_distribution<float> normal;
  for (int heads : {1, 3, 8, 13, 32, 40, 64, 65, 100, 128}) {
    for (int dim : {1, 7, 8, 16, 60, 64, 100, 128}) {
      std::vector<float> q(int64_t{heads} * dim), w(heads);
      for (float& v : q) v = normal(rng);
      for (float& v : w) v = normal(rng);
      const int64_t floats = PackedQueryFloats(heads, dim);
      AlignedBuffer<float> want, got;
      ASSERT_TRUE(want.Allocate(floats));
      ASSERT_TRUE(got.Allocate(floats));
      PackQuery(CpuIsa::kScalar, q.data(), w.data(), heads, dim, want.data());
      for (CpuIsa isa : Isas()) {
        std::fill(got.data(), got.data() + floats, std::nanf(""));
        PackQuery(isa, q.data(), w.data(), heads, dim, got.data());
        EXPECT_EQ(std::memcmp(want.data(), got.data(), floats * sizeof(float)),
                  0)
            << CpuIsaName(isa) << " H=" << heads << " D=" << dim;
      }
    }
  }
}

TEST(CpuScoreKernelsTest, PaddedHeadsContributeNothing) {
  // H = 3 padded to 8: a large w on a padded slot would show if the kernel
  // read it. Packing must zero it; check the packed buffer directly.
  const int heads = 3, dim = 16;
  std::vector<float> q(heads * dim, 1.0f), w = {1.0f, 2.0f, 3.0f};
  AlignedBuffer<float> packed;
  ASSERT_TRUE(packed.Allocate(PackedQueryFloats(heads, dim)));
  for (int64_t i = 0; i < PackedQueryFloats(heads, dim); ++i) {
    packed.data()[i] = 999.0f;
  }
  PackQuery(CpuIsa::kScalar, q.data(), w.data(), heads, dim, packed.data());
  const int hpad = PaddedHeads(heads);
  ASSERT_EQ(hpad, 8);
  for (int d = 0; d < dim; ++d) {
    for (int l = 0; l < hpad; ++l) {
      EXPECT_EQ(packed.data()[d * hpad + l], l < heads ? 1.0f : 0.0f);
    }
  }
  for (int l = 0; l < hpad; ++l) {
    EXPECT_EQ(packed.data()[hpad * dim + l], l < heads ? w[l] : 0.0f);
  }
  // A key of ones: each head's dot is 16, score = (1 + 2 + 3) * 16.
  std::vector<float> key(dim, 1.0f);
  for (CpuIsa isa : Isas()) {
    float out = 0;
    ScoreKeys(isa, packed.data(), heads, dim, key.data(), dim, 1, &out);
    EXPECT_EQ(out, 96.0f) << CpuIsaName(isa);
  }
}

TEST(CpuScoreKernelsTest, ReluAndNegativeWeights) {
  // Exact small-integer case: head 0 dot = +4 (w = -1), head 1 dot = -4
  // (ReLU -> 0, w = 5): score = -4.
  const int heads = 2, dim = 16;
  std::vector<float> q(heads * dim, 0.0f), w = {-1.0f, 5.0f};
  for (int d = 0; d < 4; ++d) {
    q[d] = 1.0f;
    q[dim + d] = -1.0f;
  }
  AlignedBuffer<float> packed;
  ASSERT_TRUE(packed.Allocate(PackedQueryFloats(heads, dim)));
  PackQuery(CpuIsa::kScalar, q.data(), w.data(), heads, dim, packed.data());
  std::vector<float> key(dim, 1.0f);
  for (CpuIsa isa : Isas()) {
    float out = 0;
    ScoreKeys(isa, packed.data(), heads, dim, key.data(), dim, 1, &out);
    EXPECT_EQ(out, -4.0f) << CpuIsaName(isa);
  }
}

}  // namespace
}  // namespace hisa::cpu
