// Plain descriptors shared by the host planner (select_plan.h) and the CUDA
// kernels (select_kernels.cuh, append_kernels.cu): how a layer's keys and
// block summaries sit in device pages, and how one Select batch is described
// to the kernels. No CUDA types; compiles with g++ and nvcc alike.
//
//   hisa::cuda::PageGeometry g = hisa::cuda::MakeGeometry(config);
//   int64_t key_pages = g.KeyPagesFor(length);   // pages holding `length` keys
//
// Device memory model. Every cache byte lives in fixed-size pages
// (kPageBytes) carved from the one reservation the backend makes at start.
//   key page:     keys [P][row_bytes] then, for FP8_E4M3, scales [P] fp32,
//                 P = tokens_per_page. Token s lives in page s / P, slot s % P.
//                 FP8 bytes are stored with the sign bit flipped when the
//                 token's scale is negative, so kernels use |scale| and
//                 ReLU(|s| x) = |s| ReLU(x) holds; the scale keeps its sign
//                 so the original bytes can be restored (Matches).
//   summary page: for BPP = blocks_per_page blocks: mean_hi [BPP][D] bf16,
//                 mean_lo [BPP][D] bf16 (mean - mean_hi, so hi + lo carries
//                 ~16 significant bits for the tensor-core block scorer),
//                 sums [BPP][D] fp32 (kMean: running sum; kMax: running
//                 element-wise max), counts [BPP] int32.
#ifndef HISA_KERNELS_CUDA_SELECT_LAYOUT_H_
#define HISA_KERNELS_CUDA_SELECT_LAYOUT_H_

#include <cstdint>

#if defined(__CUDACC__)
#define HISA_HD __host__ __device__ __forceinline__
#else
#define HISA_HD inline
#endif

namespace hisa::cuda {

// 66 KiB: an FP8 D = 128 key page then holds exactly 512 tokens (132 B
// each), so every aligned run of 128 tokens (a tile; a block of B = 128)
// lies in one page and the token kernel copies it with one bulk tensor copy
// (tma_token_kernel.cuh). A multiple of 1 KiB.
inline constexpr int64_t kPageBytes = int64_t{66} << 10;
// Candidate slots scored per tile by the selection kernels.
inline constexpr int kTileSlots = 128;
// Threads of every selection kernel (8 warps).
inline constexpr int kSelectThreads = 256;
// Per-row candidate buffer of the token kernel: holds k (<= 2048) kept
// entries plus room for many tiles before the next compaction.
inline constexpr int kCandidateCap = 4096;
// Bound on a split row's partial entries (splits * k <= this), which
// bounds the partial-list scratch and the merge work.
inline constexpr int kFinalizeCap = 8192;
// Resident CTAs per SM of the token kernels (their __launch_bounds__ and
// shared memory; the planner sizes work-item splits by them): the bulk-copy
// (TMA) kernel (both forms; also the pooled form's slices per SM), the
// wgmma kernel, and the others.
inline constexpr int kTmaTokenCtasPerSm = 3;
// A clustered launch of the bulk-copy kernel that the planner spreads
// (LaunchSpec::smem_bytes) asks for kTmaSpreadSmemBytes of shared memory per
// CTA instead of its own, so that at most kTmaSpreadCtasPerSm share an SM.
inline constexpr int kTmaSpreadCtasPerSm = 2;
inline constexpr int kTmaSpreadSmemBytes = 110 * 1024;
// Most tiles of 128 blocks that a token item scores itself
// (GroupDesc::tokens_score_blocks; one after another, one stage).
inline constexpr int kOwnBlockTiles = 2;
// The same for a pooled row (one work item, every block of its row).
inline constexpr int kPooledOwnBlockTiles = 8;
inline constexpr int kWgmmaTokenCtasPerSm = 2;
// Rows that share one work item (neighbouring prefill rows).
inline constexpr int kMaxGroupRows = 2;
// Most candidate slots per row of a slot-score group (GroupDesc below): the
// final selection holds one score key per slot in shared memory.
inline constexpr int kSlotSelectCap = 8192;
// Histogram of a slot-key row's candidate keys (select_primitives.cuh
// OrderedKey, 0 = no candidate) by their top kKeyHistBits bits: the token
// work items that score the row count its keys, so that its final select
// starts from the bin holding the k-th largest key.
inline constexpr int kKeyHistBits = 11;
inline constexpr int kKeyHistBins = 1 << kKeyHistBits;
inline constexpr int kKeyHistShift = 32 - kKeyHistBits;

enum : int32_t { kModeDense = 1, kModeHisa = 2 };
enum : int32_t { kFormatFp8 = 1, kFormatBf16 = 2, kFormatFp32 = 3 };
enum : int32_t { kPoolMean = 1, kPoolMax = 2 };

// floor(n / d) == __umul64hi(n, magic) for every n < 2^32 when
// magic = UINT64_MAX / d + 1 and 2 <= d < 2^32.
HISA_HD uint64_t DivMagic(uint64_t d) { return ~uint64_t{0} / d + 1; }

// Page geometry of one request configuration.
struct PageGeometry {
  int32_t head_dim = 0;
  int32_t format = 0;          // kFormat*
  int32_t row_bytes = 0;       // head_dim * bytes per value
  int32_t tokens_per_page = 0; // P
  int32_t block_size = 0;      // B
  int32_t log2_block = 0;
  int32_t blocks_per_page = 0; // BPP
  int32_t pooling = kPoolMean;

