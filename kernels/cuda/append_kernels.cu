#include "kernels/cuda/append_kernels.h"

#include <cuda_bf16.h>

#include "kernels/cuda/select_primitives.cuh"

namespace hisa::cuda {
namespace {

// One thread per 16-byte chunk of key bytes.
__global__ void ScatterKeysKernel(AppendLaunch a) {
  const int chunks_per_token = a.geo.row_bytes / 16;
  const int64_t total = a.n * chunks_per_token;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
       idx < total; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx / chunks_per_token;
    const int chunk = static_cast<int>(idx % chunks_per_token);
    const int64_t pos = a.first_pos + i;
    const int64_t page_abs = pos / a.geo.tokens_per_page;
    const int64_t in_page = pos - page_abs * a.geo.tokens_per_page;
    uint8_t* page =
        a.arena +
        static_cast<int64_t>(a.key_pages[page_abs - a.first_key_page]) *
            kPageBytes;
    uint4 v = reinterpret_cast<const uint4*>(a.keys)[idx];
    if (a.geo.format == kFormatFp8) {
      const float scale = a.scales[i];
      if (signbit(scale)) {
        // Negative scale: store -x with |scale| semantics (select_layout.h).
        v.x ^= 0x80808080u;
        v.y ^= 0x80808080u;
        v.z ^= 0x80808080u;
        v.w ^= 0x80808080u;
      }
      if (chunk == 0) {
        reinterpret_cast<float*>(page + a.geo.ScalesOffset())[in_page] = scale;
      }
    }
    reinterpret_cast<uint4*>(page + in_page * a.geo.row_bytes)[chunk] = v;
  }
}

__device__ float DequantChunkValue(const AppendLaunch& a, int64_t i, int d) {
  const uint8_t* row = a.keys + i * a.geo.row_bytes;
  switch (a.geo.format) {
    case kFormatFp8:
      return Fp8ToFloat(row[d]) * a.scales[i];
    case kFormatBf16:
      return Bf16BitsToFloat(reinterpret_cast<const uint16_t*>(row)[d]);
    default:
      return reinterpret_cast<const float*>(row)[d];
  }
}

// One block of threads per touched block; thread d owns dimension d.
__global__ void UpdateSummariesKernel(AppendLaunch a, int64_t first_block) {
  const PageGeometry& geo = a.geo;
  const int64_t blk = first_block + blockIdx.x;
  const int64_t blk_start = blk * geo.block_size;
  const int64_t lo = blk_start > a.first_pos ? blk_start : a.first_pos;
  const int64_t end = a.first_pos + a.n;
  const int64_t hi =
      blk_start + geo.block_size < end ? blk_start + geo.block_size : end;
  const int64_t prior = lo - blk_start;  // tokens of this block stored before
  const int64_t page_abs = blk / geo.blocks_per_page;
  const int64_t in_page = blk - page_abs * geo.blocks_per_page;
  uint8_t* page =
      a.arena +
      static_cast<int64_t>(a.summary_pages[page_abs - a.first_summary_page]) *
          kPageBytes;
  float* sums = reinterpret_cast<float*>(page + geo.SumsOffset()) +
                in_page * geo.head_dim;
  __nv_bfloat16* mean_hi =
      reinterpret_cast<__nv_bfloat16*>(page) + in_page * geo.head_dim;
  __nv_bfloat16* mean_lo =
      reinterpret_cast<__nv_bfloat16*>(page + geo.MeanLoOffset()) +
      in_page * geo.head_dim;
  int32_t* counts = reinterpret_cast<int32_t*>(page + geo.CountsOffset());
  const bool is_max = geo.pooling == kPoolMax;
  const int64_t count = prior + (hi - lo);
  for (int d = threadIdx.x; d < geo.head_dim; d += blockDim.x) {
    float acc = prior > 0 ? sums[d] : (is_max ? -INFINITY : 0.f);
    for (int64_t s = lo; s < hi; ++s) {
      const float v = DequantChunkValue(a, s - a.first_pos, d);
      acc = is_max ? fmaxf(acc, v) : acc + v;
    }
    sums[d] = acc;
    const float rep = is_max ? acc : acc / static_cast<float>(count);
    const __nv_bfloat16 h = __float2bfloat16_rn(rep);
    mean_hi[d] = h;
    mean_lo[d] = __float2bfloat16_rn(rep - __bfloat162float(h));
  }
  if (threadIdx.x == 0) counts[in_page] = static_cast<int32_t>(count);
}

}  // namespace

cudaError_t LaunchAppend(const AppendLaunch& a, cudaStream_t stream) {
  if (a.n <= 0) return cudaSuccess;
  const int64_t chunks = a.n * (a.geo.row_bytes / 16);
  const int threads = 256;
  int64_t blocks = (chunks + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;
  ScatterKeysKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t first_block = a.first_pos / a.geo.block_size;
  const int64_t last_block = (a.first_pos + a.n - 1) / a.geo.block_size;
  const int summary_threads = a.geo.head_dim < 32 ? 32 : a.geo.head_dim;
  UpdateSummariesKernel<<<static_cast<unsigned>(last_block - first_block + 1),
                          summary_threads, 0, stream>>>(a, first_block);
  return cudaGetLastError();
}

}  // namespace hisa::cuda
