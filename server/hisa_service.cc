#include "server/hisa_service.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "proto/status_codes.h"
#include "server/wire_conversion.h"

namespace hisa {
namespace {

grpc::Status DrainingStatus() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is shutting down; retry on another replica");
}

// A stream rejected at its start (the server is draining).
template <typename Request, typename Response>
class RejectedStream final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit RejectedStream(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

// What every stream reactor shares: a reference count (gRPC holds one until
// OnDone, every queued piece of executor work holds one) and the drain hook.
// Reactors are deleted by the last Unref, never while a thread is inside.
class HisaService::Stream {
 public:
  virtual ~Stream() = default;
  virtual void Drain() = 0;

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  std::atomic<int> refs_{1};
};

// The state machine both bidi streams share. Everything is decided under
// one lock by the derived class's Plan(), which sees the flags below and its
// own queues; Act() then starts the chosen gRPC operations outside the lock
// (gRPC may run reactions inline). Derived classes call Start() at the end
// of their constructor and change state through Update().
template <class Derived, class Request, class Response>
class HisaService::StreamReactor
    : public grpc::ServerBidiReactor<Request, Response>,
      public HisaService::Stream {
 public:
  void OnCancel() override {
    Update([this] {
      cancelled_ = true;
      cancelled_flag_.store(true);
    });
  }

  void OnDone() override {
    service_->metrics_->StreamClosed(method_);
    // Last use of the service: once no stream is registered, the server may
    // finish shutting down.
    if (registered_) service_->UnregisterStream(this);
    Unref();
  }

  void Drain() override {
    Update([this] { draining_ = true; });
  }

 protected:
  struct Actions {
    const Response* write = nullptr;
    Request* read = nullptr;
    std::optional<grpc::Status> finish;
  };

  StreamReactor(HisaService* service, RpcMethod method)
      : service_(service), method_(method) {}

  // Registers the stream (a draining server finishes it at once) and starts
  // the first read.
  void Start() {
    service_->metrics_->StreamOpened(method_);
    registered_ = service_->RegisterStream(this);
    Update([this] {
      if (!registered_) draining_ = true;
    });
  }

  // Runs `change` under the lock, then starts what Plan decides.
  template <class Change>
  void Update(Change change) {
    Actions actions;
    {
      std::lock_guard<std::mutex> lock(mu_);
      change();
      actions = derived().Plan();
    }
    Act(std::move(actions));
  }

  // Plans again after a change made under the lock by the caller.
  void Replan() {
    Update([] {});
  }

  // The bookkeeping of a finished write, under the lock.
  void WriteDoneLocked(bool ok) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = false;
    if (!ok) {
      broken_ = true;
      cancelled_flag_.store(true);
    }
  }

  bool stopped() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return cancelled_ || broken_;
  }

  // Starts what Plan decided. Operations are started outside the lock, so
  // Plan counts them in starting_ and never decides Finish while one is
  // decided but not started: a StartRead/StartWrite issued after Finish
  // could reach a call whose OnDone has already run.
  void Act(Actions actions) {
    while (true) {
      if (actions.finish.has_value()) {
        service_->metrics_->CountError(method_, actions.finish->error_code());
        this->Finish(*std::move(actions.finish));
        return;
      }
      int started = 0;
      if (actions.write != nullptr) {
        this->StartWrite(actions.write);
        ++started;
      }
      if (actions.read != nullptr) {
        this->StartRead(actions.read);
        ++started;
      }
      if (started == 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      starting_ -= started;
      actions = derived().Plan();
    }
  }

  HisaService* const service_;
  const RpcMethod method_;
  bool registered_ = false;
  // Set with cancelled_ or broken_, readable without the lock by executor
  // work that should skip its engine call.
  std::atomic<bool> cancelled_flag_{false};

  std::mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Reads and writes decided by Plan and not yet started by Act.
  int starting_ ABSL_GUARDED_BY(mu_) = 0;

 private:
  Derived& derived() { return static_cast<Derived&>(*this); }
};

// ---------------------------------------------------------------- Append --

// Reads one chunk at a time, appends it on the executor, queues its ack.
// The next read starts once the chunk is processed (chunks of a stream are
// applied in order), while earlier acks are still being written.
class HisaService::AppendReactor final
    : public HisaService::StreamReactor<AppendReactor, v1::AppendChunk,
                                        v1::AppendAck> {
 public:
  explicit AppendReactor(HisaService* service)
      : StreamReactor(service, RpcMethod::kAppend) {
    Start();
  }

  void OnReadDone(bool ok) override {
    bool process = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (!ok) {
        read_closed_ = true;
      } else if (!stopped() && !finished_) {
        processing_ = true;
        received_ = absl::Now();
        process = true;
        Ref();
      }
    }
    if (process) service_->Schedule([this] { Process(); });
    Replan();
  }

