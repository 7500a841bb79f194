// Host planner and launcher of one Select batch on the CUDA backend.
//
//   ASSIGN_OR_RETURN(SelectPlan plan, BuildSelectPlan(tasks, options));
//   // copy plan.image to `base` (device), then:
//   cudaError_t err =
//       LaunchSelectPlan(plan, base, arena, key_map, stream, events);
//   // outputs: plan.out_pos_off / plan.out_scores_off, task i at
//   // plan.task_out_offset[i], tasks[i].row->k entries each.
//
//   // The request path: the image goes straight into pinned staging.
//   RETURN_IF_ERROR(BuildSelectPlanInto(tasks, options, pinned, capacity,
//                                       &plan));
//   if (plan.image_bytes > capacity) { /* split the batch */ }
//
// BuildSelectPlan groups the rows (neighbouring rows of one (request, layer,
// mode, k, m, query shape) in pairs, the rest alone), decides each group's
// path (FP8 tensor cores when keys and queries are FP8 and D is 64 or 128,
// with bulk tensor copies where tiles are aligned 128-key runs of one page,
// else the generic fp32 path), packs queries and weights, lays out every
// descriptor, page table and scratch buffer in one device region of
// plan.device_bytes bytes whose first plan.image_bytes bytes
// (== plan.image.size()) are the upload image, and splits work items across
// the GPU's SMs (per group, the split count that a wave model of the
// kernel's resident CTAs favours). Pure host code; the stores must not
// change until the launch completes (the engine's reader lock guarantees
// it).
//
// BuildSelectPlanInto makes the same plan (the same image bytes) but writes
// the image to a caller buffer, e.g. pinned staging for one cudaMemcpyAsync,
// and leaves plan->image empty: no intermediate copy of the packed queries.
// It reuses the vectors of *plan and a per-thread scratch, so once a thread
// has planned a batch at least as big, planning allocates nothing.
//
// LaunchSelectPlan issues, on `stream`, block scoring (+ block choice) and
// token refinement + top-k (+ merge of split work items), one launch per
// kernel variant present in the batch: one launch for a DENSE batch, two for
// HISA, one again for a HISA batch whose token items score their own blocks
// (GroupDesc::tokens_score_blocks: decode batches on spread clusters).
// When `events` is not null it records events[0] before the first
// launch, events[1] and events[2] after block scoring (block choice runs
// inside it), events[3] and events[4] after token top-k (the merge runs
// inside it).
#ifndef HISA_KERNELS_CUDA_SELECT_PLAN_H_
#define HISA_KERNELS_CUDA_SELECT_PLAN_H_

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/cuda/select_layout.h"

