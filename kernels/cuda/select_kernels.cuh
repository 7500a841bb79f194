// The selection kernels of one Select batch (raw-pointer templates; the
// host side is select_plan.cc, instantiations kernels_*.cu). Stages, named
// as FAISS IVF names them:
//
//   TileKernel<BlockScorer, G>   block scoring: J(t, b) for b <= c of every
//                                HISA row -> block_scores; the group's last
//                                CTA then runs block choice (forced 0 and c
//                                plus the top m - 2 others per row) and
//                                writes one ascending union per group (or,
//                                for a block-stage pair, one per row).
//   TileKernel<TokenScorer, G>   token refinement + top-k: scores every
//                                candidate slot (DENSE: every s <= t; HISA:
//                                the union's blocks). Slot-score groups
//                                (single HISA rows) write every score to
//                                scratch and the group's last CTA selects k
//                                once; other groups keep a position-ordered
//                                top-k per row, and when a group is split
//                                over several CTAs the last one merges their
//                                lists.
//
//   TmaTokenKernel               (tma_token_kernel.cuh) the token stage of
//                                slot-score rows whose tiles are aligned
//                                128-key runs in one page, with bulk tensor
//                                copies and no CTA barrier in its loop.
//
// So a batch is one launch (DENSE) or two (HISA) per kernel variant present;
// a HISA batch whose token items score their own blocks (GroupDesc::
// tokens_score_blocks, select_plan.cc step 4c) is one launch of
// TmaTokenKernel, which runs Bf16BlockScorer itself (ScoreOwnBlocks).
// The token launch may start before the block launch ends (programmatic
// dependent launch): token kernels read block-stage outputs only after
// GridDependencyWait.
//
// Tile loop. A work item walks its slots 128 at a time. A slot is a candidate
// position (DENSE: slot == position; HISA: block union[slot / B], offset
// slot % B; block kernel: slot == block). Keys (or block means) of the next
// tiles are copied (cp.async per thread; one bulk tensor copy per tile for
// kTma scorers; one bulk copy per block row and thread for kBulkRows
// scorers, the block means) while tile i is scored. The scorer writes one
// score per (row, slot) to `staging`; for a running top-k the consumer
// appends the entries that can still make the top-k (composite >= tau) to
// the row's candidate buffer in slot order, and compacts the buffer to
// exactly k entries (radix select + stable compaction) whenever the next
// tile might not fit. Because slots are
// visited in increasing position and compaction is stable, every buffer and
// every output list stays sorted by position: no sort is ever needed.
//
// Scorers (all: 8 warps, G rows of one group):
//   WgmmaTokenScorer<G, kTma>   FP8 x FP8, D = 128, 64 query heads: Hopper
//                               warpgroup MMA from swizzled shared memory;
//                               tiles copied per thread or (kTma) by bulk
//                               tensor copies.
//   Fp8TokenScorer<MT, KS, G>   FP8 x FP8, D in {64, 128}, any H: mma.sync
//                               m16n8k32 e4m3, query heads in registers.
//   Bf16BlockScorer<MT, KS, G>  the same queries (bf16, exact) x block means
//                               as bf16 hi (GroupDesc::means_hi_only) or
//                               hi + lo on mma.sync m16n8k16; rows copied by
//                               bulk copies (kBulkRows).
//   GenericScorer<G, kBlocks>   any formats, any D: one thread per (row,
//                               slot), fp32 FMA on dequantized values.
#ifndef HISA_KERNELS_CUDA_SELECT_KERNELS_CUH_
#define HISA_KERNELS_CUDA_SELECT_KERNELS_CUH_

#include <cuda.h>

#include "kernels/cuda/select_layout.h"
#include "kernels/cuda/select_primitives.cuh"

namespace hisa::cuda {

// Everything a work item needs about its group, in registers.
template <int G>
struct ItemContext {
  const GroupDesc* group;
  const LayerView* layer;
  int num_rows;
  int log2b;
  int64_t t[G];         // row positions
  int64_t c[G];         // row blocks t / B
  int64_t slot_begin;
  int64_t slot_end;     // capped by the group's real slot count
  int64_t num_slots;    // the group's real slot count (every item's)
  bool union_slots;     // HISA token kernel: slots index the union
  const int32_t* unions;
  // Page lookup of a slot's position (block index for the block kernel):
  // page table entry table + pos / per_page, item pos % per_page.
  int64_t table;
  uint64_t per_page_magic;
  uint32_t per_page;
};

// The context of work item `item` of group `grp` (block kernel when
// kBlocks, else token kernel). local_blocks >= 0: a HISA token item whose
// union is the `local_blocks` blocks it chose itself (GroupDesc::
// tokens_choose); ic.unions is then null and the caller maps its slots.
template <int G, bool kBlocks>
__device__ __forceinline__ ItemContext<G> MakeItemContext(
    const SelectBuffers& b, const WorkItem& item, const GroupDesc& grp,
    int local_blocks = -1) {
  ItemContext<G> ic;
  ic.group = &grp;
  ic.layer = &b.layers[grp.layer];
  ic.num_rows = grp.num_rows;
  const int log2b = ic.layer->geo.log2_block;
  ic.log2b = log2b;
  if (kBlocks) {
    ic.table = ic.layer->summary_table;
    ic.per_page_magic = ic.layer->blocks_per_page_magic;
    ic.per_page = static_cast<uint32_t>(ic.layer->geo.blocks_per_page);
  } else {
    ic.table = ic.layer->key_table;
    ic.per_page_magic = ic.layer->tokens_per_page_magic;
    ic.per_page = static_cast<uint32_t>(ic.layer->geo.tokens_per_page);
  }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int64_t t = g < ic.num_rows ? b.rows[grp.rows[g]].position : -1;
    ic.t[g] = t;
    ic.c[g] = t >= 0 ? (t >> log2b) : -1;
  }
  int64_t num_slots;
  ic.union_slots = false;
  ic.unions = nullptr;
  if (kBlocks) {
    num_slots = (grp.max_position >> log2b) + 1;
  } else if (grp.mode == kModeHisa) {
    ic.union_slots = true;
    if (local_blocks >= 0) {
      num_slots = static_cast<int64_t>(local_blocks) << log2b;
    } else {
      ic.unions = b.unions + 2 * grp.union_offset;
      num_slots = static_cast<int64_t>(b.union_counts[grp.union_index])
                  << log2b;
    }
  } else {
    num_slots = grp.max_position + 1;
  }
  ic.num_slots = num_slots;
  ic.slot_begin = item.slot_begin;
  ic.slot_end = item.slot_end < num_slots ? item.slot_end : num_slots;
  return ic;
}

// One union entry: a block and the rows (bit g) that chose it.
struct UnionEntry {
  int32_t block;
  int32_t mask;
};

template <int G>
__device__ __forceinline__ UnionEntry LoadUnionEntry(const ItemContext<G>& ic,
                                                     int64_t slot) {
  UnionEntry e{0, 0};
  if (ic.union_slots && slot < ic.slot_end) {
    const int64_t u = slot >> ic.log2b;
    e.block = __ldg(ic.unions + 2 * u);
    e.mask = __ldg(ic.unions + 2 * u + 1);
  }
  return e;
}

// Position of `slot` (union entry `e` when the slots index the union) and
// the rows (bit g) for which it is a candidate; the position is -1 (and
// rows 0) past slot_end.
template <int G, bool kBlocks>
__device__ __forceinline__ int64_t MapEntry(const ItemContext<G>& ic,
                                            int64_t slot, UnionEntry e,
                                            uint32_t* rows) {
  *rows = 0;
  if (slot >= ic.slot_end) return -1;
  int64_t pos;
  uint32_t allowed = (1u << ic.num_rows) - 1u;
  if (ic.union_slots) {
    pos = (static_cast<int64_t>(e.block) << ic.log2b) +
          (slot & ((int64_t{1} << ic.log2b) - 1));
    allowed &= static_cast<uint32_t>(e.mask);
  } else {
    pos = slot;
  }
  uint32_t r = 0;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const int64_t limit = kBlocks ? ic.c[g] : ic.t[g];
    if (((allowed >> g) & 1u) && pos <= limit) r |= 1u << g;
  }
  *rows = r;
  return pos;
}

template <int G, bool kBlocks>
__device__ __forceinline__ int64_t MapSlot(const ItemContext<G>& ic,
                                           int64_t slot, uint32_t* rows) {
  return MapEntry<G, kBlocks>(ic, slot, LoadUnionEntry(ic, slot), rows);
}

// The slot a thread pair copies (threads 2i and 2i + 1: slot i of the tile),
// resolved ahead of its copy. The slot map's global reads (union entry, then
// page table) are issued one and two tiles early, so their latency overlaps
// the scoring of the current tile instead of stalling every copy issue.
struct SlotRef {
  int32_t pos;       // -1 past the end
  uint32_t rows;
  uint32_t page;     // arena page (valid when rows != 0)
  uint32_t in_page;  // token (block) index inside the page
};

