// The CUDA backend through the Engine against the float64 oracle (SPEC 4.4)
// and against the CPU engine: every key and query format, D 64/128, H
// 1/32/64, several B, m and k, edge lengths, prefill batches (paired rows,
// block unions), decode batches (many requests, split work items), long
// DENSE rows (buffer compactions), exact ties, negative fp8 scales, appends,
// budget and concurrent Selects. Fresh random inputs each run; the seed is
// printed and HISA_TEST_SEED replays it. Skips without an sm_90 GPU.
//
// Tolerances (documented per path): FP8 keys with FP8 queries and D in
// {64, 128} run on tensor cores: products are exact, accumulation is the
// tensor core's (token_rel 5e-4 of the largest candidate magnitude), block
// scores use the bf16 hi part of the block means (round to nearest: each
// element within 2^-8 of the mean's, so block_copy_rel 2^-8 of the means'
// own magnitude) with the tensor core's accumulation (block_rel 1e-4); with
// HISA_CUDA_BLOCK_MEANS_LO=1, hi + lo, close to fp32: block_rel 1e-4 alone.
// Every other format combination runs fp32 FMA: ref::Fp32Tolerance.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_state.h"
#include "kernels/cuda/select_plan.h"
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

#define SKIP_WITHOUT_GPU()                                       \
  do {                                                           \
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no sm_90 GPU"; \
  } while (0)

EngineOptions GpuOptions(int64_t budget = int64_t{1} << 30) {
  EngineOptions options;
  options.backend = "cuda";
  options.memory_budget_bytes = budget;
  return options;
}

bool TensorCorePath(KeyFormat keys, KeyFormat q, int head_dim) {
  return keys == KeyFormat::kFp8E4M3 && q == KeyFormat::kFp8E4M3 &&
         (head_dim == 64 || head_dim == 128);
}

// The tensor-core path's block-score tolerance (see the top of the file).
void SetTensorCoreBlockTolerance(ref::Tolerance& tol) {
  const char* lo = std::getenv("HISA_CUDA_BLOCK_MEANS_LO");
  const bool hi_only = lo == nullptr || std::string(lo) != "1";
  tol.block_rel = std::max(tol.block_rel, 1e-4);
  tol.block_copy_rel = hi_only ? std::ldexp(1.0, -8) : 0.0;
}

ref::Tolerance GpuTolerance(KeyFormat keys, KeyFormat q, int head_dim,
                            int num_heads, int block_size) {
  ref::Tolerance tol = ref::Fp32Tolerance(head_dim, num_heads, block_size);
  if (TensorCorePath(keys, q, head_dim)) {
    tol.token_rel = std::max(tol.token_rel, 5e-4);
    SetTensorCoreBlockTolerance(tol);
  }
  return tol;
}


// |A ∩ B| / |B| over non-padding positions (1 when B is empty).
double Overlap(const RowResult& a, const RowResult& b) {
  std::vector<int32_t> x, y;
  for (int32_t p : a.positions) if (p >= 0) x.push_back(p);
  for (int32_t p : b.positions) if (p >= 0) y.push_back(p);
  if (y.empty()) return 1.0;
  std::vector<int32_t> both;
  std::set_intersection(x.begin(), x.end(), y.begin(), y.end(),
                        std::back_inserter(both));
  return static_cast<double>(both.size()) / y.size();
}


// D in {64, 128}, H in {1, 32, 64}, B 16..128, m 1..64, k 40..2048.
constexpr Shape kShapes[] = {
    {128, 64, 128, 8, 1000, 2500, BlockPooling::kMean},
    {64, 32, 64, 4, 200, 1800, BlockPooling::kMax},
    {128, 1, 16, 16, 64, 3000, BlockPooling::kMean},
    {64, 64, 16, 3, 40, 700, BlockPooling::kMean},
    {128, 32, 128, 16, 2048, 3000, BlockPooling::kMean},
    {64, 1, 64, 1, 50, 1000, BlockPooling::kMax},
    {128, 64, 64, 2, 100, 900, BlockPooling::kMean},
    {64, 32, 128, 5, 600, 1500, BlockPooling::kMean},
    {128, 64, 128, 64, 2048, 12000, BlockPooling::kMean},
    {128, 128, 128, 8, 1000, 3000, BlockPooling::kMean},
};
constexpr int kNumShapes = sizeof(kShapes) / sizeof(kShapes[0]);


TEST(GpuInfoTest, PrintsDeviceAndSeed) {
  SKIP_WITHOUT_GPU();
  std::printf("%s\n", ref::SeedNote().c_str());
  absl::StatusOr<std::unique_ptr<CudaBackend>> backend = [] {
    cuda::DeviceOptions o;
    o.memory_budget_bytes = int64_t{64} << 20;
    return CudaBackend::Create(o);
  }();
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::printf(
      "device: %s, %d SMs; token kernel for FP8 D=128 H<=64: %s%s\n",
      (*backend)->device().device_name().c_str(),
      (*backend)->device().num_sms(),
      (*backend)->plan_options().use_wgmma ? "wgmma" : "mma.sync",
      (*backend)->plan_options().use_tma ? " (+ bulk tensor copies)" : "");
}

class GpuFormatsTest
    : public ::testing::TestWithParam<std::tuple<KeyFormat, KeyFormat>> {};

// Every row of a batch: GPU against the oracle; HISA == DENSE below m * B;
// AUTO == HISA; and the GPU's sets against the CPU engine's on the same keys.
TEST_P(GpuFormatsTest, MatchesReferenceAndCpuEngine) {
  SKIP_WITHOUT_GPU();
  const auto [key_format, q_format] = GetParam();
  const int pair = (static_cast<int>(key_format) - 1) * 3 +
                   (static_cast<int>(q_format) - 1);
  for (int shape_index : {pair, (pair + 4) % kNumShapes}) {
    const Shape& shape = kShapes[shape_index];
    const uint64_t seed = ref::TestSeed() + 1000 * pair + shape_index;
    std::mt19937_64 rng(seed);
    const std::string where = absl::StrCat(
        ref::SeedNote(), " (rng seed ", seed, ") keys ", FormatName(key_format),
        " q ", FormatName(q_format), " ", ShapeName(shape));
    SCOPED_TRACE(where);

    EngineHarness gpu(GpuOptions());
    EngineHarness cpu;
    RequestConfig config{1, shape.head_dim, shape.block_size, key_format,
                         shape.pooling};
    gpu.CreateRequest("r", config);
    cpu.CreateRequest("r", config);
    const EncodedKeys keys =
        RandomKeys(rng, key_format, shape.length, shape.head_dim);
    std::mt19937_64 chunk_rng(seed + 7);
    gpu.AppendKeys("r", 0, keys, &chunk_rng, Uniform(rng, 1, shape.length));
    cpu.AppendKeys("r", 0, keys);

    std::vector<EncodedQuery> queries;
    const std::vector<QueryRow> rows =
        testing_support::EdgeRows(shape, q_format, rng, &queries);
    std::vector<RowResult> results(rows.size()), cpu_results(rows.size());
    gpu.engine().Select(rows, absl::MakeSpan(results));
    cpu.engine().Select(rows, absl::MakeSpan(cpu_results));

    const ref::Tolerance tol =
        GpuTolerance(key_format, q_format, shape.head_dim, shape.num_heads,
                     shape.block_size);
    double overlap_sum = 0;
    const size_t edge_rows = rows.size() / 3;
    for (size_t i = 0; i < edge_rows; ++i) {
      testing_support::ExpectEdgeRowTriple(gpu, shape, rows, results, i, tol,
                                           where);
      const RowResult& hisa = results[3 * i + 1];
      if (cpu_results[3 * i + 1].status.ok() && hisa.status.ok()) {
        overlap_sum += Overlap(hisa, cpu_results[3 * i + 1]);
      }
    }
    const double overlap = overlap_sum / edge_rows;
    std::printf("  [%s] GPU vs CPU HISA overlap %.5f over %zu rows\n",
                where.c_str(), overlap, edge_rows);
    EXPECT_GE(overlap, 0.98) << where;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, GpuFormatsTest,
    ::testing::Combine(::testing::ValuesIn(kFormats),
                       ::testing::ValuesIn(kFormats)),
    [](const ::testing::TestParamInfo<std::tuple<KeyFormat, KeyFormat>>& info) {
      return absl::StrCat("keys_", FormatName(std::get<0>(info.param)), "_q_",
                          FormatName(std::get<1>(info.param)));
    });

// Prefill shape: many consecutive rows of one request in one batch (paired
// rows share work items and the union of their blocks).
TEST(GpuShapesTest, PrefillBatchOfConsecutiveRows) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int head_dim, num_heads, block_size, m, k;
    int64_t length;
    int rows;
  };
  const Case cases[] = {{128, 64, 128, 64, 2048, 20000, 20},
                        {128, 64, 128, 16, 1024, 16000, 15},
                        {64, 32, 64, 8, 256, 9000, 17},
                        // 128 and 96 (padded to 128) heads: the block
                        // kernel's two head groups.
                        {128, 128, 128, 16, 1024, 9000, 12},
                        {128, 96, 64, 8, 512, 6000, 9}};
  for (const Case& c : cases) {
    const uint64_t seed = ref::TestSeed() + 31 + c.length;
    std::mt19937_64 rng(seed);
    const std::string where =
        absl::StrCat(ref::SeedNote(), " D=", c.head_dim, " H=", c.num_heads,
                     " B=", c.block_size, " m=", c.m, " k=", c.k, " L=",
                     c.length, " rows=", c.rows);
    SCOPED_TRACE(where);
    EngineHarness h(GpuOptions());
    const RequestConfig config{1, c.head_dim, c.block_size,
                               KeyFormat::kFp8E4M3, BlockPooling::kMean};
    h.CreateRequest("p", config);
    h.AppendKeys("p", 0,
                 RandomKeys(rng, KeyFormat::kFp8E4M3, c.length, c.head_dim,
                            c.block_size),
                 &rng, 4096);
    std::vector<EncodedQuery> queries;
    std::vector<QueryRow> rows;
    for (int i = 0; i < c.rows; ++i) {
      queries.push_back(
          RandomQuery(rng, KeyFormat::kFp8E4M3, c.num_heads, c.head_dim));
    }
    for (SelectMode mode : {SelectMode::kHisa, SelectMode::kDense}) {
      for (int i = 0; i < c.rows; ++i) {
        rows.push_back(queries[i].Row("p", 0, c.length - c.rows + i, mode, c.k,
                                      c.m, i % 3 == 0));
      }
    }
    std::vector<RowResult> results(rows.size());
    h.engine().Select(rows, absl::MakeSpan(results));
    const ref::Tolerance tol =
        GpuTolerance(KeyFormat::kFp8E4M3, KeyFormat::kFp8E4M3, c.head_dim,
                     c.num_heads, c.block_size);
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_TRUE(h.Check(rows[i], results[i], tol,
                          absl::StrCat(where, " row ", i, " t=",
                                       rows[i].position, " ",
                                       ModeName(rows[i].mode))));
    }
    // A row alone (unpaired, unsplit differently) gives the same answer.
    ExpectSameResult(results[5], h.SelectOne(rows[5]), where + " batch vs one");
  }
}

