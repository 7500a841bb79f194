// Tests of the service's executor and cross-stream Select batcher, in
// process, with a fake backend whose Select can be held closed so that the
// batching decisions are deterministic.
#include "server/select_batcher.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "server/executor.h"
#include "server/service_metrics.h"

namespace hisa {
namespace {

using ::testing::ElementsAre;
using ::testing::Each;
using ::testing::Le;

constexpr int kHeadDim = 16;
constexpr int kBlock = 16;
constexpr int kLength = 64;
constexpr int kK = 4;

// Stores only lengths; Matches always agrees.
class FakeStore : public RequestStore {
 public:
  explicit FakeStore(int num_layers) : lengths_(num_layers, 0) {}
  int64_t length(int layer) const override { return lengths_[layer]; }
  int64_t bytes_reserved() const override {
    return std::accumulate(lengths_.begin(), lengths_.end(), int64_t{0});
  }
  int64_t BytesAfterAppend(int, int64_t num_tokens) const override {
    return bytes_reserved() + num_tokens;
  }
  absl::StatusOr<bool> Matches(const KeyChunk&) const override { return true; }
  absl::Status Append(const KeyChunk& chunk) override {
    lengths_[chunk.layer] = chunk.first_position + chunk.num_tokens;
    return absl::OkStatus();
  }

 private:
  std::vector<int64_t> lengths_;
};

// Records the size of every Select call; blocks in Select while closed.
class GateBackend : public Backend {
 public:
  absl::string_view name() const override { return "fake"; }
  std::string device_description() const override { return "fake device"; }
  absl::StatusOr<std::unique_ptr<RequestStore>> CreateStore(
      const RequestConfig& config) override {
    return std::make_unique<FakeStore>(config.num_layers);
  }
  void Select(absl::Span<const SelectTask> tasks, SelectStageTimes* times,
              HostParallel* /*parallel*/) override {
    std::unique_lock<std::mutex> lock(mu_);
    calls_.push_back(static_cast<int>(tasks.size()));
    ++entered_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
    lock.unlock();
    for (const SelectTask& task : tasks) {
      task.result->status = absl::OkStatus();
      task.result->mode_used = task.mode;
      task.result->positions.assign(task.row->k, -1);
      task.result->positions[0] = static_cast<int32_t>(task.row->position);
    }
    if (times != nullptr) times->topk += 1e-6;
  }

  void SetOpen(bool open) {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = open;
    cv_.notify_all();
  }
  // Waits until `n` Select calls have started; false after 10 s.
  bool WaitEntered(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10),
                        [&] { return entered_ >= n; });
  }
  int entered() {
    std::lock_guard<std::mutex> lock(mu_);
    return entered_;
  }
  std::vector<int> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int entered_ = 0;
  std::vector<int> calls_;
};

// A one-shot event on std::mutex: Debian's Abseil is not TSan-instrumented,
// so absl::Notification would hide the happens-before edge from TSan.
class Event {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool Wait(std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

// One Select message: its rows, results and completion.
struct Job {
  explicit Job(int num_rows, int64_t first_position = 0) {
    for (int i = 0; i < num_rows; ++i) {
      QueryRow row;
      row.request_id = "r";
      row.position = (first_position + i) % kLength;
      row.num_heads = 1;
      row.q_format = KeyFormat::kFp32;
      row.q = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(q.data()),
                                  q.size() * sizeof(float));
      row.weights = absl::MakeConstSpan(weights);
      row.mode = SelectMode::kDense;
      row.k = kK;
      row.m = 1;
      rows.push_back(row);
    }
    results.resize(num_rows);
  }
  SelectJob MakeJob() {
    return SelectJob{rows, absl::MakeSpan(results), &cancelled,
                     [this] { done.Notify(); }};
  }
  bool WaitDone() { return done.Wait(std::chrono::seconds(10)); }

  std::vector<float> q = std::vector<float>(kHeadDim, 1.0f);
  std::vector<float> weights = {1.0f};
  std::vector<QueryRow> rows;
  std::vector<RowResult> results;
  std::atomic<bool> cancelled{false};
  Event done;
};

class SelectBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = std::make_unique<GateBackend>();
    backend_ = backend.get();
    engine_ = std::make_unique<Engine>(EngineOptions(), std::move(backend));
    RequestConfig config;
    config.num_layers = 1;
    config.head_dim = kHeadDim;
    config.block_size = kBlock;
    config.key_format = KeyFormat::kFp32;
    ASSERT_TRUE(engine_->CreateRequest("r", config).ok());
    std::vector<float> keys(kLength * kHeadDim, 0.5f);
    KeyChunk chunk;
    chunk.request_id = "r";
    chunk.num_tokens = kLength;
    chunk.format = KeyFormat::kFp32;
    chunk.keys = absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(keys.data()), keys.size() * 4);
    ASSERT_TRUE(engine_->Append(chunk).ok());
    executor_ = std::make_unique<Executor>(4);
    metrics_ = std::make_unique<ServiceMetrics>(engine_.get());
  }

  void TearDown() override {
    backend_->SetOpen(true);
    batcher_.reset();
    executor_.reset();  // every callback has run: jobs may go
    jobs_.clear();
  }

  // Jobs outlive every callback even when an assertion ends a test early.
  Job& NewJob(int num_rows, int64_t first_position = 0) {
    std::lock_guard<std::mutex> lock(jobs_mu_);
    jobs_.push_back(std::make_unique<Job>(num_rows, first_position));
    return *jobs_.back();
  }

  void MakeBatcher(int max_rows, absl::Duration max_wait, int concurrent) {
    batcher_ = std::make_unique<SelectBatcher>(
        engine_.get(), executor_.get(),
        SelectBatcherOptions{max_rows, max_wait, concurrent}, metrics_.get());
  }

  GateBackend* backend_ = nullptr;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<SelectBatcher> batcher_;
  std::mutex jobs_mu_;
  std::vector<std::unique_ptr<Job>> jobs_;
};

