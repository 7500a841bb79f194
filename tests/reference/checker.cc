#include "tests/reference/checker.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace hisa::ref {
namespace {

constexpr double kUnitRoundoff = 1.0 / (1 << 24);

// Describes the first point where `result` disagrees with candidate set
// `blocks` under the rule, or nullopt when it passes.
std::optional<std::string> CheckAgainstBlocks(
    const RowOracle& oracle, const std::vector<int32_t>& returned,
    const std::vector<int64_t>& blocks, const Tolerance& tol) {
  const int64_t t = oracle.position;
  const int64_t bs = oracle.block_size;
  std::vector<int64_t> candidates;
  for (int64_t b : blocks) {
    for (int64_t s = b * bs; s < (b + 1) * bs && s <= t; ++s) {
      candidates.push_back(s);
    }
  }
  const std::string set_name =
      absl::StrCat("candidate blocks {", absl::StrJoin(blocks, ","), "}");
  const int64_t expected_count =
      std::min<int64_t>(oracle.k, static_cast<int64_t>(candidates.size()));
  if (static_cast<int64_t>(returned.size()) != expected_count) {
    return absl::StrCat("returned ", returned.size(),
                        " positions before padding, expected min(k=", oracle.k,
                        ", ", candidates.size(), " candidates) = ",
                        expected_count, " for ", set_name);
  }
  for (int32_t p : returned) {
    if (!std::binary_search(blocks.begin(), blocks.end(), p / bs)) {
      return absl::StrCat("position ", p, " (block ", p / bs,
                          ") is not a candidate of ", set_name);
    }
  }
  const std::vector<int32_t> expected =
      TopK(oracle.token_scores, candidates, oracle.k);
  if (expected == returned) return std::nullopt;

  double max_magnitude = 0;
  for (int64_t s : candidates) {
    max_magnitude = std::max(max_magnitude, oracle.token_magnitudes[s]);
  }
  const double tol_i = tol.token_rel * max_magnitude;
  double kth = INFINITY;
  for (int32_t p : expected) kth = std::min(kth, oracle.token_scores[p]);

  // Walk the symmetric difference in position order.
  size_t i = 0, j = 0;
  while (i < returned.size() || j < expected.size()) {
    int32_t p;
    bool in_result;
    if (j == expected.size() ||
        (i < returned.size() && returned[i] < expected[j])) {
      p = returned[i++];
      in_result = true;
    } else if (i == returned.size() || expected[j] < returned[i]) {
      p = expected[j++];
      in_result = false;
    } else {
      ++i;
      ++j;
      continue;
    }
    const double score = oracle.token_scores[p];
    if (tol.exact_ties || std::fabs(score - kth) > tol_i) {
      return absl::StrCat(
          "first differing position ", p, " is ",
          in_result ? "returned but not in the oracle's top-k"
                    : "in the oracle's top-k but not returned",
          ": oracle I = ", score, ", oracle k-th score = ", kth,
          ", |diff| = ", std::fabs(score - kth), ", tol_I = ", tol_i,
          tol.exact_ties ? " (exact ties required)" : "", "; ", set_name);
    }
  }
  return std::nullopt;
}

// Calls visit(chosen) for every `r`-subset of `pool` (in lexicographic index
// order) until it returns true; returns whether any did.
template <typename Visit>
bool ForEachSubset(const std::vector<int64_t>& pool, int64_t r, Visit visit) {
  const int64_t n = static_cast<int64_t>(pool.size());
  if (r < 0 || r > n) return false;
  std::vector<int64_t> idx(r);
  for (int64_t i = 0; i < r; ++i) idx[i] = i;
  std::vector<int64_t> chosen(r);
  while (true) {
    for (int64_t i = 0; i < r; ++i) chosen[i] = pool[idx[i]];
    if (visit(chosen)) return true;
    int64_t i = r - 1;
    while (i >= 0 && idx[i] == n - r + i) --i;
    if (i < 0) return false;
    ++idx[i];
    for (int64_t j = i + 1; j < r; ++j) idx[j] = idx[j - 1] + 1;
  }
}

// C(n, r), saturating at `cap` + 1.
int64_t Binomial(int64_t n, int64_t r, int64_t cap) {
  if (r < 0 || r > n) return 0;
  r = std::min(r, n - r);
  double value = 1;
  for (int64_t i = 1; i <= r; ++i) {
    value = value * static_cast<double>(n - r + i) / static_cast<double>(i);
    if (value > static_cast<double>(cap)) return cap + 1;
  }
  return static_cast<int64_t>(std::llround(value));
}

}  // namespace

