// Token stage of slot-score rows with bulk tensor copies (TMA), for FP8
// keys and queries, D = 128, 64 query heads, B a multiple of 128 and
// 128 | tokens_per_page (select_plan.cc decides). The host side is the
// arena's tensor map (DeviceState::key_tensor_map) and the launcher.
// Slot-score rows are single HISA rows, whose slots index the union of
// their chosen blocks, and single whole-prefix rows of at most
// kSlotSelectCap positions (DENSE rows, and HISA rows with c + 1 <= m),
// whose slot i is position i.
//
// Either way every 128-slot tile is an aligned run of 128 keys inside one
// page (HISA: the union's blocks are whole multiples of 128): one bulk
// tensor copy (128 rows x 128 B, landing in the 128-byte-swizzled wgmma
// operand layout) plus one 512-byte bulk copy of the tile's scales, both
// completing on the stage's transaction barrier. Against TileKernel with
// WgmmaTokenScorer<1> this removes, per tile: 640 per-thread cp.async
// issues with their address arithmetic, the per-thread slot map, the
// staging round trip through shared memory and all three CTA barriers.
//
//   own blocks       (GroupDesc::tokens_score_blocks, a batch without a
//                    block launch) the item scores its share of the row's
//                    blocks first (ScoreOwnBlocks) and arrives at the
//                    cluster barrier that the choice below waits at.
//   before the loop  the barriers, the query operand, the weights and
//                    the row's key page table (while the block stage may
//                    still run: programmatic dependent launch); then, once
//                    the row's blocks are known (GridDependencyWait and the
//                    union the block stage wrote; or, GroupDesc::
//                    tokens_choose, once the row's block items have
//                    counted themselves done, the item's own choice from
//                    their block scores), one thread per tile resolves the
//                    tile's key row in the tensor map and its scales'
//                    address into shared memory; thread 0 fills the
//                    kTmaStages stages.
//   tile loop        every warpgroup waits for its stage's full barrier,
//                    scores its 64 slots x 64 heads (4 wgmma k-steps),
//                    reads its scales, releases the stage (one arrival per
//                    warp on the empty barrier) and writes its scores from
//                    registers straight to the row's slot-score scratch.
//                    Thread 0 refills the stage of the previous tile once
//                    all 8 warps released it (while its own MMA of this
//                    tile runs), so one warpgroup may run a tile ahead of
//                    the other. Head weights stay in registers; lanes 0
//                    and 1 of each quad publish its two slots' keys.
//                    Each slot's key (0 when it is no candidate) goes to
//                    the scratch and is counted in the CTA's histogram of
//                    key bins (kKeyHistBins), added to the group's at the
//                    end.
//   last CTA         of the group (atomic ticket; a pooled row needs
//                    none): SelectFromSlotKeys, which takes the bin of the
//                    k-th largest key from the histogram and radix-selects
//                    only inside that bin. Split selects instead (a row's
//                    items launched as one thread-block cluster): every
//                    item takes part, SplitSelect.
//
// kPooled (one work item per row: rows that do not split, as in a batch of
// many rows such as a causal prefill, or that outgrow the slot-score
// scratch; select_plan.cc decides): the CTA takes one
// of its SM's kTmaTokenCtasPerSm slices of the plan's score pool for its
// row (a bit of SelectBuffers::pool_bits, set and cleared atomically; only
// CTAs resident on the SM hold its slices, so a free one comes), keeps the
// row's histogram in shared memory and gives the slice back once the
// select has read it. The pool's size is fixed by the SM count, whatever
// the number of rows.
#ifndef HISA_KERNELS_CUDA_TMA_TOKEN_KERNEL_CUH_
#define HISA_KERNELS_CUDA_TMA_TOKEN_KERNEL_CUH_

#include <cuda.h>

#include "kernels/cuda/select_kernels.cuh"

