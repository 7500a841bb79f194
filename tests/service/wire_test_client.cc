#include "tests/service/wire_test_client.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/generic/generic_stub.h"
#include "tests/service/server_process.h"

namespace hisa::testing {
namespace {

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromByteBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// Waits for the next completion-queue event; false on timeout or !ok.
bool Await(grpc::CompletionQueue& cq, void* want, absl::Duration timeout) {
  void* tag = nullptr;
  bool ok = false;
  const auto status =
      cq.AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + timeout));
  return status == grpc::CompletionQueue::GOT_EVENT && tag == want && ok;
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace

WireClient::WireClient(const std::string& target, absl::Duration timeout)
    : timeout_(timeout) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(
      target, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::HisaIndex::NewStub(channel_);
}

void WireClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
}

grpc::Status WireClient::CreateRequest(const std::string& id,
                                       const v1::RequestConfig& config) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::CreateRequestRequest request;
  request.set_request_id(id);
  *request.mutable_config() = config;
  v1::CreateRequestResponse response;
  return stub_->CreateRequest(&context, request, &response);
}

AppendResult WireClient::Append(const std::vector<v1::AppendChunk>& chunks) {
  AppendResult result;
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = stub_->Append(&context);
  for (const v1::AppendChunk& chunk : chunks) {
    if (!stream->Write(chunk)) break;
    v1::AppendAck ack;
    if (!stream->Read(&ack)) break;
    result.acks.push_back(std::move(ack));
  }
  stream->WritesDone();
  v1::AppendAck extra;
  while (stream->Read(&extra)) result.acks.push_back(extra);
  result.status = stream->Finish();
  return result;
}

SelectResult WireClient::Select(const std::vector<v1::SelectRequest>& requests) {
  SelectResult result;
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = stub_->Select(&context);
  for (const v1::SelectRequest& request : requests) {
    if (!stream->Write(request)) break;
    v1::SelectResponse response;
    if (!stream->Read(&response)) break;
    result.responses.push_back(std::move(response));
  }
  stream->WritesDone();
  v1::SelectResponse extra;
  while (stream->Read(&extra)) result.responses.push_back(extra);
  result.status = stream->Finish();
  return result;
}

grpc::Status WireClient::Release(const std::string& id, bool* existed) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ReleaseRequest request;
  request.set_request_id(id);
  v1::ReleaseResponse response;
  grpc::Status status = stub_->Release(&context, request, &response);
  if (existed != nullptr) *existed = response.existed();
  return status;
}

grpc::Status WireClient::GetInfo(const v1::GetInfoRequest& request,
                                 v1::GetInfoResponse* response) {
  grpc::ClientContext context;
  SetDeadline(&context);
  return stub_->GetInfo(&context, request, response);
}

absl::StatusOr<v1::ServerInfo> WireClient::ServerInfo() {
  v1::GetInfoResponse response;
  grpc::Status status = GetInfo(v1::GetInfoRequest(), &response);
  if (!status.ok()) return FromGrpc(status);
  return response.server();
}

absl::StatusOr<int> WireClient::HealthCheck(const std::string& service) {
  // grpc.health.v1.HealthCheckRequest { string service = 1; }
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  SetDeadline(&context);
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check",
                                    ToByteBuffer(request), &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  int tag = 0;
  call->Finish(&response, &status, &tag);
  if (!Await(cq, &tag, timeout_)) {
    return absl::DeadlineExceededError("health check did not complete");
  }
  if (!status.ok()) return FromGrpc(status);
  // HealthCheckResponse { ServingStatus status = 1; } (absent = 0).
  const std::string bytes = FromByteBuffer(response);
  if (bytes.size() >= 2 && bytes[0] == 0x08) return bytes[1];
  return 0;
}

absl::StatusOr<std::vector<std::string>> WireClient::ReflectionListServices() {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  SetDeadline(&context);
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      &cq);
  int start = 0, write = 0, done = 0, read = 0, finish = 0;
  call->StartCall(&start);
  if (!Await(cq, &start, timeout_)) return absl::UnavailableError("start");
  // ServerReflectionRequest { string list_services = 7; } set to "".
  call->Write(ToByteBuffer(std::string("\x3a\x00", 2)), &write);
  if (!Await(cq, &write, timeout_)) return absl::UnavailableError("write");
  call->WritesDone(&done);
  if (!Await(cq, &done, timeout_)) return absl::UnavailableError("done");
  grpc::ByteBuffer response;
  call->Read(&response, &read);
  const bool got = Await(cq, &read, timeout_);
  grpc::Status status;
  call->Finish(&status, &finish);
  Await(cq, &finish, timeout_);
  if (!got) {
    return status.ok() ? absl::UnavailableError("no reflection response")
                       : FromGrpc(status);
  }
  // ServerReflectionResponse.list_services_response (6) ->
  // ListServiceResponse.service (1, repeated) -> ServiceResponse.name (1).
  std::vector<std::string> names;
  google::protobuf::UnknownFieldSet top;
  if (!top.ParseFromString(FromByteBuffer(response))) {
    return absl::DataLossError("unparsable reflection response");
  }
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    if (!list.ParseFromString(top.field(i).length_delimited())) continue;
    for (int j = 0; j < list.field_count(); ++j) {
      if (list.field(j).number() != 1) continue;
      google::protobuf::UnknownFieldSet service;
      if (!service.ParseFromString(list.field(j).length_delimited())) continue;
      for (int k = 0; k < service.field_count(); ++k) {
        if (service.field(k).number() == 1) {
          names.push_back(service.field(k).length_delimited());
        }
      }
    }
  }
  return names;
}

absl::StatusOr<PromtoolResult> PromtoolCheckMetrics(const std::string& text) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    return absl::UnavailableError("promtool is not installed");
  }
  const std::string dir = MakeTempDir("hisa_promtool_");
  const std::string in = dir + "/metrics.txt";
  const std::string out = dir + "/promtool.txt";
  {
    std::ofstream file(in);
    file << text;
  }
  const std::string command =
      absl::StrCat("promtool check metrics < '", in, "' > '", out, "' 2>&1");
  const int status = std::system(command.c_str());
  PromtoolResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream file(out);
  std::stringstream buffer;
  buffer << file.rdbuf();
  result.output = buffer.str();
  std::remove(in.c_str());
  std::remove(out.c_str());
  rmdir(dir.c_str());
  return result;
}

}  // namespace hisa::testing