// Decode shape: one row for each of many requests of different lengths, in
// one batch (split work items, merged by the last CTA of each request).
TEST(GpuShapesTest, DecodeBatchOverManyRequests) {
  SKIP_WITHOUT_GPU();
  // Variant 3 (D = 128, H = 64, B = 128, m = 64) runs the HISA rows on the
  // bulk-tensor-copy token kernel, with rows ending mid-block. Variant 4
  // has 128 heads (the block kernel's two head groups).
  for (int variant = 0; variant < 5; ++variant) {
    const int head_dim = variant == 2 ? 64 : 128;
    const int num_heads = variant == 1 ? 32 : (variant == 4 ? 128 : 64);
    const int block = variant >= 2 ? 128 : 64;
    const int m = variant == 3 ? 64 : 32, k = 2048;
    const int requests = variant == 0 || variant == 3 ? 40 : 12;
    const uint64_t seed = ref::TestSeed() + 41 + variant;
    std::mt19937_64 rng(seed);
    const std::string where = absl::StrCat(ref::SeedNote(), " variant ",
                                           variant, " D=", head_dim,
                                           " H=", num_heads, " B=", block);
    SCOPED_TRACE(where);
    EngineHarness h(GpuOptions(int64_t{2} << 30));
    const RequestConfig config{1, head_dim, block, KeyFormat::kFp8E4M3,
                               BlockPooling::kMean};
    std::vector<EncodedQuery> queries;
    std::vector<QueryRow> rows;
    std::vector<std::string> ids;
    for (int r = 0; r < requests; ++r) ids.push_back(absl::StrCat("d", r));
    for (int r = 0; r < requests; ++r) {
      h.CreateRequest(ids[r], config);
      const int64_t length = Uniform(rng, 1500, 12000);
      h.AppendKeys(ids[r], 0,
                   RandomKeys(rng, KeyFormat::kFp8E4M3, length, head_dim, block),
                   &rng, 6000);
      queries.push_back(
          RandomQuery(rng, KeyFormat::kFp8E4M3, num_heads, head_dim));
    }
    for (SelectMode mode : {SelectMode::kHisa, SelectMode::kDense}) {
      for (int r = 0; r < requests; ++r) {
        const int64_t t = h.oracle(ids[r], 0).length() - 1;
        rows.push_back(queries[r].Row(ids[r], 0, t, mode, k, m, r % 2 == 0));
      }
    }
    std::vector<RowResult> results(rows.size());
    h.engine().Select(rows, absl::MakeSpan(results));
    const ref::Tolerance tol = GpuTolerance(
        KeyFormat::kFp8E4M3, KeyFormat::kFp8E4M3, head_dim, num_heads, block);
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_TRUE(h.Check(rows[i], results[i], tol,
                          absl::StrCat(where, " row ", i, " ",
                                       ModeName(rows[i].mode))));
    }
  }
}

