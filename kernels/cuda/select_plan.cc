#include "kernels/cuda/select_plan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_store.h"
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/select_layout.h"
#include "kernels/formats.h"

namespace hisa::cuda {
namespace {

int64_t AlignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Resident CTAs per SM of a token kernel (select_layout.h).
int64_t TokenCtasPerSm(LaunchSpec::Scorer scorer) {
  switch (scorer) {
    case LaunchSpec::kWgmmaTma: return kTmaTokenCtasPerSm;
    case LaunchSpec::kWgmmaTmaPool: return kTmaTokenCtasPerSm;
    case LaunchSpec::kWgmma:
    case LaunchSpec::kWgmmaTopkTma: return kWgmmaTokenCtasPerSm;
    default: return 1;
  }
}

// Work items per group for `groups` groups of `tiles` tiles each on a GPU
// that runs `resident` CTAs at once: the split count in [1, max_splits] with
// the least modelled time, waves x (tiles per item + 2), where the 2 tiles
// stand for an item's prologue and its group's tail. Decode batches of few
// requests split into one full wave; big batches do not split.
int64_t ChooseSplits(int64_t groups, int64_t tiles, int64_t max_splits,
                     int64_t resident) {
  groups = std::max<int64_t>(groups, 1);
  // Past two full waves' worth of items the modelled time only grows.
  const int64_t last =
      std::min<int64_t>(max_splits, 2 * resident / groups + 1);
  int64_t best = 1, best_cost = std::numeric_limits<int64_t>::max();
  for (int64_t sp = 1; sp <= last; ++sp) {
    const int64_t cost =
        CeilDiv(groups * sp, resident) * (CeilDiv(tiles, sp) + 2);
    if (cost < best_cost) {
      best = sp;
      best_cost = cost;
    }
  }
  return best;
}

// Items per row of split selects (one thread-block cluster per row): the
// most, up to kMaxClusterItems, whose `groups` clusters fit in one wave
// with an eighth to spare; 0 when none do (the rows then split as
// ChooseSplits says, and each row's last item selects alone). The spare:
// the clusters of a launch that starts early (programmatic dependent
// launch) are placed around the block stage's CTAs, and 64 clusters of 5
// where 69 fit an empty H200 still ran a second wave in 3 of 4 runs
// (bench/RESULTS.md section 15).
int ClusterItems(int64_t groups, const PlanOptions& options) {
  if (options.cluster_items > 0) {
    return std::clamp(options.cluster_items, 2, kMaxClusterItems);
  }
  for (int c = kMaxClusterItems; c >= 2; --c) {
    const int64_t fit =
        options.clusters_known
            ? options.clusters_resident[c]
            : int64_t{kTmaTokenCtasPerSm} * options.num_sms / c;
    if (groups <= fit - fit / 8) return c;
  }
  return 0;
}

// How one row's query is packed, and which kernels score it.
struct RowShape {
  bool fast = false;
  int mt = 0;
  int q_heads = 0;
  int64_t q_bytes = 0;
  int64_t w_count = 0;
};

RowShape ShapeOf(const RequestConfig& cfg, const QueryRow& row) {
  RowShape s;
  const int D = cfg.head_dim;
  const int H = row.num_heads;
  s.fast = cfg.key_format == KeyFormat::kFp8E4M3 &&
           row.q_format == KeyFormat::kFp8E4M3 && (D == 64 || D == 128);
  if (s.fast) {
    s.mt = H <= 16 ? 1 : (H <= 32 ? 2 : 4);
    s.q_heads = s.mt < 4 ? s.mt * 16 : (H + 63) / 64 * 64;
    // fp8 only: the block scorer converts it to bf16 on the device.
    s.q_bytes = int64_t{s.q_heads} * D;
    s.w_count = s.q_heads;
  } else {
    s.q_heads = H;
    s.q_bytes = int64_t{H} * D * 4;
    s.w_count = H;
  }
  return s;
}

// Whether a group of rows of this shape scores its tokens with the
// bulk-tensor-copy kernels (tma_token_kernel.cuh, or the running top-k
// kernel with bulk copies): FP8 keys and queries, D = 128, 64 query heads
// on warpgroup MMA, and every 128-slot tile an aligned run of 128 keys in
// one page (HISA: B % 128 == 0).
bool UsesTma(const RequestConfig& cfg, const RowShape& shape,
             int64_t tokens_per_page, bool hisa, const PlanOptions& options) {
  return options.use_tma && options.use_wgmma && shape.fast &&
         cfg.head_dim == 128 && shape.q_heads == 64 &&
         cfg.key_format == KeyFormat::kFp8E4M3 &&
         (!hisa || cfg.block_size % kTileSlots == 0) &&
         tokens_per_page % kTileSlots == 0;
}

// Whether a row whose candidates are its whole prefix (a DENSE row, or a
// HISA row with c + 1 <= m) is a slot-key row of the bulk-copy kernel: at
// most kSlotSelectCap candidates, scored once and selected once, as HISA
// rows are. Such rows stay single: a pair would share its key tiles but
// take the slower running top-k kernel.
bool PrefixSlotKeyRow(const SelectTask& t, const PlanOptions& options) {
  const auto* store = static_cast<const CudaRequestStore*>(t.store);
  return options.slot_scores && t.row->position + 1 <= kSlotSelectCap &&
         UsesTma(*t.config, ShapeOf(*t.config, *t.row),
                 store->geometry().tokens_per_page, false, options);
}

// Blocks HISA chooses for a row whose own block is c.
int64_t ChosenBlocks(int64_t c, int m) {
  return c + 1 <= m ? c + 1 : std::max(m, 2);
}

void PackQuery(const SelectTask& task, const RowShape& s, uint8_t* q,
               float* w) {
  const QueryRow& row = *task.row;
  const int D = task.config->head_dim;
  const int H = row.num_heads;
  if (s.fast) {
    uint8_t* q8 = q;
    std::memcpy(q8, row.q.data(), int64_t{H} * D);
    std::memset(q8 + int64_t{H} * D, 0, int64_t{s.q_heads - H} * D);
    for (int h = 0; h < s.q_heads; ++h) {
      if (h >= H) {
        w[h] = 0.f;
        continue;
      }
      const float scale = row.q_scales[h];
      // ReLU(|s| x) = |s| ReLU(x): flip the signs of a negative-scale head
      // and fold |s| into its weight.
      if (std::signbit(scale)) {
        for (int d = 0; d < D; ++d) q8[int64_t{h} * D + d] ^= 0x80;
      }
      w[h] = row.weights[h] * std::fabs(scale);
    }
  } else {
    float* qf = reinterpret_cast<float*>(q);
    DecodeToFloat(row.q_format, row.q.data(), int64_t{H} * D, qf);
    if (row.q_format == KeyFormat::kFp8E4M3) {
      for (int h = 0; h < H; ++h) {
        for (int d = 0; d < D; ++d) qf[int64_t{h} * D + d] *= row.q_scales[h];
      }
    }
    for (int h = 0; h < H; ++h) w[h] = row.weights[h];
  }
}

struct GroupKey {
  const RequestStore* store;
  int layer;
  int mode;
  int k;
  int m;
  int heads;
  int q_format;
  bool operator<(const GroupKey& o) const {
    return std::tie(store, layer, mode, k, m, heads, q_format) <
           std::tie(o.store, o.layer, o.mode, o.k, o.m, o.heads, o.q_format);
  }
};

struct GroupBuild {
  int tasks[kMaxGroupRows] = {0, 0};
  int num_rows = 1;
  bool hisa = false;  // effective: some row has c + 1 > m
  int run = 0;        // rows of one run share (store, layer, mode, shape)
  RowShape shape;
};

struct ItemBuild {
  LaunchSpec::Stage stage;
  LaunchSpec::Scorer scorer;
  int mt;
  int ks;
  int rows;
  int64_t work;
  WorkItem item;
  int64_t seq = 0;  // creation order: ties keep it (a stable sort)
  auto SpecKey() const {
    return std::make_tuple(static_cast<int>(scorer), mt, ks, rows);
  }
};

// Everything a plan is built from besides the SelectPlan itself. Vectors are
// cleared, never shrunk, so a scratch reused across batches (one per thread
// in BuildSelectPlanInto) stops allocating once it has seen the largest one.
struct PlanScratch {
  struct Run {
    int begin = 0, end = 0, first = 0;  // range of `order`, lowest task index
  };
  std::vector<GroupKey> keys;         // per task
  std::vector<int> order;             // task indices sorted by key, position
  std::vector<Run> runs;              // one per distinct key
  std::vector<GroupBuild> groups;
  std::vector<std::pair<int, int>> layer_runs;  // (group, first group) sorted
  std::vector<int> group_layer;       // per group: run id, then layer index
  std::vector<int> run_layer;         // per (store, layer) run: layer index
  std::vector<LayerView> layers;
  std::vector<uint32_t> tables;
  std::vector<RowDesc> rows;
  std::vector<int> row_group;         // per row: its group
  std::vector<int> row_task;          // per row: its task
  std::vector<GroupDesc> gdesc;
  std::vector<int64_t> union_cap;
  std::vector<int> block_owner;       // per token group: block group or -1
  std::vector<ItemBuild> block_items, token_items;
  std::vector<WorkItem> items;
  std::vector<WorkItem> clustered;    // items rebuilt in cluster order
  std::vector<int> launch_groups;     // groups of one launch, in order
  std::vector<int> group_cluster;     // per group: its cluster in the launch
  std::vector<char> own_blocks;       // per group: step 4c may apply
  int64_t q_bytes = 0;  // end of the last row's query in the q region
  int64_t w_count = 0;  // floats in the weight region