namespace hisa::cuda {

// Three stages: three CTAs per SM fit (kTmaTokenCtasPerSm), nine tiles in
// flight per SM.
inline constexpr int kTmaStages = 3;
// Tiles of one work item: slot-score rows have at most kSlotSelectCap slots.
inline constexpr int kTmaMaxTiles = kSlotSelectCap / kTileSlots;
// Key page-table entries of a row that the prologue copies to shared memory
// (one key stage: 4096 pages of 512 tokens); the tiles of later pages look
// theirs up in global memory.
inline constexpr int kTmaPrefetchPages = kTileSlots * 128 / 4;
// A split select's histograms are read across the cluster in groups of
// kGroupBins bins (ClusterFindThresholdBin).
inline constexpr int kHistGroups = 64;
inline constexpr int kGroupBins = kKeyHistBins / kHistGroups;
static_assert(kHistGroups * 4 == kSelectThreads, "a quad per group");

struct TmaTokenLayout {
  static constexpr int kKeyBytes = kTileSlots * 128;  // one tile, swizzled
  static constexpr int kScaleBytes = kTileSlots * 4;
  static constexpr int kKeysOff = 0;  // 1024-byte aligned stages
  static constexpr int kQOff = kKeysOff + kTmaStages * kKeyBytes;
  static constexpr int kScalesOff = kQOff + 64 * 128;
  static constexpr int kWeightsOff = kScalesOff + kTmaStages * kScaleBytes;
  static constexpr int kTilesOff = kWeightsOff + 64 * 4;  // TileCopy each
  static constexpr int kTileValidOff =
      kTilesOff + kTmaMaxTiles * static_cast<int>(sizeof(TileCopy));
  static constexpr int kTilePosOff = kTileValidOff + kTmaMaxTiles * 4;
  // GroupDesc::tokens_choose: the blocks the item chose (at most
  // kTmaMaxTiles: m * B <= kSlotSelectCap and B >= 128 on this kernel).
  static constexpr int kChosenOff = kTilePosOff + kTmaMaxTiles * 4;
  static constexpr int kBarOff = kChosenOff + kTmaMaxTiles * 4;
  static constexpr int kRadixOff = kBarOff + 2 * kTmaStages * 8;
  static constexpr int kHistOff =
      (kRadixOff + static_cast<int>(sizeof(RadixShared)) + 15) / 16 * 16;
  // + 1024: the base is aligned up to 1024 bytes at run time.
  static constexpr int kBytes = kHistOff + kKeyHistBins * 4 + 1024;
  // The final select, in the key stages: one key per slot, then the
  // union's blocks.
  static constexpr int kSelectKeysOff = 0;
  static constexpr int kSelectUnionsOff = kSlotSelectCap * 4;
  static_assert(kQOff % 1024 == 0, "query operand must stay 1024-aligned");
  // Then the keys of the k-th largest key's histogram bin, up to the
  // weights (the query operand and the scale stages are free by then).
  static constexpr int kSelectListOff =
      kSelectUnionsOff + kSlotSelectCap / 16 * 8;
  static constexpr int kSelectListCap = (kWeightsOff - kSelectListOff) / 4;
  static_assert(kSelectListCap >= 2048,
                "final select must fit in the key stages");
  // A split select (SplitSelect): the item's keys (an item of a row split
  // at least in two has at most half of kSlotSelectCap slots), its counts
  // and every item's, its histogram's group sums, its keys of the bin, and
  // the bin's list (every item's keys of the bin).
  static constexpr int kSplitKeysCap = kSlotSelectCap / 2;
  static constexpr int kSplitCountsOff = kSplitKeysCap * 4;
  static constexpr int kSplitSumsOff =
      kSplitCountsOff + (1 + kMaxClusterItems) * 16;
  static constexpr int kSplitOwnListOff = kSplitSumsOff + kHistGroups * 4;
  static constexpr int kSplitListOff = kSplitOwnListOff + kSplitListCap * 8;
  static_assert(kSplitListOff + kSplitListCap * 8 <= kWeightsOff,
                "split select must fit in the key stages");
  static_assert(kBarOff % 8 == 0, "mbarriers are 8-byte aligned");
};

// kPooled's slice of the score pool, taken by one thread in two steps so
// that the atomic's round trip overlaps the CTA's prologue: TrySlice claims
// the first of its SM's kTmaTokenCtasPerSm slices if free, TakeSlice (after
// the prologue) returns it, or else any free one (SM ids past pool_sms
// share an SM's slices, so a CTA may then wait for one). GiveBackSlice
// frees it.
struct SliceTry {
  uint32_t* bits;  // the SM's word of taken-slice bits
  int first;       // its first slice
  uint32_t old;    // the word before the claim of `first`
};
__device__ __forceinline__ SliceTry TrySlice(const SelectBuffers& b) {
  uint32_t sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  sm %= static_cast<uint32_t>(b.pool_sms);
  SliceTry t;
  t.bits = b.pool_bits + sm;
  t.first = static_cast<int>(sm) * kTmaTokenCtasPerSm;
  t.old = atomicOr(t.bits, 1u);
  return t;
}
__device__ __forceinline__ int TakeSlice(const SliceTry& t) {
  if ((t.old & 1u) == 0) return t.first;
  // Next, the lowest slice that was free at the first try, then any.
  uint32_t seen = t.old;
  for (;;) {
    const uint32_t free_bits =
        ~seen & ((1u << kTmaTokenCtasPerSm) - 1u);
    const int j = free_bits != 0 ? __ffs(free_bits) - 1 : 0;
    seen = atomicOr(t.bits, 1u << j);
    if (((seen >> j) & 1u) == 0) return t.first + j;
    if (seen == (1u << kTmaTokenCtasPerSm) - 1u) __nanosleep(256);
  }
}
__device__ __forceinline__ void GiveBackSlice(const SelectBuffers& b,
                                              int slice) {
  atomicAnd(b.pool_bits + slice / kTmaTokenCtasPerSm,
            ~(1u << (slice % kTmaTokenCtasPerSm)));
}

// Slots of a slot-key row's scratch (a multiple of 4): every slot of the
// union's blocks (HISA; its size as the prologue read it, so the final
// select's loads do not wait for another read), or positions 0..t rounded
// up to 4 (a whole-prefix row; the kernel writes key 0 past t).
__device__ __forceinline__ int SlotKeyCount(const ItemContext<1>& ic) {
  if (ic.union_slots) return static_cast<int>(ic.num_slots);
  return static_cast<int>((ic.t[0] + 4) & ~int64_t{3});
}

// The final select of a slot-key row (one row per group): the row's keys
// (slot i's key, 0: no candidate) are loaded from `src` (the group's
// scratch or the CTA's pool slice) into `keys`, and the histogram of the
// nonzero keys from the group's global one into `hist`, unless `hist`
// already holds it (the pooled form's one CTA counted every slot). The
// union's blocks are `chosen` (shared memory) when the item chose them
// itself (GroupDesc::tokens_choose), else the group's union. Once
// `keys` is loaded, thread 0 gives back pool slice `slice` (>= 0). Output
// as WriteSlotSelection. `hist_local` is the kernel's compile-time kPooled
// (slice >= 0 says the same at run time only).
__device__ __forceinline__ void SelectFromSlotKeys(
    const SelectBuffers& b, const GroupDesc& grp, const ItemContext<1>& ic,
    const uint32_t* src, const int32_t* chosen, uint32_t* keys,
    int32_t* blocks, uint32_t* hist,
    bool hist_local, int slice, uint32_t* list, int list_cap,
    RadixShared& rs) {
  const int log2b = ic.log2b;
  // HISA rows: the union's blocks. Whole-prefix rows: slot i is position
  // i, i.e. block u of the "union" is block u.
  const int n = SlotKeyCount(ic);  // <= kSlotSelectCap
  const int num_blocks = (n + (1 << log2b) - 1) >> log2b;
  for (int u = threadIdx.x; u < num_blocks; u += kSelectThreads) {
    blocks[u] = chosen != nullptr  ? chosen[u]
                : ic.union_slots ? __ldcg(ic.unions + 2 * u)
                                 : u;
  }
#pragma unroll 8
  for (int i = threadIdx.x; i < n / 4; i += kSelectThreads) {
    reinterpret_cast<uint4*>(keys)[i] =
        __ldcg(reinterpret_cast<const uint4*>(src) + i);
  }
  if (!hist_local) {
    const uint4* gh = reinterpret_cast<const uint4*>(
        b.slot_hist + grp.slot_hist_index * kKeyHistBins);
    for (int i = threadIdx.x; i < kKeyHistBins / 4; i += kSelectThreads) {
      reinterpret_cast<uint4*>(hist)[i] = __ldcg(gh + i);
    }
  }
  __syncthreads();
  Trace(b.trace, kTraceTailIn);
  if (slice >= 0 && threadIdx.x == 0) GiveBackSlice(b, slice);
  const int k = grp.k;
  const KeyThreshold th = HistSelectKey(keys, n, k, hist, list, list_cap, rs);
  Trace(b.trace, kTraceTailChosen);
  WriteSlotSelection(b, b.rows[grp.rows[0]], k, keys, n, blocks, log2b, th,
                     rs);
}

// Thread 0 only: waits until *count >= expected (an acquire: what the
// counting CTAs wrote before their fence and increment is visible to this
// CTA after the barrier that follows).
__device__ __forceinline__ void WaitForCount(const int32_t* count,
                                             int expected) {
  for (;;) {
    int32_t seen;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n"
                 : "=r"(seen)
                 : "l"(count)
                 : "memory");
    if (seen >= expected) return;
    __nanosleep(32);
  }
}

