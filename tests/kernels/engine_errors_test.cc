// Invalid arguments and request lifecycle (SPEC 5): every rejection has the
// right status code, a message naming the offending value, and leaves the
// cache exactly as it was (length, bytes, and Select answers).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/formats.h"
#include "kernels/types.h"
#include "tests/kernels/engine_harness.h"
#include "tests/reference/checker.h"
#include "tests/reference/test_seed.h"
#include "tests/reference/wire_encoding.h"

namespace hisa {
namespace {

// Changes the value whose first (lowest) byte is *p into another finite
// value of `format`: a conflict test must not trip the NaN check first.
void PerturbValue(KeyFormat format, uint8_t* p) {
  if (format == KeyFormat::kFp8E4M3) {
    // 0x01 / 0x02 (and their negatives) are small finite codes.
    *p = (*p & 0x7F) == 0x01 ? static_cast<uint8_t>(*p ^ 0x03)
                             : static_cast<uint8_t>((*p & 0x80) | 0x01);
  } else {
    *p ^= 0x01;  // lowest mantissa bit of a little-endian bf16 / fp32
  }
}


using ref::EncodedKeys;
using ref::EncodedQuery;
using testing_support::CpuTestOptions;
using testing_support::EngineHarness;
using testing_support::RandomKeys;
using testing_support::RandomQuery;
using testing_support::Uniform;

// Status has `code` and its message contains every one of `needles`.
::testing::AssertionResult HasError(const absl::Status& status,
                                    absl::StatusCode code,
                                    const std::vector<std::string>& needles) {
  if (status.code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << absl::StatusCodeToString(code) << ", got "
           << status;
  }
  for (const std::string& needle : needles) {
    if (!absl::StrContains(status.message(), needle)) {
      return ::testing::AssertionFailure()
             << "message of " << status << " does not name '" << needle << "'";
    }
  }
  return ::testing::AssertionSuccess();
}

constexpr int kD = 64;
constexpr int kB = 16;
constexpr int kH = 8;
constexpr int64_t kLength = 100;

// A request "r" (2 layers, D = 64, B = 16) with 100 keys in layer 0, a probe
// query, and a snapshot of everything a rejected call must not change.
class EngineErrorsTest : public ::testing::TestWithParam<KeyFormat> {
 protected:
  struct Snapshot {
    std::vector<int64_t> lengths;
    int64_t bytes_reserved = 0;
    int64_t bytes_in_use = 0;
    std::vector<int32_t> dense, hisa;
    std::vector<float> dense_scores, hisa_scores;
  };

  void SetUp() override {
    rng_.seed(ref::TestSeed() + 40 + static_cast<int>(GetParam()));
    config_ = RequestConfig{2, kD, kB, GetParam(), BlockPooling::kMean};
    h_.CreateRequest("r", config_);
    keys_ = RandomKeys(rng_, GetParam(), 2 * kLength, kD);
    ASSERT_TRUE(h_.engine().Append(keys_.Chunk("r", 0, 0, kLength)).ok());
    probe_ = RandomQuery(rng_, KeyFormat::kFp32, kH, kD);
    before_ = Take();
  }

  Snapshot Take() {
    Snapshot s;
    absl::StatusOr<RequestInfo> info = h_.engine().GetRequestInfo("r");
    EXPECT_TRUE(info.ok()) << info.status();
    if (info.ok()) {
      s.lengths = info->layer_lengths;
      s.bytes_reserved = info->bytes_reserved;
    }
    s.bytes_in_use = h_.engine().Stats().bytes_in_use;
    const int64_t t = s.lengths.empty() ? 0 : s.lengths[0] - 1;
    RowResult dense = h_.SelectOne(
        probe_.Row("r", 0, t, SelectMode::kDense, 20, 2, true));
    RowResult hisa =
        h_.SelectOne(probe_.Row("r", 0, t, SelectMode::kHisa, 20, 2, true));
    EXPECT_TRUE(dense.status.ok() && hisa.status.ok());
    s.dense = dense.positions;
    s.hisa = hisa.positions;
    s.dense_scores = dense.scores;
    s.hisa_scores = hisa.scores;
    return s;
  }