// Long rows: tens of thousands of DENSE candidates per row force many
// compactions of the candidate buffer and split work items.
TEST(GpuShapesTest, LongDenseAndHisaRows) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = ref::TestSeed() + 51;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  const int64_t length = 40000;
  EngineHarness h(GpuOptions());
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  h.CreateRequest("long", config);
  h.AppendKeys("long", 0, RandomKeys(rng, KeyFormat::kFp8E4M3, length, 128),
               &rng, 9000);
  const ref::Tolerance tol = GpuTolerance(
      KeyFormat::kFp8E4M3, KeyFormat::kFp8E4M3, 128, 64, 128);
  for (int k : {2048, 100, 1}) {
    const EncodedQuery q = RandomQuery(rng, KeyFormat::kFp8E4M3, 64, 128);
    for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
      const QueryRow row = q.Row("long", 0, length - 1 - k, mode, k, 64, true);
      EXPECT_TRUE(h.Check(row, h.SelectOne(row), tol,
                          absl::StrCat("k=", k, " ", ModeName(mode))));
    }
  }
  // Monotonically increasing scores are the worst case for the insertion
  // bound: every tile beats the buffer. Query = the mean direction.
  std::vector<float> values(12000 * 128);
  for (int s = 0; s < 12000; ++s) {
    for (int d = 0; d < 128; ++d) {
      values[s * 128 + d] = (d == 0 ? 0.001f * s : 0.01f * (d % 7));
    }
  }
  h.CreateRequest("ramp", config);
  h.AppendKeys("ramp", 0, ref::EncodeKeys(KeyFormat::kFp8E4M3, 128, values));
  std::vector<float> qv(64 * 128, 0.f);
  for (int hd = 0; hd < 64; ++hd) qv[hd * 128] = 1.f;
  const EncodedQuery ramp_q = ref::EncodeQuery(
      KeyFormat::kFp8E4M3, 64, 128, qv, std::vector<float>(64, 1.f));
  for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
    const QueryRow row = ramp_q.Row("ramp", 0, 11999, mode, 2048, 32, true);
    EXPECT_TRUE(h.Check(row, h.SelectOne(row), tol,
                        absl::StrCat("ramp ", ModeName(mode))));
  }
}

// Small-integer inputs: every score is exact in fp32 and on the tensor
// cores, so the GPU must equal the oracle exactly, ties included.
TEST(GpuExactTest, IntegerInputsMatchTheOracleExactly) {
  SKIP_WITHOUT_GPU();
  testing_support::ExpectIntegerInputsMatchTheOracle(
      GpuOptions(int64_t{256} << 20), /*trials=*/18, /*one_batch=*/true);
}

// Blocks 0 and c score lowest on J but each hides the best token.
TEST(GpuExactTest, FirstAndOwnBlocksAreAlwaysCandidates) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 21);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 64, kB = 16, kM = 3, kBlocks = 12;
  for (KeyFormat format : kFormats) {
    for (KeyFormat q_format : {KeyFormat::kFp32, KeyFormat::kFp8E4M3}) {
      std::vector<float> values(kBlocks * kB * kD, 0.0f);
      for (int s = 0; s < kBlocks * kB; ++s) {
        const int b = s / kB;
        values[s * kD] = (b == 0 || b == kBlocks - 1) ? -3.0f : 2.0f;
        values[s * kD + 1 + s % 5] = 1.0f;
      }
      const int first_star = static_cast<int>(Uniform(rng, 0, kB - 1));
      const int last_star =
          (kBlocks - 1) * kB + static_cast<int>(Uniform(rng, 0, kB - 1));
      values[first_star * kD] = 3.0f;
      values[last_star * kD] = 3.0f;
      std::vector<float> scales;
      if (format == KeyFormat::kFp8E4M3) scales.assign(kBlocks * kB, 1.0f);
      EngineHarness h(GpuOptions(int64_t{64} << 20));
      h.CreateRequest("r", RequestConfig{1, kD, kB, format, BlockPooling::kMean});
      h.AppendKeys("r", 0, ref::EncodeKeys(format, kD, values, scales));
      std::vector<float> q(kD, 0.0f);
      q[0] = 1.0f;
      std::vector<float> q_scales;
      if (q_format == KeyFormat::kFp8E4M3) q_scales.assign(1, 1.0f);
      const EncodedQuery query = ref::EncodeQuery(
          q_format, 1, kD, q, std::vector<float>{1.0f}, q_scales);
      for (int64_t t = (kBlocks - 1) * kB; t < kBlocks * kB; ++t) {
        const QueryRow row = query.Row("r", 0, t, SelectMode::kHisa, 2, kM);
        const RowResult result = h.SelectOne(row);
        const std::string where = absl::StrCat(
            FormatName(format), " q ", FormatName(q_format), " t=", t);
        EXPECT_TRUE(h.Check(row, result, ref::ExactTolerance(), where));
        ASSERT_TRUE(result.status.ok()) << result.status;
        EXPECT_EQ(result.positions[0], first_star) << where;
        if (t >= last_star) {
          EXPECT_EQ(result.positions[1], last_star) << where;
        }
      }
    }
  }
}

