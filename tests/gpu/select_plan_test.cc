// Host-side tests of the CUDA backend's batch planner (select_plan.h): no
// GPU needed (stores are never appended to, so no device memory is touched),
// so these run in CI. They check how rows become groups (DENSE rows paired,
// HISA rows alone unless every block is chosen), that every row gets its own
// k output entries, that work items tile each group's slots exactly, and the
// page-count byte accounting.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_store.h"
#include "kernels/cuda/select_layout.h"
#include "kernels/cuda/select_plan.h"
#include "kernels/types.h"
#include "tests/kernels/thread_per_chunk.h"
#include "tests/reference/test_seed.h"

namespace hisa::cuda {
namespace {

struct Batch {
  std::vector<QueryRow> rows;
  std::vector<RowResult> results;
  std::vector<SelectTask> tasks;
  std::vector<uint8_t> q;
  std::vector<float> scales, weights;
};

// `positions` rows of one store in `mode` (fp8, H = 64, D = 128).
void AddRows(Batch& b, const RequestStore* store, const RequestConfig* config,
             const std::vector<int64_t>& positions, SelectMode mode, int k,
             int m) {
  constexpr int kH = 64, kD = 128;
  if (b.q.empty()) {
    b.q.assign(kH * kD, 0x38);  // 1.0
    b.scales.assign(kH, 1.0f);
    b.weights.assign(kH, 0.5f);
  }
  for (int64_t t : positions) {
    QueryRow row;
    row.request_id = "r";
    row.position = t;
    row.num_heads = kH;
    row.q_format = KeyFormat::kFp8E4M3;
    row.q = b.q;
    row.q_scales = b.scales;
    row.weights = b.weights;
    row.mode = mode;
    row.k = k;
    row.m = m;
    b.rows.push_back(row);
  }
  b.results.resize(b.rows.size());
  b.tasks.clear();
  for (size_t i = 0; i < b.rows.size(); ++i) {
    b.tasks.push_back(SelectTask{store, config, &b.rows[i], b.rows[i].mode,
                                 &b.results[i]});
  }
}

template <class T>
std::vector<T> Read(const SelectPlan& plan, int64_t off, int64_t n) {
  std::vector<T> v(n);
  std::memcpy(v.data(), plan.image.data() + off, n * sizeof(T));
  return v;
}

// A plan's descriptors, rows and every launch's work items, from its image.
struct PlanImage {
  std::vector<GroupDesc> groups;
  std::vector<RowDesc> rows;
  std::vector<WorkItem> work;
};
PlanImage ReadPlan(const SelectPlan& plan, int64_t num_rows) {
  PlanImage v;
  v.groups = Read<GroupDesc>(plan, plan.groups_off, plan.num_descriptors);
  v.rows = Read<RowDesc>(plan, plan.rows_off, num_rows);
  int64_t items = 0;
  for (const LaunchSpec& s : plan.launches) items += s.num_items;
  v.work = Read<WorkItem>(plan, plan.items_off, items);
  return v;
}

TEST(SelectPlanTest, GroupsOutputsAndItems) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  // Never appended to: the planner only reads lengths and page tables.
  CudaRequestStore store(nullptr, config);
  Batch b;
  // m = 16, B = 128: rows below 2048 choose every block (DENSE rows).
  std::vector<int64_t> small = {100, 101, 500, 2000};
  std::vector<int64_t> large = {5000, 5001, 9000};
  AddRows(b, &store, &config, small, SelectMode::kHisa, 1024, 16);
  AddRows(b, &store, &config, large, SelectMode::kHisa, 1024, 16);
  AddRows(b, &store, &config, {300, 301, 9000}, SelectMode::kDense, 512, 16);
  PlanOptions options;
  options.num_sms = 132;
  absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
  ASSERT_TRUE(plan.ok()) << plan.status();

  // Outputs: k entries per task, disjoint, covering out_entries.
  std::vector<std::pair<int64_t, int>> spans;
  for (size_t i = 0; i < b.tasks.size(); ++i) {
    ASSERT_GE(plan->task_out_offset[i], 0);
    spans.push_back({plan->task_out_offset[i], b.rows[i].k});
  }
  std::sort(spans.begin(), spans.end());
  int64_t next = 0;
  for (const auto& [off, k] : spans) {
    EXPECT_EQ(off, next);
    next = off + k;
  }
  EXPECT_EQ(next, plan->out_entries);

  // Groups: the 4 small HISA rows pair as DENSE rows (2 groups of 2); the 3
  // large HISA rows stay alone for token work, and 5000 and 5001 share one
  // block-stage descriptor (after the token groups) that writes each row's
  // union to its own group; the 3 DENSE rows make a pair and a single.
  ASSERT_EQ(plan->num_descriptors, plan->num_groups + 1);
  const auto groups =
      Read<GroupDesc>(*plan, plan->groups_off, plan->num_descriptors);
  const auto rows = Read<RowDesc>(*plan, plan->rows_off, b.tasks.size());
  int hisa_groups = 0, dense_pairs = 0, dense_single = 0;
  for (int64_t gi = 0; gi < plan->num_groups; ++gi) {
    const GroupDesc& g = groups[gi];
    EXPECT_EQ(g.split_unions, 0);
    if (g.mode == kModeHisa) {
      ++hisa_groups;
      EXPECT_EQ(g.num_rows, 1);
      EXPECT_GE(rows[g.rows[0]].position, 16 * 128);
      // <= 128 blocks: one block tile, unless the pair's descriptor has it.
      EXPECT_EQ(g.block_items, rows[g.rows[0]].position == 9000 ? 1 : 0);
    } else {
      (g.num_rows == 2 ? dense_pairs : dense_single)++;
    }
    if (g.num_rows == 2) {
      EXPECT_LT(rows[g.rows[0]].position, rows[g.rows[1]].position);
    }
  }
  EXPECT_EQ(hisa_groups, 3);
  EXPECT_EQ(dense_pairs, 3);  // (100,101) (500,2000) (300,301)
  EXPECT_EQ(dense_single, 1);
  const GroupDesc& pair = groups[plan->num_groups];
  EXPECT_EQ(pair.split_unions, 1);
  EXPECT_EQ(pair.num_rows, 2);
  EXPECT_EQ(pair.block_items, 1);
  for (int g = 0; g < 2; ++g) {
    const GroupDesc& tg = groups[pair.union_groups[g]];
    EXPECT_EQ(tg.mode, kModeHisa);
    EXPECT_EQ(tg.rows[0], pair.rows[g]);
    EXPECT_EQ(rows[tg.rows[0]].position, 5000 + g);
  }