// need_page false: only pos and rows (the bulk-copy scorer looks up one
// page per tile, in thread 0). The first `cached_pages` entries of the
// slot's page table may come from `page_cache` (shared memory) instead.
template <int G, bool kBlocks>
__device__ __forceinline__ SlotRef ResolveSlot(
    const SelectBuffers& b, const ItemContext<G>& ic, int64_t slot,
    UnionEntry e, bool need_page = true, const uint32_t* page_cache = nullptr,
    int cached_pages = 0) {
  SlotRef r;
  r.pos = static_cast<int32_t>(MapEntry<G, kBlocks>(ic, slot, e, &r.rows));
  r.page = 0;
  r.in_page = 0;
  if (r.rows != 0 && need_page) {
    const uint32_t p = static_cast<uint32_t>(r.pos);
    const uint32_t page_rel = DivFast(p, ic.per_page_magic);
    r.in_page = p - page_rel * ic.per_page;
    r.page = page_rel < static_cast<uint32_t>(cached_pages)
                 ? page_cache[page_rel]
                 : __ldg(b.tables + ic.table + page_rel);
  }
  return r;
}

// The bulk copies of an aligned 128-token FP8 D = 128 tile (token kernels
// with kTma scorers, and TmaTokenKernel), `r` being the tile's first slot:
// its first key row in the arena's tensor map (row i at arena + 128 i) and
// its scales' byte offset in the arena. When no row has r as a candidate,
// no slot of the tile is one (an aligned run past every t): page 0 stands
// in, and nothing reads those scores.
struct TileCopy {
  int64_t scale;
  int32_t row;
};
__device__ __forceinline__ TileCopy TileCopyOf(const LayerView& lv,
                                               const SlotRef& r) {
  if (r.rows == 0) return TileCopy{0, 0};
  const int64_t page = r.page;
  return TileCopy{page * kPageBytes + lv.geo.ScalesOffset() + r.in_page * 4,
                  static_cast<int32_t>(page * (kPageBytes / 128) + r.in_page)};
}
// Issued by one thread: the tile's keys (128 rows x 128 B, landing in the
// 128-byte swizzle of the wgmma operands) to `keys` and its 512 bytes of
// scales to `scales`, both completing on `bar`.
__device__ __forceinline__ void IssueTileCopy(const CUtensorMap* map,
                                              const uint8_t* arena,
                                              const TileCopy& c, void* keys,
                                              void* scales, uint64_t* bar) {
  MbarArriveExpectTx(bar, kTileSlots * 128 + kTileSlots * 4);
  TmaLoad2d(keys, map, 0, c.row, bar);
  BulkLoad(scales, arena + c.scale, kTileSlots * 4, bar);
}

// Where an FP8 token slot's key row (row_bytes) and scale live; both point
// at the arena base (valid, never read: the copies zero-fill) when the slot
// is no candidate.
struct KeySource {
  const uint8_t* row;
  const uint8_t* scale;
};
template <int G>
__device__ __forceinline__ KeySource TokenKeySource(const SelectBuffers& b,
                                                   const ItemContext<G>& ic,
                                                   const SlotRef& r,
                                                   int row_bytes) {
  KeySource src{b.arena, b.arena};
  if (r.rows != 0) {
    const uint8_t* page = b.arena + static_cast<int64_t>(r.page) * kPageBytes;
    src.row = page + static_cast<int64_t>(r.in_page) * row_bytes;
    src.scale = page + ic.layer->geo.ScalesOffset() + r.in_page * 4;
  }
  return src;
}

// ----------------------------------------------------------------------------
// Scorers.

// Per-tile shared state every scorer sees.
inline constexpr int kMaxStages = 3;
struct TileShared {
  int32_t pos[kMaxStages][kTileSlots];
  uint8_t rows[kMaxStages][kTileSlots];
};

template <int MT, int KS, int G>
struct Fp8TokenScorer {
  static constexpr int kD = KS * 32;
  static constexpr int kStride = kD + 16;  // padded: ldmatrix conflict-free
  static constexpr int kStageBytes = kTileSlots * kStride + kTileSlots * 4;
  static constexpr int kPersistBytes = 0;
  static constexpr int kWarpsPerRow = 8 / G;
  static constexpr int kSlotsPerWarp = kTileSlots / kWarpsPerRow;  // 16 G
  static constexpr int kNT = kSlotsPerWarp / 8;                      // 2 G
  static constexpr bool kBlocks = false;
  static constexpr bool kTma = false;  // no bulk tensor copies
  static constexpr bool kBulkRows = false;  // per-thread cp.async
  // 255 registers (query fragments stay in registers): one CTA per SM.
  static constexpr int kMinBlocks = 1;
  static constexpr int kStages = 2;
  static constexpr int kCap = kCandidateCap;

  uint32_t a[MT][KS][4];
  int g;
  int sub;
  int head_groups;
  const uint8_t* q;

  __device__ void LoadA(int hg) {
    const int lane = threadIdx.x & 31;
    const int gid = lane >> 2, tid4 = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint8_t* r0 = q + (hg * 64 + mt * 16 + gid) * kD + tid4 * 4;
      const uint8_t* r1 = r0 + 8 * kD;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        a[mt][ks][0] = __ldg(reinterpret_cast<const uint32_t*>(r0 + ks * 32));
        a[mt][ks][1] = __ldg(reinterpret_cast<const uint32_t*>(r1 + ks * 32));
        a[mt][ks][2] =
            __ldg(reinterpret_cast<const uint32_t*>(r0 + ks * 32 + 16));
        a[mt][ks][3] =
            __ldg(reinterpret_cast<const uint32_t*>(r1 + ks * 32 + 16));
      }
    }
  }

  __device__ void Init(const SelectBuffers& b, const ItemContext<G>& ic,
                       uint8_t* /*persist*/) {
    const int warp = threadIdx.x >> 5;
    g = warp / kWarpsPerRow;
    sub = warp % kWarpsPerRow;
    head_groups = MT == 4 ? ic.group->q_heads / 64 : 1;
    q = nullptr;
    if (g < ic.num_rows) {
      q = b.q + b.rows[ic.group->rows[g]].q_offset;
      LoadA(0);
    }
  }

  __device__ void AfterWait() const {}

  static constexpr bool kSlotAhead = true;

  __device__ void Issue(const SelectBuffers& b, const ItemContext<G>& ic,
                        uint8_t* stage, TileShared& ts, int st,
                        const SlotRef& r) const {
    const int tid = threadIdx.x;
    const int i = tid >> 1;
    const int half = tid & 1;
    const KeySource src = TokenKeySource(b, ic, r, kD);
    uint8_t* dst = stage + i * kStride;
#pragma unroll
    for (int j = 0; j < KS; ++j) {
      const int chunk = half * KS + j;
      CpAsync16(dst + chunk * 16, src.row + chunk * 16, r.rows != 0);
    }
    if (half == 0) {
      CpAsync4(stage + kTileSlots * kStride + i * 4, src.scale, r.rows != 0);
      ts.pos[st][i] = r.pos;
      ts.rows[st][i] = static_cast<uint8_t>(r.rows);
    }
  }

  // Loop order nt -> (ks, mt): one n8 tile of keys in registers at a time,
  // MT independent accumulators in flight, so registers stay near 128.
  __device__ void Compute(const uint8_t* stage, const float* weights,
                          float* staging, const ItemContext<G>& ic,
                          const TileShared& ts, int st) {
    if (g >= ic.num_rows) return;
    const int lane = threadIdx.x & 31;
    const int gid = lane >> 2, tid4 = lane & 3;
    const int slot0 = sub * kSlotsPerWarp;
    // Slots of a union block this row did not choose (or past t) are never
    // read by the consumer: skip them (the other row's warps still run).
    if (!__any_sync(0xFFFFFFFFu,
                    (ts.rows[st][slot0 + lane % kSlotsPerWarp] >> g) & 1u)) {
      return;
    }
    float part[2 * kNT];
#pragma unroll
    for (int j = 0; j < 2 * kNT; ++j) part[j] = 0.f;
    const float* w = weights + g * 128;
#pragma unroll 1
    for (int hg = 0; hg < head_groups; ++hg) {
      if (head_groups > 1) LoadA(hg);
      float wv[MT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        wv[mt][0] = w[hg * 64 + mt * 16 + gid];
        wv[mt][1] = w[hg * 64 + mt * 16 + gid + 8];
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        uint32_t bf[KS][2];
#pragma unroll
        for (int kp = 0; kp < KS / 2; ++kp) {
          const uint8_t* addr = stage +
                                (slot0 + nt * 8 + (lane & 7)) * kStride +
                                (2 * kp + (lane >> 4)) * 32 +
                                ((lane >> 3) & 1) * 16;
          uint32_t r[4];
          LdMatrixX4(r, addr);
          bf[2 * kp][0] = r[0];
          bf[2 * kp][1] = r[1];
          bf[2 * kp + 1][0] = r[2];
          bf[2 * kp + 1][1] = r[3];
        }
        float acc[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.f;
        }
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            MmaFp8(acc[mt], a[mt][ks], bf[ks][0], bf[ks][1]);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          part[2 * nt] += wv[mt][0] * fmaxf(acc[mt][0], 0.f) +
                          wv[mt][1] * fmaxf(acc[mt][2], 0.f);
          part[2 * nt + 1] += wv[mt][0] * fmaxf(acc[mt][1], 0.f) +
                              wv[mt][1] * fmaxf(acc[mt][3], 0.f);
        }
      }
    }
    const float v = ReduceScatter<2 * kNT>(part, lane);
    if (PublishesLane<2 * kNT>(lane)) {
      const int j = JOfLane<2 * kNT>(lane);
      const int col = slot0 + (j >> 1) * 8 + tid4 * 2 + (j & 1);
      const float* scales =
          reinterpret_cast<const float*>(stage + kTileSlots * kStride);
      staging[g * kTileSlots + col] = v * fabsf(scales[col]);
    }
  }
};