// Halves of the cluster barrier, for every thread of every CTA of the
// thread-block cluster (which also synchronizes the CTA's own threads):
// ClusterArrive releases the thread's earlier shared and global memory
// accesses; ClusterWait returns once every thread of the cluster arrived,
// and acquires theirs. A thread alternates the two.
__device__ __forceinline__ void ClusterArrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void ClusterWait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// `p` (in this CTA's shared memory) in the shared memory of the cluster's
// CTA `rank` (distributed shared memory; a generic address).
template <class T>
__device__ __forceinline__ T* InClusterCta(T* p, int rank) {
  uint64_t mapped;
  asm("mapa.u64 %0, %1, %2;\n"
      : "=l"(mapped)
      : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
  return reinterpret_cast<T*>(mapped);
}

// Both sums over the CTA, returned to every thread; each warp's sums stay
// in rs.warp_total / rs.tie_total until rs is used again.
__device__ __forceinline__ int2 CtaSum2(int a, int c, RadixShared& rs) {
  const int warp = threadIdx.x >> 5;
  a = __reduce_add_sync(0xFFFFFFFFu, a);
  c = __reduce_add_sync(0xFFFFFFFFu, c);
  if ((threadIdx.x & 31) == 0) {
    rs.warp_total[warp] = a;
    rs.tie_total[warp] = c;
  }
  __syncthreads();
  int2 sum = make_int2(0, 0);
#pragma unroll
  for (int w = 0; w < kSelectThreads / 32; ++w) {
    sum.x += rs.warp_total[w];
    sum.y += rs.tie_total[w];
  }
  __syncthreads();
  return sum;
}

// Thread 4 g of each quad writes sums[g], the sum of bins [kGroupBins g,
// kGroupBins (g + 1)) of `hist` (kKeyHistBins bins, complete).
__device__ __forceinline__ void GroupSums(const uint32_t* hist,
                                          uint32_t* sums) {
  const uint4 lo = reinterpret_cast<const uint4*>(hist)[2 * threadIdx.x];
  const uint4 hi = reinterpret_cast<const uint4*>(hist)[2 * threadIdx.x + 1];
  uint32_t sum = lo.x + lo.y + lo.z + lo.w + hi.x + hi.y + hi.z + hi.w;
  sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
  sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
  if ((threadIdx.x & 3) == 0) sums[threadIdx.x >> 2] = sum;
}

// FindThresholdBinWide over the histograms of the cluster's first `splits`
// CTAs: each CTA's `hist` and its GroupSums `sums` (shared memory, read in
// every CTA). Warp 0 sums the group sums, finds the group of the need-th
// largest key, then sums only that group's bins: 384 bytes read from each
// CTA instead of its 8 KB histogram (distributed shared memory is far
// slower than local). Sets rs.digit, rs.need, rs.bucket, rs.total.
__device__ __forceinline__ void ClusterFindThresholdBin(const uint32_t* hist,
                                                        const uint32_t* sums,
                                                        int splits, int need,
                                                        RadixShared& rs) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const uint32_t want = static_cast<uint32_t>(need);
    // Keys in the lanes above this one's (an inclusive suffix sum, minus
    // its own `count`), and the total.
    auto above_of = [&](uint32_t count, uint32_t& all) {
      uint32_t suffix = count;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const uint32_t v = __shfl_down_sync(0xFFFFFFFFu, suffix, off);
        if (lane + off < 32) suffix += v;
      }
      all = __shfl_sync(0xFFFFFFFFu, suffix, 0);
      return suffix - count;
    };
    uint32_t g0 = 0, g1 = 0;  // groups 2 lane and 2 lane + 1
    for (int r = 0; r < splits; ++r) {
      const uint2 v =
          *reinterpret_cast<const uint2*>(InClusterCta(sums, r) + 2 * lane);
      g0 += v.x;
      g1 += v.y;
    }
    uint32_t all = 0;
    uint32_t above = above_of(g0 + g1, all);
    int group = -1;
    if (above < want && above + g1 >= want) {
      group = 2 * lane + 1;
    } else if (above + g1 < want && above + g1 + g0 >= want) {
      group = 2 * lane;
      above += g1;
    }
    const uint32_t found = __ballot_sync(0xFFFFFFFFu, group >= 0);
    if (lane == 0) rs.total = static_cast<int32_t>(all);
    if (found != 0) {  // else fewer than `need` keys: no bin
      const int src = __ffs(found) - 1;
      group = __shfl_sync(0xFFFFFFFFu, group, src);
      above = __shfl_sync(0xFFFFFFFFu, above, src);
      static_assert(kGroupBins == 32, "a lane per bin of the group");
      uint32_t count = 0;
      for (int r = 0; r < splits; ++r) {
        count += InClusterCta(hist, r)[kGroupBins * group + lane];
      }
      uint32_t unused;
      const uint32_t cum = above + above_of(count, unused);
      if (cum < want && cum + count >= want) {
        rs.digit = kGroupBins * group + lane;
        rs.need = static_cast<int32_t>(want - cum);
        rs.bucket = static_cast<int32_t>(count);
      }
    }
  }
  __syncthreads();
}