namespace hisa::cuda {

struct PlanOptions {
  int num_sms = 132;
  // Pair neighbouring DENSE rows of one (request, layer) into one work item
  // (they score the same keys: loads and tiles are shared).
  bool pair_rows = true;
  // Pair HISA rows too. Off by default: a pair scores the union of both
  // rows' blocks, and measured unions of neighbouring rows were close to
  // 2 m blocks (bench/gpu/RESULTS_gpu.md), so pairs cost more than they save.
  // HISA rows with c + 1 <= m (every block chosen) are DENSE rows and pair
  // as DENSE rows do.
  bool pair_hisa_rows = false;
  // Split a group's candidates over several work items when there are too
  // few groups to fill the GPU.
  bool allow_splits = true;
  // Token scoring on warpgroup MMA where it applies (FP8, D = 128, 33..64
  // heads); otherwise mma.sync. The backend turns it off when the
  // environment sets HISA_CUDA_MMA_SYNC=1 (A/B comparisons; likewise
  // HISA_CUDA_PAIR_HISA=1 sets pair_hisa_rows).
  bool use_wgmma = true;
  // Slot-score groups: single HISA rows with at most kSlotSelectCap
  // candidate slots on the tensor-core token scorers score every slot and
  // select the row's k once, in the group's last CTA (no running top-k, no
  // split merge). False keeps a running top-k everywhere (A/B comparisons;
  // the backend sets it false when HISA_CUDA_SLOT_SCORES=0).
  bool slot_scores = true;
  // The scores go to a device scratch array while the batch's scratch stays
  // within this many bytes. Past it, groups on the bulk-copy (TMA) kernel
  // use its pooled form instead (kWgmmaTmaPool: one work item per row, the
  // scores in one of kTmaTokenCtasPerSm slices per SM, whatever the number
  // of rows: causal prefill), and other groups keep a running top-k.
  int64_t slot_score_budget_bytes = int64_t{64} << 20;
  // Neighbouring single-row HISA groups of one (request, layer) share their
  // block scoring (each block mean read once for two rows) while keeping
  // separate unions and token work. HISA_CUDA_PAIR_BLOCKS=0 turns it off.
  bool pair_hisa_blocks = true;
  // Slot-score groups whose tiles are aligned runs of 128 keys in one page
  // (FP8, D = 128, 64 query heads, B % 128 == 0, 128 | tokens per page) use
  // the bulk-tensor-copy token kernel (tma_token_kernel.cuh). The backend
  // sets it when the arena has a tensor map, unless HISA_CUDA_TMA=0.
  bool use_tma = false;
  // Slot-key groups of several work items (at most kMaxClusterItems, then)
  // select their row together as one thread-block cluster
  // (GroupDesc::split_select). HISA_CUDA_SPLIT_SELECT=0 leaves it to each
  // group's last item (A/B comparisons, tests of that path).
  bool split_select = true;
  // Thread-block clusters of c split-select CTAs (the kWgmmaTma kernel)
  // that the GPU holds at once, by c (ResidentClusters), when
  // clusters_known; else taken as kTmaTokenCtasPerSm * num_sms / c. Split
  // selects only when a row's clusters fit in one wave with an eighth to
  // spare (select_plan.cc, ClusterItems).
  bool clusters_known = false;
  int clusters_resident[kMaxClusterItems + 1] = {};
  // Split-select HISA rows that score their own blocks: their token items
  // choose the row's blocks themselves once its block items are done
  // (GroupDesc::tokens_choose), instead of the block stage's last item
  // writing a union that every token item reads after the whole block
  // launch. HISA_CUDA_TOKEN_CHOICE=0 turns it off.
  bool token_choice = true;
  // Spread clusters (LaunchSpec::balance_clusters) for clustered launches of
  // at most num_sms CTAs, and of at most clusters_resident_spread[c]
  // clusters of c when clusters_known. HISA_CUDA_BALANCE_CLUSTERS=0 turns
  // it off.
  bool balance_clusters = true;
  // Split-select rows that choose their own blocks on spread launches score
  // their blocks in their token items too, when every HISA row of the batch
  // can (GroupDesc::tokens_score_blocks; no block launch).
  // HISA_CUDA_TOKENS_SCORE_BLOCKS=0 turns it off.
  bool tokens_score_blocks = true;
  // Pooled HISA rows (kWgmmaTmaPool: a causal prefill's rows) score and
  // choose their own blocks in their token item too, when every HISA row of
  // the batch can (a row scores at most kPooledOwnBlockTiles tiles of
  // blocks, from the hi means alone). HISA_CUDA_POOLED_OWN_BLOCKS=0 turns
  // it off.
  bool pooled_rows_score_blocks = true;
  // Block scores from the bf16 hi and lo parts of the block means (close to
  // the fp32 means); false: the hi part alone (GroupDesc::means_hi_only:
  // half the bytes and MMAs; each mean rounded by at most 2^-8 of itself,
  // finer than the fp8 keys it averages; SPEC 4.2 allows such a copy).
  // HISA_CUDA_BLOCK_MEANS_LO=1 turns lo on (and with it, decode batches
  // keep their block launch: tokens_score_blocks needs the hi means alone).
  bool block_means_lo = false;
  // Clusters of c that the GPU holds at once with kTmaSpreadSmemBytes per
  // CTA and the load-balancing policy (ResidentClusters), when
  // clusters_known.
  int clusters_resident_spread[kMaxClusterItems + 1] = {};
  // > 0: split selects with this many items per row (2..kMaxClusterItems),
  // whether their clusters fit in one wave or not (HISA_CUDA_CLUSTER_ITEMS;
  // tests of several waves of clusters, A/B comparisons).
  int cluster_items = 0;
};

// The device's clusters_resident and clusters_resident_spread for
// PlanOptions (cudaOccupancyMaxActiveClusters of the split-select token
// kernel; c = 0, 1 stay 0). An error of a spread query leaves that figure 0
// (no spread launches of that size) and is not returned.
cudaError_t ResidentClusters(
    int (&clusters_resident)[kMaxClusterItems + 1],
    int (&clusters_resident_spread)[kMaxClusterItems + 1]);

struct LaunchSpec {
  enum Stage : int { kBlockScores = 1, kTokens = 2 };
  // kWgmmaTma: slot-score rows with bulk tensor copies, scores in device
  // scratch; kWgmmaTmaPool: the same with the scores in the plan's score
  // pool (unsplit rows); kWgmmaTopkTma: the running top-k wgmma kernel with
  // bulk tensor copies.
  enum Scorer : int {
    kWgmma = 0,
    kMmaSync = 1,
    kGeneric = 2,
    kWgmmaTma = 3,
    kWgmmaTmaPool = 4,
    kWgmmaTopkTma = 5
  };
  Stage stage = kTokens;
  Scorer scorer = kGeneric;
  int mt = 0;         // m16 head tiles (mma.sync; blocks: of the query)
  int ks = 0;         // k steps: D / 32 (tokens) or D / 16 (blocks)
  int rows = 1;       // rows per group
  int64_t first_item = 0;
  int64_t num_items = 0;
  // CTAs per thread-block cluster: a launch with split selects
  // (GroupDesc::split_select) runs each group's items, first_item + cluster
  // * j ..., as one cluster. 1: no clusters.
  int32_t cluster = 1;
  // Spread clusters (PlanOptions::balance_clusters): a clustered launch
  // whose clusters all fit at once with at most kTmaSpreadCtasPerSm CTAs per
  // SM asks for the load-balancing cluster scheduling policy and, when it
  // has more CTAs than the GPU has SMs, for smem_bytes =
  // kTmaSpreadSmemBytes of shared memory per CTA, which caps them at two
  // per SM. By default the hardware packs a launch's clusters onto few SMs,
  // three CTAs of this kernel on one, even when it could spread them, and
  // an SM holding three streams each at about two thirds of the rate of an
  // SM holding one.
  bool balance_clusters = false;
  int32_t smem_bytes = 0;  // > 0: instead of the kernel's own
};

struct SelectPlan {
  std::vector<uint8_t> image;  // BuildSelectPlan only
  int64_t image_bytes = 0;     // upload image: device bytes [0, image_bytes)
  int64_t device_bytes = 0;
  // Byte offsets inside the device region.
  int64_t layers_off = 0, groups_off = 0, rows_off = 0, items_off = 0,
          tables_off = 0, q_off = 0, w_off = 0, counters_off = 0;
  int64_t block_scores_off = 0, unions_off = 0, union_counts_off = 0,
          partial_pos_off = 0, partial_key_off = 0, partial_counts_off = 0,
          slot_scores_off = 0, slot_hist_off = 0, slot_pool_off = 0,
          pool_bits_off = 0, out_pos_off = 0, out_scores_off = 0;
  int64_t slot_hist_count = 0;  // uint32 words at slot_hist_off
  int32_t pool_sms = 0;         // kWgmmaTmaPool: SMs whose slices it holds
  int32_t partial_stride = 0;
  int64_t out_entries = 0;
  // Some task asked for scores (QueryRow::return_scores): the kernels write
  // them at out_scores_off only then.
  bool write_scores = false;
  std::vector<LaunchSpec> launches;
  std::vector<int64_t> task_out_offset;
  int64_t num_groups = 0;       // token groups: descriptors [0, num_groups)
  int64_t num_descriptors = 0;  // + block-stage pairs after them
};

// Approximate device bytes one task adds to a plan, for cutting big batches
// into parts (Select halves a part whose real plan still does not fit).
int64_t EstimateTaskBytes(const SelectTask& task);

// Every task's store must be a CudaRequestStore; tasks are validated
// (backend.h). INVALID_ARGUMENT only for shapes no kernel supports.
absl::StatusOr<SelectPlan> BuildSelectPlan(absl::Span<const SelectTask> tasks,
                                           const PlanOptions& options);

// The same plan into *plan (its previous contents replaced). The image is
// written to image[0, plan->image_bytes) only when plan->image_bytes <=
// capacity; otherwise nothing is written and the caller splits the batch.
// The queries are packed on `parallel`'s threads when it is not null.
// Same preconditions and errors as BuildSelectPlan.
absl::Status BuildSelectPlanInto(absl::Span<const SelectTask> tasks,
                                 const PlanOptions& options, uint8_t* image,
                                 int64_t capacity, SelectPlan* plan,
                                 HostParallel* parallel = nullptr);

// `key_map` is the arena's tensor map (DeviceState::key_tensor_map); it may
// be null only when the plan has no kWgmmaTma launch. `trace` (device
// memory, zeroed, kTraceMaxLaunches * kTraceMaxCtas * kTraceSlots entries;
// null in serving) receives the kernels' timelines (select_layout.h
// TracePoint), launch i at i * kTraceMaxCtas * kTraceSlots.
cudaError_t LaunchSelectPlan(const SelectPlan& plan, uint8_t* device_base,
                             const uint8_t* arena, const CUtensorMap* key_map,
                             cudaStream_t stream, cudaEvent_t* events,
                             uint64_t* trace = nullptr);

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_SELECT_PLAN_H_