// MT: 16-head tiles of the query (1, 2, 4; 8 = 128 heads, scored as two
// head groups of 4 tiles), so that the query area holds exactly q_heads.
// kHiOnly: the hi means alone whatever GroupDesc::means_hi_only says (the
// token kernel's own block scoring, which the planner uses only then).
template <int MT, int KS, int G, bool kHiOnly = false>
struct Bf16BlockScorer {
  static constexpr int kD = KS * 16;
  static constexpr int kStride = 2 * kD + 16;  // bytes per block row
  static constexpr int kStageBytes = 2 * kTileSlots * kStride;  // hi, lo
  static constexpr int kMTiles = MT < 4 ? MT : 4;  // m16 tiles per head group
  static constexpr int kHeadGroups = MT / kMTiles;
  static constexpr int kMaxQHeads = MT * 16;
  static constexpr int kPersistBytes = G * kMaxQHeads * kStride;
  static constexpr int kWarpsPerRow = 8 / G;
  static constexpr int kSlotsPerWarp = kTileSlots / kWarpsPerRow;
  static constexpr int kNT = kSlotsPerWarp / 8;
  static constexpr bool kBlocks = true;
  static constexpr bool kTma = false;  // no bulk tensor copies
  // Each thread copies its block row (hi or lo) with one bulk copy that
  // completes on the stage's transaction barrier: the copy engine keeps a
  // whole tile in flight per CTA, which per-thread cp.async (16 copies of
  // 16 bytes per row, each tracked by the SM) did not.
  static constexpr bool kBulkRows = true;
  // One stage unless a row pair of 128 heads needs a CTA per SM anyway:
  // decode items score one tile each, and a prefill row pair of up to 64
  // heads then fits two CTAs per SM (~108 KB each), whose prologues, tile
  // loads and block choices overlap; a second stage would cost that.
  static constexpr int kStages = G == 2 && MT == 8 ? 2 : 1;
  static constexpr int kMinBlocks = kStages == 1 ? 2 : 1;
  static constexpr int kCap = 0;

  int g;
  int sub;
  const uint8_t* qs;  // this warp's row in shared memory
  // Set by TileKernel: the stages' transaction barriers (kSelectThreads
  // arrivals per phase).
  uint64_t* full = nullptr;

  __device__ void Init(const SelectBuffers& b, const ItemContext<G>& ic,
                       uint8_t* persist) {
    const int warp = threadIdx.x >> 5;
    g = warp / kWarpsPerRow;
    sub = warp % kWarpsPerRow;
    const int qh = ic.group->q_heads;  // <= kMaxQHeads (planner)
    // Every row's query into shared memory as bf16, converted here from the
    // fp8 copy (exact: e4m3 values are bf16 values), 16 values per step.
    constexpr int kChunksPerHead = kD / 16;
    for (int gg = 0; gg < ic.num_rows; ++gg) {
      const uint8_t* src = b.q + b.rows[ic.group->rows[gg]].q_offset;
      uint8_t* dst = persist + gg * kMaxQHeads * kStride;
      for (int v = threadIdx.x; v < qh * kChunksPerHead; v += kSelectThreads) {
        const int h = v / kChunksPerHead, part = v % kChunksPerHead;
        const uint4 raw =
            __ldg(reinterpret_cast<const uint4*>(src + h * kD + part * 16));
        const uint8_t* in = reinterpret_cast<const uint8_t*>(&raw);
        uint32_t out[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          out[i] = Fp8ToBf16Bits(in[2 * i]) |
                   (Fp8ToBf16Bits(in[2 * i + 1]) << 16);
        }
        uint4* d = reinterpret_cast<uint4*>(dst + h * kStride + part * 32);
        d[0] = make_uint4(out[0], out[1], out[2], out[3]);
        d[1] = make_uint4(out[4], out[5], out[6], out[7]);
      }
    }
    qs = persist + g * kMaxQHeads * kStride;
  }

  __device__ void AfterWait() const {}

  static constexpr bool kSlotAhead = true;

  // Whether the tile's lo means are neither copied nor scored.
  static __device__ bool HiOnly(const ItemContext<G>& ic) {
    return kHiOnly || ic.group->means_hi_only != 0;
  }

  __device__ void Issue(const SelectBuffers& b, const ItemContext<G>& ic,
                        uint8_t* stage, TileShared& ts, int st,
                        const SlotRef& r) const {
    const int tid = threadIdx.x;
    const int i = tid >> 1;
    const int half = tid & 1;
    const uint32_t rows = r.rows;
    const uint8_t* hi = b.arena;
    const uint8_t* lo = b.arena;
    if (rows != 0) {
      const uint8_t* page = b.arena + static_cast<int64_t>(r.page) * kPageBytes;
      hi = page + static_cast<int64_t>(r.in_page) * kD * 2;
      lo = hi + ic.layer->geo.MeanLoOffset();
    }
    // Each block row is kD * 2 bytes, for hi and for lo: thread `half` 0
    // copies hi, 1 copies lo, as one bulk copy into the padded row (rows of
    // no candidate block are not copied: their scores are never written).
    const uint8_t* src = half == 0 ? hi : lo;
    uint8_t* dst = stage + half * kTileSlots * kStride + i * kStride;
    uint64_t* bar = full + st;
    if (rows != 0 && (half == 0 || !HiOnly(ic))) {
      MbarArriveExpectTx(bar, kD * 2);
      BulkLoad(dst, src, kD * 2, bar);
    } else {
      MbarArrive(bar);
    }
    if (half == 0) {
      ts.pos[st][i] = r.pos;
      ts.rows[st][i] = static_cast<uint8_t>(rows);
    }
  }

  __device__ void Compute(const uint8_t* stage, const float* weights,
                          float* staging, const ItemContext<G>& ic,
                          const TileShared& /*ts*/, int /*st*/) {
    if (g >= ic.num_rows) return;
    const bool hi_only = HiOnly(ic);
    const int lane = threadIdx.x & 31;
    const int gid = lane >> 2, tid4 = lane & 3;
    const int slot0 = sub * kSlotsPerWarp;
    const uint8_t* hi_base = stage;
    const uint8_t* lo_base = stage + kTileSlots * kStride;
    float part[2 * kNT];
#pragma unroll
    for (int j = 0; j < 2 * kNT; ++j) part[j] = 0.f;
    const float* w = weights + g * 128;
#pragma unroll 1
    for (int hg = 0; hg < kHeadGroups; ++hg) {
      float acc[kMTiles][kNT][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] =
              0.f;
        }
      }
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t bh[kNT][2], bl[kNT][2] = {};
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          // lanes 0-7: hi k 0-7, 8-15: hi k 8-15, 16-23: lo k 0-7,
          // 24-31: lo k 8-15 of blocks slot0 + nt * 8 + (lane & 7).
          const uint8_t* base = (lane >> 4) ? lo_base : hi_base;
          const uint8_t* addr = base +
                                (slot0 + nt * 8 + (lane & 7)) * kStride +
                                ks * 32 + ((lane >> 3) & 1) * 16;
          if constexpr (kHiOnly) {  // lanes 0-15's addresses: hi
            LdMatrixX2(bh[nt], addr);
          } else {
            uint32_t r[4];
            LdMatrixX4(r, addr);
            bh[nt][0] = r[0];
            bh[nt][1] = r[1];
            bl[nt][0] = r[2];
            bl[nt][1] = r[3];
          }
        }
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          // lanes 0-7: heads 0-7 k 0-7, 8-15: heads 8-15 k 0-7,
          // 16-23: heads 0-7 k 8-15, 24-31: heads 8-15 k 8-15.
          const uint8_t* addr =
              qs + (hg * 64 + mt * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) *
                       kStride +
              ks * 32 + (lane >> 4) * 16;
          uint32_t af[4];
          LdMatrixX4(af, addr);
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            MmaBf16(acc[mt][nt], af, bh[nt][0], bh[nt][1]);
            if (!hi_only) MmaBf16(acc[mt][nt], af, bl[nt][0], bl[nt][1]);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const float w0 = w[hg * 64 + mt * 16 + gid];
        const float w1 = w[hg * 64 + mt * 16 + gid + 8];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          part[2 * nt] += w0 * fmaxf(acc[mt][nt][0], 0.f) +
                          w1 * fmaxf(acc[mt][nt][2], 0.f);
          part[2 * nt + 1] += w0 * fmaxf(acc[mt][nt][1], 0.f) +
                              w1 * fmaxf(acc[mt][nt][3], 0.f);
        }
      }
    }
    const float v = ReduceScatter<2 * kNT>(part, lane);
    if (PublishesLane<2 * kNT>(lane)) {
      const int j = JOfLane<2 * kNT>(lane);
      const int col = slot0 + (j >> 1) * 8 + tid4 * 2 + (j & 1);
      staging[g * kTileSlots + col] = v;
    }
  }
};