// Identical middle blocks tie on J: the lower block indices must win.
TEST(GpuExactTest, BlockTiesGoToTheLowerIndex) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 22);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 64, kB = 16, kM = 4, kBlocks = 10;
  for (KeyFormat format : kFormats) {
    for (KeyFormat q_format : {KeyFormat::kBf16, KeyFormat::kFp8E4M3}) {
      const EncodedKeys first = IntegerKeys(rng, format, kB, kD);
      const EncodedKeys middle = IntegerKeys(rng, format, kB, kD);
      EncodedKeys all = first;
      for (int b = 1; b < kBlocks; ++b) all = testing_support::Concat(all, middle);
      EngineHarness h(GpuOptions(int64_t{64} << 20));
      h.CreateRequest("r", RequestConfig{1, kD, kB, format, BlockPooling::kMean});
      h.AppendKeys("r", 0, all);
      const EncodedQuery query = IntegerQuery(rng, q_format, 4, kD);
      const int64_t t = kBlocks * kB - 1;
      const QueryRow row =
          query.Row("r", 0, t, SelectMode::kHisa, kM * kB, kM, true);
      const RowResult result = h.SelectOne(row);
      const std::string where =
          absl::StrCat(FormatName(format), " q ", FormatName(q_format));
      EXPECT_TRUE(h.Check(row, result, ref::ExactTolerance(), where));
      ASSERT_TRUE(result.status.ok()) << result.status;
      for (int32_t p : result.positions) {
        const int b = p / kB;
        EXPECT_TRUE(p == -1 || b == 0 || b == 1 || b == 2 || b == kBlocks - 1)
            << where << " position " << p;
      }
    }
  }
}

// Keys drawn from 5 distinct vectors: equal scores everywhere, decided by the
// lower-position rule, on the fp32 path and on the tensor cores.
TEST(GpuExactTest, DuplicatedKeysTieToTheLowerPosition) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 23);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 128, kH = 64, kB = 64;
  for (KeyFormat format : kFormats) {
    const EncodedKeys distinct = RandomKeys(rng, format, 5, kD);
    const int64_t row_bytes = int64_t{kD} * BytesPerValue(format);
    EncodedKeys keys;
    keys.format = format;
    keys.head_dim = kD;
    for (int s = 0; s < 3000; ++s) {
      const int64_t pick = Uniform(rng, 0, 4);
      keys.bytes.insert(keys.bytes.end(),
                        distinct.bytes.begin() + pick * row_bytes,
                        distinct.bytes.begin() + (pick + 1) * row_bytes);
      if (format == KeyFormat::kFp8E4M3) {
        keys.scales.push_back(distinct.scales[pick]);
      }
      ++keys.num_tokens;
    }
    EngineHarness h(GpuOptions(int64_t{64} << 20));
    h.CreateRequest("r", RequestConfig{1, kD, kB, format, BlockPooling::kMean});
    h.AppendKeys("r", 0, keys, &rng, 700);
    ref::Tolerance tol = ref::Fp32Tolerance(kD, kH, kB);
    tol.token_rel = 0;
    tol.exact_ties = true;
    for (KeyFormat q_format : {KeyFormat::kFp32, KeyFormat::kFp8E4M3}) {
      if (TensorCorePath(format, q_format, kD)) {
        SetTensorCoreBlockTolerance(tol);
      }
      for (int trial = 0; trial < 4; ++trial) {
        const EncodedQuery q = RandomQuery(rng, q_format, kH, kD);
        const int64_t t = Uniform(rng, 0, keys.num_tokens - 1);
        const int k = static_cast<int>(Uniform(rng, 1, 2048));
        for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
          const QueryRow row = q.Row("r", 0, t, mode, k, 32);
          EXPECT_TRUE(h.Check(row, h.SelectOne(row), tol,
                              absl::StrCat(FormatName(format), " q ",
                                           FormatName(q_format), " t=", t,
                                           " k=", k)));
        }
      }
    }
  }
}

