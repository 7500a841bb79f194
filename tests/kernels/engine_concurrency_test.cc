// Concurrency: appends, selects, releases, re-creates and idle expiry racing
// on one engine. Every answer must stay valid against the oracle (or be
// NOT_FOUND once its request is gone), and the budget accounting must come
// back to zero. Meant to be run under ThreadSanitizer too
// (-DHISA_SANITIZE=thread).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "tests/kernels/engine_harness.h"
#include "tests/reference/checker.h"
#include "tests/reference/reference.h"
#include "tests/reference/test_seed.h"
#include "tests/reference/wire_encoding.h"

namespace hisa {
namespace {

using ref::EncodedKeys;
using ref::EncodedQuery;
using testing_support::CpuTestOptions;
using testing_support::RandomKeys;
using testing_support::RandomQuery;
using testing_support::Uniform;

constexpr int kD = 64;
constexpr int kB = 16;
constexpr int kH = 4;
constexpr int kLayers = 2;
constexpr int kStable = 4;        // requests appended progressively
constexpr int64_t kLength = 1200;  // tokens per stable layer
constexpr int kEphemeral = 3;     // ids created and released in a loop
constexpr int64_t kEphemeralLength = 150;

struct Layer {
  EncodedKeys keys;
  std::unique_ptr<ref::LayerOracle> oracle;  // over all kLength keys
  std::atomic<int64_t> published{0};         // length acknowledged so far
};

class EngineConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(ref::TestSeed() + 60);
    EngineOptions options = CpuTestOptions();
    options.idle_ttl = absl::Seconds(100);
    options.clock = [now = now_] { return absl::FromUnixSeconds(now->load()); };
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    for (int r = 0; r < kStable; ++r) {
      const KeyFormat format = r % 2 == 0 ? KeyFormat::kFp8E4M3 : KeyFormat::kBf16;
      config_[r] = RequestConfig{kLayers, kD, kB, format,
                                 r == 3 ? BlockPooling::kMax : BlockPooling::kMean};
      ASSERT_TRUE(engine_->CreateRequest(StableId(r), config_[r]).ok());
      for (int l = 0; l < kLayers; ++l) {
        Layer& layer = layers_[r][l];
        layer.keys = RandomKeys(rng, format, kLength, kD);
        layer.oracle = std::make_unique<ref::LayerOracle>(kD, kB, config_[r].pooling);
        ASSERT_TRUE(layer.oracle->Append(layer.keys.Chunk("", l, 0, kLength)).ok());
      }
    }
    ephemeral_config_ = RequestConfig{1, kD, kB, KeyFormat::kFp32, BlockPooling::kMean};
    ephemeral_keys_ = RandomKeys(rng, KeyFormat::kFp32, kEphemeralLength, kD);
    ephemeral_oracle_ = std::make_unique<ref::LayerOracle>(kD, kB, BlockPooling::kMean);
    ASSERT_TRUE(ephemeral_oracle_
                    ->Append(ephemeral_keys_.Chunk("", 0, 0, kEphemeralLength))
                    .ok());
    for (int i = 0; i < 16; ++i) {
      queries_.push_back(RandomQuery(
          rng, i % 3 == 0 ? KeyFormat::kFp8E4M3 : KeyFormat::kFp32, kH, kD));
    }
  }

  static std::string StableId(int r) { return absl::StrCat("stable-", r); }
  static std::string EphemeralId(int e) { return absl::StrCat("eph-", e); }

  // Appends every stable layer owned by `worker` in random chunks, with
  // occasional idempotent re-sends of stored ranges.
  void AppendWorker(int worker, uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (int r = worker; r < kStable; r += 2) {
      const std::string id = StableId(r);
      bool done = false;
      while (!done) {
        done = true;
        for (int l = 0; l < kLayers; ++l) {
          Layer& layer = layers_[r][l];
          const int64_t stored = layer.published.load();
          if (stored == kLength) continue;
          done = false;
          int64_t first = stored;
          if (stored > 0 && Uniform(rng, 0, 3) == 0) first = Uniform(rng, 0, stored - 1);
          const int64_t n = std::min(kLength - first, Uniform(rng, 1, 60));
          absl::StatusOr<int64_t> got =
              engine_->Append(layer.keys.Chunk(id, l, first, n));
          ASSERT_TRUE(got.ok()) << got.status();
          ASSERT_EQ(*got, std::max(stored, first + n));
          layer.published.store(*got);
        }
      }
    }
  }

