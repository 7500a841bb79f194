// Cross-stream batching of Select rows: rows that arrive on concurrent
// Select streams within a short window run as ONE Engine::Select call,
// because batched decode is where the backends get their throughput.
//
//   hisa::SelectBatcher batcher(engine, &executor, {/*max_rows=*/1024,
//                               /*max_wait=*/absl::Microseconds(500),
//                               /*max_concurrent_batches=*/2},
//                               &metrics);
//   batcher.Submit({rows, results, &cancelled, [] { /* results filled */ }});
//
// Policy (adaptive, like Triton's dynamic batcher without a fixed delay):
//   - With no batch running, a job is dispatched at once: a message arriving
//     alone at an idle engine never waits for the window.
//   - While batches run, jobs queue. The queue is dispatched as one batch
//     (whole jobs, up to max_rows rows; a single job larger than max_rows
//     forms a batch of its own) as soon as any of these holds:
//       * no batch is running (the previous one just finished),
//       * the queue holds >= max_rows rows,
//       * the oldest queued job has waited max_wait,
//     and fewer than max_concurrent_batches batches are running.
//   So max_wait bounds how long a row waits behind a running batch before it
//   is given its own concurrent batch; max_rows bounds a batch's size.
//
// Contract of Submit: `rows` and `results` (same size) must stay valid until
// `done` runs. `done` runs exactly once, on an executor thread (on the
// submitting thread once the executor has stopped), after every result is
// filled: engine results, or CANCELLED for a job whose `cancelled` flag was
// set before its batch started, or UNAVAILABLE for a job submitted after
// Stop. Jobs are never split across batches.
// Thread safety: Submit may be called from any thread. Stop is idempotent;
// after it, Submit completes jobs with UNAVAILABLE; jobs already queued still
// run. The destructor calls Stop.
#ifndef HISA_SERVER_SELECT_BATCHER_H_
#define HISA_SERVER_SELECT_BATCHER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "server/executor.h"

namespace hisa {

class ServiceMetrics;

struct SelectBatcherOptions {
  int max_rows = 1024;
  absl::Duration max_wait = absl::Microseconds(500);
  int max_concurrent_batches = 2;
};

struct SelectJob {
  absl::Span<const QueryRow> rows;
  absl::Span<RowResult> results;
  // Checked just before the job's batch runs; may be null.
  const std::atomic<bool>* cancelled = nullptr;
  absl::AnyInvocable<void() &&> done;
};

class SelectBatcher {
 public:
  // engine and executor must outlive the batcher; metrics may be null.
  SelectBatcher(Engine* engine, Executor* executor,
                SelectBatcherOptions options, ServiceMetrics* metrics);
  ~SelectBatcher();

  SelectBatcher(const SelectBatcher&) = delete;
  SelectBatcher& operator=(const SelectBatcher&) = delete;

  void Submit(SelectJob job);
  // Stops the timer thread after dispatching what is queued; waits for
  // running batches to finish.
  void Stop();

  const SelectBatcherOptions& options() const { return options_; }
  // Batches dispatched so far (tests).
  int64_t batches_dispatched() const;

 private:
  struct Pending {
    SelectJob job;
    absl::Time enqueued;
  };
  using Batch = std::vector<Pending>;

  // Moves every dispatchable batch out of the queue into `out`.
  void TakeReadyLocked(absl::Time now, std::vector<Batch>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Launch(std::vector<Batch> batches);
  void RunBatch(Batch batch);
  void TimerLoop();
  // Ends a batch: dispatches what became ready and wakes the waiters.
  void BatchEnded();

  Engine* const engine_;
  Executor* const executor_;
  const SelectBatcherOptions options_;
  ServiceMetrics* const metrics_;

  mutable std::mutex mu_;
  // Wakes the timer thread (queue or running count changed, or stopping)
  // and Stop (a batch ended).
  std::condition_variable cv_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t batches_dispatched_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread timer_thread_;
  std::mutex join_mu_;
};

}  // namespace hisa

#endif  // HISA_SERVER_SELECT_BATCHER_H_
