// The metrics registry renders every documented series, and the text passes
// `promtool check metrics` (skipped when promtool is absent).
#include "server/service_metrics.h"

#include <cstdio>
#include <memory>

#include "gtest/gtest.h"
#include "kernels/engine.h"
#include "tests/service/wire_test_client.h"

namespace hisa {
namespace {

TEST(ServiceMetricsTest, RendersEverySeriesAndPassesPromtool) {
  EngineOptions options;
  options.backend = "cpu";
  options.num_threads = 1;
  options.memory_budget_bytes = 12345678;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ServiceMetrics metrics(engine->get());
  metrics.ObserveRpc(RpcMethod::kSelect, absl::Microseconds(150));
  metrics.ObserveRpc(RpcMethod::kCreateRequest, absl::Seconds(20));
  metrics.CountError(RpcMethod::kSelect, absl::StatusCode::kNotFound);
  metrics.CountError(RpcMethod::kSelect, absl::StatusCode::kNotFound);
  metrics.CountError(RpcMethod::kAppend, grpc::StatusCode::CANCELLED);
  metrics.CountError(RpcMethod::kAppend, absl::StatusCode::kOk);
  metrics.StreamOpened(RpcMethod::kSelect);
  SelectStageTimes stages;
  stages.block_scoring = 1e-4;
  stages.topk = 2e-5;
  metrics.ObserveSelectBatch(12, absl::Microseconds(300), stages);
  metrics.ObserveSelectQueueWait(absl::Microseconds(40));
  metrics.CountSelectedRows(SelectMode::kDense, 5);
  metrics.CountSelectedRows(SelectMode::kHisa, 7);
  metrics.CountAppend(128, 128 * 132);

  const std::string text = metrics.RenderText();
  using testing::MetricValue;
  EXPECT_EQ(*MetricValue(text, "hisa_rpc_duration_seconds_count{method=\"Select\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_rpc_duration_seconds_bucket{method=\"CreateRequest\",le=\"+Inf\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_errors_total{code=\"NOT_FOUND\",method=\"Select\"}"), 2);
  EXPECT_EQ(*MetricValue(text, "hisa_errors_total{code=\"CANCELLED\",method=\"Append\"}"), 1);
  EXPECT_FALSE(MetricValue(text, "hisa_errors_total{code=\"OK\",method=\"Append\"}").ok());
  EXPECT_EQ(*MetricValue(text, "hisa_open_streams{method=\"Select\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_open_streams{method=\"Append\"}"), 0);
  EXPECT_EQ(*MetricValue(text, "hisa_select_batch_rows_sum"), 12);
  EXPECT_EQ(*MetricValue(text, "hisa_select_batch_duration_seconds_count"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_select_queue_wait_seconds_count"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_select_stage_duration_seconds_count{stage=\"block_scoring\"}"), 1);
  EXPECT_EQ(*MetricValue(text, "hisa_select_stage_duration_seconds_count{stage=\"prepare\"}"), 0);
  EXPECT_EQ(*MetricValue(text, "hisa_selected_rows_total{mode=\"dense\"}"), 5);
  EXPECT_EQ(*MetricValue(text, "hisa_selected_rows_total{mode=\"hisa\"}"), 7);
  EXPECT_EQ(*MetricValue(text, "hisa_append_tokens_total"), 128);
  EXPECT_EQ(*MetricValue(text, "hisa_append_bytes_total"), 128 * 132);
  EXPECT_EQ(*MetricValue(text, "hisa_cache_used_bytes"), 0);
  EXPECT_EQ(*MetricValue(text, "hisa_cache_budget_bytes"), 12345678);
  EXPECT_EQ(*MetricValue(text, "hisa_live_requests"), 0);
  EXPECT_EQ(*MetricValue(text, "hisa_expired_requests_total"), 0);
  EXPECT_EQ(*MetricValue(text, "hisa_released_requests_total"), 0);

  absl::StatusOr<testing::PromtoolResult> lint =
      testing::PromtoolCheckMetrics(text);
  if (!lint.ok()) GTEST_SKIP() << lint.status() << " (metrics not linted)";
  EXPECT_EQ(lint->exit_code, 0) << lint->output << "\n" << text;
}

}  // namespace
}  // namespace hisa