  // Selects batches of rows over the stable requests and the churning
  // ephemeral ones, and checks every answer, until `stop` and at least
  // `min_checked` answers checked by this worker. `gone_ok`: NOT_FOUND is
  // acceptable for stable requests (expiry phase).
  void SelectWorker(uint64_t seed, const std::atomic<bool>& stop, bool gone_ok,
                    int64_t min_checked, std::atomic<int64_t>& checked) {
    std::mt19937_64 rng(seed);
    const ref::Tolerance tol = ref::Fp32Tolerance(kD, kH, kB);
    int64_t my_checked = 0;
    while (!stop.load() || my_checked < min_checked) {
      std::vector<QueryRow> rows;
      std::vector<const ref::LayerOracle*> oracles;
      std::vector<std::string> ids;  // keeps request_id views alive
      ids.reserve(8);
      for (int i = 0; i < 6; ++i) {
        const EncodedQuery& q = queries_[Uniform(rng, 0, queries_.size() - 1)];
        const int m = static_cast<int>(Uniform(rng, 1, 6));
        const int k = static_cast<int>(Uniform(rng, 1, m * kB));
        const SelectMode mode = std::vector<SelectMode>{
            SelectMode::kDense, SelectMode::kHisa, SelectMode::kAuto}[Uniform(rng, 0, 2)];
        if (i == 5) {
          ids.push_back(EphemeralId(static_cast<int>(Uniform(rng, 0, kEphemeral - 1))));
          rows.push_back(q.Row(ids.back(), 0, Uniform(rng, 0, kEphemeralLength - 1),
                               mode, k, m, true));
          oracles.push_back(ephemeral_oracle_.get());
          continue;
        }
        const int r = static_cast<int>(Uniform(rng, 0, kStable - 1));
        const int l = static_cast<int>(Uniform(rng, 0, kLayers - 1));
        const int64_t published = layers_[r][l].published.load();
        if (published == 0) continue;
        ids.push_back(StableId(r));
        rows.push_back(q.Row(ids.back(), l, Uniform(rng, 0, published - 1), mode,
                             k, m, i % 2 == 0));
        oracles.push_back(layers_[r][l].oracle.get());
      }
      std::vector<RowResult> results(rows.size());
      engine_->Select(rows, absl::MakeSpan(results));
      for (size_t i = 0; i < rows.size(); ++i) {
        const absl::Status& status = results[i].status;
        const bool is_ephemeral = oracles[i] == ephemeral_oracle_.get();
        if (!status.ok()) {
          const bool allowed =
              (is_ephemeral || gone_ok) &&
              (status.code() == absl::StatusCode::kNotFound ||
               (is_ephemeral &&
                status.code() == absl::StatusCode::kFailedPrecondition));
          EXPECT_TRUE(allowed) << rows[i].request_id << ": " << status;
          continue;
        }
        absl::StatusOr<ref::RowOracle> want = oracles[i]->Select(rows[i]);
        ASSERT_TRUE(want.ok()) << want.status();
        EXPECT_TRUE(ref::CheckRow(*want, results[i], tol,
                                  absl::StrCat(ref::SeedNote(), " ",
                                               rows[i].request_id, " layer ",
                                               rows[i].layer)));
        checked.fetch_add(1);
        ++my_checked;
      }
    }
  }

  // Creates, fills and releases the ephemeral ids in a loop.
  void ChurnWorker(uint64_t seed, const std::atomic<bool>& stop) {
    std::mt19937_64 rng(seed);
    int64_t rounds = 0;
    while (!stop.load() || rounds < 10) {
      ++rounds;
      const std::string id = EphemeralId(static_cast<int>(Uniform(rng, 0, kEphemeral - 1)));
      const absl::Status created = engine_->CreateRequest(id, ephemeral_config_);
      ASSERT_TRUE(created.ok()) << created;
      const int64_t split = Uniform(rng, 1, kEphemeralLength - 1);
      for (auto [first, n] : {std::pair<int64_t, int64_t>{0, split},
                              {split, kEphemeralLength - split}}) {
        absl::StatusOr<int64_t> got =
            engine_->Append(ephemeral_keys_.Chunk(id, 0, first, n));
        // The releaser thread may have removed it meanwhile.
        EXPECT_TRUE(got.ok() || got.status().code() == absl::StatusCode::kNotFound)
            << got.status();
      }
      if (Uniform(rng, 0, 1) == 0) engine_->Release(id);
    }
  }

  std::shared_ptr<std::atomic<int64_t>> now_ =
      std::make_shared<std::atomic<int64_t>>(1'000'000);
  std::unique_ptr<Engine> engine_;
  RequestConfig config_[kStable];
  Layer layers_[kStable][kLayers];
  RequestConfig ephemeral_config_;
  EncodedKeys ephemeral_keys_;
  std::unique_ptr<ref::LayerOracle> ephemeral_oracle_;
  std::vector<EncodedQuery> queries_;
};