  void OnWriteDone(bool ok) override {
    Update([&] {
      acks_.pop_front();
      WriteDoneLocked(ok);
    });
  }

 private:
  friend StreamReactor;

  // Decides the next gRPC operations; they are started outside the lock
  // because gRPC may run reactions inline.
  Actions Plan() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions actions;
    if (finished_) return actions;
    if (!stopped() && !writing_ && !acks_.empty()) {
      writing_ = true;
      ++starting_;
      actions.write = &acks_.front();
    }
    if (!stopped() && !draining_ && !read_closed_ && !reading_ &&
        !processing_ &&
        static_cast<int>(acks_.size()) < service_->options_.max_queued_acks) {
      reading_ = true;
      ++starting_;
      actions.read = &chunk_;
    }
    const bool ending = stopped() || draining_ || read_closed_;
    if (ending && starting_ == 0 && !processing_ && !writing_ &&
        (stopped() || acks_.empty())) {
      finished_ = true;
      if (stopped()) {
        actions.finish = grpc::Status(grpc::StatusCode::CANCELLED,
                                      "the Append stream was cancelled");
      } else if (!read_closed_) {
        actions.finish = DrainingStatus();
      } else {
        actions.finish = grpc::Status::OK;
      }
    }
    return actions;
  }

  // Executor: applies chunk_ to the engine and queues its ack.
  void Process() {
    v1::AppendAck ack;
    if (!cancelled_flag_.load()) {
      ack.set_chunk_id(chunk_.chunk_id());
      absl::StatusOr<KeyChunk> chunk = ChunkFromWire(chunk_);
      absl::StatusOr<int64_t> length =
          chunk.ok() ? service_->engine_->Append(*chunk) : chunk.status();
      ack.set_code(ToWireCode(length.status().code()));
      if (length.ok()) {
        ack.set_layer_length(*length);
        service_->metrics_->CountAppend(
            chunk_.num_tokens(),
            static_cast<int64_t>(chunk_.keys().size() +
                                 chunk_.scales_size() * sizeof(float)));
      } else {
        ack.set_message(std::string(length.status().message()));
        service_->metrics_->CountError(RpcMethod::kAppend,
                                       length.status().code());
      }
      service_->metrics_->ObserveRpc(RpcMethod::kAppend,
                                     absl::Now() - received_);
    }
    Update([&] {
      processing_ = false;
      if (!stopped()) acks_.push_back(std::move(ack));
    });
    Unref();
  }

  bool processing_ ABSL_GUARDED_BY(mu_) = false;
  // The read target; touched by one of: gRPC (while reading_), Process
  // (while processing_).
  v1::AppendChunk chunk_;
  absl::Time received_;
  // Acks in order; the front one is being written while writing_. A deque
  // keeps the front's address stable across push_back.
  std::deque<v1::AppendAck> acks_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------- Select --

