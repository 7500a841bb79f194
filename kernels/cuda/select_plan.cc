#include "kernels/cuda/select_plan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
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

// How one row's query is packed, and which kernels score it.
struct RowShape {
  bool fast = false;
  int mt = 0;
  int q_heads = 0;
  int64_t q_bytes = 0;
  int64_t w_count = 0;
};

RowShape ShapeOf(const RequestConfig& cfg, const QueryRow& row, bool hisa) {
  RowShape s;
  const int D = cfg.head_dim;
  const int H = row.num_heads;
  s.fast = cfg.key_format == KeyFormat::kFp8E4M3 &&
           row.q_format == KeyFormat::kFp8E4M3 && (D == 64 || D == 128);
  if (s.fast) {
    s.mt = H <= 16 ? 1 : (H <= 32 ? 2 : 4);
    s.q_heads = s.mt < 4 ? s.mt * 16 : (H + 63) / 64 * 64;
    // fp8 copy, plus a bf16 copy for the block scorer.
    s.q_bytes = int64_t{s.q_heads} * D * (hisa ? 3 : 1);
    s.w_count = s.q_heads;
  } else {
    s.q_heads = H;
    s.q_bytes = int64_t{H} * D * 4;
    s.w_count = H;
  }
  return s;
}

// Blocks HISA chooses for a row whose own block is c.
int64_t ChosenBlocks(int64_t c, int m) {
  return c + 1 <= m ? c + 1 : std::max(m, 2);
}

// bf16 bits of every e4m3 byte (exact: e4m3 values are bf16 values).
const uint16_t* Fp8ToBf16Table() {
  static const auto* table = [] {
    auto* t = new uint16_t[256];
    for (int b = 0; b < 256; ++b) {
      t[b] = Fp8IsNan(static_cast<uint8_t>(b))
                 ? 0
                 : FloatToBf16(Fp8E4M3ToFloat(static_cast<uint8_t>(b)));
    }
    return t;
  }();
  return table;
}

void PackQuery(const SelectTask& task, const RowShape& s, bool hisa,
               uint8_t* q, float* w) {
  const QueryRow& row = *task.row;
  const int D = task.config->head_dim;
  const int H = row.num_heads;
  if (s.fast) {
    const uint16_t* to_bf16 = Fp8ToBf16Table();
    uint8_t* q8 = q;
    uint16_t* qb = reinterpret_cast<uint16_t*>(q + int64_t{s.q_heads} * D);
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
    if (hisa) {
      const int64_t n = int64_t{s.q_heads} * D;
      for (int64_t i = 0; i < n; ++i) qb[i] = to_bf16[q8[i]];
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
  auto SpecKey() const {
    return std::make_tuple(static_cast<int>(scorer), mt, ks, rows);
  }
};

template <class T>
void Put(std::vector<uint8_t>& image, int64_t off, const std::vector<T>& v) {
  if (!v.empty()) std::memcpy(image.data() + off, v.data(), v.size() * sizeof(T));
}

}  // namespace

int64_t EstimateTaskBytes(const SelectTask& task) {
  const QueryRow& row = *task.row;
  const RequestConfig& cfg = *task.config;
  const RowShape s = ShapeOf(cfg, row, task.mode == SelectMode::kHisa);
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
  }
  return bytes;
}