TEST_F(EngineConcurrencyTest, AppendsSelectsReleasesAndExpiryRace) {
  const uint64_t seed = ref::TestSeed() + 61;
  SCOPED_TRACE(ref::SeedNote());
  std::atomic<int64_t> checked{0};

  // Phase 1: progressive appends, selects, churning ephemeral requests, and
  // a thread that releases at random and reads stats (no clock movement, so
  // nothing expires).
  {
    std::atomic<bool> appends_done{false};
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    threads.emplace_back([&] { AppendWorker(0, seed + 1); });
    threads.emplace_back([&] { AppendWorker(1, seed + 2); });
    threads.emplace_back([&] { SelectWorker(seed + 3, appends_done, false, 150, checked); });
    threads.emplace_back([&] { SelectWorker(seed + 4, appends_done, false, 150, checked); });
    threads.emplace_back([&] { ChurnWorker(seed + 5, stop); });
    threads.emplace_back([&] {
      std::mt19937_64 rng(seed + 6);
      while (!stop.load()) {
        engine_->Release(EphemeralId(static_cast<int>(Uniform(rng, 0, kEphemeral - 1))));
        EXPECT_TRUE(engine_->ExpireIdle().empty());
        const EngineStats stats = engine_->Stats();
        EXPECT_GE(stats.bytes_in_use, 0);
        EXPECT_LE(stats.bytes_in_use, stats.memory_budget_bytes);
        for (const RequestInfo& info : engine_->ListRequests()) {
          EXPECT_GE(info.bytes_reserved, 0);
        }
        std::this_thread::yield();
      }
    });
    threads[0].join();
    threads[1].join();
    appends_done.store(true);
    threads[2].join();
    threads[3].join();
    stop.store(true);
    for (size_t i = 4; i < threads.size(); ++i) threads[i].join();
  }
  for (int r = 0; r < kStable; ++r) {
    absl::StatusOr<RequestInfo> info = engine_->GetRequestInfo(StableId(r));
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->layer_lengths, std::vector<int64_t>(kLayers, kLength));
  }
  // Budget accounting equals the sum over live requests.
  int64_t sum = 0;
  for (const RequestInfo& info : engine_->ListRequests()) sum += info.bytes_reserved;
  EXPECT_EQ(engine_->Stats().bytes_in_use, sum);

  // Phase 2: expiry races selects and idempotent appends; anything may
  // vanish at any moment, but an answer given must be right.
  {
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    threads.emplace_back([&] { SelectWorker(seed + 7, stop, true, 0, checked); });
    threads.emplace_back([&] {
      std::mt19937_64 rng(seed + 8);
      while (!stop.load()) {
        const int r = static_cast<int>(Uniform(rng, 0, kStable - 1));
        const int l = static_cast<int>(Uniform(rng, 0, kLayers - 1));
        const int64_t first = Uniform(rng, 0, kLength - 1);
        absl::StatusOr<int64_t> got = engine_->Append(layers_[r][l].keys.Chunk(
            StableId(r), l, first, std::min<int64_t>(50, kLength - first)));
        EXPECT_TRUE(got.ok() || got.status().code() == absl::StatusCode::kNotFound)
            << got.status();
      }
    });
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        std::this_thread::yield();
        *now_ += 30;  // every request goes idle past the TTL eventually
        engine_->ExpireIdle();
      }
      *now_ += 1000;
      engine_->ExpireIdle();
      stop.store(true);
    });
    for (std::thread& t : threads) t.join();
  }
  *now_ += 1000;
  engine_->ExpireIdle();
  const EngineStats stats = engine_->Stats();
  EXPECT_EQ(stats.live_requests, 0);
  EXPECT_EQ(stats.bytes_in_use, 0);
  EXPECT_GE(checked.load(), 300);
  std::fprintf(stderr, "checked %lld concurrent answers against the oracle\n",
               static_cast<long long>(checked.load()));
}

// Many threads create the same id with the same config at once: all OK, one
// request; with a different config: ALREADY_EXISTS.
TEST(EngineConcurrencyCreateTest, ConcurrentCreatesOfOneId) {
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(CpuTestOptions());
  ASSERT_TRUE(engine.ok());
  const RequestConfig config{1, kD, kB, KeyFormat::kBf16, BlockPooling::kMean};
  RequestConfig other = config;
  other.block_size = 32;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, exists{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 50; ++j) {
        const absl::Status s =
            (*engine)->CreateRequest(absl::StrCat("id-", j), i == 0 ? other : config);
        if (s.ok()) ok.fetch_add(1);
        if (s.code() == absl::StatusCode::kAlreadyExists) exists.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load() + exists.load(), 8 * 50);
  EXPECT_EQ((*engine)->Stats().live_requests, 50);
}

}  // namespace
}  // namespace hisa
