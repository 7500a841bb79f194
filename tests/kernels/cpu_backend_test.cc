// Tests of the CPU backend's Select pipeline (kernels/cpu/cpu_backend.h)
// through hisa::Engine, against the float64 oracle and SPEC 4.4 checker of
// tests/reference: every format and pooling, both ISAs, several thread
// counts (so rows are split into many key segments), HISA == DENSE exactly
// when c + 1 <= m, results independent of threads and batching, concurrent
// callers, and the m = 1 edge (forced blocks exceed m).
#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "tests/reference/checker.h"
#include "tests/reference/reference.h"
#include "tests/reference/test_seed.h"
#include "tests/reference/wire_encoding.h"

namespace hisa {
namespace {

using cpu::CpuIsa;

// Every tier this CPU runs.
std::vector<CpuIsa> Isas() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  if (cpu::HasAvx2(cpu::DetectCpuIsa())) isas.push_back(CpuIsa::kAvx2);
  if (cpu::DetectCpuIsa() == CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

std::unique_ptr<Engine> MakeEngine(CpuIsa isa, int threads) {
  EngineOptions options;
  options.backend = "cpu";
  options.memory_budget_bytes = int64_t{1} << 30;
  options.num_threads = threads;
  CpuBackendOptions backend;
  backend.num_threads = threads;
  backend.isa = isa;
  return std::make_unique<Engine>(options, MakeCpuBackend(backend));
}

// Gaussian keys plus a per-block offset, so block scores differ and HISA's
// block choice matters.
ref::EncodedKeys BlockyKeys(std::mt19937_64& rng, KeyFormat format,
                            int64_t tokens, int dim, int block) {
  std::normal_distribution<float> normal;
  std::vector<float> offset(dim), v(tokens * dim);
  for (int64_t s = 0; s < tokens; ++s) {
    if (s % block == 0) {
      for (float& o : offset) o = 0.7f * normal(rng);
    }
    for (int d = 0; d < dim; ++d) v[s * dim + d] = normal(rng) + offset[d];
  }
  return ref::EncodeKeys(format, dim, v);
}

ref::EncodedQuery RandomQuery(std::mt19937_64& rng, KeyFormat format, int heads,
                              int dim) {
  std::normal_distribution<float> normal;
  std::vector<float> q(heads * dim), w(heads);
  for (float& x : q) x = normal(rng);
  for (float& x : w) x = normal(rng);
  return ref::EncodeQuery(format, heads, dim, q, w);
}

// One (request, layer) under test: engine data and its oracle.
struct Layer {
  std::string id;
  int layer;
  RequestConfig config;
  ref::LayerOracle oracle;
};

void AppendChunked(std::mt19937_64& rng, Engine& engine, Layer& l,
                   const ref::EncodedKeys& keys) {
  for (int64_t first = 0; first < keys.num_tokens;) {
    const int64_t n =
        std::min<int64_t>(keys.num_tokens - first, 1 + rng() % 700);
    const KeyChunk chunk = keys.Chunk(l.id, l.layer, first, n);
    absl::StatusOr<int64_t> len = engine.Append(chunk);
    ASSERT_TRUE(len.ok()) << len.status();
    ASSERT_TRUE(l.oracle.Append(chunk).ok());
    first += n;
  }
}

bool SameBits(const RowResult& a, const RowResult& b) {
  return a.status.ok() && b.status.ok() && a.positions == b.positions &&
         a.scores.size() == b.scores.size() &&
         std::memcmp(a.scores.data(), b.scores.data(),
                     a.scores.size() * sizeof(float)) == 0;
}

TEST(CpuBackendTest, MatchesOracleEveryFormatPoolingIsaAndThreadCount) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 501);
  for (CpuIsa isa : Isas()) {
    for (int threads : {1, 3}) {
      for (KeyFormat format :
           {KeyFormat::kFp8E4M3, KeyFormat::kBf16, KeyFormat::kFp32}) {
        for (BlockPooling pooling : {BlockPooling::kMean, BlockPooling::kMax}) {
          std::unique_ptr<Engine> engine = MakeEngine(isa, threads);
          const int dim = format == KeyFormat::kFp32 ? 16 : 64;
          const int block = format == KeyFormat::kBf16 ? 32 : 16;
          RequestConfig config;
          config.num_layers = 2;
          config.head_dim = dim;
          config.block_size = block;
          config.key_format = format;
          config.pooling = pooling;
          Layer l{"req", 1, config, ref::LayerOracle(dim, block, pooling)};
          ASSERT_TRUE(engine->CreateRequest(l.id, config).ok());
          const int64_t tokens = 1500 + rng() % 800;
          AppendChunked(rng, *engine, l,
                        BlockyKeys(rng, format, tokens, dim, block));

          // A batch mixing modes, query formats, head counts and positions
          // (some with c + 1 <= m, some near the start, some with fewer
          // candidates than k).
          std::vector<ref::EncodedQuery> queries;
          std::vector<QueryRow> rows;
          const int heads_options[] = {1, 3, 16, 64};
          for (int i = 0; i < 12; ++i) {
            const KeyFormat qf = static_cast<KeyFormat>(1 + rng() % 3);
            const int heads = heads_options[rng() % 4];
            queries.push_back(RandomQuery(rng, qf, heads, dim));
          }
          for (int i = 0; i < 12; ++i) {
            const int m = 1 + static_cast<int>(rng() % 12);
            const int k =
                1 + static_cast<int>(rng() % std::min(m * block, 300));
            const int64_t t =
                i < 3 ? static_cast<int64_t>(rng() % 40)
                      : tokens - 1 - static_cast<int64_t>(rng() % 500);
            const SelectMode mode = i % 3 == 0   ? SelectMode::kDense
                                    : i % 3 == 1 ? SelectMode::kHisa
                                                 : SelectMode::kAuto;
            rows.push_back(queries[i].Row(l.id, l.layer, t, mode, k, m,
                                          /*return_scores=*/i % 2 == 0));
          }
          std::vector<RowResult> results(rows.size());
          SelectStageTimes times;
          engine->Select(rows, absl::MakeSpan(results), &times);
          EXPECT_GT(times.validate, 0.0);  // the engine's row checks
          EXPECT_GT(times.token_scoring, 0.0);
          EXPECT_GE(times.block_scoring, 0.0);
          const ref::Tolerance tol = ref::Fp32Tolerance(dim, 64, block);
          for (size_t i = 0; i < rows.size(); ++i) {
            ASSERT_TRUE(results[i].status.ok()) << results[i].status;
            absl::StatusOr<ref::RowOracle> oracle = l.oracle.Select(rows[i]);
            ASSERT_TRUE(oracle.ok()) << oracle.status();
            EXPECT_TRUE(ref::CheckRow(
                *oracle, results[i], tol,
                absl::StrCat(ref::SeedNote(), " ", cpu::CpuIsaName(isa),
                             " threads ", threads, " ", FormatName(format),
                             " pooling ", static_cast<int>(pooling), " row ", i,
                             " t ", rows[i].position, " k ", rows[i].k, " m ",
                             rows[i].m, " H ", rows[i].num_heads)));
          }
        }
      }
    }
  }
}

TEST(CpuBackendTest, HisaEqualsDenseExactlyWhenEveryBlockIsChosen) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 502);
  for (CpuIsa isa : Isas()) {
    std::unique_ptr<Engine> engine = MakeEngine(isa, 2);
    RequestConfig config;
    config.head_dim = 128;
    config.block_size = 64;
    config.key_format = KeyFormat::kFp8E4M3;
    Layer l{"r", 0, config, ref::LayerOracle(128, 64, BlockPooling::kMean)};
    ASSERT_TRUE(engine->CreateRequest(l.id, config).ok());
    AppendChunked(rng, *engine, l,
                  BlockyKeys(rng, config.key_format, 4096, 128, 64));
    for (int i = 0; i < 20; ++i) {
      const ref::EncodedQuery q =
          RandomQuery(rng, KeyFormat::kFp8E4M3, 64, 128);
      const int m = 8 + static_cast<int>(rng() % 60);
      const int64_t t =
          static_cast<int64_t>(rng() % std::min<int64_t>(m * 64, 4096));
      const int k = 1 + static_cast<int>(rng() % 2048) % (m * 64);
      const QueryRow rows[2] = {
          q.Row("r", 0, t, SelectMode::kHisa, k, m, true),
          q.Row("r", 0, t, SelectMode::kDense, k, m, true)};
      RowResult results[2];
      engine->Select(rows, absl::MakeSpan(results));
      ASSERT_TRUE(SameBits(results[0], results[1]))
          << cpu::CpuIsaName(isa) << " t " << t << " m " << m << " k " << k;
      EXPECT_EQ(results[0].mode_used, SelectMode::kHisa);
      EXPECT_EQ(results[1].mode_used, SelectMode::kDense);
    }
  }
}