  // Work items of every launch tile their group's slots without gaps.
  int64_t total_items = 0;
  for (const LaunchSpec& s : plan->launches) total_items += s.num_items;
  const auto items = Read<WorkItem>(*plan, plan->items_off, total_items);
  std::map<std::pair<int, int>, std::vector<std::pair<int64_t, int64_t>>> cover;
  for (const LaunchSpec& s : plan->launches) {
    EXPECT_EQ(s.rows, groups[items[s.first_item].group].num_rows);
    for (int64_t i = s.first_item; i < s.first_item + s.num_items; ++i) {
      const WorkItem& w = items[i];
      EXPECT_EQ(groups[w.group].num_rows, s.rows);
      if (s.stage == LaunchSpec::kTokens) {
        // FP8, D = 128, 64 heads: the warpgroup-MMA token kernel.
        EXPECT_EQ(s.scorer, LaunchSpec::kWgmma);
      }
      cover[{static_cast<int>(s.stage), w.group}].push_back(
          {w.slot_begin, w.slot_end});
    }
  }
  for (auto& [key, ranges] : cover) {
    std::sort(ranges.begin(), ranges.end());
    const GroupDesc& g = groups[key.second];
    int64_t at = 0;
    for (const auto& [lo, hi] : ranges) {
      EXPECT_EQ(lo, at);
      EXPECT_GT(hi, lo);
      at = hi;
    }
    if (key.first == LaunchSpec::kBlockScores) {
      EXPECT_EQ(at, g.max_position / 128 + 1);
    } else if (g.mode == kModeDense) {
      EXPECT_EQ(at, g.max_position + 1);
      EXPECT_EQ(static_cast<int>(ranges.size()), g.num_splits);
    }
  }

  // The A/B options: mma.sync everywhere, HISA rows paired.
  options.use_wgmma = false;
  options.pair_hisa_rows = true;
  plan = BuildSelectPlan(b.tasks, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const LaunchSpec& s : plan->launches) {
    EXPECT_NE(s.scorer, LaunchSpec::kWgmma);
  }
  const auto paired =
      Read<GroupDesc>(*plan, plan->groups_off, plan->num_descriptors);
  int hisa_pairs = 0;
  for (const GroupDesc& g : paired) hisa_pairs += g.mode == kModeHisa && g.num_rows == 2;
  EXPECT_EQ(hisa_pairs, 1);  // (5000, 5001)
}

// Which HISA rows score their slots into scratch and select k once
// (slot-score groups): single rows of at most kSlotSelectCap candidate slots,
// while the batch's scratch fits the budget; the rest keep a running top-k.
TEST(SelectPlanTest, SlotScoreGroupsFollowTheCapAndTheBudget) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  Batch b;
  // m * B = 2048 and 8192 slots (slot scores), 12800 (over the cap).
  AddRows(b, &store, &config, {5000, 9000}, SelectMode::kHisa, 1024, 16);
  AddRows(b, &store, &config, {20000}, SelectMode::kHisa, 2048, 64);
  AddRows(b, &store, &config, {30000}, SelectMode::kHisa, 2048, 100);
  AddRows(b, &store, &config, {40000}, SelectMode::kDense, 2048, 16);
  auto groups_of = [&](const PlanOptions& options) {
    absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
    EXPECT_TRUE(plan.ok()) << plan.status();
    const auto groups =
        Read<GroupDesc>(*plan, plan->groups_off, plan->num_groups);
    const auto rows = Read<RowDesc>(*plan, plan->rows_off, b.tasks.size());
    std::map<int64_t, GroupDesc> by_position;
    for (const GroupDesc& g : groups) {
      EXPECT_EQ(g.num_rows, 1);
      by_position[rows[g.rows[0]].position] = g;
    }
    return by_position;
  };
  PlanOptions options;
  options.num_sms = 132;
  std::map<int64_t, GroupDesc> g = groups_of(options);
  ASSERT_EQ(g.size(), 5u);
  // Union slots: min(m, blocks) * B, rounded up to 4 for the stride.
  EXPECT_GE(g[5000].slot_score_offset, 0);
  EXPECT_EQ(g[5000].slot_score_stride, 16 * 128);
  EXPECT_GE(g[9000].slot_score_offset, 0);
  EXPECT_GE(g[20000].slot_score_offset, 0);
  EXPECT_EQ(g[20000].slot_score_stride, 64 * 128);
  EXPECT_LT(g[30000].slot_score_offset, 0);  // 100 * 128 > kSlotSelectCap
  EXPECT_LT(g[40000].slot_score_offset, 0);  // DENSE
  // The scratch ranges do not overlap.
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const auto& [t, gd] : g) {
    if (gd.slot_score_offset >= 0) {
      ranges.push_back({gd.slot_score_offset,
                        gd.slot_score_offset + gd.slot_score_stride});
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first);
  }
  // A budget for the first rows only, then none at all.
  options.slot_score_budget_bytes = (16 * 128 * 2) * 4;
  g = groups_of(options);
  EXPECT_GE(g[5000].slot_score_offset, 0);
  EXPECT_GE(g[9000].slot_score_offset, 0);
  EXPECT_LT(g[20000].slot_score_offset, 0);
  options.slot_score_budget_bytes = 0;
  g = groups_of(options);
  for (const auto& [t, gd] : g) EXPECT_LT(gd.slot_score_offset, 0) << t;
  options.slot_score_budget_bytes = int64_t{64} << 20;
  options.slot_scores = false;
  g = groups_of(options);
  for (const auto& [t, gd] : g) EXPECT_LT(gd.slot_score_offset, 0) << t;
}

