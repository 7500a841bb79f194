// Integration tests of the real hisa_server binary over loopback gRPC: every
// test starts its own server on ephemeral ports (tests/service/
// server_process.h), talks to it through the generated stubs, and stops it
// with SIGTERM at the end, expecting a clean exit (a TSan build exits 66 when
// it found a race, which fails the test). Random data is drawn from the
// printed seed (HISA_TEST_SEED reproduces a run).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "proto/compact_positions.h"
#include "proto/status_codes.h"
#include "server/wire_conversion.h"
#include "tests/reference/test_seed.h"
#include "tests/service/server_process.h"
#include "tests/service/wire_test_client.h"
#include "tests/service/wire_test_data.h"

namespace hisa {
namespace {

using testing::AppendResult;
using testing::HttpGet;
using testing::MetricValue;
using testing::RandomChunk;
using testing::RandomRow;
using testing::SelectResult;
using testing::WireClient;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

constexpr int kOk = 0;
constexpr int kInvalidArgument = 3;
constexpr int kNotFound = 5;
constexpr int kResourceExhausted = 8;
constexpr int kFailedPrecondition = 9;

// The same engine the server runs, in process, fed the same messages.
class LocalEngine {
 public:
  LocalEngine() {
    EngineOptions options;
    options.backend = "cpu";
    options.num_threads = 2;
    options.idle_ttl = absl::InfiniteDuration();
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (engine.ok()) engine_ = *std::move(engine);
  }

  void Create(const std::string& id, const v1::RequestConfig& wire) {
    absl::StatusOr<RequestConfig> config = ConfigFromWire(wire);
    ASSERT_TRUE(config.ok()) << config.status();
    ASSERT_TRUE(engine_->CreateRequest(id, *config).ok());
  }
  void Append(const v1::AppendChunk& wire) {
    absl::StatusOr<KeyChunk> chunk = ChunkFromWire(wire);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    absl::StatusOr<int64_t> length = engine_->Append(*chunk);
    ASSERT_TRUE(length.ok()) << length.status();
  }
  // Rows that do not convert get their conversion error.
  std::vector<RowResult> Select(const v1::SelectRequest& request) {
    std::vector<QueryRow> rows;
    std::vector<int> slot;
    std::vector<RowResult> results(request.rows_size());
    for (int i = 0; i < request.rows_size(); ++i) {
      absl::StatusOr<QueryRow> row = RowFromWire(request.rows(i));
      if (!row.ok()) {
        results[i].status = row.status();
        slot.push_back(-1);
        continue;
      }
      slot.push_back(static_cast<int>(rows.size()));
      rows.push_back(*row);
    }
    std::vector<RowResult> engine_results(rows.size());
    engine_->Select(rows, absl::MakeSpan(engine_results));
    for (int i = 0; i < request.rows_size(); ++i) {
      if (slot[i] >= 0) results[i] = std::move(engine_results[slot[i]]);
    }
    return results;
  }

 private:
  std::unique_ptr<Engine> engine_;
};

// Wire row == in-process row: code, mode, decoded positions, scores.
void ExpectSameRow(const v1::RowResult& wire, const RowResult& local,
                   const v1::QueryRow& row, const std::string& context) {
  SCOPED_TRACE(context);
  ASSERT_EQ(wire.code(), ToWireCode(local.status.code()))
      << "wire: " << wire.message() << " local: " << local.status;
  if (!local.status.ok()) {
    EXPECT_FALSE(wire.message().empty());
    return;
  }
  const int k = row.k() == 0 ? kMaxK : static_cast<int>(row.k());
  EXPECT_EQ(wire.k(), static_cast<uint32_t>(k));
  EXPECT_EQ(wire.mode_used(),
            local.mode_used == SelectMode::kDense ? v1::DENSE : v1::HISA);
  absl::StatusOr<std::vector<int32_t>> positions =
      DecodePositions(wire.positions(), k);
  ASSERT_TRUE(positions.ok()) << positions.status();
  EXPECT_EQ(*positions, local.positions);
  if (row.return_scores()) {
    ASSERT_EQ(wire.scores_size(), static_cast<int>(wire.positions().count()));
    for (int i = 0; i < wire.scores_size(); ++i) {
      EXPECT_EQ(wire.scores(i), local.scores[i]) << "score " << i;
    }
  } else {
    EXPECT_EQ(wire.scores_size(), 0);
  }
}

v1::SelectRequest Message(uint64_t id, std::vector<v1::QueryRow> rows) {
  v1::SelectRequest request;
  request.set_message_id(id);
  for (v1::QueryRow& row : rows) *request.add_rows() = std::move(row);
  return request;
}

class ServiceIntegrationTest : public ::testing::Test {
 protected:
  // Every test draws its own stream from the printed seed.
  void SetUp() override {
    const ::testing::TestInfo* test =
        ::testing::UnitTest::GetInstance()->current_test_info();
    rng_.seed(ref::TestSeed() +
              std::hash<std::string>()(std::string(test->test_suite_name()) +
                                       "." + test->name()));
  }

  void StartServer(const std::vector<std::string>& flags = {}) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        testing::StartServer(flags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = std::make_unique<WireClient>(server_->target());
  }

  void TearDown() override {
    // Closing our connections first spares the server the wait for idle
    // clients to go away after its GOAWAY.
    client_.reset();
    if (server_ == nullptr || !server_->running()) return;
    absl::StatusOr<int> code = server_->Terminate(absl::Seconds(60));
    EXPECT_TRUE(code.ok() && *code == 0)
        << "hisa_server exit: "
        << (code.ok() ? std::to_string(*code) : code.status().ToString())
        << "\n--- server log ---\n"
        << server_->log();
    if (HasFailure()) {
      std::fprintf(stderr, "--- server log ---\n%s\n", server_->log().c_str());
    }
  }

