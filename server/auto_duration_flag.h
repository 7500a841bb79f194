// A duration flag that may also say "auto" (the server picks), for
// --executor_spin.
//
//   ABSL_FLAG(hisa::AutoDuration, executor_spin, hisa::AutoDuration{}, "...");
//   std::optional<absl::Duration> spin =
//       absl::GetFlag(FLAGS_executor_spin).value;
//
// Accepted text: "auto" (value nullopt) or anything absl::ParseDuration
// takes ("500us", "0", "1.5ms"). Range checks belong to whoever uses it.
#ifndef HISA_SERVER_AUTO_DURATION_FLAG_H_
#define HISA_SERVER_AUTO_DURATION_FLAG_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hisa {

struct AutoDuration {
  std::optional<absl::Duration> value;  // nullopt: auto
};

// Abseil flag hooks, found by argument-dependent lookup.
bool AbslParseFlag(absl::string_view text, AutoDuration* out,
                   std::string* error);
std::string AbslUnparseFlag(const AutoDuration& d);

}  // namespace hisa

#endif  // HISA_SERVER_AUTO_DURATION_FLAG_H_
