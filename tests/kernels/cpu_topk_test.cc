// Tests of kernels/cpu/topk.h: the packed (score, position) order, partial
// selection edge cases (n = 0 / 1, k >= n, all-equal scores, infinities,
// NaN), and the output contract of WriteSelection. RAFT-style: the edge
// cases live here, in their own file.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/topk.h"
#include "tests/reference/test_seed.h"

namespace hisa::cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The specified order: score descending (as floats, -0 == +0, NaN lowest),
// then position ascending.
bool RanksHigher(float sa, int64_t pa, float sb, int64_t pb) {
  const bool na = std::isnan(sa), nb = std::isnan(sb);
  if (na != nb) return nb;
  if (!na && sa != sb) return sa > sb;
  return pa < pb;
}

std::vector<float> SpecialScores() {
  return {0.0f,         -0.0f,         1.0f,     -1.0f,         kInf,
          -kInf,        FLT_MAX,       -FLT_MAX, FLT_MIN,       -FLT_MIN,
          FLT_TRUE_MIN, -FLT_TRUE_MIN, 3.5f,     std::nanf(""), -std::nanf("")};
}

TEST(CpuTopKTest, PackedOrderIsScoreDescThenPositionAsc) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 301);
  std::vector<float> scores = SpecialScores();
  std::normal_distribution<float> normal;
  for (int i = 0; i < 50; ++i) scores.push_back(normal(rng));
  for (float sa : scores) {
    for (float sb : scores) {
      for (int64_t pa : {0, 1, 7, 2147483647}) {
        for (int64_t pb : {0, 1, 7, 2147483647}) {
          if (pa == pb) continue;
          ASSERT_EQ(PackScore(sa, pa) > PackScore(sb, pb),
                    RanksHigher(sa, pa, sb, pb))
              << sa << "@" << pa << " vs " << sb << "@" << pb;
        }
      }
    }
  }
}

TEST(CpuTopKTest, UnpackRoundTrips) {
  for (float s : SpecialScores()) {
    for (int64_t pos : {0, 5, 123456, 2147483647}) {
      const uint64_t key = PackScore(s, pos);
      EXPECT_EQ(UnpackPosition(key), pos);
      const float back = UnpackScore(key);
      if (std::isnan(s)) {
        EXPECT_TRUE(std::isnan(back));
      } else {
        EXPECT_EQ(back, s);  // -0 comes back as +0, which compares equal
        EXPECT_FALSE(std::signbit(back) && back == 0.0f);
      }
    }
  }
}

std::vector<uint64_t> Pack(const std::vector<float>& scores) {
  std::vector<uint64_t> keys;
  for (size_t i = 0; i < scores.size(); ++i)
    keys.push_back(PackScore(scores[i], i));
  return keys;
}

// Positions chosen by SelectTopK + WriteSelection.
std::vector<int32_t> TopPositions(const std::vector<float>& scores, int k,
                                  RowResult* result = nullptr) {
  std::vector<uint64_t> keys = Pack(scores);
  const int64_t kept = SelectTopK(keys.data(), keys.size(), k);
  EXPECT_EQ(kept, std::min<int64_t>(k, scores.size()));
  RowResult local;
  RowResult* out = result ? result : &local;
  WriteSelection(keys.data(), kept, k, /*with_scores=*/true, out);
  return out->positions;
}

// Oracle: full sort by the specified order.
std::vector<int32_t> SortedTop(const std::vector<float>& scores, int k) {
  std::vector<int32_t> idx(scores.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return RanksHigher(scores[a], a, scores[b], b);
  });
  idx.resize(std::min<size_t>(idx.size(), k));
  std::sort(idx.begin(), idx.end());
  idx.resize(k, -1);
  return idx;
}

TEST(CpuTopKTest, EmptyInputIsAllPadding) {
  RowResult r;
  EXPECT_EQ(TopPositions({}, 4, &r), std::vector<int32_t>(4, -1));
  ASSERT_EQ(r.scores.size(), 4u);
  for (float s : r.scores) EXPECT_TRUE(std::isnan(s));
}

TEST(CpuTopKTest, SingleCandidate) {
  RowResult r;
  EXPECT_EQ(TopPositions({-kInf}, 3, &r), (std::vector<int32_t>{0, -1, -1}));
  EXPECT_EQ(r.scores[0], -kInf);
  EXPECT_EQ(TopPositions({2.0f}, 1), (std::vector<int32_t>{0}));
}

