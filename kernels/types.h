// Plain data types of the indexing engine: key/query formats, request
// configuration, append chunks, query rows and per-row results.
//
// These types carry no protobuf and no CUDA; the server translates its wire
// messages into them, the backends consume them. Spans point into memory the
// caller owns for the duration of the call.
//
//   hisa::RequestConfig cfg{/*num_layers=*/61, /*head_dim=*/128,
//                           /*block_size=*/128, hisa::KeyFormat::kFp8E4M3};
//   hisa::KeyChunk chunk{"req-1", /*layer=*/0, /*first_position=*/0,
//                        /*num_tokens=*/n, hisa::KeyFormat::kFp8E4M3,
//                        key_bytes, scales};
#ifndef HISA_KERNELS_TYPES_H_
#define HISA_KERNELS_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace hisa {

// Element format of keys and queries (SPEC 2).
//   kFp8E4M3: one byte per value (OCP e4m3fn: bias 7, no inf, 0x7F/0xFF NaN),
//             plus one fp32 scale per token (keys) or per head (queries);
//             value = fp8 * scale.
//   kBf16:    two bytes per value, little endian.
//   kFp32:    four bytes per value, little endian.
enum class KeyFormat : int { kFp8E4M3 = 1, kBf16 = 2, kFp32 = 3 };

// Bytes of one value in `format` (1, 2 or 4); 0 for an unknown format.
int BytesPerValue(KeyFormat format);
// True for the three formats above.
bool IsValidFormat(KeyFormat format);
// "FP8_E4M3", "BF16", "FP32", or "UNKNOWN(<n>)".
std::string FormatName(KeyFormat format);

// Selection algorithm (SPEC 4). kAuto returns HISA's answer and may run the
// DENSE code path where that answer is identical (t < m * B).
enum class SelectMode : int { kDense = 1, kHisa = 2, kAuto = 3 };
std::string ModeName(SelectMode mode);

// How a block's representative r_b is pooled from its keys (SPEC 4.2 step 2).
// kMean is the SPEC's definition; kMax (element-wise max of the dequantized
// keys) is an experimental option for the needle weakness of mean pooling.
enum class BlockPooling : int { kMean = 1, kMax = 2 };

// Hard limits of the engine; servers may configure tighter ones.
inline constexpr int kMaxK = 2048;
inline constexpr int kMaxHeads = 128;
inline constexpr int kMinBlockSize = 16;
inline constexpr int kMaxBlockSize = 1024;
inline constexpr int kMaxRequestIdBytes = 128;
// Positions are int32 on the wire and in results.
inline constexpr int64_t kMaxLayerLength = (int64_t{1} << 31) - 1;

// Fixed per request at creation. head_dim must be a multiple of 16 in
// [16, 256]; block_size a power of two in [16, 1024]; num_layers >= 1.
struct RequestConfig {
  int num_layers = 1;
  int head_dim = 128;
  int block_size = 128;
  KeyFormat key_format = KeyFormat::kFp8E4M3;
  BlockPooling pooling = BlockPooling::kMean;

  friend bool operator==(const RequestConfig& a, const RequestConfig& b) {
    return a.num_layers == b.num_layers && a.head_dim == b.head_dim &&
           a.block_size == b.block_size && a.key_format == b.key_format &&
           a.pooling == b.pooling;
  }
  friend bool operator!=(const RequestConfig& a, const RequestConfig& b) {
    return !(a == b);
  }
};

// One Append chunk: keys for positions [first_position, first_position +
// num_tokens) of one layer.
//   keys:   num_tokens * head_dim values in `format`, token-major.
//   scales: num_tokens fp32 scales for kFp8E4M3; empty otherwise.
struct KeyChunk {
  absl::string_view request_id;
  int layer = 0;
  int64_t first_position = 0;
  int64_t num_tokens = 0;
  KeyFormat format = KeyFormat::kFp8E4M3;
  absl::Span<const uint8_t> keys;
  absl::Span<const float> scales;
};

// One query row: the query of position t of one (request, layer).
//   q:         num_heads * head_dim values in q_format, head-major.
//   q_scales:  num_heads fp32 scales for kFp8E4M3 queries; empty otherwise.
//   weights:   num_heads fp32 head weights (may be negative).
//   k, m:      SPEC 4 parameters; m is ignored by kDense. m * B >= k is
//              required for kHisa and kAuto.
struct QueryRow {
  absl::string_view request_id;
  int layer = 0;
  int64_t position = 0;
  int num_heads = 0;
  KeyFormat q_format = KeyFormat::kFp32;
  absl::Span<const uint8_t> q;
  absl::Span<const float> q_scales;
  absl::Span<const float> weights;
  SelectMode mode = SelectMode::kHisa;
  int k = 2048;
  int m = 64;
  bool return_scores = false;
};

// Result of one query row. On success `positions` holds exactly k entries:
// the selected positions in ascending order, then -1 padding (SPEC 4.3);
// `scores[i]` is I(t, positions[i]) (NaN for padding) when requested, else
// empty. `mode_used` is kDense or kHisa: the code path that produced it.
// On failure only `status` is meaningful.
struct RowResult {
  absl::Status status;
  SelectMode mode_used = SelectMode::kHisa;
  std::vector<int32_t> positions;
  std::vector<float> scores;
};

}  // namespace hisa

#endif  // HISA_KERNELS_TYPES_H_