// One thread per (row, slot): correct for every format and head_dim, used
// where the tensor-core scorers do not apply. Queries are fp32 [H][D]
// dequantized, weights w_h.
template <int G, bool kBlocksT>
struct GenericScorer {
  static constexpr int kStageBytes = 0;
  static constexpr int kPersistBytes = 0;
  static constexpr bool kBlocks = kBlocksT;
  static constexpr bool kTma = false;  // no bulk tensor copies
  static constexpr bool kBulkRows = false;
  static constexpr int kMinBlocks = 1;
  static constexpr int kStages = 1;
  static constexpr int kCap = kCandidateCap;

  __device__ void AfterWait() const {}

  __device__ void Init(const SelectBuffers&, const ItemContext<G>&, uint8_t*) {}

  // One thread per slot (not a thread pair): Issue maps its slot itself.
  static constexpr bool kSlotAhead = false;

  __device__ void Issue(const SelectBuffers&, const ItemContext<G>& ic,
                        uint8_t*, TileShared& ts, int st,
                        int64_t tile_begin) const {
    const int i = threadIdx.x;
    if (i < kTileSlots) {
      uint32_t rows;
      const int64_t pos = MapSlot<G, kBlocks>(ic, tile_begin + i, &rows);
      ts.pos[st][i] = static_cast<int32_t>(pos);
      ts.rows[st][i] = static_cast<uint8_t>(rows);
    }
  }

  __device__ void ComputeWith(const SelectBuffers& b, const ItemContext<G>& ic,
                              const TileShared& ts, int st, float* staging) {
    const int g = threadIdx.x / kTileSlots;
    const int i = threadIdx.x % kTileSlots;
    if (g >= G || g >= ic.num_rows) return;
    if (((ts.rows[st][i] >> g) & 1u) == 0) return;
    const uint32_t pos = static_cast<uint32_t>(ts.pos[st][i]);
    const LayerView& lv = *ic.layer;
    const PageGeometry& geo = lv.geo;
    const int D = geo.head_dim;
    const RowDesc& row = b.rows[ic.group->rows[g]];
    const float* q = reinterpret_cast<const float*>(b.q + row.q_offset);
    const float* w = b.w + row.w_offset;
    const int H = ic.group->heads;
    float score = 0.f;
    if (kBlocks) {
      const uint32_t page_rel = DivFast(pos, lv.blocks_per_page_magic);
      const uint32_t in_page = pos - page_rel * geo.blocks_per_page;
      const uint8_t* page =
          b.arena +
          static_cast<int64_t>(b.tables[lv.summary_table + page_rel]) *
              kPageBytes;
      const float* sums = reinterpret_cast<const float*>(page + geo.SumsOffset()) +
                          static_cast<int64_t>(in_page) * D;
      const float count = static_cast<float>(
          reinterpret_cast<const int32_t*>(page + geo.CountsOffset())[in_page]);
      const bool mean = geo.pooling == kPoolMean;
      for (int h = 0; h < H; ++h) {
        const float* qh = q + h * D;
        float dot = 0.f;
        for (int d = 0; d < D; ++d) {
          const float r = mean ? sums[d] / count : sums[d];
          dot = fmaf(qh[d], r, dot);
        }
        score = fmaf(w[h], fmaxf(dot, 0.f), score);
      }
    } else {
      const uint32_t page_rel = DivFast(pos, lv.tokens_per_page_magic);
      const uint32_t in_page = pos - page_rel * geo.tokens_per_page;
      const uint8_t* page =
          b.arena +
          static_cast<int64_t>(b.tables[lv.key_table + page_rel]) * kPageBytes;
      const uint8_t* key = page + static_cast<int64_t>(in_page) * geo.row_bytes;
      float scale = 1.f;
      if (geo.format == kFormatFp8) {
        scale = fabsf(reinterpret_cast<const float*>(page + geo.ScalesOffset())
                          [in_page]);
      }
      for (int h = 0; h < H; ++h) {
        const float* qh = q + h * D;
        float dot = 0.f;
        if (geo.format == kFormatFp8) {
          for (int d = 0; d < D; ++d) dot = fmaf(qh[d], Fp8ToFloat(key[d]), dot);
          dot *= scale;
        } else if (geo.format == kFormatBf16) {
          const uint16_t* k16 = reinterpret_cast<const uint16_t*>(key);
          for (int d = 0; d < D; ++d) {
            dot = fmaf(qh[d], Bf16BitsToFloat(k16[d]), dot);
          }
        } else {
          const float* k32 = reinterpret_cast<const float*>(key);
          for (int d = 0; d < D; ++d) dot = fmaf(qh[d], k32[d], dot);
        }
        score = fmaf(w[h], fmaxf(dot, 0.f), score);
      }
    }
    staging[g * kTileSlots + i] = score;
  }
};


// Queries of a group's rows for the wgmma token scorers: 64 heads x 128 B
// per row, rows stacked, in the 128-byte-swizzled operand layout.
__device__ __forceinline__ void StoreSwizzledQueries(const SelectBuffers& b,
                                                     const GroupDesc& grp,
                                                     uint8_t* dst) {
  for (int i = threadIdx.x; i < grp.num_rows * 512; i += kSelectThreads) {
    const int gg = i >> 9, h = (i >> 3) & 63, c = i & 7;
    const uint8_t* src =
        b.q + b.rows[grp.rows[gg]].q_offset + h * 128 + c * 16;
    *reinterpret_cast<uint4*>(dst + gg * 64 * 128 + h * 128 +
                              ((c ^ (h & 7)) << 4)) =
        __ldg(reinterpret_cast<const uint4*>(src));
  }
}

// The epilogue of an m64nNk32 token tile for one row: d (the row's 32
// accumulators) holds slot r0 (d[4 j + e], e < 2) or r0 + 8 (e >= 2) at head
// column 8 j + 2 tid4 + (e & 1). Returns this lane's part of
// sum_h w_h ReLU(d) for both slots; weight(j) gives the two head weights of
// columns 8 j + 2 tid4 and + 1. The quad's 4 lanes hold the rest.
template <class Weight>
__device__ __forceinline__ float2 WgmmaHeadPartialSums(const float* d,
                                                       Weight weight) {
  float s0 = 0.f, s1 = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float2 wj = weight(j);
    const float* dj = d + 4 * j;
    s0 = fmaf(wj.x, fmaxf(dj[0], 0.f), s0);
    s0 = fmaf(wj.y, fmaxf(dj[1], 0.f), s0);
    s1 = fmaf(wj.x, fmaxf(dj[2], 0.f), s1);
    s1 = fmaf(wj.y, fmaxf(dj[3], 0.f), s1);
  }
  return make_float2(s0, s1);
}

// The head sums of row g (columns [64 g, 64 g + 64) of d) for the thread's
// two slots r0 and r0 + 8, summed over the quad (every lane gets both);
// `w` holds the row's 64 head weights.
template <int N>
__device__ __forceinline__ float2 WgmmaHeadSum(const float (&d)[N / 2],
                                               const float* w, int g,
                                               int tid4) {
  float2 s = WgmmaHeadPartialSums(d + 32 * g, [&](int j) {
    return *reinterpret_cast<const float2*>(w + 8 * j + 2 * tid4);
  });
  s.x += __shfl_xor_sync(0xFFFFFFFFu, s.x, 1);
  s.y += __shfl_xor_sync(0xFFFFFFFFu, s.y, 1);
  s.x += __shfl_xor_sync(0xFFFFFFFFu, s.x, 2);
  s.y += __shfl_xor_sync(0xFFFFFFFFu, s.y, 2);
  return s;
}

