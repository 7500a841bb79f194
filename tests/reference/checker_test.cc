// Tests of the SPEC 4.4 checker on hand-built oracles: it must accept every
// legal answer (including rounding swaps) and reject each kind of wrong one.
#include "tests/reference/checker.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/reference/reference.h"
#include "tests/reference/test_seed.h"

namespace hisa::ref {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The oracle's top-k over `blocks`, -1 padded to k.
std::vector<int32_t> TopKOf(const RowOracle& o, std::vector<int64_t> blocks) {
  std::vector<int64_t> candidates;
  for (int64_t b : blocks) {
    for (int64_t s = b * o.block_size;
         s < (b + 1) * o.block_size && s <= o.position; ++s) {
      candidates.push_back(s);
    }
  }
  std::vector<int32_t> out = TopK(o.token_scores, candidates, o.k);
  out.resize(o.k, -1);
  return out;
}

// An oracle over given scores (token and block magnitudes 1, so tol_I =
// token_rel and tol_J = block_rel).
RowOracle MakeOracle(std::vector<double> token_scores, int block_size,
                     SelectMode mode, int k, int m,
                     std::vector<double> block_scores = {}) {
  RowOracle o;
  o.mode = mode;
  o.position = static_cast<int64_t>(token_scores.size()) - 1;
  o.k = k;
  o.m = m;
  o.block_size = block_size;
  o.token_scores = std::move(token_scores);
  o.token_magnitudes.assign(o.token_scores.size(), 1.0);
  const int64_t c = o.position / block_size;
  if (mode == SelectMode::kDense) {
    o.chosen_blocks.resize(c + 1);
    std::iota(o.chosen_blocks.begin(), o.chosen_blocks.end(), 0);
  } else {
    o.block_scores = std::move(block_scores);
    o.block_magnitudes.assign(o.block_scores.size(), 1.0);
    o.chosen_blocks = ChooseBlocks(o.block_scores, m);
  }
  o.positions = TopKOf(o, o.chosen_blocks);
  for (int32_t p : o.positions) {
    o.scores.push_back(p < 0 ? kNaN : o.token_scores[p]);
  }
  return o;
}

RowResult ResultOf(std::vector<int32_t> positions) {
  RowResult r;
  r.positions = std::move(positions);
  return r;
}

Tolerance Tol(double token_rel, double block_rel) {
  Tolerance tol;
  tol.token_rel = token_rel;
  tol.block_rel = block_rel;
  return tol;
}

TEST(CheckerTest, AcceptsTheOraclesOwnAnswer) {
  std::mt19937_64 rng(TestSeed() + 2);
  SCOPED_TRACE(SeedNote());
  std::normal_distribution<double> normal;
  for (int trial = 0; trial < 50; ++trial) {
    const int t = static_cast<int>(rng() % 300);
    std::vector<double> scores(t + 1), blocks(t / 16 + 1);
    for (double& s : scores) s = normal(rng);
    for (double& j : blocks) j = normal(rng);
    const int k = 1 + static_cast<int>(rng() % 40);
    const int m = (k + 15) / 16 + static_cast<int>(rng() % 4);
    for (SelectMode mode : {SelectMode::kDense, SelectMode::kHisa}) {
      RowOracle o = MakeOracle(scores, 16, mode, k, m, blocks);
      RowResult r = ResultOf(o.positions);
      r.scores.assign(o.scores.begin(), o.scores.end());
      EXPECT_TRUE(CheckRow(o, r, Tol(0, 0), "own"));
      EXPECT_TRUE(CheckRow(o, r, ExactTolerance(), "own"));
    }
  }
}

TEST(CheckerTest, RejectsBadStatusAndShape) {
  RowOracle o = MakeOracle({5, 4, 3, 2, 1}, 16, SelectMode::kDense, 3, 1);
  ASSERT_EQ(o.positions, (std::vector<int32_t>{0, 1, 2}));
  RowResult bad = ResultOf(o.positions);
  bad.status = absl::InternalError("boom");
  EXPECT_FALSE(CheckRow(o, bad, Tol(0, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1}), Tol(0, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1, 2, -1}), Tol(0, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({1, 0, 2}), Tol(0, 0), ""));   // order
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1, 1}), Tol(0, 0), ""));   // repeat
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1, -1}), Tol(9, 9), ""));  // count
  EXPECT_FALSE(CheckRow(o, ResultOf({0, -1, 2}), Tol(9, 9), ""));  // hole
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1, 5}), Tol(9, 9), ""));   // > t
  EXPECT_FALSE(CheckRow(o, ResultOf({-2, 0, 1}), Tol(9, 9), ""));
}

