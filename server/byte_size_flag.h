// A byte count that Abseil flags parse with binary unit suffixes, for
// --memory_budget and --max_message_bytes.
//
//   ABSL_FLAG(hisa::ByteSize, memory_budget, hisa::ByteSize{int64_t{4} << 30},
//             "cache byte budget, e.g. 8G");
//   int64_t bytes = absl::GetFlag(FLAGS_memory_budget).bytes;
//
// Accepted text: a non-negative number (integer or decimal) followed by an
// optional unit: none or B (bytes), K, M, G, T, each optionally followed by
// "B" or "iB", case-insensitive. All units are binary: 8G = 8GiB = 8GB =
// 8 * 2^30 bytes. The result is rounded down to whole bytes and must fit in
// int64. Examples: "1048576", "512M", "1.5GiB", "64k".
// AbslUnparseFlag writes the largest exact unit ("8G", "1536M", "1000").
#ifndef HISA_SERVER_BYTE_SIZE_FLAG_H_
#define HISA_SERVER_BYTE_SIZE_FLAG_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace hisa {

struct ByteSize {
  int64_t bytes = 0;
};

// Abseil flag hooks, found by argument-dependent lookup.
bool AbslParseFlag(absl::string_view text, ByteSize* out, std::string* error);
std::string AbslUnparseFlag(ByteSize size);

}  // namespace hisa

#endif  // HISA_SERVER_BYTE_SIZE_FLAG_H_
