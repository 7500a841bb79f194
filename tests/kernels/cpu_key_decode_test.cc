// Tests of kernels/cpu/key_decode.h: vector fp8/bf16 decode against the
// scalar definitions in kernels/formats.h (bit for bit), and the running
// block pooling of both ISAs against each other.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/key_decode.h"
#include "kernels/formats.h"
#include "tests/reference/test_seed.h"

namespace hisa::cpu {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// The tiers this machine runs: always scalar, plus AVX2 / AVX-512.
std::vector<CpuIsa> Isas() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  if (HasAvx2(DetectCpuIsa())) isas.push_back(CpuIsa::kAvx2);
  if (DetectCpuIsa() == CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

// Scales that exercise every path: ordinary, negative, zero, subnormal, and
// so large that 256 * scale overflows (the AVX2 two-step multiply).
std::vector<float> TestScales(std::mt19937_64& rng) {
  std::vector<float> scales = {1.0f,          -1.0f,
                               0.0f,          -0.0f,
                               FLT_MAX,       -FLT_MAX,
                               FLT_MAX / 300, std::ldexp(1.0f, 120),
                               FLT_TRUE_MIN,  3 * FLT_TRUE_MIN,
                               FLT_MIN,       1.0f / 448};
  std::uniform_real_distribution<float> exponent(-40.0f, 40.0f);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  for (int i = 0; i < 40; ++i) {
    const float s = std::ldexp(mantissa(rng), static_cast<int>(exponent(rng)));
    scales.push_back(i % 2 ? -s : s);
  }
  return scales;
}

TEST(CpuKeyDecodeTest, Fp8AllCodesTimesRandomScalesMatchFormatsBitForBit) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 101);
  // Every non-NaN code, shuffled, plus a tail that is not a multiple of 16.
  std::vector<uint8_t> codes;
  for (int b = 0; b < 256; ++b) {
    if (!Fp8IsNan(static_cast<uint8_t>(b))) codes.push_back(b);
  }
  std::shuffle(codes.begin(), codes.end(), rng);
  codes.insert(codes.end(), codes.begin(), codes.begin() + 13);
  for (CpuIsa isa : Isas()) {
    for (float scale : TestScales(rng)) {
      std::vector<float> out(codes.size(), std::nanf(""));
      DecodeFp8(isa, codes.data(), codes.size(), scale, out.data());
      for (size_t i = 0; i < codes.size(); ++i) {
        const float want = Fp8E4M3ToFloat(codes[i]) * scale;
        ASSERT_EQ(Bits(out[i]), Bits(want))
            << CpuIsaName(isa) << " code 0x" << std::hex << int{codes[i]}
            << std::dec << " scale " << scale << ": got " << out[i] << " want "
            << want;
      }
    }
  }
}

TEST(CpuKeyDecodeTest, Bf16AllFinitePatternsMatchFormats) {
  std::vector<uint8_t> bytes;
  std::vector<uint16_t> patterns;
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7F80) == 0x7F80) continue;  // inf / NaN never reach decode
    patterns.push_back(static_cast<uint16_t>(h));
  }
  patterns.push_back(0x3F80);  // odd count: exercises the scalar tail
  bytes.resize(2 * patterns.size());
  std::memcpy(bytes.data(), patterns.data(), bytes.size());
  for (CpuIsa isa : Isas()) {
    std::vector<float> out(patterns.size());
    DecodeBf16(isa, bytes.data(), patterns.size(), out.data());
    for (size_t i = 0; i < patterns.size(); ++i) {
      ASSERT_EQ(Bits(out[i]), Bits(Bf16ToFloat(patterns[i])))
          << CpuIsaName(isa) << " pattern 0x" << std::hex << patterns[i];
    }
  }
}

TEST(CpuKeyDecodeTest, DecodeRowsAppliesPerRowScales) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 102);
  const int rows = 7, dim = 48;
  std::vector<uint8_t> codes(rows * dim);
  for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() % 0x7F);  // no NaN
  std::vector<float> scales(rows);
  for (float& s : scales) s = std::uniform_real_distribution<float>(-2, 2)(rng);
  for (CpuIsa isa : Isas()) {
    std::vector<float> out(rows * dim);
    DecodeRows(isa, KeyFormat::kFp8E4M3, codes.data(), scales.data(), rows, dim,
               out.data());
    for (int r = 0; r < rows; ++r) {
      for (int d = 0; d < dim; ++d) {
        ASSERT_EQ(Bits(out[r * dim + d]),
                  Bits(Fp8E4M3ToFloat(codes[r * dim + d]) * scales[r]));
      }
    }
    std::vector<float> values(rows * dim);
    for (float& v : values) v = std::normal_distribution<float>()(rng);
    std::vector<float> copy(rows * dim);
    DecodeRows(isa, KeyFormat::kFp32,
               reinterpret_cast<const uint8_t*>(values.data()), nullptr, rows,
               dim, copy.data());
    EXPECT_EQ(copy, values);
  }
}