TEST(CheckerTest, PaddingWhenFewerThanKEligible) {
  RowOracle o = MakeOracle({1, 2, 3}, 16, SelectMode::kDense, 5, 1);
  EXPECT_TRUE(CheckRow(o, ResultOf({0, 1, 2, -1, -1}), Tol(0, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1, -1, -1, -1}), Tol(9, 9), ""));
  RowResult with_scores = ResultOf({0, 1, 2, -1, -1});
  with_scores.scores = {1, 2, 3, NAN, NAN};
  EXPECT_TRUE(CheckRow(o, with_scores, Tol(0, 0), ""));
  with_scores.scores[4] = 0;
  EXPECT_FALSE(CheckRow(o, with_scores, Tol(0, 0), ""));
}

TEST(CheckerTest, SwapsOnlyWithinToleranceOfTheKthScore) {
  // k = 2: top is {0 (9), 2 (5)}; position 3 scores 5 - 1e-7, position 1 is 1.
  RowOracle o =
      MakeOracle({9, 1, 5, 5 - 1e-7, 0}, 16, SelectMode::kDense, 2, 1);
  ASSERT_EQ(o.positions, (std::vector<int32_t>{0, 2}));
  EXPECT_TRUE(CheckRow(o, ResultOf({0, 3}), Tol(1e-6, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 3}), Tol(1e-8, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({0, 1}), Tol(1e-6, 0), ""));
  EXPECT_FALSE(CheckRow(o, ResultOf({2, 3}), Tol(1e-6, 0), ""));  // lost 9
  // Exact ties may swap under the plain rule but not with exact_ties.
  RowOracle tie = MakeOracle({9, 5, 1, 5}, 16, SelectMode::kDense, 2, 1);
  ASSERT_EQ(tie.positions, (std::vector<int32_t>{0, 1}));
  EXPECT_TRUE(CheckRow(tie, ResultOf({0, 3}), Tol(0, 0), ""));
  EXPECT_FALSE(CheckRow(tie, ResultOf({0, 3}), ExactTolerance(), ""));
}

TEST(CheckerTest, ScoresMustMatchTheOracle) {
  RowOracle o = MakeOracle({9, 1, 5}, 16, SelectMode::kDense, 2, 1);
  RowResult r = ResultOf({0, 2});
  r.scores = {9.0f, 5.0f + 1e-6f};
  EXPECT_TRUE(CheckRow(o, r, Tol(1e-5, 0), ""));
  EXPECT_FALSE(CheckRow(o, r, Tol(1e-7, 0), ""));
  r.scores = {9.0f};
  EXPECT_FALSE(CheckRow(o, r, Tol(1, 0), ""));
}

// 4 blocks of 16 (t = 63), m = 3: blocks 0 and 3 forced, one place for block
// 1 (J = 5) or block 2 (J = 5 + 1e-9, the oracle's choice).
struct AmbiguousBlocks {
  AmbiguousBlocks() {
    std::vector<double> scores(64, 0.0);
    for (int s = 0; s < 64; ++s) scores[s] = s % 7;
    scores[20] = 50;  // block 1 best token
    scores[40] = 40;  // block 2 best token
    oracle = MakeOracle(scores, 16, SelectMode::kHisa, 4, 3,
                        {1, 5, 5 + 1e-9, 0});
  }
  RowOracle oracle;
};

TEST(CheckerTest, AmbiguousBlockChoiceIsAcceptedOnlyWithinTolJ) {
  AmbiguousBlocks a;
  ASSERT_EQ(a.oracle.chosen_blocks, (std::vector<int64_t>{0, 2, 3}));
  const std::vector<int32_t> via_block1 = TopKOf(a.oracle, {0, 1, 3});
  ASSERT_NE(via_block1, a.oracle.positions);
  EXPECT_TRUE(CheckRow(a.oracle, ResultOf(a.oracle.positions), Tol(0, 1e-8), ""));
  EXPECT_TRUE(CheckRow(a.oracle, ResultOf(via_block1), Tol(0, 1e-8), ""));
  EXPECT_FALSE(CheckRow(a.oracle, ResultOf(via_block1), Tol(0, 1e-10), ""));
  EXPECT_FALSE(CheckRow(a.oracle, ResultOf(via_block1), Tol(0, 0), ""));
  // The DENSE answer uses both blocks 1 and 2: never a legal HISA answer here.
  const std::vector<int32_t> dense = TopKOf(a.oracle, {0, 1, 2, 3});
  EXPECT_FALSE(CheckRow(a.oracle, ResultOf(dense), Tol(0, 1e-8), ""));
}

