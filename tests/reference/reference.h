// Float64 reference of SPEC 3-4: the test oracle for DENSE and HISA selection.
//
// Written straight from the SPEC and meant to be checked by reading: keys and
// queries are decoded from their wire bytes by their bit fields (not through
// kernels/formats.h), every score is a plain double loop, every choice is a
// full sort. It is slow on purpose and never on the serving path.
//
//   hisa::ref::LayerOracle layer(/*head_dim=*/128, /*block_size=*/128,
//                                hisa::BlockPooling::kMean);
//   ASSERT_OK(layer.Append(chunk));               // same chunks as the engine
//   absl::StatusOr<hisa::ref::RowOracle> oracle = layer.Select(row);
//   EXPECT_TRUE(hisa::ref::CheckRow(*oracle, engine_result, tol, "ctx"));
//
// Definitions (SPEC 3, 4): for a query row at position t with heads h,
//   I(t, s) = sum_h w_h * ReLU(q_h . k_s)                   s = 0..t
//   r_b     = mean (or element-wise max for BlockPooling::kMax) of the keys of
//             block b that are in the cache
//   J(t, b) = sum_h w_h * ReLU(q_h . r_b)                   b = 0..c, c = t / B
//   chosen  = every block when c + 1 <= m; else blocks 0 and c plus the
//             max(0, m - 2) other blocks of largest J (ties: lower index)
//   T_t     = the k candidates (tokens s <= t in chosen blocks; all s <= t for
//             DENSE) of largest I (ties: lower position), listed ascending,
//             then -1 up to k entries.
#ifndef HISA_TESTS_REFERENCE_REFERENCE_H_
#define HISA_TESTS_REFERENCE_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/types.h"

namespace hisa::ref {

// Exact value of an OCP e4m3fn byte: sign, 4 exponent bits (bias 7), 3
// mantissa bits; exponent field 0 is subnormal; 0x7F and 0xFF are NaN.
double DecodeFp8E4M3(uint8_t byte);
// Exact value of a bfloat16 bit pattern (the top half of an IEEE binary32).
double DecodeBf16(uint16_t bits);
// Exact value of an IEEE binary32 bit pattern, from its fields.
double DecodeFp32(uint32_t bits);

// Decodes `groups * group_size` values of `format` (little endian, packed)
// and, for kFp8E4M3, multiplies group g by scales[g] (keys: one group per
// token; queries: one group per head). Returns INVALID_ARGUMENT when the byte
// or scale count does not match or the format is unknown.
absl::StatusOr<std::vector<double>> Dequantize(KeyFormat format,
                                               absl::Span<const uint8_t> bytes,
                                               absl::Span<const float> scales,
                                               int64_t groups, int group_size);

// The oracle's answer for one query row, with everything the checker needs.
struct RowOracle {
  SelectMode mode = SelectMode::kHisa;  // kDense or kHisa (kAuto -> kHisa)
  int64_t position = 0;                 // t
  int k = 0;
  int m = 0;
  int block_size = 0;
  // I(t, s) for s = 0..t, and sum_h |w_h| sum_d |q_hd k_sd| (the scale of
  // fp32 rounding error in I(t, s)).
  std::vector<double> token_scores;
  std::vector<double> token_magnitudes;
  // J(t, b) for b = 0..c, and sum_h |w_h| sum_d |q_hd| a_bd where a_bd is the
  // mean (kMean) or max (kMax) of |k_sd| over the block: the scale of fp32
  // rounding error in J(t, b), including the error of pooling itself.
  // Filled for kHisa only.
  std::vector<double> block_scores;
  std::vector<double> block_magnitudes;
  // sum_h |w_h| sum_d |q_hd| |r_bd|, r_b the block's representative: the
  // scale of the error of scoring a lower-precision copy of r_b (SPEC 4.2),
  // whose every element is within a relative eps of r_bd. Filled for kHisa.
  std::vector<double> block_copy_magnitudes;
  // Chosen blocks, ascending (every block 0..c for kDense).
  std::vector<int64_t> chosen_blocks;
  // Exactly k entries: selected positions ascending, then -1.
  std::vector<int32_t> positions;
  // I(t, positions[i]); NaN for padding.
  std::vector<double> scores;

  int64_t num_blocks() const { return position / block_size + 1; }
};

// Top-k of `candidates` (positions, any order) by `token_scores` (indexed by
// position), ties to the lower position; returns the chosen positions
// ascending, without padding.
std::vector<int32_t> TopK(absl::Span<const double> token_scores,
                          absl::Span<const int64_t> candidates, int k);

// Block choice of SPEC 4.2 step 4 from J(t, 0..c): every block when
// c + 1 <= m; else 0, c and the max(0, m - 2) best others (ties: lower
// index). Returns block indices ascending.
std::vector<int64_t> ChooseBlocks(absl::Span<const double> block_scores, int m);

// Dequantized keys of one (request, layer) and the oracle over them.
// Not thread-safe for concurrent Append; Select is const.
class LayerOracle {
 public:
  LayerOracle(int head_dim, int block_size, BlockPooling pooling);

  // Appends chunk.num_tokens keys; chunk.first_position must equal length()
  // (tests feed the oracle only new tokens). INVALID_ARGUMENT on shape
  // mismatch or a position other than length().
  absl::Status Append(const KeyChunk& chunk);

  int64_t length() const {
    return static_cast<int64_t>(keys_.size()) / head_dim_;
  }
  int head_dim() const { return head_dim_; }
  int block_size() const { return block_size_; }
  // Key of token s, head_dim doubles.
  const double* key(int64_t s) const { return keys_.data() + s * head_dim_; }

  // Representative r_b of block b over the tokens of the block in the cache
  // (b * B <= length() - 1 required), and a_bd (mean or max of |k_sd|).
  std::vector<double> Representative(int64_t b) const;
  std::vector<double> AbsPooled(int64_t b) const;

  // The oracle for `row` (its request_id and layer are ignored). Uses
  // row.position, num_heads, q_format, q, q_scales, weights, mode, k, m.
  // INVALID_ARGUMENT when the row does not fit: position outside
  // [0, length()), shapes, k < 1, m < 1 for HISA, unknown mode or format.
  absl::StatusOr<RowOracle> Select(const QueryRow& row) const;

 private:
  const int head_dim_;
  const int block_size_;
  const BlockPooling pooling_;
  std::vector<double> keys_;  // length() x head_dim_
};

}  // namespace hisa::ref

#endif  // HISA_TESTS_REFERENCE_REFERENCE_H_