// Decode-like batches of few long rows on the bulk-copy token kernel split
// each row over many work items, which select the row's k together
// (split selects: a threshold found in histogram rounds, ties to the lower
// position across items, each item writing its own part). Keys built to
// reach each way a round can end, all checked for exact ties:
//   levels = 1: every score equal (the first k positions win);
//   levels = 3: a few thousand equal keys per value, so the threshold is
//               one exact key after three histogram levels;
//   levels = 100: ~20-80 copies per value, so the last bin's keys are
//               ranked in a list, equal ones by position;
// plus random keys (levels = 0, tolerance as in the other tests, rows past
// m * B). Equal keys share their bytes; the values differ by the per-token
// FP8 scale (1 + v / 256), far apart against the rounding. Their rows stay
// below m * B = 8192 (every block chosen: nearly equal block means would
// leave the checker too many admissible block sets to enumerate); random
// rows are min_length to max_length long. Each request has a HISA and a
// DENSE row.
void CheckSplitSelects(int requests, std::initializer_list<int> level_set,
                       int64_t max_length, int64_t min_length = 2000) {
  constexpr int kD = 128, kH = 64, kB = 128, kM = 64;
  const int kRequests = requests;
  for (int levels : level_set) {
    const uint64_t seed = ref::TestSeed() + 29 + levels;
    std::mt19937_64 rng(seed);
    const std::string where = absl::StrCat(ref::SeedNote(), " levels=", levels,
                                           " requests=", requests);
    SCOPED_TRACE(where);
    EngineHarness h(GpuOptions(int64_t{1} << 30));
    const RequestConfig config{1, kD, kB, KeyFormat::kFp8E4M3,
                               BlockPooling::kMean};
    const EncodedKeys base = RandomKeys(rng, KeyFormat::kFp8E4M3, 1, kD);
    std::vector<std::string> ids;
    std::vector<QueryRow> rows;
    std::vector<EncodedQuery> queries;
    for (int r = 0; r < kRequests; ++r) {
      ids.push_back(absl::StrCat("s", r));
      h.CreateRequest(ids[r], config);
      const int64_t length =
          levels == 0 ? Uniform(rng, min_length, max_length)
                      : Uniform(rng, 2000, int64_t{kM} * kB);
      EncodedKeys keys;
      if (levels == 0) {
        keys = RandomKeys(rng, KeyFormat::kFp8E4M3, length, kD, kB);
      } else {
        keys.format = KeyFormat::kFp8E4M3;
        keys.head_dim = kD;
        keys.num_tokens = length;
        for (int64_t s = 0; s < length; ++s) {
          keys.bytes.insert(keys.bytes.end(), base.bytes.begin(),
                            base.bytes.end());
          const int v = static_cast<int>(Uniform(rng, 0, levels - 1));
          keys.scales.push_back(std::fabs(base.scales[0]) *
                                (1.0f + static_cast<float>(v) / 256.0f));
        }
      }
      h.AppendKeys(ids[r], 0, keys, &rng, 5000);
      queries.push_back(RandomQuery(rng, KeyFormat::kFp8E4M3, kH, kD));
    }
    for (int r = 0; r < kRequests; ++r) {
      const int64_t t = h.oracle(ids[r], 0).length() - 1;
      for (SelectMode mode : {SelectMode::kHisa, SelectMode::kDense}) {
        const int k = static_cast<int>(Uniform(rng, 1, 2048));
        rows.push_back(
            queries[r].Row(ids[r], 0, t, mode, k, kM, Uniform(rng, 0, 1) == 1));
      }
    }
    std::vector<RowResult> results(rows.size());
    h.engine().Select(rows, absl::MakeSpan(results));
    ref::Tolerance tol = GpuTolerance(KeyFormat::kFp8E4M3,
                                      KeyFormat::kFp8E4M3, kD, kH, kB);
    if (levels > 0) tol.exact_ties = true;
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_TRUE(h.Check(rows[i], results[i], tol,
                          absl::StrCat(where, " row ", i, " ",
                                       ModeName(rows[i].mode), " t=",
                                       rows[i].position, " k=", rows[i].k)));
    }
  }
}

TEST(GpuExactTest, SplitSelectsAcrossWorkItems) {
  SKIP_WITHOUT_GPU();
  CheckSplitSelects(6, {1, 3, 100, 0}, 20000);
}

// The same with 8 items per row forced (HISA_CUDA_CLUSTER_ITEMS) for 64
// requests: 128 clusters of 8 CTAs where about 45 fit at once, so the
// clusters run in several waves.
TEST(GpuExactTest, SplitSelectClustersInSeveralWaves) {
  SKIP_WITHOUT_GPU();
  setenv("HISA_CUDA_CLUSTER_ITEMS", "8", 1);
  CheckSplitSelects(64, {100, 0}, 12000);
  unsetenv("HISA_CUDA_CLUSTER_ITEMS");
}

// 48 requests whose HISA rows all choose among more than m blocks (their
// DENSE rows, past 8192 positions, take another kernel): one clustered
// launch of 48 clusters of 4 CTAs, more than an H100 or H200 has SMs,
// which fit at once at two CTAs per SM, so the planner spreads it
// (LaunchSpec::balance_clusters, smem_bytes) and its token items score
// their rows' blocks themselves (GroupDesc::tokens_score_blocks).
TEST(GpuExactTest, SplitSelectsOfSpreadClusters) {
  SKIP_WITHOUT_GPU();
  CheckSplitSelects(48, {0}, 24000, 9000);
}

// A few long rows: clusters of 8 items, each of which scores two tiles of
// its row's 1055-1172 blocks itself, one after the other, before the
// cluster chooses (GroupDesc::tokens_score_blocks, one launch).
TEST(GpuExactTest, TokenItemsScoreTwoBlockTilesEach) {
  SKIP_WITHOUT_GPU();
  CheckSplitSelects(4, {0}, 150000, 135000);
}

