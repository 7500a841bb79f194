#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernels/cuda/cuda_store.h"
#include "kernels/cuda/device_state.h"
#include "kernels/cuda/select_plan.h"
#include "kernels/status_macros.h"

namespace hisa {
namespace {
// Batches of a select context whose GPU stages are timed, when the caller
// asks for stage times (RunBatch says why not every one).
constexpr int64_t kStageSampleEvery = 16;
// Rows per chunk of the outputs' copy into the results: ~32 x 8 KB.
constexpr int64_t kRowsPerCopyChunk = 32;
}  // namespace

bool CudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count < 1) {
    cudaGetLastError();
    return false;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return prop.major == 9 && prop.minor == 0;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    int device, int64_t memory_budget_bytes) {
  cuda::DeviceOptions options;
  options.device = device;
  options.memory_budget_bytes = memory_budget_bytes;
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend,
                   CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const cuda::DeviceOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<cuda::DeviceState> state,
                   cuda::DeviceState::Create(options));
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(state)));
}

CudaBackend::CudaBackend(std::unique_ptr<cuda::DeviceState> device)
    : device_(std::move(device)),
      plan_options_(std::make_unique<cuda::PlanOptions>()) {
  plan_options_->num_sms = device_->num_sms();
  // A/B switches for tests and benchmarks (select_plan.h PlanOptions).
  auto env_is_1 = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string(v) == "1";
  };
  plan_options_->use_wgmma = !env_is_1("HISA_CUDA_MMA_SYNC");
  plan_options_->pair_hisa_rows = env_is_1("HISA_CUDA_PAIR_HISA");
  auto env_is_0 = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string(v) == "0";
  };
  plan_options_->slot_scores = !env_is_0("HISA_CUDA_SLOT_SCORES");
  // HISA_CUDA_SLOT_SCORE_SCRATCH=0: no slot-score scratch, so bulk-copy
  // rows run the pooled form (tests of that kernel form).
  if (env_is_0("HISA_CUDA_SLOT_SCORE_SCRATCH")) {
    plan_options_->slot_score_budget_bytes = 0;
  }
  plan_options_->pair_hisa_blocks = !env_is_0("HISA_CUDA_PAIR_BLOCKS");
  plan_options_->split_select = !env_is_0("HISA_CUDA_SPLIT_SELECT");
  plan_options_->token_choice = !env_is_0("HISA_CUDA_TOKEN_CHOICE");
  plan_options_->balance_clusters = !env_is_0("HISA_CUDA_BALANCE_CLUSTERS");
  plan_options_->tokens_score_blocks =
      !env_is_0("HISA_CUDA_TOKENS_SCORE_BLOCKS");
  plan_options_->pooled_rows_score_blocks =
      !env_is_0("HISA_CUDA_POOLED_OWN_BLOCKS");
  plan_options_->block_means_lo = env_is_1("HISA_CUDA_BLOCK_MEANS_LO");
  plan_options_->use_tma =
      device_->key_tensor_map() != nullptr && !env_is_0("HISA_CUDA_TMA");
  // Unknown if the query fails: the planner then assumes that clusters
  // fit as CTAs do.
  if (plan_options_->use_tma) {
    plan_options_->clusters_known =
        cuda::ResidentClusters(plan_options_->clusters_resident,
                               plan_options_->clusters_resident_spread) ==
        cudaSuccess;
    if (!plan_options_->clusters_known) cudaGetLastError();  // not sticky
  }
  // HISA_CUDA_CLUSTER_ITEMS=2..8 (others are ignored).
  if (const char* v = std::getenv("HISA_CUDA_CLUSTER_ITEMS"); v != nullptr) {
    const int items = std::atoi(v);
    if (items >= 2 && items <= cuda::kMaxClusterItems) {
      plan_options_->cluster_items = items;
    }
  }
}

CudaBackend::~CudaBackend() = default;

std::string CudaBackend::device_description() const {
  return absl::StrCat("GPU ", device_->device(), ": ", device_->device_name(),
                      ", ", device_->num_sms(), " SMs, cache arena ",
                      (device_->num_pages() * cuda::kPageBytes) >> 20, " MiB");
}

absl::StatusOr<std::unique_ptr<RequestStore>> CudaBackend::CreateStore(
    const RequestConfig& config) {
  return std::unique_ptr<RequestStore>(
      new cuda::CudaRequestStore(device_.get(), config));
}

void CudaBackend::Select(absl::Span<const SelectTask> tasks,
                         SelectStageTimes* times, HostParallel* parallel) {
  if (tasks.empty()) return;
  cuda::SelectContext* ctx = device_->AcquireContext();
  // Batches larger than one context's scratch run in consecutive parts.
  const int64_t budget = ctx->device_bytes - (int64_t{1} << 20);
  size_t i = 0;
  while (i < tasks.size()) {
    size_t j = i;
    int64_t bytes = 0;
    while (j < tasks.size()) {
      const int64_t e = cuda::EstimateTaskBytes(tasks[j]);
      if (j > i && bytes + e > budget) break;
      bytes += e;
      ++j;
    }
    RunBatch(tasks.subspan(i, j - i), ctx, times, parallel);
    i = j;
  }
  device_->ReleaseContext(ctx);
}