TEST_F(SelectBatcherTest, LoneJobAtIdleEngineDoesNotWaitForTheWindow) {
  MakeBatcher(/*max_rows=*/64, /*max_wait=*/absl::Seconds(30), 2);
  Job& job = NewJob(1);
  const absl::Time start = absl::Now();
  batcher_->Submit(job.MakeJob());
  ASSERT_TRUE(job.WaitDone());
  const absl::Duration latency = absl::Now() - start;
  EXPECT_LT(latency, absl::Seconds(1));
  std::fprintf(stderr, "lone job latency with a 30 s window: %s\n",
               absl::FormatDuration(latency).c_str());
  ASSERT_TRUE(job.results[0].status.ok()) << job.results[0].status;
  EXPECT_EQ(job.results[0].positions.size(), static_cast<size_t>(kK));
}

TEST_F(SelectBatcherTest, JobsArrivingWhileBusyRunAsOneBatch) {
  MakeBatcher(/*max_rows=*/64, /*max_wait=*/absl::Seconds(30), 2);
  backend_->SetOpen(false);
  Job& first = NewJob(1);
  batcher_->Submit(first.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(1));
  std::vector<Job*> later;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) later.push_back(&NewJob(1, i + 1));
  for (Job* job : later) {
    threads.emplace_back([&batcher = batcher_, job] {
      batcher->Submit(job->MakeJob());
    });
  }
  for (std::thread& thread : threads) thread.join();
  // Still one call: the others wait for the running batch.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(backend_->entered(), 1);
  backend_->SetOpen(true);
  ASSERT_TRUE(first.WaitDone());
  for (Job* job : later) {
    ASSERT_TRUE(job->WaitDone());
    ASSERT_TRUE(job->results[0].status.ok()) << job->results[0].status;
    EXPECT_EQ(job->results[0].positions[0], job->rows[0].position);
  }
  EXPECT_THAT(backend_->calls(), ElementsAre(1, 3));
  EXPECT_EQ(batcher_->batches_dispatched(), 2);
}

TEST_F(SelectBatcherTest, FullQueueStartsAConcurrentBatchOfAtMostMaxRows) {
  MakeBatcher(/*max_rows=*/4, /*max_wait=*/absl::Seconds(30), 2);
  backend_->SetOpen(false);
  Job& first = NewJob(1);
  batcher_->Submit(first.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(1));
  std::vector<Job*> later;
  for (int i = 0; i < 5; ++i) {
    later.push_back(&NewJob(2, 2 * i));
    batcher_->Submit(later.back()->MakeJob());
  }
  // 10 queued rows >= 4: a second batch starts although one is running.
  ASSERT_TRUE(backend_->WaitEntered(2));
  backend_->SetOpen(true);
  ASSERT_TRUE(first.WaitDone());
  for (Job* job : later) ASSERT_TRUE(job->WaitDone());
  const std::vector<int> calls = backend_->calls();
  EXPECT_EQ(std::accumulate(calls.begin(), calls.end(), 0), 11);
  EXPECT_THAT(calls, Each(Le(4)));
  EXPECT_EQ(calls[1], 4);
}

