#include "tests/kernels/engine_harness.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "tests/reference/test_seed.h"

namespace hisa::testing_support {

void ExpectSameResult(const RowResult& a, const RowResult& b,
                      const std::string& what) {
  ASSERT_TRUE(a.status.ok() && b.status.ok())
      << what << ": " << a.status << " / " << b.status;
  EXPECT_EQ(a.positions, b.positions) << what;
  if (!a.scores.empty() && !b.scores.empty()) {
    ASSERT_EQ(a.scores.size(), b.scores.size()) << what;
    for (size_t i = 0; i < a.scores.size(); ++i) {
      if (std::isnan(a.scores[i]) && std::isnan(b.scores[i])) continue;
      ASSERT_EQ(a.scores[i], b.scores[i]) << what << " index " << i;
    }
  }
}

absl::Status AppendUntilError(Engine& engine, absl::string_view id,
                              const ref::EncodedKeys& keys, int max_chunks,
                              int64_t* length) {
  *length = 0;
  for (int i = 0; i < max_chunks; ++i) {
    KeyChunk chunk = keys.Chunk(id, 0, 0, keys.num_tokens);
    chunk.first_position = *length;
    absl::StatusOr<int64_t> got = engine.Append(chunk);
    if (!got.ok()) return got.status();
    *length = *got;
  }
  return absl::OkStatus();
}

std::string ShapeName(const Shape& s) {
  return absl::StrCat("D=", s.head_dim, " H=", s.num_heads, " B=",
                      s.block_size, " m=", s.m, " k=", s.k, " L=", s.length,
                      s.pooling == BlockPooling::kMax ? " max" : " mean");
}

std::vector<int64_t> EdgePositions(const Shape& s, std::mt19937_64& rng) {
  const int64_t mb = int64_t{s.m} * s.block_size;
  const int64_t last = s.length - 1;
  std::vector<int64_t> t = {0,      s.k / 2, s.k - 1, mb - 1, mb,
                            mb + 1, (last / s.block_size) * s.block_size,
                            last,   last - 1, Uniform(rng, 0, last),
                            Uniform(rng, std::min(mb, last), last)};
  t.erase(std::remove_if(t.begin(), t.end(),
                         [&](int64_t p) { return p < 0 || p > last; }),
          t.end());
  std::sort(t.begin(), t.end());
  t.erase(std::unique(t.begin(), t.end()), t.end());
  return t;
}


EngineOptions CpuTestOptions() {
  EngineOptions options;
  options.backend = "cpu";
  options.num_threads = 2;
  return options;
}

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

ref::EncodedKeys RandomKeys(std::mt19937_64& rng, KeyFormat format,
                            int64_t num_tokens, int head_dim,
                            int offset_block) {
  std::normal_distribution<float> normal;
  std::vector<float> values(num_tokens * head_dim);
  std::vector<float> offset(head_dim);
  for (int64_t s = 0; s < num_tokens; ++s) {
    if (s % offset_block == 0) {
      for (float& o : offset) o = 0.5f * normal(rng);
    }
    for (int d = 0; d < head_dim; ++d) {
      values[s * head_dim + d] = normal(rng) + offset[d];
    }
  }
  return ref::EncodeKeys(format, head_dim, values);
}

ref::EncodedQuery RandomQuery(std::mt19937_64& rng, KeyFormat format,
                              int num_heads, int head_dim) {
  std::normal_distribution<float> normal;
  std::vector<float> q(int64_t{num_heads} * head_dim);
  for (float& v : q) v = normal(rng);
  std::vector<float> w(num_heads);
  for (float& v : w) v = normal(rng);
  return ref::EncodeQuery(format, num_heads, head_dim, q, w);
}

ref::EncodedKeys IntegerKeys(std::mt19937_64& rng, KeyFormat format,
                             int64_t num_tokens, int head_dim) {
  std::vector<float> values(num_tokens * head_dim);
  for (float& v : values) v = static_cast<float>(Uniform(rng, -3, 3));
  // fp8 bytes hold value / scale: integers or half-integers up to 6, all
  // exact in e4m3, so the dequantized keys are the integers themselves.
  std::vector<float> scales;
  if (format == KeyFormat::kFp8E4M3) {
    static constexpr float kScales[] = {0.5f, 1.0f, 2.0f};
    for (int64_t s = 0; s < num_tokens; ++s) {
      scales.push_back(kScales[Uniform(rng, 0, 2)]);
    }
  }
  return ref::EncodeKeys(format, head_dim, values, scales);
}

ref::EncodedQuery IntegerQuery(std::mt19937_64& rng, KeyFormat format,
                               int num_heads, int head_dim) {
  std::vector<float> q(int64_t{num_heads} * head_dim);
  for (float& v : q) v = static_cast<float>(Uniform(rng, -2, 2));
  std::vector<float> w(num_heads);
  for (float& v : w) v = static_cast<float>(Uniform(rng, -2, 2));
  std::vector<float> scales;
  if (format == KeyFormat::kFp8E4M3) scales.assign(num_heads, 1.0f);
  return ref::EncodeQuery(format, num_heads, head_dim, q, w, scales);
}

ref::EncodedKeys Concat(const ref::EncodedKeys& a, const ref::EncodedKeys& b) {
  ref::EncodedKeys out = a;
  out.num_tokens += b.num_tokens;
  out.bytes.insert(out.bytes.end(), b.bytes.begin(), b.bytes.end());
  out.scales.insert(out.scales.end(), b.scales.begin(), b.scales.end());
  return out;
}

EngineHarness::EngineHarness(EngineOptions options) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (engine.ok()) engine_ = *std::move(engine);
}

