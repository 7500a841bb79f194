// A HostParallel (kernels/host_parallel.h) for tests: every chunk on a
// thread of its own, all started at once, so that chunks really overlap;
// counts the chunks it ran.
#ifndef HISA_TESTS_KERNELS_THREAD_PER_CHUNK_H_
#define HISA_TESTS_KERNELS_THREAD_PER_CHUNK_H_

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "kernels/host_parallel.h"

namespace hisa::testing_support {

class ThreadPerChunk final : public HostParallel {
 public:
  void ParallelFor(int64_t n, int64_t grain,
                   absl::FunctionRef<void(int64_t, int64_t)> fn) override {
    grain = std::max<int64_t>(1, grain);
    std::vector<std::thread> threads;
    for (int64_t begin = 0; begin < n; begin += grain) {
      threads.emplace_back(
          [&fn, begin, n, grain] { fn(begin, std::min(n, begin + grain)); });
    }
    chunks += static_cast<int64_t>(threads.size());
    for (std::thread& t : threads) t.join();
  }

  int64_t chunks = 0;
};

}  // namespace hisa::testing_support

#endif  // HISA_TESTS_KERNELS_THREAD_PER_CHUNK_H_