// The bulk-tensor-copy token kernel takes exactly the slot-score groups
// whose tiles are aligned 128-key runs in one page (B % 128 == 0 with FP8
// D = 128 pages of 512 tokens), and only when the options allow it.
TEST(SelectPlanTest, TmaTokenKernelTakesAlignedSlotScoreGroupsOnly) {
  // Positions of the rows on the running top-k wgmma kernel with bulk
  // copies (kWgmmaTopkTma), filled by tma_groups.
  std::map<int64_t, int> topk_tma;
  auto tma_groups = [&topk_tma](int block_size, bool use_tma) {
    topk_tma.clear();
    const RequestConfig config{1, 128, block_size, KeyFormat::kFp8E4M3,
                               BlockPooling::kMean};
    CudaRequestStore store(nullptr, config);
    Batch b;
    AddRows(b, &store, &config, {5000, 9000}, SelectMode::kHisa, 1024, 16);
    AddRows(b, &store, &config, {30000}, SelectMode::kHisa, 2048, 100);
    AddRows(b, &store, &config, {40000}, SelectMode::kDense, 2048, 16);
    PlanOptions options;
    options.use_tma = use_tma;
    absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
    EXPECT_TRUE(plan.ok()) << plan.status();
    const PlanImage img = ReadPlan(*plan, b.tasks.size());
    std::map<int64_t, int> tma_items;  // row position -> TMA work items
    for (const LaunchSpec& s : plan->launches) {
      if (s.scorer == LaunchSpec::kWgmmaTopkTma) {
        for (int64_t i = s.first_item; i < s.first_item + s.num_items; ++i) {
          const GroupDesc& g = img.groups[img.work[i].group];
          EXPECT_EQ(img.work[i].slot_begin % kTileSlots, 0);
          ++topk_tma[img.rows[g.rows[0]].position];
        }
      }
      if (s.scorer != LaunchSpec::kWgmmaTma) continue;
      EXPECT_EQ(s.stage, LaunchSpec::kTokens);
      EXPECT_EQ(s.rows, 1);
      for (int64_t i = s.first_item; i < s.first_item + s.num_items; ++i) {
        const GroupDesc& g = img.groups[img.work[i].group];
        EXPECT_GE(g.slot_score_offset, 0);
        EXPECT_EQ(img.work[i].slot_begin % kTileSlots, 0);
        ++tma_items[img.rows[g.rows[0]].position];
      }
    }
    return tma_items;
  };
  const std::map<int64_t, int> on = tma_groups(128, true);
  EXPECT_EQ(on.size(), 2u);  // not the over-cap HISA row, not DENSE
  EXPECT_GT(on.count(5000), 0u);
  EXPECT_GT(on.count(9000), 0u);
  // The over-cap HISA row and the DENSE row keep a running top-k, with
  // bulk copies.
  EXPECT_EQ(topk_tma.size(), 2u);
  EXPECT_GT(topk_tma.count(30000), 0u);
  EXPECT_GT(topk_tma.count(40000), 0u);
  EXPECT_TRUE(tma_groups(128, false).empty());
  EXPECT_TRUE(topk_tma.empty());
  // Without slot-score scratch the same rows run the pooled form, one work
  // item each, with one pool of 3 slices per SM.
  {
    const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                               BlockPooling::kMean};
    CudaRequestStore store(nullptr, config);
    Batch b;
    // c + 1 > m for every row: real HISA rows (m * B = 8192 slots).
    AddRows(b, &store, &config, {9000, 20000, 30000}, SelectMode::kHisa, 1024,
            64);
    PlanOptions options;
    options.use_tma = true;
    options.slot_score_budget_bytes = 0;
    options.num_sms = 7;
    absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->pool_sms, 7);
    EXPECT_GE(plan->device_bytes - plan->slot_pool_off,
              int64_t{7} * kTmaTokenCtasPerSm * kSlotSelectCap * 4);
    // The taken-slice bits are in the upload image (zeroed), one word per
    // SM.
    EXPECT_LE(plan->pool_bits_off + 7 * 4, plan->image_bytes);
    for (int i = 0; i < 7 * 4; ++i) {
      EXPECT_EQ(plan->image[plan->pool_bits_off + i], 0);
    }
    int token_launches = 0;
    for (const LaunchSpec& s : plan->launches) {
      if (s.stage != LaunchSpec::kTokens) continue;
      ++token_launches;
      EXPECT_EQ(s.scorer, LaunchSpec::kWgmmaTmaPool);
      EXPECT_EQ(s.num_items, 3);
    }
    EXPECT_EQ(token_launches, 1);
  }
  EXPECT_TRUE(tma_groups(64, true).empty());  // tiles would span 2 blocks
  EXPECT_EQ(topk_tma.size(), 1u);  // only DENSE: slots are positions
  EXPECT_GT(topk_tma.count(40000), 0u);
  EXPECT_EQ(tma_groups(256, true).size(), 2u);
}

// Whole-prefix rows (DENSE rows, and HISA rows whose every block is
// chosen) of at most kSlotSelectCap positions become single slot-key rows of
// the bulk-copy kernel, whose slot i is position i; longer DENSE rows, and
// every such row without bulk copies, pair as before.
TEST(SelectPlanTest, ShortWholePrefixRowsAreSingleSlotKeyRows) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  Batch b;
  AddRows(b, &store, &config, {100, 101, 5000, 8191, 8192, 8193},
          SelectMode::kDense, 2048, 0);
  // c + 1 <= m = 64: every block chosen.
  AddRows(b, &store, &config, {3000, 3001}, SelectMode::kHisa, 2048, 64);
  struct Seen {
    int num_rows = 0;
    int32_t mode = -1;
    bool slot_keys = false;  // on kWgmmaTma / kWgmmaTmaPool
    int64_t stride = 0;
  };
  auto plan_rows = [&](bool use_tma, int64_t budget) {
    PlanOptions options;
    options.use_tma = use_tma;
    options.slot_score_budget_bytes = budget;
    absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
    EXPECT_TRUE(plan.ok()) << plan.status();
    const PlanImage img = ReadPlan(*plan, b.tasks.size());
    std::map<int64_t, Seen> seen;  // row position -> its group
    for (const LaunchSpec& s : plan->launches) {
      if (s.stage != LaunchSpec::kTokens) continue;
      for (int64_t i = s.first_item; i < s.first_item + s.num_items; ++i) {
        const GroupDesc& g = img.groups[img.work[i].group];
        for (int r = 0; r < g.num_rows; ++r) {
          Seen& x = seen[img.rows[g.rows[r]].position];
          x.num_rows = g.num_rows;
          x.mode = g.mode;
          x.slot_keys = s.scorer == LaunchSpec::kWgmmaTma ||
                        s.scorer == LaunchSpec::kWgmmaTmaPool;
          x.stride = g.slot_score_stride;
          if (x.slot_keys) {
            EXPECT_EQ(img.work[i].slot_begin % kTileSlots, 0);
            EXPECT_EQ(s.scorer == LaunchSpec::kWgmmaTma,
                      g.slot_score_offset >= 0);
          }
        }
      }
    }
    EXPECT_EQ(seen.size(), b.tasks.size());
    return seen;
  };
  for (int64_t budget : {int64_t{64} << 20, int64_t{0}}) {
    std::map<int64_t, Seen> on = plan_rows(true, budget);
    for (int64_t t : {100, 101, 5000, 8191, 3000, 3001}) {
      EXPECT_EQ(on[t].num_rows, 1) << t;
      EXPECT_EQ(on[t].mode, kModeDense) << t;
      EXPECT_TRUE(on[t].slot_keys) << t;
      // Scratch form (split rows): up to t, rounded up to 4; else pooled.
      if (on[t].stride != 0) {
        EXPECT_EQ(on[t].stride, (t + 4) / 4 * 4) << t;
      }
      if (budget == 0) {
        EXPECT_EQ(on[t].stride, 0) << t;
      }
    }
    for (int64_t t : {8192, 8193}) {
      EXPECT_EQ(on[t].num_rows, 2) << t;
      EXPECT_FALSE(on[t].slot_keys) << t;
    }
  }
  std::map<int64_t, Seen> off = plan_rows(false, int64_t{64} << 20);
  for (int64_t t : {100, 101, 5000, 8191, 8192, 8193, 3000, 3001}) {
    EXPECT_EQ(off[t].num_rows, 2) << t;
    EXPECT_FALSE(off[t].slot_keys) << t;
  }
}