// The request path of one batch: the plan's image is written straight into
// the context's pinned staging, uploaded with one async copy, the kernels
// run, the outputs (positions, and scores when a row wants them) come back
// with one async copy into the same staging, and the stream is synchronized
// once. Planning reuses the context's SelectPlan and a per-thread scratch
// (select_plan.h), so a batch no bigger than earlier ones allocates nothing
// here; only the results' own vectors grow.
void CudaBackend::RunBatch(absl::Span<const SelectTask> tasks, void* context,
                           SelectStageTimes* times, HostParallel* parallel) {
  auto* ctx = static_cast<cuda::SelectContext*>(context);
  auto fail = [&](const absl::Status& status) {
    for (const SelectTask& t : tasks) {
      t.result->status = status;
      t.result->positions.clear();
      t.result->scores.clear();
    }
  };
  const absl::Time start = absl::Now();
  cudaError_t err = cudaSetDevice(device_->device());
  if (err != cudaSuccess) return fail(cuda::CudaError(err, "cudaSetDevice"));
  // The context's, not a thread_local one: the loops below may run on other
  // threads (`parallel`). A halved batch (below) plans again into it, after
  // which this call no longer reads it.
  cuda::SelectPlan& plan = ctx->plan;
  const absl::Status planned = cuda::BuildSelectPlanInto(
      tasks, *plan_options_, ctx->host, ctx->host_bytes, &plan, parallel);
  if (!planned.ok()) return fail(planned);
  // Positions and scores are adjacent in the device region (scores at
  // out_scores_off, after positions' alignment padding): one download.
  const int64_t scores_at = plan.out_scores_off - plan.out_pos_off;
  const int64_t download =
      plan.write_scores ? scores_at + plan.out_entries * 4
                        : plan.out_entries * 4;
  if (plan.device_bytes > ctx->device_bytes ||
      plan.image_bytes > ctx->host_bytes || download > ctx->host_bytes) {
    if (tasks.size() > 1) {  // the estimate was optimistic: halve
      const size_t half = tasks.size() / 2;
      RunBatch(tasks.subspan(0, half), context, times, parallel);
      RunBatch(tasks.subspan(half), context, times, parallel);
      return;
    }
    return fail(absl::ResourceExhaustedError(absl::StrCat(
        "select row needs ", plan.device_bytes,
        " bytes of GPU scratch; a select context holds ", ctx->device_bytes)));
  }
  const absl::Time prepared = absl::Now();
  cudaStream_t stream = ctx->stream;
  err = cudaMemcpyAsync(ctx->device, ctx->host, plan.image_bytes,
                        cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return fail(cuda::CudaError(err, "select upload"));
  // Stage events only when the caller wants stage times, and then on one
  // batch in kStageSampleEvery: an event between the block and token
  // kernels keeps the token kernel from starting early (programmatic
  // dependent launch), which costs the timed batch a few microseconds of
  // GPU time, and reading six events costs the host more. The server asks
  // for stage times on every batch (its stage histograms).
  const bool timed =
      times != nullptr && ctx->batches++ % kStageSampleEvery == 0;
  cudaEvent_t* events = timed ? ctx->events : nullptr;
  // No map when bulk copies are off (HISA_CUDA_TMA=0): the GPU suite's
  // variant run then also covers launches without one.
  err = cuda::LaunchSelectPlan(
      plan, ctx->device, device_->arena(),
      plan_options_->use_tma ? device_->key_tensor_map() : nullptr, stream,
      events);
  if (err != cudaSuccess) return fail(cuda::CudaError(err, "select launch"));
  // The download overwrites the staging the upload read: stream order puts
  // it after the upload and the kernels.
  err = cudaMemcpyAsync(ctx->host, ctx->device + plan.out_pos_off, download,
                        cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess && events != nullptr) {
    err = cudaEventRecord(events[5], stream);
  }
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return fail(cuda::CudaError(err, "select kernels"));
  const absl::Time downloaded =
      times != nullptr ? absl::Now() : absl::InfinitePast();

  const int32_t* out_pos = reinterpret_cast<const int32_t*>(ctx->host);
  const float* out_scores =
      reinterpret_cast<const float*>(ctx->host + scores_at);
  ParallelFor(parallel, static_cast<int64_t>(tasks.size()), kRowsPerCopyChunk,
              [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) {
                  const SelectTask& t = tasks[i];
                  RowResult& r = *t.result;
                  const int64_t off = plan.task_out_offset[i];
                  const int k = t.row->k;
                  r.status = absl::OkStatus();
                  r.mode_used = t.mode;
                  r.positions.assign(out_pos + off, out_pos + off + k);
                  if (t.row->return_scores) {
                    r.scores.assign(out_scores + off, out_scores + off + k);
                  } else {
                    r.scores.clear();
                  }
                }
              });
  if (times != nullptr) {
    times->prepare += absl::ToDoubleSeconds(prepared - start);
    times->finish += absl::ToDoubleSeconds(absl::Now() - downloaded);
  }
  if (timed) {
    float ms[5] = {0, 0, 0, 0, 0};
    for (int s = 0; s < 5; ++s) {
      if (cudaEventElapsedTime(&ms[s], ctx->events[s], ctx->events[s + 1]) !=
          cudaSuccess) {
        ms[s] = 0;
        cudaGetLastError();
      }
    }
    // Block choice runs inside the block-scoring kernel and top-k (with the
    // merge of split work items) inside the token kernel: block_choice stays
    // 0 and `topk` gets the download of the results.
    times->block_scoring += (ms[0] + ms[1]) * 1e-3;
    times->token_scoring += (ms[2] + ms[3]) * 1e-3;
    times->topk += ms[4] * 1e-3;
  }
}

}  // namespace hisa