  void ExpectUnchanged(const std::string& what) {
    const Snapshot now = Take();
    EXPECT_EQ(now.lengths, before_.lengths) << what;
    EXPECT_EQ(now.bytes_reserved, before_.bytes_reserved) << what;
    EXPECT_EQ(now.bytes_in_use, before_.bytes_in_use) << what;
    EXPECT_EQ(now.dense, before_.dense) << what;
    EXPECT_EQ(now.hisa, before_.hisa) << what;
    for (size_t i = 0; i < now.dense_scores.size(); ++i) {
      if (std::isnan(now.dense_scores[i])) continue;
      EXPECT_EQ(now.dense_scores[i], before_.dense_scores[i]) << what;
      EXPECT_EQ(now.hisa_scores[i], before_.hisa_scores[i]) << what;
    }
  }

  // A chunk of new keys for positions [first, first + n) of layer 0.
  KeyChunk NewChunk(int64_t first, int64_t n) const {
    return keys_.Chunk("r", 0, first, n);
  }

  absl::Status AppendStatus(const KeyChunk& chunk) {
    return h_.engine().Append(chunk).status();
  }

  std::mt19937_64 rng_;
  EngineHarness h_;
  RequestConfig config_;
  EncodedKeys keys_;
  EncodedQuery probe_;
  Snapshot before_;
};

TEST_P(EngineErrorsTest, RejectedAppendsChangeNothing) {
  const KeyFormat format = GetParam();
  const int bpv = BytesPerValue(format);
  SCOPED_TRACE(ref::SeedNote());

  // Wrong head_dim: keys sized for D = 48.
  KeyChunk chunk = NewChunk(kLength, 4);
  std::vector<uint8_t> short_keys(4 * 48 * bpv);
  chunk.keys = short_keys;
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kInvalidArgument,
                       {std::to_string(short_keys.size())}));
  ExpectUnchanged("wrong D");