// Work-item splits follow the wave model: a decode batch of few rows splits
// each row into as many items as fill one wave of resident CTAs (3 per SM
// for the TMA kernel) without a second wave; a batch of many more rows than
// resident CTAs does not split.
TEST(SelectPlanTest, SplitsFillOneWaveForFewRowsAndNoneForMany) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  // The token launches' scorer, set by token_items.
  LaunchSpec::Scorer scorer = LaunchSpec::kGeneric;
  auto token_items = [&](int rows) {
    Batch b;
    std::vector<int64_t> positions;
    for (int i = 0; i < rows; ++i) positions.push_back(60000 + i);
    AddRows(b, &store, &config, positions, SelectMode::kHisa, 2048, 64);
    PlanOptions options;
    options.num_sms = 132;
    options.use_tma = true;
    options.pair_hisa_blocks = false;
    absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
    EXPECT_TRUE(plan.ok()) << plan.status();
    int64_t items = 0;
    for (const LaunchSpec& s : plan->launches) {
      if (s.stage != LaunchSpec::kTokens) continue;
      scorer = s.scorer;
      items += s.num_items;
    }
    return items;
  };
  // 64 rows of 64 tiles: 6 items each (384 <= 3 x 132 resident CTAs).
  const int64_t decode = token_items(64);
  EXPECT_GT(decode, 2 * 132);
  EXPECT_LE(decode, 3 * 132);
  EXPECT_EQ(decode % 64, 0);
  EXPECT_EQ(scorer, LaunchSpec::kWgmmaTma);  // split rows: group scratch
  // 1024 rows (the prefill shape): waves of whole rows beat more waves of
  // split rows (3 x (64 + 2) against 6 x (32 + 2) tile times); unsplit
  // rows take the pooled form.
  EXPECT_EQ(token_items(1024), 1024);
  EXPECT_EQ(scorer, LaunchSpec::kWgmmaTmaPool);
}

// An H200's resident clusters of the split-select kernel, by cluster size
// (bench/gpu/RESULTS_gpu.md).
const std::vector<int> kH200Clusters = {0, 0, 198, 124, 92, 69, 62, 47, 45};

// Planner options for a 132-SM GPU with the bulk-copy token kernels, whose
// resident clusters by size are `resident` (empty: unknown).
PlanOptions TmaOptions(const std::vector<int>& resident) {
  PlanOptions options;
  options.num_sms = 132;
  options.use_tma = true;
  options.clusters_known = !resident.empty();
  for (size_t c = 0; c < resident.size(); ++c) {
    options.clusters_resident[c] = resident[c];
  }
  return options;
}

// A decode batch's positions: `requests` rows at the ends of contexts of
// `length` tokens (length - 1, length - 2, ...).
std::vector<int64_t> DecodePositions(int requests, int64_t length) {
  std::vector<int64_t> positions;
  for (int i = 0; i < requests; ++i) positions.push_back(length - 1 - i);
  return positions;
}

// The plan of HISA rows (k = 2048, m = 64) at `positions` of one store,
// and its image.
struct Planned {
  SelectPlan plan;
  PlanImage image;
};
Planned PlanHisaRows(const RequestStore* store, const RequestConfig* config,
                     const std::vector<int64_t>& positions,
                     const PlanOptions& options) {
  Batch b;
  AddRows(b, store, config, positions, SelectMode::kHisa, 2048, 64);
  absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
  EXPECT_TRUE(plan.ok()) << plan.status();
  Planned p;
  if (plan.ok()) {
    p.plan = std::move(*plan);
    p.image = ReadPlan(p.plan, static_cast<int64_t>(positions.size()));
  }
  return p;
}

