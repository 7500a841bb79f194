// Tests of the wire <-> engine translation and of the one status mapping.
#include "server/wire_conversion.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "proto/compact_positions.h"
#include "proto/status_codes.h"

namespace hisa {
namespace {

TEST(StatusMappingTest, EveryCodeKeepsItsMeaningAndName) {
  for (int code = 0; code <= 16; ++code) {
    const auto absl_code = static_cast<absl::StatusCode>(code);
    const grpc::StatusCode grpc_code = ToGrpcCode(absl_code);
    // Both follow google.rpc.Code.
    EXPECT_EQ(static_cast<int>(grpc_code), code);
    EXPECT_EQ(ToWireCode(absl_code), code);
    EXPECT_EQ(StatusCodeName(grpc_code), absl::StatusCodeToString(absl_code));
  }
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(99)),
            grpc::StatusCode::UNKNOWN);
  const grpc::Status status =
      ToGrpcStatus(absl::NotFoundError("request 'x' does not exist"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "request 'x' does not exist");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(WireConversionTest, ConfigDefaultsAndErrors) {
  v1::RequestConfig wire;
  wire.set_num_layers(61);
  wire.set_head_dim(128);
  wire.set_key_format(v1::FP8_E4M3);
  absl::StatusOr<RequestConfig> config = ConfigFromWire(wire);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_layers, 61);
  EXPECT_EQ(config->block_size, 128);
  EXPECT_EQ(config->pooling, BlockPooling::kMean);
  EXPECT_EQ(config->key_format, KeyFormat::kFp8E4M3);

  v1::RequestConfig round;
  ConfigToWire(*config, &round);
  EXPECT_EQ(round.block_size(), 128u);
  EXPECT_EQ(round.key_format(), v1::FP8_E4M3);
  EXPECT_EQ(round.pooling(), v1::MEAN);

  wire.set_key_format(v1::KEY_FORMAT_UNSPECIFIED);
  config = ConfigFromWire(wire);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("key_format"), absl::string_view::npos)
      << config.status();
  wire.set_key_format(v1::BF16);
  wire.set_num_layers(std::numeric_limits<uint32_t>::max());
  config = ConfigFromWire(wire);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("4294967295"), absl::string_view::npos);
  wire.set_num_layers(2);
  wire.set_pooling(static_cast<v1::BlockPooling>(7));
  EXPECT_EQ(ConfigFromWire(wire).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WireConversionTest, RowDefaultsAndViews) {
  v1::QueryRow wire;
  wire.set_request_id("req");
  wire.set_layer(3);
  wire.set_position(99);
  wire.set_num_heads(2);
  wire.set_q_format(v1::FP32);
  wire.set_q(std::string(2 * 16 * 4, '\0'));
  wire.add_weights(1.0f);
  wire.add_weights(-0.5f);
  absl::StatusOr<QueryRow> row = RowFromWire(wire);
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->request_id, "req");
  EXPECT_EQ(row->mode, SelectMode::kHisa);
  EXPECT_EQ(row->k, 2048);
  EXPECT_EQ(row->m, 64);
  EXPECT_EQ(row->q.data(), reinterpret_cast<const uint8_t*>(wire.q().data()));
  EXPECT_EQ(row->weights.size(), 2u);

  wire.set_mode(v1::DENSE);
  wire.set_k(16);
  wire.set_m(4);
  row = RowFromWire(wire);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->mode, SelectMode::kDense);
  EXPECT_EQ(row->k, 16);
  EXPECT_EQ(row->m, 4);

  wire.set_mode(static_cast<v1::SelectMode>(9));
  EXPECT_EQ(RowFromWire(wire).status().code(),
            absl::StatusCode::kInvalidArgument);
  wire.set_mode(v1::AUTO);
  wire.set_k(0x80000000u);
  EXPECT_EQ(RowFromWire(wire).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WireConversionTest, ResultEncodesPositionsAndScoresOfSelectedOnly) {
  RowResult result;
  result.mode_used = SelectMode::kDense;
  result.positions = {3, 5, 6, 200, -1, -1};
  result.scores = {1.0f, 2.0f, 3.0f, 4.0f, std::nanf(""), std::nanf("")};
  v1::RowResult wire;
  RowResultToWire(result, /*k=*/6, /*block_size=*/64, &wire);
  EXPECT_EQ(wire.code(), 0);
  EXPECT_EQ(wire.mode_used(), v1::DENSE);
  EXPECT_EQ(wire.k(), 6u);
  ASSERT_EQ(wire.scores_size(), 4);
  EXPECT_EQ(wire.scores(3), 4.0f);
  absl::StatusOr<std::vector<int32_t>> decoded =
      DecodePositions(wire.positions(), 6);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, result.positions);

  RowResult failed;
  failed.status = absl::FailedPreconditionError("position 9 not yet appended");
  v1::RowResult wire_failed;
  RowResultToWire(failed, 6, 64, &wire_failed);
  EXPECT_EQ(wire_failed.code(), static_cast<int>(grpc::FAILED_PRECONDITION));
  EXPECT_EQ(wire_failed.message(), "position 9 not yet appended");
  EXPECT_FALSE(wire_failed.has_positions());
}

TEST(WireConversionTest, ChunkViews) {
  v1::AppendChunk wire;
  wire.set_request_id("r");
  wire.set_layer(1);
  wire.set_first_position(10);
  wire.set_num_tokens(2);
  wire.set_format(v1::FP8_E4M3);
  wire.set_keys(std::string(2 * 16, '\x10'));
  wire.add_scales(0.5f);
  wire.add_scales(0.25f);
  absl::StatusOr<KeyChunk> chunk = ChunkFromWire(wire);
  ASSERT_TRUE(chunk.ok());
  EXPECT_EQ(chunk->first_position, 10);
  EXPECT_EQ(chunk->num_tokens, 2);
  EXPECT_EQ(chunk->keys.size(), 32u);
  EXPECT_EQ(chunk->scales[1], 0.25f);
  wire.set_format(v1::KEY_FORMAT_UNSPECIFIED);
  EXPECT_EQ(ChunkFromWire(wire).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace hisa