TEST(CpuBackendTest, ResultsIndependentOfThreadsAndBatching) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 503);
  RequestConfig config;
  config.num_layers = 3;
  config.head_dim = 64;
  config.block_size = 32;
  config.key_format = KeyFormat::kBf16;
  const ref::EncodedKeys keys =
      BlockyKeys(rng, config.key_format, 9000, 64, 32);
  std::vector<ref::EncodedQuery> queries;
  for (int i = 0; i < 24; ++i) {
    queries.push_back(RandomQuery(rng, KeyFormat::kBf16, 32, 64));
  }
  for (CpuIsa isa : Isas()) {
    std::vector<std::vector<RowResult>> runs;
    for (int threads : {1, 2, 4}) {
      std::unique_ptr<Engine> engine = MakeEngine(isa, threads);
      // Two requests, rows spread over layers.
      for (const char* id : {"a", "b"}) {
        ASSERT_TRUE(engine->CreateRequest(id, config).ok());
        for (int layer = 0; layer < 3; ++layer) {
          ASSERT_TRUE(
              engine->Append(keys.Chunk(id, layer, 0, keys.num_tokens)).ok());
        }
      }
      std::vector<QueryRow> rows;
      for (int i = 0; i < 24; ++i) {
        const int64_t t = 8999 - 37 * i;
        rows.push_back(
            queries[i].Row(i % 2 ? "a" : "b", i % 3, t,
                           i % 4 ? SelectMode::kHisa : SelectMode::kDense,
                           /*k=*/512, /*m=*/24, /*return_scores=*/true));
      }
      std::vector<RowResult> batch(rows.size());
      engine->Select(rows, absl::MakeSpan(batch));
      runs.push_back(batch);
      // One row per call.
      std::vector<RowResult> single(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) {
        engine->Select(absl::MakeConstSpan(&rows[i], 1),
                       absl::MakeSpan(&single[i], 1));
      }
      runs.push_back(single);
    }
    for (size_t r = 1; r < runs.size(); ++r) {
      for (size_t i = 0; i < runs[0].size(); ++i) {
        ASSERT_TRUE(SameBits(runs[0][i], runs[r][i]))
            << cpu::CpuIsaName(isa) << " run " << r << " row " << i;
      }
    }
  }
}