  chunk = NewChunk(kLength, 4);
  chunk.format = static_cast<KeyFormat>(9);
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kInvalidArgument,
                       {"9"}));
  ExpectUnchanged("unknown format");

  const KeyFormat other =
      format == KeyFormat::kFp32 ? KeyFormat::kBf16 : KeyFormat::kFp32;
  const EncodedKeys other_keys = RandomKeys(rng_, other, 4, kD);
  chunk = other_keys.Chunk("r", 0, 0, 4);
  chunk.first_position = kLength;
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kInvalidArgument,
                       {FormatName(other), FormatName(format)}));
  ExpectUnchanged("format differs from the request's");

  chunk = NewChunk(kLength, 4);
  chunk.num_tokens = 0;
  chunk.keys = {};
  chunk.scales = {};
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kInvalidArgument,
                       {"0"}));
  ExpectUnchanged("zero-length append");

  chunk = NewChunk(kLength, 4);
  chunk.first_position = -5;
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kInvalidArgument,
                       {"-5"}));
  ExpectUnchanged("negative first position");

  for (int layer : {2, -1}) {
    chunk = NewChunk(kLength, 4);
    chunk.layer = layer;
    EXPECT_TRUE(HasError(AppendStatus(chunk),
                         absl::StatusCode::kInvalidArgument,
                         {std::to_string(layer)}));
    ExpectUnchanged(absl::StrCat("layer ", layer));
  }

  chunk = NewChunk(kLength, 4);
  chunk.request_id = "nobody";
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kNotFound,
                       {"nobody"}));

  // A gap: position 101 while the layer holds 100.
  EXPECT_TRUE(HasError(AppendStatus(NewChunk(kLength + 1, 4)),
                       absl::StatusCode::kFailedPrecondition,
                       {std::to_string(kLength + 1), std::to_string(kLength)}));
  ExpectUnchanged("gap");

  // Non-finite values: one bad element in the middle of a valid chunk.
  std::vector<uint8_t> bad = std::vector<uint8_t>(
      keys_.bytes.begin() + kLength * kD * bpv,
      keys_.bytes.begin() + (kLength + 4) * kD * bpv);
  const int64_t bad_index = 2 * kD + 7;
  uint8_t* p = bad.data() + bad_index * bpv;
  switch (format) {
    case KeyFormat::kFp8E4M3: *p = 0x7F; break;                   // NaN
    case KeyFormat::kBf16: p[0] = 0x80; p[1] = 0x7F; break;       // +inf
    case KeyFormat::kFp32: {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(p, &nan, 4);
      break;
    }
  }
  chunk = NewChunk(kLength, 4);
  chunk.keys = bad;
  EXPECT_TRUE(HasError(AppendStatus(chunk), absl::StatusCode::kInvalidArgument,
                       {"keys", std::to_string(bad_index)}));
  ExpectUnchanged("non-finite key");

  if (format == KeyFormat::kFp8E4M3) {
    std::vector<float> scales(keys_.scales.begin() + kLength,
                              keys_.scales.begin() + kLength + 4);
    for (float poison : {std::numeric_limits<float>::quiet_NaN(),
                         std::numeric_limits<float>::infinity()}) {
      scales[3] = poison;
      chunk = NewChunk(kLength, 4);
      chunk.scales = scales;
      EXPECT_TRUE(HasError(AppendStatus(chunk),
                           absl::StatusCode::kInvalidArgument, {"scales", "3"}));
      ExpectUnchanged("non-finite scale");
    }
    chunk = NewChunk(kLength, 4);
    chunk.scales = chunk.scales.subspan(0, 3);
    EXPECT_TRUE(HasError(AppendStatus(chunk),
                         absl::StatusCode::kInvalidArgument, {"3"}));
    ExpectUnchanged("scale count");
  }

  // Conflicting re-append of stored positions [50, 60).
  std::vector<uint8_t> changed(keys_.bytes.begin() + 50 * kD * bpv,
                               keys_.bytes.begin() + 60 * kD * bpv);
  PerturbValue(GetParam(), &changed[5 * kD * bpv]);
  chunk = NewChunk(50, 10);
  chunk.keys = changed;
  EXPECT_TRUE(HasError(AppendStatus(chunk),
                       absl::StatusCode::kFailedPrecondition, {"50"}));
  ExpectUnchanged("conflicting re-append");

  // Conflicting overlap that would extend: [90, 110) with a changed byte in
  // the stored part. Nothing may be stored, not even the new tail.
  std::vector<uint8_t> extend(keys_.bytes.begin() + 90 * kD * bpv,
                              keys_.bytes.begin() + 110 * kD * bpv);
  PerturbValue(GetParam(), &extend[3 * kD * bpv + bpv]);
  chunk = NewChunk(90, 20);
  chunk.keys = extend;
  EXPECT_TRUE(HasError(AppendStatus(chunk),
                       absl::StatusCode::kFailedPrecondition, {"90"}));
  ExpectUnchanged("conflicting overlapping extension");

  if (format == KeyFormat::kFp8E4M3) {
    // A different scale is a different key.
    std::vector<float> scales(keys_.scales.begin() + 20,
                              keys_.scales.begin() + 30);
    scales[4] *= 2;
    chunk = NewChunk(20, 10);
    chunk.scales = scales;
    EXPECT_TRUE(HasError(AppendStatus(chunk),
                         absl::StatusCode::kFailedPrecondition, {"20"}));
    ExpectUnchanged("conflicting scale");
  }

  // Idempotent re-appends: OK, the length comes back, nothing changes.
  for (auto [first, n] : {std::pair<int64_t, int64_t>{10, 20}, {0, kLength},
                          {kLength - 1, 1}}) {
    absl::StatusOr<int64_t> again = h_.engine().Append(NewChunk(first, n));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, kLength);
    ExpectUnchanged(absl::StrCat("idempotent re-append ", first, "+", n));
  }
}

