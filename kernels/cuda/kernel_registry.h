// Host-side handles of the instantiated selection kernels, so that the
// launcher (select_plan.cc) is plain C++ and launches through
// cudaLaunchKernel. Each handle is (kernel function, dynamic shared memory
// bytes); `fn` is null for an unsupported parameter combination.
//
//   KernelHandle h = TokenKernelFp8(/*mt=*/4, /*ks=*/4, /*rows=*/2);
//   void* args[] = {&buffers, &items, &key_map};
//   cudaLaunchKernel(h.fn, grid, kSelectThreads, args, h.smem_bytes, stream);
//
// Every kernel takes (SelectBuffers, const WorkItem*, CUtensorMap) (the
// arena's tensor map, read by the bulk-copy kernels only) and runs
// kSelectThreads threads per block. The first call for a handle raises the
// kernel's dynamic shared memory limit (thread-safe, once per process and
// kernel).
#ifndef HISA_KERNELS_CUDA_KERNEL_REGISTRY_H_
#define HISA_KERNELS_CUDA_KERNEL_REGISTRY_H_

namespace hisa::cuda {

struct KernelHandle {
  const void* fn = nullptr;
  int smem_bytes = 0;
};

// Token refinement + top-k on warpgroup MMA: FP8, D = 128, 64 query heads;
// tma: tiles by bulk tensor copies (takes the arena's CUtensorMap).
KernelHandle TokenKernelWgmma(int rows, bool tma);
// Token scoring of slot-score rows with bulk tensor copies
// (tma_token_kernel.cuh), the scores in the groups' device scratch or
// (pooled, one work item per row) in a slice of the plan's score pool.
KernelHandle TokenKernelTma(bool pooled);
// Token refinement + top-k, FP8 queries and keys: mt in {1, 2, 4} m16 tiles
// of heads (4: 64 heads per pass, several passes for more), ks = D / 32 in
// {2, 4}, rows = rows per group in {1, 2}.
KernelHandle TokenKernelFp8(int mt, int ks, int rows);
// Block scoring on bf16 hi/lo block means: mt in {1, 2, 4, 8} m16 tiles of
// the query's heads (q_heads / 16), ks = D / 16 in {4, 8}.
KernelHandle BlockKernelBf16(int mt, int ks, int rows);
// Any formats and head_dim.
KernelHandle TokenKernelGeneric(int rows);
KernelHandle BlockKernelGeneric(int rows);

}  // namespace hisa::cuda

#endif  // HISA_KERNELS_CUDA_KERNEL_REGISTRY_H_