void EngineHarness::CreateRequest(const std::string& id,
                                  const RequestConfig& config) {
  ASSERT_TRUE(engine_->CreateRequest(id, config).ok());
  Request& request = requests_[id];
  request.config = config;
  request.layers.clear();
  for (int l = 0; l < config.num_layers; ++l) {
    Layer layer;
    layer.keys.format = config.key_format;
    layer.keys.head_dim = config.head_dim;
    layer.oracle = std::make_unique<ref::LayerOracle>(
        config.head_dim, config.block_size, config.pooling);
    request.layers.push_back(std::move(layer));
  }
}

void EngineHarness::AppendKeys(const std::string& id, int layer,
                               const ref::EncodedKeys& keys,
                               std::mt19937_64* rng, int64_t max_chunk) {
  Layer& target = requests_.at(id).layers.at(layer);
  const int64_t base = target.keys.num_tokens;
  target.keys = Concat(target.keys, keys);
  int64_t done = 0;
  while (done < keys.num_tokens) {
    int64_t n = keys.num_tokens - done;
    if (max_chunk > 0 && rng != nullptr) n = std::min(n, Uniform(*rng, 1, max_chunk));
    const KeyChunk chunk = target.keys.Chunk(id, layer, base + done, n);
    absl::StatusOr<int64_t> length = engine_->Append(chunk);
    ASSERT_TRUE(length.ok()) << length.status();
    ASSERT_EQ(*length, base + done + n);
    ASSERT_TRUE(target.oracle->Append(chunk).ok());
    done += n;
  }
}

const ref::EncodedKeys& EngineHarness::keys(const std::string& id,
                                            int layer) const {
  return requests_.at(id).layers.at(layer).keys;
}

const ref::LayerOracle& EngineHarness::oracle(const std::string& id,
                                              int layer) const {
  return *requests_.at(id).layers.at(layer).oracle;
}

const RequestConfig& EngineHarness::config(const std::string& id) const {
  return requests_.at(id).config;
}

RowResult EngineHarness::SelectOne(const QueryRow& row) {
  std::vector<RowResult> results(1);
  engine_->Select(absl::MakeConstSpan(&row, 1), absl::MakeSpan(results));
  return std::move(results[0]);
}

::testing::AssertionResult EngineHarness::Check(const QueryRow& row,
                                                const RowResult& result,
                                                const ref::Tolerance& tol,
                                                absl::string_view context) const {
  absl::StatusOr<ref::RowOracle> expected =
      oracle(std::string(row.request_id), row.layer).Select(row);
  if (!expected.ok()) {
    return ::testing::AssertionFailure()
           << context << ": oracle rejected the row: " << expected.status();
  }
  return ref::CheckRow(*expected, result, tol, context);
}

std::vector<QueryRow> EdgeRows(const Shape& s, KeyFormat q_format,
                               std::mt19937_64& rng,
                               std::vector<ref::EncodedQuery>* queries) {
  const std::vector<int64_t> positions = EdgePositions(s, rng);
  queries->clear();
  for (size_t i = 0; i < positions.size(); ++i) {
    queries->push_back(RandomQuery(rng, q_format, s.num_heads, s.head_dim));
  }
  std::vector<QueryRow> rows;
  for (size_t i = 0; i < positions.size(); ++i) {
    for (SelectMode mode :
         {SelectMode::kDense, SelectMode::kHisa, SelectMode::kAuto}) {
      rows.push_back((*queries)[i].Row("r", 0, positions[i], mode, s.k, s.m,
                                       Uniform(rng, 0, 1) == 1));
    }
  }
  return rows;
}