TEST_P(EngineErrorsTest, OverlappingAppendStoresOnlyTheTail) {
  SCOPED_TRACE(ref::SeedNote());
  absl::StatusOr<int64_t> length = h_.engine().Append(NewChunk(90, 30));
  ASSERT_TRUE(length.ok()) << length.status();
  EXPECT_EQ(*length, 120);
  ref::LayerOracle oracle(kD, kB, BlockPooling::kMean);
  ASSERT_TRUE(oracle.Append(keys_.Chunk("r", 0, 0, 120)).ok());
  for (int64_t t : {int64_t{99}, int64_t{100}, int64_t{119}}) {
    for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
      const QueryRow row = probe_.Row("r", 0, t, mode, 30, 2, true);
      absl::StatusOr<ref::RowOracle> want = oracle.Select(row);
      ASSERT_TRUE(want.ok());
      EXPECT_TRUE(ref::CheckRow(*want, h_.SelectOne(row),
                                ref::Fp32Tolerance(kD, kH, kB),
                                absl::StrCat("t=", t)));
    }
  }
  // Layer 1 is still empty and independent.
  absl::StatusOr<RequestInfo> info = h_.engine().GetRequestInfo("r");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->layer_lengths, (std::vector<int64_t>{120, 0}));
}

TEST_P(EngineErrorsTest, RejectedRowsNameTheValue) {
  SCOPED_TRACE(ref::SeedNote());
  const QueryRow good = probe_.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  auto expect_row_error = [&](const QueryRow& bad, absl::StatusCode code,
                              const std::vector<std::string>& needles,
                              const std::string& what) {
    // The bad row sits between two good rows that must still succeed.
    const std::vector<QueryRow> rows = {good, bad, good};
    std::vector<RowResult> results(3);
    h_.engine().Select(rows, absl::MakeSpan(results));
    EXPECT_TRUE(HasError(results[1].status, code, needles)) << what;
    EXPECT_TRUE(results[0].status.ok()) << what << ": " << results[0].status;
    EXPECT_TRUE(results[2].status.ok()) << what << ": " << results[2].status;
    EXPECT_EQ(results[0].positions, results[2].positions) << what;
  };
  const auto invalid = absl::StatusCode::kInvalidArgument;

  QueryRow row = good;
  row.position = kLength;
  expect_row_error(row, absl::StatusCode::kFailedPrecondition,
                   {std::to_string(kLength)}, "t = length");
  row.position = kLength + 1000;
  expect_row_error(row, absl::StatusCode::kFailedPrecondition,
                   {std::to_string(kLength + 1000), std::to_string(kLength)},
                   "t > length");
  row = good;
  row.layer = 1;  // exists but is empty
  row.position = 0;
  expect_row_error(row, absl::StatusCode::kFailedPrecondition, {"0"},
                   "empty layer");
  row = good;
  row.position = -3;
  expect_row_error(row, invalid, {"-3"}, "negative t");
  for (int layer : {2, -1}) {
    row = good;
    row.layer = layer;
    expect_row_error(row, invalid, {std::to_string(layer)}, "layer");
  }
  for (int k : {0, -1, kMaxK + 1}) {
    row = good;
    row.k = k;
    expect_row_error(row, invalid, {std::to_string(k)}, "k");
  }
  for (int m : {0, -2}) {
    row = good;
    row.m = m;
    expect_row_error(row, invalid, {std::to_string(m)}, "m");
  }
  row = good;
  row.k = 40;
  row.m = 2;  // m * B = 32 < 40
  expect_row_error(row, invalid, {"40", "2", std::to_string(kB)}, "m*B < k");
  row.mode = SelectMode::kAuto;
  expect_row_error(row, invalid, {"40"}, "m*B < k (AUTO)");
  row.mode = SelectMode::kDense;  // DENSE ignores m
  EXPECT_TRUE(h_.SelectOne(row).status.ok());
  for (int mode : {0, 7}) {
    row = good;
    row.mode = static_cast<SelectMode>(mode);
    expect_row_error(row, invalid, {std::to_string(mode)}, "mode");
  }

  // Head counts and sizes.
  row = good;
  row.num_heads = 0;
  expect_row_error(row, invalid, {"0"}, "H = 0");
  const EncodedQuery big =
      RandomQuery(rng_, KeyFormat::kFp32, kMaxHeads + 1, kD);
  row = big.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  expect_row_error(row, invalid, {std::to_string(kMaxHeads + 1)}, "H > max");
  row = good;
  row.num_heads = kH - 1;  // q and weights sized for kH
  expect_row_error(row, invalid, {std::to_string(kH - 1)}, "q size");
  row = good;
  row.weights = row.weights.subspan(0, kH - 2);
  expect_row_error(row, invalid, {std::to_string(kH - 2)}, "weights size");
  row = good;
  row.q = row.q.subspan(0, row.q.size() - 4);
  expect_row_error(row, invalid, {std::to_string(row.q.size())}, "q bytes");
  row = good;
  row.q_format = static_cast<KeyFormat>(9);
  expect_row_error(row, invalid, {"9"}, "q format");

  // Query D must match the request: a D = 128 query.
  const EncodedQuery wide = RandomQuery(rng_, KeyFormat::kBf16, kH, 128);
  row = wide.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  expect_row_error(row, invalid, {std::to_string(wide.bytes.size())},
                   "query head_dim");

  // fp8 queries: scale count and non-finite scales.
  const EncodedQuery fp8 = RandomQuery(rng_, KeyFormat::kFp8E4M3, kH, kD);
  row = fp8.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  EXPECT_TRUE(h_.SelectOne(row).status.ok());
  row.q_scales = row.q_scales.subspan(0, kH - 1);
  expect_row_error(row, invalid, {std::to_string(kH - 1)}, "q_scales count");
  std::vector<float> scales(fp8.scales);
  scales[5] = std::numeric_limits<float>::quiet_NaN();
  row = fp8.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  row.q_scales = scales;
  expect_row_error(row, invalid, {"q_scales", "5"}, "NaN q scale");

  // Non-finite query values and weights.
  std::vector<uint8_t> q_bad(probe_.bytes);
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(q_bad.data() + 4 * 77, &inf, 4);
  row = good;
  row.q = q_bad;
  expect_row_error(row, invalid, {"q", "77"}, "inf in q");
  std::vector<float> w_bad(probe_.weights);
  w_bad[3] = std::numeric_limits<float>::quiet_NaN();
  row = good;
  row.weights = w_bad;
  expect_row_error(row, invalid, {"weights", "3"}, "NaN weight");
  const EncodedQuery bf = RandomQuery(rng_, KeyFormat::kBf16, kH, kD);
  std::vector<uint8_t> bf_bad(bf.bytes);
  bf_bad[2 * 9] = 0xC0;  // bf16 0x7FC0: NaN at element 9
  bf_bad[2 * 9 + 1] = 0x7F;
  row = bf.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  row.q = bf_bad;
  expect_row_error(row, invalid, {"q", "9"}, "NaN in bf16 q");

  row = good;
  row.request_id = "missing";
  expect_row_error(row, absl::StatusCode::kNotFound, {"missing"},
                   "unknown request");

  // More results than rows: the extra result is an error.
  std::vector<RowResult> results(2);
  h_.engine().Select(absl::MakeConstSpan(&good, 1), absl::MakeSpan(results));
  EXPECT_TRUE(results[0].status.ok());
  EXPECT_FALSE(results[1].status.ok());
}

