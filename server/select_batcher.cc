#include "server/select_batcher.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "server/service_metrics.h"

namespace hisa {
namespace {

void FailJob(SelectJob& job, const absl::Status& status) {
  for (RowResult& result : job.results) {
    result = RowResult();
    result.status = status;
  }
}

absl::Status StoppedStatus() {
  return absl::UnavailableError("the server is shutting down");
}

}  // namespace

SelectBatcher::SelectBatcher(Engine* engine, Executor* executor,
                             SelectBatcherOptions options,
                             ServiceMetrics* metrics)
    : engine_(engine),
      executor_(executor),
      options_([&] {
        options.max_rows = std::max(1, options.max_rows);
        options.max_concurrent_batches =
            std::max(1, options.max_concurrent_batches);
        if (options.max_wait < absl::ZeroDuration()) {
          options.max_wait = absl::ZeroDuration();
        }
        return options;
      }()),
      metrics_(metrics) {
  timer_thread_ = std::thread([this] { TimerLoop(); });
}

SelectBatcher::~SelectBatcher() { Stop(); }

int64_t SelectBatcher::batches_dispatched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return batches_dispatched_;
}

void SelectBatcher::Submit(SelectJob job) {
  std::vector<Batch> ready;
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queued = true;
      queued_rows_ += static_cast<int64_t>(job.rows.size());
      const absl::Time now = absl::Now();
      queue_.push_back(Pending{std::move(job), now});
      TakeReadyLocked(now, &ready);
    }
  }
  if (queued) cv_.notify_all();
  if (!queued) {
    FailJob(job, StoppedStatus());
    if (!executor_->Schedule(std::move(job.done))) std::move(job.done)();
    return;
  }
  Launch(std::move(ready));
}

void SelectBatcher::TakeReadyLocked(absl::Time now, std::vector<Batch>* out) {
  while (!queue_.empty() && running_ < options_.max_concurrent_batches) {
    const bool ready = running_ == 0 || stopping_ ||
                       queued_rows_ >= options_.max_rows ||
                       now - queue_.front().enqueued >= options_.max_wait;
    if (!ready) break;
    Batch batch;
    int64_t rows = 0;
    while (!queue_.empty()) {
      const int64_t n = static_cast<int64_t>(queue_.front().job.rows.size());
      if (!batch.empty() && rows + n > options_.max_rows) break;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
      rows += n;
      queued_rows_ -= n;
    }
    ++running_;
    ++batches_dispatched_;
    out->push_back(std::move(batch));
  }
}

void SelectBatcher::Launch(std::vector<Batch> batches) {
  for (Batch& batch : batches) {
    absl::AnyInvocable<void() &&> run = [this, batch = std::move(batch)]() mutable {
      RunBatch(std::move(batch));
    };
    // The executor refuses work only once it is stopping; then the batch
    // runs here so that every job still completes exactly once.
    if (!executor_->Schedule(std::move(run))) std::move(run)();
  }
}

void SelectBatcher::RunBatch(Batch batch) {
  const absl::Time start = absl::Now();
  std::vector<QueryRow> rows;
  std::vector<RowResult> results;
  // Index into `batch` of each gathered row, for the scatter.
  std::vector<size_t> live;
  size_t total_rows = 0;
  for (size_t j = 0; j < batch.size(); ++j) {
    SelectJob& job = batch[j].job;
    if (metrics_ != nullptr) {
      metrics_->ObserveSelectQueueWait(start - batch[j].enqueued);
    }
    if (job.cancelled != nullptr && job.cancelled->load()) {
      FailJob(job, absl::CancelledError("the Select stream was cancelled"));
      continue;
    }
    live.push_back(j);
    total_rows += job.rows.size();
  }

  SelectStageTimes times;
  if (live.size() == 1) {
    // One job: the engine writes straight into its results.
    SelectJob& job = batch[live[0]].job;
    engine_->Select(job.rows, job.results, &times, executor_);
  } else if (!live.empty()) {
    rows.reserve(total_rows);
    for (size_t j : live) {
      const SelectJob& job = batch[j].job;
      rows.insert(rows.end(), job.rows.begin(), job.rows.end());
    }
    results.resize(total_rows);
    engine_->Select(rows, absl::MakeSpan(results), &times, executor_);
    size_t next = 0;
    for (size_t j : live) {
      for (RowResult& result : batch[j].job.results) {
        result = std::move(results[next++]);
      }
    }
  }
  const absl::Duration engine_time = absl::Now() - start;
  if (metrics_ != nullptr && total_rows > 0) {
    metrics_->ObserveSelectBatch(static_cast<int64_t>(total_rows), engine_time,
                                 times);
  }

  // Start the next batch before the callbacks encode responses, so the
  // engine is not idle meanwhile.
  BatchEnded();
  for (Pending& pending : batch) std::move(pending.job.done)();
}

void SelectBatcher::BatchEnded() {
  std::vector<Batch> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
    TakeReadyLocked(absl::Now(), &ready);
  }
  cv_.notify_all();
  Launch(std::move(ready));
}

void SelectBatcher::TimerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (queue_.empty() || running_ >= options_.max_concurrent_batches) {
      cv_.wait(lock);
      continue;
    }
    const absl::Time deadline = queue_.front().enqueued + options_.max_wait;
    const absl::Time now = absl::Now();
    if (now < deadline) {
      cv_.wait_until(lock, absl::ToChronoTime(deadline));
      continue;
    }
    std::vector<Batch> ready;
    TakeReadyLocked(now, &ready);
    if (ready.empty()) {
      cv_.wait(lock);
      continue;
    }
    lock.unlock();
    Launch(std::move(ready));
    lock.lock();
  }
}

void SelectBatcher::Stop() {
  std::lock_guard<std::mutex> join_lock(join_mu_);
  std::vector<Batch> ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    TakeReadyLocked(absl::Now(), &ready);
  }
  cv_.notify_all();
  Launch(std::move(ready));
  if (timer_thread_.joinable()) timer_thread_.join();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return running_ == 0 && queue_.empty(); });
}

}  // namespace hisa
