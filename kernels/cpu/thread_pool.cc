#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HISA_CPU_RELAX() _mm_pause()
#else
#define HISA_CPU_RELAX() std::this_thread::yield()
#endif

namespace hisa::cpu {
namespace {

// How long an idle thread polls before blocking. Long enough to bridge the
// gap between the phases of one Select, short enough not to steal a core
// from anyone else for long.
constexpr auto kSpin = std::chrono::microseconds(50);

// Spins until pred() holds or kSpin elapses; returns pred().
template <typename Pred>
bool SpinUntil(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    HISA_CPU_RELAX();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) {
      return pred();
    }
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  const int workers = std::max(0, num_threads - 1);
  workers_.reserve(workers);
  for (int i = 0; i < workers; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t ThreadPool::Drain(Job& job) {
  int64_t ran = 0;
  for (int64_t i = job.next.fetch_add(1, std::memory_order_relaxed); i < job.n;
       i = job.next.fetch_add(1, std::memory_order_relaxed)) {
    job.fn(i);
    ++ran;
  }
  return ran;
}

void ThreadPool::DequeueLocked(Job* job) {
  auto it = std::find(queue_.begin(), queue_.end(), job);
  if (it != queue_.end()) queue_.erase(it);
}

void ThreadPool::Release(Job& job, int64_t count) {
  if (job.refs.fetch_sub(count, std::memory_order_acq_rel) == count) {
    // Taking the lock orders this wake-up after the caller's check of refs
    // or before it; the job itself is not touched again.
    std::lock_guard<std::mutex> lock(mu_);
    done_cv_.notify_all();
  }
}

void ThreadPool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (stop_) return;
    if (queue_.empty()) {
      const uint64_t seen = generation_.load(std::memory_order_acquire);
      lock.unlock();
      SpinUntil(
          [&] { return generation_.load(std::memory_order_relaxed) != seen; });
      lock.lock();
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      continue;
    }
    Job* job = queue_.front();
    job->refs.fetch_add(1, std::memory_order_relaxed);
    lock.unlock();
    const int64_t ran = Drain(*job);
    lock.lock();
    // Every index is handed out: later workers need not look at it.
    DequeueLocked(job);
    lock.unlock();
    Release(*job, ran + 1);
    lock.lock();
  }
}

void ThreadPool::ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn) {
  if (n <= 0) return;
  if (n == 1 || workers_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  Job job(fn, n);
  job.refs.store(n, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(&job);
    generation_.fetch_add(1, std::memory_order_release);
  }
  const int64_t wake =
      std::min<int64_t>(n - 1, static_cast<int64_t>(workers_.size()));
  for (int64_t i = 0; i < wake; ++i) work_cv_.notify_one();

  const int64_t ran = Drain(job);
  {
    std::lock_guard<std::mutex> lock(mu_);
    DequeueLocked(&job);
  }
  if (job.refs.fetch_sub(ran, std::memory_order_acq_rel) == ran) return;
  auto done = [&] { return job.refs.load(std::memory_order_acquire) == 0; };
  if (SpinUntil(done)) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, done);
}

}  // namespace hisa::cpu