TEST_F(SelectBatcherTest, MaxWaitStartsAConcurrentBatch) {
  MakeBatcher(/*max_rows=*/64, /*max_wait=*/absl::Milliseconds(20), 2);
  backend_->SetOpen(false);
  Job& first = NewJob(1);
  batcher_->Submit(first.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(1));
  Job& second = NewJob(1, 5);
  const absl::Time submitted = absl::Now();
  batcher_->Submit(second.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(2));
  EXPECT_GE(absl::Now() - submitted, absl::Milliseconds(15));
  backend_->SetOpen(true);
  ASSERT_TRUE(first.WaitDone());
  ASSERT_TRUE(second.WaitDone());
  EXPECT_THAT(backend_->calls(), ElementsAre(1, 1));
}

TEST_F(SelectBatcherTest, ConcurrencyLimitHoldsQueuedJobs) {
  MakeBatcher(/*max_rows=*/1, /*max_wait=*/absl::ZeroDuration(), 1);
  backend_->SetOpen(false);
  Job& first = NewJob(1);
  Job& second = NewJob(1, 1);
  batcher_->Submit(first.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(1));
  batcher_->Submit(second.MakeJob());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(backend_->entered(), 1);
  backend_->SetOpen(true);
  ASSERT_TRUE(first.WaitDone());
  ASSERT_TRUE(second.WaitDone());
  EXPECT_THAT(backend_->calls(), ElementsAre(1, 1));
}

TEST_F(SelectBatcherTest, JobLargerThanMaxRowsRunsWhole) {
  MakeBatcher(/*max_rows=*/2, /*max_wait=*/absl::ZeroDuration(), 2);
  Job& big = NewJob(7);
  batcher_->Submit(big.MakeJob());
  ASSERT_TRUE(big.WaitDone());
  EXPECT_THAT(backend_->calls(), ElementsAre(7));
  for (const RowResult& result : big.results) EXPECT_TRUE(result.status.ok());
}

TEST_F(SelectBatcherTest, CancelledJobSkipsTheEngine) {
  MakeBatcher(/*max_rows=*/64, /*max_wait=*/absl::Seconds(30), 2);
  backend_->SetOpen(false);
  Job& first = NewJob(1);
  batcher_->Submit(first.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(1));
  Job& cancelled = NewJob(3);
  Job& kept = NewJob(1, 9);
  batcher_->Submit(cancelled.MakeJob());
  batcher_->Submit(kept.MakeJob());
  cancelled.cancelled.store(true);
  backend_->SetOpen(true);
  ASSERT_TRUE(first.WaitDone());
  ASSERT_TRUE(cancelled.WaitDone());
  ASSERT_TRUE(kept.WaitDone());
  for (const RowResult& result : cancelled.results) {
    EXPECT_EQ(result.status.code(), absl::StatusCode::kCancelled);
  }
  EXPECT_TRUE(kept.results[0].status.ok());
  EXPECT_THAT(backend_->calls(), ElementsAre(1, 1));
}

