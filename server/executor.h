// A small fixed-size thread pool that runs the engine work of the service,
// so that gRPC reactors (which must never block) only translate and hand off.
//
//   hisa::Executor executor(/*num_threads=*/4,
//                           /*idle_spin=*/absl::Microseconds(500));
//   if (!executor.Schedule([&] { engine->Append(chunk); })) { /* stopped */ }
//   executor.Stop();  // runs what is queued, then joins
//
// Contract:
//   Schedule queues `task` to run once on one of the pool's threads, in FIFO
//   order of Schedule calls (tasks may run concurrently with each other).
//   It never blocks on running tasks. After Stop has begun it returns false
//   and leaves `task` untouched (not moved from), so the caller can still run
//   or fail it.
//   Stop runs every task queued before it, joins the threads and is
//   idempotent; the destructor calls it. Stop must not be called from a task.
//   It waits out a poll in progress (at most idle_spin, below).
//   ParallelFor(n, grain, fn) calls fn(begin, end) over [0, n) in chunks of
//   `grain`, on the calling thread and on up to num_threads() - 1 helper
//   tasks, and returns when every chunk has run. Chunks are claimed from a
//   shared counter, so a helper that starts late (its thread busy with other
//   work) finds nothing left and the caller never waits for it: callable
//   from a task, never deadlocks, and runs inline when there is one chunk
//   or one thread.
//   idle_spin: a worker that runs out of work first polls the queue for this
//   long before it sleeps (one worker at a time), so that work scheduled
//   onto an idle pool, a lone Select reaching an idle engine, starts within
//   a microsecond instead of after a thread wake-up (tens of microseconds
//   in a VM). Zero: sleep at once. Costs one core while it polls.
// Thread safety: Schedule and ParallelFor may be called from any thread,
// including tasks.
#ifndef HISA_SERVER_EXECUTOR_H_
#define HISA_SERVER_EXECUTOR_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "kernels/host_parallel.h"

namespace hisa {

// Its ParallelFor is also the engine's HostParallel (kernels/host_parallel.h).
class Executor final : public HostParallel {
 public:
  explicit Executor(int num_threads,
                    absl::Duration idle_spin = absl::ZeroDuration());
  ~Executor() override;

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  bool Schedule(absl::AnyInvocable<void() &&>&& task);
  void ParallelFor(int64_t n, int64_t grain,
                   absl::FunctionRef<void(int64_t, int64_t)> fn) override;
  void Stop();

  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkerLoop();
  // Polls queued_ for up to idle_spin_ (Stop waits out a poll in
  // progress: at most idle_spin_).
  void Spin();

  // std::mutex, not absl::Mutex, in all of server/: Debian's prebuilt
  // Abseil is not TSan-instrumented, so ThreadSanitizer cannot see
  // absl::Mutex synchronisation and would report false races.
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool spinning_ ABSL_GUARDED_BY(mu_) = false;  // a worker polls queued_
  // queue_.size(), readable without mu_ by the polling worker (Spin).
  std::atomic<int64_t> queued_{0};
  const absl::Duration idle_spin_;
  std::vector<std::thread> threads_;
  std::mutex join_mu_;  // serialises concurrent Stop calls
};

}  // namespace hisa

#endif  // HISA_SERVER_EXECUTOR_H_
