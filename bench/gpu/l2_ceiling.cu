// Ceiling of the token stage's data path: bulk copies (cp.async.bulk, the
// copy engine the TMA token kernel uses) from global into shared memory,
// each CTA's thread 0 keeping `stages` tiles of `tile` bytes in flight, the
// source either L2-resident (a buffer much smaller than the L2) or not
// (much larger). Nothing reads the copied tiles: this is the rate at which
// the SMs can be fed, for a given number of bytes in flight per SM.
//
// The causal token stage streams every candidate key of every row from L2
// (16.5 KB per 128-slot tile, 3 stages per CTA, 2 CTAs per SM): its tile
// rate against this table says whether more bytes in flight, or fewer
// bytes, are what it needs.
//
// A second table splits each tile into `copies` bulk copies issued by as
// many threads, as the block kernel copies its block means (one 256-byte
// row per thread, 256 per 64 KB tile, into rows padded to 272 bytes): it
// says what copy size the copy engine needs to reach the same rate.
//
//   hisa_l2_bench [--reps=20]
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/gpu/cuda_ok.h"
#include "kernels/cuda/select_primitives.cuh"

namespace hisa::cuda {
namespace {

constexpr int kMaxStages = 16;

// Each CTA copies `tiles` tiles: tile i of CTA c is source tile
// (c + i * gridDim.x) % num_src_tiles, so that concurrent CTAs read
// different lines (as different rows' candidate blocks do).
__global__ void BulkReadKernel(const uint8_t* src, int64_t num_src_tiles,
                               int tile_bytes, int stages, int tiles,
                               uint32_t* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + stages * tile_bytes);
  if (threadIdx.x != 0) return;
  for (int s = 0; s < stages; ++s) MbarInit(full + s, 1);
  MbarFenceInit();
  auto issue = [&](int i, int s) {
    const int64_t t = (blockIdx.x + int64_t{i} * gridDim.x) % num_src_tiles;
    MbarArriveExpectTx(full + s, static_cast<uint32_t>(tile_bytes));
    BulkLoad(smem + s * tile_bytes, src + t * tile_bytes,
             static_cast<uint32_t>(tile_bytes), full + s);
  };
  for (int i = 0; i < stages && i < tiles; ++i) issue(i, i);
  int s = 0;
  uint32_t phase = 0;
  for (int i = 0; i < tiles; ++i) {
    MbarWait(full + s, phase);
    if (i + stages < tiles) issue(i + stages, s);
    if (++s == stages) {
      s = 0;
      phase ^= 1u;
    }
  }
  // Keep the copies observable.
  if (blockIdx.x == 0) *sink = smem[tile_bytes - 1];
}

// Tiles of tile_bytes in `copies` equal pieces, piece i issued by thread i
// to its own row of pitch `pitch` bytes (>= the piece), all completing on
// the stage's barrier (one arrival per piece).
__global__ void BulkPiecesKernel(const uint8_t* src, int64_t num_src_tiles,
                                 int tile_bytes, int copies, int pitch,
                                 int stages, int tiles, uint32_t* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int stage_bytes = copies * pitch;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + stages * stage_bytes);
  const int piece = tile_bytes / copies;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) MbarInit(full + s, copies);
    MbarFenceInit();
  }
  __syncthreads();
  auto issue = [&](int i, int s) {
    if (threadIdx.x >= copies) return;
    const int64_t t = (blockIdx.x + int64_t{i} * gridDim.x) % num_src_tiles;
    MbarArriveExpectTx(full + s, static_cast<uint32_t>(piece));
    BulkLoad(smem + s * stage_bytes + threadIdx.x * pitch,
             src + t * tile_bytes + threadIdx.x * piece,
             static_cast<uint32_t>(piece), full + s);
  };
  for (int i = 0; i < stages && i < tiles; ++i) issue(i, i);
  int s = 0;
  uint32_t phase = 0;
  for (int i = 0; i < tiles; ++i) {
    MbarWait(full + s, phase);
    __syncthreads();  // every thread saw this phase before the next
    if (i + stages < tiles) issue(i + stages, s);
    if (++s == stages) {
      s = 0;
      phase ^= 1u;
    }
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *sink = smem[pitch - 1];
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace
}  // namespace hisa::cuda