  void Clear() {
    keys.clear();
    order.clear();
    runs.clear();
    groups.clear();
    layer_runs.clear();
    group_layer.clear();
    run_layer.clear();
    layers.clear();
    tables.clear();
    rows.clear();
    row_group.clear();
    row_task.clear();
    gdesc.clear();
    union_cap.clear();
    block_owner.clear();
    block_items.clear();
    token_items.clear();
    items.clear();
    clustered.clear();
    launch_groups.clear();
    group_cluster.clear();
    own_blocks.clear();
    q_bytes = 0;
    w_count = 0;
  }
};

// Empties `plan`, keeping the capacity of its vectors.
void ResetPlan(SelectPlan* plan) {
  std::vector<uint8_t> image = std::move(plan->image);
  std::vector<LaunchSpec> launches = std::move(plan->launches);
  std::vector<int64_t> task_out_offset = std::move(plan->task_out_offset);
  image.clear();
  launches.clear();
  task_out_offset.clear();
  *plan = SelectPlan();
  plan->image = std::move(image);
  plan->launches = std::move(launches);
  plan->task_out_offset = std::move(task_out_offset);
}

// Plans `tasks` into `s` and every field of `plan` except the image bytes
// (plan->image stays empty; plan->image_bytes is set).
void Layout(absl::Span<const SelectTask> tasks, const PlanOptions& options,
            PlanScratch& s, SelectPlan* plan) {
  s.Clear();
  ResetPlan(plan);
  const int n = static_cast<int>(tasks.size());
  plan->task_out_offset.assign(n, -1);
  plan->write_scores =
      std::any_of(tasks.begin(), tasks.end(),
                  [](const SelectTask& t) { return t.row->return_scores; });

  // 1. Groups: rows of one (store, layer, mode, k, m, query shape) sorted by
  // position (ties: task order), neighbours paired; keys in order of their
  // first task.
  for (int i = 0; i < n; ++i) {
    const SelectTask& t = tasks[i];
    s.keys.push_back(GroupKey{t.store,
                              t.row->layer,
                              static_cast<int>(t.mode),
                              t.row->k,
                              t.mode == SelectMode::kHisa ? t.row->m : 0,
                              t.row->num_heads,
                              static_cast<int>(t.row->q_format)});
    s.order.push_back(i);
  }
  std::sort(s.order.begin(), s.order.end(), [&](int a, int b) {
    if (s.keys[a] < s.keys[b]) return true;
    if (s.keys[b] < s.keys[a]) return false;
    const int64_t pa = tasks[a].row->position, pb = tasks[b].row->position;
    return pa != pb ? pa < pb : a < b;
  });
  for (int i = 0; i < n;) {
    PlanScratch::Run run;
    run.begin = i;
    run.first = s.order[i];
    const GroupKey& key = s.keys[s.order[i]];
    while (i < n && !(key < s.keys[s.order[i]])) {
      run.first = std::min(run.first, s.order[i]);
      ++i;
    }
    run.end = i;
    s.runs.push_back(run);
  }
  std::sort(s.runs.begin(), s.runs.end(),
            [](const PlanScratch::Run& a, const PlanScratch::Run& b) {
              return a.first < b.first;
            });
  for (size_t run_id = 0; run_id < s.runs.size(); ++run_id) {
    const PlanScratch::Run& run = s.runs[run_id];
    const int* idx = s.order.data() + run.begin;
    const size_t count = static_cast<size_t>(run.end - run.begin);
    const bool hisa_key =
        s.keys[run.first].mode == static_cast<int>(SelectMode::kHisa);
    // A HISA row with c + 1 <= m chooses every block: it is a DENSE row.
    auto dense_equivalent = [&](int i) {
      return tasks[i].row->position / tasks[i].config->block_size + 1 <=
             tasks[i].row->m;
    };
    for (size_t j = 0; j < count;) {
      bool pair = j + 1 < count;
      if (!hisa_key) {
        pair = pair && options.pair_rows;
      } else if (!options.pair_hisa_rows) {
        pair = pair && options.pair_rows && dense_equivalent(idx[j]) &&
               dense_equivalent(idx[j + 1]);
      }
      pair = pair && !PrefixSlotKeyRow(tasks[idx[j]], options) &&
             !PrefixSlotKeyRow(tasks[idx[j + 1]], options);
      GroupBuild gb;
      gb.run = static_cast<int>(run_id);
      gb.num_rows = pair ? 2 : 1;
      for (int g = 0; g < gb.num_rows; ++g) gb.tasks[g] = idx[j + g];
      j += gb.num_rows;
      const SelectTask& t0 = tasks[gb.tasks[0]];
      if (t0.mode == SelectMode::kHisa) {
        // Rows whose every eligible block is chosen are DENSE rows (SPEC 4.2:
        // the same answer); the group needs block selection only if some
        // row has c + 1 > m.
        for (int g = 0; g < gb.num_rows; ++g) {
          const SelectTask& t = tasks[gb.tasks[g]];
          const int64_t c = t.row->position / t.config->block_size;
          if (c + 1 > t.row->m) gb.hisa = true;
        }
      }
      gb.shape = ShapeOf(*t0.config, *t0.row);
      s.groups.push_back(gb);
    }
  }
  const int num_groups = static_cast<int>(s.groups.size());
  plan->num_groups = num_groups;

  // 2. Layer views and page tables, one per (store, layer) in the batch, in
  // order of the first group that reads it.
  auto layer_key = [&](int gi) {
    const SelectTask& t = tasks[s.groups[gi].tasks[0]];
    return std::make_pair(t.store, t.row->layer);
  };
  for (int gi = 0; gi < num_groups; ++gi) s.layer_runs.push_back({gi, gi});
  std::sort(s.layer_runs.begin(), s.layer_runs.end(),
            [&](const std::pair<int, int>& a, const std::pair<int, int>& b) {
              const auto ka = layer_key(a.first), kb = layer_key(b.first);
              return ka != kb ? ka < kb : a.first < b.first;
            });
  s.group_layer.assign(num_groups, 0);
  int num_runs = 0;
  for (int i = 0; i < num_groups; ++i) {
    if (i > 0 && layer_key(s.layer_runs[i].first) ==
                     layer_key(s.layer_runs[i - 1].first)) {
      s.group_layer[s.layer_runs[i].first] = num_runs - 1;
    } else {
      s.group_layer[s.layer_runs[i].first] = num_runs++;
    }
  }
  s.run_layer.assign(num_runs, -1);
  for (int gi = 0; gi < num_groups; ++gi) {
    int& index = s.run_layer[s.group_layer[gi]];
    if (index < 0) {
      const SelectTask& t = tasks[s.groups[gi].tasks[0]];
      const auto* store = static_cast<const CudaRequestStore*>(t.store);
      const CudaRequestStore::Layer& l = store->layer(t.row->layer);
      LayerView v;
      v.geo = store->geometry();
      v.tokens_per_page_magic = DivMagic(v.geo.tokens_per_page);
      v.blocks_per_page_magic = DivMagic(v.geo.blocks_per_page);
      v.length = l.length;
      v.key_table = static_cast<int64_t>(s.tables.size());
      s.tables.insert(s.tables.end(), l.key_pages.begin(), l.key_pages.end());
      v.summary_table = static_cast<int64_t>(s.tables.size());
      s.tables.insert(s.tables.end(), l.summary_pages.begin(),
                      l.summary_pages.end());
      index = static_cast<int>(s.layers.size());
      s.layers.push_back(v);
    }
    s.group_layer[gi] = index;
  }

  // 3. Rows, query offsets, group descriptors. Queries are packed later,
  // straight into the image (WriteImage).
  s.gdesc.resize(num_groups);
  s.union_cap.assign(num_groups, 0);
  int64_t j_total = 0, out_total = 0, union_total = 0;
  int union_groups = 0;
  for (int gi = 0; gi < num_groups; ++gi) {
    const GroupBuild& gb = s.groups[gi];
    const SelectTask& t0 = tasks[gb.tasks[0]];
    GroupDesc& gd = s.gdesc[gi];
    gd.layer = s.group_layer[gi];
    gd.mode = gb.hisa ? kModeHisa : kModeDense;
    gd.num_rows = gb.num_rows;
    gd.heads = t0.row->num_heads;
    gd.q_heads = gb.shape.q_heads;
    gd.k = t0.row->k;
    gd.m = t0.row->m;
    gd.means_hi_only = gb.hisa && !options.block_means_lo ? 1 : 0;
    gd.max_position = 0;
    int64_t cap = 0;
    const int block = t0.config->block_size;
    for (int g = 0; g < gb.num_rows; ++g) {
      const SelectTask& t = tasks[gb.tasks[g]];
      RowDesc r;
      r.position = t.row->position;
      r.k = t.row->k;
      r.q_offset = AlignUp(s.q_bytes, 16);
      s.q_bytes = r.q_offset + gb.shape.q_bytes;
      r.w_offset = s.w_count;
      s.w_count += gb.shape.w_count;
      const int64_t c = r.position / block;
      if (gb.hisa) {
        r.j_offset = j_total;
        j_total += c + 1;
        cap += ChosenBlocks(c, gd.m);
      }
      r.out_offset = out_total;
      plan->task_out_offset[gb.tasks[g]] = out_total;
      out_total += r.k;
      gd.rows[g] = static_cast<int32_t>(s.rows.size());
      s.rows.push_back(r);
      s.row_group.push_back(gi);
      s.row_task.push_back(gb.tasks[g]);
      gd.max_position = std::max(gd.max_position, r.position);
    }
    if (gb.num_rows == 1) gd.rows[1] = gd.rows[0];
    if (gb.hisa) {
      cap = std::min(cap, gd.max_position / block + 1);
      s.union_cap[gi] = cap;
      gd.union_offset = union_total;
      gd.union_index = union_groups++;
      union_total += cap;
    }
  }

  // 3b. Block-stage pairs: neighbouring single-row HISA groups of one run
  // (consecutive prefill rows) share one block-scoring work item, which
  // reads every block mean once for both rows and writes each row's choice
  // as its own group's union; token work stays per row.
  s.block_owner.assign(num_groups, -1);
  for (int gi = 0; options.pair_hisa_blocks && gi + 1 < num_groups; ++gi) {
    const GroupBuild& a = s.groups[gi];
    const GroupBuild& z = s.groups[gi + 1];
    if (!a.hisa || !z.hisa || a.num_rows != 1 || z.num_rows != 1 ||
        a.run != z.run) {
      continue;
    }
    GroupDesc bg = s.gdesc[gi];
    bg.num_rows = 2;
    bg.rows[1] = s.gdesc[gi + 1].rows[0];
    bg.max_position = std::max(bg.max_position, s.gdesc[gi + 1].max_position);
    bg.split_unions = 1;
    bg.union_groups[0] = gi;
    bg.union_groups[1] = gi + 1;
    bg.block_items = 0;
    s.block_owner[gi] = s.block_owner[gi + 1] =
        static_cast<int>(s.gdesc.size());
    s.gdesc.push_back(bg);
    ++gi;
  }

  // 4. Work items.
  const int64_t num_sms = std::max(1, options.num_sms);
  const int64_t target_items = 2 * num_sms;
  // The group whose descriptor block-stage items of token group gi use, or
  // -1 when another group's items cover gi (the second row of a pair).
  auto block_group = [&](int gi) {
    const int owner = s.block_owner[gi];
    if (owner < 0) return gi;
    return s.gdesc[owner].union_groups[0] == gi ? owner : -1;
  };
  int64_t total_block_tiles = 0;
  for (int gi = 0; gi < num_groups; ++gi) {
    const int bgi = block_group(gi);
    if (!s.groups[gi].hisa || bgi < 0) continue;
    const int block = tasks[s.groups[gi].tasks[0]].config->block_size;
    total_block_tiles +=
        CeilDiv(s.gdesc[bgi].max_position / block + 1, kTileSlots);
  }
  const int64_t tiles_per_block_item =
      std::max<int64_t>(1, total_block_tiles / target_items);
  int64_t partial_lists = 0;
  int32_t partial_stride = 0;
  int64_t slot_scores_total = 0;  // floats
  int32_t hist_groups = 0;        // slot-key groups
  bool any_pooled = false;        // kWgmmaTmaPool groups
  const int cluster_items = ClusterItems(plan->num_groups, options);
  // ChooseSplits is pure, and a batch's groups mostly ask it the same
  // question (decode rows of one length): the last answer is kept (a twelfth
  // of planning 64 decode rows, perf).
  struct SplitQuestion {
    int64_t tiles = -1, max_splits = -1, resident = -1, splits = 1;
  } last_split;
  auto choose_splits = [&](int64_t tiles, int64_t max_splits,
                           int64_t resident) {
    SplitQuestion& q = last_split;
    if (q.tiles != tiles || q.max_splits != max_splits ||
        q.resident != resident) {
      q = SplitQuestion{tiles, max_splits, resident,
                        ChooseSplits(plan->num_groups, tiles, max_splits,
                                     resident)};
    }
    return q.splits;
  };
  for (int gi = 0; gi < num_groups; ++gi) {
    const GroupBuild& gb = s.groups[gi];
    GroupDesc& gd = s.gdesc[gi];
    const RequestConfig& cfg = *tasks[gb.tasks[0]].config;
    const int D = cfg.head_dim;
    const int G = gb.num_rows;
    int64_t slots;
    const LaunchSpec::Scorer block_scorer =
        gb.shape.fast ? LaunchSpec::kMmaSync : LaunchSpec::kGeneric;
    LaunchSpec::Scorer token_scorer = block_scorer;
    if (gb.shape.fast && options.use_wgmma && D == 128 &&
        gb.shape.q_heads == 64) {
      token_scorer = LaunchSpec::kWgmma;
    }
    if (gb.hisa) {
      const int bgi = block_group(gi);
      if (bgi >= 0) {
        GroupDesc& bd = s.gdesc[bgi];
        const int64_t blocks = bd.max_position / cfg.block_size + 1;
        for (int64_t b = 0; b < blocks;
             b += tiles_per_block_item * kTileSlots) {
          WorkItem w;
          w.group = bgi;
          w.slot_begin = b;
          w.slot_end = std::min(blocks, b + tiles_per_block_item * kTileSlots);
          s.block_items.push_back(
              // The block kernel's mt: the query's 16-head tiles (its
              // shared query area holds exactly q_heads).
              {LaunchSpec::kBlockScores, block_scorer,
               gb.shape.q_heads / 16, D / 16,
               bd.num_rows, w.slot_end - w.slot_begin, w,
               static_cast<int64_t>(s.block_items.size())});
          ++bd.block_items;
        }
      }
      slots = s.union_cap[gi] * cfg.block_size;
    } else {
      slots = gd.max_position + 1;
    }
    // Slot-score group: one key per slot, selected once by the group's
    // last CTA (no running top-k); -1 until decided below.
    gd.slot_score_offset = -1;
    gd.slot_score_stride = 0;
    gd.slot_hist_index = -1;
    gd.split_select = 0;
    gd.tokens_choose = 0;
    bool pooled = false;
    // Tiles of aligned 128-key runs inside one page: bulk tensor copies.
    const bool tma =
        token_scorer == LaunchSpec::kWgmma &&
        UsesTma(cfg, gb.shape, s.layers[gd.layer].geo.tokens_per_page,
                gb.hisa, options);
    const int64_t tiles = CeilDiv(slots, kTileSlots);
    // Slot-score groups: single HISA rows; single whole-prefix rows too on
    // the bulk-copy kernel (PrefixSlotKeyRow).
    if (options.slot_scores && (gb.hisa || tma) && G == 1 &&
        token_scorer != LaunchSpec::kGeneric && slots <= kSlotSelectCap) {
      const int64_t stride = AlignUp(slots, 4);
      // On the bulk-copy kernel, a row that would not split (a batch of
      // many rows) takes the pooled form, scratch or not: one launch, no
      // group histogram or ticket.
      const bool unsplit =
          tma && (!options.allow_splits ||
                  choose_splits(tiles, tiles, kTmaTokenCtasPerSm * num_sms) ==
                      1);
      if (!unsplit && (slot_scores_total + G * stride) * 4 <=
                          options.slot_score_budget_bytes) {
        gd.slot_score_offset = slot_scores_total;
        gd.slot_score_stride = static_cast<int32_t>(stride);
        slot_scores_total += G * stride;
        // Its key histogram in global memory, if its last item selects
        // alone: step 4b.
        if (tma) token_scorer = LaunchSpec::kWgmmaTma;
      } else if (tma) {
        token_scorer = LaunchSpec::kWgmmaTmaPool;
        pooled = true;
        any_pooled = true;
      }
    }
    if (tma && token_scorer == LaunchSpec::kWgmma) {
      token_scorer = LaunchSpec::kWgmmaTopkTma;
    }
    // Split lists of a running top-k are merged (kFinalizeCap bounds it);
    // slot-score groups have nothing to merge.
    const int64_t max_splits =
        !options.allow_splits || pooled ? 1
        : gd.slot_score_offset >= 0
            ? tiles
            : std::min<int64_t>(tiles, kFinalizeCap / gd.k);
    // Split selects: the row's items form one thread-block cluster (step
    // 4b).
    if (token_scorer == LaunchSpec::kWgmmaTma && max_splits > 1 &&
        options.split_select && cluster_items >= 2) {
      gd.split_select = 1;
    }
    int64_t splits =
        gd.split_select
            ? std::min<int64_t>(tiles, cluster_items)
            : choose_splits(tiles, max_splits,
                            TokenCtasPerSm(token_scorer) * num_sms);
    const int64_t per = CeilDiv(tiles, splits);
    splits = CeilDiv(tiles, per);
    gd.num_splits = static_cast<int32_t>(splits);
    if (splits > 1 && gd.slot_score_offset < 0) {
      gd.partial_index = static_cast<int32_t>(partial_lists);
      partial_lists += splits * G;
      partial_stride = std::max(partial_stride, gd.k);
    }
    for (int64_t sp = 0; sp < splits; ++sp) {
      WorkItem w;
      w.group = gi;
      w.split = static_cast<int32_t>(sp);
      w.slot_begin = sp * per * kTileSlots;
      w.slot_end = std::min(slots, (sp + 1) * per * kTileSlots);
      s.token_items.push_back({LaunchSpec::kTokens, token_scorer, gb.shape.mt,
                               D / 32, G, w.slot_end - w.slot_begin, w,
                               static_cast<int64_t>(s.token_items.size())});
    }
  }
  // Stable order without std::stable_sort's temporary buffer: ties keep
  // creation order through `seq`.
  auto by_spec_then_work = [](const ItemBuild& a, const ItemBuild& b) {
    if (a.SpecKey() != b.SpecKey()) return a.SpecKey() < b.SpecKey();
    if (a.work != b.work) return a.work > b.work;  // longest first: a better tail
    return a.seq < b.seq;
  };
  // Items of equal rows (a decode batch) come in order already: a check
  // in one pass instead of a sort (a sixth of planning 64 decode rows).
  for (std::vector<ItemBuild>* v : {&s.block_items, &s.token_items}) {
    if (!std::is_sorted(v->begin(), v->end(), by_spec_then_work)) {
      std::sort(v->begin(), v->end(), by_spec_then_work);
    }
  }

  for (const std::vector<ItemBuild>* list : {&s.block_items, &s.token_items}) {
    for (const ItemBuild& ib : *list) {
      if (plan->launches.empty() || plan->launches.back().stage != ib.stage ||
          std::make_tuple(static_cast<int>(plan->launches.back().scorer),
                          plan->launches.back().mt, plan->launches.back().ks,
                          plan->launches.back().rows) != ib.SpecKey()) {
        LaunchSpec spec;
        spec.stage = ib.stage;
        spec.scorer = ib.scorer;
        spec.mt = ib.mt;
        spec.ks = ib.ks;
        spec.rows = ib.rows;
        spec.first_item = static_cast<int64_t>(s.items.size());
        plan->launches.push_back(spec);
      }
      s.items.push_back(ib.item);
      ++plan->launches.back().num_items;
    }
  }

  // 4b. Split selects (GroupDesc::split_select, set in step 4 for every
  // group of a kWgmmaTma launch): each group's items, in split order and
  // padded with empty items to the launch's most, C, form one
  // thread-block cluster of C CTAs (LaunchSpec::cluster) and select their
  // row together. The hardware runs a cluster's CTAs at once, so they may
  // wait for each other whatever else runs on the GPU. A launch whose
  // groups all have one item needs no cluster: each item selects alone.
  s.clustered.clear();
  s.group_cluster.assign(s.gdesc.size(), -1);
  s.own_blocks.assign(s.gdesc.size(), 0);
  for (LaunchSpec& l : plan->launches) {
    const int64_t first = static_cast<int64_t>(s.clustered.size());
    int32_t c = 1;
    bool split = false;
    for (int64_t i = l.first_item; l.stage == LaunchSpec::kTokens &&
                                   i < l.first_item + l.num_items;
         ++i) {
      const GroupDesc& gd = s.gdesc[s.items[i].group];
      split |= gd.split_select != 0;
      c = std::max(c, gd.num_splits);
    }
    if (!split || c < 2) {
      // Each group's last item selects alone: on the bulk-copy kernel from
      // the key histogram that the group's items add up in global memory.
      const bool slot_keys = l.stage == LaunchSpec::kTokens &&
                             l.scorer == LaunchSpec::kWgmmaTma;
      for (int64_t i = l.first_item;
           slot_keys && i < l.first_item + l.num_items; ++i) {
        GroupDesc& gd = s.gdesc[s.items[i].group];
        gd.split_select = 0;
        if (gd.slot_hist_index < 0) gd.slot_hist_index = hist_groups++;
      }
      s.clustered.insert(s.clustered.end(), s.items.begin() + l.first_item,
                         s.items.begin() + l.first_item + l.num_items);
      l.first_item = first;
      continue;
    }
    // The launch's groups in order of their first item; group j's cluster
    // is items first + c j ... (group_cluster: -1 until seen).
    s.launch_groups.clear();
    for (int64_t i = l.first_item; i < l.first_item + l.num_items; ++i) {
      const int g = s.items[i].group;
      if (s.group_cluster[g] >= 0) continue;
      s.group_cluster[g] = static_cast<int>(s.launch_groups.size());
      s.launch_groups.push_back(g);
    }
    WorkItem empty;
    empty.group = -1;  // a place no item of the group took (yet)
    s.clustered.resize(first + s.launch_groups.size() * c, empty);
    for (int64_t i = l.first_item; i < l.first_item + l.num_items; ++i) {
      const WorkItem& w = s.items[i];
      s.clustered[first + int64_t{s.group_cluster[w.group]} * c + w.split] = w;
    }
    for (size_t j = 0; j < s.launch_groups.size(); ++j) {
      const int g = s.launch_groups[j];
      WorkItem* cluster =
          s.clustered.data() + first + static_cast<int64_t>(j) * c;
      // Empty items start at a tile past the group's last slot (items
      // start on tiles; the kernel rounds a whole-prefix row's end up).
      int64_t end = 0;
      for (int32_t sp = 0; sp < c; ++sp) {
        if (cluster[sp].group == g) {
          end = std::max(end, AlignUp(cluster[sp].slot_end, kTileSlots));
        }
      }
      for (int32_t sp = 0; sp < c; ++sp) {
        if (cluster[sp].group == g) continue;
        cluster[sp].group = g;
        cluster[sp].split = sp;
        cluster[sp].slot_begin = cluster[sp].slot_end = end;
      }
      GroupDesc& gd = s.gdesc[g];
      gd.num_splits = c;
      // A split select of its own block items (not a pair's): its token
      // items can choose (after the tile loop they take SplitSelect's path,
      // which needs no union).
      gd.tokens_choose = options.token_choice && gd.split_select != 0 &&
                         gd.mode == kModeHisa && s.block_owner[g] < 0;
    }
    l.first_item = first;
    l.num_items = static_cast<int64_t>(s.clustered.size()) - first;
    l.cluster = c;
    const bool spread_fits =
        options.clusters_known &&
        l.num_items / c <= options.clusters_resident_spread[c];
    l.balance_clusters =
        options.balance_clusters && (l.num_items <= num_sms || spread_fits);
    l.smem_bytes =
        l.balance_clusters && l.num_items > num_sms ? kTmaSpreadSmemBytes : 0;
    // Step 4c's candidates: spread rows that choose their own blocks, of
    // which each item would score at most kOwnBlockTiles tiles, from the
    // hi means alone (the token kernel's block scorer reads no lo means).
    for (const int g : s.launch_groups) {
      const GroupDesc& gd = s.gdesc[g];
      const int64_t blocks =
          (gd.max_position >> s.layers[gd.layer].geo.log2_block) + 1;
      s.own_blocks[g] = options.tokens_score_blocks && l.balance_clusters &&
                        gd.means_hi_only &&
                        gd.tokens_choose &&
                        CeilDiv(CeilDiv(blocks, c), kTileSlots) <=
                            kOwnBlockTiles;
    }
  }
  s.items.swap(s.clustered);
  // Step 4c's other candidates: pooled HISA rows (one item per row) of at
  // most kPooledOwnBlockTiles tiles of blocks, from the hi means alone; a
  // block-stage pair (step 3b) when both of its rows are.
  for (const LaunchSpec& l : plan->launches) {
    if (l.stage != LaunchSpec::kTokens ||
        l.scorer != LaunchSpec::kWgmmaTmaPool) {
      continue;
    }
    for (int64_t i = l.first_item; i < l.first_item + l.num_items; ++i) {
      const int g = s.items[i].group;
      const GroupDesc& gd = s.gdesc[g];
      const int64_t blocks =
          (gd.max_position >> s.layers[gd.layer].geo.log2_block) + 1;
      s.own_blocks[g] = options.pooled_rows_score_blocks &&
                        gd.mode == kModeHisa && gd.num_rows == 1 &&
                        gd.means_hi_only &&
                        CeilDiv(blocks, kTileSlots) <= kPooledOwnBlockTiles;
    }
  }
  for (size_t g = num_groups; g < s.gdesc.size(); ++g) {
    const GroupDesc& bg = s.gdesc[g];
    if (bg.split_unions) {
      s.own_blocks[g] = s.own_blocks[bg.union_groups[0]] &&
                        s.own_blocks[bg.union_groups[1]];
    }
  }

  // 4c. Token items that score their own blocks (GroupDesc::
  // tokens_score_blocks): when every block item belongs to a candidate row
  // of step 4b or a pooled one (above), the block launch goes. Each of a
  // split row's token items (its cluster) scores an even share of the
  // row's blocks, the cluster meets at one barrier, and every item chooses:
  // one launch, whose prologue and block loads start at once, instead of
  // token CTAs that start as the block CTAs leave their SMs and wait for a
  // count in global memory. Their launches take the spread launch's shared
  // memory (the block scorer's tile and query need it). A pooled row's one
  // item scores all of its blocks, then chooses (its own shared memory
  // suffices).
  bool fuse = true;
  int64_t block_launch_items = 0;
  for (const LaunchSpec& l : plan->launches) {
    if (l.stage != LaunchSpec::kBlockScores) continue;
    block_launch_items += l.num_items;
    for (int64_t i = l.first_item; fuse && i < l.first_item + l.num_items;
         ++i) {
      fuse = s.own_blocks[s.items[i].group] != 0;
    }
  }
  if (fuse && block_launch_items > 0) {
    for (LaunchSpec& l : plan->launches) {
      if (l.stage != LaunchSpec::kTokens) continue;
      for (int64_t i = l.first_item; i < l.first_item + l.num_items; ++i) {
        const int g = s.items[i].group;
        if (!s.own_blocks[g]) continue;
        s.gdesc[g].tokens_score_blocks = 1;
        s.gdesc[g].block_items = 0;
        if (l.scorer == LaunchSpec::kWgmmaTmaPool) {
          s.gdesc[g].tokens_choose = 1;
        } else {
          l.smem_bytes = kTmaSpreadSmemBytes;
        }
      }
      // The block launches and their items come first (step 4's order).
      l.first_item -= block_launch_items;
    }
    plan->launches.erase(
        std::remove_if(plan->launches.begin(), plan->launches.end(),
                       [](const LaunchSpec& l) {
                         return l.stage == LaunchSpec::kBlockScores;
                       }),
        plan->launches.end());
    s.items.erase(s.items.begin(), s.items.begin() + block_launch_items);
  }

  // 5. The device region: upload image, then scratch.
  int64_t off = 0;
  auto reserve = [&](int64_t bytes) {
    const int64_t at = off;
    off = AlignUp(off + bytes, 256);
    return at;
  };
  plan->layers_off = reserve(s.layers.size() * sizeof(LayerView));
  plan->num_descriptors = static_cast<int64_t>(s.gdesc.size());
  plan->groups_off = reserve(s.gdesc.size() * sizeof(GroupDesc));
  plan->rows_off = reserve(s.rows.size() * sizeof(RowDesc));
  plan->items_off = reserve(s.items.size() * sizeof(WorkItem));
  plan->tables_off = reserve(s.tables.size() * sizeof(uint32_t));
  plan->q_off = reserve(s.q_bytes);
  plan->w_off = reserve(s.w_count * sizeof(float));
  plan->counters_off =  // zeros: two per group
      reserve(s.gdesc.size() * 2 * sizeof(int32_t));
  plan->pool_sms = any_pooled ? static_cast<int32_t>(num_sms) : 0;
  plan->pool_bits_off = reserve(int64_t{plan->pool_sms} * 4);  // zeros
  plan->image_bytes = off;
  plan->block_scores_off = reserve(j_total * 4);
  plan->unions_off = reserve(union_total * 8);
  plan->union_counts_off = reserve(int64_t{union_groups} * 4);
  plan->partial_stride = partial_stride;
  plan->partial_pos_off = reserve(partial_lists * partial_stride * 4);
  plan->partial_key_off = reserve(partial_lists * partial_stride * 4);
  plan->partial_counts_off = reserve(partial_lists * 4);
  plan->slot_scores_off = reserve(slot_scores_total * 4);
  plan->slot_hist_count = int64_t{hist_groups} * kKeyHistBins;
  plan->slot_hist_off = reserve(plan->slot_hist_count * 4);
  plan->slot_pool_off = reserve(int64_t{plan->pool_sms} * kTmaTokenCtasPerSm *
                                kSlotSelectCap * 4);
  plan->out_entries = out_total;
  plan->out_pos_off = reserve(out_total * 4);
  plan->out_scores_off = reserve(out_total * 4);
  plan->device_bytes = off;
}

// Copies `v` to dst[at..] and zeroes the rest of its region [at, end).
template <class T>
void PutRegion(uint8_t* dst, int64_t at, int64_t end, const std::vector<T>& v) {
  const int64_t bytes = static_cast<int64_t>(v.size() * sizeof(T));
  if (bytes > 0) std::memcpy(dst + at, v.data(), bytes);
  std::memset(dst + at + bytes, 0, end - at - bytes);
}

// Rows per chunk of WriteImage's query packing: ~32 x 8 KB (64 fp8 heads).
constexpr int64_t kRowsPerPackChunk = 32;

// Writes the plan's upload image (plan.image_bytes bytes) to `dst`: every
// byte is written once (descriptors, packed queries, zero padding and
// counters), so `dst` may hold anything before. The queries are packed in
// chunks of rows, on `parallel`'s threads when it is not null (each row
// also zeroes the alignment gap before it).
void WriteImage(absl::Span<const SelectTask> tasks, const PlanScratch& s,
                const SelectPlan& plan, uint8_t* dst, HostParallel* parallel) {
  PutRegion(dst, plan.layers_off, plan.groups_off, s.layers);
  PutRegion(dst, plan.groups_off, plan.rows_off, s.gdesc);
  PutRegion(dst, plan.rows_off, plan.items_off, s.rows);
  PutRegion(dst, plan.items_off, plan.tables_off, s.items);
  PutRegion(dst, plan.tables_off, plan.q_off, s.tables);
  uint8_t* q = dst + plan.q_off;
  float* w = reinterpret_cast<float*>(dst + plan.w_off);
  auto row_end = [&](size_t i) {
    return s.rows[i].q_offset + s.groups[s.row_group[i]].shape.q_bytes;
  };
  ParallelFor(parallel, static_cast<int64_t>(s.rows.size()), kRowsPerPackChunk,
              [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) {
                  const RowDesc& r = s.rows[i];
                  const int64_t gap_at = i == 0 ? 0 : row_end(i - 1);
                  std::memset(q + gap_at, 0, r.q_offset - gap_at);
                  PackQuery(tasks[s.row_task[i]],
                            s.groups[s.row_group[i]].shape, q + r.q_offset,
                            w + r.w_offset);
                }
              });
  const int64_t q_end = s.rows.empty() ? 0 : row_end(s.rows.size() - 1);
  std::memset(q + q_end, 0, plan.w_off - plan.q_off - q_end);
  const int64_t w_bytes = s.w_count * static_cast<int64_t>(sizeof(float));
  std::memset(dst + plan.w_off + w_bytes, 0,
              plan.counters_off - plan.w_off - w_bytes);
  std::memset(dst + plan.counters_off, 0, plan.image_bytes - plan.counters_off);
}

}  // namespace