// The split select of a slot-key row (GroupDesc::split_select): the row's
// work items, which form one thread-block cluster in slot (= position)
// order (cluster rank = item.split), select its k together instead of
// leaving it to the last one. Each keeps its own keys (`n` <= kSplitKeysCap
// slots from slot_begin, read back from the group's scratch `out`) and its
// histogram (`hist`, counted by the tile loop) in shared memory, where the
// others read what they need (TmaTokenLayout's kSplit* areas of `smem`).
// In rounds, each a cluster barrier:
//   level 0   every item finds the bin of the k-th largest key from the
//             items' histograms (ClusterFindThresholdBin; every item
//             computes the same).
//   level 1-2 only while that bin holds more than kSplitListCap keys
//             (crowds of nearly equal keys): each item counts its keys of
//             the bin by the next 11 (then 10) bits into `hist`, and the
//             sums narrow the bin the same way.
//   final     each item publishes in counts[0] how many of its keys lie
//             above the bin and in it, and unless the bin is kept whole,
//             its keys of the bin with their slots (own list); every item
//             reads all counts into counts[1 + rank] and gathers the own
//             lists into the bin's list.
// Then every item narrows the list itself to the `need` kept keys (largest
// first, equal keys by lower slot), counts the kept entries before its
// slots and its own share, and writes its kept entries, in order, at that
// offset. A last barrier keeps each item's shared memory until the others
// have read it. One CTA alone spent ~10 us on the top 2048 of 8192 keys;
// here the work per item is over its own keys and the bin's list.
__device__ __forceinline__ void SplitSelect(
    const SelectBuffers& b, const GroupDesc& grp, const WorkItem& item,
    const ItemContext<1>& ic, const uint32_t* out, int n, uint32_t* hist,
    const int32_t* tile_pos, uint8_t* smem, RadixShared& rs) {
  using L = TmaTokenLayout;
  uint32_t* keys = reinterpret_cast<uint32_t*>(smem + L::kSelectKeysOff);
  int4* counts = reinterpret_cast<int4*>(smem + L::kSplitCountsOff);
  uint32_t* sums = reinterpret_cast<uint32_t*>(smem + L::kSplitSumsOff);
  uint2* own_list = reinterpret_cast<uint2*>(smem + L::kSplitOwnListOff);
  uint32_t* list = reinterpret_cast<uint32_t*>(smem + L::kSplitListOff);
  const int k = grp.k;
  const int splits = grp.num_splits;  // the cluster's CTAs
  const int64_t out_offset = b.rows[grp.rows[0]].out_offset;
  const int begin = static_cast<int>(ic.slot_begin);
  // This item's keys back from the scratch (its own writes, in L2), while
  // the level-0 round runs.
  for (int i = threadIdx.x; i < n / 4; i += kSelectThreads) {
    CpAsync16(keys + 4 * i, out + begin + 4 * i, true);
  }
  CpAsyncCommit();
  GroupSums(hist, sums);
  Trace(b.trace, kTraceTicket);
  ClusterArrive();  // this item's histogram and sums are ready
  ClusterWait();
  // Every item has passed its wait for the row's block items
  // (GroupDesc::tokens_choose): their count starts from zero again, for a
  // plan launched again without a new upload (the benchmark's timing loop).
  if (grp.tokens_choose && item.split == 0 && threadIdx.x == 0) {
    b.counters[2 * item.group] = 0;
  }
  ClusterFindThresholdBin(hist, sums, splits, k, rs);
  ClusterArrive();  // done reading the others' histograms
  CpAsyncWait<0>();
  __syncthreads();  // every thread's keys landed
  Trace(b.trace, kTraceTailIn);
  // One narrowing step of bin (th.prefix, th.shift), `need` of whose
  // `bucket` keys are kept, by the next bits of keys key_of(0..count-1):
  // counted into `hist`, then summed over the cluster when `whole_row`.
  auto narrow = [&](KeyThreshold& th, int& need, int& bucket, int count,
                    auto key_of, bool whole_row) {
    const int next = max(th.shift - kKeyHistBits, 0);
    const int bits = th.shift - next;
    const uint32_t mask = (1u << bits) - 1u;
    if (whole_row) ClusterWait();  // nobody reads `hist` any more
    for (int i = threadIdx.x; i < kKeyHistBins; i += kSelectThreads) {
      hist[i] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < count; i += kSelectThreads) {
      const uint32_t key = key_of(i);
      if (key != 0 && (key >> th.shift) == th.prefix) {
        atomicAdd(&hist[(key >> next) & mask], 1u);
      }
    }
    __syncthreads();
    if (whole_row) {
      GroupSums(hist, sums);
      ClusterArrive();
      ClusterWait();
      ClusterFindThresholdBin(hist, sums, splits, need, rs);
      ClusterArrive();
    } else {
      FindThresholdBinWide(hist, need, rs);
    }
    th.prefix = (th.prefix << bits) | static_cast<uint32_t>(rs.digit);
    th.shift = next;
    need = rs.need;
    bucket = rs.bucket;
  };

  // Kept: (key >> th.shift) > th.prefix, and of the nonzero keys with
  // (key >> th.shift) == th.prefix (the bin), `need` (later: this item's
  // share, th.ties). By default every nonzero key (at most k of them).
  KeyThreshold th;
  const bool keep_all = rs.total <= k;
  int need = 0;    // keys of the bin kept
  int bucket = 0;  // keys in the bin
  if (!keep_all) {
    th.prefix = static_cast<uint32_t>(rs.digit);
    th.shift = kKeyHistShift;
    need = rs.need;
    bucket = rs.bucket;
    auto own_key = [&](int i) { return keys[i]; };
    while (bucket != need && th.shift > 0 && bucket > kSplitListCap) {
      narrow(th, need, bucket, n, own_key, true);
    }
    th.ties = need;
  }
  // The bin's keys go to the list unless all of them are kept, or the bin
  // is one key shared by more than kSplitListCap slots (then the first
  // `need` in slot order are kept, counted by item below).
  const bool listed = !keep_all && bucket != need && bucket <= kSplitListCap;

  // Final round: this item's keys above the bin and in it, and its keys of
  // the bin with their slots.
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  int above = 0, in_bin = 0;
  for (int i = threadIdx.x; i < n; i += kSelectThreads) {
    const uint32_t key = keys[i];
    const uint32_t top = key >> th.shift;
    above += top > th.prefix;
    in_bin += key != 0 && top == th.prefix;
  }
  const int2 mine = CtaSum2(above, in_bin, rs);
  if (listed) {
    // Warp by warp (CtaSum2 leaves each warp's count of the bin's keys in
    // rs.tie_total; any order will do: the list is only narrowed and
    // counted). At most `bucket` <= kSplitListCap entries.
    int at = 0;
    for (int w = 0; w < warp; ++w) at += rs.tie_total[w];
    for (int i0 = 0; i0 < n; i0 += kSelectThreads) {
      const int i = i0 + threadIdx.x;
      const uint32_t key = i < n ? keys[i] : 0u;
      const bool eq = key != 0 && (key >> th.shift) == th.prefix;
      const uint32_t ballot = __ballot_sync(0xFFFFFFFFu, eq);
      if (eq) {
        own_list[at + __popc(ballot & ((1u << lane) - 1u))] =
            make_uint2(key, static_cast<uint32_t>(begin + i));
      }
      at += __popc(ballot);
    }
  }
  if (threadIdx.x == 0) counts[0] = make_int4(mine.x, mine.y, begin, n);
  ClusterWait();  // (the last histogram round's)
  ClusterArrive();  // every item's counts and own list
  ClusterWait();
  if (threadIdx.x < splits) {
    counts[1 + threadIdx.x] = *InClusterCta(counts, threadIdx.x);
  }
  __syncthreads();
  if (listed) {
    // Item r's keys of the bin, counts[1 + r].y of them, packed into
    // `list` in item order.
    int packed = 0;
    for (int r = 0; r < splits; ++r) {
      const int m = counts[1 + r].y;
      const uint2* src = InClusterCta(own_list, r);
      for (int e = threadIdx.x; e < m; e += kSelectThreads) {
        reinterpret_cast<uint2*>(list)[packed + e] = src[e];
      }
      packed += m;
    }
  }
  ClusterArrive();  // done reading the others' shared memory
  __syncthreads();
  Trace(b.trace, kTraceTailRound);
  // Entries the items before this one keep (`base`), and this item's share
  // of the bin's `need` (th.ties from here on).
  int base = 0;
  for (int i = 0; i < item.split; ++i) base += counts[1 + i].x;
  if (listed) {
    // Narrow the list's bin to the last bits, as the rounds would: the bin
    // then either is kept whole or holds equal keys (th.shift 0), of which
    // the `need` with the lowest slots are kept (a radix select on the
    // inverted slots: kept iff (~slot >> by_slot.shift) >= by_slot.prefix).
    const int list_len = bucket;
    auto list_key = [&](int i) { return list[2 * i]; };
    while (bucket != need && th.shift > 0) {
      narrow(th, need, bucket, list_len, list_key, false);
    }
    const bool all_of_bin = bucket == need;
    KeyThreshold by_slot;
    if (!all_of_bin) {
      by_slot = RadixSelectKey(
          list_len, need,
          [&](int i) {
            return list[2 * i] == th.prefix ? ~list[2 * i + 1] : 0u;
          },
          rs);
    }
    int before = 0, here = 0;
    const uint32_t lo = static_cast<uint32_t>(begin);
    const uint32_t hi = static_cast<uint32_t>(begin + n);
    for (int i = threadIdx.x; i < list_len; i += kSelectThreads) {
      const uint32_t top = list[2 * i] >> th.shift;
      const uint32_t slot = list[2 * i + 1];
      const bool in = top == th.prefix;
      const bool kept =
          top > th.prefix ||
          (in && (all_of_bin ||
                  (~slot >> by_slot.shift) >= by_slot.prefix));
      before += kept && slot < lo;
      here += kept && in && slot >= lo && slot < hi;
    }
    const int2 sum = CtaSum2(before, here, rs);
    base += sum.x;
    th.ties = sum.y;
  } else {
    // The bin's first `need` keys in slot order, by item order.
    int ties_before = 0;  // bin keys of the items before this one
    for (int i = 0; i < item.split; ++i) {
      base += min(max(th.ties - ties_before, 0), counts[1 + i].y);
      ties_before += counts[1 + i].y;
    }
    th.ties = min(max(th.ties - ties_before, 0), mine.y);
  }
  Trace(b.trace, kTraceTailChosen);

  int32_t* out_pos = b.out_pos + out_offset;
  float* out_scores =
      b.out_scores != nullptr ? b.out_scores + out_offset : nullptr;
  CompactByKey(
      n, [&](int i) { return keys[i]; }, th,
      [&](int dst, int i) {
        out_pos[base + dst] = tile_pos[i / kTileSlots] + (i % kTileSlots);
        if (out_scores != nullptr) out_scores[base + dst] = KeyToFloat(keys[i]);
      },
      rs);
  if (keep_all && item.split == 0) {
    // At most k nonzero keys, all kept: pad the rest.
    int total = 0;
    for (int i = 0; i < splits; ++i) total += counts[1 + i].x;
    for (int i = total + threadIdx.x; i < k; i += kSelectThreads) {
      out_pos[i] = -1;
      if (out_scores != nullptr) out_scores[i] = __int_as_float(0x7FC00000);
    }
  }
  Trace(b.trace, kTraceTailEnd);
  ClusterWait();  // the others are done reading this CTA's shared memory
}

