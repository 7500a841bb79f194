#include "kernels/cuda/cuda_store.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/append_kernels.h"
#include "kernels/status_macros.h"

namespace hisa::cuda {
namespace {

int64_t AlignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

}  // namespace

CudaRequestStore::CudaRequestStore(DeviceState* device,
                                   const RequestConfig& config)
    : device_(device),
      config_(config),
      geo_(MakeGeometry(config.head_dim, static_cast<int>(config.key_format),
                        config.block_size, static_cast<int>(config.pooling))),
      layers_(config.num_layers) {}

CudaRequestStore::~CudaRequestStore() {
  for (const Layer& l : layers_) {
    if (!l.key_pages.empty()) device_->FreePages(l.key_pages);
    if (!l.summary_pages.empty()) device_->FreePages(l.summary_pages);
  }
}

int64_t CudaRequestStore::BytesAfterAppend(int layer,
                                           int64_t num_tokens) const {
  const Layer& l = layers_[layer];
  const int64_t now = static_cast<int64_t>(l.key_pages.size() +
                                           l.summary_pages.size());
  const int64_t after = geo_.KeyPagesFor(l.length + num_tokens) +
                        geo_.SummaryPagesFor(l.length + num_tokens);
  return (pages_ - now + after) * kPageBytes;
}

absl::Status CudaRequestStore::Append(const KeyChunk& chunk) {
  Layer& l = layers_[chunk.layer];
  if (chunk.first_position != l.length) {
    return absl::InternalError(absl::StrCat(
        "CUDA store append at ", chunk.first_position, " but layer ",
        chunk.layer, " holds ", l.length, " tokens"));
  }
  const int64_t n = chunk.num_tokens;
  const int64_t new_length = l.length + n;
  const int64_t add_key = geo_.KeyPagesFor(new_length) -
                          static_cast<int64_t>(l.key_pages.size());
  const int64_t add_sum = geo_.SummaryPagesFor(new_length) -
                          static_cast<int64_t>(l.summary_pages.size());
  std::vector<uint32_t> fresh;
  RETURN_IF_ERROR(device_->AllocatePages(add_key + add_sum, &fresh));
  const size_t old_key = l.key_pages.size(), old_sum = l.summary_pages.size();
  l.key_pages.insert(l.key_pages.end(), fresh.begin(), fresh.begin() + add_key);
  l.summary_pages.insert(l.summary_pages.end(), fresh.begin() + add_key,
                         fresh.end());
  auto rollback = [&](absl::Status status) {
    l.key_pages.resize(old_key);
    l.summary_pages.resize(old_sum);
    device_->FreePages(fresh);
    return status;
  };

  const bool fp8 = geo_.format == kFormatFp8;
  const int64_t token_bytes = geo_.row_bytes + (fp8 ? 4 : 0);
  const int64_t staging = device_->append_staging_bytes();
  // Per piece: two page tables (bounded by the piece size), keys, scales.
  const int64_t max_piece = std::max<int64_t>(
      1, (staging - 4096) / (token_bytes + 2 * 16 + 16));
  absl::MutexLock lock(device_->append_mutex());
  cudaError_t err = cudaSetDevice(device_->device());
  if (err != cudaSuccess) return rollback(CudaError(err, "cudaSetDevice"));
  cudaStream_t stream = device_->append_stream();
  uint8_t* host = device_->append_host();
  uint8_t* dev = device_->append_device();
  for (int64_t done = 0; done < n;) {
    const int64_t piece = std::min(max_piece, n - done);
    const int64_t first = l.length + done;
    const int64_t kp0 = first / geo_.tokens_per_page;
    const int64_t kp1 = (first + piece - 1) / geo_.tokens_per_page;
    const int64_t b0 = first / geo_.block_size;
    const int64_t b1 = (first + piece - 1) / geo_.block_size;
    const int64_t sp0 = b0 / geo_.blocks_per_page;
    const int64_t sp1 = b1 / geo_.blocks_per_page;
    int64_t off = 0;
    const int64_t key_tab = off;
    off = AlignUp(off + (kp1 - kp0 + 1) * 4, 16);
    const int64_t sum_tab = off;
    off = AlignUp(off + (sp1 - sp0 + 1) * 4, 16);
    const int64_t keys_off = off;
    off = AlignUp(off + piece * geo_.row_bytes, 16);
    const int64_t scales_off = off;
    off += fp8 ? piece * 4 : 0;
    std::memcpy(host + key_tab, l.key_pages.data() + kp0, (kp1 - kp0 + 1) * 4);
    std::memcpy(host + sum_tab, l.summary_pages.data() + sp0,
                (sp1 - sp0 + 1) * 4);
    std::memcpy(host + keys_off, chunk.keys.data() + done * geo_.row_bytes,
                piece * geo_.row_bytes);
    if (fp8) {
      std::memcpy(host + scales_off, chunk.scales.data() + done, piece * 4);
    }
    err = cudaMemcpyAsync(dev, host, off, cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) return rollback(CudaError(err, "append upload"));
    AppendLaunch a;
    a.arena = device_->arena();
    a.geo = geo_;
    a.key_pages = reinterpret_cast<const uint32_t*>(dev + key_tab);
    a.first_key_page = kp0;
    a.summary_pages = reinterpret_cast<const uint32_t*>(dev + sum_tab);
    a.first_summary_page = sp0;
    a.first_pos = first;
    a.n = piece;
    a.keys = dev + keys_off;
    a.scales = fp8 ? reinterpret_cast<const float*>(dev + scales_off) : nullptr;
    err = LaunchAppend(a, stream);
    if (err != cudaSuccess) return rollback(CudaError(err, "append kernels"));
    // The pinned staging is reused by the next piece: wait for this one.
    err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess) return rollback(CudaError(err, "append"));
    done += piece;
  }
  l.length = new_length;
  pages_ += add_key + add_sum;
  return absl::OkStatus();
}

