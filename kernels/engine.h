// The HISA indexing engine: per-request, per-layer key caches with block
// summaries, and DENSE / HISA top-k selection (SPEC 2-6). It owns everything
// that does not depend on the compute backend: argument validation, the
// request table, positional idempotent appends, the byte budget, idle TTL and
// locking. Storage and kernels live behind `Backend` (backend.h).
//
//   ASSIGN_OR_RETURN(auto engine, hisa::Engine::Create(options));
//   RETURN_IF_ERROR(engine->CreateRequest("req-1", config));
//   ASSIGN_OR_RETURN(int64_t len, engine->Append(chunk));
//   std::vector<hisa::RowResult> results(rows.size());
//   engine->Select(rows, absl::MakeSpan(results));
//
// Status codes (SPEC 5): INVALID_ARGUMENT for bad shapes, formats, parameters
// or non-finite values; NOT_FOUND for unknown, released or expired requests;
// FAILED_PRECONDITION for a gap, conflicting bytes, or a position not yet
// appended; ALREADY_EXISTS for CreateRequest with a different config;
// RESOURCE_EXHAUSTED when the budget or max_requests would be exceeded;
// INTERNAL for backend faults. Messages name the offending values.
//
// Thread safety: every method may be called from any thread concurrently.
#ifndef HISA_KERNELS_ENGINE_H_
#define HISA_KERNELS_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/host_parallel.h"
#include "kernels/types.h"

namespace hisa {

struct EngineOptions {
  // "cpu", "cuda", or "auto" (cuda when built with CUDA and a GPU is usable).
  std::string backend = "auto";
  // Budget for bytes_reserved() summed over live requests.
  int64_t memory_budget_bytes = int64_t{4} << 30;
  // A request idle (no Append/Select) for longer is removed by ExpireIdle.
  // absl::InfiniteDuration() disables expiry.
  absl::Duration idle_ttl = absl::Minutes(10);
  int max_requests = 65536;
  int max_layers = 256;
  int max_heads = kMaxHeads;
  // CPU backend worker threads; 0 = one per hardware thread.
  int num_threads = 0;
  // CUDA device ordinal for the cuda backend.
  int cuda_device = 0;
  // Clock for leases; tests inject a fake one.
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

struct RequestInfo {
  std::string id;
  RequestConfig config;
  std::vector<int64_t> layer_lengths;
  int64_t bytes_reserved = 0;
  absl::Time last_used;
};

struct EngineStats {
  std::string backend;
  int64_t bytes_in_use = 0;
  int64_t memory_budget_bytes = 0;
  int64_t live_requests = 0;
  int64_t expired_total = 0;
  int64_t released_total = 0;
};

class Engine {
 public:
  // Builds the backend named by options.backend.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options);
  // Uses the given backend (tests, benchmarks).
  Engine(EngineOptions options, std::unique_ptr<Backend> backend);
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Creates an empty request. Idempotent: creating an existing id with the
  // same config is OK; with a different config it is ALREADY_EXISTS.
  absl::Status CreateRequest(absl::string_view id, const RequestConfig& config);

  // Stores a chunk (SPEC 5 Append) and returns the layer's new length. A
  // chunk entirely inside the stored range with equal bytes is a no-op; one
  // that overlaps the end stores only its new tail after checking the
  // overlap. Gap or conflicting bytes: FAILED_PRECONDITION; nothing stored.
  absl::StatusOr<int64_t> Append(const KeyChunk& chunk);

  // Selects for a batch of rows that may span many requests and layers.
  // results.size() must equal rows.size(); each result gets its own status
  // (one bad row fails only itself). `times` may be null; stage times are
  // ADDED to it, so one struct can accumulate over several calls.
  // `parallel` (may be null) lends threads to the host-side loops over the
  // rows (host_parallel.h): their checks here, and the backend's packing
  // and copying of queries and outputs.
  void Select(absl::Span<const QueryRow> rows, absl::Span<RowResult> results,
              SelectStageTimes* times = nullptr,
              HostParallel* parallel = nullptr);

  // Removes a request. Idempotent: returns true if it existed.
  bool Release(absl::string_view id);

  // Removes every request idle for longer than idle_ttl; returns their ids.
  std::vector<std::string> ExpireIdle();

  absl::StatusOr<RequestInfo> GetRequestInfo(absl::string_view id) const;
  std::vector<RequestInfo> ListRequests() const;
  EngineStats Stats() const;
  const EngineOptions& options() const { return options_; }
  absl::string_view backend_name() const { return backend_->name(); }
  std::string device_description() const {
    return backend_->device_description();
  }

 private:
  struct Request;

  // The live request `id` at time now_ns (the clock, read once per call by
  // the caller). A request whose lease ran out is removed here (NOT_FOUND)
  // even before the next ExpireIdle sweep.
  absl::StatusOr<std::shared_ptr<Request>> Find(absl::string_view id,
                                                int64_t now_ns) const;
  int64_t NowNs() const;
  absl::Status ValidateChunk(const Request& request,
                             const KeyChunk& chunk) const;
  absl::Status ValidateRow(const Request& request, const QueryRow& row) const;
  void RemoveLocked(absl::string_view id) const;
  bool IdleLocked(const Request& request, int64_t now_ns) const;

  const EngineOptions options_;
  const std::unique_ptr<Backend> backend_;

  // std::mutex rather than absl::Mutex: Debian's Abseil is not built with
  // ThreadSanitizer instrumentation, the C++ library's mutexes are
  // intercepted, so TSan builds see every lock. Guards everything below.
  mutable std::mutex mu_;
  // Mutable: Find() retires expired requests lazily.
  mutable absl::flat_hash_map<std::string, std::shared_ptr<Request>> requests_;
  mutable int64_t bytes_in_use_ = 0;
  mutable int64_t expired_total_ = 0;
  int64_t released_total_ = 0;
};

// Validates a RequestConfig against the engine limits (SPEC 2, 4).
absl::Status ValidateRequestConfig(const RequestConfig& config,
                                   int max_layers);

}  // namespace hisa

#endif  // HISA_KERNELS_ENGINE_H_
