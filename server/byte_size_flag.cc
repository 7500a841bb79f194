#include "server/byte_size_flag.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace hisa {
namespace {

// log2 of the multiplier of a unit letter, or -1.
int UnitShift(char c) {
  switch (absl::ascii_tolower(static_cast<unsigned char>(c))) {
    case 'k':
      return 10;
    case 'm':
      return 20;
    case 'g':
      return 30;
    case 't':
      return 40;
    default:
      return -1;
  }
}

}  // namespace

bool AbslParseFlag(absl::string_view text, ByteSize* out, std::string* error) {
  text = absl::StripAsciiWhitespace(text);
  size_t end = 0;
  while (end < text.size() &&
         (absl::ascii_isdigit(static_cast<unsigned char>(text[end])) ||
          text[end] == '.')) {
    ++end;
  }
  const absl::string_view number = text.substr(0, end);
  std::string unit = absl::AsciiStrToLower(text.substr(end));
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value) || value < 0) {
    *error = absl::StrCat("expected a byte count like 512M or 8G, got '",
                          text, "'");
    return false;
  }
  int shift = 0;
  if (!unit.empty() && unit != "b") {
    shift = UnitShift(unit[0]);
    const std::string rest = unit.substr(1);
    if (shift < 0 || !(rest.empty() || rest == "b" || rest == "ib")) {
      *error = absl::StrCat("unknown unit '", text.substr(end), "' in '", text,
                            "' (use K, M, G or T, optionally with B or iB)");
      return false;
    }
  }
  const double bytes = std::floor(std::ldexp(value, shift));
  if (!(bytes < 9.2e18)) {
    *error = absl::StrCat("byte count '", text, "' is too large");
    return false;
  }
  out->bytes = static_cast<int64_t>(bytes);
  return true;
}

std::string AbslUnparseFlag(ByteSize size) {
  static constexpr struct {
    int shift;
    const char* suffix;
  } kUnits[] = {{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}};
  if (size.bytes > 0) {
    for (const auto& unit : kUnits) {
      const int64_t multiple = int64_t{1} << unit.shift;
      if (size.bytes % multiple == 0) {
        return absl::StrCat(size.bytes / multiple, unit.suffix);
      }
    }
  }
  return absl::StrCat(size.bytes);
}

}  // namespace hisa
