// Tests of the client library (client/hisa_client.h) against an in-process
// fake HisaIndex service that records what arrives and answers from a script:
// status mapping, Append chunking under the server's message limit (pieces
// contiguous, byte-exact, each under the limit), in-band ack errors, Select
// decoding to the SPEC 4.3 contract, per-row errors, pipelining, malformed
// replies, deadlines, and concurrent streams on one client.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/status_codes.h"
#include "client/hisa_client.h"
#include "client/synthetic_workload.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/compact_positions.h"
#include "proto/hisa.grpc.pb.h"
#include "tests/reference/test_seed.h"

namespace hisa {
namespace {

constexpr int kHeadDim = 128;

// The positions the fake selects for a row: every third position s <= t,
// the last k of them, so short contexts pad and long ones do not.
std::vector<int32_t> FakeSelection(int64_t t, int k) {
  std::vector<int32_t> all;
  for (int64_t s = t % 3; s <= t; s += 3) all.push_back(static_cast<int32_t>(s));
  if (static_cast<int>(all.size()) > k) all.erase(all.begin(), all.end() - k);
  all.resize(static_cast<size_t>(k), -1);
  return all;
}

class FakeService final : public v1::HisaIndex::Service {
 public:
  struct Received {
    int64_t first_position;
    uint32_t num_tokens;
    uint32_t layer;
    size_t serialized_bytes;
    std::string keys;
    std::vector<float> scales;
  };

  explicit FakeService(int64_t max_message_bytes)
      : max_message_bytes_(max_message_bytes) {}

  grpc::Status GetInfo(grpc::ServerContext*, const v1::GetInfoRequest* request,
                       v1::GetInfoResponse* response) override {
    get_info_calls_.fetch_add(1);
    response->mutable_server()->set_version("fake");
    response->mutable_server()->set_max_message_bytes(max_message_bytes_);
    absl::MutexLock lock(&mu_);
    for (const std::string& id : request->request_ids()) {
      if (lengths_.count(id) == 0) response->add_missing_request_ids(id);
    }
    return grpc::Status::OK;
  }

  grpc::Status CreateRequest(grpc::ServerContext*,
                             const v1::CreateRequestRequest* request,
                             v1::CreateRequestResponse*) override {
    absl::MutexLock lock(&mu_);
    if (lengths_.count(request->request_id()) != 0) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          absl::StrCat("request '", request->request_id(),
                                       "' exists with another config"));
    }
    lengths_[request->request_id()] = 0;
    return grpc::Status::OK;
  }

