// The interface between the engine (validation, request table, budget, TTL,
// locking; engine.h) and a compute backend (storage and selection kernels).
// The engine calls a backend only with arguments it has already validated, so
// backends check nothing the engine checks; they return INTERNAL for device
// faults only.
//
// A backend is chosen once at engine start: CpuBackend (cpu_backend.h, always
// built) or CudaBackend (cuda/cuda_backend.h, when built with CUDA).
//
// Thread safety: the engine serialises Append on one RequestStore against
// every other call on that store (writer lock); Matches, length, bytes_* and
// Select may run concurrently with each other (reader lock). Backend::Select
// may be called from several threads at once.
#ifndef HISA_KERNELS_BACKEND_H_
#define HISA_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/host_parallel.h"
#include "kernels/types.h"

namespace hisa {

// Keys, scales and block summaries of every layer of one request.
class RequestStore {
 public:
  virtual ~RequestStore() = default;

  // Number of tokens stored in `layer`.
  virtual int64_t length(int layer) const = 0;

  // Bytes reserved now: keys as stored (132 B/token for fp8 with D = 128),
  // summaries, and page slack. This is what the budget counts.
  virtual int64_t bytes_reserved() const = 0;

  // bytes_reserved() after appending `num_tokens` more tokens to `layer`.
  // Pure: reserves nothing.
  virtual int64_t BytesAfterAppend(int layer, int64_t num_tokens) const = 0;

  // True when the stored positions [chunk.first_position,
  // chunk.first_position + chunk.num_tokens) hold exactly chunk's bytes
  // (keys and, for fp8, scales). Requires that range to be stored.
  virtual absl::StatusOr<bool> Matches(const KeyChunk& chunk) const = 0;

  // Stores chunk at the end of its layer (chunk.first_position ==
  // length(chunk.layer)) and updates the summaries of the touched blocks only.
  // All or nothing: on error the store is unchanged.
  virtual absl::Status Append(const KeyChunk& chunk) = 0;
};

// Per-stage wall time of one Select batch, in seconds, summed over the batch.
// Stages a backend does not separate stay 0.
struct SelectStageTimes {
  double validate = 0;       // the engine: rows looked up and checked
  double prepare = 0;        // query decode, upload
  double block_scoring = 0;  // J(t, b) over eligible blocks
  double block_choice = 0;   // top-m with forced first/last blocks
  double token_scoring = 0;  // I(t, s) over candidates
  double topk = 0;           // top-k, sort, output
  double finish = 0;         // outputs copied into the rows' results
};
// The stages' names, in field order (the service's metric labels).
inline constexpr int kNumSelectStages = 7;
inline constexpr const char* kSelectStageNames[kNumSelectStages] = {
    "validate", "prepare",  "block_scoring", "block_choice",
    "token_scoring", "topk", "finish"};

// A validated query row handed to Backend::Select.
//   mode is kDense or kHisa (the engine resolved kAuto).
//   row.position < store->length(row.layer); row's shapes match config.
struct SelectTask {
  const RequestStore* store = nullptr;
  const RequestConfig* config = nullptr;
  const QueryRow* row = nullptr;
  SelectMode mode = SelectMode::kHisa;
  RowResult* result = nullptr;  // to fill: status, positions, scores
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda".
  virtual absl::string_view name() const = 0;

  // What the backend runs on, for GetInfo and logs: the CPU model and
  // thread count, or the GPU's name and memory.
  virtual std::string device_description() const = 0;

  // Empty storage for a request with this (validated) configuration.
  virtual absl::StatusOr<std::unique_ptr<RequestStore>> CreateStore(
      const RequestConfig& config) = 0;

  // Runs every task and fills its result: status OK, positions (exactly
  // row.k entries, ascending, -1 padded), scores when row.return_scores, and
  // mode_used. Tasks may span many stores, layers and modes. `times` and
  // `parallel` (threads for host-side loops over the tasks) may be null.
  virtual void Select(absl::Span<const SelectTask> tasks,
                      SelectStageTimes* times, HostParallel* parallel) = 0;
};

}  // namespace hisa

#endif  // HISA_KERNELS_BACKEND_H_