// FP8 keys and queries with negative scales (stored sign-flipped on the
// tensor-core path): same answers as the oracle.
TEST(GpuEdgeTest, NegativeFp8Scales) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 27);
  SCOPED_TRACE(ref::SeedNote());
  constexpr int kD = 128, kH = 64, kB = 64;
  const int64_t length = 5000;
  std::normal_distribution<float> normal;
  std::vector<float> values(length * kD);
  for (float& v : values) v = normal(rng);
  std::vector<float> scales(length);
  for (int64_t s = 0; s < length; ++s) {
    float amax = 0;
    for (int d = 0; d < kD; ++d) amax = std::max(amax, std::fabs(values[s * kD + d]));
    scales[s] = (Uniform(rng, 0, 1) ? 1.f : -1.f) * amax / 448.f;
  }
  EngineHarness h(GpuOptions(int64_t{256} << 20));
  h.CreateRequest("n", RequestConfig{1, kD, kB, KeyFormat::kFp8E4M3,
                                     BlockPooling::kMean});
  const EncodedKeys keys = ref::EncodeKeys(KeyFormat::kFp8E4M3, kD, values, scales);
  h.AppendKeys("n", 0, keys, &rng, 1000);
  // Re-appending a stored range with the same bytes is acknowledged.
  absl::StatusOr<int64_t> again = h.engine().Append(keys.Chunk("n", 0, 100, 900));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, length);
  std::vector<float> qv(kH * kD), w(kH), qs(kH);
  const ref::Tolerance tol = GpuTolerance(KeyFormat::kFp8E4M3,
                                          KeyFormat::kFp8E4M3, kD, kH, kB);
  for (int trial = 0; trial < 4; ++trial) {
    for (float& v : qv) v = normal(rng);
    for (float& v : w) v = normal(rng);
    for (int hd = 0; hd < kH; ++hd) {
      float amax = 0;
      for (int d = 0; d < kD; ++d) amax = std::max(amax, std::fabs(qv[hd * kD + d]));
      qs[hd] = (Uniform(rng, 0, 1) ? 1.f : -1.f) * amax / 448.f;
    }
    const EncodedQuery q = ref::EncodeQuery(KeyFormat::kFp8E4M3, kH, kD, qv, w, qs);
    for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
      const QueryRow row = q.Row("n", 0, Uniform(rng, 0, length - 1), mode, 512, 16, true);
      EXPECT_TRUE(h.Check(row, h.SelectOne(row), tol,
                          absl::StrCat("trial ", trial, " t=", row.position)));
    }
  }
}

TEST(GpuEdgeTest, OneTokenAndTinyLayers) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 24);
  SCOPED_TRACE(ref::SeedNote());
  for (KeyFormat format : kFormats) {
    for (int64_t length : {1, 2, 17, 130}) {
      EngineHarness h(GpuOptions(int64_t{64} << 20));
      h.CreateRequest("r", RequestConfig{1, 64, 16, format, BlockPooling::kMean});
      h.AppendKeys("r", 0, RandomKeys(rng, format, length, 64), &rng, 3);
      const EncodedQuery q = RandomQuery(rng, format, 3, 64);
      std::vector<QueryRow> rows;
      for (int64_t t = 0; t < length; t += (length > 20 ? 7 : 1)) {
        for (int k : {1, 2, 16, 2048}) {
          for (SelectMode mode :
               {SelectMode::kDense, SelectMode::kHisa, SelectMode::kAuto}) {
            rows.push_back(q.Row("r", 0, t, mode, k, (k + 15) / 16, true));
          }
        }
      }
      std::vector<RowResult> results(rows.size());
      h.engine().Select(rows, absl::MakeSpan(results));
      for (size_t i = 0; i < rows.size(); ++i) {
        const QueryRow& row = rows[i];
        EXPECT_TRUE(h.Check(row, results[i],
                            GpuTolerance(format, format, 64, 3, 16),
                            absl::StrCat(FormatName(format), " L=", length,
                                         " t=", row.position, " k=", row.k)));
        if (results[i].status.ok() && row.k > row.position + 1) {
          EXPECT_EQ(results[i].positions[row.position + 1], -1);
          EXPECT_EQ(results[i].positions.back(), -1);
        }
      }
    }
  }
}

// Stage times (cuda_backend.h): every batch reports `validate` (the
// engine), `prepare` and `finish`, and only
// about one in 16 the GPU stages, since the events between the kernels cost
// them their overlap. Bounds that hold for any number of select contexts
// the batches rotate over (each times its first batch and every 16th).
TEST(GpuStageTimesTest, GpuStagesAreTimedOnOneBatchInSixteen) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 91);
  SCOPED_TRACE(ref::SeedNote());
  EngineHarness h(GpuOptions(int64_t{64} << 20));
  h.CreateRequest("r", RequestConfig{1, 128, 128, KeyFormat::kFp8E4M3,
                                     BlockPooling::kMean});
  h.AppendKeys("r", 0, RandomKeys(rng, KeyFormat::kFp8E4M3, 2000, 128));
  const EncodedQuery q = RandomQuery(rng, KeyFormat::kFp8E4M3, 64, 128);
  const QueryRow row = q.Row("r", 0, 1999, SelectMode::kHisa, 256, 4);
  constexpr int kBatches = 64;
  int timed = 0;
  for (int i = 0; i < kBatches; ++i) {
    std::vector<RowResult> rs(1);
    SelectStageTimes times;
    h.engine().Select(absl::MakeConstSpan(&row, 1), absl::MakeSpan(rs),
                      &times);
    ASSERT_TRUE(rs[0].status.ok()) << rs[0].status;
    EXPECT_GT(times.validate, 0.0) << "batch " << i;
    EXPECT_GT(times.prepare, 0.0) << "batch " << i;
    EXPECT_GT(times.finish, 0.0) << "batch " << i;
    if (times.block_scoring > 0 || times.token_scoring > 0) ++timed;
  }
  EXPECT_GE(timed, kBatches / 16);
  EXPECT_LE(timed, kBatches / 4);
}

// Budget in GPU pages: an append that does not fit is RESOURCE_EXHAUSTED and
// stores nothing; conflicting bytes are FAILED_PRECONDITION.
TEST(GpuEdgeTest, BudgetAndConflictingAppends) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 28);
  SCOPED_TRACE(ref::SeedNote());
  const int64_t budget = int64_t{2} << 20;  // 32 pages of 66 KiB
  EngineHarness h(GpuOptions(budget));
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  h.CreateRequest("a", config);
  const EncodedKeys keys = RandomKeys(rng, KeyFormat::kFp8E4M3, 256, 128);
  int64_t length = 0;
  const absl::Status last =
      testing_support::AppendUntilError(h.engine(), "a", keys, 200, &length);
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  EXPECT_GT(length, 0);
  EXPECT_EQ(h.engine().GetRequestInfo("a")->layer_lengths[0], length);
  EXPECT_LE(h.engine().Stats().bytes_in_use, budget);
  EXPECT_GE(h.engine().Stats().bytes_in_use, length * 132);
  // Conflict: same positions, different bytes.
  EncodedKeys other = RandomKeys(rng, KeyFormat::kFp8E4M3, 10, 128);
  KeyChunk conflict = other.Chunk("a", 0, 0, 10);
  EXPECT_EQ(h.engine().Append(conflict).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // The stored keys still answer.
  const EncodedQuery q = RandomQuery(rng, KeyFormat::kFp8E4M3, 16, 128);
  const QueryRow row = q.Row("a", 0, length - 1, SelectMode::kHisa, 64, 4);
  std::vector<RowResult> rs(1);
  h.engine().Select(absl::MakeConstSpan(&row, 1), absl::MakeSpan(rs));
  EXPECT_TRUE(rs[0].status.ok()) << rs[0].status;
  EXPECT_TRUE(h.engine().Release("a"));
  EXPECT_EQ(h.engine().Stats().bytes_in_use, 0);
}

