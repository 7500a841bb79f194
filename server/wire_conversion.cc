#include "server/wire_conversion.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "proto/compact_positions.h"
#include "proto/status_codes.h"

namespace hisa {
namespace {

absl::StatusOr<int> ToInt(uint32_t value, const char* field) {
  if (value > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " = ", value, " is out of range"));
  }
  return static_cast<int>(value);
}

absl::StatusOr<KeyFormat> FormatFromWire(v1::KeyFormat format,
                                         const char* field) {
  switch (format) {
    case v1::FP8_E4M3:
      return KeyFormat::kFp8E4M3;
    case v1::BF16:
      return KeyFormat::kBf16;
    case v1::FP32:
      return KeyFormat::kFp32;
    default:
      break;
  }
  const std::string& name = v1::KeyFormat_Name(format);
  return absl::InvalidArgumentError(absl::StrCat(
      field, " must be FP8_E4M3, BF16 or FP32, got ",
      name.empty() ? "an unknown value" : name, " (", static_cast<int>(format),
      ")"));
}

v1::KeyFormat FormatToWire(KeyFormat format) {
  switch (format) {
    case KeyFormat::kFp8E4M3:
      return v1::FP8_E4M3;
    case KeyFormat::kBf16:
      return v1::BF16;
    case KeyFormat::kFp32:
      return v1::FP32;
  }
  return v1::KEY_FORMAT_UNSPECIFIED;
}

absl::Span<const uint8_t> BytesOf(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()),
                                   s.size());
}

absl::Span<const float> FloatsOf(
    const google::protobuf::RepeatedField<float>& values) {
  return absl::Span<const float>(values.data(), values.size());
}

}  // namespace

absl::StatusOr<RequestConfig> ConfigFromWire(const v1::RequestConfig& wire) {
  RequestConfig config;
  ASSIGN_OR_RETURN(config.num_layers, ToInt(wire.num_layers(), "num_layers"));
  ASSIGN_OR_RETURN(config.head_dim, ToInt(wire.head_dim(), "head_dim"));
  ASSIGN_OR_RETURN(config.block_size, ToInt(wire.block_size(), "block_size"));
  if (config.block_size == 0) config.block_size = kDefaultBlockSize;
  ASSIGN_OR_RETURN(config.key_format,
                   FormatFromWire(wire.key_format(), "key_format"));
  switch (wire.pooling()) {
    case v1::BLOCK_POOLING_UNSPECIFIED:
    case v1::MEAN:
      config.pooling = BlockPooling::kMean;
      break;
    case v1::MAX:
      config.pooling = BlockPooling::kMax;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("pooling must be MEAN or MAX, got ",
                       static_cast<int>(wire.pooling())));
  }
  return config;
}

void ConfigToWire(const RequestConfig& config, v1::RequestConfig* wire) {
  wire->set_num_layers(static_cast<uint32_t>(config.num_layers));
  wire->set_head_dim(static_cast<uint32_t>(config.head_dim));
  wire->set_block_size(static_cast<uint32_t>(config.block_size));
  wire->set_key_format(FormatToWire(config.key_format));
  wire->set_pooling(config.pooling == BlockPooling::kMax ? v1::MAX : v1::MEAN);
}

absl::StatusOr<KeyChunk> ChunkFromWire(const v1::AppendChunk& wire) {
  KeyChunk chunk;
  chunk.request_id = wire.request_id();
  ASSIGN_OR_RETURN(chunk.layer, ToInt(wire.layer(), "layer"));
  chunk.first_position = wire.first_position();
  chunk.num_tokens = wire.num_tokens();
  ASSIGN_OR_RETURN(chunk.format, FormatFromWire(wire.format(), "format"));
  chunk.keys = BytesOf(wire.keys());
  chunk.scales = FloatsOf(wire.scales());
  return chunk;
}

absl::StatusOr<QueryRow> RowFromWire(const v1::QueryRow& wire) {
  QueryRow row;
  row.request_id = wire.request_id();
  ASSIGN_OR_RETURN(row.layer, ToInt(wire.layer(), "layer"));
  row.position = wire.position();
  ASSIGN_OR_RETURN(row.num_heads, ToInt(wire.num_heads(), "num_heads"));
  ASSIGN_OR_RETURN(row.q_format, FormatFromWire(wire.q_format(), "q_format"));
  row.q = BytesOf(wire.q());
  row.q_scales = FloatsOf(wire.q_scales());
  row.weights = FloatsOf(wire.weights());
  switch (wire.mode()) {
    case v1::SELECT_MODE_UNSPECIFIED:
    case v1::HISA:
      row.mode = SelectMode::kHisa;
      break;
    case v1::DENSE:
      row.mode = SelectMode::kDense;
      break;
    case v1::AUTO:
      row.mode = SelectMode::kAuto;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("mode must be DENSE, HISA or AUTO, got ",
                       static_cast<int>(wire.mode())));
  }
  ASSIGN_OR_RETURN(row.k, ToInt(wire.k(), "k"));
  if (row.k == 0) row.k = kMaxK;
  ASSIGN_OR_RETURN(row.m, ToInt(wire.m(), "m"));
  if (row.m == 0) row.m = kDefaultM;
  row.return_scores = wire.return_scores();
  return row;
}

void RowResultToWire(const RowResult& result, int k, int block_size,
                     v1::RowResult* wire) {
  wire->set_code(ToWireCode(result.status.code()));
  if (!result.status.ok()) {
    wire->set_message(std::string(result.status.message()));
    return;
  }
  wire->set_mode_used(result.mode_used == SelectMode::kDense ? v1::DENSE
                                                              : v1::HISA);
  wire->set_k(static_cast<uint32_t>(k));
  EncodePositions(result.positions, block_size, wire->mutable_positions());
  if (!result.scores.empty()) {
    const uint32_t count = wire->positions().count();
    wire->mutable_scores()->Reserve(static_cast<int>(count));
    for (uint32_t i = 0; i < count && i < result.scores.size(); ++i) {
      wire->add_scores(result.scores[i]);
    }
  }
}

void RequestInfoToWire(const RequestInfo& info, absl::Time now,
                       v1::RequestInfo* wire) {
  wire->set_request_id(info.id);
  ConfigToWire(info.config, wire->mutable_config());
  for (int64_t length : info.layer_lengths) wire->add_layer_lengths(length);
  wire->set_bytes_reserved(info.bytes_reserved);
  wire->set_idle_seconds(
      std::max(0.0, absl::ToDoubleSeconds(now - info.last_used)));
}

}  // namespace hisa