// Split selects (GroupDesc::split_select): a kWgmmaTma launch runs as
// thread-block clusters of C CTAs, C the most items of any of its groups
// (at most kMaxClusterItems, and few enough that the clusters fit in one
// wave: PlanOptions::clusters_resident). Each group fills one cluster: its
// items in split order (cluster rank = split), padded with empty items
// past its last slot, and num_splits = C.
TEST(SelectPlanTest, SplitSelectsRunAsOneClusterPerGroup) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  struct Seen {
    int64_t items = 0;    // on the kWgmmaTma launch
    int32_t cluster = 0;  // its cluster size
    int split_groups = 0;
    int padded_groups = 0;  // groups with empty items
    int multi_item_groups = 0;
  };
  const std::vector<int>& h200 = kH200Clusters;
  auto plan_of = [&](const std::vector<int64_t>& positions, bool enabled,
                     const std::vector<int>& resident = {},
                     int cluster_items = 0) {
    PlanOptions options = TmaOptions(resident);
    options.pair_hisa_blocks = false;
    options.split_select = enabled;
    options.cluster_items = cluster_items;
    const Planned planned = PlanHisaRows(&store, &config, positions, options);
    const SelectPlan* plan = &planned.plan;
    const PlanImage& image = planned.image;
    Seen seen;
    for (const LaunchSpec& s : plan->launches) {
      if (s.scorer != LaunchSpec::kWgmmaTma) {
        EXPECT_EQ(s.cluster, 1);
        continue;
      }
      seen.items = s.num_items;
      seen.cluster = s.cluster;
      if (s.cluster == 1) continue;
      EXPECT_LE(s.cluster, kMaxClusterItems);
      EXPECT_EQ(s.num_items % s.cluster, 0);
      std::vector<int> clusters_of(plan->num_groups, 0);
      for (int64_t j = 0; j < s.num_items / s.cluster; ++j) {
        const WorkItem* c = image.work.data() + s.first_item + j * s.cluster;
        const GroupDesc& gd = image.groups[c[0].group];
        ++clusters_of[c[0].group];
        EXPECT_EQ(gd.split_select, 1);
        EXPECT_EQ(gd.num_splits, s.cluster);
        bool padded = false;
        int64_t next = 0;  // the group's slots, tiled in split order
        for (int r = 0; r < s.cluster; ++r) {
          EXPECT_EQ(c[r].group, c[0].group);
          EXPECT_EQ(c[r].split, r);
          // An item keeps its keys in half of the kernel's room for a row.
          EXPECT_LE(c[r].slot_end - c[r].slot_begin, kSlotSelectCap / 2);
          EXPECT_EQ(c[r].slot_begin % kTileSlots, 0);
          if (c[r].slot_end == c[r].slot_begin) {
            // Empty: past the group's slots, on a tile.
            padded = true;
            EXPECT_GE(c[r].slot_begin, next);
          } else {
            EXPECT_FALSE(padded) << "a real item after an empty one";
            EXPECT_EQ(c[r].slot_begin, next);
            next = c[r].slot_end;
          }
        }
        seen.padded_groups += padded;
      }
      for (int64_t g = 0; g < plan->num_groups; ++g) {
        if (image.groups[g].split_select) {
          EXPECT_EQ(clusters_of[g], 1);
        }
      }
    }
    // Only groups whose last item selects alone have a key histogram in
    // global memory, each its own (every slot-score group here is on the
    // bulk-copy kernel).
    std::vector<int> hist_users(plan->slot_hist_count / kKeyHistBins, 0);
    for (int64_t g = 0; g < plan->num_groups; ++g) {
      const GroupDesc& gd = image.groups[g];
      seen.split_groups += gd.split_select;
      seen.multi_item_groups += gd.num_splits > 1;
      if (gd.split_select) {
        EXPECT_EQ(gd.slot_hist_index, -1);
      } else if (gd.slot_score_offset >= 0) {
        EXPECT_GE(gd.slot_hist_index, 0);
        EXPECT_LT(gd.slot_hist_index, static_cast<int>(hist_users.size()));
        if (gd.slot_hist_index >= 0 &&
            gd.slot_hist_index < static_cast<int>(hist_users.size())) {
          ++hist_users[gd.slot_hist_index];
        }
      }
    }
    for (int users : hist_users) EXPECT_EQ(users, 1);
    return seen;
  };
  std::vector<int64_t> decode;
  for (int i = 0; i < 64; ++i) decode.push_back(60000 + i);
  // 64 decode rows of 64 tiles. Residency unknown: taken as 3 x 132 CTAs,
  // so 66 clusters of 6 and 79 of 5; with an eighth to spare, 5 items per
  // row.
  const Seen on = plan_of(decode, true);
  EXPECT_EQ(on.cluster, 5);
  EXPECT_EQ(on.items, 64 * 5);
  EXPECT_EQ(on.split_groups, 64);
  EXPECT_EQ(on.padded_groups, 0);
  // Where only 69 clusters of 5 fit at once (an H200), 4 items per row.
  const Seen fit = plan_of(decode, true, h200);
  EXPECT_EQ(fit.cluster, 4);
  EXPECT_EQ(fit.items, 64 * 4);
  EXPECT_EQ(fit.split_groups, 64);
  // Switched off: the rows split to fill the GPU (6 items each, 384 <= 3 x
  // 132 CTAs), and the last item of each row selects alone.
  const Seen off = plan_of(decode, false, h200);
  EXPECT_EQ(off.cluster, 1);
  EXPECT_EQ(off.split_groups, 0);
  EXPECT_EQ(off.multi_item_groups, 64);
  EXPECT_EQ(off.items, 64 * 6);
  // 256 rows: no cluster size fits in one wave; no split selects.
  std::vector<int64_t> many;
  for (int i = 0; i < 256; ++i) many.push_back(60000 + i);
  const Seen big = plan_of(many, true, h200);
  EXPECT_EQ(big.cluster, 1);
  EXPECT_EQ(big.split_groups, 0);
  EXPECT_GT(big.multi_item_groups, 0);
  // Forced (HISA_CUDA_CLUSTER_ITEMS): 8 items per row in several waves.
  const Seen forced = plan_of(many, true, h200, 8);
  EXPECT_EQ(forced.cluster, 8);
  EXPECT_EQ(forced.items, 256 * 8);
  EXPECT_EQ(forced.split_groups, 256);
  // A GPU where no cluster of this kernel fits (known zeros): none either.
  EXPECT_EQ(plan_of(decode, true, std::vector<int>(kMaxClusterItems + 1, 0))
                .split_groups,
            0);
  // Four rows would split into many more items; a cluster holds 8.
  const std::vector<int64_t> four = {60000, 60001, 60002, 60003};
  const Seen few = plan_of(four, true, h200);
  EXPECT_EQ(few.cluster, kMaxClusterItems);
  EXPECT_EQ(few.items, 4 * kMaxClusterItems);
  EXPECT_EQ(few.split_groups, 4);
  EXPECT_GT(plan_of(four, false).items, 4 * kMaxClusterItems);
  // Ragged rows: the short rows' groups have fewer items and are padded to
  // the long rows' cluster.
  std::vector<int64_t> ragged = decode;
  for (int i = 0; i < 8; ++i) ragged.push_back(300 + i);
  const Seen mixed = plan_of(ragged, true);
  EXPECT_GE(mixed.cluster, 2);
  EXPECT_EQ(mixed.split_groups, 72);
  EXPECT_EQ(mixed.items, 72 * mixed.cluster);
  EXPECT_GE(mixed.padded_groups, 8);
}

// GroupDesc::tokens_choose: split-select HISA rows that score their own
// blocks choose them in their token items. Their block items are theirs
// (group == the token group, block_items of them), so that the count the
// token items wait for is the row's own; rows whose blocks a block-stage
// pair scores, rows that choose every block (DENSE rows) and rows without
// split selects keep the union that the block stage writes.
TEST(SelectPlanTest, TokenItemsChooseBlocksOnlyForTheirOwnSplitRows) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  struct Seen {
    int choosing = 0;  // groups with tokens_choose
    int hisa_split = 0;  // HISA groups with split selects
  };
  auto plan_of = [&](const std::vector<int64_t>& positions, bool choice,
                     bool pair_blocks, bool split) {
    PlanOptions options = TmaOptions(kH200Clusters);
    options.pair_hisa_blocks = pair_blocks;
    options.split_select = split;
    options.token_choice = choice;
    const Planned planned = PlanHisaRows(&store, &config, positions, options);
    const SelectPlan* plan = &planned.plan;
    const PlanImage& image = planned.image;
    // Block items per descriptor.
    std::vector<int> block_items(plan->num_descriptors, 0);
    for (const LaunchSpec& s : plan->launches) {
      if (s.stage != LaunchSpec::kBlockScores) continue;
      for (int64_t i = s.first_item; i < s.first_item + s.num_items; ++i) {
        ++block_items[image.work[i].group];
      }
    }
    Seen seen;
    for (int64_t g = 0; g < plan->num_descriptors; ++g) {
      const GroupDesc& gd = image.groups[g];
      if (g >= plan->num_groups) {  // a block-stage pair
        EXPECT_EQ(gd.tokens_choose, 0);
        continue;
      }
      seen.hisa_split += gd.split_select && gd.mode == kModeHisa;
      if (!gd.tokens_choose) continue;
      ++seen.choosing;
      EXPECT_EQ(gd.split_select, 1);
      EXPECT_EQ(gd.mode, kModeHisa);
      EXPECT_EQ(gd.num_rows, 1);
      EXPECT_GT(gd.block_items, 0);
      EXPECT_EQ(block_items[g], gd.block_items) << "group " << g;
    }
    return seen;
  };
  std::vector<int64_t> decode;
  for (int i = 0; i < 64; ++i) decode.push_back(60000 + 1000 * i);
  const Seen on = plan_of(decode, true, false, true);
  EXPECT_EQ(on.hisa_split, 64);
  EXPECT_EQ(on.choosing, 64);
  EXPECT_EQ(plan_of(decode, false, false, true).choosing, 0);
  EXPECT_EQ(plan_of(decode, true, false, false).choosing, 0);
  // Rows of one request and layer: the block stage pairs neighbours, whose
  // unions it then writes (two rows a block item).
  const Seen paired = plan_of(decode, true, true, true);
  EXPECT_EQ(paired.hisa_split, 64);
  EXPECT_EQ(paired.choosing, 0);
  // Rows that choose every block (c + 1 <= m) are DENSE rows: no choice.
  std::vector<int64_t> ragged = decode;
  for (int i = 0; i < 8; ++i) ragged.push_back(300 + i);
  const Seen mixed = plan_of(ragged, true, false, true);
  EXPECT_EQ(mixed.choosing, 64);
}