// Reads SelectRequests while fewer than max_select_messages_in_flight are
// being worked on, hands their rows to the batcher, and writes responses in
// arrival order as they complete.
class HisaService::SelectReactor final
    : public HisaService::StreamReactor<SelectReactor, v1::SelectRequest,
                                        v1::SelectResponse> {
 public:
  explicit SelectReactor(HisaService* service)
      : StreamReactor(service, RpcMethod::kSelect) {
    Start();
  }

  void OnReadDone(bool ok) override {
    std::unique_ptr<Message> message;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      if (!ok) {
        read_closed_ = true;
      } else if (!stopped() && !error_.has_value() && !finished_) {
        message = std::move(next_);
        // Counted now so that the stream neither finishes before this
        // message is answered nor reads past the in-flight limit.
        ++admitting_;
        ++incomplete_;
      }
    }
    if (message != nullptr) Admit(std::move(message));
    Replan();
  }

  void OnWriteDone(bool ok) override {
    std::unique_ptr<Message> written;  // freed outside the lock
    Update([&] {
      written = std::move(inflight_.front());
      inflight_.pop_front();
      WriteDoneLocked(ok);
    });
  }

 private:
  friend StreamReactor;

  struct Message {
    v1::SelectRequest request;
    absl::Time received;
    // Per wire row: the conversion status (OK when sent to the engine) and
    // the row's index in `rows` / `results`.
    std::vector<absl::Status> conversion;
    std::vector<int> slot;
    std::vector<QueryRow> rows;
    std::vector<RowResult> results;
    v1::SelectResponse response;
    bool ready = false;
  };

  Actions Plan() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions actions;
    if (finished_) return actions;
    if (!stopped() && !writing_ && !inflight_.empty() &&
        inflight_.front()->ready) {
      writing_ = true;
      ++starting_;
      actions.write = &inflight_.front()->response;
    }
    const int in_flight = static_cast<int>(inflight_.size()) + admitting_;
    if (!stopped() && !error_.has_value() && !draining_ && !read_closed_ &&
        !reading_ &&
        in_flight < service_->options_.max_select_messages_in_flight) {
      reading_ = true;
      ++starting_;
      if (next_ == nullptr) next_ = std::make_unique<Message>();
      actions.read = &next_->request;
    }
    const bool ending =
        stopped() || error_.has_value() || draining_ || read_closed_;
    // Completions still to run reference their messages: wait for them even
    // when stopped. Otherwise every admitted message must be written first.
    if (ending && starting_ == 0 && incomplete_ == 0 && !writing_ &&
        (stopped() || inflight_.empty())) {
      finished_ = true;
      if (stopped()) {
        actions.finish = grpc::Status(grpc::StatusCode::CANCELLED,
                                      "the Select stream was cancelled");
      } else if (error_.has_value()) {
        actions.finish = *error_;
      } else if (!read_closed_) {
        actions.finish = DrainingStatus();
      } else {
        actions.finish = grpc::Status::OK;
      }
    }
    return actions;
  }

  // Validates the message, converts its rows and submits them (gRPC thread;
  // only cheap work here).
  void Admit(std::unique_ptr<Message> message) {
    message->received = absl::Now();
    const int num_rows = message->request.rows_size();
    const int max_rows = service_->options_.max_rows_per_message;
    if (num_rows > max_rows) {
      std::lock_guard<std::mutex> lock(mu_);
      --admitting_;
      --incomplete_;
      error_ = grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("SelectRequest message_id ",
                       message->request.message_id(), " has ", num_rows,
                       " rows; the server accepts at most ", max_rows,
                       " rows per message (max_rows_per_message)"));
      return;
    }
    message->conversion.resize(num_rows);
    message->slot.assign(num_rows, -1);
    message->rows.reserve(num_rows);
    for (int i = 0; i < num_rows; ++i) {
      absl::StatusOr<QueryRow> row = RowFromWire(message->request.rows(i));
      if (!row.ok()) {
        message->conversion[i] = row.status();
        continue;
      }
      message->slot[i] = static_cast<int>(message->rows.size());
      message->rows.push_back(*std::move(row));
    }
    message->results.resize(message->rows.size());

    Message* raw = message.get();
    Ref();  // for the completion
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_.push_back(std::move(message));
      --admitting_;
    }
    if (raw->rows.empty()) {
      service_->Schedule([this, raw] { Complete(raw); });
      return;
    }
    service_->batcher_->Submit(SelectJob{
        raw->rows, absl::MakeSpan(raw->results), &cancelled_flag_,
        [this, raw] { Complete(raw); }});
  }

  // Executor: builds the response of a message whose rows have run.
  void Complete(Message* message) {
    if (!cancelled_flag_.load()) BuildResponse(message);
    Update([&] {
      message->ready = true;
      --incomplete_;
    });
    Unref();
  }

  // Rows are encoded in parallel on the executor (ParallelFor: this thread
  // and idle workers), kRowsPerEncodeChunk rows per chunk: a 64-row message
  // of HISA rows is ~64 compact encodings of 2048 positions each.
  static constexpr int64_t kRowsPerEncodeChunk = 8;

  void BuildResponse(Message* message) {
    ServiceMetrics& metrics = *service_->metrics_;
    v1::SelectResponse& response = message->response;
    response.set_message_id(message->request.message_id());
    const int num_rows = message->request.rows_size();
    response.mutable_results()->Reserve(num_rows);
    for (int i = 0; i < num_rows; ++i) response.add_results();
    std::atomic<int64_t> dense_count{0};
    std::atomic<int64_t> hisa_count{0};
    service_->executor_->ParallelFor(
        num_rows, kRowsPerEncodeChunk, [&](int64_t begin, int64_t end) {
          int64_t dense = 0, hisa = 0;
          for (int64_t i = begin; i < end; ++i) {
            v1::RowResult* wire =
                response.mutable_results(static_cast<int>(i));
            const int slot = message->slot[i];
            if (slot < 0) {
              const absl::Status& status = message->conversion[i];
              wire->set_code(ToWireCode(status.code()));
              wire->set_message(std::string(status.message()));
              metrics.CountError(RpcMethod::kSelect, status.code());
              continue;
            }
            const QueryRow& row = message->rows[slot];
            const RowResult& result = message->results[slot];
            // The bitmask encoding is valid for any power-of-two block
            // size; a fixed one avoids a request lookup per row.
            RowResultToWire(result, row.k, kWireBitmaskBlock, wire);
            if (!result.status.ok()) {
              metrics.CountError(RpcMethod::kSelect, result.status.code());
              continue;
            }
            (result.mode_used == SelectMode::kDense ? dense : hisa) += 1;
          }
          dense_count += dense;
          hisa_count += hisa;
        });
    const int64_t dense_rows = dense_count.load();
    const int64_t hisa_rows = hisa_count.load();
    if (dense_rows > 0) metrics.CountSelectedRows(SelectMode::kDense, dense_rows);
    if (hisa_rows > 0) metrics.CountSelectedRows(SelectMode::kHisa, hisa_rows);
    const absl::Duration elapsed = absl::Now() - message->received;
    response.set_server_seconds(absl::ToDoubleSeconds(elapsed));
    metrics.ObserveRpc(RpcMethod::kSelect, elapsed);
    // The request and engine-side buffers are no longer needed.
    message->rows.clear();
    message->results.clear();
    message->request.Clear();
  }

  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
  // Messages read and not yet in inflight_ (being admitted).
  int admitting_ ABSL_GUARDED_BY(mu_) = 0;
  // Messages read whose completion has not run yet.
  int incomplete_ ABSL_GUARDED_BY(mu_) = 0;
  // Admitted messages in arrival order; the front one is written first.
  std::deque<std::unique_ptr<Message>> inflight_ ABSL_GUARDED_BY(mu_);
  // The target of the outstanding read.
  std::unique_ptr<Message> next_ ABSL_GUARDED_BY(mu_);
};

