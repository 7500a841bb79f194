// The hisa.v1.HisaIndex gRPC service on the callback API: a thin adapter that
// translates wire messages to engine calls (server/wire_conversion.h) and
// engine status to gRPC status (proto/status_codes.h). Reactors never
// block: engine work runs on an Executor, Select rows go through a
// SelectBatcher that merges concurrent streams into one engine batch.
//
//   hisa::Executor executor(4);
//   hisa::ServiceMetrics metrics(engine.get());
//   hisa::SelectBatcher batcher(engine.get(), &executor, {}, &metrics);
//   hisa::HisaService service(engine.get(), &executor, &batcher, &metrics,
//                             service_options);
//   builder.RegisterService(&service);
//   ...
//   service.StartDrain();           // on SIGTERM
//   service.WaitIdle(deadline);     // then Server::Shutdown
//
// Error reporting (documented for clients):
//   CreateRequest / Release / GetInfo: the RPC status.
//   Append: one AppendAck per chunk, in order, with the chunk's code and
//     message in-band (NOT_FOUND, FAILED_PRECONDITION for gaps and conflicts,
//     RESOURCE_EXHAUSTED for the budget, INVALID_ARGUMENT for shapes); the
//     stream stays usable after a failed chunk.
//   Select: one SelectResponse per SelectRequest, in order, with one
//     RowResult per row, in row order; per-row errors in-band. A message with
//     more than max_rows_per_message rows ends the stream with RPC-level
//     INVALID_ARGUMENT (after the responses of earlier messages). A message
//     larger than max_message_bytes is rejected by gRPC itself with RPC-level
//     RESOURCE_EXHAUSTED ("Received message larger than max").
//   Draining (StartDrain): new RPCs get UNAVAILABLE; an open stream answers
//     every message it has read, stops reading, and ends with UNAVAILABLE
//     (OK if the client had already half-closed).
//   A cancelled stream skips the engine work of its queued messages.
//
// Thread safety: the service is driven by gRPC's threads and the executor;
// StartDrain may be called from any thread. The engine, executor, batcher and
// metrics must outlive the service, and the service must outlive the
// grpc::Server (Shutdown returns only after every reactor is done).
#ifndef HISA_SERVER_HISA_SERVICE_H_
#define HISA_SERVER_HISA_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kernels/engine.h"
#include "proto/hisa.grpc.pb.h"
#include "server/executor.h"
#include "server/select_batcher.h"
#include "server/service_metrics.h"

namespace hisa {

struct ServiceOptions {
  // Rows per SelectRequest; more ends the stream with INVALID_ARGUMENT.
  int max_rows_per_message = 4096;
  // Reported by GetInfo; gRPC enforces it (ServerBuilder's max receive size).
  int64_t max_message_bytes = int64_t{64} << 20;
  // SelectRequests of one stream being worked on at once (pipelining).
  int max_select_messages_in_flight = 4;
  // Acks of one Append stream waiting for the client to read them before the
  // stream stops reading chunks (flow control).
  int max_queued_acks = 16;
  // Reported by GetInfo.
  std::string version;
  std::string device;
};

class HisaService final : public v1::HisaIndex::CallbackService {
 public:
  HisaService(Engine* engine, Executor* executor, SelectBatcher* batcher,
              ServiceMetrics* metrics, ServiceOptions options);
  ~HisaService() override;

  // New RPCs are answered UNAVAILABLE; open streams finish what they have
  // read and end. Returns at once.
  void StartDrain();
  bool draining() const { return draining_.load(); }
  // Waits until no HisaIndex RPC is being served (no open stream, no unary
  // call before its Finish) or `deadline` passes; true when idle. Used after
  // StartDrain so that grpc::Server::Shutdown, which answers calls arriving
  // during it with CANCELLED, only starts once the drain is over.
  bool WaitIdle(absl::Time deadline);

  grpc::ServerUnaryReactor* CreateRequest(
      grpc::CallbackServerContext* context,
      const v1::CreateRequestRequest* request,
      v1::CreateRequestResponse* response) override;
  grpc::ServerBidiReactor<v1::AppendChunk, v1::AppendAck>* Append(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<v1::SelectRequest, v1::SelectResponse>* Select(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::GetInfoResponse* response) override;

 private:
  class Stream;
  template <class Derived, class Request, class Response>
  class StreamReactor;
  class AppendReactor;
  class SelectReactor;

  // Runs `work` on the executor and finishes `reactor` with its status.
  void RunUnary(RpcMethod method, grpc::ServerUnaryReactor* reactor,
                absl::AnyInvocable<absl::Status() &&> work);
  // False when draining: the stream must end at once with UNAVAILABLE.
  bool RegisterStream(Stream* stream);
  void UnregisterStream(Stream* stream);
  // Counts a unary call in flight; false when draining.
  bool BeginUnary();
  void EndUnary();
  // Runs `task` on the executor, or here if the executor has stopped.
  void Schedule(absl::AnyInvocable<void() &&> task);
  absl::Status FillInfo(const v1::GetInfoRequest& request,
                        v1::GetInfoResponse* response) const;

  Engine* const engine_;
  Executor* const executor_;
  SelectBatcher* const batcher_;
  ServiceMetrics* const metrics_;
  const ServiceOptions options_;

  std::atomic<bool> draining_{false};
  std::mutex mu_;
  std::condition_variable idle_cv_;
  absl::flat_hash_set<Stream*> streams_ ABSL_GUARDED_BY(mu_);
  int unary_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace hisa

#endif  // HISA_SERVER_HISA_SERVICE_H_
