#include "server/executor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace hisa {

Executor::Executor(int num_threads, absl::Duration idle_spin)
    : idle_spin_(std::max(idle_spin, absl::ZeroDuration())) {
  const int n = std::max(1, num_threads);
  threads_.reserve(n);
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

Executor::~Executor() { Stop(); }

bool Executor::Schedule(absl::AnyInvocable<void() &&>&& task) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    queue_.push_back(std::move(task));
    queued_.fetch_add(1, std::memory_order_release);
    // A polling worker takes a lone task (it re-checks the queue under mu_
    // before it sleeps, so no wake-up is lost); any more need a sleeper.
    wake = !spinning_ || queue_.size() > 1;
  }
  if (wake) work_cv_.notify_one();
  return true;
}

void Executor::ParallelFor(int64_t n, int64_t grain,
                           absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t helpers = std::min<int64_t>(chunks - 1, num_threads() - 1);
  if (helpers <= 0) {
    hisa::ParallelFor(/*parallel=*/nullptr, n, grain, fn);
    return;
  }
  // Shared with the helper tasks, which may outlive this call (a late one
  // only reads `next`); `fn` is called only for chunks claimed before the
  // last one completes, while this call still waits.
  struct State {
    std::atomic<int64_t> next{0};
    int64_t n = 0, grain = 0, chunks = 0;
    absl::FunctionRef<void(int64_t, int64_t)>* fn = nullptr;
    std::mutex mu;
    std::condition_variable all_done;
    int64_t done = 0;  // guarded by mu
  };
  auto state = std::make_shared<State>();
  state->n = n;
  state->grain = grain;
  state->chunks = chunks;
  state->fn = &fn;
  auto run = [](State& s) {
    int64_t ran = 0;
    for (int64_t c = s.next.fetch_add(1); c < s.chunks;
         c = s.next.fetch_add(1)) {
      const int64_t begin = c * s.grain;
      (*s.fn)(begin, std::min(s.n, begin + s.grain));
      ++ran;
    }
    if (ran == 0) return;
    std::lock_guard<std::mutex> lock(s.mu);
    s.done += ran;
    if (s.done == s.chunks) s.all_done.notify_all();
  };
  for (int64_t i = 0; i < helpers; ++i) {
    if (!Schedule([state, run] { run(*state); })) break;
  }
  run(*state);
  std::unique_lock<std::mutex> lock(state->mu);
  state->all_done.wait(lock, [&] { return state->done == state->chunks; });
}

void Executor::Stop() {
  std::lock_guard<std::mutex> join_lock(join_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void Executor::Spin() {
  const auto until = std::chrono::steady_clock::now() +
                     absl::ToChronoNanoseconds(idle_spin_);
  for (int i = 1; queued_.load(std::memory_order_acquire) == 0; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
    if (i % 64 == 0) {
      if (std::chrono::steady_clock::now() >= until) return;
      std::this_thread::yield();  // let other runnable threads have the core
    }
  }
}

void Executor::WorkerLoop() {
  while (true) {
    absl::AnyInvocable<void() &&> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (queue_.empty() && !stopping_ && !spinning_ &&
          idle_spin_ > absl::ZeroDuration()) {
        spinning_ = true;
        lock.unlock();
        Spin();
        lock.lock();
        spinning_ = false;
      }
      work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      // Stopping still drains the queue: queued work may hold RPCs open.
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    std::move(task)();
  }
}

}  // namespace hisa
