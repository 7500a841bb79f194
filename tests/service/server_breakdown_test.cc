// The load generator's server-time breakdown (bench/loadgen/
// server_breakdown.h) from /metrics bodies as hisa_server writes them.
#include "bench/loadgen/server_breakdown.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace hisa {
namespace {

// A /metrics body: `messages` Selects and the given stage sums and counts
// (the other Select histograms scaled by the message count).
std::string Metrics(double messages, const double (&stage_sum)[kNumSelectStages],
                    const double (&stage_count)[kNumSelectStages]) {
  std::string text = absl::StrCat(
      "# TYPE hisa_rpc_duration_seconds histogram\n",
      "hisa_rpc_duration_seconds_count{method=\"Select\"} ", messages, "\n",
      "hisa_rpc_duration_seconds_sum{method=\"Select\"} ", messages * 1e-3, "\n",
      "hisa_select_queue_wait_seconds_sum ", messages * 1e-4, "\n",
      "hisa_select_batch_duration_seconds_sum ", messages * 6e-4, "\n");
  for (int i = 0; i < kNumSelectStages; ++i) {
    absl::StrAppend(&text, "hisa_select_stage_duration_seconds_sum{stage=\"",
                    kSelectStageNames[i], "\"} ", stage_sum[i], "\n",
                    "hisa_select_stage_duration_seconds_count{stage=\"",
                    kSelectStageNames[i], "\"} ", stage_count[i], "\n");
  }
  return text;
}

// 32 messages, each timing `validate` (3 us), `prepare` (10 us) and
// `finish` (7 us), 2 of them the GPU stages (block scoring 20 us, token
// scoring 40 us, top-k 5 us), block choice never: the stages are means over
// the batches that timed them, not over every message.
TEST(ServerBreakdownTest, StagesAreMeansOverTheBatchesThatTimedThem) {
  const double zero[kNumSelectStages] = {};
  static_assert(kNumSelectStages == 7, "validate .. finish");
  const double sums[kNumSelectStages] = {32 * 3e-6, 32 * 10e-6, 2 * 20e-6, 0,
                                         2 * 40e-6, 2 * 5e-6,   32 * 7e-6};
  const double counts[kNumSelectStages] = {32, 32, 2, 0, 2, 2, 32};
  absl::StatusOr<ServerCounters> a = ParseServerCounters(Metrics(0, zero, zero));
  absl::StatusOr<ServerCounters> b = ParseServerCounters(Metrics(32, sums, counts));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string line = ServerBreakdown(*a, *b);
  EXPECT_NE(line.find("rpc 1.00 ms"), std::string::npos) << line;
  EXPECT_NE(line.find("engine 600.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("other 300.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("validate 3.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("prepare 10.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("block_scoring 20.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("block_choice -"), std::string::npos) << line;
  EXPECT_NE(line.find("token_scoring 40.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("topk 5.0 us"), std::string::npos) << line;
  EXPECT_NE(line.find("finish 7.0 us"), std::string::npos) << line;
  // No message between two scrapes: nothing to say.
  EXPECT_EQ(ServerBreakdown(*b, *b), "");
}

TEST(ServerBreakdownTest, MissingCounterIsNotFound) {
  const absl::StatusOr<ServerCounters> c =
      ParseServerCounters("hisa_select_queue_wait_seconds_sum 1\n");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace hisa
