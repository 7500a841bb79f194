// Translation between the hisa.v1 wire messages and the engine's plain types
// (kernels/types.h, kernels/engine.h). Nothing here calls the engine.
//
//   ASSIGN_OR_RETURN(hisa::KeyChunk chunk, hisa::ChunkFromWire(wire_chunk));
//   ASSIGN_OR_RETURN(int64_t length, engine->Append(chunk));
//
//   ASSIGN_OR_RETURN(hisa::QueryRow row, hisa::RowFromWire(wire_row));
//   hisa::RowResultToWire(result, row.k, /*block_size=*/128, &wire_result);
//
// Contracts:
//   *FromWire return views into the message (request_id, keys, q, scales,
//   weights): the message must outlive the returned value. They apply the
//   proto's defaults (block_size 0 -> 128, pooling and mode UNSPECIFIED ->
//   MEAN / HISA, k 0 -> 2048, m 0 -> 64) and reject with INVALID_ARGUMENT
//   what the engine types cannot represent (unknown enum values, uint32
//   fields above INT32_MAX), naming the field and value. Everything else
//   (shapes, ranges, finiteness) is the engine's to check.
//   RowResultToWire writes code and message; on OK also mode_used, k, the
//   compact positions (hisa::EncodePositions with `block_size`) and, when
//   present, the scores of the selected (non-padding) positions.
// Thread safety: pure functions.
#ifndef HISA_SERVER_WIRE_CONVERSION_H_
#define HISA_SERVER_WIRE_CONVERSION_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "proto/hisa.pb.h"

namespace hisa {

inline constexpr int kDefaultBlockSize = 128;
// Block size of the compact bitmask encoding on the wire (any power of two
// >= 8 decodes to the same positions; 128 matches the usual B).
inline constexpr int kWireBitmaskBlock = 128;
inline constexpr int kDefaultM = 64;

absl::StatusOr<RequestConfig> ConfigFromWire(const v1::RequestConfig& wire);
void ConfigToWire(const RequestConfig& config, v1::RequestConfig* wire);

absl::StatusOr<KeyChunk> ChunkFromWire(const v1::AppendChunk& wire);

absl::StatusOr<QueryRow> RowFromWire(const v1::QueryRow& wire);

void RowResultToWire(const RowResult& result, int k, int block_size,
                     v1::RowResult* wire);

// idle_seconds = now - info.last_used.
void RequestInfoToWire(const RequestInfo& info, absl::Time now,
                       v1::RequestInfo* wire);

}  // namespace hisa

#endif  // HISA_SERVER_WIRE_CONVERSION_H_