  std::string Scrape() {
    absl::StatusOr<std::string> text =
        HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : std::string();
  }
  double Metric(const std::string& series) {
    absl::StatusOr<double> value = MetricValue(Scrape(), series);
    EXPECT_TRUE(value.ok()) << value.status();
    return value.ok() ? *value : -1;
  }
  // Polls `series` until it equals `want`; false after `timeout`.
  bool WaitMetric(const std::string& series, double want,
                  absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      absl::StatusOr<std::string> text =
          HttpGet(server_->metrics_port(), "/metrics");
      if (text.ok()) {
        absl::StatusOr<double> value = MetricValue(*text, series);
        if (value.ok() && *value == want) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  v1::ServerInfo Info() {
    absl::StatusOr<v1::ServerInfo> info = client_->ServerInfo();
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? *info : v1::ServerInfo();
  }
  v1::GetInfoResponse InfoOf(const std::vector<std::string>& ids) {
    v1::GetInfoRequest request;
    for (const std::string& id : ids) request.add_request_ids(id);
    v1::GetInfoResponse response;
    grpc::Status status = client_->GetInfo(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }
  int64_t LayerLength(const std::string& id, int layer) {
    v1::GetInfoResponse info = InfoOf({id});
    if (info.requests_size() != 1) return -1;
    return info.requests(0).layer_lengths(layer);
  }

  // Creates `id` on the server (and in `local` if given) and appends
  // `length` random tokens to every layer in chunks of up to `chunk` tokens.
  std::vector<v1::AppendChunk> Fill(const std::string& id,
                                    const v1::RequestConfig& config,
                                    int64_t length, int chunk,
                                    LocalEngine* local = nullptr) {
    EXPECT_TRUE(client_->CreateRequest(id, config).ok());
    if (local != nullptr) local->Create(id, config);
    std::vector<v1::AppendChunk> chunks;
    for (uint32_t layer = 0; layer < config.num_layers(); ++layer) {
      for (int64_t first = 0; first < length; first += chunk) {
        const int n = static_cast<int>(std::min<int64_t>(chunk, length - first));
        chunks.push_back(RandomChunk(rng_, id, layer, first, n, config,
                                     chunks.size() + 1));
      }
    }
    AppendResult result = client_->Append(chunks);
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.acks.size(), chunks.size());
    for (size_t i = 0; i < result.acks.size() && i < chunks.size(); ++i) {
      EXPECT_EQ(result.acks[i].code(), kOk) << result.acks[i].message();
      EXPECT_EQ(result.acks[i].chunk_id(), chunks[i].chunk_id());
      EXPECT_EQ(result.acks[i].layer_length(),
                chunks[i].first_position() + chunks[i].num_tokens());
      if (local != nullptr) local->Append(chunks[i]);
    }
    return chunks;
  }

  std::mt19937_64 rng_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<WireClient> client_;
};

// ------------------------------------------------------------ correctness --

class WireEqualsEngineTest
    : public ServiceIntegrationTest,
      public ::testing::WithParamInterface<v1::KeyFormat> {};

TEST_P(WireEqualsEngineTest, SelectionsOverTheWireEqualTheInProcessEngine) {
  StartServer();
  LocalEngine local;
  const v1::RequestConfig config =
      testing::MakeConfig(/*num_layers=*/2, /*head_dim=*/64, /*block_size=*/32,
                          GetParam());
  std::uniform_int_distribution<int> length_dist(300, 900);
  std::vector<std::string> ids = {"alpha", "beta"};
  std::vector<int64_t> lengths;
  for (const std::string& id : ids) {
    lengths.push_back(length_dist(rng_));
    Fill(id, config, lengths.back(), 1 + length_dist(rng_) / 5, &local);
  }
  const v1::SelectMode modes[] = {v1::DENSE, v1::HISA, v1::AUTO,
                                  v1::SELECT_MODE_UNSPECIFIED};
  const int ks[] = {1, 16, 64, 100};
  const int heads[] = {1, 4, 8};
  const v1::KeyFormat q_formats[] = {v1::FP8_E4M3, v1::BF16, v1::FP32};
  std::vector<v1::SelectRequest> messages;
  for (int m = 0; m < 4; ++m) {
    std::vector<v1::QueryRow> rows;
    // The last one prefill-shaped, in several of the server's 64-row check
    // chunks (run on its executor's threads).
    const int num_rows = m == 3 ? 200 : 10;
    for (int r = 0; r < num_rows; ++r) {
      const int which = m == 3 ? 0 : static_cast<int>(rng_() % ids.size());
      const int layer = static_cast<int>(rng_() % 2);
      const int64_t position =
          static_cast<int64_t>(rng_() % static_cast<uint64_t>(lengths[which]));
      rows.push_back(RandomRow(rng_, ids[which], layer, position,
                               heads[rng_() % 3], config, modes[rng_() % 4],
                               ks[rng_() % 4], /*m=*/rng_() % 2 ? 4 : 8,
                               /*return_scores=*/rng_() % 2,
                               q_formats[rng_() % 3]));
    }
    messages.push_back(Message(100 + m, std::move(rows)));
  }
  SelectResult wire = client_->Select(messages);
  ASSERT_TRUE(wire.status.ok()) << wire.status.error_message();
  ASSERT_EQ(wire.responses.size(), messages.size());
  int hisa_rows = 0;
  for (size_t m = 0; m < messages.size(); ++m) {
    const v1::SelectResponse& response = wire.responses[m];
    EXPECT_EQ(response.message_id(), messages[m].message_id());
    EXPECT_GT(response.server_seconds(), 0);
    ASSERT_EQ(response.results_size(), messages[m].rows_size());
    std::vector<RowResult> expected = local.Select(messages[m]);
    for (int r = 0; r < response.results_size(); ++r) {
      ASSERT_EQ(response.results(r).code(), kOk)
          << response.results(r).message();
      hisa_rows += response.results(r).mode_used() == v1::HISA;
      ExpectSameRow(response.results(r), expected[r], messages[m].rows(r),
                    absl::StrCat("message ", m, " row ", r));
    }
  }
  // Rows at t >= m * B really took the hierarchical path.
  EXPECT_GT(hisa_rows, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, WireEqualsEngineTest,
                         ::testing::Values(v1::FP8_E4M3, v1::BF16, v1::FP32),
                         [](const auto& info) {
                           return v1::KeyFormat_Name(info.param);
                         });

TEST_F(ServiceIntegrationTest, BadRowsFailOnlyThemselves) {
  StartServer();
  LocalEngine local;
  const v1::RequestConfig config =
      testing::MakeConfig(2, 64, 32, v1::FP32);
  Fill("r", config, 400, 128, &local);
  auto row = [&](v1::SelectMode mode, int k = 64, int m = 4) {
    return RandomRow(rng_, "r", 1, 350, 4, config, mode, k, m, true);
  };
  std::vector<v1::QueryRow> rows;
  std::vector<std::pair<int, std::string>> want;  // code, message fragment
  rows.push_back(row(v1::DENSE));
  want.push_back({kOk, ""});
  rows.push_back(row(v1::HISA));
  rows.back().mutable_q()->resize(10);
  want.push_back({kInvalidArgument, "q: expected"});
  rows.push_back(row(v1::HISA));
  rows.back().set_request_id("no-such-request");
  want.push_back({kNotFound, "no-such-request"});
  rows.push_back(row(v1::HISA));
  rows.back().set_position(400);
  want.push_back({kFailedPrecondition, "not yet appended"});
  rows.push_back(row(v1::DENSE, 5000));
  want.push_back({kInvalidArgument, "k must be"});
  rows.push_back(row(v1::HISA, 64, 1));
  want.push_back({kInvalidArgument, "m * B"});
  rows.push_back(row(v1::HISA));
  rows.back().set_weights(2, std::nanf(""));
  want.push_back({kInvalidArgument, "weights"});
  rows.push_back(row(v1::HISA));
  rows.back().set_layer(5);
  want.push_back({kInvalidArgument, "layer 5"});
  rows.push_back(row(v1::HISA));
  rows.back().set_q_format(v1::KEY_FORMAT_UNSPECIFIED);
  want.push_back({kInvalidArgument, "q_format"});
  rows.push_back(row(v1::HISA));
  rows.back().set_num_heads(0);
  want.push_back({kInvalidArgument, "num_heads"});
  rows.push_back(row(v1::AUTO));
  want.push_back({kOk, ""});
  rows.push_back(row(v1::HISA));
  rows.back().set_mode(static_cast<v1::SelectMode>(9));
  want.push_back({kInvalidArgument, "mode"});
  rows.push_back(row(v1::HISA, 64, 8));
  want.push_back({kOk, ""});

  const v1::SelectRequest message = Message(7, rows);
  SelectResult wire = client_->Select({message, message});
  ASSERT_TRUE(wire.status.ok()) << wire.status.error_message();
  ASSERT_EQ(wire.responses.size(), 2u);
  const std::vector<RowResult> expected = local.Select(message);
  for (const v1::SelectResponse& response : wire.responses) {
    ASSERT_EQ(response.results_size(), static_cast<int>(rows.size()));
    for (size_t i = 0; i < rows.size(); ++i) {
      const v1::RowResult& result = response.results(i);
      EXPECT_EQ(result.code(), want[i].first)
          << "row " << i << ": " << result.message();
      EXPECT_TRUE(absl::StrContains(result.message(), want[i].second))
          << "row " << i << ": '" << result.message() << "' lacks '"
          << want[i].second << "'";
      ExpectSameRow(result, expected[i], rows[i], absl::StrCat("row ", i));
    }
  }
}

// ---------------------------------------------------------------- appends --

TEST_F(ServiceIntegrationTest, AppendsArePositionalAndIdempotent) {
  StartServer();
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 64, v1::FP8_E4M3);
  ASSERT_TRUE(client_->CreateRequest("r", config).ok());
  // Creating again with the same config is fine; another config is not.
  EXPECT_TRUE(client_->CreateRequest("r", config).ok());
  EXPECT_EQ(client_->CreateRequest("r", testing::MakeConfig(2, 128, 64,
                                                            v1::FP8_E4M3))
                .error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  const v1::AppendChunk a = RandomChunk(rng_, "r", 0, 0, 100, config, 1);
  const v1::AppendChunk b = RandomChunk(rng_, "r", 0, 100, 150, config, 2);
  AppendResult first = client_->Append({a, b});
  ASSERT_TRUE(first.status.ok());
  ASSERT_EQ(first.acks.size(), 2u);
  EXPECT_EQ(first.acks[1].layer_length(), 250);
  const int64_t bytes = InfoOf({"r"}).requests(0).bytes_reserved();

  // Overlap with the end: the stored part must match, the tail is stored.
  v1::AppendChunk overlap = RandomChunk(rng_, "r", 0, 200, 100, config, 5);
  const int row_bytes = 128;
  overlap.mutable_keys()->replace(0, 50 * row_bytes,
                                  b.keys().substr(100 * row_bytes));
  for (int i = 0; i < 50; ++i) overlap.set_scales(i, b.scales(100 + i));
  // Gap, conflict inside the stored range, conflict straddling the end.
  const v1::AppendChunk gap = RandomChunk(rng_, "r", 0, 400, 10, config, 6);
  const v1::AppendChunk conflict = RandomChunk(rng_, "r", 0, 250, 10, config, 7);
  v1::AppendChunk straddle = RandomChunk(rng_, "r", 0, 290, 30, config, 8);
  v1::AppendChunk same_tail = RandomChunk(rng_, "r", 0, 300, 5, config, 9);

  v1::AppendChunk retry_a = a;
  retry_a.set_chunk_id(3);
  v1::AppendChunk retry_b = b;
  retry_b.set_chunk_id(4);
  AppendResult second = client_->Append(
      {retry_a, retry_b, overlap, gap, conflict, straddle, same_tail});
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  ASSERT_EQ(second.acks.size(), 7u);
  const int want_codes[] = {kOk, kOk, kOk, kFailedPrecondition,
                            kFailedPrecondition, kFailedPrecondition, kOk};
  const int64_t want_lengths[] = {250, 250, 300, 0, 0, 0, 305};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(second.acks[i].chunk_id(), static_cast<uint64_t>(3 + i));
    EXPECT_EQ(second.acks[i].code(), want_codes[i])
        << "chunk " << i << ": " << second.acks[i].message();
    if (want_codes[i] == kOk) {
      EXPECT_EQ(second.acks[i].layer_length(), want_lengths[i]) << i;
    } else {
      EXPECT_FALSE(second.acks[i].message().empty());
    }
  }
  EXPECT_TRUE(absl::StrContains(second.acks[3].message(), "gap"))
      << second.acks[3].message();
  EXPECT_TRUE(absl::StrContains(second.acks[4].message(), "conflicts"))
      << second.acks[4].message();
  // Nothing of the failed chunks was stored (not even straddle's new tail).
  EXPECT_EQ(LayerLength("r", 0), 305);
  EXPECT_GE(InfoOf({"r"}).requests(0).bytes_reserved(), bytes);

  // The data is intact: a retry of everything stored is still acknowledged.
  AppendResult third = client_->Append({a, b});
  ASSERT_TRUE(third.status.ok());
  for (const v1::AppendAck& ack : third.acks) {
    EXPECT_EQ(ack.code(), kOk) << ack.message();
    EXPECT_EQ(ack.layer_length(), 305);
  }
  SelectResult select = client_->Select(
      {Message(1, {RandomRow(rng_, "r", 0, 304, 2, config, v1::HISA, 64, 4)})});
  ASSERT_TRUE(select.status.ok());
  ASSERT_EQ(select.responses.size(), 1u);
  EXPECT_EQ(select.responses[0].results(0).code(), kOk);
}

// -------------------------------------------------------- NOT_FOUND / TTL --

TEST_F(ServiceIntegrationTest, UnknownReleasedAndExpiredRequestsAreNotFound) {
  StartServer({"--idle_ttl=1500ms", "--ttl_sweep_interval=50ms"});
  const v1::RequestConfig config = testing::MakeConfig(1, 64, 32, v1::BF16);
  auto select_code = [&](const std::string& id) {
    SelectResult result = client_->Select(
        {Message(1, {RandomRow(rng_, id, 0, 10, 2, config, v1::HISA, 16, 4)})});
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    return result.responses.empty() ? -1 : result.responses[0].results(0).code();
  };
  auto append_code = [&](const std::string& id, int64_t first) {
    AppendResult result =
        client_->Append({RandomChunk(rng_, id, 0, first, 4, config)});
    EXPECT_TRUE(result.status.ok());
    return result.acks.empty() ? -1 : result.acks[0].code();
  };

  // Unknown.
  EXPECT_EQ(select_code("never-created"), kNotFound);
  EXPECT_EQ(append_code("never-created", 0), kNotFound);
  v1::GetInfoResponse info = InfoOf({"never-created"});
  EXPECT_EQ(info.requests_size(), 0);
  ASSERT_EQ(info.missing_request_ids_size(), 1);

  // Released (Release is idempotent).
  Fill("released", config, 64, 64);
  EXPECT_EQ(select_code("released"), kOk);
  bool existed = false;
  ASSERT_TRUE(client_->Release("released", &existed).ok());
  EXPECT_TRUE(existed);
  ASSERT_TRUE(client_->Release("released", &existed).ok());
  EXPECT_FALSE(existed);
  EXPECT_EQ(select_code("released"), kNotFound);
  EXPECT_EQ(append_code("released", 64), kNotFound);

  // Expired: any Select renews the lease; idling past the TTL removes it.
  Fill("leased", config, 64, 64);
  const absl::Time start = absl::Now();
  absl::Time last_sent;
  while (absl::Now() - start < absl::Milliseconds(2500)) {
    last_sent = absl::Now();
    ASSERT_EQ(select_code("leased"), kOk)
        << "expired while in use after " << absl::Now() - start;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  bool gone = false;
  while (!gone && absl::Now() - last_sent < absl::Seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gone = InfoOf({"leased"}).missing_request_ids_size() == 1;
  }
  ASSERT_TRUE(gone) << "not expired after " << absl::Now() - last_sent;
  // The lease was renewed after the last select was sent.
  EXPECT_GE(absl::Now() - last_sent, absl::Milliseconds(1500));
  EXPECT_EQ(select_code("leased"), kNotFound);
  EXPECT_EQ(append_code("leased", 64), kNotFound);
  EXPECT_EQ(Info().bytes_in_use(), 0);
  EXPECT_EQ(Info().live_requests(), 0);
  EXPECT_EQ(Metric("hisa_expired_requests_total"), 1);
  EXPECT_EQ(Metric("hisa_released_requests_total"), 1);
}

// ----------------------------------------------------------------- budget --

TEST_F(ServiceIntegrationTest, BudgetExhaustionIsResourceExhaustedAndStoresNothing) {
  StartServer({"--memory_budget=1M"});
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 128, v1::FP8_E4M3);
  ASSERT_TRUE(client_->CreateRequest("big", config).ok());
  int64_t position = 0;
  v1::AppendAck failed;
  v1::AppendChunk failed_chunk;
  for (int i = 0; i < 200; ++i) {
    const int64_t before_bytes = Info().bytes_in_use();
    v1::AppendChunk chunk = RandomChunk(rng_, "big", 0, position, 256, config);
    AppendResult result = client_->Append({chunk});
    ASSERT_TRUE(result.status.ok());
    ASSERT_EQ(result.acks.size(), 1u);
    if (result.acks[0].code() != kOk) {
      failed = result.acks[0];
      failed_chunk = chunk;
      EXPECT_EQ(Info().bytes_in_use(), before_bytes);
      break;
    }
    position += 256;
  }
  ASSERT_EQ(failed.code(), kResourceExhausted) << failed.message();
  EXPECT_TRUE(absl::StrContains(failed.message(), "budget")) << failed.message();
  EXPECT_GT(position, 0);
  EXPECT_EQ(LayerLength("big", 0), position);
  EXPECT_LE(Info().bytes_in_use(), int64_t{1} << 20);
  // A retry fails the same way; the stored data still serves selects.
  AppendResult retry = client_->Append({failed_chunk});
  ASSERT_EQ(retry.acks.size(), 1u);
  EXPECT_EQ(retry.acks[0].code(), kResourceExhausted);
  EXPECT_EQ(LayerLength("big", 0), position);
  SelectResult select = client_->Select({Message(
      1, {RandomRow(rng_, "big", 0, position - 1, 4, config, v1::HISA, 64, 8)})});
  ASSERT_EQ(select.responses.size(), 1u);
  EXPECT_EQ(select.responses[0].results(0).code(), kOk);
  // Released bytes are reusable.
  ASSERT_TRUE(client_->Release("big").ok());
  EXPECT_EQ(Info().bytes_in_use(), 0);
  ASSERT_TRUE(client_->CreateRequest("next", config).ok());
  failed_chunk.set_request_id("next");
  failed_chunk.set_first_position(0);
  AppendResult reuse = client_->Append({failed_chunk});
  ASSERT_EQ(reuse.acks.size(), 1u);
  EXPECT_EQ(reuse.acks[0].code(), kOk) << reuse.acks[0].message();
}

// ------------------------------------------------------ malformed messages --

TEST_F(ServiceIntegrationTest, OversizedAndMalformedMessagesGetClearErrors) {
  StartServer({"--max_message_bytes=64K", "--max_rows_per_message=4"});
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 64, v1::FP8_E4M3);

  grpc::Status bad_config =
      client_->CreateRequest("x", testing::MakeConfig(1, 17, 64, v1::FP8_E4M3));
  EXPECT_EQ(bad_config.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(bad_config.error_message(), "head_dim"))
      << bad_config.error_message();
  EXPECT_EQ(client_->CreateRequest("", config).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_TRUE(client_->CreateRequest("r", config).ok());
  // 600 tokens x 132 B > 64 KiB: gRPC rejects the message itself.
  AppendResult big = client_->Append({RandomChunk(rng_, "r", 0, 0, 600, config)});
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_FALSE(big.status.error_message().empty());
  std::fprintf(stderr, "oversized append: %s\n",
               big.status.error_message().c_str());
  EXPECT_TRUE(big.acks.empty());
  EXPECT_EQ(LayerLength("r", 0), 0);
  // The server is fine afterwards.
  AppendResult small = client_->Append({RandomChunk(rng_, "r", 0, 0, 200, config)});
  ASSERT_TRUE(small.status.ok());
  ASSERT_EQ(small.acks.size(), 1u);
  EXPECT_EQ(small.acks[0].code(), kOk);

  auto row = [&] {
    return RandomRow(rng_, "r", 0, 150, 4, config, v1::HISA, 64, 4);
  };
  // Too many rows: earlier messages are answered, then INVALID_ARGUMENT.
  SelectResult rows = client_->Select(
      {Message(1, {row(), row()}), Message(2, {row(), row(), row(), row(), row()}),
       Message(3, {row()})});
  EXPECT_EQ(rows.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(rows.status.error_message(),
                                "max_rows_per_message"))
      << rows.status.error_message();
  EXPECT_TRUE(absl::StrContains(rows.status.error_message(), "5 rows"))
      << rows.status.error_message();
  ASSERT_EQ(rows.responses.size(), 1u);
  EXPECT_EQ(rows.responses[0].message_id(), 1u);
  EXPECT_EQ(rows.responses[0].results_size(), 2);

  // A query row larger than the message limit (128 heads x 128 x 4 B).
  v1::QueryRow huge =
      RandomRow(rng_, "r", 0, 150, 128, config, v1::DENSE, 64, 4, false, v1::FP32);
  SelectResult oversized = client_->Select({Message(4, {huge})});
  EXPECT_EQ(oversized.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(oversized.responses.empty());
}

// ------------------------------------------------------------ cancellation --

TEST_F(ServiceIntegrationTest, CancelledStreamsLeakNothing) {
  StartServer();
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 128, v1::FP32);
  const int64_t length = kSanitized ? 2048 : 8192;
  Fill("c", config, length, 1024);
  const int rows_per_message = kSanitized ? 4 : 32;
  auto heavy_message = [&](uint64_t id) {
    std::vector<v1::QueryRow> rows;
    for (int i = 0; i < rows_per_message; ++i) {
      rows.push_back(RandomRow(rng_, "c", 0, length - 1 - i, 8, config,
                               v1::DENSE, 2048, 64));
    }
    return Message(id, std::move(rows));
  };
  // Many rounds: cancellation races with reads, batches and writes.
  const int select_rounds = kSanitized ? 10 : 30;
  for (int round = 0; round < select_rounds; ++round) {
    grpc::ClientContext context;
    client_->SetDeadline(&context);
    auto stream = client_->stub().Select(&context);
    for (int m = 0; m < 3; ++m) ASSERT_TRUE(stream->Write(heavy_message(m)));
    if (round % 3 == 1) {
      v1::SelectResponse response;
      ASSERT_TRUE(stream->Read(&response));
    } else if (round % 3 == 2) {
      std::this_thread::sleep_for(std::chrono::milliseconds(round % 7));
    }
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(client_->CreateRequest("c2", config).ok());
  for (int round = 0; round < 8; ++round) {
    grpc::ClientContext context;
    client_->SetDeadline(&context);
    auto stream = client_->stub().Append(&context);
    for (int i = 0; i < 4; ++i) {
      stream->Write(RandomChunk(rng_, "c2", 0, 256 * (4 * round + i), 256,
                                config));
    }
    if (round % 2 == 1) {
      v1::AppendAck ack;
      stream->Read(&ack);
    }
    context.TryCancel();
    stream->Finish();
  }
  // Every reactor is gone: the open-stream gauges return to zero.
  EXPECT_TRUE(WaitMetric("hisa_open_streams{method=\"Select\"}", 0));
  EXPECT_TRUE(WaitMetric("hisa_open_streams{method=\"Append\"}", 0));
  // The server still serves, and releasing returns every byte.
  SelectResult select = client_->Select({heavy_message(9)});
  ASSERT_TRUE(select.status.ok()) << select.status.error_message();
  EXPECT_EQ(select.responses[0].results(0).code(), kOk);
  ASSERT_TRUE(client_->Release("c").ok());
  ASSERT_TRUE(client_->Release("c2").ok());
  EXPECT_EQ(Info().bytes_in_use(), 0);
  EXPECT_EQ(Info().live_requests(), 0);
}

TEST_F(ServiceIntegrationTest, CancelledClientsCachesExpire) {
  StartServer({"--idle_ttl=500ms", "--ttl_sweep_interval=50ms"});
  const v1::RequestConfig config = testing::MakeConfig(2, 64, 64, v1::BF16);
  Fill("gone", config, 512, 256);
  {
    grpc::ClientContext context;
    client_->SetDeadline(&context);
    auto stream = client_->stub().Append(&context);
    stream->Write(RandomChunk(rng_, "gone", 0, 512, 256, config));
    context.TryCancel();
    stream->Finish();
  }
  EXPECT_GT(Info().bytes_in_use(), 0);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline && Info().live_requests() != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Info().live_requests(), 0);
  EXPECT_EQ(Info().bytes_in_use(), 0);
  EXPECT_TRUE(WaitMetric("hisa_open_streams{method=\"Append\"}", 0));
}

// ------------------------------------------------------------------- drain --

TEST_F(ServiceIntegrationTest, SigtermDrainCompletesInFlightSelects) {
  StartServer({"--drain_timeout=60s"});
  EXPECT_EQ(client_->HealthCheck("").value_or(-1), 1);  // SERVING
  EXPECT_EQ(client_->HealthCheck("hisa.v1.HisaIndex").value_or(-1), 1);
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 128, v1::FP8_E4M3);
  const int64_t length = 16384;
  Fill("d", config, length, 2048);

  grpc::ClientContext context;
  client_->SetDeadline(&context);
  auto stream = client_->stub().Select(&context);
  // A first message proves the stream is up.
  ASSERT_TRUE(stream->Write(Message(
      1, {RandomRow(rng_, "d", 0, length - 1, 16, config, v1::DENSE, 2048, 64)})));
  v1::SelectResponse first;
  ASSERT_TRUE(stream->Read(&first));
  ASSERT_EQ(first.results(0).code(), kOk);
  // The heavy message: wait until its batch has started, then SIGTERM.
  std::vector<v1::QueryRow> rows;
  const int num_rows = kSanitized ? 32 : 512;
  for (int i = 0; i < num_rows; ++i) {
    rows.push_back(RandomRow(rng_, "d", 0, length - 1 - i, 16, config,
                             v1::DENSE, 2048, 64));
  }
  ASSERT_TRUE(stream->Write(Message(2, rows)));
  ASSERT_TRUE(WaitMetric("hisa_select_queue_wait_seconds_count", 2));
  const absl::Time sigterm = absl::Now();
  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);