// --------------------------------------------------------------- Service --

HisaService::HisaService(Engine* engine, Executor* executor,
                         SelectBatcher* batcher, ServiceMetrics* metrics,
                         ServiceOptions options)
    : engine_(engine),
      executor_(executor),
      batcher_(batcher),
      metrics_(metrics),
      options_(std::move(options)) {}

HisaService::~HisaService() = default;

void HisaService::StartDrain() {
  std::vector<Stream*> streams;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_.store(true);
    streams.reserve(streams_.size());
    for (Stream* stream : streams_) {
      stream->Ref();  // registered, so gRPC's reference is still held
      streams.push_back(stream);
    }
  }
  for (Stream* stream : streams) {
    stream->Drain();
    stream->Unref();
  }
}

bool HisaService::RegisterStream(Stream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_.load()) return false;
  streams_.insert(stream);
  return true;
}

void HisaService::UnregisterStream(Stream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(stream);
  if (streams_.empty() && unary_in_flight_ == 0) idle_cv_.notify_all();
}

bool HisaService::BeginUnary() {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_.load()) return false;
  ++unary_in_flight_;
  return true;
}

void HisaService::EndUnary() {
  std::lock_guard<std::mutex> lock(mu_);
  --unary_in_flight_;
  if (streams_.empty() && unary_in_flight_ == 0) idle_cv_.notify_all();
}

bool HisaService::WaitIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_until(lock, absl::ToChronoTime(deadline), [this] {
    return streams_.empty() && unary_in_flight_ == 0;
  });
}

void HisaService::Schedule(absl::AnyInvocable<void() &&> task) {
  if (!executor_->Schedule(std::move(task))) std::move(task)();
}

