#include "server/service_metrics.h"

#include <cmath>
#include <utility>

#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"
#include "prometheus/text_serializer.h"
#include "proto/status_codes.h"

namespace hisa {
namespace {

// 10 us, 20 us, ..., 10.5 s: decode steps take tens of microseconds, long
// prefill batches and slow clients take seconds.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (int i = 0; i <= 20; ++i) buckets.push_back(1e-5 * std::ldexp(1.0, i));
  return buckets;
}

prometheus::Histogram::BucketBoundaries RowBuckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (int i = 0; i <= 14; ++i) buckets.push_back(std::ldexp(1.0, i));
  return buckets;
}

prometheus::MetricFamily Scalar(std::string name, std::string help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

const char* RpcMethodName(RpcMethod method) {
  switch (method) {
    case RpcMethod::kCreateRequest:
      return "CreateRequest";
    case RpcMethod::kAppend:
      return "Append";
    case RpcMethod::kSelect:
      return "Select";
    case RpcMethod::kRelease:
      return "Release";
    case RpcMethod::kGetInfo:
      return "GetInfo";
  }
  return "Unknown";
}

// Reads the engine's state at scrape time, so the gauges are never stale.
class ServiceMetrics::EngineCollector : public prometheus::Collectable {
 public:
  explicit EngineCollector(const Engine* engine) : engine_(engine) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> families;
    if (engine_ == nullptr) return families;
    const EngineStats stats = engine_->Stats();
    using prometheus::MetricType;
    families.push_back(Scalar("hisa_cache_used_bytes",
                              "Bytes reserved by the key caches of live requests.",
                              MetricType::Gauge,
                              static_cast<double>(stats.bytes_in_use)));
    families.push_back(Scalar("hisa_cache_budget_bytes",
                              "Byte budget for the key caches.", MetricType::Gauge,
                              static_cast<double>(stats.memory_budget_bytes)));
    families.push_back(Scalar("hisa_live_requests",
                              "Requests currently stored.", MetricType::Gauge,
                              static_cast<double>(stats.live_requests)));
    families.push_back(Scalar("hisa_expired_requests_total",
                              "Requests removed by the idle TTL.",
                              MetricType::Counter,
                              static_cast<double>(stats.expired_total)));
    families.push_back(Scalar("hisa_released_requests_total",
                              "Requests removed by Release.", MetricType::Counter,
                              static_cast<double>(stats.released_total)));
    return families;
  }

 private:
  const Engine* const engine_;
};

ServiceMetrics::ServiceMetrics(const Engine* engine)
    : registry_(std::make_shared<prometheus::Registry>()),
      engine_collector_(std::make_shared<EngineCollector>(engine)) {
  auto& rpc_duration =
      prometheus::BuildHistogram()
          .Name("hisa_rpc_duration_seconds")
          .Help("Server-side latency of unary RPCs (start to finish) and of "
                "each streamed message (read to reply ready), by method.")
          .Register(*registry_);
  auto& open_streams = prometheus::BuildGauge()
                           .Name("hisa_open_streams")
                           .Help("Open Append and Select streams, by method.")
                           .Register(*registry_);
  for (int m = 0; m < kNumRpcMethods; ++m) {
    const char* name = RpcMethodName(static_cast<RpcMethod>(m));
    rpc_duration_[m] = &rpc_duration.Add({{"method", name}}, LatencyBuckets());
    const auto method = static_cast<RpcMethod>(m);
    if (method == RpcMethod::kAppend || method == RpcMethod::kSelect) {
      open_streams_[m] = &open_streams.Add({{"method", name}});
    }
  }
  errors_ = &prometheus::BuildCounter()
                 .Name("hisa_errors_total")
                 .Help("Non-OK statuses by method and code, RPC-level and "
                       "in-band (per Append chunk, per Select row).")
                 .Register(*registry_);
  batch_rows_ = &prometheus::BuildHistogram()
                     .Name("hisa_select_batch_rows")
                     .Help("Query rows per engine Select call (rows of "
                           "concurrent streams are batched together).")
                     .Register(*registry_)
                     .Add({}, RowBuckets());
  batch_duration_ = &prometheus::BuildHistogram()
                         .Name("hisa_select_batch_duration_seconds")
                         .Help("Wall time of one engine Select call.")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets());
  queue_wait_ = &prometheus::BuildHistogram()
                     .Name("hisa_select_queue_wait_seconds")
                     .Help("Time a Select message waited for its batch to "
                           "start.")
                     .Register(*registry_)
                     .Add({}, LatencyBuckets());
  auto& stages = prometheus::BuildHistogram()
                     .Name("hisa_select_stage_duration_seconds")
                     .Help("Engine Select time per stage and batch, summed over "
                           "the batch's rows.")
                     .Register(*registry_);
  for (int s = 0; s < kNumSelectStages; ++s) {
    stage_duration_[s] = &stages.Add({{"stage", kSelectStageNames[s]}},
                                     LatencyBuckets());
  }
  auto& rows = prometheus::BuildCounter()
                   .Name("hisa_selected_rows_total")
                   .Help("Query rows answered OK, by the code path used.")
                   .Register(*registry_);
  rows_dense_ = &rows.Add({{"mode", "dense"}});
  rows_hisa_ = &rows.Add({{"mode", "hisa"}});
  append_tokens_ = &prometheus::BuildCounter()
                        .Name("hisa_append_tokens_total")
                        .Help("Tokens of acknowledged Append chunks, retries "
                              "included.")
                        .Register(*registry_)
                        .Add({});
  append_bytes_ = &prometheus::BuildCounter()
                       .Name("hisa_append_bytes_total")
                       .Help("Key and scale bytes of acknowledged Append "
                             "chunks, retries included.")
                       .Register(*registry_)
                       .Add({});
}