// WgmmaHeadSum for one row (N = 64) with the head weights in registers
// (wr[j] = w[8 j + 2 tid4], w[8 j + 2 tid4 + 1]) and the quad's two sums
// scattered instead of broadcast: lanes with even tid4 get slot r0's sum,
// odd ones slot r0 + 8's (two shuffles instead of four, no weight loads).
__device__ __forceinline__ float WgmmaHeadSumScatter(const float (&d)[32],
                                                     const float2 (&wr)[8],
                                                     int tid4) {
  const float2 s = WgmmaHeadPartialSums(d, [&](int j) { return wr[j]; });
  const bool odd = (tid4 & 1) != 0;
  float mine = odd ? s.y : s.x;
  mine += __shfl_xor_sync(0xFFFFFFFFu, odd ? s.x : s.y, 1);
  mine += __shfl_xor_sync(0xFFFFFFFFu, mine, 2);
  return mine;
}

// FP8 queries x FP8 keys on Hopper warpgroup MMA (wgmma, sm_90a), for
// D = 128 and 64 query heads (33..64 real heads). Slots are the MMA's M and
// heads its N: warpgroup wg scores slots [64 wg, 64 wg + 64) of the tile
// against the G rows' 64 heads each (m64nNk32, N = 64 G, K = 128: 4 steps),
// both operands K-major in 128-byte-swizzled shared memory. A thread's
// accumulators then hold 2 slots x 16 heads per row, so the epilogue (ReLU,
// head weights, head sum) is 32 FMAs per row plus a 4-lane shuffle sum: no
// shared-memory reduction, no warpgroup barrier. ~128 registers: two CTAs
// per SM overlap one CTA's tensor-core work with the other's top-k work.
//
// kTma: each tile is one bulk tensor copy plus one 512-byte bulk copy of its
// scales, issued by thread 0 and completing on the stage's transaction
// barrier (`full`), instead of 640 per-thread cp.async copies. Needs tiles
// that are aligned 128-key runs inside one page (select_plan.cc checks);
// the keys of non-candidate slots are then whatever the page holds, and
// their scores are never read.
template <int G, bool kTmaT = false>
struct WgmmaTokenScorer {
  static constexpr bool kTma = kTmaT;
  static constexpr bool kBulkRows = false;
  static constexpr int kN = 64 * G;              // heads of all rows
  static constexpr int kKeyBytes = kTileSlots * 128;
  static constexpr int kStageBytes = kKeyBytes + 1024;  // + scales, aligned
  static constexpr int kQBytes = 64 * 128;
  static constexpr int kPersistBytes = G * kQBytes;
  static constexpr bool kBlocks = false;
  static constexpr int kMinBlocks = kWgmmaTokenCtasPerSm;
  // G == 1 (decode, HISA rows) reads keys from HBM: one more tile in flight.
  static constexpr int kStages = G == 2 ? 2 : 3;
  // Two CTAs per SM must fit in shared memory.
  static constexpr int kCap = G == 2 ? 3072 : kCandidateCap;

  int slot0;  // first slot of this warpgroup
  const uint8_t* qs;
  // kTma only (set by TileKernel): the stages' transaction barriers and the
  // arena's tensor map (a __grid_constant__ kernel parameter).
  uint64_t* full = nullptr;
  const CUtensorMap* map = nullptr;

  __device__ void Init(const SelectBuffers& b, const ItemContext<G>& ic,
                       uint8_t* persist) {
    slot0 = (threadIdx.x >> 7) * 64;
    qs = persist;
    StoreSwizzledQueries(b, *ic.group, persist);
    FenceProxyAsync();
  }

  __device__ void AfterWait() const { FenceProxyAsync(); }

  static constexpr bool kSlotAhead = true;

  __device__ void Issue(const SelectBuffers& b, const ItemContext<G>& ic,
                        uint8_t* stage, TileShared& ts, int st,
                        const SlotRef& r) const {
    const int tid = threadIdx.x;
    const int i = tid >> 1;
    const int half = tid & 1;
    if constexpr (kTma) {
      if (half == 0) {
        ts.pos[st][i] = r.pos;
        ts.rows[st][i] = static_cast<uint8_t>(r.rows);
      }
      if (tid == 0) {  // r is the tile's first slot
        IssueTileCopy(map, b.arena, TileCopyOf(*ic.layer, r), stage,
                      stage + kKeyBytes, full + st);
      }
    } else {
      const KeySource src = TokenKeySource(b, ic, r, 128);
      uint8_t* dst = stage + i * 128;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int chunk = half * 4 + j;
        CpAsync16(dst + ((chunk ^ (i & 7)) << 4), src.row + chunk * 16,
                  r.rows != 0);
      }
      if (half == 0) {
        CpAsync4(stage + kKeyBytes + i * 4, src.scale, r.rows != 0);
        ts.pos[st][i] = r.pos;
        ts.rows[st][i] = static_cast<uint8_t>(r.rows);
      }
    }
  }

  __device__ void Compute(const uint8_t* stage, const float* weights,
                          float* staging, const ItemContext<G>& ic,
                          const TileShared& ts, int st) {
    const int lane = threadIdx.x & 31;
    const int warp = (threadIdx.x >> 5) & 3;
    const int gid = lane >> 2, tid4 = lane & 3;
    // Every warp of the warpgroup looks at all its slots: the same decision.
    const bool any = (ts.rows[st][slot0 + lane] | ts.rows[st][slot0 + 32 + lane]) != 0;
    if (!__any_sync(0xFFFFFFFFu, any)) return;

    // Not zeroed: the first wgmma of the chain runs with scale-d = 0 and
    // never reads d (zeroing cost 32-64 moves per tile).
    float d[kN / 2];
    const uint32_t da = WgmmaDescSw128Lo(stage + slot0 * 128);
    const uint32_t db = WgmmaDescSw128Lo(qs);
    WgmmaFenceOperands(d);
    WgmmaFence();
    if constexpr (kN == 128) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        // K step kk: 32 bytes further into each 128-byte row.
        WgmmaM64N128K32(d, da + 2 * kk, db + 2 * kk, kk);
      }
    } else {
      WgmmaM64N64K128(d, da, db);
    }
    WgmmaCommit();
    WgmmaWaitAll();
    WgmmaFenceOperands(d);

    // The thread's slots: r0 and r0 + 8 (WgmmaHeadSum).
    const int r0 = slot0 + warp * 16 + gid;
    const float* scales = reinterpret_cast<const float*>(stage + kKeyBytes);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float2 s = WgmmaHeadSum<kN>(d, weights + g * 128, g, tid4);
      if (tid4 == 0 && g < ic.num_rows) {
        staging[g * kTileSlots + r0] = s.x * fabsf(scales[r0]);
        staging[g * kTileSlots + r0 + 8] = s.y * fabsf(scales[r0 + 8]);
      }
    }
  }
};

// ----------------------------------------------------------------------------
// Tile kernel (block scoring when Scorer::kBlocks, else token top-k).

template <class Scorer, int G>
struct TileLayout {
  static constexpr int kCap = Scorer::kCap;
  static constexpr int kStageOff = 0;
  static constexpr int kPersistOff =
      kStageOff + Scorer::kStages * Scorer::kStageBytes;
  static constexpr int kTileOff =
      (kPersistOff + Scorer::kPersistBytes + 15) / 16 * 16;
  static constexpr int kWeightsOff =
      (kTileOff + static_cast<int>(sizeof(TileShared)) + 15) / 16 * 16;
  static constexpr int kStagingOff = kWeightsOff + G * 128 * 4;
  static constexpr int kRadixOff = kStagingOff + G * kTileSlots * 4;
  static constexpr int kBarOff =
      (kRadixOff + static_cast<int>(sizeof(RadixShared)) + 15) / 16 * 16;
  static constexpr int kBufferOff = kBarOff + kMaxStages * 8 + 8;
  static constexpr int kBufferBytes = Scorer::kBlocks ? 0 : G * kCap * 8;
  // + 1024: the base is aligned up to 1024 bytes at run time (wgmma tiles).
  static constexpr int kBytes = kBufferOff + kBufferBytes + 1024;
};

template <class Scorer>
struct HasComputeWith {
  static constexpr bool value = false;
};
template <int G, bool B>
struct HasComputeWith<GenericScorer<G, B>> {
  static constexpr bool value = true;
};

// Compacts one row's candidate buffer to its top k (count > k) and returns
// the new insertion bound. Not inlined: it is rare, and inlining it into the
// tile loop costs the scorer registers.
template <int CAP>
static __device__ __noinline__ uint64_t CompactRow(uint32_t* keys,
                                                   int32_t* pos, int* count,
                                                   int k, RadixShared& rs) {
  const Threshold th = RadixSelect(
      *count, k,
      [&](int i) { return Composite(keys[i], static_cast<uint32_t>(pos[i])); },
      rs);
  *count = CompactBuffer<CAP / kSelectThreads>(keys, pos, *count, th, rs);
  return th.prefix << th.shift;
}