// Encoded random rows in `format`: bytes and (fp8) scales.
struct Rows {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
};

Rows RandomRows(std::mt19937_64& rng, KeyFormat format, int rows, int dim) {
  Rows out;
  std::normal_distribution<float> normal;
  for (int i = 0; i < rows * dim; ++i) {
    const float v = normal(rng);
    switch (format) {
      case KeyFormat::kFp8E4M3:
        out.bytes.push_back(FloatToFp8E4M3(v * 100));
        break;
      case KeyFormat::kBf16: {
        const uint16_t h = FloatToBf16(v);
        out.bytes.push_back(static_cast<uint8_t>(h & 0xFF));
        out.bytes.push_back(static_cast<uint8_t>(h >> 8));
        break;
      }
      case KeyFormat::kFp32: {
        uint8_t b[4];
        std::memcpy(b, &v, 4);
        out.bytes.insert(out.bytes.end(), b, b + 4);
        break;
      }
    }
  }
  if (format == KeyFormat::kFp8E4M3) {
    for (int r = 0; r < rows; ++r) {
      out.scales.push_back(
          std::uniform_real_distribution<float>(0.001f, 0.02f)(rng));
    }
  }
  return out;
}

TEST(CpuKeyDecodeTest, PoolRowsIsaPathsAreBitIdenticalAndMatchDefinition) {
  if (!HasAvx2(DetectCpuIsa())) GTEST_SKIP() << "no AVX2 on this CPU";
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 103);
  for (KeyFormat format :
       {KeyFormat::kFp8E4M3, KeyFormat::kBf16, KeyFormat::kFp32}) {
    for (BlockPooling pooling : {BlockPooling::kMean, BlockPooling::kMax}) {
      for (int dim : {16, 64, 128}) {
        const int rows = 1 + static_cast<int>(rng() % 40);
        const Rows in = RandomRows(rng, format, rows, dim);
        const float* scales =
            format == KeyFormat::kFp8E4M3 ? in.scales.data() : nullptr;
        std::vector<float> a(dim, 123.0f), b(dim, 123.0f);
        PoolRows(CpuIsa::kScalar, format, pooling, in.bytes.data(), scales,
                 rows, dim, /*init=*/true, a.data());
        PoolRows(CpuIsa::kAvx2, format, pooling, in.bytes.data(), scales, rows,
                 dim, /*init=*/true, b.data());
        const std::string ctx = absl::StrCat(FormatName(format), " pooling ",
                                             static_cast<int>(pooling), " dim ",
                                             dim, " rows ", rows);
        for (int d = 0; d < dim; ++d) {
          ASSERT_EQ(Bits(a[d]), Bits(b[d])) << ctx << " d " << d;
        }
        // Against the definition, folded in row order.
        std::vector<float> row(dim), want(dim);
        const int64_t row_bytes = int64_t{dim} * BytesPerValue(format);
        for (int r = 0; r < rows; ++r) {
          DecodeRows(CpuIsa::kScalar, format, in.bytes.data() + r * row_bytes,
                     scales ? scales + r : nullptr, 1, dim, row.data());
          for (int d = 0; d < dim; ++d) {
            want[d] = r == 0 ? row[d]
                      : pooling == BlockPooling::kMax
                          ? std::max(want[d], row[d])
                          : want[d] + row[d];
          }
        }
        for (int d = 0; d < dim; ++d) {
          ASSERT_EQ(a[d], want[d]) << ctx << " d " << d;
        }
        // Without init, rows fold into the existing values.
        std::vector<float> c = a;
        PoolRows(CpuIsa::kAvx2, format, pooling, in.bytes.data(), scales, 1,
                 dim, /*init=*/false, c.data());
        DecodeRows(CpuIsa::kScalar, format, in.bytes.data(), scales, 1, dim,
                   row.data());
        for (int d = 0; d < dim; ++d) {
          const float w = pooling == BlockPooling::kMax ? std::max(a[d], row[d])
                                                        : a[d] + row[d];
          ASSERT_EQ(Bits(c[d]), Bits(w)) << ctx << " fold d " << d;
        }
      }
    }
  }
}

}  // namespace
}  // namespace hisa::cpu
