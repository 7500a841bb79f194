// CUDA_OK(expr): for the GPU benchmark programs, which stop at the first
// CUDA error: prints where and what, then exits with status 2.
#ifndef HISA_BENCH_GPU_CUDA_OK_H_
#define HISA_BENCH_GPU_CUDA_OK_H_

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

#define CUDA_OK(expr)                                                     \
  do {                                                                    \
    cudaError_t cuda_ok_err_ = (expr);                                    \
    if (cuda_ok_err_ != cudaSuccess) {                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr,   \
                   cudaGetErrorString(cuda_ok_err_));                     \
      std::exit(2);                                                       \
    }                                                                     \
  } while (0)

#endif  // HISA_BENCH_GPU_CUDA_OK_H_
