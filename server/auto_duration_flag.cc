#include "server/auto_duration_flag.h"

namespace hisa {

bool AbslParseFlag(absl::string_view text, AutoDuration* out,
                   std::string* error) {
  if (text == "auto") {
    out->value.reset();
    return true;
  }
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    *error = "want 'auto' or a duration such as 500us";
    return false;
  }
  out->value = d;
  return true;
}

std::string AbslUnparseFlag(const AutoDuration& d) {
  return d.value.has_value() ? absl::FormatDuration(*d.value) : "auto";
}

}  // namespace hisa
