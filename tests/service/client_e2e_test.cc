// End-to-end tests of the client library and hisa_cli against a real
// hisa_server process (CPU backend, ephemeral ports): chunked Append under
// the server's message limit, idempotent retries, gap / conflict / budget
// errors mapped from in-band acks, Select results checked against the
// float64 oracle (tests/reference) through the wire and the compact
// positions codec, HISA == DENSE below m * B, Release semantics, and the CLI.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/hisa_client.h"
#include "client/server_process.h"
#include "client/synthetic_workload.h"
#include "gtest/gtest.h"
#include "tests/reference/checker.h"
#include "tests/reference/reference.h"
#include "tests/reference/test_seed.h"

namespace hisa {
namespace {

constexpr int kHeadDim = 128;
constexpr int kBlockSize = 16;  // small blocks: HISA prunes at short contexts

class ClientE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcessOptions opts;
    // $HISA_SERVER_BINARY overrides the build's server (as for the
    // server's own integration tests).
    const char* env = std::getenv("HISA_SERVER_BINARY");
    opts.binary = env != nullptr && *env != '\0' ? env : HISA_SERVER_BINARY;
    opts.args = {"--backend=cpu", "--metrics_listen=127.0.0.1:0",
                 "--max_message_bytes=128K", "--threads=2",
                 "--backend_threads=2", "--memory_budget=32M"};
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(opts);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      // SIGTERM drains and exits 0.
      EXPECT_TRUE(server_->Stop().ok()) << server_->LogTail();
      delete server_;
      server_ = nullptr;
    }
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ClientOptions options;
    options.deadline = absl::Seconds(60);
    absl::StatusOr<std::unique_ptr<HisaClient>> client =
        HisaClient::Create(server_->target(), options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  static RequestConfig Config(int layers) {
    RequestConfig config;
    config.num_layers = layers;
    config.head_dim = kHeadDim;
    config.block_size = kBlockSize;
    config.key_format = KeyFormat::kFp8E4M3;
    return config;
  }

  static KeyChunk Chunk(const EncodedRows& keys, absl::string_view id, int layer,
                        int64_t first, int64_t offset, int64_t n) {
    KeyChunk c;
    c.request_id = id;
    c.layer = layer;
    c.first_position = first;
    c.num_tokens = n;
    c.format = keys.format;
    c.keys = absl::MakeConstSpan(keys.bytes).subspan(
        static_cast<size_t>(offset * kHeadDim), static_cast<size_t>(n * kHeadDim));
    c.scales = absl::MakeConstSpan(keys.scales).subspan(static_cast<size_t>(offset),
                                                        static_cast<size_t>(n));
    return c;
  }

  static ServerProcess* server_;
  std::unique_ptr<HisaClient> client_;
};

ServerProcess* ClientE2eTest::server_ = nullptr;

TEST_F(ClientE2eTest, AppendChunksRetriesAndErrors) {
  const std::string id = absl::StrCat("e2e-append-", ref::TestSeed() % 100000);
  ASSERT_TRUE(client_->CreateRequest(id, Config(2)).ok());
  SyntheticLayer layer(WorkloadShape{}, ref::TestSeed() + 21);
  // 3000 tokens x 132 B = 396 KB against a 128 KiB server limit.
  const int64_t n = 3000;
  const EncodedRows keys = EncodeRows(KeyFormat::kFp8E4M3, layer.Keys(0, n), kHeadDim);
  EXPECT_EQ(client_->MaxChunkBytes().value(), int64_t{128} << 10);
  std::vector<KeyChunk> chunks = {Chunk(keys, id, 0, 0, 0, n), Chunk(keys, id, 1, 0, 0, n)};
  absl::StatusOr<std::vector<int64_t>> lengths = client_->Append(chunks);
  ASSERT_TRUE(lengths.ok()) << lengths.status();
  EXPECT_EQ(*lengths, (std::vector<int64_t>{n, n}));

  // A retry of the whole prefill is acknowledged and changes nothing.
  lengths = client_->Append(chunks);
  ASSERT_TRUE(lengths.ok()) << lengths.status();
  EXPECT_EQ(*lengths, (std::vector<int64_t>{n, n}));

  // Conflicting bytes over stored positions, and a gap: FAILED_PRECONDITION.
  const EncodedRows other = EncodeRows(KeyFormat::kFp8E4M3,
                                       SyntheticLayer(WorkloadShape{}, 99).Keys(0, 10),
                                       kHeadDim);
  absl::StatusOr<int64_t> conflict = client_->Append(Chunk(other, id, 0, 100, 0, 10));
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kFailedPrecondition)
      << conflict.status();
  absl::StatusOr<int64_t> gap = client_->Append(Chunk(other, id, 0, n + 5, 0, 10));
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kFailedPrecondition) << gap.status();
  EXPECT_TRUE(absl::StrContains(gap.status().message(), id)) << gap.status();

  const std::vector<std::string> ids = {id};
  absl::StatusOr<v1::GetInfoResponse> info = client_->GetInfo(ids);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->requests_size(), 1);
  EXPECT_EQ(info->requests(0).layer_lengths(0), n);
  EXPECT_EQ(info->requests(0).layer_lengths(1), n);

  EXPECT_TRUE(client_->Release(id).value());
  EXPECT_FALSE(client_->Release(id).value());
  EXPECT_EQ(client_->Append(chunks).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientE2eTest, SelectMatchesTheOracleThroughTheWire) {
  const uint64_t seed = ref::TestSeed() + 22;
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(seed);
  const std::string id = absl::StrCat("e2e-select-", seed % 100000);
  ASSERT_TRUE(client_->CreateRequest(id, Config(1)).ok());
  WorkloadShape shape;
  shape.num_heads = 8;
  shape.min_span = 32;
  shape.max_span = 200;
  SyntheticLayer layer(shape, seed);
  const int64_t n = 1200;
  const EncodedRows keys = EncodeRows(KeyFormat::kFp8E4M3, layer.Keys(0, n), kHeadDim);
  // Appended in uneven pieces, as a decode loop would after a prefill.
  ref::LayerOracle oracle(kHeadDim, kBlockSize, BlockPooling::kMean);
  int64_t done = 0;
  while (done < n) {
    const int64_t piece = std::min<int64_t>(n - done, 1 + static_cast<int64_t>(rng() % 400));
    const KeyChunk c = Chunk(keys, id, 0, done, done, piece);
    ASSERT_TRUE(client_->Append(c).ok());
    ASSERT_TRUE(oracle.Append(c).ok());
    done += piece;
  }

  auto stream = client_->OpenSelectStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  const ref::Tolerance tol = ref::Fp32Tolerance(kHeadDim, shape.num_heads, kBlockSize);
  // Rows across modes, k (padding when t + 1 < k) and positions (HISA prunes
  // blocks when t >= m * B = 256).
  constexpr int kRows = 12;
  std::vector<EncodedRows> queries(kRows);
  std::vector<std::vector<float>> weights(kRows);
  std::vector<QueryRow> rows;
  for (int i = 0; i < kRows; ++i) {
    const int64_t t = i < 3 ? static_cast<int64_t>(rng() % 64)
                            : 256 + static_cast<int64_t>(rng() % (n - 256));
    const SelectMode mode =
        i % 3 == 0 ? SelectMode::kDense
                   : (i % 3 == 1 ? SelectMode::kHisa : SelectMode::kAuto);
    std::vector<float> qf;
    layer.Query(t, &qf, &weights[i]);
    queries[i] = EncodeRows(KeyFormat::kFp8E4M3, qf, kHeadDim);
    QueryRow row = MakeQueryRow(id, 0, t, shape.num_heads, queries[i], weights[i],
                                mode, /*k=*/i % 2 == 0 ? 64 : 200, /*m=*/16);
    row.return_scores = true;
    rows.push_back(row);
  }
  absl::StatusOr<SelectResult> result = (*stream)->Select(rows);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    absl::StatusOr<ref::RowOracle> expected = oracle.Select(rows[i]);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_TRUE(ref::CheckRow(*expected, result->rows[i], tol,
                              absl::StrCat("row ", i, " t=", rows[i].position,
                                           " mode ", ModeName(rows[i].mode))));
  }

  // Below m * B HISA answers exactly what DENSE answers (SPEC 4.2).
  std::vector<QueryRow> pair;
  for (SelectMode mode : {SelectMode::kHisa, SelectMode::kDense}) {
    QueryRow row = rows[3];
    row.m = static_cast<int>((row.position / kBlockSize) + 1);
    row.k = 64;
    row.mode = mode;
    pair.push_back(row);
  }
  result = (*stream)->Select(pair);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(result->rows[0].status.ok()) << result->rows[0].status;
  EXPECT_EQ(result->rows[0].positions, result->rows[1].positions);

  // Per-row errors stay in-band: a position not yet appended next to a good row.
  std::vector<QueryRow> mixed = {rows[4], rows[5]};
  mixed[0].position = n + 10;
  result = (*stream)->Select(mixed);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows[0].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(result->rows[1].status.ok());

  // After Release the rows are NOT_FOUND, never a silent success.
  EXPECT_TRUE(client_->Release(id).value());
  result = (*stream)->Select(absl::MakeConstSpan(&rows[4], 1));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows[0].status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*stream)->Close().ok());
}