TEST_P(EngineErrorsTest, ReleaseThenEverythingIsNotFound) {
  const QueryRow row = probe_.Row("r", 0, kLength - 1, SelectMode::kHisa, 20, 2);
  EXPECT_GT(h_.engine().Stats().bytes_in_use, 0);
  EXPECT_TRUE(h_.engine().Release("r"));
  EXPECT_FALSE(h_.engine().Release("r"));  // idempotent
  EXPECT_TRUE(HasError(h_.SelectOne(row).status, absl::StatusCode::kNotFound,
                       {"r"}));
  EXPECT_TRUE(HasError(AppendStatus(NewChunk(kLength, 1)),
                       absl::StatusCode::kNotFound, {"r"}));
  EXPECT_EQ(h_.engine().GetRequestInfo("r").status().code(),
            absl::StatusCode::kNotFound);
  const EngineStats stats = h_.engine().Stats();
  EXPECT_EQ(stats.bytes_in_use, 0);
  EXPECT_EQ(stats.live_requests, 0);
  EXPECT_EQ(stats.released_total, 1);
  // A new request may reuse the id, and starts empty.
  ASSERT_TRUE(h_.engine().CreateRequest("r", config_).ok());
  EXPECT_EQ(h_.engine().GetRequestInfo("r")->layer_lengths,
            (std::vector<int64_t>{0, 0}));
}

