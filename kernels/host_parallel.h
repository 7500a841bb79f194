// Host-side parallel loops for the request path of a Select batch: the
// engine's checks of the rows, the CUDA backend's packing of the queries
// into its upload image and its copy of the downloaded outputs into the
// rows' results. Each of these touches every query or output byte once
// (8 MB for 1024 rows of 64 fp8 heads) and is bound by one core's memory
// bandwidth when run on one thread; the server lends its executor's idle
// threads (server/executor.h implements this interface).
//
//   void Work(HostParallel* parallel) {  // null: run inline
//     ParallelFor(parallel, rows.size(), /*grain=*/32,
//                 [&](int64_t begin, int64_t end) { ... });
//   }
//
// Contract of ParallelFor(n, grain, fn): calls fn(begin, end) exactly once
// for each chunk [c * grain, min(n, (c + 1) * grain)) of [0, n), possibly
// concurrently on several threads, and returns when every chunk has run.
// fn must be safe to run concurrently with itself on disjoint chunks.
#ifndef HISA_KERNELS_HOST_PARALLEL_H_
#define HISA_KERNELS_HOST_PARALLEL_H_

#include <algorithm>
#include <cstdint>

#include "absl/functional/function_ref.h"

namespace hisa {

class HostParallel {
 public:
  virtual ~HostParallel() = default;
  virtual void ParallelFor(int64_t n, int64_t grain,
                           absl::FunctionRef<void(int64_t, int64_t)> fn) = 0;
};

// parallel->ParallelFor, or the chunks in order on this thread when
// `parallel` is null.
inline void ParallelFor(HostParallel* parallel, int64_t n, int64_t grain,
                        absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (parallel != nullptr) {
    parallel->ParallelFor(n, grain, fn);
    return;
  }
  grain = std::max<int64_t>(1, grain);
  for (int64_t begin = 0; begin < n; begin += grain) {
    fn(begin, std::min(n, begin + grain));
  }
}

}  // namespace hisa

#endif  // HISA_KERNELS_HOST_PARALLEL_H_