  // Acks every chunk in order; a chunk must start at the stored length.
  grpc::Status Append(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::AppendAck, v1::AppendChunk>* stream) override {
    v1::AppendChunk chunk;
    while (stream->Read(&chunk)) {
      v1::AppendAck ack;
      ack.set_chunk_id(chunk.chunk_id());
      absl::MutexLock lock(&mu_);
      auto it = lengths_.find(chunk.request_id());
      if (it == lengths_.end()) {
        ack.set_code(static_cast<int>(absl::StatusCode::kNotFound));
        ack.set_message(absl::StrCat("request '", chunk.request_id(), "' not found"));
      } else if (chunk.first_position() != it->second) {
        ack.set_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
        ack.set_message(absl::StrCat("gap: layer length ", it->second,
                                     ", chunk starts at ", chunk.first_position()));
      } else {
        it->second += chunk.num_tokens();
        ack.set_layer_length(it->second);
        received_.push_back({chunk.first_position(), chunk.num_tokens(),
                             chunk.layer(), chunk.ByteSizeLong(), chunk.keys(),
                             std::vector<float>(chunk.scales().begin(),
                                                chunk.scales().end())});
      }
      if (!stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }

  // Scripted by request id: "missing" -> NOT_FOUND in-band; "corrupt" ->
  // truncated positions; "wrong-k" -> k + 1; "slow" -> sleeps 2 s; else
  // FakeSelection. "wrong-count" -> one result too many for the message.
  grpc::Status Select(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::SelectResponse, v1::SelectRequest>* stream)
      override {
    v1::SelectRequest request;
    while (stream->Read(&request)) {
      v1::SelectResponse response;
      response.set_message_id(request.message_id());
      response.set_server_seconds(1e-4);
      for (const v1::QueryRow& row : request.rows()) {
        v1::RowResult* result = response.add_results();
        const int k = row.k() == 0 ? 2048 : static_cast<int>(row.k());
        const std::string& id = row.request_id();
        if (id == "missing") {
          result->set_code(static_cast<int>(absl::StatusCode::kNotFound));
          result->set_message("request 'missing' does not exist");
          continue;
        }
        if (id == "slow") absl::SleepFor(absl::Seconds(2));
        const std::vector<int32_t> pos = FakeSelection(row.position(), k);
        result->set_mode_used(row.mode() == v1::DENSE ? v1::DENSE : v1::HISA);
        result->set_k(static_cast<uint32_t>(id == "wrong-k" ? k + 1 : k));
        EncodePositions(pos, 128, result->mutable_positions());
        if (id == "corrupt") {
          std::string* bytes = result->mutable_positions()->has_block_bitmask()
                                   ? result->mutable_positions()->mutable_block_bitmask()
                                   : result->mutable_positions()->mutable_delta_varint();
          bytes->resize(bytes->size() / 2);
        }
        if (row.return_scores()) {
          for (int32_t p : pos) {
            if (p >= 0) result->add_scores(static_cast<float>(p) * 0.5f);
          }
        }
        if (id == "wrong-count") response.add_results();
      }
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override {
    absl::MutexLock lock(&mu_);
    response->set_existed(lengths_.erase(request->request_id()) > 0);
    return grpc::Status::OK;
  }

  std::vector<Received> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  int get_info_calls() const { return get_info_calls_.load(); }

 private:
  const int64_t max_message_bytes_;
  std::atomic<int> get_info_calls_{0};
  absl::Mutex mu_;
  std::map<std::string, int64_t> lengths_ ABSL_GUARDED_BY(mu_);
  std::vector<Received> received_ ABSL_GUARDED_BY(mu_);
};

class ClientLibraryTest : public ::testing::Test {
 protected:
  void StartServer(int64_t max_message_bytes) {
    service_ = std::make_unique<FakeService>(max_message_bytes);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    target_ = absl::StrCat("127.0.0.1:", port);
  }

  std::unique_ptr<HisaClient> MakeClient(ClientOptions options = {}) {
    absl::StatusOr<std::unique_ptr<HisaClient>> client =
        HisaClient::Create(target_, options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  void SetUp() override { StartServer(int64_t{64} << 10); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  std::unique_ptr<FakeService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

RequestConfig Fp8Config() {
  RequestConfig config;
  config.num_layers = 2;
  config.head_dim = kHeadDim;
  config.block_size = 128;
  config.key_format = KeyFormat::kFp8E4M3;
  return config;
}

KeyChunk ChunkOver(const EncodedRows& keys, absl::string_view id, int layer,
                   int64_t first, int64_t n) {
  KeyChunk chunk;
  chunk.request_id = id;
  chunk.layer = layer;
  chunk.first_position = first;
  chunk.num_tokens = n;
  chunk.format = keys.format;
  chunk.keys = absl::MakeConstSpan(keys.bytes);
  chunk.scales = absl::MakeConstSpan(keys.scales);
  return chunk;
}

QueryRow Row(absl::string_view id, int64_t t, int k, const EncodedRows& q,
             const std::vector<float>& w) {
  return MakeQueryRow(id, 0, t, 4, q, w, SelectMode::kHisa, k, 64);
}

TEST(ClientStatusTest, MapsEveryCanonicalCode) {
  for (int code = 0; code <= 16; ++code) {
    const absl::Status s = StatusFromCode(code, "why");
    EXPECT_EQ(static_cast<int>(s.code()), code);
    if (code != 0) {
      EXPECT_EQ(s.message(), "why");
    }
    const absl::Status g = StatusFromGrpc(
        grpc::Status(static_cast<grpc::StatusCode>(code), "grpc why"));
    EXPECT_EQ(static_cast<int>(g.code()), code);
    EXPECT_EQ(static_cast<int>(ToGrpcStatus(g).error_code()), code);
  }
  const absl::Status unknown = StatusFromCode(42, "odd");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kUnknown);
  EXPECT_TRUE(absl::StrContains(unknown.message(), "42"));
  EXPECT_EQ(StatusFromCode(-3, "neg").code(), absl::StatusCode::kUnknown);
}

TEST(ClientSplitTest, PiecesFitAndCoverTheChunk) {
  std::mt19937_64 rng(ref::TestSeed() + 11);
  SyntheticLayer layer(WorkloadShape{}, rng());
  const int64_t n = 1000 + static_cast<int64_t>(rng() % 3000);
  const EncodedRows keys = EncodeRows(KeyFormat::kFp8E4M3, layer.Keys(0, n), kHeadDim);
  const KeyChunk chunk = ChunkOver(keys, "split-me", 1, 500, n);
  const int64_t limit = 8192 + static_cast<int64_t>(rng() % 100000);
  absl::StatusOr<std::vector<KeyChunk>> pieces = SplitChunk(chunk, limit);
  ASSERT_TRUE(pieces.ok()) << pieces.status();
  int64_t next = 500;
  for (const KeyChunk& p : *pieces) {
    EXPECT_EQ(p.first_position, next);
    EXPECT_EQ(p.keys.size(), static_cast<size_t>(p.num_tokens * kHeadDim));
    EXPECT_EQ(p.scales.size(), static_cast<size_t>(p.num_tokens));
    EXPECT_LE(p.num_tokens * 132 + 64 + 8, limit);
    next += p.num_tokens;
  }
  EXPECT_EQ(next, 500 + n);
}

TEST(ClientSplitTest, RejectsChunksThatCannotBeSplit) {
  std::vector<uint8_t> keys(10 * kHeadDim);
  std::vector<float> scales(10, 1.0f);
  KeyChunk chunk;
  chunk.request_id = "r";
  chunk.num_tokens = 10;
  chunk.format = KeyFormat::kFp8E4M3;
  chunk.keys = absl::MakeConstSpan(keys.data(), keys.size() - 1);
  chunk.scales = absl::MakeConstSpan(scales);
  EXPECT_EQ(SplitChunk(chunk, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  chunk.keys = absl::MakeConstSpan(keys);
  chunk.scales = absl::MakeConstSpan(scales.data(), 9);
  EXPECT_EQ(SplitChunk(chunk, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  chunk.scales = {};
  EXPECT_EQ(SplitChunk(chunk, 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  chunk.scales = absl::MakeConstSpan(scales);
  // One token (132 B) cannot fit in 150 B after the message overhead.
  EXPECT_EQ(SplitChunk(chunk, 150).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientLibraryTest, AppendChunksUnderTheServerLimit) {
  auto client = MakeClient();
  ASSERT_TRUE(client->CreateRequest("prefill", Fp8Config()).ok());
  std::mt19937_64 rng(ref::TestSeed() + 12);
  SyntheticLayer layer(WorkloadShape{}, rng());
  // ~650 KiB of fp8 keys against a 64 KiB server limit.
  const int64_t n = 5000;
  const EncodedRows keys = EncodeRows(KeyFormat::kFp8E4M3, layer.Keys(0, n), kHeadDim);
  absl::StatusOr<int64_t> length = client->Append(ChunkOver(keys, "prefill", 0, 0, n));
  ASSERT_TRUE(length.ok()) << length.status();
  EXPECT_EQ(*length, n);
  EXPECT_EQ(client->MaxChunkBytes().value(), int64_t{64} << 10);

  const std::vector<FakeService::Received> got = service_->received();
  ASSERT_GT(got.size(), 9u);
  std::string joined_keys;
  std::vector<float> joined_scales;
  int64_t next = 0;
  for (const FakeService::Received& r : got) {
    EXPECT_LE(r.serialized_bytes, size_t{64} << 10);
    EXPECT_EQ(r.first_position, next);
    next += r.num_tokens;
    joined_keys += r.keys;
    joined_scales.insert(joined_scales.end(), r.scales.begin(), r.scales.end());
  }
  EXPECT_EQ(next, n);
  EXPECT_EQ(joined_keys, std::string(keys.bytes.begin(), keys.bytes.end()));
  EXPECT_EQ(joined_scales, keys.scales);
  // The server's limit is fetched once per client.
  ASSERT_TRUE(client->Append(ChunkOver(keys, "prefill", 0, n, n)).ok());
  EXPECT_EQ(service_->get_info_calls(), 1);
}

TEST_F(ClientLibraryTest, ClientLimitWinsWhenSmaller) {
  ClientOptions options;
  options.max_chunk_bytes = 16 << 10;
  auto client = MakeClient(options);
  ASSERT_TRUE(client->CreateRequest("small", Fp8Config()).ok());
  SyntheticLayer layer(WorkloadShape{}, ref::TestSeed() + 13);
  const EncodedRows keys = EncodeRows(KeyFormat::kFp8E4M3, layer.Keys(0, 600), kHeadDim);
  ASSERT_TRUE(client->Append(ChunkOver(keys, "small", 0, 0, 600)).ok());
  for (const FakeService::Received& r : service_->received()) {
    EXPECT_LE(r.serialized_bytes, size_t{16} << 10);
  }
}

TEST_F(ClientLibraryTest, InBandAppendErrorsKeepTheStreamUsable) {
  auto client = MakeClient();
  ASSERT_TRUE(client->CreateRequest("gap", Fp8Config()).ok());
  SyntheticLayer layer(WorkloadShape{}, ref::TestSeed() + 14);
  const EncodedRows keys = EncodeRows(KeyFormat::kFp8E4M3, layer.Keys(0, 1200), kHeadDim);
  absl::StatusOr<std::unique_ptr<AppendStream>> stream = client->OpenAppendStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  // A gap: the layer is empty, the chunk starts at 100 (several pieces, all
  // rejected; the first rejection is reported).
  absl::StatusOr<int64_t> gap = (*stream)->Append(ChunkOver(keys, "gap", 0, 100, 1200));
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(gap.status().message(), "'gap' layer 0 positions [100,"))
      << gap.status();
  EXPECT_TRUE(absl::StrContains(gap.status().message(), "chunk starts at 100"));
  // Unknown request: NOT_FOUND from the ack.
  absl::StatusOr<int64_t> missing =
      (*stream)->Append(ChunkOver(keys, "nobody", 0, 0, 1200));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  // The same stream still works.
  absl::StatusOr<int64_t> ok = (*stream)->Append(ChunkOver(keys, "gap", 0, 0, 1200));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 1200);
  EXPECT_TRUE((*stream)->Close().ok());
}

TEST_F(ClientLibraryTest, SelectDecodesToTheContract) {
  auto client = MakeClient();
  std::mt19937_64 rng(ref::TestSeed() + 15);
  WorkloadShape shape;
  shape.num_heads = 4;
  SyntheticLayer layer(shape, rng());
  std::vector<float> qf, w;
  layer.Query(100, &qf, &w);
  const EncodedRows q = EncodeRows(KeyFormat::kFp8E4M3, qf, kHeadDim);

  absl::StatusOr<std::unique_ptr<SelectStream>> stream = client->OpenSelectStream();
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<QueryRow> rows;
    std::vector<std::string> ids;
    const int num_rows = 1 + static_cast<int>(rng() % 8);
    for (int r = 0; r < num_rows; ++r) ids.push_back(absl::StrCat("req-", r));
    ids[rng() % ids.size()] = "missing";
    for (int r = 0; r < num_rows; ++r) {
      const int k = r == 0 ? 0 : 1 + static_cast<int>(rng() % 2048);
      const int64_t t = static_cast<int64_t>(rng() % 20000);
      QueryRow row = Row(ids[r], t, k, q, w);
      row.return_scores = (r % 2) == 1;
      rows.push_back(row);
    }
    absl::StatusOr<SelectResult> result = (*stream)->Select(rows);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->rows.size(), rows.size());
    EXPECT_GT(result->response_bytes, 0);
    for (int r = 0; r < num_rows; ++r) {
      const RowResult& got = result->rows[r];
      if (ids[r] == "missing") {
        EXPECT_EQ(got.status.code(), absl::StatusCode::kNotFound);
        continue;
      }
      ASSERT_TRUE(got.status.ok()) << got.status;
      const int k = rows[r].k == 0 ? 2048 : rows[r].k;
      EXPECT_EQ(got.positions, FakeSelection(rows[r].position, k));
      if (rows[r].return_scores) {
        ASSERT_EQ(got.scores.size(), static_cast<size_t>(k));
        for (int i = 0; i < k; ++i) {
          if (got.positions[i] >= 0) {
            EXPECT_EQ(got.scores[i], got.positions[i] * 0.5f);
          } else {
            EXPECT_TRUE(std::isnan(got.scores[i]));
          }
        }
      } else {
        EXPECT_TRUE(got.scores.empty());
      }
    }
  }
  EXPECT_TRUE((*stream)->Close().ok());
}

TEST_F(ClientLibraryTest, PipelinedSendsAnswerInOrder) {
  auto client = MakeClient();
  std::vector<float> qf(4 * kHeadDim, 0.5f), w(4, 1.0f);
  const EncodedRows q = EncodeRows(KeyFormat::kFp32, qf, kHeadDim);
  auto stream = client->OpenSelectStream();
  ASSERT_TRUE(stream.ok());
  for (int i = 0; i < 5; ++i) {
    const QueryRow row = Row("req", 1000 + i, 16, q, w);
    ASSERT_TRUE((*stream)->Send(absl::MakeConstSpan(&row, 1)).ok());
  }
  EXPECT_EQ((*stream)->in_flight(), 5);
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<SelectResult> result = (*stream)->Receive();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->rows[0].positions, FakeSelection(1000 + i, 16));
  }
  EXPECT_EQ((*stream)->Receive().status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A prebuilt message may be sent repeatedly; ids advance.
  v1::SelectRequest prebuilt;
  ToProto(Row("req", 7, 8, q, w), prebuilt.add_rows());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*stream)->Send(&prebuilt).ok());
    absl::StatusOr<SelectResult> result = (*stream)->Receive();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->message_id, prebuilt.message_id());
  }
}

TEST_F(ClientLibraryTest, MalformedRepliesAreInternal) {
  auto client = MakeClient();
  std::vector<float> qf(4 * kHeadDim, 0.5f), w(4, 1.0f);
  const EncodedRows q = EncodeRows(KeyFormat::kFp32, qf, kHeadDim);
  auto stream = client->OpenSelectStream();
  ASSERT_TRUE(stream.ok());
  const std::vector<QueryRow> rows = {Row("corrupt", 5000, 2048, q, w),
                                      Row("wrong-k", 5000, 100, q, w),
                                      Row("fine", 5000, 100, q, w)};
  absl::StatusOr<SelectResult> result = (*stream)->Select(rows);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(result->rows[1].status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(result->rows[2].status.ok());
  // A reply with the wrong number of rows fails the whole message.
  const QueryRow bad = Row("wrong-count", 10, 4, q, w);
  EXPECT_EQ((*stream)->Select(absl::MakeConstSpan(&bad, 1)).status().code(),
            absl::StatusCode::kInternal);
}

TEST_F(ClientLibraryTest, SlowRepliesHitTheDeadline) {
  ClientOptions options;
  options.deadline = absl::Milliseconds(300);
  auto client = MakeClient(options);
  std::vector<float> qf(4 * kHeadDim, 0.5f), w(4, 1.0f);
  const EncodedRows q = EncodeRows(KeyFormat::kFp32, qf, kHeadDim);
  auto stream = client->OpenSelectStream();
  ASSERT_TRUE(stream.ok());
  const QueryRow slow = Row("slow", 10, 4, q, w);
  const absl::Time start = absl::Now();
  EXPECT_EQ((*stream)->Select(absl::MakeConstSpan(&slow, 1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1.5));
  // The stream is broken now; a new one works.
  const QueryRow fine = Row("fine", 10, 4, q, w);
  EXPECT_FALSE((*stream)->Select(absl::MakeConstSpan(&fine, 1)).ok());
  auto fresh = client->OpenSelectStream();
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE((*fresh)->Select(absl::MakeConstSpan(&fine, 1)).ok());
}

TEST_F(ClientLibraryTest, UnaryCallsMapStatuses) {
  auto client = MakeClient();
  ASSERT_TRUE(client->CreateRequest("u", Fp8Config()).ok());
  const absl::Status again = client->CreateRequest("u", Fp8Config());
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(again.message(), "CreateRequest 'u'"));
  const std::vector<std::string> ids = {"u", "v"};
  absl::StatusOr<v1::GetInfoResponse> info = client->GetInfo(ids);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->missing_request_ids_size(), 1);
  EXPECT_EQ(info->missing_request_ids(0), "v");
  EXPECT_TRUE(client->Release("u").value());
  EXPECT_FALSE(client->Release("u").value());
}

TEST_F(ClientLibraryTest, NoServerIsUnavailable) {
  server_->Shutdown(absl::ToChronoTime(absl::Now()));
  server_.reset();
  ClientOptions options;
  options.deadline = absl::Seconds(5);
  auto client = MakeClient(options);
  EXPECT_EQ(client->GetInfo().status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<std::unique_ptr<SelectStream>> stream = client->OpenSelectStream();
  if (stream.ok()) {
    std::vector<float> qf(4 * kHeadDim, 0.5f), w(4, 1.0f);
    const EncodedRows q = EncodeRows(KeyFormat::kFp32, qf, kHeadDim);
    const QueryRow row = Row("r", 10, 4, q, w);
    EXPECT_EQ((*stream)->Select(absl::MakeConstSpan(&row, 1)).status().code(),
              absl::StatusCode::kUnavailable);
  } else {
    EXPECT_EQ(stream.status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(HisaClient::Create("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientLibraryTest, ConcurrentStreamsShareOneClient) {
  auto client = MakeClient();
  std::vector<float> qf(4 * kHeadDim, 0.5f), w(4, 1.0f);
  const EncodedRows q = EncodeRows(KeyFormat::kFp32, qf, kHeadDim);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto stream = client->OpenSelectStream();
      if (!stream.ok()) {
        failures.fetch_add(1);
        return;
      }
      for (int j = 0; j < 50; ++j) {
        const QueryRow row = Row("c", 100 * i + j, 32, q, w);
        absl::StatusOr<SelectResult> r = (*stream)->Select(absl::MakeConstSpan(&row, 1));
        if (!r.ok() || r->rows[0].positions != FakeSelection(100 * i + j, 32)) {
          failures.fetch_add(1);
        }
      }
      if (!(*stream)->Close().ok()) failures.fetch_add(1);
      // Unary calls interleave with streams on the same channel.
      if (!client->GetInfo().ok()) failures.fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace hisa
