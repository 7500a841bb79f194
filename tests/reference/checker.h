// The SPEC 4.4 correctness rule: is an engine's result for one query row
// right against the float64 oracle (reference.h), up to rounding?
//
//   hisa::ref::Tolerance tol = hisa::ref::Fp32Tolerance(D, H, B);
//   EXPECT_TRUE(hisa::ref::CheckRow(oracle, result, tol,
//                                   absl::StrCat("seed=", seed, " row=", i)));
//
// The rule (FAISS TestGpuSelect style, SPEC 4.3-4.4). A result passes when
//   1. its status is OK and it has exactly k positions;
//   2. the positions are strictly ascending, each in [0, t], followed only by
//      -1 padding, and their number is min(k, number of candidates);
//   3. every position is a candidate (in a chosen block for HISA);
//   4. the returned set R and the oracle's top-k T of the same candidate set
//      differ only in positions whose oracle score is within tol_I of the
//      k-th largest oracle score of that set (with exact_ties: R == T);
//   5. returned scores, when present, are within token_rel * magnitude(p)
//      (plus the float32 rounding of the score itself) of the oracle's
//      I(t, p), and NaN for padding.
// HISA's block choice is itself a rounding-sensitive top-m: blocks whose
// oracle J is within tol_J of the m-th chosen block's J may be swapped. The
// checker handles that exactly: it enumerates every admissible block set (the
// certain blocks plus a choice among the ambiguous ones, constrained to
// contain the blocks the result actually uses) and accepts when the result
// passes 2-5 for at least one of them. More than max_block_sets combinations
// fail loudly rather than being skipped.
//
// Tolerances per format. The engine must decode keys and queries exactly
// (fp8 and bf16 are exact in fp32; the fp8 scale product rounds once) and
// accumulate in fp32. With u = 2^-24, the classic bound on a dot product of
// n terms is n*u*sum|terms|; summed over D, then over H, plus the decode and
// final roundings, |I_fp32 - I| <= (D + H + 8) u * sum_h |w_h| sum_d
// |q_hd k_sd| for every key format (the format changes the magnitude, not
// the relative bound). The block mean adds an fp32 sum of up to B keys:
// |J_fp32 - J| <= (B + D + H + 8) u * sum_h |w_h| sum_d |q_hd| mean_s|k_sd|.
// Fp32Tolerance returns these (about 1.2e-5 and 1.9e-5 for D = 128, H = 64,
// B = 128). Backends that use reduced precision (tensor cores) pass larger
// relative tolerances explicitly; one that scores a bf16 copy of the block
// means adds block_copy_rel = 2^-8 of their own magnitude (below).
#ifndef HISA_TESTS_REFERENCE_CHECKER_H_
#define HISA_TESTS_REFERENCE_CHECKER_H_

#include "absl/strings/string_view.h"

#include "gtest/gtest.h"
#include "kernels/types.h"
#include "tests/reference/reference.h"

namespace hisa::ref {

struct Tolerance {
  // tol_I = token_rel * max over candidates s of token_magnitudes[s].
  double token_rel = 0;
  // tol_J = block_rel * max over non-forced eligible blocks of
  // block_magnitudes[b], plus block_copy_rel * the same max of
  // block_copy_magnitudes[b] (a backend that scores a lower-precision copy of
  // the block representatives, each element within a relative
  // block_copy_rel of the exact one: bf16 copies, 2^-8).
  double block_rel = 0;
  double block_copy_rel = 0;
  // When true the result must be exactly the oracle's top-k of the candidate
  // set (ties to the lower position), not merely equal up to tol_I. For
  // inputs whose scores fp32 computes exactly (small integers).
  bool exact_ties = false;
  // Cap on enumerated admissible block sets.
  int max_block_sets = 4096;
};

// The fp32-accumulation bound described above.
Tolerance Fp32Tolerance(int head_dim, int num_heads, int block_size);
// Zero tolerance and exact tie order.
Tolerance ExactTolerance();

// Checks `result` against `oracle` by the rule above. `context` (seed, row,
// shape) is prefixed to every failure message.
testing::AssertionResult CheckRow(const RowOracle& oracle,
                                  const RowResult& result,
                                  const Tolerance& tol,
                                  absl::string_view context);

}  // namespace hisa::ref

#endif  // HISA_TESTS_REFERENCE_CHECKER_H_