  // New RPCs are refused (once the server has taken the signal) while the
  // in-flight select completes.
  WireClient late(server_->target(), absl::Seconds(10));
  absl::Status refused = absl::OkStatus();
  for (int i = 0; i < 500 && refused.ok(); ++i) {
    refused = late.ServerInfo().status();
    if (refused.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;

  v1::SelectResponse second;
  ASSERT_TRUE(stream->Read(&second)) << "in-flight select was not answered";
  const absl::Duration after_sigterm = absl::Now() - sigterm;
  ASSERT_EQ(second.message_id(), 2u);
  ASSERT_EQ(second.results_size(), num_rows);
  for (const v1::RowResult& result : second.results()) {
    EXPECT_EQ(result.code(), kOk) << result.message();
  }
  std::fprintf(stderr,
               "in-flight select (%d rows, server %.3f s) answered %s after "
               "SIGTERM\n",
               num_rows, second.server_seconds(),
               absl::FormatDuration(after_sigterm).c_str());
  v1::SelectResponse none;
  EXPECT_FALSE(stream->Read(&none));
  const grpc::Status end = stream->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE)
      << end.error_message();

  absl::StatusOr<int> code = server_->WaitExit(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << server_->log();
  EXPECT_TRUE(absl::StrContains(server_->log(), "SIGTERM received, draining"))
      << server_->log();
  EXPECT_EQ(late.ServerInfo().status().code(), absl::StatusCode::kUnavailable);
}

// ------------------------------------------------- info, metrics, listeners --

TEST_F(ServiceIntegrationTest, GetInfoReportsServerLimitsAndRequestMemory) {
  StartServer({"--memory_budget=256M", "--max_requests=100", "--max_layers=8",
               "--max_heads=64", "--max_rows_per_message=512",
               "--max_message_bytes=32M", "--idle_ttl=90s"});
  const v1::ServerInfo server = Info();
  EXPECT_FALSE(server.version().empty());
  EXPECT_EQ(server.backend(), "cpu");
  EXPECT_TRUE(absl::StartsWith(server.device(), "CPU")) << server.device();
  EXPECT_EQ(server.memory_budget_bytes(), int64_t{256} << 20);
  EXPECT_EQ(server.bytes_in_use(), 0);
  EXPECT_EQ(server.live_requests(), 0);
  EXPECT_EQ(server.idle_ttl_seconds(), 90);
  EXPECT_EQ(server.max_message_bytes(), int64_t{32} << 20);
  EXPECT_EQ(server.max_rows_per_message(), 512u);
  EXPECT_EQ(server.max_requests(), 100u);
  EXPECT_EQ(server.max_layers(), 8u);
  EXPECT_EQ(server.max_heads(), 64u);
  EXPECT_EQ(server.max_k(), 2048u);

  // Limits are enforced with clear messages.
  grpc::Status layers =
      client_->CreateRequest("x", testing::MakeConfig(9, 128, 128, v1::FP8_E4M3));
  EXPECT_EQ(layers.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(layers.error_message(), "num_layers"));

  // fp8 at D = 128 costs 132 B per token and layer, plus summaries and one
  // partially filled page per layer.
  const int num_layers = 4;
  const int64_t tokens = 4096;
  const v1::RequestConfig config =
      testing::MakeConfig(num_layers, 128, 128, v1::FP8_E4M3);
  Fill("m", config, tokens, 1024);
  v1::GetInfoResponse info = InfoOf({"m", "missing"});
  ASSERT_EQ(info.requests_size(), 1);
  const v1::RequestInfo& request = info.requests(0);
  EXPECT_EQ(request.request_id(), "m");
  EXPECT_EQ(request.config().num_layers(), 4u);
  EXPECT_EQ(request.config().key_format(), v1::FP8_E4M3);
  ASSERT_EQ(request.layer_lengths_size(), num_layers);
  for (int64_t length : request.layer_lengths()) EXPECT_EQ(length, tokens);
  EXPECT_GE(request.idle_seconds(), 0);
  EXPECT_LT(request.idle_seconds(), 60);
  ASSERT_EQ(info.missing_request_ids_size(), 1);
  EXPECT_EQ(info.missing_request_ids(0), "missing");
  const double payload = 132.0 * tokens * num_layers;
  const double fixed_overhead = 64.0 * 1024 * num_layers;
  std::fprintf(stderr, "fp8 cache: %lld bytes for %.0f payload bytes (%.3fx)\n",
               static_cast<long long>(request.bytes_reserved()), payload,
               request.bytes_reserved() / payload);
  EXPECT_GE(request.bytes_reserved(), payload);
  EXPECT_LE(request.bytes_reserved(), 1.1 * payload + fixed_overhead);
  EXPECT_EQ(Info().bytes_in_use(), request.bytes_reserved());
  EXPECT_EQ(Info().live_requests(), 1);

  v1::GetInfoRequest all;
  all.set_all_requests(true);
  v1::GetInfoResponse everything;
  ASSERT_TRUE(client_->GetInfo(all, &everything).ok());
  EXPECT_EQ(everything.requests_size(), 1);
}

TEST_F(ServiceIntegrationTest, MetricsEndpointIsCorrectAndPassesPromtool) {
  StartServer();
  const v1::RequestConfig config = testing::MakeConfig(1, 64, 32, v1::FP32);
  Fill("r", config, 500, 100);
  SelectResult select = client_->Select(
      {Message(1, {RandomRow(rng_, "r", 0, 499, 4, config, v1::HISA, 64, 4),
                   RandomRow(rng_, "r", 0, 20, 4, config, v1::AUTO, 64, 4),
                   RandomRow(rng_, "nope", 0, 20, 4, config, v1::HISA, 64, 4)})});
  ASSERT_TRUE(select.status.ok());
  EXPECT_EQ(client_->Release("nope").error_code(), grpc::StatusCode::OK);

  const std::string text = Scrape();
  EXPECT_EQ(*MetricValue(text, "hisa_append_tokens_total"), 500);
  EXPECT_EQ(*MetricValue(text, "hisa_append_bytes_total"), 500 * 64 * 4);
  EXPECT_EQ(*MetricValue(text, "hisa_selected_rows_total{mode=\"hisa\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_selected_rows_total{mode=\"dense\"}"), 1);
  EXPECT_EQ(
      *MetricValue(text, "hisa_errors_total{code=\"NOT_FOUND\",method=\"Select\"}"),
      1);
  EXPECT_EQ(*MetricValue(text, "hisa_select_batch_rows_sum"), 3);
  EXPECT_EQ(*MetricValue(text, "hisa_rpc_duration_seconds_count{method=\"Select\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_rpc_duration_seconds_count{method=\"Append\"}"), 5);
  EXPECT_EQ(*MetricValue(text, "hisa_rpc_duration_seconds_count{method=\"CreateRequest\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_rpc_duration_seconds_count{method=\"Release\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_live_requests"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_cache_used_bytes"), Info().bytes_in_use());
  EXPECT_EQ(*MetricValue(text, "hisa_cache_budget_bytes"),
            Info().memory_budget_bytes());
  EXPECT_TRUE(absl::StrContains(text, "hisa_select_stage_duration_seconds"));
  EXPECT_TRUE(absl::StrContains(text, "hisa_select_batch_duration_seconds_bucket"));

  absl::StatusOr<testing::PromtoolResult> lint = testing::PromtoolCheckMetrics(text);
  if (!lint.ok()) GTEST_SKIP() << lint.status() << ": metrics not linted";
  EXPECT_EQ(lint->exit_code, 0) << lint->output << "\n" << text;
}

TEST_F(ServiceIntegrationTest, HealthReflectionAndUnixSocket) {
  const std::string dir = testing::MakeTempDir("hisa_sock_");
  const std::string socket = dir + "/hisa.sock";
  StartServer({"--unix_socket=" + socket});
  EXPECT_EQ(client_->HealthCheck("").value_or(-1), 1);
  absl::StatusOr<std::vector<std::string>> services =
      client_->ReflectionListServices();
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_NE(std::find(services->begin(), services->end(), "hisa.v1.HisaIndex"),
            services->end());
  EXPECT_NE(std::find(services->begin(), services->end(),
                      "grpc.health.v1.Health"),
            services->end());

  WireClient local("unix:" + socket);
  const v1::RequestConfig config = testing::MakeConfig(1, 64, 32, v1::FP32);
  ASSERT_TRUE(local.CreateRequest("u", config).ok());
  AppendResult append = local.Append({RandomChunk(rng_, "u", 0, 0, 64, config)});
  ASSERT_EQ(append.acks.size(), 1u);
  EXPECT_EQ(append.acks[0].code(), kOk);
  // Both listeners serve the same engine.
  EXPECT_EQ(LayerLength("u", 0), 64);
}

// --------------------------------------------------------------- batching --

// Each of `streams` streams sends `messages` one-row DENSE messages over
// request "b" (FP32, `length` tokens, layer 0) and reads each answer;
// returns the rows answered OK under their own message id.
int ConcurrentOneRowStreams(const std::string& target, uint64_t seed,
                            const v1::RequestConfig& config, int64_t length,
                            int streams, int messages) {
  std::atomic<int> ok_rows{0};
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] {
      std::mt19937_64 rng(seed + s);
      WireClient client(target);
      grpc::ClientContext context;
      client.SetDeadline(&context);
      auto stream = client.stub().Select(&context);
      for (int m = 0; m < messages; ++m) {
        const int64_t t = length - 1 - static_cast<int64_t>(rng() % 512);
        if (!stream->Write(Message(m, {RandomRow(rng, "b", 0, t, 16, config,
                                                 v1::DENSE, 256, 64)}))) {
          break;
        }
        v1::SelectResponse response;
        if (!stream->Read(&response)) break;
        if (response.message_id() == static_cast<uint64_t>(m) &&
            response.results_size() == 1 && response.results(0).code() == kOk) {
          ok_rows.fetch_add(1);
        }
      }
      stream->WritesDone();
      stream->Finish();
    });
  }
  for (std::thread& thread : threads) thread.join();
  return ok_rows.load();
}

TEST_F(ServiceIntegrationTest, ConcurrentStreamsShareEngineBatches) {
  StartServer({"--batch_max_wait=2ms", "--batch_max_rows=64"});
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 128, v1::FP32);
  const int64_t length = 4096;
  Fill("b", config, length, 1024);
  constexpr int kStreams = 8;
  const int messages = kSanitized ? 5 : 20;
  const int total = kStreams * messages;
  EXPECT_EQ(ConcurrentOneRowStreams(server_->target(), rng_(), config, length,
                                    kStreams, messages),
            total);
  const std::string text = Scrape();
  const double rows = *MetricValue(text, "hisa_select_batch_rows_sum");
  const double batches = *MetricValue(text, "hisa_select_batch_rows_count");
  std::fprintf(stderr,
               "%d single-row messages on %d streams ran in %.0f engine "
               "batches (%.2f rows per batch)\n",
               total, kStreams, batches, rows / batches);
  EXPECT_EQ(rows, total);
  EXPECT_LT(batches, total);
}

// With an executor thread polling for work (--executor_spin, the cuda
// backend's default), every row is answered and runs in exactly one engine
// batch; the drain at TearDown stops the poller.
TEST_F(ServiceIntegrationTest, PollingExecutorServesConcurrentStreams) {
  StartServer({"--executor_spin=300us", "--threads=3"});
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 128, v1::FP32);
  const int64_t length = 2048;
  Fill("b", config, length, 1024);
  constexpr int kStreams = 4;
  const int messages = kSanitized ? 5 : 20;
  EXPECT_EQ(ConcurrentOneRowStreams(server_->target(), rng_(), config, length,
                                    kStreams, messages),
            kStreams * messages);
  EXPECT_EQ(Metric("hisa_select_batch_rows_sum"), kStreams * messages);
}

// A bad --executor_spin stops the server at start with the flag's name.
TEST(ServerFlagsTest, BadExecutorSpinIsRejectedByName) {
  for (const char* value : {"bogus", "20ms", "-1us"}) {
    // timeout: a server that accepted the value would serve until killed.
    const std::string command = absl::StrCat(
        "timeout 30 '", testing::HisaServerBinary(), "' --executor_spin=",
        value, " --listen=127.0.0.1:0 --metrics_listen= 2>&1");
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[256];
    while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
    const int status = pclose(pipe);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1)
        << value << ": " << output;
    EXPECT_TRUE(absl::StrContains(output, "executor_spin"))
        << value << ": " << output;
  }
}