// The block scorer of a token item's own block phase
// (GroupDesc::tokens_score_blocks): 64 heads, D = 128, one row, hi means
// only (select_plan.cc fuses the block scoring into the token launch only
// then).
using OwnBlocksScorer = Bf16BlockScorer<4, 8, 1, true>;

// The own block phase's shared memory, from the CTA's aligned base, used
// before anything of TmaTokenLayout is set up: the scorer's one stage of
// kStageBytesT (a tile of 128 block means), its bf16 query, the head
// weights, the tile's scores and map, and the stage's transaction barrier
// (invalidated when the phase ends).
template <int kStageBytesT>
struct BlockPhaseLayout {
  using Scorer = OwnBlocksScorer;
  static constexpr int kStageOff = 0;
  static constexpr int kPersistOff = kStageOff + kStageBytesT;
  static constexpr int kWeightsOff = kPersistOff + Scorer::kPersistBytes;
  static constexpr int kStagingOff = kWeightsOff + 128 * 4;
  static constexpr int kTileOff = kStagingOff + kTileSlots * 4;
  static constexpr int kBarOff =
      (kTileOff + static_cast<int>(sizeof(TileShared)) + 7) / 8 * 8;
  static_assert(Scorer::kStages == 1, "one stage");
  static_assert(kPersistOff % 16 == 0, "query rows are 16-byte aligned");
};

// A decode item's phase (a share of its row's blocks; clustered): the
// stage sized for hi and lo, of which this scorer fills hi alone; then,
// past every byte that TmaTokenLayout uses, the row's block scores, which
// every item of the cluster writes into every item's copy (distributed
// shared memory) for the choice after the token prologue.
struct OwnBlocksLayout : BlockPhaseLayout<OwnBlocksScorer::kStageBytes> {
  static constexpr int kScoresOff = kBarOff + 16;
  // A row's blocks: at most kOwnBlockTiles tiles per item (select_plan.cc).
  static constexpr int kScoresCap =
      kOwnBlockTiles * kTileSlots * kMaxClusterItems;
  // + 1024: the base is aligned up to 1024 bytes at run time.
  static constexpr int kBytes = kScoresOff + kScoresCap * 4 + 1024;
  static_assert(kScoresOff >= TmaTokenLayout::kBytes - 1024,
                "the token prologue must not overwrite the scores");
  static_assert(kBytes <= kTmaSpreadSmemBytes,
                "launched with the spread launch's shared memory");
};

// Scores blocks [own.slot_begin, own.slot_end) of the group's row, one
// tile of 128 block means at a time as the block kernel
// (TileKernel<Bf16BlockScorer>) does, with layout L's areas of `smem` (one
// stage, of which the hi means fill the first half). After each tile,
// every thread calls publish(ts, staging, it) between two CTA barriers;
// it stores the tile's scores (staging[s] is block ts.pos[0][s]'s, where
// ts.rows[0][s] & 1). Ends with a CTA barrier and the stage's barrier
// invalidated: L's shared memory is free again.
template <class L, class Publish>
__device__ __forceinline__ void ScoreBlocksOfRow(const SelectBuffers& b,
                                                 const WorkItem& own,
                                                 const GroupDesc& grp,
                                                 uint8_t* smem,
                                                 Publish publish) {
  const RowDesc& row = b.rows[grp.rows[0]];
  const ItemContext<1> ic = MakeItemContext<1, true>(b, own, grp);
  uint8_t* stage = smem + L::kStageOff;
  float* weights = reinterpret_cast<float*>(smem + L::kWeightsOff);
  float* staging = reinterpret_cast<float*>(smem + L::kStagingOff);
  TileShared& ts = *reinterpret_cast<TileShared*>(smem + L::kTileOff);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + L::kBarOff);
  if (threadIdx.x == 0) {
    MbarInit(bar, kSelectThreads);
    MbarFenceInit();
  }
  __syncthreads();  // the barrier is initialized
  typename L::Scorer scorer;
  scorer.full = bar;
  auto issue = [&](int64_t it) {  // tile it's block means, every thread
    const int64_t slot = ic.slot_begin + it * kTileSlots + (threadIdx.x >> 1);
    scorer.Issue(b, ic, stage, ts, 0,
                 ResolveSlot<1, true>(b, ic, slot, LoadUnionEntry(ic, slot)));
  };
  const int64_t num_tiles =
      (ic.slot_end - ic.slot_begin + kTileSlots - 1) / kTileSlots;
  issue(0);  // in flight while the query is converted
  for (int h = threadIdx.x; h < 128; h += kSelectThreads) {
    weights[h] = h < grp.q_heads ? b.w[row.w_offset + h] : 0.f;
  }
  scorer.Init(b, ic, smem + L::kPersistOff);
  __syncthreads();  // query and weights are ready
#pragma unroll 1
  for (int64_t it = 0; it < num_tiles; ++it) {
    MbarWait(bar, static_cast<uint32_t>(it) & 1u);
    __syncthreads();  // the tile and its map are visible
    scorer.Compute(stage, weights, staging, ic, ts, 0);
    __syncthreads();  // staging is visible
    publish(ts, staging, it);
    __syncthreads();  // stage, staging and map are free
    if (it + 1 < num_tiles) issue(it + 1);
  }
  if (threadIdx.x == 0) MbarInval(bar);
  __syncthreads();  // before any thread reuses the barrier's bytes
}