TEST_F(SelectBatcherTest, BadRowFailsOnlyItselfInAMergedBatch) {
  MakeBatcher(/*max_rows=*/64, /*max_wait=*/absl::Seconds(30), 2);
  backend_->SetOpen(false);
  Job& first = NewJob(1);
  batcher_->Submit(first.MakeJob());
  ASSERT_TRUE(backend_->WaitEntered(1));
  Job& good = NewJob(1, 3);
  Job& bad = NewJob(1);
  bad.rows[0].position = kLength + 5;  // not appended yet
  batcher_->Submit(good.MakeJob());
  batcher_->Submit(bad.MakeJob());
  backend_->SetOpen(true);
  ASSERT_TRUE(first.WaitDone());
  ASSERT_TRUE(good.WaitDone());
  ASSERT_TRUE(bad.WaitDone());
  EXPECT_TRUE(good.results[0].status.ok());
  EXPECT_EQ(bad.results[0].status.code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SelectBatcherTest, SubmitAfterStopIsUnavailable) {
  MakeBatcher(/*max_rows=*/64, /*max_wait=*/absl::Milliseconds(1), 2);
  batcher_->Stop();
  Job& job = NewJob(2);
  batcher_->Submit(job.MakeJob());
  ASSERT_TRUE(job.WaitDone());
  for (const RowResult& result : job.results) {
    EXPECT_EQ(result.status.code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_TRUE(backend_->calls().empty());
}

TEST_F(SelectBatcherTest, ManyThreadsEveryJobCompletesOnce) {
  MakeBatcher(/*max_rows=*/16, /*max_wait=*/absl::Microseconds(200), 2);
  constexpr int kThreads = 4;
  constexpr int kJobsPerThread = 50;
  std::vector<std::vector<Job*>> jobs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int j = 0; j < kJobsPerThread; ++j) {
        jobs[t].push_back(&NewJob(1 + j % 3, t + j));
        batcher_->Submit(jobs[t].back()->MakeJob());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  int rows = 0;
  for (auto& per_thread : jobs) {
    for (Job* job : per_thread) {
      ASSERT_TRUE(job->WaitDone());
      for (const RowResult& result : job->results) {
        EXPECT_TRUE(result.status.ok()) << result.status;
      }
      rows += static_cast<int>(job->rows.size());
    }
  }
  const std::vector<int> calls = backend_->calls();
  EXPECT_EQ(std::accumulate(calls.begin(), calls.end(), 0), rows);
}

TEST(ExecutorTest, RunsEveryTaskAndRefusesAfterStop) {
  Executor executor(3);
  std::atomic<int> count{0};
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(executor.Schedule([&count] { count.fetch_add(1); }));
  }
  executor.Stop();
  EXPECT_EQ(count.load(), 100);
  bool ran = false;
  absl::AnyInvocable<void() &&> task = [&ran] { ran = true; };
  EXPECT_FALSE(executor.Schedule(std::move(task)));
  ASSERT_TRUE(task);  // left intact for the caller
  std::move(task)();
  EXPECT_TRUE(ran);
  executor.Stop();  // idempotent
}

// A polling worker takes a lone task without a wake-up; a burst must still
// reach the sleeping workers: three tasks that each wait until all three
// have started finish only if they run concurrently. (Liveness: whether a
// burst lands before the poller takes its task is up to timing, so this
// fails for an executor that never wakes a sleeper, not for every race.)
TEST(ExecutorTest, PollingWorkerPassesBurstsOnToSleepingWorkers) {
  for (int round = 0; round < 20; ++round) {
    Executor executor(3, absl::Milliseconds(2));
    std::atomic<int> started{0};
    std::atomic<int> done{0};
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    // Let one worker start polling and the others fall asleep.
    std::this_thread::sleep_for(std::chrono::microseconds(round * 100));
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(executor.Schedule([&] {
        started.fetch_add(1);
        while (started.load() < 3 &&
               std::chrono::steady_clock::now() < deadline) {
          std::this_thread::yield();
        }
        done.fetch_add(1);
      }));
    }
    executor.Stop();
    ASSERT_EQ(done.load(), 3);
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "round " << round << ": the tasks did not run concurrently";
  }
}

// Every index once, whatever the grain, thread count or caller.
TEST(ExecutorTest, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    Executor executor(threads);
    for (int64_t n : {0, 1, 7, 64, 1000}) {
      for (int64_t grain : {1, 8, 2000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        executor.ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
          EXPECT_LE(0, begin);
          EXPECT_LT(begin, end);
          EXPECT_LE(end, n);
          EXPECT_LE(end - begin, grain);
          for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n
                                       << " grain " << grain << " i " << i;
        }
      }
    }
  }
}

// Called from a task while every other worker is blocked: the caller runs
// the chunks itself (helpers queued behind the blocked workers start late,
// find nothing left and touch nothing of the returned call).
TEST(ExecutorTest, ParallelForFromATaskWithBusyWorkersDoesNotWait) {
  Executor executor(3);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> blocked{0};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(executor.Schedule([&] {
      blocked.fetch_add(1);
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return release; });
    }));
  }
  while (blocked.load() < 2) std::this_thread::yield();
  std::atomic<int64_t> sum{0};
  std::atomic<bool> finished{false};
  ASSERT_TRUE(executor.Schedule([&] {
    executor.ParallelFor(100, 10, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
    });
    finished.store(true);
  }));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!finished.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(finished.load());
  EXPECT_EQ(sum.load(), 99 * 100 / 2);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  executor.Stop();
}

}  // namespace
}  // namespace hisa
