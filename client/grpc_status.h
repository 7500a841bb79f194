// The client's one mapping from wire status codes to absl::Status: the RPC
// status of a call (grpc::Status) and the in-band per-chunk / per-row codes of
// AppendAck and RowResult (google.rpc.Code values) both go through
// StatusFromCode, so a code means the same thing wherever it arrives.
//
//   absl::Status s = hisa::StatusFromGrpc(context_status);
//   absl::Status row = hisa::StatusFromCode(result.code(), result.message());
//
// gRPC, google.rpc.Code and absl::StatusCode share the canonical numbering
// 0..16. StatusFromCode keeps the code and the message; a code outside 0..16
// becomes UNKNOWN with the raw value in the message. StatusFromCode(0, ...)
// is OK (the message is dropped). Thread-safe (pure functions).
#ifndef HISA_CLIENT_GRPC_STATUS_H_
#define HISA_CLIENT_GRPC_STATUS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace hisa {

absl::Status StatusFromCode(int32_t code, absl::string_view message);

absl::Status StatusFromGrpc(const grpc::Status& status);

// The reverse, for servers written against this client's helpers (tests and
// the echo baseline): absl::Status -> grpc::Status with the same code.
grpc::Status GrpcFromStatus(const absl::Status& status);

}  // namespace hisa

#endif  // HISA_CLIENT_GRPC_STATUS_H_