// A CUDA backend (256 MiB budget) with one fp8 request of kLength random
// keys (D = 128, B = 128): id "p", layer 0. Fill ASSERTs each step.
struct FilledBackend {
  static constexpr int64_t kLength = 12000;
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  std::unique_ptr<CudaBackend> backend;
  std::unique_ptr<RequestStore> store;
};
void Fill(std::mt19937_64& rng, FilledBackend& f) {
  cuda::DeviceOptions o;
  o.memory_budget_bytes = int64_t{256} << 20;
  absl::StatusOr<std::unique_ptr<CudaBackend>> backend = CudaBackend::Create(o);
  ASSERT_TRUE(backend.ok()) << backend.status();
  f.backend = *std::move(backend);
  absl::StatusOr<std::unique_ptr<RequestStore>> store =
      f.backend->CreateStore(f.config);
  ASSERT_TRUE(store.ok()) << store.status();
  f.store = *std::move(store);
  const ref::EncodedKeys keys =
      RandomKeys(rng, KeyFormat::kFp8E4M3, FilledBackend::kLength, 128, 128);
  ASSERT_TRUE(f.store->Append(keys.Chunk("p", 0, 0, FilledBackend::kLength))
                  .ok());
}

// The bulk-copy kernel's pooled form (an unsplit row's scores in one of 3
// slices per SM) under contention: with the pool cut to one SM's 3 slices,
// 300 rows take turns on them (each CTA waits for a free slice, writes its
// keys there and frees it after the select), and every output must still
// be, bit for bit, what the row gets alone (a single row splits over many
// CTAs and takes the group-scratch form). HISA rows past m blocks and short
// DENSE rows (slot i is position i) both. The pooled HISA rows score and
// choose their own blocks, and must also match the same batch with a block
// launch. Every row asks for scores, so that the scores are compared too
// (without, the kernels write none).
TEST(GpuPoolTest, ManyRowsTakingTurnsOnThreeSlicesMatchRowsAlone) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = ref::TestSeed() + 77;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  FilledBackend f;
  ASSERT_NO_FATAL_FAILURE(Fill(rng, f));
  if (!f.backend->plan_options().use_tma) {
    GTEST_SKIP() << "no bulk tensor copies on this device";
  }
  CudaBackend* const backend = f.backend.get();
  const RequestConfig& config = f.config;
  constexpr int64_t kLength = FilledBackend::kLength;
  std::vector<EncodedQuery> queries;
  for (int i = 0; i < 16; ++i) {
    queries.push_back(RandomQuery(rng, KeyFormat::kFp8E4M3, 64, 128));
  }
  std::vector<QueryRow> rows;
  for (int i = 0; i < 200; ++i) {  // c + 1 = 94 > m = 64: block choice
    rows.push_back(queries[i % 16].Row("p", 0, kLength - 200 + i,
                                       SelectMode::kHisa, 2048, 64, true));
  }
  for (int i = 0; i < 100; ++i) {  // whole-prefix rows of <= 8192 slots
    rows.push_back(queries[i % 16].Row("p", 0, 37 + 81 * i, SelectMode::kDense,
                                       1000, 64, true));
  }
  std::vector<RowResult> results(rows.size());
  std::vector<SelectTask> tasks;
  for (size_t i = 0; i < rows.size(); ++i) {
    tasks.push_back(SelectTask{f.store.get(), &config, &rows[i], rows[i].mode,
                               &results[i]});
  }
  // Positions then scores of each task's k outputs; *pooled_sms: the
  // plan's pool (0: no pooled launch).
  auto run = [&](absl::Span<const SelectTask> batch,
                 const cuda::PlanOptions& options, int* pooled_sms) {
    std::vector<std::vector<uint32_t>> by_task;
    absl::StatusOr<cuda::SelectPlan> plan =
        cuda::BuildSelectPlan(batch, options);
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (!plan.ok()) return by_task;
    *pooled_sms = plan->pool_sms;
    EXPECT_TRUE(plan->write_scores);  // scores are part of the comparison
    uint8_t* base = nullptr;
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&base), plan->device_bytes),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(base, plan->image.data(), plan->image.size(),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    // Twice: every slice must be free again after a launch.
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(cuda::LaunchSelectPlan(*plan, base,
                                       backend->device().arena(),
                                       backend->device().key_tensor_map(),
                                       nullptr, nullptr),
                cudaSuccess);
    }
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint32_t> pos(plan->out_entries), score(plan->out_entries);
    EXPECT_EQ(cudaMemcpy(pos.data(), base + plan->out_pos_off,
                         plan->out_entries * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(score.data(), base + plan->out_scores_off,
                         plan->out_entries * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    if (plan->pool_sms > 0) {
      std::vector<uint32_t> bits(plan->pool_sms, 7);
      EXPECT_EQ(cudaMemcpy(bits.data(), base + plan->pool_bits_off,
                           plan->pool_sms * 4, cudaMemcpyDeviceToHost),
                cudaSuccess);
      for (uint32_t b : bits) EXPECT_EQ(b, 0u) << "a slice was not freed";
    }
    cudaFree(base);
    for (size_t i = 0; i < batch.size(); ++i) {
      const int64_t at = plan->task_out_offset[i];
      const int k = batch[i].row->k;
      std::vector<uint32_t> v(pos.begin() + at, pos.begin() + at + k);
      v.insert(v.end(), score.begin() + at, score.begin() + at + k);
      by_task.push_back(std::move(v));
    }
    return by_task;
  };
  cuda::PlanOptions pooled = backend->plan_options();
  pooled.num_sms = 1;  // one SM's 3 slices for every row
  int pool = -1;
  const auto batch = run(tasks, pooled, &pool);
  EXPECT_EQ(pool, 1);
  ASSERT_EQ(batch.size(), tasks.size());
  // The pooled HISA rows score and choose their own blocks by default
  // (PlanOptions::pooled_rows_score_blocks); with a block launch instead,
  // the same answers.
  cuda::PlanOptions with_block_launch = pooled;
  with_block_launch.pooled_rows_score_blocks =
      !pooled.pooled_rows_score_blocks;
  int other_pool = -1;
  const auto other = run(tasks, with_block_launch, &other_pool);
  EXPECT_EQ(other_pool, 1);
  ASSERT_EQ(other.size(), tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    EXPECT_EQ(batch[i], other[i]) << "row " << i << " t=" << rows[i].position;
  }
  int scratch_rows = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    int alone_pool = -1;
    const auto alone = run(absl::MakeConstSpan(&tasks[i], 1),
                           backend->plan_options(), &alone_pool);
    ASSERT_EQ(alone.size(), 1u);
    scratch_rows += alone_pool == 0 ? 1 : 0;
    EXPECT_EQ(batch[i], alone[0]) << "row " << i << " t=" << rows[i].position;
    EXPECT_NE(batch[i][0], 0xFFFFFFFFu) << "row " << i << " came back empty";
  }
  // Most rows alone split: scratch form (unless the scratch is switched
  // off, HISA_CUDA_SLOT_SCORE_SCRATCH=0, when every row is pooled).
  if (backend->plan_options().slot_score_budget_bytes > 0) {
    EXPECT_GT(scratch_rows, 250);
  } else {
    EXPECT_EQ(scratch_rows, 0);
  }
}