int64_t EstimateTaskBytes(const SelectTask& task) {
  const QueryRow& row = *task.row;
  const RequestConfig& cfg = *task.config;
  const RowShape s = ShapeOf(cfg, row);
  const int64_t c = row.position / cfg.block_size;
  const PageGeometry geo =
      MakeGeometry(cfg.head_dim, static_cast<int>(cfg.key_format),
                   cfg.block_size, static_cast<int>(cfg.pooling));
  int64_t bytes = 1024;                      // descriptors, alignment
  bytes += s.q_bytes + 16 + s.w_count * 4;   // query
  bytes += int64_t{row.k} * 8 * 3;           // output, split partial lists
  bytes += 4 * (geo.KeyPagesFor(row.position + 1) +
                geo.SummaryPagesFor(row.position + 1));  // page tables
  if (task.mode == SelectMode::kHisa) {
    bytes += (c + 1) * 4 + ChosenBlocks(c, row.m) * 8;
    bytes += ChosenBlocks(c, row.m) * cfg.block_size * 4;  // slot scores
    bytes += kKeyHistBins * 4;  // key histogram
  }
  return bytes;
}

absl::StatusOr<SelectPlan> BuildSelectPlan(absl::Span<const SelectTask> tasks,
                                           const PlanOptions& options) {
  PlanScratch scratch;
  SelectPlan plan;
  Layout(tasks, options, scratch, &plan);
  plan.image.resize(plan.image_bytes);
  WriteImage(tasks, scratch, plan, plan.image.data(), /*parallel=*/nullptr);
  return plan;
}