TEST_P(EngineErrorsTest, CreateRequestIsIdempotentForTheSameConfigOnly) {
  EXPECT_TRUE(h_.engine().CreateRequest("r", config_).ok());
  ExpectUnchanged("idempotent create");
  RequestConfig other = config_;
  other.block_size = 32;
  EXPECT_TRUE(HasError(h_.engine().CreateRequest("r", other),
                       absl::StatusCode::kAlreadyExists, {"r"}));
  other = config_;
  other.pooling = BlockPooling::kMax;
  EXPECT_EQ(h_.engine().CreateRequest("r", other).code(),
            absl::StatusCode::kAlreadyExists);
  ExpectUnchanged("conflicting create");
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, EngineErrorsTest,
    ::testing::Values(KeyFormat::kFp8E4M3, KeyFormat::kBf16, KeyFormat::kFp32),
    [](const ::testing::TestParamInfo<KeyFormat>& info) {
      return FormatName(info.param);
    });

TEST(EngineConfigTest, BadConfigsAreInvalidArgumentNamingTheValue) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(CpuTestOptions());
  ASSERT_TRUE(engine.ok());
  const RequestConfig good{2, 128, 128, KeyFormat::kFp8E4M3, BlockPooling::kMean};
  struct Case {
    RequestConfig config;
    std::string value;
  };
  std::vector<Case> cases;
  auto with = [&](auto mutate, std::string value) {
    RequestConfig c = good;
    mutate(c);
    cases.push_back({c, std::move(value)});
  };
  with([](RequestConfig& c) { c.block_size = 100; }, "100");
  with([](RequestConfig& c) { c.block_size = 8; }, "8");
  with([](RequestConfig& c) { c.block_size = 2048; }, "2048");
  with([](RequestConfig& c) { c.block_size = 0; }, "0");
  with([](RequestConfig& c) { c.head_dim = 100; }, "100");
  with([](RequestConfig& c) { c.head_dim = 0; }, "0");
  with([](RequestConfig& c) { c.head_dim = 8; }, "8");
  with([](RequestConfig& c) { c.head_dim = 272; }, "272");
  with([](RequestConfig& c) { c.num_layers = 0; }, "0");
  with([](RequestConfig& c) { c.num_layers = 257; }, "257");
  with([](RequestConfig& c) { c.key_format = static_cast<KeyFormat>(9); }, "9");
  with([](RequestConfig& c) { c.pooling = static_cast<BlockPooling>(7); }, "7");
  for (const Case& c : cases) {
    EXPECT_TRUE(HasError((*engine)->CreateRequest("x", c.config),
                         absl::StatusCode::kInvalidArgument, {c.value}))
        << "value " << c.value;
  }
  EXPECT_TRUE(HasError((*engine)->CreateRequest("", good),
                       absl::StatusCode::kInvalidArgument, {"0"}));
  EXPECT_TRUE(HasError((*engine)->CreateRequest(std::string(129, 'a'), good),
                       absl::StatusCode::kInvalidArgument, {"129"}));
  EXPECT_TRUE((*engine)->CreateRequest(std::string(128, 'a'), good).ok());
  EXPECT_EQ((*engine)->Stats().live_requests, 1);

  EngineOptions bad_backend = CpuTestOptions();
  bad_backend.backend = "tpu";
  EXPECT_TRUE(HasError(Engine::Create(bad_backend).status(),
                       absl::StatusCode::kInvalidArgument, {"tpu"}));