ServiceMetrics::~ServiceMetrics() = default;

std::vector<std::shared_ptr<prometheus::Collectable>>
ServiceMetrics::collectables() const {
  return {registry_, engine_collector_};
}

std::string ServiceMetrics::RenderText() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (prometheus::MetricFamily& family : engine_collector_->Collect()) {
    families.push_back(std::move(family));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void ServiceMetrics::ObserveRpc(RpcMethod method, absl::Duration elapsed) {
  rpc_duration_[static_cast<int>(method)]->Observe(
      absl::ToDoubleSeconds(elapsed));
}

void ServiceMetrics::CountError(RpcMethod method, grpc::StatusCode code) {
  if (code == grpc::StatusCode::OK) return;
  errors_
      ->Add({{"method", RpcMethodName(method)}, {"code", StatusCodeName(code)}})
      .Increment();
}

void ServiceMetrics::CountError(RpcMethod method, absl::StatusCode code) {
  CountError(method, ToGrpcCode(code));
}

void ServiceMetrics::StreamOpened(RpcMethod method) {
  if (prometheus::Gauge* gauge = open_streams_[static_cast<int>(method)]) {
    gauge->Increment();
  }
}

void ServiceMetrics::StreamClosed(RpcMethod method) {
  if (prometheus::Gauge* gauge = open_streams_[static_cast<int>(method)]) {
    gauge->Decrement();
  }
}

void ServiceMetrics::ObserveSelectBatch(int64_t rows,
                                        absl::Duration engine_time,
                                        const SelectStageTimes& stages) {
  batch_rows_->Observe(static_cast<double>(rows));
  batch_duration_->Observe(absl::ToDoubleSeconds(engine_time));
  const double values[kNumSelectStages] = {
      stages.validate,      stages.prepare, stages.block_scoring,
      stages.block_choice,  stages.token_scoring, stages.topk,
      stages.finish};
  for (int s = 0; s < kNumSelectStages; ++s) {
    // A backend leaves stages it does not time at 0; observing those would
    // claim they took no time.
    if (values[s] > 0) stage_duration_[s]->Observe(values[s]);
  }
}

void ServiceMetrics::ObserveSelectQueueWait(absl::Duration waited) {
  queue_wait_->Observe(absl::ToDoubleSeconds(waited));
}

void ServiceMetrics::CountSelectedRows(SelectMode mode_used, int64_t rows) {
  (mode_used == SelectMode::kDense ? rows_dense_ : rows_hisa_)
      ->Increment(static_cast<double>(rows));
}

void ServiceMetrics::CountAppend(int64_t tokens, int64_t bytes) {
  append_tokens_->Increment(static_cast<double>(tokens));
  append_bytes_->Increment(static_cast<double>(bytes));
}

}  // namespace hisa