absl::Status BuildSelectPlanInto(absl::Span<const SelectTask> tasks,
                                 const PlanOptions& options, uint8_t* image,
                                 int64_t capacity, SelectPlan* plan,
                                 HostParallel* parallel) {
  // One scratch per thread: the server's executor threads reuse theirs, so
  // planning a batch no bigger than an earlier one allocates nothing.
  thread_local PlanScratch scratch;
  Layout(tasks, options, scratch, plan);
  if (plan->image_bytes <= capacity) {
    WriteImage(tasks, scratch, *plan, image, parallel);
  }
  return absl::OkStatus();
}

namespace {
// The launch attribute of one-dimensional thread-block clusters of `ctas`.
cudaLaunchAttribute ClusterDimension(int ctas) {
  cudaLaunchAttribute a;
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = static_cast<unsigned>(ctas);
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}
// The load-balancing cluster scheduling policy (LaunchSpec::balance_clusters).
cudaLaunchAttribute BalancedClusters() {
  cudaLaunchAttribute a;
  a.id = cudaLaunchAttributeClusterSchedulingPolicyPreference;
  a.val.clusterSchedulingPolicyPreference =
      cudaClusterSchedulingPolicyLoadBalancing;
  return a;
}
}  // namespace

cudaError_t ResidentClusters(
    int (&clusters_resident)[kMaxClusterItems + 1],
    int (&clusters_resident_spread)[kMaxClusterItems + 1]) {
  const KernelHandle h = TokenKernelTma(/*pooled=*/false);
  for (int c = 0; c <= kMaxClusterItems; ++c) {
    clusters_resident[c] = 0;
    clusters_resident_spread[c] = 0;
    if (c < 2) continue;
    for (const bool spread : {false, true}) {
      cudaLaunchConfig_t config = {};
      config.gridDim = dim3(static_cast<unsigned>(c));
      config.blockDim = dim3(kSelectThreads);
      config.dynamicSmemBytes =
          static_cast<size_t>(spread ? kTmaSpreadSmemBytes : h.smem_bytes);
      cudaLaunchAttribute attrs[2] = {ClusterDimension(c), BalancedClusters()};
      config.attrs = attrs;
      config.numAttrs = spread ? 2 : 1;
      const cudaError_t err = cudaOccupancyMaxActiveClusters(
          spread ? &clusters_resident_spread[c] : &clusters_resident[c], h.fn,
          &config);
      if (err != cudaSuccess && !spread) return err;
      if (err != cudaSuccess) {
        // No spread launches then; the default figures stand.
        clusters_resident_spread[c] = 0;
        (void)cudaGetLastError();
      }
    }
  }
  return cudaSuccess;
}