// The backend's host-side loops (query packing, the outputs' copy into the
// results) in chunks on several threads, as the server's executor runs
// them: bit for bit the serial answers (positions and scores), HISA and
// DENSE rows, several chunks.
TEST(GpuHostParallelTest, ThreadedPackingAndCopiesGiveSerialAnswers) {
  SKIP_WITHOUT_GPU();
  const uint64_t seed = ref::TestSeed() + 79;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(ref::SeedNote());
  FilledBackend f;
  ASSERT_NO_FATAL_FAILURE(Fill(rng, f));
  const RequestConfig& config = f.config;
  constexpr int64_t kLength = FilledBackend::kLength;
  std::vector<EncodedQuery> queries;
  for (int i = 0; i < 8; ++i) {
    queries.push_back(RandomQuery(rng, KeyFormat::kFp8E4M3, 64, 128));
  }
  std::vector<QueryRow> rows;
  for (int i = 0; i < 150; ++i) {
    const bool hisa = i % 3 != 0;
    rows.push_back(queries[i % 8].Row(
        "p", 0, Uniform(rng, 0, kLength - 1),
        hisa ? SelectMode::kHisa : SelectMode::kDense, 2048, 64, i % 2 == 0));
  }
  auto select = [&](HostParallel* parallel) {
    std::vector<RowResult> results(rows.size());
    std::vector<SelectTask> tasks;
    for (size_t i = 0; i < rows.size(); ++i) {
      tasks.push_back(SelectTask{f.store.get(), &config, &rows[i],
                                 rows[i].mode, &results[i]});
    }
    f.backend->Select(tasks, nullptr, parallel);
    return results;
  };
  const std::vector<RowResult> serial = select(nullptr);
  testing_support::ThreadPerChunk parallel;
  const std::vector<RowResult> threaded = select(&parallel);
  EXPECT_GE(parallel.chunks, 4);  // packing and copies, 150 rows each
  for (size_t i = 0; i < rows.size(); ++i) {
    ExpectSameResult(threaded[i], serial[i],
                     absl::StrCat("row ", i, " t=", rows[i].position));
    EXPECT_EQ(threaded[i].scores.size(),
              rows[i].return_scores ? size_t{2048} : size_t{0});
  }
}

// Several threads select at once (more threads than select contexts).
TEST(GpuConcurrencyTest, ConcurrentSelectsGiveSingleThreadAnswers) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(ref::TestSeed() + 29);
  SCOPED_TRACE(ref::SeedNote());
  EngineHarness h(GpuOptions());
  const RequestConfig config{2, 128, 64, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  h.CreateRequest("c", config);
  for (int l = 0; l < 2; ++l) {
    h.AppendKeys("c", l, RandomKeys(rng, KeyFormat::kFp8E4M3, 6000, 128), &rng,
                 2000);
  }
  std::vector<EncodedQuery> queries;
  std::vector<QueryRow> rows;
  for (int i = 0; i < 24; ++i) {
    queries.push_back(RandomQuery(rng, i % 2 ? KeyFormat::kFp8E4M3
                                             : KeyFormat::kBf16,
                                  64, 128));
  }
  for (int i = 0; i < 24; ++i) {
    rows.push_back(queries[i].Row("c", i % 2, Uniform(rng, 0, 5999),
                                  i % 3 ? SelectMode::kHisa : SelectMode::kDense,
                                  512, 16));
  }
  std::vector<RowResult> expected(rows.size());
  h.engine().Select(rows, absl::MakeSpan(expected));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int th = 0; th < 6; ++th) {
    threads.emplace_back([&, th] {
      for (int rep = 0; rep < 4; ++rep) {
        std::vector<RowResult> got(rows.size());
        h.engine().Select(rows, absl::MakeSpan(got));
        for (size_t i = 0; i < rows.size(); ++i) {
          if (!got[i].status.ok() || got[i].positions != expected[i].positions) {
            ++mismatches;
          }
        }
      }
      (void)th;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace hisa