// Block choice of one group (run by the last block-scoring CTA of the
// group): forced blocks 0 and c, the top m - 2 others by J (ties: lower
// index), or every block when c + 1 <= m; then one ascending union of the
// rows' choices with a row mask per block.
// `cache` (cache_floats floats of free shared memory) takes the rows' block
// scores when they fit: the radix passes and the compaction then read shared
// memory instead of paying an L2 round trip per step.
// `local` (one row, GroupDesc::tokens_choose: a token work item choosing
// for itself): the chosen blocks go there, ascending, instead of to the
// union in global memory, and their number is returned (else 0).
// cache_filled: the rows' scores are in `cache` already (GroupDesc::
// tokens_score_blocks), and cache_floats holds them.
template <int G>
__device__ int ChooseBlocksForGroup(const SelectBuffers& b,
                                    const GroupDesc& grp, float* cache,
                                    int cache_floats, RadixShared& rs,
                                    int32_t* local = nullptr,
                                    bool cache_filled = false) {
  const LayerView& lv = b.layers[grp.layer];
  const int log2b = lv.geo.log2_block;
  const int m = grp.m;
  int64_t c[G];
  const float* J[G];
  bool all[G];
  int extra[G];
  Threshold th[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    c[g] = -1;
    J[g] = nullptr;
    all[g] = false;
    extra[g] = 0;
    if (g >= grp.num_rows) continue;
    const RowDesc& row = b.rows[grp.rows[g]];
    c[g] = row.position >> log2b;
    J[g] = b.block_scores + row.j_offset;
    all[g] = c[g] + 1 <= m;
    // c >= m >= 1, so blocks 0 and c are distinct and c - 1 > m - 2.
    if (!all[g]) extra[g] = m > 2 ? m - 2 : 0;
  }
  int64_t cached = 0;
#pragma unroll
  for (int g = 0; g < G; ++g) cached += c[g] + 1;  // c = -1 past num_rows
  const bool in_smem = cache_filled || cached <= cache_floats;
  if (in_smem) {
    float* dst = cache;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g >= grp.num_rows) continue;
      if (!cache_filled) {
        for (int64_t i = threadIdx.x; i <= c[g]; i += kSelectThreads) {
          dst[i] = __ldcg(J[g] + i);
        }
      }
      J[g] = dst;
      dst += c[g] + 1;
    }
    if (!cache_filled) __syncthreads();
  }
  Trace(b.trace, local != nullptr ? kTraceChoiceIn : kTraceTailIn);
  auto score = [&](int g, int64_t blk) {
    return in_smem ? J[g][blk] : __ldcg(J[g] + blk);
  };
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (extra[g] > 0) {
      th[g] = RadixSelect(
          static_cast<int>(c[g] - 1), extra[g],
          [&](int i) {
            const uint32_t blk = static_cast<uint32_t>(i + 1);
            return Composite(OrderedKey(score(g, blk)), blk);
          },
          rs);
    }
  }
  Trace(b.trace, local != nullptr ? kTraceChoiceChosen : kTraceTailChosen);
  // Whether row g (blk <= c[g]) chose block blk.
  auto chosen = [&](int g, int64_t blk) {
    if (all[g] || blk == 0 || blk == c[g]) return true;
    return extra[g] > 0 &&
           Keeps(th[g], Composite(OrderedKey(score(g, blk)),
                                  static_cast<uint32_t>(blk)));
  };
  if (grp.split_unions) {
    // One union per row, for that row's own token group.
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g >= grp.num_rows) break;
      const GroupDesc& tg = b.groups[grp.union_groups[g]];
      int32_t* out = b.unions + 2 * tg.union_offset;
      const int64_t total = CompactStream(
          c[g] + 1,
          [&](int64_t blk) -> uint32_t { return chosen(g, blk) ? 1u : 0u; },
          [&](int64_t dst, int64_t blk, uint32_t) {
            out[2 * dst] = static_cast<int32_t>(blk);
            out[2 * dst + 1] = 1;
          },
          rs);
      if (threadIdx.x == 0) {
        b.union_counts[tg.union_index] = static_cast<int32_t>(total);
      }
    }
    return 0;
  }
  if (G == 1 && local != nullptr) {
    return static_cast<int>(CompactStream(
        c[0] + 1,
        [&](int64_t blk) -> uint32_t { return chosen(0, blk) ? 1u : 0u; },
        [&](int64_t dst, int64_t blk, uint32_t) {
          local[dst] = static_cast<int32_t>(blk);
        },
        rs));
  }
  int32_t* out = b.unions + 2 * grp.union_offset;
  const int64_t n = (grp.max_position >> log2b) + 1;
  const int64_t total = CompactStream(
      n,
      [&](int64_t blk) -> uint32_t {
        uint32_t mask = 0;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          if (g >= grp.num_rows || blk > c[g]) continue;
          if (chosen(g, blk)) mask |= 1u << g;
        }
        return mask;
      },
      [&](int64_t dst, int64_t blk, uint32_t mask) {
        out[2 * dst] = static_cast<int32_t>(blk);
        out[2 * dst + 1] = static_cast<int32_t>(mask);
      },
      rs);
  if (threadIdx.x == 0) {
    b.union_counts[grp.union_index] = static_cast<int32_t>(total);
  }
  return 0;
}

// Writes row g's final output from a position-ordered list of n <= k entries.
__device__ __forceinline__ void WriteFinal(const SelectBuffers& b,
                                           const RowDesc& row, int k,
                                           const uint32_t* keys,
                                           const int32_t* pos, int n) {
  int32_t* out_pos = b.out_pos + row.out_offset;
  for (int i = threadIdx.x; i < k; i += kSelectThreads) {
    out_pos[i] = i < n ? pos[i] : -1;
  }
  if (b.out_scores == nullptr) return;
  float* out_scores = b.out_scores + row.out_offset;
  for (int i = threadIdx.x; i < k; i += kSelectThreads) {
    out_scores[i] = i < n ? KeyToFloat(keys[i]) : __int_as_float(0x7FC00000);
  }
}

// Merge of a split group (run by the group's last token CTA): each row's
// split lists, concatenated in split order, are still position-ordered; they
// stream through the row's candidate buffer (compacted to k whenever full).
template <int G, int CAP>
__device__ void FinalizeGroup(const SelectBuffers& b, const GroupDesc& grp,
                              uint32_t* buf_keys, int32_t* buf_pos,
                              RadixShared& rs) {
  const int k = grp.k;
  for (int g = 0; g < grp.num_rows; ++g) {
    uint32_t* keys = buf_keys + g * CAP;
    int32_t* pos = buf_pos + g * CAP;
    int count = 0;
    for (int s = 0; s < grp.num_splits; ++s) {
      const int list = grp.partial_index + s * G + g;
      const int cnt = __ldcg(b.partial_counts + list);
      const int32_t* ppos =
          b.partial_pos + static_cast<int64_t>(list) * b.partial_stride;
      const uint32_t* pkey =
          b.partial_key + static_cast<int64_t>(list) * b.partial_stride;
      for (int done = 0; done < cnt;) {
        if (count == CAP) CompactRow<CAP>(keys, pos, &count, k, rs);
        const int take = min(cnt - done, CAP - count);
        for (int i = threadIdx.x; i < take; i += kSelectThreads) {
          keys[count + i] = __ldcg(pkey + done + i);
          pos[count + i] = __ldcg(ppos + done + i);
        }
        __syncthreads();
        count += take;
        done += take;
      }
    }
    if (count > k) CompactRow<CAP>(keys, pos, &count, k, rs);
    WriteFinal(b, b.rows[grp.rows[g]], k, keys, pos, count);
  }
}

// The k outputs of a slot-selected row: the entries `th` keeps among the
// slot keys keys[0, n), in slot order (slot i is position
// (blocks[i >> log2b] << log2b) + i % B, so positions ascend), then -1 and
// NaN scores (scores only when the plan writes them).
__device__ __forceinline__ void WriteSlotSelection(
    const SelectBuffers& b, const RowDesc& row, int k, const uint32_t* keys,
    int n, const int32_t* blocks, int log2b, const KeyThreshold& th,
    RadixShared& rs) {
  int32_t* out_pos = b.out_pos + row.out_offset;
  // Null when no row of the plan asked for scores.
  float* out_scores =
      b.out_scores != nullptr ? b.out_scores + row.out_offset : nullptr;
  const int64_t in_block = (int64_t{1} << log2b) - 1;
  const int kept = CompactByKey(
      n, [&](int i) { return keys[i]; }, th,
      [&](int dst, int i) {
        out_pos[dst] = static_cast<int32_t>(
            (static_cast<int64_t>(blocks[i >> log2b]) << log2b) +
            (i & in_block));
        if (out_scores != nullptr) out_scores[dst] = KeyToFloat(keys[i]);
      },
      rs);
  for (int i = kept + threadIdx.x; i < k; i += kSelectThreads) {
    out_pos[i] = -1;
    if (out_scores != nullptr) out_scores[i] = __int_as_float(0x7FC00000);
  }
}

