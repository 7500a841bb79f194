// Minimal synchronous clients for the service tests, written on the
// generated stubs (not the client library) so that the tests see exactly
// what is on the wire; plus a plain HTTP GET for /metrics, a promtool runner,
// and raw-bytes calls to the standard health and reflection services.
//
//   hisa::testing::WireClient client(server->target());
//   ASSERT_TRUE(client.CreateRequest("r", config).ok());
//   auto append = client.Append({chunk});       // one ack per chunk
//   auto select = client.Select({request});     // one response per request
//
// Contracts: every call carries a deadline (`timeout`, default 60 s).
// Append/Select write one message, read its reply, and so on; when the
// server ends the stream early they stop and return what they got plus the
// final status. Not thread-safe per object; make one per thread.
#ifndef HISA_TESTS_SERVICE_WIRE_TEST_CLIENT_H_
#define HISA_TESTS_SERVICE_WIRE_TEST_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/metrics_scrape.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "proto/hisa.grpc.pb.h"

namespace hisa::testing {

struct AppendResult {
  std::vector<v1::AppendAck> acks;
  grpc::Status status;
};

struct SelectResult {
  std::vector<v1::SelectResponse> responses;
  grpc::Status status;
};

class WireClient {
 public:
  explicit WireClient(const std::string& target,
                      absl::Duration timeout = absl::Seconds(60));

  grpc::Status CreateRequest(const std::string& id,
                             const v1::RequestConfig& config);
  AppendResult Append(const std::vector<v1::AppendChunk>& chunks);
  SelectResult Select(const std::vector<v1::SelectRequest>& requests);
  grpc::Status Release(const std::string& id, bool* existed = nullptr);
  grpc::Status GetInfo(const v1::GetInfoRequest& request,
                       v1::GetInfoResponse* response);
  // GetInfo of the server only.
  absl::StatusOr<v1::ServerInfo> ServerInfo();

  // grpc.health.v1.Health/Check for `service` ("" = the whole server):
  // 1 SERVING, 2 NOT_SERVING, or the RPC error.
  absl::StatusOr<int> HealthCheck(const std::string& service);
  // grpc.reflection.v1alpha list_services: the service names.
  absl::StatusOr<std::vector<std::string>> ReflectionListServices();

  v1::HisaIndex::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  void SetDeadline(grpc::ClientContext* context) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::HisaIndex::Stub> stub_;
  absl::Duration timeout_;
};

// Metrics scraping (client/metrics_scrape.h), under the names tests use.
using ::hisa::HttpGet;
using ::hisa::MetricValue;

// Runs `promtool check metrics` on `text`. Returns its exit code and output;
// UNAVAILABLE when promtool is not installed.
struct PromtoolResult {
  int exit_code = 0;
  std::string output;
};
absl::StatusOr<PromtoolResult> PromtoolCheckMetrics(const std::string& text);

}  // namespace hisa::testing

#endif  // HISA_TESTS_SERVICE_WIRE_TEST_CLIENT_H_