// Clustered launches are spread (LaunchSpec::balance_clusters) when their
// clusters all fit at once at two CTAs per SM: those of at most one CTA per
// SM with the load-balancing policy alone, bigger ones also with the shared
// memory request that caps them at two per SM. Launches whose clusters do
// not fit that way, and every launch with the option off, keep the default.
TEST(SelectPlanTest, ClusteredLaunchesSpreadWhenTheyFitTwoPerSm) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  // The clustered token launch of `requests` decode rows at `length`, with
  // `spread_fit` clusters of 4 resident at once when spread.
  auto launch_of = [&](int requests, int64_t length, bool option,
                       int spread_fit) {
    PlanOptions options = TmaOptions(kH200Clusters);
    options.balance_clusters = option;
    for (int c = 2; c <= kMaxClusterItems; ++c) {
      options.clusters_resident_spread[c] = c == 4 ? spread_fit : 0;
    }
    const Planned planned = PlanHisaRows(
        &store, &config, DecodePositions(requests, length), options);
    LaunchSpec clustered;
    int count = 0;
    for (const LaunchSpec& l : planned.plan.launches) {
      if (l.cluster > 1) {
        clustered = l;
        ++count;
      }
    }
    EXPECT_EQ(count, 1);
    return clustered;
  };
  const int num_sms = TmaOptions(kH200Clusters).num_sms;
  // 8 rows: at most one CTA per SM, whatever the spread residency.
  const LaunchSpec few = launch_of(8, 131072, true, 0);
  EXPECT_LE(few.num_items, num_sms);
  EXPECT_TRUE(few.balance_clusters);
  EXPECT_EQ(few.smem_bytes, 0);
  EXPECT_FALSE(launch_of(8, 131072, false, 0).balance_clusters);
  // 64 rows in clusters of 4: more CTAs than SMs; spread only if 64 such
  // clusters fit at once.
  const LaunchSpec fits = launch_of(64, 65536, true, 64);
  EXPECT_EQ(fits.cluster, 4);
  EXPECT_GT(fits.num_items, num_sms);
  EXPECT_TRUE(fits.balance_clusters);
  EXPECT_EQ(fits.smem_bytes, kTmaSpreadSmemBytes);
  const LaunchSpec short_by_one = launch_of(64, 65536, true, 63);
  EXPECT_FALSE(short_by_one.balance_clusters);
  EXPECT_EQ(short_by_one.smem_bytes, 0);
  const LaunchSpec off = launch_of(64, 65536, false, 64);
  EXPECT_FALSE(off.balance_clusters);
  EXPECT_EQ(off.smem_bytes, 0);
}