TEST_F(ClientE2eTest, BudgetExhaustionIsResourceExhausted) {
  const std::string id = absl::StrCat("e2e-budget-", ref::TestSeed() % 100000);
  ASSERT_TRUE(client_->CreateRequest(id, Config(1)).ok());
  // 32 MiB budget; 300K fp8 tokens need ~40 MB. The client splits the
  // chunk; the server refuses the piece that would cross the budget.
  const int64_t n = 300000;
  EncodedRows keys;
  keys.format = KeyFormat::kFp8E4M3;
  keys.bytes.assign(static_cast<size_t>(n * kHeadDim), 0x38);  // 1.0
  keys.scales.assign(static_cast<size_t>(n), 1.0f);
  absl::StatusOr<int64_t> appended = client_->Append(Chunk(keys, id, 0, 0, 0, n));
  EXPECT_EQ(appended.status().code(), absl::StatusCode::kResourceExhausted)
      << appended.status();
  EXPECT_TRUE(client_->Release(id).value());
}

TEST_F(ClientE2eTest, CliRunsEveryCommand) {
  const std::string id = absl::StrCat("e2e-cli-", ref::TestSeed() % 100000);
  const std::string cli =
      absl::StrCat(HISA_CLI_BINARY, " --target=", server_->target());
  auto run = [&](const std::string& args, std::string* out) {
    const std::string command = absl::StrCat(cli, " ", args, " 2>&1");
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return -1;
    char buffer[4096];
    out->clear();
    while (fgets(buffer, sizeof(buffer), pipe) != nullptr) out->append(buffer);
    const int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string out;
  EXPECT_EQ(run(absl::StrCat("create --request_id=", id, " --num_layers=2"), &out), 0) << out;
  EXPECT_EQ(run(absl::StrCat("append --request_id=", id, " --layer=-1 --num_tokens=900"), &out), 0)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "layer 1 length 900")) << out;
  EXPECT_EQ(run(absl::StrCat("select --request_id=", id, " --num_heads=8 --k=128 --m=16 --repeat=3"),
                &out),
            0)
      << out;
  EXPECT_TRUE(absl::StrContains(out, "128 positions")) << out;
  EXPECT_EQ(run(absl::StrCat("info --request_ids=", id), &out), 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "layer lengths: 900 900")) << out;
  EXPECT_EQ(run(absl::StrCat("release --request_id=", id), &out), 0) << out;
  EXPECT_EQ(run(absl::StrCat("select --request_id=", id), &out), 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "NOT_FOUND")) << out;
  EXPECT_EQ(run("frobnicate", &out), 1) << out;
}

}  // namespace
}  // namespace hisa
