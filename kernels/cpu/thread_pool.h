// A fixed-size fork-join thread pool for the CPU backend: one per backend,
// threads created at construction and never per call.
//
//   hisa::cpu::ThreadPool pool(/*num_threads=*/2);   // caller + 1 worker
//   pool.ParallelFor(num_units, [&](int64_t i) { RunUnit(i); });
//
// Contract:
// - ThreadPool(n): n >= 1 is the total parallelism of one ParallelFor,
//   counting the calling thread, so n - 1 worker threads are started.
// - ParallelFor(n, fn) calls fn(i) exactly once for every i in [0, n), on the
//   calling thread and on idle workers (indices are handed out dynamically,
//   so uneven units balance), and returns when every call has returned. The
//   calling thread always takes part, so a call makes progress even when
//   every worker is busy with other callers' jobs. n <= 1 runs inline.
// - fn must not throw and must not call ParallelFor on the same pool.
// - Thread safety: ParallelFor may be called from many threads at once; jobs
//   are served in arrival order. The destructor must not race with calls.
//
// Idle workers spin for a few microseconds before sleeping on a condition
// variable: a Select runs several short fork-join phases back to back, and a
// futex wake-up per phase would cost more than a small phase itself.
#ifndef HISA_KERNELS_CPU_THREAD_POOL_H_
#define HISA_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace hisa::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Total parallelism of one ParallelFor (workers + the caller).
  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn);

 private:
  struct Job {
    absl::FunctionRef<void(int64_t)> fn;
    int64_t n;
    std::atomic<int64_t> next{0};
    // Units not yet finished plus workers still holding the job. The caller
    // may destroy the job once this reaches 0; a worker's last access to
    // the job is its own decrement.
    std::atomic<int64_t> refs{0};

    Job(absl::FunctionRef<void(int64_t)> f, int64_t count) : fn(f), n(count) {}
  };

  // Runs indices of `job` until none are left; returns how many it ran.
  static int64_t Drain(Job& job);
  void WorkerLoop();
  // Removes `job` from the queue if it is still there. Requires mu_.
  void DequeueLocked(Job* job);
  // Drops `count` references to `job`; wakes the caller on the last one.
  void Release(Job& job, int64_t count);

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Job*> queue_;  // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  // Bumped on every enqueue, read without the lock by spinning workers.
  std::atomic<uint64_t> generation_{0};
  std::vector<std::thread> workers_;
};

}  // namespace hisa::cpu

#endif  // HISA_KERNELS_CPU_THREAD_POOL_H_