// Token items score their own blocks (GroupDesc::tokens_score_blocks) when
// every HISA row of the batch chooses its own blocks on a spread clustered
// launch and an item's share is at most kOwnBlockTiles tiles: the block
// launch and its items go, the token launch takes the spread launch's
// shared memory. One row that cannot keeps the block launch for all, and so
// do block scores from hi + lo means (PlanOptions::block_means_lo: the
// token kernel's scorer reads hi alone).
TEST(SelectPlanTest, TokenItemsScoreTheirOwnBlocksWhenEveryRowCan) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  struct Seen {
    int block_launches = 0;
    int token_launches = 0;
    int32_t smem_bytes = -1;  // of the clustered launch
    int scoring = 0;          // groups with tokens_score_blocks
    int choosing = 0;         // groups with tokens_choose
    int hi_only = 0;          // groups with means_hi_only
  };
  auto plan_of = [&](const std::vector<int64_t>& positions, bool option,
                     bool pair_blocks, bool means_lo = false) {
    PlanOptions options = TmaOptions(kH200Clusters);
    for (int c = 2; c <= kMaxClusterItems; ++c) {
      options.clusters_resident_spread[c] = 64;
    }
    options.pair_hisa_blocks = pair_blocks;  // false: as rows of many requests
    options.tokens_score_blocks = option;
    options.block_means_lo = means_lo;
    const Planned planned = PlanHisaRows(&store, &config, positions, options);
    const SelectPlan& plan = planned.plan;
    const PlanImage& image = planned.image;
    Seen seen;
    int64_t items = 0;
    for (const LaunchSpec& l : plan.launches) {
      EXPECT_EQ(l.first_item, items) << "launches cover the items in order";
      items += l.num_items;
      if (l.stage == LaunchSpec::kBlockScores) {
        ++seen.block_launches;
        continue;
      }
      ++seen.token_launches;
      if (l.cluster > 1) seen.smem_bytes = l.smem_bytes;
      // Every CTA of a cluster is an item of its group, rank = split.
      for (int64_t i = l.first_item; i < l.first_item + l.num_items; ++i) {
        const WorkItem& w = image.work[i];
        EXPECT_TRUE(w.group >= 0 && w.group < plan.num_groups) << w.group;
        EXPECT_EQ(w.split, (i - l.first_item) % l.cluster);
      }
    }
    for (int64_t g = 0; g < plan.num_descriptors; ++g) {
      const GroupDesc& gd = image.groups[g];
      seen.choosing += gd.tokens_choose;
      seen.hi_only += gd.means_hi_only;
      if (!gd.tokens_score_blocks) continue;
      ++seen.scoring;
      EXPECT_EQ(gd.tokens_choose, 1);
      EXPECT_EQ(gd.block_items, 0);
      EXPECT_GE(gd.num_splits, 2);
    }
    return seen;
  };
  // 64 rows at 64K: 512 blocks over clusters of 4, one tile an item.
  const Seen fused = plan_of(DecodePositions(64, 65536), true, false);
  EXPECT_EQ(fused.block_launches, 0);
  EXPECT_EQ(fused.token_launches, 1);
  EXPECT_EQ(fused.scoring, 64);
  EXPECT_EQ(fused.smem_bytes, kTmaSpreadSmemBytes);
  EXPECT_EQ(fused.hi_only, 64);
  // Block scores from hi + lo: the block launch stays.
  const Seen lo = plan_of(DecodePositions(64, 65536), true, false, true);
  EXPECT_EQ(lo.block_launches, 1);
  EXPECT_EQ(lo.scoring, 0);
  EXPECT_EQ(lo.hi_only, 0);
  EXPECT_EQ(lo.choosing, 64);
  // Off: the block launch and the choice by counts, as before.
  const Seen off = plan_of(DecodePositions(64, 65536), false, false);
  EXPECT_EQ(off.block_launches, 1);
  EXPECT_EQ(off.scoring, 0);
  EXPECT_EQ(off.choosing, 64);
  // 8 rows at 128K (one CTA per SM, no spread smem of their own): fused,
  // with the spread launch's shared memory.
  const Seen few = plan_of(DecodePositions(8, 131072), true, false);
  EXPECT_EQ(few.block_launches, 0);
  EXPECT_EQ(few.scoring, 8);
  EXPECT_EQ(few.smem_bytes, kTmaSpreadSmemBytes);
  // Rows whose items would score more than kOwnBlockTiles tiles each.
  const int64_t too_long =
      (int64_t{kOwnBlockTiles} * kTileSlots * 8 + 8) * config.block_size;
  const Seen long_rows = plan_of(DecodePositions(64, too_long), true, false);
  EXPECT_EQ(long_rows.block_launches, 1);
  EXPECT_EQ(long_rows.scoring, 0);
  // Rows of one request whose block stage is paired do not choose: the
  // block launch stays for every row.
  const Seen paired = plan_of(DecodePositions(64, 65536), true, true);
  EXPECT_EQ(paired.block_launches, 1);
  EXPECT_EQ(paired.scoring, 0);
}

// Pooled HISA rows (one work item per row: a prefill's many rows of one
// request) score and choose their own blocks (PlanOptions::
// pooled_rows_score_blocks): no block launch, the pooled launch keeps its
// own shared memory, every HISA row's group scores and chooses. Rows past
// kPooledOwnBlockTiles tiles of blocks, hi + lo means, or the option off
// keep the block launch for all.
TEST(SelectPlanTest, PooledRowsScoreTheirOwnBlocksWhenEveryRowCan) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  struct Seen {
    int block_launches = 0;
    int pooled_launches = 0;
    int32_t pooled_smem_bytes = -1;
    int scoring = 0;   // groups with tokens_score_blocks
    int choosing = 0;  // groups with tokens_choose
  };
  // `rows` rows ending at position `last`, consecutive (a causal prefill's
  // last rows).
  auto plan_of = [&](int rows, int64_t last, bool option, bool means_lo) {
    PlanOptions options = TmaOptions(kH200Clusters);
    options.pooled_rows_score_blocks = option;
    options.block_means_lo = means_lo;
    std::vector<int64_t> positions;
    for (int i = 0; i < rows; ++i) positions.push_back(last - i);
    const Planned planned = PlanHisaRows(&store, &config, positions, options);
    Seen seen;
    int64_t items = 0;
    for (const LaunchSpec& l : planned.plan.launches) {
      EXPECT_EQ(l.first_item, items) << "launches cover the items in order";
      items += l.num_items;
      if (l.stage == LaunchSpec::kBlockScores) ++seen.block_launches;
      if (l.scorer == LaunchSpec::kWgmmaTmaPool) {
        ++seen.pooled_launches;
        seen.pooled_smem_bytes = l.smem_bytes;
        EXPECT_EQ(l.num_items, rows) << "one item per row";
      }
    }
    for (int64_t g = 0; g < planned.plan.num_groups; ++g) {
      const GroupDesc& gd = planned.image.groups[g];
      seen.choosing += gd.tokens_choose;
      if (!gd.tokens_score_blocks) continue;
      ++seen.scoring;
      EXPECT_EQ(gd.block_items, 0);
      EXPECT_EQ(gd.num_splits, 1);
    }
    return seen;
  };
  const int rows = 2048;  // too many to split: pooled
  const Seen fused = plan_of(rows, 65535, true, false);
  EXPECT_EQ(fused.pooled_launches, 1);
  EXPECT_EQ(fused.block_launches, 0);
  EXPECT_EQ(fused.scoring, rows);
  EXPECT_EQ(fused.choosing, rows);
  EXPECT_EQ(fused.pooled_smem_bytes, 0) << "the pooled kernel's own";
  // Off, or from hi + lo means: the (paired) block launch stays.
  for (const Seen& kept : {plan_of(rows, 65535, false, false),
                           plan_of(rows, 65535, true, true)}) {
    EXPECT_EQ(kept.pooled_launches, 1);
    EXPECT_EQ(kept.block_launches, 1);
    EXPECT_EQ(kept.scoring, 0);
    EXPECT_EQ(kept.choosing, 0);
  }
  // The longest rows a pooled item scores itself, and one block more.
  const int64_t most = int64_t{kPooledOwnBlockTiles} * kTileSlots;  // blocks
  const Seen longest = plan_of(rows, most * config.block_size - 1, true, false);
  EXPECT_EQ(longest.block_launches, 0);
  EXPECT_EQ(longest.scoring, rows);
  const Seen too_long = plan_of(rows, most * config.block_size, true, false);
  EXPECT_EQ(too_long.pooled_launches, 1);
  EXPECT_EQ(too_long.block_launches, 1);
  EXPECT_EQ(too_long.scoring, 0);
}

