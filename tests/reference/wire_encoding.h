// Encodes float keys and queries into the engine's wire formats (SPEC 2) and
// builds KeyChunk / QueryRow views over them. Shared by tests, the fidelity
// tool and benchmarks; the oracle decodes these bytes independently.
//
//   hisa::ref::EncodedKeys keys =
//       hisa::ref::EncodeKeys(hisa::KeyFormat::kFp8E4M3, /*head_dim=*/128, v);
//   engine->Append(keys.Chunk("req", /*layer=*/0, /*first=*/0, keys.num_tokens));
//   hisa::ref::EncodedQuery q = hisa::ref::EncodeQuery(
//       hisa::KeyFormat::kBf16, /*num_heads=*/64, /*head_dim=*/128, qv, w);
//   hisa::QueryRow row = q.Row("req", 0, /*position=*/t, SelectMode::kHisa,
//                              /*k=*/2048, /*m=*/64);
//
// FP8_E4M3 quantization is what a serving stack does: per token (keys) or per
// head (queries) scale = amax / 448, values rounded to nearest even; an
// all-zero group gets scale 1. Callers may instead pass explicit scales (for
// exactly representable test data). Views returned by Chunk and Row point into
// the encoded object, which must outlive them.
#ifndef HISA_TESTS_REFERENCE_WIRE_ENCODING_H_
#define HISA_TESTS_REFERENCE_WIRE_ENCODING_H_

#include <cstdint>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/types/span.h"
#include "kernels/types.h"

namespace hisa::ref {

struct EncodedKeys {
  KeyFormat format = KeyFormat::kFp32;
  int head_dim = 0;
  int64_t num_tokens = 0;
  std::vector<uint8_t> bytes;  // num_tokens * head_dim values, token-major
  std::vector<float> scales;   // num_tokens for fp8, else empty

  // The chunk of positions [first, first + n); requires
  // 0 <= first <= first + n <= num_tokens.
  KeyChunk Chunk(absl::string_view request_id, int layer, int64_t first,
                 int64_t n) const;
};

// Encodes `values` (num_tokens x head_dim floats). For kFp8E4M3, `scales`
// (one per token) overrides the amax scaling when non-empty.
EncodedKeys EncodeKeys(KeyFormat format, int head_dim,
                       absl::Span<const float> values,
                       absl::Span<const float> scales = {});

struct EncodedQuery {
  KeyFormat format = KeyFormat::kFp32;
  int num_heads = 0;
  int head_dim = 0;
  std::vector<uint8_t> bytes;   // num_heads * head_dim values, head-major
  std::vector<float> scales;    // num_heads for fp8, else empty
  std::vector<float> weights;   // num_heads

  QueryRow Row(absl::string_view request_id, int layer, int64_t position,
               SelectMode mode, int k, int m, bool return_scores = false) const;
};

// Encodes a query (num_heads x head_dim floats) and its head weights. For
// kFp8E4M3, `scales` (one per head) overrides the amax scaling when non-empty.
EncodedQuery EncodeQuery(KeyFormat format, int num_heads, int head_dim,
                         absl::Span<const float> values,
                         absl::Span<const float> weights,
                         absl::Span<const float> scales = {});

}  // namespace hisa::ref

#endif  // HISA_TESTS_REFERENCE_WIRE_ENCODING_H_
