// Tests of kernels/cpu/cpu_request_store.h: stored bytes round-trip across
// page boundaries, block summaries maintained incrementally over random
// chunked appends equal a from-scratch recompute (bit for bit) and the
// float64 mean / max, exact memory accounting, Matches.
#include "kernels/cpu/cpu_request_store.h"

#include <algorithm>
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
#include "kernels/types.h"
#include "tests/reference/reference.h"
#include "tests/reference/test_seed.h"
#include "tests/reference/wire_encoding.h"

namespace hisa::cpu {
namespace {

ref::EncodedKeys RandomKeys(std::mt19937_64& rng, KeyFormat format,
                            int64_t tokens, int dim) {
  std::normal_distribution<float> normal;
  std::vector<float> v(tokens * dim);
  for (float& x : v) x = normal(rng);
  return ref::EncodeKeys(format, dim, v);
}

RequestConfig Config(KeyFormat format, BlockPooling pooling, int dim, int block,
                     int layers = 2) {
  RequestConfig c;
  c.num_layers = layers;
  c.head_dim = dim;
  c.block_size = block;
  c.key_format = format;
  c.pooling = pooling;
  return c;
}

// Appends `keys` to `layer` in random chunks of 1 .. 3B tokens, checking
// BytesAfterAppend against the result of every append.
void AppendInRandomChunks(std::mt19937_64& rng, CpuRequestStore& store,
                          int layer, const ref::EncodedKeys& keys) {
  const int block = store.config().block_size;
  for (int64_t first = 0; first < keys.num_tokens;) {
    const int64_t n =
        std::min<int64_t>(keys.num_tokens - first, 1 + rng() % (3 * block));
    const int64_t predicted = store.BytesAfterAppend(layer, n);
    ASSERT_TRUE(store.Append(keys.Chunk("r", layer, first, n)).ok());
    ASSERT_EQ(store.bytes_reserved(), predicted);
    ASSERT_EQ(store.length(layer), first + n);
    first += n;
  }
}

class CpuRequestStoreTest
    : public ::testing::TestWithParam<std::tuple<KeyFormat, BlockPooling>> {};

TEST_P(CpuRequestStoreTest, IncrementalSummariesEqualRecomputeAndOracle) {
  SCOPED_TRACE(ref::SeedNote());
  const auto [format, pooling] = GetParam();
  std::mt19937_64 rng(ref::TestSeed() + 401 + static_cast<int>(format) * 7 +
                      static_cast<int>(pooling));
  for (CpuIsa isa : {CpuIsa::kScalar, DetectCpuIsa()}) {
    for (int dim : {16, 64}) {
      for (int block : {16, 128}) {
        const RequestConfig config = Config(format, pooling, dim, block);
        CpuRequestStore store(config, isa);
        const int64_t tokens = 5 * block + 1 + rng() % (3 * block);
        const ref::EncodedKeys keys = RandomKeys(rng, format, tokens, dim);
        AppendInRandomChunks(rng, store, /*layer=*/1, keys);
        EXPECT_EQ(store.length(0), 0);

        ref::LayerOracle oracle(dim, block, pooling);
        ASSERT_TRUE(oracle.Append(keys.Chunk("r", 1, 0, tokens)).ok());
        const std::string ctx = absl::StrCat(
            FormatName(format), " pooling ", static_cast<int>(pooling), " ",
            CpuIsaName(isa), " D ", dim, " B ", block, " L ", tokens);
        const int64_t row_bytes = int64_t{dim} * BytesPerValue(format);
        const int64_t num_blocks = (tokens + block - 1) / block;
        for (int64_t b = 0; b < num_blocks; ++b) {
          const int64_t count = store.BlockCount(1, b);
          ASSERT_EQ(count, std::min<int64_t>(block, tokens - b * block));
          // Recompute from the chunk bytes in one go, on the scalar path.
          std::vector<float> want(dim);
          PoolRows(CpuIsa::kScalar, format, pooling,
                   keys.bytes.data() + b * block * row_bytes,
                   format == KeyFormat::kFp8E4M3
                       ? keys.scales.data() + b * block
                       : nullptr,
                   count, dim, /*init=*/true, want.data());
          const float* got = store.Summary(1, b);
          ASSERT_EQ(std::memcmp(got, want.data(), dim * sizeof(float)), 0)
              << ctx << " block " << b;
          // And against the float64 oracle's representative.
          const std::vector<double> rep = oracle.Representative(b);
          const std::vector<double> mag = oracle.AbsPooled(b);
          for (int d = 0; d < dim; ++d) {
            const double value = pooling == BlockPooling::kMean
                                     ? double{got[d]} / count
                                     : double{got[d]};
            ASSERT_NEAR(value, rep[d],
                        (block + 2) * std::ldexp(1.0, -24) * mag[d] + 1e-30)
                << ctx << " block " << b << " d " << d;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllFormatsAndPoolings, CpuRequestStoreTest,
    ::testing::Combine(::testing::Values(KeyFormat::kFp8E4M3, KeyFormat::kBf16,
                                         KeyFormat::kFp32),
                       ::testing::Values(BlockPooling::kMean,
                                         BlockPooling::kMax)));

TEST(CpuRequestStoreBytesTest, StoredBytesRoundTripAcrossPages) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 402);
  const RequestConfig config =
      Config(KeyFormat::kFp8E4M3, BlockPooling::kMean, 128, 16, 1);
  CpuRequestStore store(config, DetectCpuIsa());
  const int64_t tokens = 3 * store.page_tokens() + 17;
  const ref::EncodedKeys keys = RandomKeys(rng, config.key_format, tokens, 128);
  AppendInRandomChunks(rng, store, 0, keys);
  for (int64_t s = 0; s < tokens; ++s) {
    ASSERT_EQ(
        std::memcmp(store.KeyBytes(0, s), keys.bytes.data() + s * 128, 128), 0)
        << "token " << s;
    ASSERT_EQ(*store.KeyScales(0, s), keys.scales[s]) << "token " << s;
  }
}

TEST(CpuRequestStoreBytesTest, AccountingIsExactAndNearRawSize) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 403);
  const RequestConfig config =
      Config(KeyFormat::kFp8E4M3, BlockPooling::kMean, 128, 128, 3);
  CpuRequestStore store(config, DetectCpuIsa());
  EXPECT_EQ(store.bytes_reserved(), 0);
  // A key page is exactly the wire bytes of its tokens (132 B/token).
  EXPECT_EQ(store.key_page_bytes(), store.page_tokens() * 132);
  EXPECT_EQ(store.summary_page_bytes(),
            CpuRequestStore::kSummaryPageBlocks * 128 * 4);
  // BytesAfterAppend is pure.
  const int64_t before = store.BytesAfterAppend(2, 1000);
  EXPECT_EQ(store.BytesAfterAppend(2, 1000), before);
  EXPECT_EQ(store.bytes_reserved(), 0);
  EXPECT_EQ(store.BytesAfterAppend(2, 0), 0);

  const int64_t tokens = 20000;
  const ref::EncodedKeys keys = RandomKeys(rng, config.key_format, tokens, 128);
  AppendInRandomChunks(rng, store, 2, keys);
  const int64_t key_pages =
      (tokens + store.page_tokens() - 1) / store.page_tokens();
  const int64_t blocks = (tokens + 127) / 128;
  const int64_t summary_pages =
      (blocks + CpuRequestStore::kSummaryPageBlocks - 1) /
      CpuRequestStore::kSummaryPageBlocks;
  EXPECT_EQ(store.bytes_reserved(),
            key_pages * store.key_page_bytes() +
                summary_pages * store.summary_page_bytes());
  // Raw keys + summaries (4 D / B bytes per token) + at most one partial
  // page of each kind.
  const int64_t raw = tokens * 132;
  EXPECT_LE(store.bytes_reserved(), raw + blocks * 128 * 4 +
                                        store.key_page_bytes() +
                                        store.summary_page_bytes());
  EXPECT_GE(store.bytes_reserved(), raw);
}

TEST(CpuRequestStoreBytesTest, MatchesComparesKeysAndScales) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 404);
  for (KeyFormat format :
       {KeyFormat::kFp8E4M3, KeyFormat::kBf16, KeyFormat::kFp32}) {
    const RequestConfig config = Config(format, BlockPooling::kMean, 32, 16, 1);
    CpuRequestStore store(config, DetectCpuIsa());
    const int64_t tokens = 2 * store.page_tokens() + 5;
    const ref::EncodedKeys keys = RandomKeys(rng, format, tokens, 32);
    AppendInRandomChunks(rng, store, 0, keys);
    // A chunk spanning a page boundary.
    const int64_t first = store.page_tokens() - 3, n = 10;
    absl::StatusOr<bool> same = store.Matches(keys.Chunk("r", 0, first, n));
    ASSERT_TRUE(same.ok());
    EXPECT_TRUE(*same) << FormatName(format);

    ref::EncodedKeys changed = keys;
    changed.bytes[(first + 7) * 32 * BytesPerValue(format)] ^= 1;
    same = store.Matches(changed.Chunk("r", 0, first, n));
    ASSERT_TRUE(same.ok());
    EXPECT_FALSE(*same) << FormatName(format);

    if (format == KeyFormat::kFp8E4M3) {
      ref::EncodedKeys rescaled = keys;
      rescaled.scales[first + 9] =
          std::nextafter(rescaled.scales[first + 9], 1e9f);
      same = store.Matches(rescaled.Chunk("r", 0, first, n));
      ASSERT_TRUE(same.ok());
      EXPECT_FALSE(*same);
    }
  }
}

TEST(CpuRequestStoreBytesTest, EmptyAppendIsANoOp) {
  const RequestConfig config =
      Config(KeyFormat::kBf16, BlockPooling::kMean, 64, 32, 1);
  CpuRequestStore store(config, DetectCpuIsa());
  KeyChunk chunk;
  chunk.request_id = "r";
  chunk.format = KeyFormat::kBf16;
  EXPECT_TRUE(store.Append(chunk).ok());
  EXPECT_EQ(store.length(0), 0);
  EXPECT_EQ(store.bytes_reserved(), 0);
}

}  // namespace
}  // namespace hisa::cpu