TEST(CpuBackendTest, ConcurrentCallersShareThePool) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 504);
  std::unique_ptr<Engine> engine = MakeEngine(CpuIsa::kAuto, 2);
  RequestConfig config;
  config.head_dim = 64;
  config.block_size = 16;
  config.key_format = KeyFormat::kFp8E4M3;
  ASSERT_TRUE(engine->CreateRequest("r", config).ok());
  const ref::EncodedKeys keys =
      BlockyKeys(rng, config.key_format, 5000, 64, 16);
  ASSERT_TRUE(engine->Append(keys.Chunk("r", 0, 0, keys.num_tokens)).ok());
  std::vector<ref::EncodedQuery> queries;
  std::vector<QueryRow> rows;
  for (int i = 0; i < 6; ++i) {
    queries.push_back(RandomQuery(rng, KeyFormat::kFp32, 8, 64));
  }
  for (int i = 0; i < 6; ++i) {
    rows.push_back(queries[i].Row(
        "r", 0, 4999 - i, i % 2 ? SelectMode::kHisa : SelectMode::kDense, 256,
        20, true));
  }
  std::vector<RowResult> want(rows.size());
  engine->Select(rows, absl::MakeSpan(want));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&, c] {
      for (int iter = 0; iter < 10; ++iter) {
        std::vector<RowResult> got(rows.size());
        engine->Select(rows, absl::MakeSpan(got));
        for (size_t i = 0; i < rows.size(); ++i) {
          if (!SameBits(got[i], want[i])) ++mismatches[c];
        }
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int c = 0; c < 4; ++c) EXPECT_EQ(mismatches[c], 0) << "caller " << c;
}

TEST(CpuBackendTest, MOneKeepsBothForcedBlocks) {
  // m = 1 with c >= 1: blocks 0 and c are forced, no other block is chosen
  // (max(0, m - 2) = 0), so the candidates are blocks 0 and c only.
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 505);
  std::unique_ptr<Engine> engine = MakeEngine(CpuIsa::kAuto, 2);
  RequestConfig config;
  config.head_dim = 32;
  config.block_size = 64;
  config.key_format = KeyFormat::kFp32;
  Layer l{"r", 0, config, ref::LayerOracle(32, 64, BlockPooling::kMean)};
  ASSERT_TRUE(engine->CreateRequest("r", config).ok());
  AppendChunked(rng, *engine, l,
                BlockyKeys(rng, config.key_format, 1000, 32, 64));
  const ref::EncodedQuery q = RandomQuery(rng, KeyFormat::kFp32, 4, 32);
  const QueryRow row = q.Row("r", 0, 900, SelectMode::kHisa, /*k=*/64, /*m=*/1);
  RowResult result;
  engine->Select(absl::MakeConstSpan(&row, 1), absl::MakeSpan(&result, 1));
  ASSERT_TRUE(result.status.ok()) << result.status;
  for (int32_t p : result.positions) {
    if (p < 0) continue;
    EXPECT_TRUE(p < 64 || p / 64 == 900 / 64) << "position " << p;
  }
  absl::StatusOr<ref::RowOracle> oracle = l.oracle.Select(row);
  ASSERT_TRUE(oracle.ok());
  EXPECT_TRUE(ref::CheckRow(*oracle, result, ref::Fp32Tolerance(32, 4, 64),
                            ref::SeedNote()));
}

}  // namespace
}  // namespace hisa
