#include "tests/kernels/engine_harness.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

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

}  // namespace hisa::testing_support
