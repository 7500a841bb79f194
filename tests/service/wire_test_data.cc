#include "tests/service/wire_test_data.h"

#include <cstring>

#include "kernels/formats.h"

namespace hisa::testing {
namespace {

// Appends `n` values drawn from `dist` encoded in `format` to `out`.
void AppendValues(std::mt19937_64& rng, v1::KeyFormat format, int64_t n,
                  std::string* out) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float v = normal(rng);
    switch (format) {
      case v1::FP8_E4M3:
        // Scaled so that the fp8 grid is used, far from saturation.
        out->push_back(static_cast<char>(FloatToFp8E4M3(v * 16.0f)));
        break;
      case v1::BF16: {
        const uint16_t h = FloatToBf16(v);
        out->push_back(static_cast<char>(h & 0xFF));
        out->push_back(static_cast<char>(h >> 8));
        break;
      }
      default: {
        char bytes[4];
        std::memcpy(bytes, &v, 4);
        out->append(bytes, 4);
        break;
      }
    }
  }
}

}  // namespace

v1::RequestConfig MakeConfig(int num_layers, int head_dim, int block_size,
                             v1::KeyFormat key_format) {
  v1::RequestConfig config;
  config.set_num_layers(num_layers);
  config.set_head_dim(head_dim);
  config.set_block_size(block_size);
  config.set_key_format(key_format);
  return config;
}

v1::AppendChunk RandomChunk(std::mt19937_64& rng, const std::string& id,
                            int layer, int64_t first_position, int num_tokens,
                            const v1::RequestConfig& config,
                            uint64_t chunk_id) {
  v1::AppendChunk chunk;
  chunk.set_request_id(id);
  chunk.set_layer(layer);
  chunk.set_first_position(first_position);
  chunk.set_num_tokens(num_tokens);
  chunk.set_format(config.key_format());
  chunk.set_chunk_id(chunk_id);
  AppendValues(rng, config.key_format(),
               int64_t{num_tokens} * config.head_dim(), chunk.mutable_keys());
  if (config.key_format() == v1::FP8_E4M3) {
    std::uniform_real_distribution<float> scale(0.5f / 16, 2.0f / 16);
    for (int i = 0; i < num_tokens; ++i) chunk.add_scales(scale(rng));
  }
  return chunk;
}

v1::QueryRow RandomRow(std::mt19937_64& rng, const std::string& id, int layer,
                       int64_t position, int num_heads,
                       const v1::RequestConfig& config, v1::SelectMode mode,
                       int k, int m, bool return_scores,
                       v1::KeyFormat q_format) {
  if (q_format == v1::KEY_FORMAT_UNSPECIFIED) q_format = config.key_format();
  v1::QueryRow row;
  row.set_request_id(id);
  row.set_layer(layer);
  row.set_position(position);
  row.set_num_heads(num_heads);
  row.set_q_format(q_format);
  AppendValues(rng, q_format, int64_t{num_heads} * config.head_dim(),
               row.mutable_q());
  if (q_format == v1::FP8_E4M3) {
    std::uniform_real_distribution<float> scale(0.5f / 16, 2.0f / 16);
    for (int h = 0; h < num_heads; ++h) row.add_q_scales(scale(rng));
  }
  std::uniform_real_distribution<float> weight(-0.25f, 1.0f);
  for (int h = 0; h < num_heads; ++h) row.add_weights(weight(rng));
  row.set_mode(mode);
  row.set_k(k);
  row.set_m(m);
  row.set_return_scores(return_scores);
  return row;
}

}  // namespace hisa::testing