absl::StatusOr<SelectPlan> BuildSelectPlan(absl::Span<const SelectTask> tasks,
                                           const PlanOptions& options) {
  SelectPlan plan;
  const int n = static_cast<int>(tasks.size());
  plan.task_out_offset.assign(n, -1);

  // 1. Groups: rows of one (store, layer, mode, k, m, query shape) sorted by
  // position, neighbours paired.
  std::map<GroupKey, std::vector<int>> by_key;
  std::vector<GroupKey> key_order;
  for (int i = 0; i < n; ++i) {
    const SelectTask& t = tasks[i];
    GroupKey key{t.store,
                 t.row->layer,
                 static_cast<int>(t.mode),
                 t.row->k,
                 t.mode == SelectMode::kHisa ? t.row->m : 0,
                 t.row->num_heads,
                 static_cast<int>(t.row->q_format)};
    auto [it, inserted] = by_key.try_emplace(key);
    if (inserted) key_order.push_back(key);
    it->second.push_back(i);
  }
  std::vector<GroupBuild> groups;
  for (const GroupKey& key : key_order) {
    std::vector<int>& idx = by_key[key];
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
      return tasks[a].row->position < tasks[b].row->position;
    });
    const bool hisa_key = key.mode == static_cast<int>(SelectMode::kHisa);
    // A HISA row with c + 1 <= m chooses every block: it is a DENSE row.
    auto dense_equivalent = [&](int i) {
      return tasks[i].row->position / tasks[i].config->block_size + 1 <=
             tasks[i].row->m;
    };
    for (size_t j = 0; j < idx.size();) {
      bool pair = j + 1 < idx.size();
      if (!hisa_key) {
        pair = pair && options.pair_rows;
      } else if (!options.pair_hisa_rows) {
        pair = pair && options.pair_rows && dense_equivalent(idx[j]) &&
               dense_equivalent(idx[j + 1]);
      }
      GroupBuild gb;
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
      gb.shape = ShapeOf(*t0.config, *t0.row, gb.hisa);
      groups.push_back(gb);
    }
  }
  plan.num_groups = static_cast<int64_t>(groups.size());

  // 2. Layer views and page tables, one per (store, layer) in the batch.
  std::map<std::pair<const RequestStore*, int>, int> layer_index;
  std::vector<LayerView> layers;
  std::vector<uint32_t> tables;
  auto layer_of = [&](const SelectTask& t) {
    const auto key = std::make_pair(t.store, t.row->layer);
    auto it = layer_index.find(key);
    if (it != layer_index.end()) return it->second;
    const auto* store = static_cast<const CudaRequestStore*>(t.store);
    const CudaRequestStore::Layer& l = store->layer(t.row->layer);
    LayerView v;
    v.geo = store->geometry();
    v.tokens_per_page_magic = DivMagic(v.geo.tokens_per_page);
    v.blocks_per_page_magic = DivMagic(v.geo.blocks_per_page);
    v.length = l.length;
    v.key_table = static_cast<int64_t>(tables.size());
    tables.insert(tables.end(), l.key_pages.begin(), l.key_pages.end());
    v.summary_table = static_cast<int64_t>(tables.size());
    tables.insert(tables.end(), l.summary_pages.begin(), l.summary_pages.end());
    const int index = static_cast<int>(layers.size());
    layers.push_back(v);
    layer_index.emplace(key, index);
    return index;
  };

  // 3. Rows, queries, group descriptors.
  std::vector<RowDesc> rows;
  rows.reserve(n);
  std::vector<uint8_t> qbuf;
  std::vector<float> wbuf;
  {
    int64_t q_total = 0, w_total = 0;
    for (const GroupBuild& gb : groups) {
      q_total += gb.num_rows * AlignUp(gb.shape.q_bytes, 16);
      w_total += gb.num_rows * gb.shape.w_count;
    }
    qbuf.reserve(q_total + 16);
    wbuf.reserve(w_total);
  }
  std::vector<GroupDesc> gdesc(groups.size());
  std::vector<int64_t> union_cap(groups.size(), 0);
  int64_t j_total = 0, out_total = 0, union_total = 0;
  int union_groups = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const GroupBuild& gb = groups[gi];
    const SelectTask& t0 = tasks[gb.tasks[0]];
    GroupDesc& gd = gdesc[gi];
    gd.layer = layer_of(t0);
    gd.mode = gb.hisa ? kModeHisa : kModeDense;
    gd.num_rows = gb.num_rows;
    gd.heads = t0.row->num_heads;
    gd.q_heads = gb.shape.q_heads;
    gd.k = t0.row->k;
    gd.m = t0.row->m;
    gd.max_position = 0;
    int64_t cap = 0;
    const int block = t0.config->block_size;
    for (int g = 0; g < gb.num_rows; ++g) {
      const SelectTask& t = tasks[gb.tasks[g]];
      RowDesc r;
      r.position = t.row->position;
      r.k = t.row->k;
      qbuf.resize(AlignUp(static_cast<int64_t>(qbuf.size()), 16));
      r.q_offset = static_cast<int64_t>(qbuf.size());
      qbuf.resize(qbuf.size() + gb.shape.q_bytes);
      r.w_offset = static_cast<int64_t>(wbuf.size());
      wbuf.resize(wbuf.size() + gb.shape.w_count);
      PackQuery(t, gb.shape, gb.hisa, qbuf.data() + r.q_offset,
                wbuf.data() + r.w_offset);
      const int64_t c = r.position / block;
      if (gb.hisa) {
        r.j_offset = j_total;
        j_total += c + 1;
        cap += ChosenBlocks(c, gd.m);
      }
      r.out_offset = out_total;
      plan.task_out_offset[gb.tasks[g]] = out_total;
      out_total += r.k;
      gd.rows[g] = static_cast<int32_t>(rows.size());
      rows.push_back(r);
      gd.max_position = std::max(gd.max_position, r.position);
    }
    if (gb.num_rows == 1) gd.rows[1] = gd.rows[0];
    if (gb.hisa) {
      cap = std::min(cap, gd.max_position / block + 1);
      union_cap[gi] = cap;
      gd.union_offset = union_total;
      gd.union_index = union_groups++;
      union_total += cap;
    }
  }

  // 4. Work items.
  const int64_t target_items = 2 * int64_t{std::max(1, options.num_sms)};
  const int64_t split_target =
      options.allow_splits && plan.num_groups < target_items
          ? CeilDiv(target_items, std::max<int64_t>(1, plan.num_groups))
          : 1;
  int64_t total_block_tiles = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    if (!groups[gi].hisa) continue;
    const int block = tasks[groups[gi].tasks[0]].config->block_size;
    total_block_tiles += CeilDiv(gdesc[gi].max_position / block + 1, kTileSlots);
  }
  const int64_t tiles_per_block_item =
      std::max<int64_t>(1, total_block_tiles / target_items);
  std::vector<ItemBuild> block_items, token_items;
  int64_t partial_lists = 0;
  int32_t partial_stride = 0;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const GroupBuild& gb = groups[gi];
    GroupDesc& gd = gdesc[gi];
    const RequestConfig& cfg = *tasks[gb.tasks[0]].config;
    const int D = cfg.head_dim;
    const int G = gb.num_rows;
    const int gid = static_cast<int>(gi);
    int64_t slots;
    const LaunchSpec::Scorer block_scorer =
        gb.shape.fast ? LaunchSpec::kMmaSync : LaunchSpec::kGeneric;
    LaunchSpec::Scorer token_scorer = block_scorer;
    if (gb.shape.fast && options.use_wgmma && D == 128 &&
        gb.shape.q_heads == 64) {
      token_scorer = LaunchSpec::kWgmma;
    }
    if (gb.hisa) {
      const int64_t blocks = gd.max_position / cfg.block_size + 1;
      for (int64_t s = 0; s < blocks; s += tiles_per_block_item * kTileSlots) {
        WorkItem w;
        w.group = gid;
        w.slot_begin = s;
        w.slot_end = std::min(blocks, s + tiles_per_block_item * kTileSlots);
        block_items.push_back({LaunchSpec::kBlockScores, block_scorer,
                               gb.shape.mt, D / 16, G,
                               w.slot_end - w.slot_begin, w});
        ++gd.block_items;
      }
      slots = union_cap[gi] * cfg.block_size;
    } else {
      slots = gd.max_position + 1;
    }
    const int64_t tiles = CeilDiv(slots, kTileSlots);
    int64_t splits = std::min<int64_t>(split_target, tiles);
    splits = std::min<int64_t>(splits, kFinalizeCap / gd.k);
    splits = std::max<int64_t>(splits, 1);
    const int64_t per = CeilDiv(tiles, splits);
    splits = CeilDiv(tiles, per);
    gd.num_splits = static_cast<int32_t>(splits);
    if (splits > 1) {
      gd.partial_index = static_cast<int32_t>(partial_lists);
      partial_lists += splits * G;
      partial_stride = std::max(partial_stride, gd.k);
    }
    for (int64_t s = 0; s < splits; ++s) {
      WorkItem w;
      w.group = gid;
      w.split = static_cast<int32_t>(s);
      w.slot_begin = s * per * kTileSlots;
      w.slot_end = std::min(slots, (s + 1) * per * kTileSlots);
      token_items.push_back({LaunchSpec::kTokens, token_scorer, gb.shape.mt,
                             D / 32, G, w.slot_end - w.slot_begin, w});
    }
  }
  auto by_spec_then_work = [](const ItemBuild& a, const ItemBuild& b) {
    if (a.SpecKey() != b.SpecKey()) return a.SpecKey() < b.SpecKey();
    return a.work > b.work;  // longest first: a better tail
  };
  std::stable_sort(block_items.begin(), block_items.end(), by_spec_then_work);
  std::stable_sort(token_items.begin(), token_items.end(), by_spec_then_work);

  std::vector<WorkItem> items;
  for (const std::vector<ItemBuild>* list : {&block_items, &token_items}) {
    for (const ItemBuild& ib : *list) {
      if (plan.launches.empty() || plan.launches.back().stage != ib.stage ||
          std::make_tuple(static_cast<int>(plan.launches.back().scorer),
                          plan.launches.back().mt, plan.launches.back().ks,
                          plan.launches.back().rows) != ib.SpecKey()) {
        LaunchSpec spec;
        spec.stage = ib.stage;
        spec.scorer = ib.scorer;
        spec.mt = ib.mt;
        spec.ks = ib.ks;
        spec.rows = ib.rows;
        spec.first_item = static_cast<int64_t>(items.size());
        plan.launches.push_back(spec);
      }
      items.push_back(ib.item);
      ++plan.launches.back().num_items;
    }
  }

  // 5. The device region: upload image, then scratch.
  int64_t off = 0;
  auto reserve = [&](int64_t bytes) {
    const int64_t at = off;
    off = AlignUp(off + bytes, 256);
    return at;
  };
  plan.layers_off = reserve(layers.size() * sizeof(LayerView));
  plan.groups_off = reserve(gdesc.size() * sizeof(GroupDesc));
  plan.rows_off = reserve(rows.size() * sizeof(RowDesc));
  plan.items_off = reserve(items.size() * sizeof(WorkItem));
  plan.tables_off = reserve(tables.size() * sizeof(uint32_t));
  plan.q_off = reserve(qbuf.size());
  plan.w_off = reserve(wbuf.size() * sizeof(float));
  plan.counters_off = reserve(gdesc.size() * 2 * sizeof(int32_t));  // zeros
  plan.image.assign(off, 0);
  Put(plan.image, plan.layers_off, layers);
  Put(plan.image, plan.groups_off, gdesc);
  Put(plan.image, plan.rows_off, rows);
  Put(plan.image, plan.items_off, items);
  Put(plan.image, plan.tables_off, tables);
  Put(plan.image, plan.q_off, qbuf);
  Put(plan.image, plan.w_off, wbuf);
  plan.block_scores_off = reserve(j_total * 4);
  plan.unions_off = reserve(union_total * 8);
  plan.union_counts_off = reserve(int64_t{union_groups} * 4);
  plan.partial_stride = partial_stride;
  plan.partial_pos_off = reserve(partial_lists * partial_stride * 4);
  plan.partial_key_off = reserve(partial_lists * partial_stride * 4);
  plan.partial_counts_off = reserve(partial_lists * 4);
  plan.out_entries = out_total;
  plan.out_pos_off = reserve(out_total * 4);
  plan.out_scores_off = reserve(out_total * 4);
  plan.device_bytes = off;
  return plan;
}