#ifndef HISA_WITH_CUDA
  EngineOptions cuda = CpuTestOptions();
  cuda.backend = "cuda";
  EXPECT_EQ(Engine::Create(cuda).status().code(),
            absl::StatusCode::kFailedPrecondition);
#endif
}

TEST(EngineLimitsTest, MaxHeadsAndMaxRequestsAreEnforced) {
  std::mt19937_64 rng(ref::TestSeed() + 50);
  EngineOptions options = CpuTestOptions();
  options.max_heads = 32;
  options.max_requests = 2;
  EngineHarness h(options);
  h.CreateRequest("a", RequestConfig{1, kD, kB, KeyFormat::kFp32, BlockPooling::kMean});
  h.AppendKeys("a", 0, RandomKeys(rng, KeyFormat::kFp32, 50, kD));
  const EncodedQuery q33 = RandomQuery(rng, KeyFormat::kFp32, 33, kD);
  EXPECT_TRUE(HasError(
      h.SelectOne(q33.Row("a", 0, 49, SelectMode::kDense, 5, 1)).status,
      absl::StatusCode::kInvalidArgument, {"33", "32"}));
  const EncodedQuery q32 = RandomQuery(rng, KeyFormat::kFp32, 32, kD);
  EXPECT_TRUE(h.SelectOne(q32.Row("a", 0, 49, SelectMode::kDense, 5, 1)).status.ok());
  const RequestConfig config{1, kD, kB, KeyFormat::kFp32, BlockPooling::kMean};
  EXPECT_TRUE(h.engine().CreateRequest("b", config).ok());
  EXPECT_TRUE(HasError(h.engine().CreateRequest("c", config),
                       absl::StatusCode::kResourceExhausted, {"2"}));
  EXPECT_TRUE(h.engine().Release("b"));
  EXPECT_TRUE(h.engine().CreateRequest("c", config).ok());
}

