// Prometheus metrics of the HISA service (prometheus-cpp core): RPC and
// engine-stage latencies, batch sizes, selected rows, appended tokens and
// bytes, errors by status code, and engine gauges read at scrape time.
//
//   hisa::ServiceMetrics metrics(engine.get());
//   prometheus::Exposer exposer("0.0.0.0:9464");
//   for (auto& c : metrics.collectables()) exposer.RegisterCollectable(c);
//   metrics.ObserveRpc(hisa::RpcMethod::kSelect, elapsed);
//
// Exposed series (all names pass `promtool check metrics`):
//   hisa_rpc_duration_seconds{method}          histogram: unary RPCs from
//       start to Finish; streams per message, from read to reply ready
//   hisa_errors_total{method,code}             counter: non-OK statuses,
//       RPC-level and in-band (per chunk, per row); code = "NOT_FOUND", ...
//   hisa_open_streams{method}                  gauge: Append/Select streams
//   hisa_select_batch_rows                     histogram: rows per engine
//       Select call (cross-stream batches)
//   hisa_select_batch_duration_seconds         histogram: engine Select wall
//       time per batch
//   hisa_select_queue_wait_seconds             histogram: time a Select
//       message waited in the batcher before its batch started
//   hisa_select_stage_duration_seconds{stage}  histogram: SelectStageTimes
//       per batch (validate: the engine's row checks; prepare,
//       block_scoring, block_choice, token_scoring, topk; finish: outputs
//       copied into the rows); stages a backend does not separate are not
//       observed, nor the CUDA backend's GPU stages outside the one batch
//       in 16 it times (cuda_backend.h)
//   hisa_selected_rows_total{mode}             counter: rows answered OK, by
//       the code path used (dense, hisa)
//   hisa_append_tokens_total, hisa_append_bytes_total   counters: tokens and
//       key+scale bytes of acknowledged chunks (retries included)
//   hisa_cache_used_bytes, hisa_cache_budget_bytes      gauges (engine)
//   hisa_live_requests                         gauge (engine)
//   hisa_expired_requests_total                counter: TTL expiries (engine)
//   hisa_released_requests_total               counter: Release calls that
//       removed a request (engine)
// Latency buckets run from 10 us to ~10 s, doubling; batch-row buckets from
// 1 to 16384, doubling.
//
// Thread safety: every method may be called from any thread. The engine
// passed to the constructor must outlive every scrape.
#ifndef HISA_SERVER_SERVICE_METRICS_H_
#define HISA_SERVER_SERVICE_METRICS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "kernels/backend.h"
#include "kernels/engine.h"
#include "kernels/types.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace hisa {

enum class RpcMethod : int {
  kCreateRequest = 0,
  kAppend = 1,
  kSelect = 2,
  kRelease = 3,
  kGetInfo = 4,
};
inline constexpr int kNumRpcMethods = 5;
// "CreateRequest", "Append", "Select", "Release", "GetInfo".
const char* RpcMethodName(RpcMethod method);

class ServiceMetrics {
 public:
  // `engine` may be null: then the engine gauges are not exported.
  explicit ServiceMetrics(const Engine* engine);
  ~ServiceMetrics();

  ServiceMetrics(const ServiceMetrics&) = delete;
  ServiceMetrics& operator=(const ServiceMetrics&) = delete;

  // What an Exposer should register: the registry of counters and
  // histograms, and the collector of engine gauges.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables() const;
  // Every series in the Prometheus text format (what /metrics serves).
  std::string RenderText() const;

  void ObserveRpc(RpcMethod method, absl::Duration elapsed);
  // No-op for OK. Engine statuses go through ToGrpcCode first.
  void CountError(RpcMethod method, grpc::StatusCode code);
  void CountError(RpcMethod method, absl::StatusCode code);
  void StreamOpened(RpcMethod method);
  void StreamClosed(RpcMethod method);

  void ObserveSelectBatch(int64_t rows, absl::Duration engine_time,
                          const SelectStageTimes& stages);
  void ObserveSelectQueueWait(absl::Duration waited);
  // mode_used: kDense or kHisa.
  void CountSelectedRows(SelectMode mode_used, int64_t rows);
  void CountAppend(int64_t tokens, int64_t bytes);

 private:
  class EngineCollector;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<EngineCollector> engine_collector_;

  std::array<prometheus::Histogram*, kNumRpcMethods> rpc_duration_{};
  std::array<prometheus::Gauge*, kNumRpcMethods> open_streams_{};
  prometheus::Family<prometheus::Counter>* errors_ = nullptr;
  prometheus::Histogram* batch_rows_ = nullptr;
  prometheus::Histogram* batch_duration_ = nullptr;
  prometheus::Histogram* queue_wait_ = nullptr;
  // kSelectStageNames order (kernels/backend.h)
  std::array<prometheus::Histogram*, kNumSelectStages> stage_duration_{};
  prometheus::Counter* rows_dense_ = nullptr;
  prometheus::Counter* rows_hisa_ = nullptr;
  prometheus::Counter* append_tokens_ = nullptr;
  prometheus::Counter* append_bytes_ = nullptr;
};

}  // namespace hisa

#endif  // HISA_SERVER_SERVICE_METRICS_H_
