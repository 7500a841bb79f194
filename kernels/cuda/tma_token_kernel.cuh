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
//   before the loop  the barriers, the query operand and the weights
//                    (while the block stage may still run: programmatic
//                    dependent launch); then, after GridDependencyWait,
//                    one thread per tile resolves the tile's key row in
//                    the tensor map and its scales' address (union entry,
//                    page table) into shared memory; thread 0 fills the
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
//                    only inside that bin.
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
  static constexpr int kBarOff = kTilePosOff + kTmaMaxTiles * 4;
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
// already holds it (the pooled form's one CTA counted every slot). Once
// `keys` is loaded, thread 0 gives back pool slice `slice` (>= 0). Output
// as WriteSlotSelection. `hist_local` is the kernel's compile-time kPooled
// (slice >= 0 says the same at run time only).
__device__ __forceinline__ void SelectFromSlotKeys(
    const SelectBuffers& b, const GroupDesc& grp, const ItemContext<1>& ic,
    const uint32_t* src, uint32_t* keys, int32_t* blocks, uint32_t* hist,
    bool hist_local, int slice, uint32_t* list, int list_cap,
    RadixShared& rs) {
  const int log2b = ic.log2b;
  // HISA rows: the union's blocks. Whole-prefix rows: slot i is position
  // i, i.e. block u of the "union" is block u.
  const int n = SlotKeyCount(ic);  // <= kSlotSelectCap
  const int num_blocks = (n + (1 << log2b) - 1) >> log2b;
  for (int u = threadIdx.x; u < num_blocks; u += kSelectThreads) {
    blocks[u] = ic.union_slots ? __ldcg(ic.unions + 2 * u) : u;
  }
#pragma unroll 8
  for (int i = threadIdx.x; i < n / 4; i += kSelectThreads) {
    reinterpret_cast<uint4*>(keys)[i] =
        __ldcg(reinterpret_cast<const uint4*>(src) + i);
  }
  if (!hist_local) {
    const uint4* gh = reinterpret_cast<const uint4*>(
        b.slot_hist + int64_t{grp.slot_hist_index} * kSlotTailWords);
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

// Announces that this CTA is done with a round of its group (its global
// writes before it are visible to the group's other CTAs after their wait)
// and waits until all `expected` CTAs are. Only CTAs that already run wait
// for each other (SelectBuffers::item_ticket), and a launch of split selects
// fits in one wave, so every CTA waited for reaches its arrival.
__device__ __forceinline__ void ArriveAndWait(int32_t* arrived, int expected) {
  // The barrier orders the CTA's writes before thread 0's fence, which
  // makes them visible before its arrival (the pattern of cooperative
  // groups' grid sync).
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(arrived, 1);
    for (;;) {
      int32_t seen;
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n"
                   : "=r"(seen)
                   : "l"(arrived)
                   : "memory");
      if (seen >= expected) break;
      __nanosleep(32);
    }
  }
  __syncthreads();
}

// Both sums over the CTA, returned to every thread.
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