// tol_J's second term scales block_copy_rel by the representatives' own
// magnitudes (a backend scoring a lower-precision copy of them).
TEST(CheckerTest, CopyToleranceScalesWithTheRepresentativesMagnitude) {
  AmbiguousBlocks a;
  const std::vector<int32_t> via_block1 = TopKOf(a.oracle, {0, 1, 3});
  auto copy_tol = [](double rel) {
    Tolerance tol;
    tol.block_copy_rel = rel;
    return tol;
  };
  // No copy magnitudes: the term is zero.
  EXPECT_FALSE(CheckRow(a.oracle, ResultOf(via_block1), copy_tol(1e-3), ""));
  a.oracle.block_copy_magnitudes.assign(a.oracle.block_scores.size(), 100.0);
  EXPECT_TRUE(CheckRow(a.oracle, ResultOf(via_block1), copy_tol(1e-10), ""));
  EXPECT_FALSE(CheckRow(a.oracle, ResultOf(via_block1), copy_tol(1e-12), ""));
  EXPECT_TRUE(CheckRow(a.oracle, ResultOf(a.oracle.positions), copy_tol(1e-12),
                       ""));
}

TEST(CheckerTest, ResultFromAnUnchosenBlockIsRejected) {
  std::vector<double> scores(64, 0.0);
  scores[20] = 50;
  // Block 1 has the lowest J: far outside any tolerance.
  RowOracle o = MakeOracle(scores, 16, SelectMode::kHisa, 1, 3, {1, 0, 5, 0});
  ASSERT_EQ(o.chosen_blocks, (std::vector<int64_t>{0, 2, 3}));
  EXPECT_FALSE(CheckRow(o, ResultOf({20}), Tol(1e-3, 1e-3), ""));
  EXPECT_TRUE(CheckRow(o, ResultOf(o.positions), Tol(1e-3, 1e-3), ""));
}

// 62 equal non-forced blocks for 30 places: C(62, 30) sets, far past the
// enumeration's cap. An engine that swapped one of them in (block 40, whose
// tokens then lead) is accepted by the least disturbing completion alone.
TEST(CheckerTest, AdmissibleSwapAmongManyEqualBlocksIsAccepted) {
  std::vector<double> scores(64 * 16);
  std::mt19937_64 rng(TestSeed());
  SCOPED_TRACE(SeedNote());
  std::uniform_real_distribution<double> low(0.0, 1.0);
  for (double& v : scores) v = low(rng);
  for (int i = 0; i < 16; ++i) scores[40 * 16 + i] = 10.0 + i;
  std::vector<double> blocks(64, 1.0);
  RowOracle o = MakeOracle(scores, 16, SelectMode::kHisa, 16, 32, blocks);
  ASSERT_FALSE(std::binary_search(o.chosen_blocks.begin(),
                                  o.chosen_blocks.end(), int64_t{40}));
  // The engine's set: blocks 0-29, 40 and 63.
  std::vector<int64_t> engine_blocks(30);
  std::iota(engine_blocks.begin(), engine_blocks.end(), 0);
  engine_blocks.push_back(40);
  engine_blocks.push_back(63);
  const std::vector<int32_t> swapped = TopKOf(o, engine_blocks);
  ASSERT_EQ(swapped.front(), 40 * 16);
  EXPECT_TRUE(CheckRow(o, ResultOf(swapped), Tol(0, 1e-3), "swap"));
  // Outside tol_J block 40 is no admissible choice.
  EXPECT_FALSE(CheckRow(o, ResultOf(swapped), Tol(0, 0), "swap"));
}

TEST(CheckerTest, TooManyAmbiguousBlockSetsFailsLoudly) {
  // 62 equal non-forced blocks, 30 places: C(62, 30) sets. Each block's
  // first token scores 2, the rest 1: any completion of a result that takes
  // block 40 brings first tokens that the result lacks, so neither the
  // least disturbing completion nor the (capped) enumeration settles it.
  std::vector<double> scores(64 * 16, 1.0);
  for (int b = 0; b < 64; ++b) scores[b * 16] = 2.0;
  std::vector<double> blocks(64, 1.0);
  RowOracle o = MakeOracle(scores, 16, SelectMode::kHisa, 16, 32, blocks);
  EXPECT_TRUE(CheckRow(o, ResultOf(o.positions), Tol(0, 1e-3), "cap"));
  std::vector<int32_t> other(16);
  std::iota(other.begin(), other.end(), 40 * 16);
  testing::AssertionResult check = CheckRow(o, ResultOf(other), Tol(0, 1e-3), "cap");
  EXPECT_FALSE(check);
  EXPECT_NE(std::string(check.message()).find("too many"), std::string::npos)
      << check.message();
}

}  // namespace
}  // namespace hisa::ref
