// The one place where absl::Status meets the wire, for the server and the
// client alike: the RPC-level grpc::Status of calls and streams, and the
// in-band google.rpc.Code integers of AppendAck.code and RowResult.code.
//
//   reactor->Finish(hisa::ToGrpcStatus(engine->CreateRequest(id, config)));
//   ack.set_code(hisa::ToWireCode(status.code()));            // server
//   absl::Status row = hisa::StatusFromCode(r.code(), r.message());  // client
//
// Contract: absl::StatusCode, grpc::StatusCode and google.rpc.Code share the
// canonical numbering 0..16. ToGrpcCode maps every absl code to the gRPC
// code of the same meaning (an unknown value becomes UNKNOWN); ToGrpcStatus
// keeps the message; ToWireCode is the integer of in-band `code` fields.
// StatusFromCode keeps code and message (code 0 is OK, the message dropped);
// a code outside 0..16 becomes UNKNOWN with the raw value in the message.
// StatusCodeName is the upper-case name ("NOT_FOUND") for metric labels and
// logs. All functions are pure and thread-safe.
#ifndef HISA_PROTO_STATUS_CODES_H_
#define HISA_PROTO_STATUS_CODES_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace hisa {

// absl -> wire. Every other server-side function goes through ToGrpcCode.
grpc::StatusCode ToGrpcCode(absl::StatusCode code);

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(status.code()), std::string(status.message()));
}

inline int32_t ToWireCode(absl::StatusCode code) {
  return static_cast<int32_t>(ToGrpcCode(code));
}

// wire -> absl.
absl::Status StatusFromCode(int32_t code, absl::string_view message);
absl::Status StatusFromGrpc(const grpc::Status& status);

// "OK", "CANCELLED", ..., "UNAUTHENTICATED"; "UNKNOWN" for other values.
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace hisa

#endif  // HISA_PROTO_STATUS_CODES_H_