// The split select of a slot-key row (GroupDesc::split_select): the row's
// work items select its k together instead of leaving it to the last one.
// Each adds its histogram (`hist`, counted by the tile loop) to the group's
// and waits for every item (ArriveAndWait); then each loads the row's keys
// (the group's scratch `out`, every item's slots) and the summed histogram,
// finds the same threshold (HistSelectKey), counts the entries kept before
// its own slots (equal keys go to the lower slot, as everywhere), and
// writes its own kept entries, in order, from there: the threshold search
// runs in every item at once, and the compaction and writes are split
// between them. One CTA alone spent ~10 us on the top 2048 of 8192 keys.
// `keys` holds kSlotSelectCap keys, `list` list_cap.
__device__ __forceinline__ void SplitSelect(
    const SelectBuffers& b, const GroupDesc& grp, const ItemContext<1>& ic,
    const uint32_t* out, int n, uint32_t* hist, uint32_t* keys,
    const int32_t* tile_pos, uint32_t* list, int list_cap, RadixShared& rs) {
  // Read before the wait (a load after a global write is not hoisted).
  const int k = grp.k;
  const int splits = grp.num_splits;
  const int64_t out_offset = b.rows[grp.rows[0]].out_offset;
  SlotTail& tail = *reinterpret_cast<SlotTail*>(
      b.slot_hist + int64_t{grp.slot_hist_index} * kSlotTailWords);
  for (int i = threadIdx.x; i < kKeyHistBins; i += kSelectThreads) {
    const uint32_t c = hist[i];
    if (c != 0) atomicAdd(&tail.hist[i], c);
  }
  Trace(b.trace, kTraceTicket);
  ArriveAndWait(&tail.arrived, splits);
  const int row_slots = SlotKeyCount(ic);  // <= kSlotSelectCap
#pragma unroll 8
  for (int i = threadIdx.x; i < row_slots / 4; i += kSelectThreads) {
    reinterpret_cast<uint4*>(keys)[i] =
        __ldcg(reinterpret_cast<const uint4*>(out) + i);
  }
  for (int i = threadIdx.x; i < kKeyHistBins / 4; i += kSelectThreads) {
    reinterpret_cast<uint4*>(hist)[i] =
        __ldcg(reinterpret_cast<const uint4*>(tail.hist) + i);
  }
  __syncthreads();
  Trace(b.trace, kTraceTailIn);
  const KeyThreshold th =
      HistSelectKey(keys, row_slots, k, hist, list, list_cap, rs);
  // Kept before this item's slots: above the threshold bin, and the first
  // th.ties of the bin in slot order. Also the row's nonzero keys (fewer
  // than k: all kept, and padding follows them). Both counts <= 8192 share
  // one word.
  const int begin = static_cast<int>(ic.slot_begin);
  int above = 0, bin_and_nonzero = 0;
  for (int i = threadIdx.x; i < row_slots; i += kSelectThreads) {
    const uint32_t key = keys[i];
    const uint32_t top = key >> th.shift;
    if (i < begin) {
      above += top > th.prefix;
      bin_and_nonzero += (key != 0 && top == th.prefix) << 16;
    }
    bin_and_nonzero += key != 0;
  }
  const int2 sums = CtaSum2(above, bin_and_nonzero, rs);
  const int in_bin_before = sums.y >> 16;
  const int nonzero = sums.y & 0xFFFF;
  KeyThreshold mine = th;
  mine.ties = max(th.ties - in_bin_before, 0);
  const int base = sums.x + min(th.ties, in_bin_before);
  Trace(b.trace, kTraceTailChosen);

  int32_t* out_pos = b.out_pos + out_offset;
  float* out_scores =
      b.out_scores != nullptr ? b.out_scores + out_offset : nullptr;
  const uint32_t* my_keys = keys + begin;
  CompactByKey(
      n, [&](int i) { return my_keys[i]; }, mine,
      [&](int dst, int i) {
        out_pos[base + dst] = tile_pos[i / kTileSlots] + (i % kTileSlots);
        if (out_scores != nullptr) {
          out_scores[base + dst] = KeyToFloat(my_keys[i]);
        }
      },
      rs);
  if (begin == 0) {
    // At most k nonzero keys, all kept: the first item pads the rest.
    for (int i = nonzero + threadIdx.x; i < k; i += kSelectThreads) {
      out_pos[i] = -1;
      if (out_scores != nullptr) out_scores[i] = __int_as_float(0x7FC00000);
    }
  }
  Trace(b.trace, kTraceTailEnd);
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

  // Before the block stage completes (programmatic dependent launch): the
  // barriers, the query operand and the weights, from the uploaded plan.
  Trace(b.trace, kTraceStart);
  __shared__ int item_index;
  if (b.item_ticket != nullptr) {  // items in start order
    if (threadIdx.x == 0) {
      const int ticket = atomicAdd(b.item_ticket, 1);
      // Every ticket is taken: reset for the next launch.
      if (ticket == static_cast<int>(gridDim.x) - 1) *b.item_ticket = 0;
      item_index = ticket;
    }
    __syncthreads();
  }
  const WorkItem item =
      items[b.item_ticket != nullptr ? item_index : blockIdx.x];
  const GroupDesc& grp = b.groups[item.group];
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
  FenceProxyAsync();

  GridDependencyWait();  // the unions are written
  Trace(b.trace, kTraceWaited);
  const ItemContext<1> ic = MakeItemContext<1, false>(b, item, grp);
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
    const SlotRef r =
        ResolveSlot<1, false>(b, ic, slot, LoadUnionEntry(ic, slot));
    tiles[j] = TileCopyOf(*ic.layer, r);
    tile_pos[j] = r.pos;
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
  const int slot0 = (threadIdx.x >> 7) * 64;  // this warpgroup's slots
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
  // Operand descriptors from CTA-uniform values only (no warpgroup index),
  // so that they can live in uniform registers: the warpgroup's 64 slots
  // are selected by a warp-uniform branch around the MMA (see `mma`).
  const uint64_t db = WgmmaDescSw128(qs);
  const uint64_t da0 = WgmmaDescSw128(key_stages);
  // Issues the 4 k-steps of a stage's slots [64 wg, 64 wg + 64) x 64 heads
  // into d as one commit group; da: the stage's descriptor.
  auto mma = [&](float (&d)[32], uint64_t da) {
    WgmmaFenceOperands(d);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      WgmmaM64N64K32(d, da + 2 * kk, db + 2 * kk, kk);
    }
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
  int slot = static_cast<int>(ic.slot_begin) + my_slot;  // of tile it
  // Stage and phase parity of tile it and of tile it - 1.
  int s = 0, prev_s = 0;
  uint32_t phase = 0, prev_phase = 0;
#pragma unroll 1
  for (int it = 0; it < num_tiles; ++it, slot += kTileSlots) {
    MbarWait(full + s, phase);
    __syncwarp();  // converged for the .aligned wgmma instructions
    // Not zeroed: the first wgmma runs with scale-d = 0.
    float d[32];
    // A stage is kKeyBytes = 1024 descriptor units of 16 bytes further,
    // warpgroup 1's slots 64 rows x 128 B = 512 units.
    const uint64_t da = da0 + static_cast<uint64_t>(s) * (L::kKeyBytes >> 4);
    if (slot0 == 0) {
      mma(d, da);
    } else {
      mma(d, da + (64 * 128 >> 4));
    }
    // While this tile's MMA runs: refill the previous tile's stage once
    // every warp released it (they did so after their own MMA of that tile,
    // so this rarely waits), a whole MMA earlier than after the wait below.
    if (threadIdx.x == 0 && it >= 1 && it - 1 + kTmaStages < num_tiles) {
      MbarWait(empty + prev_s, prev_phase);
      issue(it - 1 + kTmaStages, prev_s);
    }
    __syncwarp();  // converged for wgmma.wait_group
    WgmmaWaitAll();
    WgmmaFenceOperands(d);
    const float scale = fabsf(scale_stages[s * kTileSlots + my_slot]);
    const int valid = tile_valid[it];
    __syncwarp();
    if (lane == 0) MbarArrive(empty + s);  // this warp is done with stage s

    const float sum = WgmmaHeadSumScatter(d, wr, tid4);
    const uint32_t key =
        my_slot < valid ? max(OrderedKey(sum * scale), 1u) : 0u;
    if (publishes) {
      if (key != 0) atomicAdd(&hist[key >> kKeyHistShift], 1u);
      if (slot < slot_end) out[slot] = key;
    }
    prev_s = s;
    prev_phase = phase;
    if (++s == kTmaStages) {
      s = 0;
      phase ^= 1u;
    }
  }

  Trace(b.trace, kTraceLoopEnd);
  if constexpr (!kPooled) {
    __syncthreads();  // every tile scored: the stage area is free
    if (grp.split_select) {
      SplitSelect(b, grp, ic, out,
                  max(slot_end - static_cast<int>(ic.slot_begin), 0), hist,
                  reinterpret_cast<uint32_t*>(smem + L::kSelectKeysOff),
                  tile_pos,
                  reinterpret_cast<uint32_t*>(smem + L::kSelectListOff),
                  L::kSelectListCap, rs);
      return;
    }
    // This CTA's counts join the group's histogram (LastOfGroup's fence
    // orders them before the ticket).
    uint32_t* group_hist =
        b.slot_hist + int64_t{grp.slot_hist_index} * kSlotTailWords;
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
        b, grp, ic, out, reinterpret_cast<uint32_t*>(smem + L::kSelectKeysOff),
        reinterpret_cast<int32_t*>(smem + L::kSelectUnionsOff), hist, kPooled,
        slice, reinterpret_cast<uint32_t*>(smem + L::kSelectListOff),
        L::kSelectListCap, rs);
    if (threadIdx.x == 0) b.counters[2 * item.group + 1] = 0;
    Trace(b.trace, kTraceTailEnd);
  }
}

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_TMA_TOKEN_KERNEL_CUH_
