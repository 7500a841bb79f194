#include "bench/loadgen/echo_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hisa {
namespace {

class EchoReactor final
    : public grpc::ServerBidiReactor<bench::EchoRequest, bench::EchoResponse> {
 public:
  EchoReactor() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    response_.set_message_id(request_.message_id());
    if (response_.payload().size() != request_.response_bytes()) {
      response_.set_payload(std::string(request_.response_bytes(), 'x'));
    }
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  bench::EchoRequest request_;
  bench::EchoResponse response_;
};

}  // namespace

grpc::ServerBidiReactor<bench::EchoRequest, bench::EchoResponse>*
EchoService::Stream(grpc::CallbackServerContext* /*context*/) {
  return new EchoReactor();
}

absl::StatusOr<std::unique_ptr<EchoServer>> EchoServer::Start(
    const std::string& listen) {
  std::unique_ptr<EchoServer> s(new EchoServer());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(&s->service_);
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("echo server cannot listen on '",
                                               listen, "'"));
  }
  return s;
}

EchoServer::~EchoServer() { Shutdown(); }

void EchoServer::Shutdown() {
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    server_.reset();
  }
}

}  // namespace hisa