cudaError_t LaunchSelectPlan(const SelectPlan& plan, uint8_t* base,
                             const uint8_t* arena, cudaStream_t stream,
                             cudaEvent_t* events) {
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
  b.out_pos = reinterpret_cast<int32_t*>(base + plan.out_pos_off);
  b.out_scores = reinterpret_cast<float*>(base + plan.out_scores_off);
  b.counters = reinterpret_cast<int32_t*>(base + plan.counters_off);
  const WorkItem* items = reinterpret_cast<const WorkItem*>(base + plan.items_off);
  cudaError_t err;
  if (events != nullptr) {
    err = cudaEventRecord(events[0], stream);
    if (err != cudaSuccess) return err;
  }
  for (int stage = LaunchSpec::kBlockScores; stage <= LaunchSpec::kTokens;
       ++stage) {
    for (const LaunchSpec& s : plan.launches) {
      if (s.stage != stage || s.num_items == 0) continue;
      KernelHandle h;
      if (s.stage == LaunchSpec::kBlockScores) {
        h = s.scorer == LaunchSpec::kGeneric
                ? BlockKernelGeneric(s.rows)
                : BlockKernelBf16(s.mt, s.ks, s.rows);
      } else if (s.scorer == LaunchSpec::kWgmma) {
        h = TokenKernelWgmma(s.rows);
      } else if (s.scorer == LaunchSpec::kMmaSync) {
        h = TokenKernelFp8(s.mt, s.ks, s.rows);
      } else {
        h = TokenKernelGeneric(s.rows);
      }
      if (h.fn == nullptr) return cudaErrorInvalidValue;
      const WorkItem* first = items + s.first_item;
      void* args[] = {&b, &first};
      err = cudaLaunchKernel(h.fn, dim3(static_cast<unsigned>(s.num_items)),
                             dim3(kSelectThreads), args, h.smem_bytes, stream);
      if (err != cudaSuccess) return err;
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
