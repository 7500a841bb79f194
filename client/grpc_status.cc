#include "client/grpc_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace hisa {

absl::Status StatusFromCode(int32_t code, absl::string_view message) {
  if (code == 0) return absl::OkStatus();
  if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(
        absl::StrCat("status code ", code, " (not a canonical code): ", message));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

absl::Status StatusFromGrpc(const grpc::Status& status) {
  const std::string& message = status.error_message();
  return StatusFromCode(static_cast<int32_t>(status.error_code()),
                        absl::string_view(message.data(), message.size()));
}

grpc::Status GrpcFromStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const absl::string_view message = status.message();
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(message.data(), message.size()));
}

}  // namespace hisa