absl::StatusOr<bool> CudaRequestStore::Matches(const KeyChunk& chunk) const {
  const Layer& l = layers_[chunk.layer];
  if (chunk.first_position < 0 ||
      chunk.first_position + chunk.num_tokens > l.length) {
    return absl::InternalError(absl::StrCat(
        "Matches of [", chunk.first_position, ", +", chunk.num_tokens,
        ") beyond the stored ", l.length, " tokens"));
  }
  const bool fp8 = geo_.format == kFormatFp8;
  const int64_t row = geo_.row_bytes;
  const int64_t staging = device_->append_staging_bytes();
  absl::MutexLock lock(device_->append_mutex());
  cudaError_t err = cudaSetDevice(device_->device());
  if (err != cudaSuccess) return CudaError(err, "cudaSetDevice");
  cudaStream_t stream = device_->append_stream();
  uint8_t* host = device_->append_host();
  const int64_t max_piece = (staging - 64) / (row + 4);
  for (int64_t done = 0; done < chunk.num_tokens;) {
    const int64_t piece = std::min(max_piece, chunk.num_tokens - done);
    const int64_t first = chunk.first_position + done;
    uint8_t* keys_host = host;
    float* scales_host = reinterpret_cast<float*>(host + AlignUp(piece * row, 16));
    // Copy page by page: within a page, rows and scales are contiguous.
    for (int64_t s = 0; s < piece;) {
      const int64_t pos = first + s;
      const int64_t page = pos / geo_.tokens_per_page;
      const int64_t in_page = pos - page * geo_.tokens_per_page;
      const int64_t run = std::min(piece - s, geo_.tokens_per_page - in_page);
      const uint8_t* base =
          device_->arena() + static_cast<int64_t>(l.key_pages[page]) * kPageBytes;
      err = cudaMemcpyAsync(keys_host + s * row, base + in_page * row, run * row,
                            cudaMemcpyDeviceToHost, stream);
      if (err != cudaSuccess) return CudaError(err, "Matches download");
      if (fp8) {
        err = cudaMemcpyAsync(scales_host + s,
                              base + geo_.ScalesOffset() + in_page * 4, run * 4,
                              cudaMemcpyDeviceToHost, stream);
        if (err != cudaSuccess) return CudaError(err, "Matches download");
      }
      s += run;
    }
    err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess) return CudaError(err, "Matches");
    const uint8_t* want = chunk.keys.data() + done * row;
    if (fp8) {
      if (std::memcmp(scales_host, chunk.scales.data() + done, piece * 4) != 0) {
        return false;
      }
      for (int64_t s = 0; s < piece; ++s) {
        const uint8_t flip = std::signbit(scales_host[s]) ? 0x80 : 0x00;
        for (int64_t d = 0; d < row; ++d) {
          if ((keys_host[s * row + d] ^ flip) != want[s * row + d]) return false;
        }
      }
    } else if (std::memcmp(keys_host, want, piece * row) != 0) {
      return false;
    }
    done += piece;
  }
  return true;
}

}  // namespace hisa::cuda
