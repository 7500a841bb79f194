// The one place where engine status (absl::Status) meets gRPC status: the
// RPC-level grpc::Status of unary calls and streams, and the in-band
// google.rpc.Code integers of AppendAck.code and RowResult.code.
//
//   reactor->Finish(hisa::ToGrpcStatus(engine->CreateRequest(id, config)));
//   ack.set_code(hisa::ToWireCode(status.code()));
//
// Contract:
//   ToGrpcCode maps every absl::StatusCode to the grpc::StatusCode of the
//   same meaning (both follow google.rpc.Code); an unknown value becomes
//   UNKNOWN. ToGrpcStatus keeps the message. ToWireCode is the integer that
//   goes into in-band `code` fields. StatusCodeName is the upper-case name
//   ("NOT_FOUND") used in metric labels and logs.
// All functions are pure and thread-safe.
#ifndef HISA_SERVER_STATUS_MAPPING_H_
#define HISA_SERVER_STATUS_MAPPING_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace hisa {

// The mapping itself; every other function here goes through it.
grpc::StatusCode ToGrpcCode(absl::StatusCode code);

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(status.code()), std::string(status.message()));
}

inline int32_t ToWireCode(absl::StatusCode code) {
  return static_cast<int32_t>(ToGrpcCode(code));
}

// "OK", "CANCELLED", ..., "UNAUTHENTICATED"; "UNKNOWN" for other values.
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace hisa

#endif  // HISA_SERVER_STATUS_MAPPING_H_