  HISA_HD int64_t KeyPagesFor(int64_t length) const {
    return (length + tokens_per_page - 1) / tokens_per_page;
  }
  HISA_HD int64_t SummaryPagesFor(int64_t length) const {
    const int64_t blocks = (length + block_size - 1) / block_size;
    return (blocks + blocks_per_page - 1) / blocks_per_page;
  }
  // Byte offsets inside a key page.
  HISA_HD int64_t ScalesOffset() const {
    return int64_t{tokens_per_page} * row_bytes;
  }
  // Byte offsets inside a summary page.
  HISA_HD int64_t MeanLoOffset() const {
    return int64_t{blocks_per_page} * head_dim * 2;
  }
  HISA_HD int64_t SumsOffset() const {
    return int64_t{blocks_per_page} * head_dim * 4;
  }
  HISA_HD int64_t CountsOffset() const {
    return int64_t{blocks_per_page} * head_dim * 8;
  }
};

// Geometry for (head_dim, format, block_size, pooling); format and pooling
// use the numeric values of hisa::KeyFormat / hisa::BlockPooling.
HISA_HD PageGeometry MakeGeometry(int head_dim, int format, int block_size,
                                  int pooling) {
  PageGeometry g;
  g.head_dim = head_dim;
  g.format = format;
  const int bytes_per_value =
      format == kFormatFp8 ? 1 : (format == kFormatBf16 ? 2 : 4);
  g.row_bytes = head_dim * bytes_per_value;
  const int token_bytes = g.row_bytes + (format == kFormatFp8 ? 4 : 0);
  g.tokens_per_page = static_cast<int32_t>(kPageBytes / token_bytes);
  g.block_size = block_size;
  int log2 = 0;
  while ((1 << log2) < block_size) ++log2;
  g.log2_block = log2;
  g.blocks_per_page = static_cast<int32_t>(kPageBytes / (8 * head_dim + 4));
  g.pooling = pooling;
  return g;
}

// One (request, layer) as a batch sees it. Page tables are uint32 page
// indices inside the batch's upload (`tables` below).
struct LayerView {
  PageGeometry geo;
  uint64_t tokens_per_page_magic = 0;
  uint64_t blocks_per_page_magic = 0;
  int64_t length = 0;
  int64_t key_table = 0;      // index of the first key page entry
  int64_t summary_table = 0;  // index of the first summary page entry
};

// One query row.
struct RowDesc {
  int64_t position = 0;      // t
  int64_t q_offset = 0;      // bytes into the q region
  int64_t w_offset = 0;      // floats into the weight region
  int64_t j_offset = 0;      // floats into the block-score scratch (HISA)
  int64_t out_offset = 0;    // entries into the outputs
  int32_t k = 0;
  int32_t pad = 0;
};

// Rows of one (request, layer, mode, k, m, query shape) scored together.
// Fast path q layout at q_offset: fp8 [q_heads][D] (sign-flipped where the
// head scale is negative; the block scorer converts it to bf16 itself);
// weights w'_h = w_h * |scale_h| (0 for padding heads). Generic path:
// fp32 [heads][D] dequantized values, weights w_h.
struct GroupDesc {
  int32_t layer = 0;
  int32_t mode = kModeDense;
  int32_t num_rows = 1;
  int32_t rows[kMaxGroupRows] = {0, 0};
  int32_t heads = 0;      // H
  int32_t q_heads = 0;    // heads in the q buffer (fast path: padded)
  int32_t k = 0;
  int32_t m = 0;
  int32_t num_splits = 1;   // token work items of this group
  int32_t block_items = 0;  // block-scoring work items of this group
  int64_t max_position = 0;
  int64_t union_offset = 0;     // int2 entries (block, row mask)
  int32_t union_index = 0;      // index into union_counts
  int32_t partial_index = 0;    // first partial list: (split * G + g)
  // Slot-score groups (one HISA row, at most kSlotSelectCap slots): the
  // token work items write every slot's score to slot_scores[
  // slot_score_offset + g * slot_score_stride + slot] instead of keeping a
  // running top-k, and the group's last CTA selects each row's k once.
  // slot_score_offset < 0: a running top-k per work item (+ split merge).
  int32_t slot_score_stride = 0;
  // Block stage shared by two single-row token groups: this descriptor
  // (num_rows 2) exists only for block scoring and choice, and row g's
  // choice becomes the union of token group union_groups[g] (row mask 1).
  // 0: the group scores and chooses its own blocks.
  int32_t split_unions = 0;
  int64_t slot_score_offset = -1;
  int32_t union_groups[kMaxGroupRows] = {0, 0};
  // Slot-key groups (the bulk-copy token kernel with the scratch): the
  // scratch holds keys rather than scores, and, when the group's last item
  // selects alone, the group's key histogram is at slot_hist[
  // slot_hist_index * kKeyHistBins] (SelectBuffers). -1: none (split
  // selects keep each item's histogram in its shared memory).
  int32_t slot_hist_index = -1;
  // Slot-key groups whose items form one thread-block cluster
  // (LaunchSpec::cluster): the items select together (tma_token_kernel.cuh,
  // SplitSelect) instead of the last one alone. 0: the last one alone.
  int32_t split_select = 0;
  // Split-select HISA rows that score their own blocks (not a block-stage
  // pair's): the block items only score, then count themselves done in
  // counters[2 * group]; each token item waits for that count alone (not
  // for the whole block launch) and chooses the row's blocks itself, in
  // shared memory (ChooseBlocksForGroup). The union is not written.
  int32_t tokens_choose = 0;
  // tokens_choose rows with no block items at all (select_plan.cc step 4c):
  // each of the row's num_splits token items (one thread-block cluster)
  // first scores its share of the row's blocks, split evenly, itself
  // (tma_token_kernel.cuh, ScoreOwnBlocks), and the cluster waits at one
  // barrier before every item chooses. block_items is 0.
  int32_t tokens_score_blocks = 0;
  // HISA groups: block scores from the bf16 hi part of the block means only
  // (PlanOptions::block_means_lo false; SPEC 4.2 allows a lower-precision
  // copy), else hi + lo (close to the fp32 means).
  int32_t means_hi_only = 0;
};

// A split select (GroupDesc::split_select) runs in one thread-block cluster
// per row: its work items read each other's key histograms, counts and
// keys of the threshold bin from shared memory (distributed shared memory)
// and wait at cluster barriers; the hardware runs a cluster's CTAs at once
// (tma_token_kernel.cuh, SplitSelect). A portable cluster has at most 8
// CTAs, so a row has at most 8 such items.
inline constexpr int kMaxClusterItems = 8;
// (key, slot) pairs of the k-th largest key's bin that a split select
// narrows in shared memory; a larger bin is first narrowed by further
// histogram rounds.
inline constexpr int kSplitListCap = 2048;

// A token-kernel or block-kernel work item: slots [slot_begin, slot_end) of
// one group (capped on the device by the group's real slot count).
struct WorkItem {
  int32_t group = 0;
  int32_t split = 0;
  int64_t slot_begin = 0;
  int64_t slot_end = 0;
};

// Device pointers of one planned batch (set by the launcher).
struct SelectBuffers {
  const uint8_t* arena = nullptr;       // page base: page p at p * kPageBytes
  const LayerView* layers = nullptr;
  const GroupDesc* groups = nullptr;
  const RowDesc* rows = nullptr;
  const uint32_t* tables = nullptr;
  const uint8_t* q = nullptr;
  const float* w = nullptr;
  float* block_scores = nullptr;        // J scratch
  int32_t* unions = nullptr;            // pairs (block, mask)
  int32_t* union_counts = nullptr;
  int32_t* partial_pos = nullptr;       // [list][k_max]
  uint32_t* partial_key = nullptr;
  int32_t* partial_counts = nullptr;
  int32_t partial_stride = 0;           // entries per partial list
  float* slot_scores = nullptr;         // slot-score groups' scores (keys)
  // Slot-key groups' key histograms (kKeyHistBins words each, at
  // GroupDesc::slot_hist_index), zeroed by the block stage before the
  // token stage counts into them (by a memset in plans without a block
  // stage).
  uint32_t* slot_hist = nullptr;
  int64_t slot_hist_count = 0;          // words
  // The pooled bulk-copy kernel's score slices (kSlotSelectCap keys each,
  // kTmaTokenCtasPerSm per SM) and one word of taken-slice bits per SM
  // (zero before a launch; every CTA clears its bit).
  uint32_t* slot_pool = nullptr;
  uint32_t* pool_bits = nullptr;
  int32_t pool_sms = 0;
  // Two per group: CTAs done with block scoring / with token top-k. Zero
  // before a launch; the last CTA of a group resets its counter.
  int32_t* counters = nullptr;
  int32_t* out_pos = nullptr;
  float* out_scores = nullptr;  // null: no row of the plan wants scores
  // Optional timeline (null unless a benchmark asks): kTraceSlots entries
  // per CTA of this launch, see TracePoint.
  uint64_t* trace = nullptr;
};

// Timeline points of a selection kernel's CTA, as %globaltimer nanoseconds
// written by its thread 0 (0 = not reached); slot kTraceSm holds the SM id.
// Traced launches: the first kTraceMaxLaunches of a plan, at most
// kTraceMaxCtas CTAs each (every stride-th CTA of a larger launch).
enum TracePoint : int {
  kTraceStart = 0,     // kernel entry
  kTraceWaited = 1,    // previous kernel complete (GridDependencyWait);
                       // tokens_choose: the row's block items done (a
                       // pooled row: its own blocks scored)
  kTraceReady = 2,     // prologue done, first tile requested
  kTraceLoopEnd = 3,   // last tile scored
  kTraceTicket = 4,    // group ticket taken (the last CTA runs the tail);
                       // split select: its level-0 round begins;
                       // tokens_choose block item: counted done
  kTraceTailIn = 5,    // the tail's inputs in shared memory (block
                       // choice, slot-key select); split select: the
                       // cluster's level-0 counts summed, own keys loaded
  kTraceTailRound = 6,  // split select: the final round's counts and list
                        // gathered
  kTraceTailChosen = 7,  // its threshold found (split select: and where
                         // this item's entries go)
  kTraceTailEnd = 8,   // block choice / final select / merge done
  kTraceChoiceIn = 9,  // tokens_choose: the row's block scores in shared
                       // memory
  kTraceChoiceChosen = 10,  // tokens_choose: its threshold found
  kTraceSm = 11,
};
inline constexpr int kTraceSlots = 12;
inline constexpr int kTraceMaxCtas = 4096;
inline constexpr int kTraceMaxLaunches = 4;

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_SELECT_LAYOUT_H_
