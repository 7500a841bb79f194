// The compact wire form of selected positions (SPEC 4.3), shared by the
// server (encode) and the client library (decode): one place for the format.
//
//   hisa::v1::CompactPositions wire;
//   hisa::EncodePositions(result.positions, /*block_size=*/128, &wire);
//   ASSIGN_OR_RETURN(std::vector<int32_t> pos, hisa::DecodePositions(wire, k));
//
// EncodePositions takes the engine's output (ascending positions, then -1
// padding) and writes whichever of the two encodings is smaller:
// delta_varint (~1 byte per position when positions cluster) or
// block_bitmask (block_size / 8 bytes per touched block; smaller when the
// selection fills its blocks densely). DecodePositions returns exactly k
// entries: the positions ascending, then -1; it rejects malformed input
// (truncated varints, count mismatch, unsorted or out-of-range values) with
// INVALID_ARGUMENT.
#ifndef HISA_PROTO_COMPACT_POSITIONS_H_
#define HISA_PROTO_COMPACT_POSITIONS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proto/hisa.pb.h"

namespace hisa {

// `positions`: ascending non-negative values, optionally followed by -1s.
// block_size: power of two >= 8.
void EncodePositions(absl::Span<const int32_t> positions, int block_size,
                     v1::CompactPositions* out);

absl::StatusOr<std::vector<int32_t>> DecodePositions(
    const v1::CompactPositions& in, int k);

// The bitmask decoder's word expansion, exposed for its tests: writes
// first + i for every set bit i of w, ascending, at dst and returns how many
// (first + 63 must fit an int32). Scalar is the reference; Fast is what
// DecodePositions uses: AVX-512 where the CPU has it and it agreed with the
// scalar form on its check at first use (FastIsVectorized), else scalar.
namespace compact_internal {
size_t ExpandWordScalar(uint64_t w, int64_t first, int32_t* dst);
size_t ExpandWordFast(uint64_t w, int64_t first, int32_t* dst);
bool FastIsVectorized();
}  // namespace compact_internal

}  // namespace hisa

#endif  // HISA_PROTO_COMPACT_POSITIONS_H_