// The final select of a slot-score group (run by its last token CTA): per
// row, one key per union slot (0 = not a candidate of this row: block not
// chosen by it, or past t; NaN scores map to 1, still below every number),
// one radix select on the keys (ties to the lower slot), one ordered
// compaction straight to the output. Slots ascend with position, so the
// output is sorted. `keys` holds kSlotSelectCap entries, `unions`
// 2 * kSlotSelectCap / 16. The bulk-copy token kernel's rows, which arrive
// as keys with a histogram, use SelectFromSlotKeys (tma_token_kernel.cuh).
template <int G>
__device__ __forceinline__ void SelectFromSlotScores(const SelectBuffers& b,
                                                  const GroupDesc& grp,
                                                  const ItemContext<G>& ic,
                                                  uint32_t* keys,
                                                  int32_t* unions,
                                                  RadixShared& rs) {
  const int log2b = ic.log2b;
  const int num_blocks = __ldcg(b.union_counts + grp.union_index);
  const int n = num_blocks << log2b;  // <= kSlotSelectCap (planner)
  int32_t* blocks = unions;
  int32_t* masks = unions + num_blocks;
  for (int u = threadIdx.x; u < num_blocks; u += kSelectThreads) {
    blocks[u] = ic.unions[2 * u];
    masks[u] = ic.unions[2 * u + 1];
  }
  __syncthreads();
  const int64_t in_block = (int64_t{1} << log2b) - 1;
  auto position = [&](int i) {
    return (static_cast<int64_t>(blocks[i >> log2b]) << log2b) + (i & in_block);
  };
  const int k = grp.k;
  for (int g = 0; g < ic.num_rows; ++g) {
    const float* scores = b.slot_scores + grp.slot_score_offset +
                          static_cast<int64_t>(g) * grp.slot_score_stride;
    // 4 slots per thread per step (n and the row base are multiples of 4),
    // two steps' loads in flight.
    int valid = 0;
#pragma unroll 2
    for (int base = 4 * threadIdx.x; base < n; base += 4 * kSelectThreads) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(scores + base));
      const float f[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int i = base + j;
        const bool cand = ((masks[i >> log2b] >> g) & 1) != 0 &&
                          position(i) <= ic.t[g];
        keys[i] = cand ? max(OrderedKey(f[j]), 1u) : 0u;
        valid += cand ? 1 : 0;
      }
    }
    // Candidates of the row, summed over the CTA.
    const int warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      valid += __shfl_xor_sync(0xFFFFFFFFu, valid, off);
    }
    if ((threadIdx.x & 31) == 0) rs.warp_total[warp] = valid;
    __syncthreads();
    int total = 0;
#pragma unroll
    for (int w = 0; w < kSelectThreads / 32; ++w) total += rs.warp_total[w];
    __syncthreads();
    // Keys alone decide: slots ascend with position, so among equal keys
    // the lower slot is the lower position (SPEC 4.3 ties).
    auto key_of = [&](int i) { return keys[i]; };
    KeyThreshold th;  // keeps every candidate (key > 0)
    if (total > k) th = RadixSelectKey(n, k, key_of, rs);
    WriteSlotSelection(b, b.rows[grp.rows[g]], k, keys, n, blocks, log2b, th,
                       rs);
    __syncthreads();  // keys are rewritten for the next row
  }
}

// Whether this CTA is the last of its group to finish `stage` (0: block
// scoring, 1: token scoring) of `expected` CTAs: an atomic ticket after a
// fence, so that the last one sees every other CTA's global writes. The
// last one resets the counter for the next launch (after its group step).
__device__ __forceinline__ bool LastOfGroup(const SelectBuffers& b,
                                            const WorkItem& item, int stage,
                                            int expected, RadixShared& rs) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    rs.ticket = atomicAdd(b.counters + 2 * item.group + stage, 1);
  }
  __syncthreads();
  const bool last = rs.ticket == expected - 1;
  if (last) __threadfence();
  Trace(b.trace, kTraceTicket);
  return last;
}

// `keys`: the arena's tensor map, read only by bulk-copy scorers.
template <class Scorer, int G>
__global__ void __launch_bounds__(kSelectThreads, Scorer::kMinBlocks)
    TileKernel(SelectBuffers b, const WorkItem* items,
               const __grid_constant__ CUtensorMap keys) {
  using Layout = TileLayout<Scorer, G>;
  constexpr bool kBlocks = Scorer::kBlocks;
  constexpr bool kTma = Scorer::kTma;
  constexpr bool kBulkRows = Scorer::kBulkRows;
  constexpr int kCap = Layout::kCap;
  constexpr int kStages = Scorer::kStages;
  // Slot-score groups: one key per slot in the candidate buffer, the union
  // (blocks, masks) in the stage area.
  static_assert(kBlocks || HasComputeWith<Scorer>::value ||
                    (2 * G * kCap >= kSlotSelectCap &&
                     kStages * Scorer::kStageBytes >= kSlotSelectCap / 16 * 8),
                "slot-score select does not fit");
  extern __shared__ __align__(16) uint8_t smem_raw[];
  // Aligned by an offset from smem_raw (not through an integer cast), so
  // that the compiler still knows every pointer below is shared memory and
  // emits LDS/STS rather than generic loads and stores.
  uint8_t* smem = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  uint8_t* stages = smem + Layout::kStageOff;
  TileShared& ts = *reinterpret_cast<TileShared*>(smem + Layout::kTileOff);
  float* weights = reinterpret_cast<float*>(smem + Layout::kWeightsOff);
  float* staging = reinterpret_cast<float*>(smem + Layout::kStagingOff);
  RadixShared& rs = *reinterpret_cast<RadixShared*>(smem + Layout::kRadixOff);
  uint32_t* buf_keys = reinterpret_cast<uint32_t*>(smem + Layout::kBufferOff);
  int32_t* buf_pos =
      reinterpret_cast<int32_t*>(smem + Layout::kBufferOff + G * kCap * 4);

  // The block stage lets the token stage launch at once (its CTAs take
  // SMs as block CTAs leave); the token stage reads block-stage outputs
  // (union counts, unions) only after the block stage has completed.
  Trace(b.trace, kTraceStart);
  if constexpr (kBlocks) {
    AllowDependentLaunch();
    // The token stage's key histograms (SelectBuffers::slot_hist) start
    // from zero: it counts into them only after the block stage has
    // completed (its own GridDependencyWait), and nothing else touches them.
    uint4* hist4 = reinterpret_cast<uint4*>(b.slot_hist);
    for (int64_t i = int64_t{blockIdx.x} * kSelectThreads + threadIdx.x;
         i < b.slot_hist_count / 4; i += int64_t{gridDim.x} * kSelectThreads) {
      hist4[i] = make_uint4(0, 0, 0, 0);
    }
  } else {
    GridDependencyWait();
    Trace(b.trace, kTraceWaited);
  }
  const WorkItem item = items[blockIdx.x];
  const GroupDesc& grp = b.groups[item.group];
  const ItemContext<G> ic = MakeItemContext<G, kBlocks>(b, item, grp);

  // Weights of every row, padded with zeros to 128 per row.
  for (int i = threadIdx.x; i < G * 128; i += kSelectThreads) {
    const int g = i / 128, h = i % 128;
    float v = 0.f;
    if (g < ic.num_rows && h < grp.q_heads) {
      v = b.w[b.rows[grp.rows[g]].w_offset + h];
    }
    weights[i] = v;
  }

  Scorer scorer;
  scorer.Init(b, ic, smem + Layout::kPersistOff);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + Layout::kBarOff);
  // Transaction barriers: kTma tiles are one bulk copy issued by thread 0
  // (one arrival), kBulkRows tiles one bulk copy (or none) per thread.
  if constexpr (kTma || kBulkRows) {
    scorer.full = full;
    if constexpr (kTma) scorer.map = &keys;
    if (threadIdx.x == 0) {
      for (int s = 0; s < Scorer::kStages; ++s) {
        MbarInit(full + s, kTma ? 1 : kSelectThreads);
      }
      MbarFenceInit();
    }
    __syncthreads();  // initialized before any thread waits on them
  }

  int count[G];
  uint64_t tau[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    count[g] = 0;
    tau[g] = 0;
  }
  const int k = grp.k;
  // Slot-score groups are single rows (select_plan.cc): the paired variant
  // would cost the paired DENSE kernel registers.
  const bool slot_scores = !kBlocks && G == 1 && grp.slot_score_offset >= 0;

  const int64_t span = ic.slot_end - ic.slot_begin;
  const int64_t num_tiles = span > 0 ? (span + kTileSlots - 1) / kTileSlots : 0;
  // kStages - 1 tiles in flight ahead of the one being scored. Every
  // iteration commits one cp.async group (empty past the end), so waiting
  // for all but the newest kStages - 1 groups means tile `it` has landed.
  // Slot-ahead scorers get each tile's slot map resolved one iteration
  // before its copy (`ref`), from a union entry read one more iteration
  // earlier (`entry`): no global read latency on the copy-issue path.
  static_assert(kStages >= 1 && kStages <= kMaxStages, "stages");
  const int64_t my_slot = ic.slot_begin + (threadIdx.x >> 1);
  auto slot_of = [&](int64_t tile) { return my_slot + tile * kTileSlots; };
  // Bulk copies need one page lookup per tile: thread 0's (the tile's first
  // slot).
  const bool need_page = !kTma || threadIdx.x == 0;
  SlotRef ref{};
  UnionEntry entry{};
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) {
      uint8_t* stage = stages + s * Scorer::kStageBytes;
      if constexpr (Scorer::kSlotAhead) {
        const SlotRef r = ResolveSlot<G, kBlocks>(
            b, ic, slot_of(s), LoadUnionEntry(ic, slot_of(s)), need_page);
        scorer.Issue(b, ic, stage, ts, s, r);
      } else {
        scorer.Issue(b, ic, stage, ts, s, ic.slot_begin + s * kTileSlots);
      }
    }
    CpAsyncCommit();
  }
  if constexpr (Scorer::kSlotAhead) {
    ref = ResolveSlot<G, kBlocks>(b, ic, slot_of(kStages - 1),
                                  LoadUnionEntry(ic, slot_of(kStages - 1)),
                                  need_page);
    entry = LoadUnionEntry(ic, slot_of(kStages));
  }
  Trace(b.trace, kTraceReady);
  // Stage of tile `it` and of tile it + kStages - 1 (the one copied now).
  int st = 0;
  int ns = kStages - 1;