Tolerance Fp32Tolerance(int head_dim, int num_heads, int block_size) {
  Tolerance tol;
  tol.token_rel = (head_dim + num_heads + 8) * kUnitRoundoff;
  tol.block_rel = (block_size + head_dim + num_heads + 8) * kUnitRoundoff;
  return tol;
}

Tolerance ExactTolerance() {
  Tolerance tol;
  tol.exact_ties = true;
  return tol;
}

testing::AssertionResult CheckRow(const RowOracle& oracle,
                                  const RowResult& result,
                                  const Tolerance& tol,
                                  absl::string_view context) {
  const int64_t t = oracle.position;
  const int64_t bs = oracle.block_size;
  const int64_t c = t / bs;
  const std::string where = absl::StrCat(
      context, " [", oracle.mode == SelectMode::kDense ? "DENSE" : "HISA",
      " t=", t, " k=", oracle.k, " m=", oracle.m, " B=", bs, "]: ");
  auto fail = [&](const std::string& why) {
    return testing::AssertionFailure() << where << why;
  };

  if (!result.status.ok()) {
    return fail(absl::StrCat("engine status ", result.status.ToString()));
  }
  if (static_cast<int64_t>(result.positions.size()) != oracle.k) {
    return fail(absl::StrCat("expected exactly k=", oracle.k,
                             " entries, got ", result.positions.size()));
  }
  // Structure: ascending positions in [0, t], then only -1.
  std::vector<int32_t> returned;
  for (size_t i = 0; i < result.positions.size(); ++i) {
    const int32_t p = result.positions[i];
    if (p == -1) continue;
    if (i > 0 && result.positions[i - 1] == -1) {
      return fail(absl::StrCat("position ", p, " at index ", i,
                               " follows -1 padding"));
    }
    if (p < 0 || p > t) {
      return fail(absl::StrCat("position ", p, " at index ", i,
                               " is outside [0, t=", t, "]"));
    }
    if (!returned.empty() && returned.back() >= p) {
      return fail(absl::StrCat(
          "positions not strictly ascending at index ", i, ": ",
          returned.back(), " then ", p,
          returned.back() == p ? " (repeated position)" : ""));
    }
    returned.push_back(p);
  }
  // Scores of returned positions, when present.
  if (!result.scores.empty()) {
    if (result.scores.size() != result.positions.size()) {
      return fail(absl::StrCat("scores has ", result.scores.size(),
                               " entries, positions ", result.positions.size()));
    }
    for (size_t i = 0; i < result.positions.size(); ++i) {
      const int32_t p = result.positions[i];
      const double got = result.scores[i];
      if (p == -1) {
        if (!std::isnan(got)) {
          return fail(absl::StrCat("padding score at index ", i,
                                   " is ", got, ", expected NaN"));
        }
        continue;
      }
      const double want = oracle.token_scores[p];
      // Scores travel as float32: allow that final rounding on top.
      const double allowed = tol.token_rel * oracle.token_magnitudes[p] +
                             std::fabs(want) * kUnitRoundoff;
      if (!(std::fabs(got - want) <= allowed)) {
        return fail(absl::StrCat("score of position ", p, " is ", got,
                                 ", oracle I = ", want, ", |diff| = ",
                                 std::fabs(got - want), " > tol ", allowed));
      }
    }
  }

  // Admissible block sets.
  std::vector<int64_t> forced;  // blocks chosen in every admissible set
  std::vector<int64_t> ambiguous;
  int64_t need = 0;  // how many of `ambiguous` an admissible set takes
  std::string threshold_note;
  if (oracle.mode == SelectMode::kDense || c + 1 <= oracle.m) {
    forced = oracle.chosen_blocks;
  } else {
    const int64_t free_places = std::max(0, oracle.m - 2);
    std::vector<int64_t> others;
    for (int64_t b = 1; b < c; ++b) others.push_back(b);
    std::sort(others.begin(), others.end(), [&](int64_t a, int64_t b) {
      if (oracle.block_scores[a] != oracle.block_scores[b]) {
        return oracle.block_scores[a] > oracle.block_scores[b];
      }
      return a < b;
    });
    forced = {0, c};
    if (free_places > 0) {
      double max_magnitude = 0, max_copy_magnitude = 0;
      for (int64_t b : others) {
        max_magnitude = std::max(max_magnitude, oracle.block_magnitudes[b]);
        if (!oracle.block_copy_magnitudes.empty()) {
          max_copy_magnitude =
              std::max(max_copy_magnitude, oracle.block_copy_magnitudes[b]);
        }
      }
      const double tol_j = tol.block_rel * max_magnitude +
                           tol.block_copy_rel * max_copy_magnitude;
      const double jm = oracle.block_scores[others[free_places - 1]];
      if (tol_j == 0) {
        // Exactly computed scores: exact ties follow the lower-index rule.
        forced = oracle.chosen_blocks;
      } else {
        for (int64_t b : others) {
          const double j = oracle.block_scores[b];
          if (j > jm + tol_j) {
            forced.push_back(b);
          } else if (j >= jm - tol_j) {
            ambiguous.push_back(b);
          }
        }
        need = free_places - (static_cast<int64_t>(forced.size()) - 2);
      }
      threshold_note = absl::StrCat("m-th block J = ", jm, ", tol_J = ", tol_j,
                                    ", ", ambiguous.size(),
                                    " ambiguous blocks for ", need, " places");
    }
    std::sort(forced.begin(), forced.end());
  }

  // The result's own blocks narrow the enumeration.
  std::vector<int64_t> used;
  for (int32_t p : returned) {
    if (used.empty() || used.back() != p / bs) used.push_back(p / bs);
  }
  std::vector<int64_t> must_take;  // ambiguous blocks the result uses
  for (int64_t b : used) {
    if (std::binary_search(forced.begin(), forced.end(), b)) continue;
    if (std::find(ambiguous.begin(), ambiguous.end(), b) != ambiguous.end()) {
      must_take.push_back(b);
      continue;
    }
    return fail(absl::StrCat(
        "returned position in block ", b,
        ", which is in no admissible block set (oracle J = ",
        b <= c && !oracle.block_scores.empty() ? oracle.block_scores[b] : NAN,
        "; oracle blocks {", absl::StrJoin(oracle.chosen_blocks, ","), "}; ",
        threshold_note, ")"));
  }
  if (static_cast<int64_t>(must_take.size()) > need) {
    return fail(absl::StrCat("result uses ", must_take.size(),
                             " ambiguous blocks {", absl::StrJoin(must_take, ","),
                             "} but only ", need, " places remain; ",
                             threshold_note));
  }
  std::vector<int64_t> pool;
  for (int64_t b : ambiguous) {
    if (std::find(must_take.begin(), must_take.end(), b) == must_take.end()) {
      pool.push_back(b);
    }
  }
  const int64_t extra = need - static_cast<int64_t>(must_take.size());
  // The oracle's own choice is always admissible, and its failure message
  // is the most readable one.
  std::optional<std::string> oracle_failure =
      CheckAgainstBlocks(oracle, returned, oracle.chosen_blocks, tol);
  if (!oracle_failure) return testing::AssertionSuccess();
  if (ambiguous.empty()) return fail(*oracle_failure);

  // Whether the result fits the admissible set forced + must_take + pick.
  auto fits = [&](const std::vector<int64_t>& pick) {
    std::vector<int64_t> blocks = forced;
    blocks.insert(blocks.end(), must_take.begin(), must_take.end());
    blocks.insert(blocks.end(), pick.begin(), pick.end());
    std::sort(blocks.begin(), blocks.end());
    return !CheckAgainstBlocks(oracle, returned, blocks, tol).has_value();
  };
  // The least disturbing completion first: the `extra` pool blocks whose
  // best token scores lowest. A block that the result does not use can only
  // be in the engine's set if none of its tokens beat the result's (up to
  // tol), so whenever the engine chose an admissible set, this completion
  // fits too; it spares the enumeration below, which small k over many
  // nearly equal block means (random keys, bf16 block means) overflows.
  // (extra >= 0: must_take fits in need, checked above.)
  if (extra <= static_cast<int64_t>(pool.size())) {
    std::vector<std::pair<double, int64_t>> by_best;
    for (int64_t b : pool) {
      double best = -INFINITY;
      for (int64_t s = b * bs; s < (b + 1) * bs && s <= t; ++s) {
        best = std::max(best, oracle.token_scores[s]);
      }
      by_best.emplace_back(best, b);
    }
    std::sort(by_best.begin(), by_best.end());
    std::vector<int64_t> lowest;
    for (int64_t i = 0; i < extra; ++i) lowest.push_back(by_best[i].second);
    if (fits(lowest)) return testing::AssertionSuccess();
  }
  const int64_t combinations = Binomial(
      static_cast<int64_t>(pool.size()), extra, tol.max_block_sets);
  if (combinations > tol.max_block_sets) {
    return fail(absl::StrCat("too many admissible block sets to check (C(",
                             pool.size(), ", ", extra, ") > ",
                             tol.max_block_sets, "); ", threshold_note));
  }
  const bool any = ForEachSubset(pool, extra, fits);
  if (any) return testing::AssertionSuccess();
  return fail(absl::StrCat(*oracle_failure, " (and no other of ", combinations,
                           " admissible block sets fits; ", threshold_note,
                           ")"));
}

}  // namespace hisa::ref
