// Status propagation macros. Debian 12's Abseil (20220623) predates
// absl's own RETURN_IF_ERROR / ASSIGN_OR_RETURN, so we define them here.
//
//   RETURN_IF_ERROR(DoThing());
//   ASSIGN_OR_RETURN(auto v, ComputeValue());
#ifndef HISA_KERNELS_STATUS_MACROS_H_
#define HISA_KERNELS_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HISA_CONCAT_INNER_(a, b) a##b
#define HISA_CONCAT_(a, b) HISA_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    const ::absl::Status hisa_status_ = (expr);    \
    if (!hisa_status_.ok()) return hisa_status_;   \
  } while (0)

#define HISA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  HISA_ASSIGN_OR_RETURN_IMPL_(HISA_CONCAT_(hisa_statusor_, __LINE__), lhs, expr)

#endif  // HISA_KERNELS_STATUS_MACROS_H_