cudaError_t LaunchSelectPlan(const SelectPlan& plan, uint8_t* base,
                             const uint8_t* arena, const CUtensorMap* key_map,
                             cudaStream_t stream, cudaEvent_t* events,
                             uint64_t* trace) {
  SelectBuffers b;
  b.arena = arena;
  b.layers = reinterpret_cast<const LayerView*>(base + plan.layers_off);
  b.groups = reinterpret_cast<const GroupDesc*>(base + plan.groups_off);
  b.rows = reinterpret_cast<const RowDesc*>(base + plan.rows_off);
  b.tables = reinterpret_cast<const uint32_t*>(base + plan.tables_off);
  b.q = base + plan.q_off;
  b.w = reinterpret_cast<const float*>(base + plan.w_off);
  b.block_scores = reinterpret_cast<float*>(base + plan.block_scores_off);
  b.unions = reinterpret_cast<int32_t*>(base + plan.unions_off);
  b.union_counts = reinterpret_cast<int32_t*>(base + plan.union_counts_off);
  b.partial_pos = reinterpret_cast<int32_t*>(base + plan.partial_pos_off);
  b.partial_key = reinterpret_cast<uint32_t*>(base + plan.partial_key_off);
  b.partial_counts = reinterpret_cast<int32_t*>(base + plan.partial_counts_off);
  b.partial_stride = plan.partial_stride;
  b.slot_scores = reinterpret_cast<float*>(base + plan.slot_scores_off);
  b.slot_hist = reinterpret_cast<uint32_t*>(base + plan.slot_hist_off);
  b.slot_hist_count = plan.slot_hist_count;
  b.slot_pool = reinterpret_cast<uint32_t*>(base + plan.slot_pool_off);
  b.pool_bits = reinterpret_cast<uint32_t*>(base + plan.pool_bits_off);
  b.pool_sms = plan.pool_sms;
  b.out_pos = reinterpret_cast<int32_t*>(base + plan.out_pos_off);
  b.out_scores = plan.write_scores
                     ? reinterpret_cast<float*>(base + plan.out_scores_off)
                     : nullptr;
  b.counters = reinterpret_cast<int32_t*>(base + plan.counters_off);
  const WorkItem* items = reinterpret_cast<const WorkItem*>(base + plan.items_off);
  cudaError_t err;
  if (events != nullptr) {
    err = cudaEventRecord(events[0], stream);
    if (err != cudaSuccess) return err;
  }
  // The block kernels zero the token stage's key histograms; a plan
  // without a block stage (whole-prefix rows only) zeroes them here.
  bool has_block_stage = false;
  for (const LaunchSpec& s : plan.launches) {
    has_block_stage |= s.stage == LaunchSpec::kBlockScores && s.num_items > 0;
  }
  if (plan.slot_hist_count > 0 && !has_block_stage) {
    err = cudaMemsetAsync(b.slot_hist, 0, plan.slot_hist_count * 4, stream);
    if (err != cudaSuccess) return err;
  }
  CUtensorMap map_arg{};
  if (key_map != nullptr) map_arg = *key_map;
  bool launched = false;  // a kernel of this plan is already in the stream
  int traced = 0;         // launches given a trace region
  for (int stage = LaunchSpec::kBlockScores; stage <= LaunchSpec::kTokens;
       ++stage) {
    for (const LaunchSpec& s : plan.launches) {
      if (s.stage != stage || s.num_items == 0) continue;
      KernelHandle h;
      if (s.stage == LaunchSpec::kBlockScores) {
        h = s.scorer == LaunchSpec::kGeneric
                ? BlockKernelGeneric(s.rows)
                : BlockKernelBf16(s.mt, s.ks, s.rows);
      } else if (s.scorer == LaunchSpec::kWgmmaTma ||
                 s.scorer == LaunchSpec::kWgmmaTmaPool) {
        if (key_map == nullptr) return cudaErrorInvalidValue;
        h = TokenKernelTma(s.scorer == LaunchSpec::kWgmmaTmaPool);
      } else if (s.scorer == LaunchSpec::kWgmma ||
                 s.scorer == LaunchSpec::kWgmmaTopkTma) {
        const bool tma = s.scorer == LaunchSpec::kWgmmaTopkTma;
        if (tma && key_map == nullptr) return cudaErrorInvalidValue;
        h = TokenKernelWgmma(s.rows, tma);
      } else if (s.scorer == LaunchSpec::kMmaSync) {
        h = TokenKernelFp8(s.mt, s.ks, s.rows);
      } else {
        h = TokenKernelGeneric(s.rows);
      }
      if (h.fn == nullptr) return cudaErrorInvalidValue;
      const WorkItem* first = items + s.first_item;
      b.trace = trace != nullptr && traced < kTraceMaxLaunches
                    ? trace + int64_t{traced++} * kTraceMaxCtas * kTraceSlots
                    : nullptr;
      // Every kernel takes the tensor map by value; without one (no bulk
      // copies in this plan) a zeroed map stands in, never read.
      void* args[] = {&b, &first, &map_arg};
      cudaLaunchConfig_t config = {};
      config.gridDim = dim3(static_cast<unsigned>(s.num_items));
      config.blockDim = dim3(kSelectThreads);
      config.dynamicSmemBytes =
          static_cast<size_t>(s.smem_bytes > 0 ? s.smem_bytes : h.smem_bytes);
      config.stream = stream;
      // A launch after another kernel of this plan may start early
      // (programmatic dependent launch): its CTAs take SMs as the previous
      // kernel's CTAs finish and run their prologue, and wait for that
      // kernel's results in GridDependencyWait (select_primitives.cuh).
      // Stage events between the kernels keep it from starting early.
      cudaLaunchAttribute attrs[3];
      unsigned num_attrs = 0;
      if (launched) {
        attrs[num_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attrs[num_attrs++].val.programmaticStreamSerializationAllowed = 1;
      }
      if (s.cluster > 1) {  // split selects: one cluster per group
        attrs[num_attrs++] = ClusterDimension(s.cluster);
        if (s.balance_clusters) attrs[num_attrs++] = BalancedClusters();
      }
      config.attrs = attrs;
      config.numAttrs = num_attrs;
      err = cudaLaunchKernelExC(&config, h.fn, args);
      if (err != cudaSuccess) return err;
      launched = true;
    }
    if (events != nullptr) {
      // Two events per stage: block choice and the split merge are fused.
      for (int e = 2 * stage - 1; e <= 2 * stage; ++e) {
        err = cudaEventRecord(events[e], stream);
        if (err != cudaSuccess) return err;
      }
    }
  }
  return cudaSuccess;
}

}  // namespace hisa::cuda