// GroupDesc::tokens_score_blocks on the decode form: blocks
// [split * per, (split + 1) * per) of the item's row (per = its c + 1
// blocks over the group's num_splits items), into OwnBlocksLayout's scores
// of every item of the cluster. Every thread calls it after a
// ClusterArrive (the others may then write to this CTA); it waits at the
// cluster barrier once, before its first write to another CTA.
__device__ __forceinline__ void ScoreOwnBlocks(const SelectBuffers& b,
                                               const WorkItem& item,
                                               const GroupDesc& grp,
                                               uint8_t* smem) {
  using L = OwnBlocksLayout;
  const RowDesc& row = b.rows[grp.rows[0]];
  const int64_t blocks =
      (row.position >> b.layers[grp.layer].geo.log2_block) + 1;
  const int64_t per = (blocks + grp.num_splits - 1) / grp.num_splits;
  WorkItem own = item;
  own.slot_begin = min(blocks, int64_t{item.split} * per);
  own.slot_end = min(blocks, own.slot_begin + per);
  if (own.slot_begin >= own.slot_end) {
    ClusterWait();
    return;
  }
  float* scores = reinterpret_cast<float*>(smem + L::kScoresOff);
  ScoreBlocksOfRow<L>(
      b, own, grp, smem,
      [&](const TileShared& ts, const float* staging, int64_t it) {
        if (it == 0) ClusterWait();  // every CTA of the cluster has started
        for (int i = threadIdx.x; i < grp.num_splits * kTileSlots;
             i += kSelectThreads) {
          const int s = i % kTileSlots;
          if (ts.rows[0][s] & 1u) {
            InClusterCta(scores, i / kTileSlots)[ts.pos[0][s]] = staging[s];
          }
        }
      });
}

// GroupDesc::tokens_score_blocks on the pooled form (one item per row, no
// cluster): every block of the row, into shared memory (kScoresOff), where
// the item chooses its blocks right after (ChooseBlocksForGroup; no round
// trip through global memory: causal 64K 15.0 against 15.4 ms, same call).
// Its stage holds the hi half alone, so that the phase fits the pooled
// kernel's shared memory.
// (Copying a tile's means as one bulk copy per summary page instead of one
// per block was measured slower: causal 64K 15.1-15.2 ms against 14.5.)
struct PooledBlocksLayout
    : BlockPhaseLayout<kTileSlots * OwnBlocksScorer::kStride> {
  // + 1024: the base is aligned up to 1024 bytes at run time.
  static constexpr int kBytes = kBarOff + 8 + 1024;
  // The row's block scores, for the choice right after: in the token
  // layout's histogram, which its prologue zeroes only after the choice.
  static constexpr int kScoresOff = TmaTokenLayout::kHistOff;
  static constexpr int kScoresCap = kPooledOwnBlockTiles * kTileSlots;
  static_assert(kScoresCap <= kKeyHistBins, "the scores fit the histogram");
  static_assert(kBytes - 1024 <= TmaTokenLayout::kChosenOff &&
                    kBytes - 1024 <= TmaTokenLayout::kRadixOff,
                "the choice's list and radix state lie past this layout");
  static_assert(kBytes <= TmaTokenLayout::kBytes,
                "the pooled kernel's own shared memory");
};

__device__ __forceinline__ void ScorePooledRowBlocks(const SelectBuffers& b,
                                                     const WorkItem& item,
                                                     const GroupDesc& grp,
                                                     uint8_t* smem) {
  const RowDesc& row = b.rows[grp.rows[0]];
  WorkItem own = item;
  own.slot_begin = 0;
  own.slot_end = (row.position >> b.layers[grp.layer].geo.log2_block) + 1;
  float* scores =
      reinterpret_cast<float*>(smem + PooledBlocksLayout::kScoresOff);
  ScoreBlocksOfRow<PooledBlocksLayout>(
      b, own, grp, smem,
      [&](const TileShared& ts, const float* staging, int64_t) {
        if (threadIdx.x < kTileSlots && (ts.rows[0][threadIdx.x] & 1u)) {
          scores[ts.pos[0][threadIdx.x]] = staging[threadIdx.x];
        }
      });
}