TEST(CpuTopKTest, KAtLeastNKeepsEverything) {
  const std::vector<float> s = {3, 1, 2, 5, 4};
  EXPECT_EQ(TopPositions(s, 5), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(TopPositions(s, 8),
            (std::vector<int32_t>{0, 1, 2, 3, 4, -1, -1, -1}));
}

TEST(CpuTopKTest, AllEqualScoresPickLowestPositions) {
  const std::vector<float> s(100, 0.25f);
  std::vector<int32_t> want(10);
  for (int i = 0; i < 10; ++i) want[i] = i;
  EXPECT_EQ(TopPositions(s, 10), want);
  // +0 and -0 are equal scores too.
  std::vector<float> zeros(50);
  for (int i = 0; i < 50; ++i) zeros[i] = i % 2 ? 0.0f : -0.0f;
  std::vector<float> rev = zeros;
  std::reverse(rev.begin(), rev.end());
  EXPECT_EQ(TopPositions(zeros, 3), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(TopPositions(rev, 3), (std::vector<int32_t>{0, 1, 2}));
}

TEST(CpuTopKTest, InfinitiesAndHugeNegatives) {
  const std::vector<float> s = {-kInf, -FLT_MAX, kInf, -kInf, 0.0f, -FLT_MAX};
  EXPECT_EQ(TopPositions(s, 2), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(TopPositions(s, 4), (std::vector<int32_t>{1, 2, 4, 5}));
  // -inf still beats NaN.
  const std::vector<float> t = {std::nanf(""), -kInf, std::nanf("")};
  RowResult r;
  EXPECT_EQ(TopPositions(t, 2, &r), (std::vector<int32_t>{0, 1}));
  EXPECT_TRUE(std::isnan(r.scores[0]));
  EXPECT_EQ(r.scores[1], -kInf);
}

TEST(CpuTopKTest, RandomWithHeavyTiesMatchesFullSort) {
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 302);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = static_cast<int>(rng() % 3000);
    const int k = 1 + static_cast<int>(rng() % 2048);
    const int levels = 1 + static_cast<int>(rng() % 50);  // many ties
    std::vector<float> s(n);
    for (float& v : s) v = static_cast<float>(rng() % levels) - levels / 2;
    RowResult r;
    ASSERT_EQ(TopPositions(s, k, &r), SortedTop(s, k))
        << "trial " << trial << " n " << n << " k " << k;
    for (int i = 0; i < k; ++i) {
      if (r.positions[i] < 0) {
        ASSERT_TRUE(std::isnan(r.scores[i]));
      } else {
        ASSERT_EQ(r.scores[i], s[r.positions[i]]);
      }
    }
  }
}

TEST(CpuTopKTest, LargeInputsWithSpecialValuesMatchFullSort) {
  // Large enough for the radix paths; magnitudes over the whole float range
  // plus infinities, zeros of both signs, denormals and NaN.
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 304);
  const std::vector<float> special = SpecialScores();
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 512 + static_cast<int>(rng() % 20000);
    const int k = 1 + static_cast<int>(rng() % 2048);
    std::vector<float> s(n);
    for (float& v : s) {
      switch (rng() % 4) {
        case 0:
          v = special[rng() % special.size()];
          break;
        case 1:
          v = std::ldexp(std::normal_distribution<float>()(rng),
                         static_cast<int>(rng() % 200) - 100);
          break;
        default:
          v = std::normal_distribution<float>()(rng);
          break;
      }
    }
    RowResult r;
    ASSERT_EQ(TopPositions(s, k, &r), SortedTop(s, k))
        << "trial " << trial << " n " << n << " k " << k;
  }
}

TEST(CpuTopKTest, SplitSelectionEqualsWholeSelection) {
  // What Select does: per-segment top-k, then top-k of the union.
  SCOPED_TRACE(ref::SeedNote());
  std::mt19937_64 rng(ref::TestSeed() + 303);
  for (int trial = 0; trial < 50; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 5000);
    const int k = 1 + static_cast<int>(rng() % 600);
    std::vector<float> s(n);
    for (float& v : s) v = static_cast<float>(rng() % 20);
    std::vector<uint64_t> keys = Pack(s), merged;
    for (int begin = 0; begin < n;) {
      const int len = std::min<int>(n - begin, 1 + rng() % 700);
      const int64_t kept = SelectTopK(keys.data() + begin, len, k);
      merged.insert(merged.end(), keys.begin() + begin,
                    keys.begin() + begin + kept);
      begin += len;
    }
    const int64_t kept = SelectTopK(merged.data(), merged.size(), k);
    RowResult r;
    WriteSelection(merged.data(), kept, k, /*with_scores=*/false, &r);
    EXPECT_TRUE(r.scores.empty());
    ASSERT_EQ(r.positions, SortedTop(s, k)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace hisa::cpu