// The request path plans straight into pinned staging (BuildSelectPlanInto);
// it must produce exactly BuildSelectPlan's image and layout, whatever the
// destination held before, and write nothing when the image does not fit.
TEST(SelectPlanTest, PlanIntoEqualsBuildSelectPlan) {
  const uint64_t seed = ref::TestSeed() + 83;
  std::mt19937_64 rng(seed);
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  SelectPlan reused;  // reused across batches, as the backend's thread does
  for (int trial = 0; trial < 40; ++trial) {
    Batch b;
    b.q.resize(64 * 128);
    for (uint8_t& v : b.q) v = static_cast<uint8_t>(rng() % 0x7E);
    b.scales.assign(64, 0.25f);
    b.weights.resize(64);
    for (float& w : b.weights) w = static_cast<float>(rng() % 200) / 100 - 1;
    // Every fourth batch has enough rows for several packing chunks.
    const int num_rows =
        1 + static_cast<int>(rng() % (trial % 4 == 0 ? 100 : 12));
    for (int r = 0; r < num_rows; ++r) {
      const int m = 1 + static_cast<int>(rng() % 40);
      const int k = 1 + static_cast<int>(rng() % std::min(2048, m * 128));
      const int64_t t = static_cast<int64_t>(rng() % 20000);
      const SelectMode mode = rng() % 2 ? SelectMode::kHisa : SelectMode::kDense;
      AddRows(b, &store, &config, {t}, mode, k, m);
    }
    PlanOptions options;
    options.num_sms = 132;
    absl::StatusOr<SelectPlan> want = BuildSelectPlan(b.tasks, options);
    ASSERT_TRUE(want.ok()) << want.status();

    std::vector<uint8_t> image(want->image.size() + 64);
    for (uint8_t& v : image) v = static_cast<uint8_t>(rng());
    const std::vector<uint8_t> before = image;
    // Too small: nothing written, the size reported.
    ASSERT_TRUE(BuildSelectPlanInto(b.tasks, options, image.data(),
                                    want->image_bytes - 1, &reused)
                    .ok());
    EXPECT_EQ(reused.image_bytes, want->image_bytes);
    EXPECT_EQ(image, before) << "seed " << seed << " trial " << trial;

    ASSERT_TRUE(BuildSelectPlanInto(b.tasks, options, image.data(),
                                    static_cast<int64_t>(image.size()), &reused)
                    .ok());
    ASSERT_EQ(reused.image_bytes, want->image_bytes);
    EXPECT_TRUE(std::equal(want->image.begin(), want->image.end(),
                           image.begin()))
        << "seed " << seed << " trial " << trial;
    EXPECT_TRUE(std::equal(image.begin() + want->image_bytes, image.end(),
                           before.begin() + want->image_bytes))
        << "wrote past the image; seed " << seed << " trial " << trial;
    EXPECT_EQ(reused.device_bytes, want->device_bytes);
    EXPECT_EQ(reused.out_pos_off, want->out_pos_off);
    EXPECT_EQ(reused.out_scores_off, want->out_scores_off);
    EXPECT_EQ(reused.task_out_offset, want->task_out_offset);
    EXPECT_EQ(reused.launches.size(), want->launches.size());
    EXPECT_EQ(reused.num_groups, want->num_groups);

    // The queries packed in chunks on several threads: the same image.
    for (uint8_t& v : image) v = static_cast<uint8_t>(rng());
    testing_support::ThreadPerChunk parallel;
    ASSERT_TRUE(BuildSelectPlanInto(b.tasks, options, image.data(),
                                    static_cast<int64_t>(image.size()),
                                    &reused, &parallel)
                    .ok());
    EXPECT_GE(parallel.chunks, 1);
    EXPECT_TRUE(std::equal(want->image.begin(), want->image.end(),
                           image.begin()))
        << "threaded packing; seed " << seed << " trial " << trial;
    if (num_rows > 64) {
      EXPECT_GE(parallel.chunks, 2);
    }
  }
}

// The kernels write scores only for a plan in which some row asked for
// them; the reused plan of the next batch forgets the last one's choice.
TEST(SelectPlanTest, ScoresAreWrittenOnlyWhenSomeRowAsks) {
  const RequestConfig config{1, 128, 128, KeyFormat::kFp8E4M3,
                             BlockPooling::kMean};
  CudaRequestStore store(nullptr, config);
  PlanOptions options;
  options.num_sms = 132;
  Batch b;
  AddRows(b, &store, &config, {3000, 9000}, SelectMode::kHisa, 2048, 64);
  AddRows(b, &store, &config, {500}, SelectMode::kDense, 2048, 64);
  std::vector<uint8_t> image(1 << 22);
  SelectPlan reused;
  for (int asking = -1; asking < 3; ++asking) {
    for (int i = 0; i < 3; ++i) b.rows[i].return_scores = i == asking;
    absl::StatusOr<SelectPlan> plan = BuildSelectPlan(b.tasks, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->write_scores, asking >= 0) << "asking row " << asking;
    ASSERT_TRUE(BuildSelectPlanInto(b.tasks, options, image.data(),
                                    static_cast<int64_t>(image.size()),
                                    &reused)
                    .ok());
    EXPECT_EQ(reused.write_scores, asking >= 0) << "asking row " << asking;
  }
}

// Byte accounting is whole pages: key pages of P tokens and summary pages of
// BPP blocks, kPageBytes each.
TEST(SelectPlanTest, BytesAfterAppendCountsPages) {
  std::mt19937_64 rng(ref::TestSeed() + 71);
  for (KeyFormat f : {KeyFormat::kFp8E4M3, KeyFormat::kBf16, KeyFormat::kFp32}) {
    for (int d : {64, 128}) {
      const RequestConfig config{2, d, 64, f, BlockPooling::kMean};
      CudaRequestStore store(nullptr, config);
      const PageGeometry geo = MakeGeometry(d, static_cast<int>(f), 64, 1);
      EXPECT_EQ(store.bytes_reserved(), 0);
      for (int trial = 0; trial < 20; ++trial) {
        const int64_t n = std::uniform_int_distribution<int64_t>(1, 200000)(rng);
        const int64_t blocks = (n + 63) / 64;
        const int64_t pages = (n + geo.tokens_per_page - 1) / geo.tokens_per_page +
                              (blocks + geo.blocks_per_page - 1) / geo.blocks_per_page;
        EXPECT_EQ(store.BytesAfterAppend(1, n), pages * kPageBytes)
            << FormatName(f) << " D=" << d << " n=" << n;
        // Never less than the keys themselves.
        EXPECT_GE(store.BytesAfterAppend(1, n),
                  n * (d * BytesPerValue(f) + (f == KeyFormat::kFp8E4M3 ? 4 : 0)));
      }
    }
  }
  // FP8, D = 128: 132 B per token, exactly 512 tokens (4 blocks of 128) per
  // 66 KiB page, so aligned 128-token tiles never straddle pages (the bulk
  // tensor copies of the token kernel rely on it).
  EXPECT_EQ(MakeGeometry(128, 1, 128, 1).tokens_per_page, 512);
  EXPECT_EQ(512 * 132, kPageBytes);
}

}  // namespace
}  // namespace hisa::cuda