#pragma unroll 1
  for (int64_t it = 0; it < num_tiles;
       ++it, st = st + 1 == kStages ? 0 : st + 1,
               ns = ns + 1 == kStages ? 0 : ns + 1) {
    {
      const int64_t next = it + kStages - 1;
      if constexpr (Scorer::kSlotAhead) {
        if (next < num_tiles) {
          scorer.Issue(b, ic, stages + ns * Scorer::kStageBytes, ts, ns, ref);
        }
        ref = ResolveSlot<G, kBlocks>(b, ic, slot_of(next + 1), entry,
                                      need_page);
        entry = LoadUnionEntry(ic, slot_of(next + 2));
      } else if (next < num_tiles) {
        scorer.Issue(b, ic, stages + ns * Scorer::kStageBytes, ts, ns,
                     ic.slot_begin + next * kTileSlots);
      }
      if constexpr (kTma || kBulkRows) {
        MbarWait(full + st, static_cast<uint32_t>(it / kStages) & 1u);
      } else {
        CpAsyncCommit();
        CpAsyncWait<kStages - 1>();
      }
    }
    scorer.AfterWait();
    __syncthreads();  // tile `it` and its slot map are visible
    if constexpr (HasComputeWith<Scorer>::value) {
      scorer.ComputeWith(b, ic, ts, st, staging);
    } else {
      scorer.Compute(stages + st * Scorer::kStageBytes, weights, staging, ic,
                     ts, st);
    }
    __syncthreads();  // staging is visible

    if constexpr (kBlocks) {
      for (int i = threadIdx.x; i < G * kTileSlots; i += kSelectThreads) {
        const int g = i / kTileSlots, s = i % kTileSlots;
        if ((ts.rows[st][s] >> g) & 1u) {
          b.block_scores[b.rows[grp.rows[g]].j_offset + ts.pos[st][s]] =
              staging[g * kTileSlots + s];
        }
      }
    } else if (slot_scores) {
      // Slot-score group: every slot's score to the scratch (the final
      // select decides eligibility).
      const int64_t tile_begin = ic.slot_begin + it * kTileSlots;
      for (int i = threadIdx.x; i < G * kTileSlots; i += kSelectThreads) {
        const int g = i / kTileSlots, s = i % kTileSlots;
        if (g < ic.num_rows && tile_begin + s < ic.slot_end) {
          b.slot_scores[grp.slot_score_offset +
                        static_cast<int64_t>(g) * grp.slot_score_stride +
                        tile_begin + s] = staging[g * kTileSlots + s];
        }
      }
    } else {
      const int warp = threadIdx.x >> 5;
      const int lane = threadIdx.x & 31;
      const uint32_t lower = (1u << lane) - 1u;
#pragma unroll
      for (int g = 0; g < G; ++g) {
        if (g >= ic.num_rows) break;
        int before = 0, total = 0;
        uint32_t my_key = 0, my_ballot = 0;
        int32_t my_pos = 0;
        bool my_keep = false;
#pragma unroll
        for (int qd = 0; qd < 4; ++qd) {
          const int s = qd * 32 + lane;
          const bool cand = (ts.rows[st][s] >> g) & 1u;
          const uint32_t key = OrderedKey(staging[g * kTileSlots + s]);
          const int32_t pos = ts.pos[st][s];
          const bool keep =
              cand && Composite(key, static_cast<uint32_t>(pos)) >= tau[g];
          const uint32_t ballot = __ballot_sync(0xFFFFFFFFu, keep);
          if (qd == (warp & 3)) {
            my_key = key;
            my_pos = pos;
            my_keep = keep;
            my_ballot = ballot;
            before = total;
          }
          total += __popc(ballot);
        }
        // Warps 4g'..4g'+3 write row g' quarter (warp & 3); with G == 1
        // warps 0-3 write and 4-7 only count.
        if ((warp >> 2) == g % 2 && my_keep) {
          const int dst = count[g] + before + __popc(my_ballot & lower);
          buf_keys[g * kCap + dst] = my_key;
          buf_pos[g * kCap + dst] = my_pos;
        }
        count[g] += total;
      }
    }
    __syncthreads();  // buffers written; stage and slot map free for reuse

    if constexpr (!kBlocks) {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        if (g < ic.num_rows && count[g] > kCap - kTileSlots) {
          tau[g] = CompactRow<kCap>(buf_keys + g * kCap, buf_pos + g * kCap,
                                    &count[g], k, rs);
        }
      }
    }
  }

  Trace(b.trace, kTraceLoopEnd);
  // The last CTA of a group (atomic ticket; counters reset for the next
  // launch) runs the group's next step: block choice after block scoring,
  // the merge of split lists after token top-k.
  auto last_of_group = [&](int stage, int expected) {
    return LastOfGroup(b, item, stage, expected, rs);
  };
  if constexpr (kBlocks) {
    if (grp.tokens_choose) {
      // The token items choose this row's blocks: count this item's scores
      // written (they wait for all of the group's block items).
      __threadfence();
      __syncthreads();
      if (threadIdx.x == 0) atomicAdd(b.counters + 2 * item.group, 1);
      Trace(b.trace, kTraceTicket);
    } else if (last_of_group(0, grp.block_items)) {
      // The stage area is free: it caches the block scores.
      ChooseBlocksForGroup<G>(b, grp, reinterpret_cast<float*>(stages),
                              kStages * Scorer::kStageBytes / 4, rs);
      if (threadIdx.x == 0) b.counters[2 * item.group] = 0;
      Trace(b.trace, kTraceTailEnd);
    }
    // A second block launch of the plan may have started early: it ends
    // only after the first has completed, so that the token stage, which
    // waits for its direct predecessor only, sees both.
    GridDependencyWait();
  } else if (G == 1 && slot_scores) {
    if (last_of_group(1, grp.num_splits)) {
      // The stage area is free: it holds the union for the select.
      SelectFromSlotScores<G>(b, grp, ic, buf_keys,
                              reinterpret_cast<int32_t*>(stages), rs);
      if (threadIdx.x == 0) b.counters[2 * item.group + 1] = 0;
      Trace(b.trace, kTraceTailEnd);
    }
  } else {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g >= ic.num_rows) break;
      uint32_t* keys = buf_keys + g * kCap;
      int32_t* pos = buf_pos + g * kCap;
      if (count[g] > k) CompactRow<kCap>(keys, pos, &count[g], k, rs);
      const int n = count[g];
      if (grp.num_splits == 1) {
        WriteFinal(b, b.rows[grp.rows[g]], k, keys, pos, n);
      } else {
        const int list = grp.partial_index + item.split * G + g;
        int32_t* ppos =
            b.partial_pos + static_cast<int64_t>(list) * b.partial_stride;
        uint32_t* pkey =
            b.partial_key + static_cast<int64_t>(list) * b.partial_stride;
        for (int i = threadIdx.x; i < n; i += kSelectThreads) {
          ppos[i] = pos[i];
          pkey[i] = keys[i];
        }
        if (threadIdx.x == 0) b.partial_counts[list] = n;
      }
    }
    if (grp.num_splits > 1 && last_of_group(1, grp.num_splits)) {
      __syncthreads();  // this CTA's own buffers are free again
      FinalizeGroup<G, kCap>(b, grp, buf_keys, buf_pos, rs);
      if (threadIdx.x == 0) b.counters[2 * item.group + 1] = 0;
      Trace(b.trace, kTraceTailEnd);
    }
  }
}

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_SELECT_KERNELS_CUH_