template <bool kPooled>
__global__ void __launch_bounds__(kSelectThreads, kTmaTokenCtasPerSm)
    TmaTokenKernel(SelectBuffers b, const WorkItem* items,
                   const __grid_constant__ CUtensorMap keys) {
  using L = TmaTokenLayout;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  // Aligned by an offset from smem_raw (TileKernel says why).
  uint8_t* smem = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  uint8_t* key_stages = smem + L::kKeysOff;
  float* scale_stages = reinterpret_cast<float*>(smem + L::kScalesOff);
  uint8_t* qs = smem + L::kQOff;
  float* weights = reinterpret_cast<float*>(smem + L::kWeightsOff);
  TileCopy* tiles = reinterpret_cast<TileCopy*>(smem + L::kTilesOff);
  int32_t* tile_valid = reinterpret_cast<int32_t*>(smem + L::kTileValidOff);
  int32_t* tile_pos = reinterpret_cast<int32_t*>(smem + L::kTilePosOff);
  uint32_t* hist = reinterpret_cast<uint32_t*>(smem + L::kHistOff);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBarOff);
  uint64_t* empty = full + kTmaStages;
  RadixShared& rs = *reinterpret_cast<RadixShared*>(smem + L::kRadixOff);
  __shared__ int slice;  // kPooled: this CTA's slice of the score pool
  // The group's descriptor, read once: every later use reads shared memory
  // instead of a global load, which after an acquiring barrier (cluster
  // barriers, the block count) would go to L2 again.
  __shared__ __align__(16) GroupDesc grp_shared;

  // Before the block stage completes (programmatic dependent launch): the
  // barriers, the query operand and the weights, from the uploaded plan.
  Trace(b.trace, kTraceStart);
  const WorkItem item = items[blockIdx.x];
  static_assert(sizeof(GroupDesc) % 4 == 0 &&
                    sizeof(GroupDesc) / 4 <= kSelectThreads,
                "one word per thread");
  if (threadIdx.x < sizeof(GroupDesc) / 4) {
    reinterpret_cast<int32_t*>(&grp_shared)[threadIdx.x] =
        reinterpret_cast<const int32_t*>(b.groups + item.group)[threadIdx.x];
  }
  if (threadIdx.x == 0) PrefetchTensorMap(&keys);
  __syncthreads();  // grp_shared
  const GroupDesc& grp = grp_shared;
  int num_chosen = -1;  // blocks the item chose (GroupDesc::tokens_choose)
  // GroupDesc::tokens_score_blocks (no block launch): the row's block
  // scores first. A pooled row scores all of them and chooses its blocks
  // at once; a decode item scores its share, and the cluster's barrier
  // below (after this prologue) makes every item's scores visible to every
  // item, which then chooses.
  const bool own_blocks = grp.tokens_score_blocks != 0;
  if (own_blocks) {
    if constexpr (kPooled) {
      ScorePooledRowBlocks(b, item, grp, smem);
      Trace(b.trace, kTraceWaited);
      // The choice at once, from the scores in shared memory.
      num_chosen = ChooseBlocksForGroup<1>(
          b, grp,
          reinterpret_cast<float*>(smem + PooledBlocksLayout::kScoresOff),
          PooledBlocksLayout::kScoresCap, rs,
          reinterpret_cast<int32_t*>(smem + L::kChosenOff),
          /*cache_filled=*/true);
      __syncthreads();  // `chosen` is complete; the scores' bytes are free
    } else {
      ClusterArrive();  // started: the others may write this CTA's scores
      ScoreOwnBlocks(b, item, grp, smem);
      ClusterArrive();  // this item's block scores are written
    }
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < kTmaStages; ++s) {
      MbarInit(full + s, 1);
      MbarInit(empty + s, kSelectThreads / 32);
    }
    MbarFenceInit();
  }
  // kPooled: the slice is claimed by the last warp, which has no tile to
  // map below.
  constexpr int kSliceThread = kSelectThreads - 32;
  static_assert(kSliceThread >= kTmaMaxTiles, "the slice warp maps no tile");
  SliceTry slice_try{};
  if (kPooled && threadIdx.x == kSliceThread) slice_try = TrySlice(b);
  StoreSwizzledQueries(b, grp, qs);
  for (int i = threadIdx.x; i < kKeyHistBins; i += kSelectThreads) hist[i] = 0;
  if (threadIdx.x < 64) {
    weights[threadIdx.x] = b.w[b.rows[grp.rows[0]].w_offset + threadIdx.x];
  }
  // The row's key page table (pages of positions 0..t, at most
  // kTmaPrefetchPages) into the last key stage, while the block stage runs:
  // mapping the tiles after the wait then reads no global memory.
  uint32_t* pages =
      reinterpret_cast<uint32_t*>(key_stages + (kTmaStages - 1) * L::kKeyBytes);
  int num_pages;
  {
    const LayerView& lv = b.layers[grp.layer];
    num_pages = static_cast<int>(
        min(b.rows[grp.rows[0]].position / lv.geo.tokens_per_page + 1,
            int64_t{kTmaPrefetchPages}));
    for (int i = threadIdx.x; i < num_pages; i += kSelectThreads) {
      pages[i] = __ldg(b.tables + lv.key_table + i);
    }
  }
  FenceProxyAsync();
  __syncthreads();  // the page table, for every thread's tiles

  // The row's blocks: chosen here once the group's block items are done
  // (GroupDesc::tokens_choose; an empty item of a padded cluster has no
  // tiles and skips it), or the union that the block stage wrote.
  // A pooled row that scored its own blocks has chosen them already.
  int32_t* chosen = reinterpret_cast<int32_t*>(smem + L::kChosenOff);
  const bool choose = grp.tokens_choose != 0;
  const bool chosen_early = kPooled && own_blocks;
  const bool cluster_scores = !kPooled && own_blocks;
  if (cluster_scores) {
    ClusterWait();  // every item's block scores (an empty item's too)
    Trace(b.trace, kTraceWaited);
  }
  if (chosen_early) {
    // num_chosen is set
  } else if (choose && item.slot_begin < item.slot_end) {
    if (!own_blocks) {
      if (threadIdx.x == 0) {
        WaitForCount(b.counters + 2 * item.group, grp.block_items);
      }
      __syncthreads();
      Trace(b.trace, kTraceWaited);
    }
    // Decode items' own blocks: the scores are in this CTA's
    // OwnBlocksLayout copy. Else the key stages before the last (which
    // holds the page table) are free until the first copy: they cache the
    // scores.
    num_chosen =
        cluster_scores
            ? ChooseBlocksForGroup<1>(
                  b, grp,
                  reinterpret_cast<float*>(smem + OwnBlocksLayout::kScoresOff),
                  OwnBlocksLayout::kScoresCap, rs, chosen,
                  /*cache_filled=*/true)
            : ChooseBlocksForGroup<1>(b, grp,
                                      reinterpret_cast<float*>(key_stages),
                                      (kTmaStages - 1) * L::kKeyBytes / 4, rs,
                                      chosen);
    __syncthreads();    // `chosen` is complete
    FenceProxyAsync();  // the cache's writes before the stages' copies
  } else if (choose) {
    num_chosen = 0;
  } else {
    GridDependencyWait();  // the unions are written
    Trace(b.trace, kTraceWaited);
  }
  const ItemContext<1> ic =
      MakeItemContext<1, false>(b, item, grp, num_chosen);
  const int64_t span = ic.slot_end - ic.slot_begin;
  const int num_tiles =
      span > 0 ? static_cast<int>((span + kTileSlots - 1) / kTileSlots) : 0;
  // While warps 0 and 1 map the tiles:
  if (threadIdx.x == kSliceThread) slice = kPooled ? TakeSlice(slice_try) : -1;
  // Tile j: slots slot_begin + 128 j ... (slot_begin is a multiple of 128
  // and B of 128, so the tile is one aligned run inside one block).
  // Its candidates are the first tile_valid[j] slots: the tile lies in one
  // block of the union, and positions past t end the run.
  for (int j = threadIdx.x; j < num_tiles; j += kSelectThreads) {
    const int64_t slot = ic.slot_begin + int64_t{j} * kTileSlots;
    const UnionEntry e =
        !choose ? LoadUnionEntry(ic, slot)
        : slot < ic.slot_end ? UnionEntry{chosen[slot >> ic.log2b], 1}
                             : UnionEntry{0, 0};
    const SlotRef r = ResolveSlot<1, false>(b, ic, slot, e,
                                            /*need_page=*/true, pages,
                                            num_pages);
    tiles[j] = TileCopyOf(*ic.layer, r);
    if constexpr (!kPooled) tile_pos[j] = r.pos;  // for SplitSelect
    tile_valid[j] =
        r.rows == 0 ? 0
                    : static_cast<int32_t>(min(int64_t{kTileSlots},
                                               ic.t[0] - r.pos + 1));
  }
  __syncthreads();  // barriers, tile map, queries, weights, slice are ready

  auto issue = [&](int j, int s) {  // thread 0 only; s: tile j's stage
    IssueTileCopy(&keys, b.arena, tiles[j], key_stages + s * L::kKeyBytes,
                  scale_stages + s * kTileSlots, full + s);
  };
  if (threadIdx.x == 0) {
    for (int j = 0; j < num_tiles && j < kTmaStages; ++j) issue(j, j);
  }
  Trace(b.trace, kTraceReady);

  const int lane = threadIdx.x & 31;
  const int warp = (threadIdx.x >> 5) & 3;
  // This warpgroup's index, broadcast from lane 0: the compiler then knows
  // that it is warp-uniform and builds the MMA descriptors below in uniform
  // registers, instead of vector registers moved over one by one.
  const int wg = __shfl_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x >> 7), 0);
  const int slot0 = wg * 64;  // this warpgroup's slots
  const int tid4 = lane & 3;
  // The quad's sums are scattered (WgmmaHeadSumScatter): a lane's slot is
  // its quad's first row r0 (even tid4) or r0 + 8 (odd tid4); lanes 0 and 1
  // publish, lanes 2 and 3 hold copies.
  const int my_slot = slot0 + warp * 16 + (lane >> 2) + 8 * (tid4 & 1);
  const bool publishes = tid4 < 2;
  float2 wr[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    wr[j] = *reinterpret_cast<const float2*>(weights + 8 * j + 2 * tid4);
  }
  // Descriptor low words (WgmmaDescSw128Lo): the query, and this
  // warpgroup's slots [64 wg, 64 wg + 64) of stage 0 (64 rows x 128 B = 512
  // descriptor units per warpgroup).
  const uint32_t db = WgmmaDescSw128Lo(qs);
  const uint32_t da0 = WgmmaDescSw128Lo(key_stages) + (slot0 * 128 >> 4);
  // Issues the 4 k-steps of a stage's slots of this warpgroup x 64 heads
  // into d as one commit group; da: their descriptor's low word.
  auto mma = [&](float (&d)[32], uint32_t da) {
    WgmmaFenceOperands(d);
    WgmmaFence();
    WgmmaM64N64K128(d, da, db);
    WgmmaCommit();
  };
  // Keys by slot index (0: no candidate), counted in `hist`: the group's
  // scratch, or the CTA's pool slice (the item is the whole row). Slot-key
  // rows have at most kSlotSelectCap slots: 32-bit slot indices.
  uint32_t* out =
      kPooled ? b.slot_pool + int64_t{slice} * kSlotSelectCap
              : reinterpret_cast<uint32_t*>(b.slot_scores +
                                            grp.slot_score_offset);
  // Keys are written up to the item's end; a whole-prefix row's last item
  // also writes the zeros that round its scratch up to 4 slots.
  const int slot_end = ic.union_slots
                           ? static_cast<int>(ic.slot_end)
                           : static_cast<int>(ic.slot_end + 3) & ~3;
  // Tile it's: this thread's slot, its key's address, and (in stage 0) its
  // scale's: stepped per tile, not rebuilt from the thread's index bits.
  int it = 0;
  int slot = static_cast<int>(ic.slot_begin) + my_slot;
  uint32_t* my_out = out + slot;
  const float* my_scale = scale_stages + my_slot;
  uint32_t phase = 0;  // parity of the current round of kTmaStages tiles
  // Tile it, in stage kStage (a compile-time constant: the loop below runs
  // the stages in turn, so no stage index or parity is kept per tile).
  // No __syncwarp before the wgmma fence and wait: the barrier wait's loop
  // and thread 0's refill branch end in a reconvergence, and ptxas puts a
  // warp sync before .aligned instructions itself. The one before the
  // arrival stays: it orders the warp's reads of the stage before it.
  // (This loop, with the branch-free key and predicated publishing below
  // and the four k-steps in one statement, against a loop with a stage
  // index, two more warp syncs and branches around the key and its
  // publishing, H200, same call, best of each run: causal 64K 12.8 / 13.0
  // against 14.7 / 14.7 ms, prefill1024 0.260 / 0.261 against 0.293 /
  // 0.293 ms. The loop had ~200 instructions per warp and tile.)
  auto tile = [&](auto stage) {
    constexpr int kStage = decltype(stage)::value;
    constexpr int kPrevStage = (kStage + kTmaStages - 1) % kTmaStages;
    MbarWait(full + kStage, phase);
    // Not zeroed: the first wgmma runs with scale-d = 0.
    float d[32];
    // A stage is kKeyBytes = 1024 descriptor units of 16 bytes further.
    mma(d, da0 + kStage * (L::kKeyBytes >> 4));
    // While this tile's MMA runs: refill the previous tile's stage once
    // every warp released it (they did so after their own MMA of that tile,
    // so this rarely waits), a whole MMA earlier than after the wait below.
    // Tile it - 1 ran in the previous round when this is stage 0.
    if (threadIdx.x == 0 && it >= 1 && it - 1 + kTmaStages < num_tiles) {
      MbarWait(empty + kPrevStage, kStage == 0 ? phase ^ 1u : phase);
      issue(it - 1 + kTmaStages, kPrevStage);
    }
    WgmmaWaitAll();
    WgmmaFenceOperands(d);
    const float scale = fabsf(my_scale[kStage * kTileSlots]);
    const int valid = tile_valid[it];
    __syncwarp();
    if (lane == 0) MbarArrive(empty + kStage);  // this warp is done with it

    const float sum = WgmmaHeadSumScatter(d, wr, tid4);
    const bool candidate = my_slot < valid;
    const uint32_t key = candidate ? CandidateKey(sum * scale) : 0u;
    SharedIncrementIf(publishes && candidate, &hist[key >> kKeyHistShift]);
    StoreGlobalIf(publishes && slot < slot_end, my_out, key);
    ++it;
    slot += kTileSlots;
    my_out += kTileSlots;
  };
  static_assert(kTmaStages == 3, "the loop below runs three stages a round");
