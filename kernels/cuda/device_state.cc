#include "kernels/cuda/device_state.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/select_layout.h"

namespace hisa::cuda {

absl::Status CudaError(cudaError_t err, const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(err),
                                          " (", cudaGetErrorString(err), ")"));
}

namespace {

// Encodes `map` over the page pool (device_state.h key_tensor_map). The
// encoder is a driver entry point, fetched through the runtime so that
// nothing links libcuda directly. False when it is unavailable or refuses.
bool EncodeKeyTensorMap(uint8_t* pages, int64_t num_pages, CUtensorMap* map) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found;
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                       cudaEnableDefault,
                                       &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || fn == nullptr) {
    cudaGetLastError();
    return false;
  }
  const cuuint64_t rows =
      static_cast<cuuint64_t>(num_pages) * (kPageBytes / 128);
  // Box coordinates are signed 32-bit (kernels pass row indices as int32).
  if (rows > 0x7FFFFFFFull) return false;
  const cuuint64_t dims[2] = {128, rows};
  const cuuint64_t strides[1] = {128};  // bytes between rows
  const cuuint32_t box[2] = {128, static_cast<cuuint32_t>(kTileSlots)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)(
      map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, pages, dims, strides, box,
      element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceState>> DeviceState::Create(
    const DeviceOptions& options) {
  if (options.memory_budget_bytes <= 0 || options.select_contexts < 1 ||
      options.select_scratch_bytes < (int64_t{1} << 20) ||
      options.append_staging_bytes < (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad CUDA backend options: budget ", options.memory_budget_bytes,
        ", contexts ", options.select_contexts, ", scratch ",
        options.select_scratch_bytes, ", append staging ",
        options.append_staging_bytes));
  }
  std::unique_ptr<DeviceState> s(new DeviceState(options));
  cudaError_t err = cudaSetDevice(options.device);
  if (err != cudaSuccess) return CudaError(err, "cudaSetDevice");
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, options.device);
  if (err != cudaSuccess) return CudaError(err, "cudaGetDeviceProperties");
  if (prop.major != 9 || prop.minor != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", options.device, " (", prop.name, ") has compute "
        "capability ", prop.major, ".", prop.minor,
        "; this build's kernels are for sm_90a (H100/H200) only"));
  }
  s->num_sms_ = prop.multiProcessorCount;
  s->device_name_ = prop.name;

  s->num_pages_ =
      (options.memory_budget_bytes + kPageBytes - 1) / kPageBytes;
  if (s->num_pages_ > (int64_t{1} << 32) - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory budget ", options.memory_budget_bytes, " is too large"));
  }
  const int64_t pages_bytes = s->num_pages_ * kPageBytes;
  const int64_t total = pages_bytes + options.append_staging_bytes +
                        options.select_contexts * options.select_scratch_bytes;
  void* base = nullptr;
  err = cudaMalloc(&base, static_cast<size_t>(total));
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls are unaffected
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot reserve ", total, " bytes on CUDA device ", options.device,
        " (budget ", options.memory_budget_bytes, " + staging and scratch): ",
        cudaGetErrorString(err)));
  }
  s->base_ = static_cast<uint8_t*>(base);
  s->has_key_map_ = EncodeKeyTensorMap(s->base_, s->num_pages_, &s->key_map_);
  s->append_device_ = s->base_ + pages_bytes;
  void* host = nullptr;
  err = cudaMallocHost(&host, static_cast<size_t>(options.append_staging_bytes));
  if (err != cudaSuccess) return CudaError(err, "cudaMallocHost (append)");
  s->append_host_ = static_cast<uint8_t*>(host);
  err = cudaStreamCreateWithFlags(&s->append_stream_, cudaStreamNonBlocking);
  if (err != cudaSuccess) return CudaError(err, "cudaStreamCreate");

  uint8_t* scratch = s->append_device_ + options.append_staging_bytes;
  for (int i = 0; i < options.select_contexts; ++i) {
    auto ctx = std::make_unique<SelectContext>();
    ctx->device = scratch + i * options.select_scratch_bytes;
    ctx->device_bytes = options.select_scratch_bytes;
    err = cudaMallocHost(&host, static_cast<size_t>(options.select_scratch_bytes));
    if (err != cudaSuccess) return CudaError(err, "cudaMallocHost (select)");
    ctx->host = static_cast<uint8_t*>(host);
    ctx->host_bytes = options.select_scratch_bytes;
    err = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking);
    if (err != cudaSuccess) return CudaError(err, "cudaStreamCreate");
    for (cudaEvent_t& e : ctx->events) {
      err = cudaEventCreate(&e);
      if (err != cudaSuccess) return CudaError(err, "cudaEventCreate");
    }
    s->contexts_.push_back(std::move(ctx));
  }
  {
    absl::MutexLock lock(&s->contexts_mu_);
    for (auto& ctx : s->contexts_) s->idle_contexts_.push_back(ctx.get());
  }
  {
    absl::MutexLock lock(&s->pages_mu_);
    s->free_list_.resize(s->num_pages_);
    // Hand out low pages first (LIFO from the back).
    for (int64_t i = 0; i < s->num_pages_; ++i) {
      s->free_list_[i] = static_cast<uint32_t>(s->num_pages_ - 1 - i);
    }
  }
  return s;
}

DeviceState::~DeviceState() {
  cudaSetDevice(options_.device);
  for (auto& ctx : contexts_) {
    for (cudaEvent_t e : ctx->events) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (ctx->stream != nullptr) cudaStreamDestroy(ctx->stream);
    if (ctx->host != nullptr) cudaFreeHost(ctx->host);
  }
  if (append_stream_ != nullptr) cudaStreamDestroy(append_stream_);
  if (append_host_ != nullptr) cudaFreeHost(append_host_);
  if (base_ != nullptr) cudaFree(base_);
}

int64_t DeviceState::free_pages() const {
  absl::MutexLock lock(&pages_mu_);
  return static_cast<int64_t>(free_list_.size());
}

absl::Status DeviceState::AllocatePages(int64_t n, std::vector<uint32_t>* out) {
  if (n <= 0) return absl::OkStatus();
  absl::MutexLock lock(&pages_mu_);
  if (static_cast<int64_t>(free_list_.size()) < n) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "GPU page pool exhausted: need ", n, " pages of ", kPageBytes,
        " bytes, ", free_list_.size(), " free"));
  }
  for (int64_t i = 0; i < n; ++i) {
    out->push_back(free_list_.back());
    free_list_.pop_back();
  }
  return absl::OkStatus();
}

void DeviceState::FreePages(absl::Span<const uint32_t> pages) {
  absl::MutexLock lock(&pages_mu_);
  free_list_.insert(free_list_.end(), pages.begin(), pages.end());
}

SelectContext* DeviceState::AcquireContext() {
  absl::MutexLock lock(&contexts_mu_);
  contexts_mu_.Await(absl::Condition(
      +[](std::vector<SelectContext*>* idle) { return !idle->empty(); },
      &idle_contexts_));
  SelectContext* ctx = idle_contexts_.back();
  idle_contexts_.pop_back();
  return ctx;
}

void DeviceState::ReleaseContext(SelectContext* context) {
  absl::MutexLock lock(&contexts_mu_);
  idle_contexts_.push_back(context);
}

}  // namespace hisa::cuda
