// Tests of the float64 oracle itself: decoders against the SPEC's bit-field
// definitions and hand-worked selections.
#include "tests/reference/reference.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/formats.h"
#include "tests/reference/test_seed.h"
#include "tests/reference/wire_encoding.h"

namespace hisa::ref {
namespace {

TEST(DecodeTest, Fp8HandValues) {
  EXPECT_EQ(DecodeFp8E4M3(0x00), 0.0);
  EXPECT_EQ(DecodeFp8E4M3(0x38), 1.0);        // exponent 7, mantissa 0
  EXPECT_EQ(DecodeFp8E4M3(0xB8), -1.0);
  EXPECT_EQ(DecodeFp8E4M3(0x3C), 1.5);        // mantissa 4 = .5
  EXPECT_EQ(DecodeFp8E4M3(0x7E), 448.0);      // largest finite
  EXPECT_EQ(DecodeFp8E4M3(0x08), 1.0 / 64);   // smallest normal 2^-6
  EXPECT_EQ(DecodeFp8E4M3(0x01), 1.0 / 512);  // smallest subnormal 2^-9
  EXPECT_EQ(DecodeFp8E4M3(0x07), 7.0 / 512);  // largest subnormal
  EXPECT_TRUE(std::isnan(DecodeFp8E4M3(0x7F)));
  EXPECT_TRUE(std::isnan(DecodeFp8E4M3(0xFF)));
}

TEST(DecodeTest, Fp8AllBytesAgreeWithEngineDecoder) {
  for (int b = 0; b < 256; ++b) {
    const double mine = DecodeFp8E4M3(static_cast<uint8_t>(b));
    const float theirs = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
    if (std::isnan(mine)) {
      EXPECT_TRUE(std::isnan(theirs)) << "byte " << b;
    } else {
      EXPECT_EQ(mine, static_cast<double>(theirs)) << "byte " << b;
    }
  }
}

TEST(DecodeTest, Bf16AndFp32FromBitFields) {
  EXPECT_EQ(DecodeBf16(0x3F80), 1.0);
  EXPECT_EQ(DecodeBf16(0xC000), -2.0);
  EXPECT_EQ(DecodeBf16(0x0001), std::ldexp(1.0, -133));  // subnormal
  EXPECT_TRUE(std::isinf(DecodeBf16(0x7F80)));
  EXPECT_TRUE(std::isnan(DecodeBf16(0x7FC0)));
  std::mt19937_64 rng(TestSeed() + 1);
  SCOPED_TRACE(SeedNote());
  for (int i = 0; i < 100000; ++i) {
    const uint32_t bits = static_cast<uint32_t>(rng());
    float f;
    std::memcpy(&f, &bits, 4);
    const double mine = DecodeFp32(bits);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(mine)) << bits;
    } else {
      ASSERT_EQ(mine, static_cast<double>(f)) << bits;
    }
    const uint16_t h = static_cast<uint16_t>(bits);
    const double mine16 = DecodeBf16(h);
    const float theirs16 = Bf16ToFloat(h);
    if (std::isnan(theirs16)) {
      ASSERT_TRUE(std::isnan(mine16)) << h;
    } else {
      ASSERT_EQ(mine16, static_cast<double>(theirs16)) << h;
    }
  }
}

TEST(DequantizeTest, AppliesScalePerGroupAndChecksSizes) {
  // Two groups of two fp8 values: 1.0, -1.5 | 448, 0 with scales 2, 0.25.
  const std::vector<uint8_t> bytes = {0x38, 0xBC, 0x7E, 0x00};
  const std::vector<float> scales = {2.0f, 0.25f};
  auto v = Dequantize(KeyFormat::kFp8E4M3, bytes, scales, 2, 2);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, (std::vector<double>{2.0, -3.0, 112.0, 0.0}));
  EXPECT_FALSE(Dequantize(KeyFormat::kFp8E4M3, bytes, {}, 2, 2).ok());
  EXPECT_FALSE(Dequantize(KeyFormat::kBf16, bytes, {}, 2, 2).ok());
  EXPECT_TRUE(Dequantize(KeyFormat::kBf16, bytes, {}, 1, 2).ok());
  EXPECT_FALSE(Dequantize(static_cast<KeyFormat>(9), bytes, {}, 4, 1).ok());
}