#pragma unroll 1
  while (it < num_tiles) {
    tile(std::integral_constant<int, 0>{});
    if (it == num_tiles) break;
    tile(std::integral_constant<int, 1>{});
    if (it == num_tiles) break;
    tile(std::integral_constant<int, 2>{});
    phase ^= 1u;
  }

  Trace(b.trace, kTraceLoopEnd);
  if constexpr (!kPooled) {
    __syncthreads();  // every tile scored: the stage area is free
    if (grp.split_select) {
      SplitSelect(b, grp, item, ic, out,
                  max(slot_end - static_cast<int>(ic.slot_begin), 0), hist,
                  tile_pos, smem, rs);
      // An item that chose its blocks did not wait for the block launch
      // (long complete by now): the launch completes after it.
      if (choose) GridDependencyWait();
      return;
    }
    // This CTA's counts join the group's histogram (LastOfGroup's fence
    // orders them before the ticket).
    uint32_t* group_hist =
        b.slot_hist + grp.slot_hist_index * kKeyHistBins;
    for (int i = threadIdx.x; i < kKeyHistBins; i += kSelectThreads) {
      const uint32_t c = hist[i];
      if (c != 0) atomicAdd(group_hist + i, c);
    }
  }
  // A pooled row is its group's only work item and counted its keys in
  // shared memory: no ticket (its own keys are visible to it after the
  // barrier).
  bool last = true;
  if constexpr (kPooled) {
    __syncthreads();
    Trace(b.trace, kTraceTicket);
  } else {
    last = LastOfGroup(b, item, 1, grp.num_splits, rs);
  }
  if (last) {
    // Every tile was waited for: the stage area is free for the select.
    SelectFromSlotKeys(
        b, grp, ic, out, grp.tokens_choose ? chosen : nullptr,
        reinterpret_cast<uint32_t*>(smem + L::kSelectKeysOff),
        reinterpret_cast<int32_t*>(smem + L::kSelectUnionsOff), hist, kPooled,
        slice, reinterpret_cast<uint32_t*>(smem + L::kSelectListOff),
        L::kSelectListCap, rs);
    if (threadIdx.x == 0) b.counters[2 * item.group + 1] = 0;
    Trace(b.trace, kTraceTailEnd);
  }
  // An item that chose its blocks did not wait for an earlier launch: the
  // launch completes after it.
  if (grp.tokens_choose) GridDependencyWait();
}

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_TMA_TOKEN_KERNEL_CUH_
