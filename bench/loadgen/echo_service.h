// The echo baseline's server side (echo.proto) on gRPC's callback API, the
// same API style as the HISA service: a reactor reads a message, writes the
// reply, reads the next; nothing else. Used in-process by hisa_loadgen
// (--echo_in_process) and as the separate binary hisa_echo_server.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<hisa::EchoServer> echo,
//                    hisa::EchoServer::Start("127.0.0.1:0"));
//   std::string target = absl::StrCat("127.0.0.1:", echo->port());
//   echo->Shutdown();
//
// Start: binds `listen` ("host:port"; port 0 picks a free one) with message
// limits off; UNAVAILABLE when the address cannot be bound. The reply to a
// request carries `response_bytes` bytes of payload and echoes message_id.
// Thread safety: Shutdown may be called from any thread, once.
#ifndef HISA_BENCH_LOADGEN_ECHO_SERVICE_H_
#define HISA_BENCH_LOADGEN_ECHO_SERVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/loadgen/echo.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace hisa {

class EchoService final : public bench::EchoBench::CallbackService {
 public:
  grpc::ServerBidiReactor<bench::EchoRequest, bench::EchoResponse>* Stream(
      grpc::CallbackServerContext* context) override;
};

class EchoServer {
 public:
  static absl::StatusOr<std::unique_ptr<EchoServer>> Start(
      const std::string& listen);
  ~EchoServer();

  int port() const { return port_; }
  void Shutdown();

 private:
  EchoServer() = default;

  EchoService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace hisa

#endif  // HISA_BENCH_LOADGEN_ECHO_SERVICE_H_