TEST_F(ServiceIntegrationTest, LoneMessageDoesNotWaitForTheBatchWindow) {
  StartServer({"--batch_max_wait=200ms"});
  const v1::RequestConfig config = testing::MakeConfig(1, 128, 128, v1::FP8_E4M3);
  Fill("l", config, 2048, 1024);
  grpc::ClientContext context;
  client_->SetDeadline(&context);
  auto stream = client_->stub().Select(&context);
  std::vector<double> latencies;
  for (int m = 0; m < 30; ++m) {
    const absl::Time start = absl::Now();
    ASSERT_TRUE(stream->Write(Message(
        m, {RandomRow(rng_, "l", 0, 2047 - m, 16, config, v1::HISA, 2048, 16)})));
    v1::SelectResponse response;
    ASSERT_TRUE(stream->Read(&response));
    latencies.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
    ASSERT_EQ(response.results(0).code(), kOk);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  std::sort(latencies.begin(), latencies.end());
  const double p50 = latencies[latencies.size() / 2];
  std::fprintf(stderr,
               "lone 1-row select round trip with a 200 ms batch window: "
               "p50 %.0f us, max %.0f us\n",
               p50, latencies.back());
  EXPECT_LT(p50, 100000);
}

}  // namespace
}  // namespace hisa