void ExpectEdgeRowTriple(const EngineHarness& h, const Shape& s,
                         const std::vector<QueryRow>& rows,
                         const std::vector<RowResult>& results, size_t i,
                         const ref::Tolerance& tol, const std::string& where) {
  const QueryRow& dense_row = rows[3 * i];
  const QueryRow& hisa_row = rows[3 * i + 1];
  const RowResult& dense = results[3 * i];
  const RowResult& hisa = results[3 * i + 1];
  const RowResult& automatic = results[3 * i + 2];
  const int64_t t = dense_row.position;
  const std::string row = absl::StrCat(where, " t=", t);
  EXPECT_TRUE(h.Check(dense_row, dense, tol, row + " DENSE"));
  EXPECT_TRUE(h.Check(hisa_row, hisa, tol, row + " HISA"));
  EXPECT_EQ(dense.mode_used, SelectMode::kDense) << row;
  EXPECT_EQ(dense_row.return_scores, !dense.scores.empty()) << row;
  EXPECT_EQ(hisa_row.return_scores, !hisa.scores.empty()) << row;
  if (t >= int64_t{s.m} * s.block_size) {
    EXPECT_EQ(hisa.mode_used, SelectMode::kHisa) << row;
  } else {
    ExpectSameResult(hisa, dense, row + " HISA vs DENSE (t < m*B)");
  }
  ExpectSameResult(automatic, hisa, row + " AUTO vs HISA");
}

void ExpectIntegerInputsMatchTheOracle(const EngineOptions& options,
                                       int trials, bool one_batch) {
  constexpr KeyFormat kFormats[] = {KeyFormat::kFp8E4M3, KeyFormat::kBf16,
                                    KeyFormat::kFp32};
  std::mt19937_64 rng(ref::TestSeed() + 20);
  for (int trial = 0; trial < trials; ++trial) {
    const KeyFormat key_format = kFormats[trial % 3];
    const KeyFormat q_format = kFormats[(trial / 3) % 3];
    Shape shape;
    shape.head_dim = trial % 2 == 0 ? 64 : 128;
    shape.num_heads = std::vector<int>{1, 8, 16}[Uniform(rng, 0, 2)];
    shape.block_size = Uniform(rng, 0, 1) == 0 ? 16 : 64;
    shape.m = static_cast<int>(Uniform(rng, 1, 6));
    shape.k = static_cast<int>(Uniform(rng, 1, shape.m * shape.block_size));
    shape.length = Uniform(rng, 1, 1500);
    shape.pooling = trial % 4 == 3 ? BlockPooling::kMax : BlockPooling::kMean;
    const std::string where =
        absl::StrCat(ref::SeedNote(), " trial ", trial, " keys ",
                     FormatName(key_format), " q ", FormatName(q_format), " ",
                     ShapeName(shape));
    SCOPED_TRACE(where);
    EngineHarness h(options);
    h.CreateRequest("r", RequestConfig{1, shape.head_dim, shape.block_size,
                                       key_format, shape.pooling});
    h.AppendKeys("r", 0,
                 IntegerKeys(rng, key_format, shape.length, shape.head_dim),
                 &rng, 300);
    std::vector<QueryRow> rows;
    std::vector<ref::EncodedQuery> queries;
    for (int64_t t : EdgePositions(shape, rng)) {
      queries.push_back(
          IntegerQuery(rng, q_format, shape.num_heads, shape.head_dim));
      for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
        rows.push_back(
            queries.back().Row("r", 0, t, mode, shape.k, shape.m, true));
      }
    }
    std::vector<RowResult> results(rows.size());
    if (one_batch) {
      h.engine().Select(rows, absl::MakeSpan(results));
    } else {
      for (size_t i = 0; i < rows.size(); ++i) {
        results[i] = h.SelectOne(rows[i]);
      }
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_TRUE(h.Check(rows[i], results[i], ref::ExactTolerance(),
                          absl::StrCat(where, " t=", rows[i].position)));
    }
  }
}

}  // namespace hisa::testing_support