TEST(EngineBudgetTest, AppendOverBudgetIsResourceExhaustedAndStoresNothing) {
  std::mt19937_64 rng(ref::TestSeed() + 51);
  SCOPED_TRACE(ref::SeedNote());
  EngineOptions options = CpuTestOptions();
  options.memory_budget_bytes = int64_t{4} << 20;
  EngineHarness h(options);
  const RequestConfig config{2, 128, 128, KeyFormat::kFp8E4M3, BlockPooling::kMean};
  h.CreateRequest("a", config);
  h.CreateRequest("b", config);
  // 200 chunks of 256 tokens (33 KiB of keys each, 6.6 MB in all) cannot
  // fit in 4 MiB: the budget must stop them.
  const EncodedKeys keys = RandomKeys(rng, KeyFormat::kFp8E4M3, 256, 128);
  int64_t length = 0;
  const absl::Status last =
      testing_support::AppendUntilError(h.engine(), "a", keys, 200, &length);
  ASSERT_TRUE(HasError(last, absl::StatusCode::kResourceExhausted,
                       {"256", std::to_string(options.memory_budget_bytes)}));
  EXPECT_GT(length, 0);
  const EngineStats full = h.engine().Stats();
  EXPECT_LE(full.bytes_in_use, options.memory_budget_bytes);
  EXPECT_GE(full.bytes_in_use, length * 132);  // at least the keys themselves
  const int64_t a_bytes = h.engine().GetRequestInfo("a")->bytes_reserved;
  EXPECT_EQ(h.engine().GetRequestInfo("a")->layer_lengths[0], length);

  // Another request cannot take the rest either, and nothing is stored.
  KeyChunk chunk_b = keys.Chunk("b", 1, 0, 256);
  absl::Status b_status = h.engine().Append(chunk_b).status();
  if (!b_status.ok()) {
    EXPECT_EQ(b_status.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(h.engine().GetRequestInfo("b")->layer_lengths[1], 0);
  }
  EXPECT_EQ(h.engine().GetRequestInfo("a")->bytes_reserved, a_bytes);
  EXPECT_LE(h.engine().Stats().bytes_in_use, options.memory_budget_bytes);

  // The stored data still answers, and releasing frees the budget.
  const EncodedQuery q = RandomQuery(rng, KeyFormat::kFp8E4M3, 16, 128);
  EXPECT_TRUE(h.SelectOne(q.Row("a", 0, length - 1, SelectMode::kHisa, 64, 4))
                  .status.ok());
  EXPECT_TRUE(h.engine().Release("a"));
  KeyChunk retry = keys.Chunk("b", 0, 0, 256);
  EXPECT_TRUE(h.engine().Append(retry).ok());
}

TEST(EngineTtlTest, IdleRequestsExpireWithAnInjectedClock) {
  std::mt19937_64 rng(ref::TestSeed() + 52);
  auto now = std::make_shared<std::atomic<int64_t>>(1'000'000);
  EngineOptions options = CpuTestOptions();
  options.idle_ttl = absl::Seconds(10);
  options.clock = [now] { return absl::FromUnixSeconds(now->load()); };
  EngineHarness h(options);
  const RequestConfig config{1, kD, kB, KeyFormat::kBf16, BlockPooling::kMean};
  h.CreateRequest("idle", config);
  h.CreateRequest("busy", config);
  h.AppendKeys("idle", 0, RandomKeys(rng, KeyFormat::kBf16, 40, kD));
  h.AppendKeys("busy", 0, RandomKeys(rng, KeyFormat::kBf16, 40, kD));
  const EncodedQuery q = RandomQuery(rng, KeyFormat::kBf16, 4, kD);

  *now += 6;
  EXPECT_TRUE(h.SelectOne(q.Row("busy", 0, 39, SelectMode::kHisa, 8, 1)).status.ok());
  EXPECT_TRUE(h.engine().ExpireIdle().empty());  // 6 s idle: not yet
  *now += 5;                                      // idle 11 s, busy 5 s
  EXPECT_EQ(h.engine().ExpireIdle(), std::vector<std::string>{"idle"});
  EXPECT_TRUE(HasError(
      h.SelectOne(q.Row("idle", 0, 39, SelectMode::kHisa, 8, 1)).status,
      absl::StatusCode::kNotFound, {"idle"}));
  EXPECT_TRUE(HasError(
      h.engine().Append(h.keys("idle", 0).Chunk("idle", 0, 39, 1)).status(),
      absl::StatusCode::kNotFound, {"idle"}));
  // An Append renews the lease like a Select (busy idle 9 s here).
  *now += 4;
  EXPECT_TRUE(h.engine().Append(h.keys("busy", 0).Chunk("busy", 0, 0, 5)).ok());
  *now += 8;  // 8 s since the idempotent append
  EXPECT_TRUE(h.engine().ExpireIdle().empty());
  *now += 3;
  EXPECT_EQ(h.engine().ExpireIdle(), std::vector<std::string>{"busy"});
  const EngineStats stats = h.engine().Stats();
  EXPECT_EQ(stats.expired_total, 2);
  EXPECT_EQ(stats.live_requests, 0);
  EXPECT_EQ(stats.bytes_in_use, 0);
}

}  // namespace
}  // namespace hisa
