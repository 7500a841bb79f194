#include "tests/reference/wire_encoding.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/formats.h"

namespace hisa::ref {
namespace {

// Appends `n` values of one group (token or head) in `format`; for fp8,
// scales them by 1 / scale first.
void EncodeGroup(KeyFormat format, const float* values, int n, float scale,
                 std::vector<uint8_t>& out) {
  for (int i = 0; i < n; ++i) {
    switch (format) {
      case KeyFormat::kFp8E4M3:
        out.push_back(FloatToFp8E4M3(values[i] / scale));
        break;
      case KeyFormat::kBf16: {
        const uint16_t h = FloatToBf16(values[i]);
        out.push_back(static_cast<uint8_t>(h & 0xFF));
        out.push_back(static_cast<uint8_t>(h >> 8));
        break;
      }
      case KeyFormat::kFp32: {
        uint8_t b[4];
        std::memcpy(b, &values[i], 4);
        out.insert(out.end(), b, b + 4);
        break;
      }
    }
  }
}

float AmaxScale(const float* values, int n) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(values[i]));
  return amax > 0 ? amax / 448.0f : 1.0f;
}

}  // namespace

KeyChunk EncodedKeys::Chunk(absl::string_view request_id, int layer,
                            int64_t first, int64_t n) const {
  const int64_t row_bytes = int64_t{head_dim} * BytesPerValue(format);
  KeyChunk chunk;
  chunk.request_id = request_id;
  chunk.layer = layer;
  chunk.first_position = first;
  chunk.num_tokens = n;
  chunk.format = format;
  chunk.keys = absl::MakeConstSpan(bytes).subspan(first * row_bytes,
                                                  n * row_bytes);
  if (format == KeyFormat::kFp8E4M3) {
    chunk.scales = absl::MakeConstSpan(scales).subspan(first, n);
  }
  return chunk;
}

EncodedKeys EncodeKeys(KeyFormat format, int head_dim,
                       absl::Span<const float> values,
                       absl::Span<const float> scales) {
  EncodedKeys out;
  out.format = format;
  out.head_dim = head_dim;
  out.num_tokens = static_cast<int64_t>(values.size()) / head_dim;
  out.bytes.reserve(values.size() * BytesPerValue(format));
  for (int64_t s = 0; s < out.num_tokens; ++s) {
    const float* v = values.data() + s * head_dim;
    float scale = 1.0f;
    if (format == KeyFormat::kFp8E4M3) {
      scale = scales.empty() ? AmaxScale(v, head_dim) : scales[s];
      out.scales.push_back(scale);
    }
    EncodeGroup(format, v, head_dim, scale, out.bytes);
  }
  return out;
}

QueryRow EncodedQuery::Row(absl::string_view request_id, int layer,
                           int64_t position, SelectMode mode, int k, int m,
                           bool return_scores) const {
  QueryRow row;
  row.request_id = request_id;
  row.layer = layer;
  row.position = position;
  row.num_heads = num_heads;
  row.q_format = format;
  row.q = bytes;
  row.q_scales = scales;
  row.weights = weights;
  row.mode = mode;
  row.k = k;
  row.m = m;
  row.return_scores = return_scores;
  return row;
}

EncodedQuery EncodeQuery(KeyFormat format, int num_heads, int head_dim,
                         absl::Span<const float> values,
                         absl::Span<const float> weights,
                         absl::Span<const float> scales) {
  EncodedQuery out;
  out.format = format;
  out.num_heads = num_heads;
  out.head_dim = head_dim;
  out.weights.assign(weights.begin(), weights.end());
  for (int h = 0; h < num_heads; ++h) {
    const float* v = values.data() + int64_t{h} * head_dim;
    float scale = 1.0f;
    if (format == KeyFormat::kFp8E4M3) {
      scale = scales.empty() ? AmaxScale(v, head_dim) : scales[h];
      out.scales.push_back(scale);
    }
    EncodeGroup(format, v, head_dim, scale, out.bytes);
  }
  return out;
}

}  // namespace hisa::ref