TEST(ChooseBlocksTest, ForcedEndsAndLargestRest) {
  //                        b: 0  1  2  3  4  5
  const std::vector<double> j = {0, 5, 3, 5, 1, 0};
  EXPECT_EQ(ChooseBlocks(j, 6), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(ChooseBlocks(j, 9), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(ChooseBlocks(j, 5), (std::vector<int64_t>{0, 1, 2, 3, 5}));
  EXPECT_EQ(ChooseBlocks(j, 4), (std::vector<int64_t>{0, 1, 3, 5}));
  EXPECT_EQ(ChooseBlocks(j, 3), (std::vector<int64_t>{0, 1, 5}));  // tie 1 vs 3
  EXPECT_EQ(ChooseBlocks(j, 2), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(ChooseBlocks(j, 1), (std::vector<int64_t>{0, 5}));  // both forced
  EXPECT_EQ(ChooseBlocks({7.0}, 1), (std::vector<int64_t>{0}));
  EXPECT_EQ(ChooseBlocks({1, 1, 1, 1, 1}, 3), (std::vector<int64_t>{0, 1, 4}));
}

TEST(TopKTest, TiesToLowerPosition) {
  const std::vector<double> scores = {1, 3, 2, 3, 2, 0};
  const std::vector<int64_t> all = {5, 4, 3, 2, 1, 0};
  EXPECT_EQ(TopK(scores, all, 1), (std::vector<int32_t>{1}));
  EXPECT_EQ(TopK(scores, all, 3), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(TopK(scores, all, 4), (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(TopK(scores, all, 9), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(TopK(scores, std::vector<int64_t>{4, 3}, 1),
            (std::vector<int32_t>{3}));
}

// One head, q = e0: I(t, s) = w * ReLU(v_s) where k_s = v_s * e0.
struct ScalarLayer {
  ScalarLayer(const std::vector<float>& v, int block_size, BlockPooling pooling)
      : oracle(16, block_size, pooling) {
    std::vector<float> keys(v.size() * 16, 0.0f);
    for (size_t s = 0; s < v.size(); ++s) keys[s * 16] = v[s];
    encoded = EncodeKeys(KeyFormat::kFp32, 16, keys);
    EXPECT_TRUE(oracle.Append(encoded.Chunk("r", 0, 0, encoded.num_tokens)).ok());
    std::vector<float> q(16, 0.0f);
    q[0] = 1.0f;
    query = EncodeQuery(KeyFormat::kFp32, 1, 16, q, std::vector<float>{1.0f});
  }
  RowOracle Select(int64_t t, SelectMode mode, int k, int m) {
    auto out = oracle.Select(query.Row("r", 0, t, mode, k, m));
    EXPECT_TRUE(out.ok()) << out.status();
    return *out;
  }
  LayerOracle oracle;
  EncodedKeys encoded;
  EncodedQuery query;
};

TEST(LayerOracleTest, DenseTopKWithTiesAndPadding) {
  std::vector<float> v;
  for (int s = 0; s < 10; ++s) v.push_back(static_cast<float>(s % 5));
  ScalarLayer layer(v, 16, BlockPooling::kMean);
  RowOracle o = layer.Select(9, SelectMode::kDense, 3, 0);
  EXPECT_EQ(o.positions, (std::vector<int32_t>{3, 4, 9}));  // 3@3 beats 3@8
  EXPECT_EQ(o.scores, (std::vector<double>{3, 4, 4}));
  o = layer.Select(2, SelectMode::kDense, 5, 0);
  EXPECT_EQ(o.positions, (std::vector<int32_t>{0, 1, 2, -1, -1}));
  EXPECT_TRUE(std::isnan(o.scores[3]) && std::isnan(o.scores[4]));
}

// Block 0: a 10 at s = 5; block 1: all 3 (mean 3, max 3); block 2: a 32 at
// s = 40, else 0 (mean 2, max 32); block 3: all 1. t = 63, k = 2, m = 3.
std::vector<float> NeedleLayer() {
  std::vector<float> v(64, 0.0f);
  v[5] = 10;
  for (int s = 16; s < 32; ++s) v[s] = 3;
  v[40] = 32;
  for (int s = 48; s < 64; ++s) v[s] = 1;
  return v;
}

TEST(LayerOracleTest, HisaMeanPoolingMissesTheNeedle) {
  ScalarLayer layer(NeedleLayer(), 16, BlockPooling::kMean);
  RowOracle o = layer.Select(63, SelectMode::kHisa, 2, 3);
  EXPECT_EQ(o.block_scores, (std::vector<double>{10.0 / 16, 3, 2, 1}));
  EXPECT_EQ(o.chosen_blocks, (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(o.positions, (std::vector<int32_t>{5, 16}));
  EXPECT_EQ(layer.Select(63, SelectMode::kDense, 2, 3).positions,
            (std::vector<int32_t>{5, 40}));
  // AUTO is HISA; m large enough makes HISA == DENSE.
  EXPECT_EQ(layer.Select(63, SelectMode::kAuto, 2, 3).positions,
            (std::vector<int32_t>{5, 16}));
  EXPECT_EQ(layer.Select(63, SelectMode::kHisa, 2, 4).positions,
            (std::vector<int32_t>{5, 40}));
}

TEST(LayerOracleTest, HisaMaxPoolingFindsTheNeedle) {
  ScalarLayer layer(NeedleLayer(), 16, BlockPooling::kMax);
  RowOracle o = layer.Select(63, SelectMode::kHisa, 2, 3);
  EXPECT_EQ(o.block_scores, (std::vector<double>{10, 3, 32, 1}));
  EXPECT_EQ(o.chosen_blocks, (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(o.positions, (std::vector<int32_t>{5, 40}));
}

TEST(LayerOracleTest, OwnBlockCountsOnlyTokensUpToT) {
  ScalarLayer layer(NeedleLayer(), 16, BlockPooling::kMean);
  // t = 40: c = 2, blocks {0, 2} forced with m = 2; block 2 holds 32..40.
  RowOracle o = layer.Select(40, SelectMode::kHisa, 16, 2);
  EXPECT_EQ(o.chosen_blocks, (std::vector<int64_t>{0, 2}));
  // 25 candidates <= 40: 16 of block 0 and 9 of block 2. Top 16 by score,
  // ties to the lower position: 40 (32), 5 (10), then the 14 lowest zeros.
  const std::vector<int32_t> want = {0, 1, 2,  3,  4,  5,  6,  7,
                                     8, 9, 10, 11, 12, 13, 14, 40};
  EXPECT_EQ(o.positions, want);
}

// A layer of head_dim 16 whose token s is v[s] on dim 0, queried by two
// heads, q0 = e0 (w = 1) and q1 = -e0 (w = 2): I = ReLU(v) + 2 ReLU(-v).
struct Dim0Layer {
  explicit Dim0Layer(const std::vector<float>& v)
      : oracle(16, 16, BlockPooling::kMean) {
    std::vector<float> keys(v.size() * 16, 0.0f);
    for (size_t s = 0; s < v.size(); ++s) keys[s * 16] = v[s];
    EncodedKeys enc = EncodeKeys(KeyFormat::kBf16, 16, keys);
    appended = oracle.Append(enc.Chunk("r", 0, 0, v.size())).ok();
    std::vector<float> q(32, 0.0f);
    q[0] = 1;
    q[16] = -1;
    query = EncodeQuery(KeyFormat::kFp8E4M3, 2, 16, q, std::vector<float>{1, 2},
                        /*scales=*/std::vector<float>{1, 1});
  }
  LayerOracle oracle;
  EncodedQuery query;
  bool appended = false;
};

TEST(LayerOracleTest, ReluAndSignedWeights) {
  Dim0Layer layer({2, -3, 0.5});
  ASSERT_TRUE(layer.appended);
  auto o = layer.oracle.Select(
      layer.query.Row("r", 0, 2, SelectMode::kDense, 3, 1));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->token_scores, (std::vector<double>{2, 6, 0.5}));
  // Magnitude: sum_h |w_h| sum_d |q_hd k_sd| = (1 + 2) |v|.
  EXPECT_EQ(o->token_magnitudes, (std::vector<double>{6, 9, 1.5}));
  EXPECT_EQ(o->positions, (std::vector<int32_t>{0, 1, 2}));
}

TEST(LayerOracleTest, BlockMagnitudesOfThePooledKeysAndOfTheMean) {
  // One block of two tokens, v = 2 and -3: the mean is -0.5.
  Dim0Layer layer({2, -3});
  ASSERT_TRUE(layer.appended);
  auto o = layer.oracle.Select(
      layer.query.Row("r", 0, 1, SelectMode::kHisa, 2, 1));
  ASSERT_TRUE(o.ok()) << o.status();
  // J = ReLU(-0.5) + 2 ReLU(0.5); magnitudes (1 + 2) * mean |v| = 3 * 2.5
  // and, of the mean itself, (1 + 2) * |-0.5|.
  EXPECT_EQ(o->block_scores, (std::vector<double>{1.0}));
  EXPECT_EQ(o->block_magnitudes, (std::vector<double>{7.5}));
  EXPECT_EQ(o->block_copy_magnitudes, (std::vector<double>{1.5}));
}

TEST(LayerOracleTest, RejectsRowsThatDoNotFit) {
  ScalarLayer layer(NeedleLayer(), 16, BlockPooling::kMean);
  EXPECT_FALSE(layer.oracle.Select(layer.query.Row("r", 0, 64, SelectMode::kDense, 1, 1)).ok());
  EXPECT_FALSE(layer.oracle.Select(layer.query.Row("r", 0, -1, SelectMode::kDense, 1, 1)).ok());
  EXPECT_FALSE(layer.oracle.Select(layer.query.Row("r", 0, 3, SelectMode::kHisa, 1, 0)).ok());
  EXPECT_FALSE(layer.oracle.Append(layer.encoded.Chunk("r", 0, 3, 2)).ok());
}

}  // namespace
}  // namespace hisa::ref
