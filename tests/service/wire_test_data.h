// Random wire messages for the service tests: request configs, key chunks
// and query rows with finite values in every format.
//
//   std::mt19937_64 rng(hisa::ref::TestSeed());  // tests/reference/test_seed.h
//   hisa::v1::AppendChunk chunk = hisa::testing::RandomChunk(
//       rng, "req", /*layer=*/0, /*first=*/0, /*n=*/256, config);
//   hisa::v1::QueryRow row = hisa::testing::RandomRow(
//       rng, "req", /*layer=*/0, /*position=*/255, /*num_heads=*/8, config,
//       hisa::v1::HISA, /*k=*/64, /*m=*/8);
//
// Contracts: keys are N(0, 1)-ish values encoded in config.key_format (fp8
// with per-token scales in [0.5, 2)); queries likewise in `q_format`
// (default: the key format); weights in [-0.25, 1). The same rng state
// gives the same message.
#ifndef HISA_TESTS_SERVICE_WIRE_TEST_DATA_H_
#define HISA_TESTS_SERVICE_WIRE_TEST_DATA_H_

#include <cstdint>
#include <random>
#include <string>

#include "proto/hisa.pb.h"

namespace hisa::testing {

v1::RequestConfig MakeConfig(int num_layers, int head_dim, int block_size,
                             v1::KeyFormat key_format);

v1::AppendChunk RandomChunk(std::mt19937_64& rng, const std::string& id,
                            int layer, int64_t first_position, int num_tokens,
                            const v1::RequestConfig& config,
                            uint64_t chunk_id = 0);

v1::QueryRow RandomRow(std::mt19937_64& rng, const std::string& id, int layer,
                       int64_t position, int num_heads,
                       const v1::RequestConfig& config, v1::SelectMode mode,
                       int k, int m, bool return_scores = false,
                       v1::KeyFormat q_format = v1::KEY_FORMAT_UNSPECIFIED);

}  // namespace hisa::testing

#endif  // HISA_TESTS_SERVICE_WIRE_TEST_DATA_H_