void HisaService::RunUnary(RpcMethod method, grpc::ServerUnaryReactor* reactor,
                           absl::AnyInvocable<absl::Status() &&> work) {
  const absl::Time start = absl::Now();
  auto finish = [this, method, reactor, start](const absl::Status& status) {
    metrics_->ObserveRpc(method, absl::Now() - start);
    metrics_->CountError(method, status.code());
    reactor->Finish(ToGrpcStatus(status));
  };
  if (!BeginUnary()) {
    finish(absl::UnavailableError(
        "the server is shutting down; retry on another replica"));
    return;
  }
  absl::AnyInvocable<void() &&> task =
      [this, finish, work = std::move(work)]() mutable {
        finish(std::move(work)());
        EndUnary();
      };
  if (!executor_->Schedule(std::move(task))) {
    finish(absl::UnavailableError("the server is shutting down"));
    EndUnary();
  }
}

grpc::ServerUnaryReactor* HisaService::CreateRequest(
    grpc::CallbackServerContext* context,
    const v1::CreateRequestRequest* request,
    v1::CreateRequestResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  RunUnary(RpcMethod::kCreateRequest, reactor, [this, request] {
    absl::StatusOr<RequestConfig> config = ConfigFromWire(request->config());
    if (!config.ok()) return config.status();
    return engine_->CreateRequest(request->request_id(), *config);
  });
  return reactor;
}

grpc::ServerUnaryReactor* HisaService::Release(
    grpc::CallbackServerContext* context, const v1::ReleaseRequest* request,
    v1::ReleaseResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  RunUnary(RpcMethod::kRelease, reactor, [this, request, response] {
    response->set_existed(engine_->Release(request->request_id()));
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* HisaService::GetInfo(
    grpc::CallbackServerContext* context, const v1::GetInfoRequest* request,
    v1::GetInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  RunUnary(RpcMethod::kGetInfo, reactor, [this, request, response] {
    return FillInfo(*request, response);
  });
  return reactor;
}

absl::Status HisaService::FillInfo(const v1::GetInfoRequest& request,
                                   v1::GetInfoResponse* response) const {
  const EngineOptions& engine_options = engine_->options();
  const EngineStats stats = engine_->Stats();
  v1::ServerInfo* server = response->mutable_server();
  server->set_version(options_.version);
  server->set_backend(stats.backend);
  server->set_device(options_.device);
  server->set_memory_budget_bytes(stats.memory_budget_bytes);
  server->set_bytes_in_use(stats.bytes_in_use);
  server->set_live_requests(stats.live_requests);
  server->set_idle_ttl_seconds(absl::ToDoubleSeconds(engine_options.idle_ttl));
  server->set_max_message_bytes(options_.max_message_bytes);
  server->set_max_rows_per_message(
      static_cast<uint32_t>(options_.max_rows_per_message));
  server->set_max_requests(static_cast<uint32_t>(engine_options.max_requests));
  server->set_max_layers(static_cast<uint32_t>(engine_options.max_layers));
  server->set_max_heads(static_cast<uint32_t>(engine_options.max_heads));
  server->set_max_k(static_cast<uint32_t>(kMaxK));

  const absl::Time now = engine_options.clock();
  if (request.all_requests()) {
    for (const RequestInfo& info : engine_->ListRequests()) {
      RequestInfoToWire(info, now, response->add_requests());
    }
  }
  for (const std::string& id : request.request_ids()) {
    absl::StatusOr<RequestInfo> info = engine_->GetRequestInfo(id);
    if (!info.ok()) {
      if (info.status().code() != absl::StatusCode::kNotFound) {
        return info.status();
      }
      response->add_missing_request_ids(id);
    } else if (!request.all_requests()) {
      RequestInfoToWire(*info, now, response->add_requests());
    }
  }
  return absl::OkStatus();
}

grpc::ServerBidiReactor<v1::AppendChunk, v1::AppendAck>* HisaService::Append(
    grpc::CallbackServerContext* /*context*/) {
  if (draining_.load()) {
    metrics_->CountError(RpcMethod::kAppend, absl::StatusCode::kUnavailable);
    return new RejectedStream<v1::AppendChunk, v1::AppendAck>(DrainingStatus());
  }
  return new AppendReactor(this);
}

grpc::ServerBidiReactor<v1::SelectRequest, v1::SelectResponse>*
HisaService::Select(grpc::CallbackServerContext* /*context*/) {
  if (draining_.load()) {
    metrics_->CountError(RpcMethod::kSelect, absl::StatusCode::kUnavailable);
    return new RejectedStream<v1::SelectRequest, v1::SelectResponse>(
        DrainingStatus());
  }
  return new SelectReactor(this);
}

}  // namespace hisa