int main(int argc, char** argv) {
  using namespace hisa::cuda;
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--reps=", 7) == 0) {
      reps = std::atoi(argv[i] + 7);
    } else {
      std::fprintf(stderr, "usage: hisa_l2_bench [--reps=20]\n");
      return 1;
    }
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("device %s, %d SMs, L2 %.0f MB\n", prop.name, sms,
              prop.l2CacheSize / 1e6);
  CUDA_OK(cudaFuncSetAttribute(BulkReadKernel,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               200 * 1024));
  // L2-resident: a quarter of the L2. Not resident: 2 GB.
  const int64_t l2_bytes = prop.l2CacheSize / 4 / 16384 * 16384;
  const int64_t big_bytes = int64_t{2} << 30;
  uint8_t* src = nullptr;
  uint32_t* sink = nullptr;
  CUDA_OK(cudaMalloc(&src, big_bytes));
  CUDA_OK(cudaMalloc(&sink, 4));
  CUDA_OK(cudaMemset(src, 1, big_bytes));
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  // GB/s of `launch(src_tiles, tiles)` (each of `grid` CTAs copies `tiles`
  // tiles of tile_bytes out of src_tiles), from the L2-resident buffer
  // ([1]) and from HBM ([0]): the median of `reps` runs after two.
  auto rates = [&](int tile_bytes, int grid, auto launch) {
    std::array<double, 2> gbps{};
    for (int resident = 1; resident >= 0; --resident) {
      const int64_t bytes = resident ? l2_bytes : big_bytes;
      const int64_t src_tiles = bytes / tile_bytes;
      // About 4 GB per launch (each byte of the L2 buffer read many times).
      const int tiles =
          static_cast<int>((int64_t{4} << 30) / tile_bytes / grid);
      std::vector<double> t;
      for (int r = 0; r < reps + 2; ++r) {
        CUDA_OK(cudaEventRecord(e0));
        launch(src_tiles, tiles);
        CUDA_OK(cudaEventRecord(e1));
        CUDA_OK(cudaEventSynchronize(e1));
        float ms = 0;
        CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 2) t.push_back(ms);
      }
      CUDA_OK(cudaGetLastError());
      const double moved = double{1} * tiles * grid * tile_bytes;
      gbps[resident] = moved / (Median(t) * 1e-3) / 1e9;
    }
    return gbps;
  };
  struct Config {
    int ctas_per_sm, stages, tile_bytes;
  };
  // The causal token kernel: 2 x 3 x 16 KB; the prefill and decode one:
  // 3 x 3 x 16 KB; then deeper pipelines and larger tiles.
  const Config configs[] = {{2, 3, 16384}, {3, 3, 16384}, {2, 4, 16384},
                            {2, 6, 16384}, {1, 12, 16384}, {2, 3, 32768},
                            {2, 4, 24576}, {4, 3, 16384}};
  std::printf("%-8s %-6s %-8s %-9s %12s %12s\n", "CTAs/SM", "stages",
              "tile KB", "KB/SM", "L2 GB/s", "HBM GB/s");
  for (const Config& c : configs) {
    const int smem = c.stages * c.tile_bytes + kMaxStages * 8;
    const int grid = c.ctas_per_sm * sms;
    const auto gbps = rates(c.tile_bytes, grid, [&](int64_t src_tiles,
                                                    int tiles) {
      BulkReadKernel<<<grid, 32, smem>>>(src, src_tiles, c.tile_bytes,
                                         c.stages, tiles, sink);
    });
    std::printf("%-8d %-6d %-8d %-9d %12.0f %12.0f\n", c.ctas_per_sm,
                c.stages, c.tile_bytes / 1024,
                c.ctas_per_sm * c.stages * c.tile_bytes / 1024, gbps[1],
                gbps[0]);
    std::printf("{\"kind\":\"ceiling\",\"name\":\"bulk_read\",\"ctas_per_sm\":%d,"
                "\"stages\":%d,\"tile_bytes\":%d,\"l2_GBps\":%.0f,"
                "\"hbm_GBps\":%.0f}\n",
                c.ctas_per_sm, c.stages, c.tile_bytes, gbps[1], gbps[0]);
  }
  // The block kernel's form: 64 KB tiles (128 blocks x 2 x 256 B), 2 CTAs
  // per SM, one stage, in pieces of 256 B (its per-thread rows) down to 4
  // pieces of 16 KB.
  CUDA_OK(cudaFuncSetAttribute(BulkPiecesKernel,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               200 * 1024));
  struct Pieces {
    int ctas_per_sm, stages, tile_bytes, copies, pitch;
  };
  const Pieces pieces[] = {{2, 1, 65536, 256, 272}, {2, 1, 65536, 256, 256},
                           {2, 1, 65536, 64, 1024}, {2, 1, 65536, 16, 4096},
                           {2, 1, 65536, 4, 16384}, {2, 2, 32768, 128, 272}};
  std::printf("\n%-8s %-6s %-8s %-7s %-6s %12s %12s\n", "CTAs/SM", "stages",
              "tile KB", "copies", "pitch", "L2 GB/s", "HBM GB/s");
  for (const Pieces& c : pieces) {
    const int smem = c.stages * c.copies * c.pitch + kMaxStages * 8;
    const int grid = c.ctas_per_sm * sms;
    const auto gbps = rates(c.tile_bytes, grid, [&](int64_t src_tiles,
                                                    int tiles) {
      BulkPiecesKernel<<<grid, 256, smem>>>(src, src_tiles, c.tile_bytes,
                                            c.copies, c.pitch, c.stages,
                                            tiles, sink);
    });
    std::printf("%-8d %-6d %-8d %-7d %-6d %12.0f %12.0f\n", c.ctas_per_sm,
                c.stages, c.tile_bytes / 1024, c.copies, c.pitch, gbps[1],
                gbps[0]);
    std::printf("{\"kind\":\"ceiling\",\"name\":\"bulk_pieces\","
                "\"ctas_per_sm\":%d,\"stages\":%d,\"tile_bytes\":%d,"
                "\"copies\":%d,\"pitch\":%d,\"l2_GBps\":%.0f,"
                "\"hbm_GBps\":%.0f}\n",
                c.ctas_per_sm, c.stages, c.tile_bytes, c.copies, c.pitch,
                gbps[1], gbps[0]);
  }
  CUDA_OK(cudaFree(src));
  CUDA_OK(cudaFree(sink));
  return 0;
}
