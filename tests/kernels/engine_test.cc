// Engine (CPU backend) against the float64 oracle: every key and query
// format, head dims, head counts, block sizes, m and k at the edges, exact
// ties, forced blocks, batches spanning requests and layers, and chunked
// appends. Fresh random inputs each run: HISA_TEST_SEED replays one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "tests/kernels/engine_harness.h"
#include "tests/kernels/thread_per_chunk.h"
#include "tests/reference/checker.h"
#include "tests/reference/reference.h"
#include "tests/reference/test_seed.h"
#include "tests/reference/wire_encoding.h"

namespace hisa {
namespace {

using testing_support::ExpectSameResult;
using testing_support::Shape;
using testing_support::ShapeName;
using testing_support::ThreadPerChunk;

using ref::EncodedKeys;
using ref::EncodedQuery;
using testing_support::EngineHarness;
using testing_support::IntegerKeys;
using testing_support::IntegerQuery;
using testing_support::RandomKeys;
using testing_support::RandomQuery;
using testing_support::Uniform;

constexpr KeyFormat kFormats[] = {KeyFormat::kFp8E4M3, KeyFormat::kBf16,
                                  KeyFormat::kFp32};


// Each format pair runs two of these; together they cover D in {64, 128},
// H in {1, 32, 64}, B in {16, 64, 128}, m from 1 to 40, k from 40 to 2048
// (k = m * B included), mean and max pooling.
constexpr Shape kShapes[] = {
    {128, 64, 128, 8, 1000, 2500, BlockPooling::kMean},
    {64, 32, 64, 4, 200, 1800, BlockPooling::kMax},
    {128, 1, 16, 16, 64, 3000, BlockPooling::kMean},
    {64, 64, 16, 3, 40, 700, BlockPooling::kMean},
    {128, 32, 128, 16, 2048, 3000, BlockPooling::kMean},
    {64, 1, 64, 1, 50, 1000, BlockPooling::kMax},
    {128, 64, 64, 2, 100, 900, BlockPooling::kMean},
    {64, 32, 128, 5, 600, 1500, BlockPooling::kMean},
    {128, 1, 16, 40, 600, 2000, BlockPooling::kMax},
};



class EngineFormatsTest
    : public ::testing::TestWithParam<std::tuple<KeyFormat, KeyFormat>> {};

TEST_P(EngineFormatsTest, MatchesReferenceAtEdgePositions) {
  const auto [key_format, q_format] = GetParam();
  const int pair = (static_cast<int>(key_format) - 1) * 3 +
                   (static_cast<int>(q_format) - 1);
  for (int shape_index : {pair, (pair + 4) % 9}) {
    const Shape& shape = kShapes[shape_index];
    const uint64_t seed = ref::TestSeed() + 1000 * pair + shape_index;
    std::mt19937_64 rng(seed);
    const std::string where = absl::StrCat(
        ref::SeedNote(), " (rng seed ", seed, ") keys ", FormatName(key_format),
        " q ", FormatName(q_format), " ", ShapeName(shape));
    SCOPED_TRACE(where);

    EngineHarness h;
    RequestConfig config;
    config.num_layers = 1;
    config.head_dim = shape.head_dim;
    config.block_size = shape.block_size;
    config.key_format = key_format;
    config.pooling = shape.pooling;
    h.CreateRequest("r", config);
    h.AppendKeys("r", 0,
                 RandomKeys(rng, key_format, shape.length, shape.head_dim),
                 &rng, Uniform(rng, 1, shape.length));

    std::vector<EncodedQuery> queries;
    const std::vector<QueryRow> rows =
        testing_support::EdgeRows(shape, q_format, rng, &queries);
    std::vector<RowResult> results(rows.size());
    h.engine().Select(rows, absl::MakeSpan(results));

    const ref::Tolerance tol = ref::Fp32Tolerance(
        shape.head_dim, shape.num_heads, shape.block_size);
    for (size_t i = 0; 3 * i < rows.size(); ++i) {
      testing_support::ExpectEdgeRowTriple(h, shape, rows, results, i, tol,
                                           where);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, EngineFormatsTest,
    ::testing::Combine(::testing::ValuesIn(kFormats),
                       ::testing::ValuesIn(kFormats)),
    [](const ::testing::TestParamInfo<std::tuple<KeyFormat, KeyFormat>>& info) {
      return absl::StrCat("keys_", FormatName(std::get<0>(info.param)), "_q_",
                          FormatName(std::get<1>(info.param)));
    });

// Small-integer inputs make every fp32 score exact, so the engine must equal
// the oracle exactly: the tie rules (lower position, lower block index) are
// checked wherever the many exact ties of such data fall.
TEST(EngineExactTest, IntegerInputsMatchTheOracleExactly) {
  testing_support::ExpectIntegerInputsMatchTheOracle(
      testing_support::CpuTestOptions(), /*trials=*/18, /*one_batch=*/false);
}

// Blocks 0 and c score lowest on J (their mean points away from the query)
// but each hides the best token: they must still be candidates.
TEST(EngineExactTest, FirstAndOwnBlocksAreAlwaysCandidates) {
  const uint64_t seed = ref::TestSeed() + 21;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 64, kB = 16, kM = 3, kBlocks = 12;
  for (KeyFormat format : kFormats) {
    for (BlockPooling pooling : {BlockPooling::kMean, BlockPooling::kMax}) {
      // Token value along dim 0: 2 in middle blocks, -3 in blocks 0 and
      // c = kBlocks - 1 except one planted +3 each (at random offsets).
      std::vector<float> values(kBlocks * kB * kD, 0.0f);
      for (int s = 0; s < kBlocks * kB; ++s) {
        const int b = s / kB;
        values[s * kD] = (b == 0 || b == kBlocks - 1) ? -3.0f : 2.0f;
        values[s * kD + 1 + s % 5] = 1.0f;  // other dims: unscored variety
      }
      const int first_star = static_cast<int>(Uniform(rng, 0, kB - 1));
      const int last_star =
          (kBlocks - 1) * kB + static_cast<int>(Uniform(rng, 0, kB - 1));
      values[first_star * kD] = 3.0f;
      values[last_star * kD] = 3.0f;
      std::vector<float> scales;
      if (format == KeyFormat::kFp8E4M3) scales.assign(kBlocks * kB, 1.0f);
      EngineHarness h;
      h.CreateRequest("r", RequestConfig{1, kD, kB, format, pooling});
      h.AppendKeys("r", 0, ref::EncodeKeys(format, kD, values, scales));

      std::vector<float> q(kD, 0.0f);
      q[0] = 1.0f;
      const EncodedQuery query = ref::EncodeQuery(
          KeyFormat::kFp32, 1, kD, q, std::vector<float>{1.0f});
      for (int64_t t = (kBlocks - 1) * kB; t < kBlocks * kB; ++t) {
        const QueryRow row = query.Row("r", 0, t, SelectMode::kHisa, 2, kM);
        const RowResult result = h.SelectOne(row);
        const std::string where =
            absl::StrCat(FormatName(format), " t=", t, " stars ", first_star,
                         ",", last_star);
        EXPECT_TRUE(h.Check(row, result, ref::ExactTolerance(), where));
        ASSERT_TRUE(result.status.ok()) << result.status;
        // The block-0 star always; the block-c star once t reaches it.
        EXPECT_EQ(result.positions[0], first_star) << where;
        if (t >= last_star) {
          EXPECT_EQ(result.positions[1], last_star) << where;
        }
      }
    }
  }
}

// Identical middle blocks tie on J: the lower block indices must win. With
// k = m * B every candidate is returned, so the chosen blocks are visible.
TEST(EngineExactTest, BlockTiesGoToTheLowerIndex) {
  const uint64_t seed = ref::TestSeed() + 22;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 64, kB = 16, kM = 4, kBlocks = 10;
  for (KeyFormat format : kFormats) {
    const EncodedKeys first = IntegerKeys(rng, format, kB, kD);
    const EncodedKeys middle = IntegerKeys(rng, format, kB, kD);
    EncodedKeys all = first;
    for (int b = 1; b < kBlocks; ++b) {
      all = testing_support::Concat(all, middle);
    }
    EngineHarness h;
    h.CreateRequest("r", RequestConfig{1, kD, kB, format, BlockPooling::kMean});
    h.AppendKeys("r", 0, all);
    const EncodedQuery query = IntegerQuery(rng, KeyFormat::kBf16, 4, kD);
    const int64_t t = kBlocks * kB - 1;
    const QueryRow row =
        query.Row("r", 0, t, SelectMode::kHisa, kM * kB, kM, true);
    const RowResult result = h.SelectOne(row);
    EXPECT_TRUE(h.Check(row, result, ref::ExactTolerance(), FormatName(format)));
    // m = 4: blocks 0 and c = 9 forced, then the two lowest of the tied
    // middle blocks; k = m * B returns every candidate.
    ASSERT_TRUE(result.status.ok()) << result.status;
    for (int32_t p : result.positions) {
      const int b = p / kB;
      EXPECT_TRUE(p == -1 || b == 0 || b == 1 || b == 2 || b == kBlocks - 1)
          << FormatName(format) << " position " << p;
    }
  }
}

// Keys drawn from 5 distinct Gaussian vectors: scores take 5 well separated
// values, so everything is decided by the lower-position tie rule.
TEST(EngineExactTest, DuplicatedKeysTieToTheLowerPosition) {
  const uint64_t seed = ref::TestSeed() + 23;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 128, kH = 32, kB = 64;
  for (KeyFormat format : kFormats) {
    const EncodedKeys distinct = RandomKeys(rng, format, 5, kD);
    const int64_t row_bytes = int64_t{kD} * BytesPerValue(format);
    EncodedKeys keys;
    keys.format = format;
    keys.head_dim = kD;
    for (int s = 0; s < 1200; ++s) {
      const int64_t pick = Uniform(rng, 0, 4);
      keys.bytes.insert(keys.bytes.end(),
                        distinct.bytes.begin() + pick * row_bytes,
                        distinct.bytes.begin() + (pick + 1) * row_bytes);
      if (format == KeyFormat::kFp8E4M3) keys.scales.push_back(distinct.scales[pick]);
      ++keys.num_tokens;
    }
    EngineHarness h;
    h.CreateRequest("r", RequestConfig{1, kD, kB, format, BlockPooling::kMean});
    h.AppendKeys("r", 0, keys, &rng, 200);
    ref::Tolerance tol = ref::Fp32Tolerance(kD, kH, kB);
    tol.token_rel = 0;  // duplicates tie exactly; distinct values are far apart
    tol.exact_ties = true;
    for (int trial = 0; trial < 6; ++trial) {
      const EncodedQuery q = RandomQuery(rng, KeyFormat::kFp32, kH, kD);
      const int64_t t = Uniform(rng, 0, keys.num_tokens - 1);
      const int k = static_cast<int>(Uniform(rng, 1, 512));
      for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
        const QueryRow row = q.Row("r", 0, t, mode, k, 8);
        EXPECT_TRUE(h.Check(row, h.SelectOne(row), tol,
                            absl::StrCat(FormatName(format), " t=", t, " k=", k)));
      }
    }
  }
}

TEST(EngineEdgeTest, OneTokenAndTinyLayers) {
  const uint64_t seed = ref::TestSeed() + 24;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  for (KeyFormat format : kFormats) {
    for (int64_t length : {1, 2, 17}) {
      EngineHarness h;
      h.CreateRequest("r", RequestConfig{1, 64, 16, format, BlockPooling::kMean});
      h.AppendKeys("r", 0, RandomKeys(rng, format, length, 64), &rng, 3);
      const EncodedQuery q = RandomQuery(rng, KeyFormat::kBf16, 3, 64);
      for (int64_t t = 0; t < length; ++t) {
        for (int k : {1, 2, 16, 2048}) {
          for (SelectMode mode :
               {SelectMode::kDense, SelectMode::kHisa, SelectMode::kAuto}) {
            const int m = (k + 15) / 16;
            const QueryRow row = q.Row("r", 0, t, mode, k, m, true);
            const RowResult result = h.SelectOne(row);
            EXPECT_TRUE(h.Check(row, result, ref::Fp32Tolerance(64, 3, 16),
                                absl::StrCat("L=", length, " t=", t, " k=", k)));
            // Fewer eligible tokens than k: -1 padding after t + 1 entries.
            if (result.status.ok() && k > t + 1) {
              EXPECT_EQ(result.positions[t + 1], -1);
              EXPECT_EQ(result.positions.back(), -1);
            }
          }
        }
      }
    }
  }
}

// One Select batch over many requests and layers (decode-style, one row per
// request, plus prefill-style runs of one request) with mixed modes and
// query formats; bad rows fail alone; each row equals its single-row answer.
TEST(EngineBatchTest, RowsSpanRequestsAndLayers) {
  const uint64_t seed = ref::TestSeed() + 25;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  EngineHarness h;
  struct Req {
    std::string id;
    RequestConfig config;
  };
  const std::vector<Req> reqs = {
      {"a", {3, 128, 64, KeyFormat::kFp8E4M3, BlockPooling::kMean}},
      {"b", {2, 64, 16, KeyFormat::kBf16, BlockPooling::kMax}},
      {"c", {2, 128, 128, KeyFormat::kFp32, BlockPooling::kMean}},
      {"d", {4, 64, 32, KeyFormat::kFp8E4M3, BlockPooling::kMean}},
  };
  for (const Req& r : reqs) {
    h.CreateRequest(r.id, r.config);
    for (int l = 0; l < r.config.num_layers; ++l) {
      h.AppendKeys(r.id, l,
                   RandomKeys(rng, r.config.key_format, Uniform(rng, 1, 1500),
                              r.config.head_dim),
                   &rng, 400);
    }
  }
  std::vector<EncodedQuery> queries;
  struct RowSpec {
    std::string id;
    int layer;
    int64_t t;
    SelectMode mode;
    int k, m;
  };
  std::vector<RowSpec> specs;
  // More rows than one of Select's 64-row check chunks (engine.cc).
  for (int i = 0; i < 140; ++i) {
    const Req& r = reqs[Uniform(rng, 0, reqs.size() - 1)];
    const int layer = static_cast<int>(Uniform(rng, 0, r.config.num_layers - 1));
    const int64_t length = h.oracle(r.id, layer).length();
    const int m = static_cast<int>(Uniform(rng, 2, 8));
    const int k = static_cast<int>(
        Uniform(rng, 1, std::min<int64_t>(kMaxK, int64_t{m} * r.config.block_size)));
    const SelectMode mode = std::vector<SelectMode>{
        SelectMode::kDense, SelectMode::kHisa, SelectMode::kAuto}[Uniform(rng, 0, 2)];
    specs.push_back({r.id, layer, Uniform(rng, 0, length - 1), mode, k, m});
    queries.push_back(RandomQuery(rng, kFormats[Uniform(rng, 0, 2)],
                                  static_cast<int>(Uniform(rng, 1, 64)),
                                  r.config.head_dim));
  }
  std::vector<QueryRow> rows;
  for (size_t i = 0; i < specs.size(); ++i) {
    rows.push_back(queries[i].Row(specs[i].id, specs[i].layer, specs[i].t,
                                  specs[i].mode, specs[i].k, specs[i].m,
                                  i % 2 == 0));
  }
  // Four bad rows in the middle: position not yet appended, unknown
  // request, k out of range, a NaN weight.
  QueryRow beyond = rows[0];
  beyond.position = h.oracle(specs[0].id, specs[0].layer).length();
  QueryRow unknown = rows[1];
  unknown.request_id = "no-such-request";
  QueryRow bad_k = rows[2];
  bad_k.k = 0;
  std::vector<float> nan_weights(rows[3].weights.begin(),
                                 rows[3].weights.end());
  nan_weights.back() = std::nanf("");
  QueryRow nan_weight = rows[3];
  nan_weight.weights = nan_weights;
  rows.insert(rows.begin() + 10, beyond);
  rows.insert(rows.begin() + 20, unknown);
  rows.insert(rows.begin() + 30, bad_k);
  rows.insert(rows.begin() + 33, nan_weight);
  const std::vector<size_t> bad = {10, 20, 30, 33};

  std::vector<RowResult> results(rows.size());
  h.engine().Select(rows, absl::MakeSpan(results));
  EXPECT_EQ(results[10].status.code(), absl::StatusCode::kFailedPrecondition)
      << results[10].status;
  EXPECT_EQ(results[20].status.code(), absl::StatusCode::kNotFound)
      << results[20].status;
  EXPECT_EQ(results[30].status.code(), absl::StatusCode::kInvalidArgument)
      << results[30].status;
  EXPECT_EQ(results[33].status.code(), absl::StatusCode::kInvalidArgument)
      << results[33].status;
  // The rows' checks in chunks on several threads (HostParallel): the same
  // answers and errors, row by row.
  ThreadPerChunk parallel;
  std::vector<RowResult> threaded(rows.size());
  h.engine().Select(rows, absl::MakeSpan(threaded), nullptr, &parallel);
  EXPECT_GE(parallel.chunks, 2);
  for (size_t i = 0; i < rows.size(); ++i) {
    if (std::find(bad.begin(), bad.end(), i) != bad.end()) {
      EXPECT_EQ(threaded[i].status, results[i].status) << "row " << i;
    } else {
      ExpectSameResult(threaded[i], results[i],
                       absl::StrCat("row ", i, " threaded checks vs serial"));
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (std::find(bad.begin(), bad.end(), i) != bad.end()) continue;
    const QueryRow& row = rows[i];
    const std::string where =
        absl::StrCat("row ", i, " request ", row.request_id, " layer ",
                     row.layer, " H=", row.num_heads, " q ",
                     FormatName(row.q_format));
    const RequestConfig& config = h.config(std::string(row.request_id));
    EXPECT_TRUE(h.Check(row, results[i],
                        ref::Fp32Tolerance(config.head_dim, row.num_heads,
                                           config.block_size),
                        where));
    ExpectSameResult(results[i], h.SelectOne(row), where + " batch vs single");
  }
}

// Appending in random chunk sizes (with idempotent re-sends of stored
// ranges and overlapping extensions) gives exactly the one-append answer.
TEST(EngineAppendTest, ChunkedAppendsGiveTheOneAppendResult) {
  const uint64_t seed = ref::TestSeed() + 26;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  for (KeyFormat format : kFormats) {
    for (BlockPooling pooling : {BlockPooling::kMean, BlockPooling::kMax}) {
      constexpr int kD = 128, kB = 64, kH = 16;
      const int64_t length = Uniform(rng, 800, 2500);
      const EncodedKeys keys = RandomKeys(rng, format, length, kD);
      EngineHarness h;
      const RequestConfig config{1, kD, kB, format, pooling};
      h.CreateRequest("whole", config);
      h.AppendKeys("whole", 0, keys);
      ASSERT_TRUE(h.engine().CreateRequest("chunked", config).ok());
      int64_t stored = 0;
      while (stored < length) {
        // Start anywhere in [stored - 100, stored]: overlaps must be
        // acknowledged and only the tail stored.
        const int64_t first = std::max<int64_t>(0, stored - Uniform(rng, 0, 100) *
                                                     Uniform(rng, 0, 1));
        const int64_t n = std::min(length - first, Uniform(rng, 1, 257));
        absl::StatusOr<int64_t> got =
            h.engine().Append(keys.Chunk("chunked", 0, first, n));
        ASSERT_TRUE(got.ok()) << got.status() << " at " << first << "+" << n;
        stored = std::max(stored, first + n);
        ASSERT_EQ(*got, stored);
      }
      for (int trial = 0; trial < 8; ++trial) {
        const EncodedQuery q = RandomQuery(rng, format, kH, kD);
        const int64_t t = Uniform(rng, 0, length - 1);
        const int m = static_cast<int>(Uniform(rng, 1, 12));
        const int k = static_cast<int>(Uniform(rng, 1, m * kB));
        for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
          const QueryRow a = q.Row("whole", 0, t, mode, k, m, true);
          const QueryRow b = q.Row("chunked", 0, t, mode, k, m, true);
          const RowResult ra = h.SelectOne(a);
          EXPECT_TRUE(h.Check(a, ra, ref::Fp32Tolerance(kD, kH, kB),
                              absl::StrCat(FormatName(format), " t=", t)));
          ExpectSameResult(ra, h.SelectOne(b),
                           absl::StrCat(FormatName(format), " t=", t, " k=", k,
                                        " m=", m, " whole vs chunked"));
        }
      }
    }
  }
}

}  // namespace
}  // namespace hisa
