#include "bench/loadgen/server_breakdown.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/latency_summary.h"
#include "client/metrics_scrape.h"
#include "kernels/status_macros.h"

namespace hisa {

absl::StatusOr<ServerCounters> ParseServerCounters(const std::string& text) {
  ServerCounters c;
  ASSIGN_OR_RETURN(c.messages,
                   MetricValue(text, "hisa_rpc_duration_seconds_count{method=\"Select\"}"));
  ASSIGN_OR_RETURN(c.rpc,
                   MetricValue(text, "hisa_rpc_duration_seconds_sum{method=\"Select\"}"));
  ASSIGN_OR_RETURN(c.queue, MetricValue(text, "hisa_select_queue_wait_seconds_sum"));
  ASSIGN_OR_RETURN(c.batch, MetricValue(text, "hisa_select_batch_duration_seconds_sum"));
  for (int i = 0; i < kNumSelectStages; ++i) {
    const std::string stage = absl::StrCat("{stage=\"", kSelectStageNames[i], "\"}");
    ASSIGN_OR_RETURN(
        c.stage[i], MetricValue(text, absl::StrCat("hisa_select_stage_duration_seconds_sum",
                                                   stage)));
    ASSIGN_OR_RETURN(
        c.stage_count[i],
        MetricValue(text, absl::StrCat("hisa_select_stage_duration_seconds_count", stage)));
  }
  return c;
}

std::string ServerBreakdown(const ServerCounters& a, const ServerCounters& b) {
  const double n = b.messages - a.messages;
  if (n <= 0) return "";
  auto per = [&](double x, double y) { return FormatSeconds((y - x) / n); };
  std::string stages;
  for (int i = 0; i < kNumSelectStages; ++i) {
    const double timed = b.stage_count[i] - a.stage_count[i];
    absl::StrAppend(&stages, i > 0 ? ", " : "", kSelectStageNames[i], " ",
                    timed > 0 ? FormatSeconds((b.stage[i] - a.stage[i]) / timed)
                              : std::string("-"));
  }
  const double other =
      ((b.rpc - a.rpc) - (b.queue - a.queue) - (b.batch - a.batch)) / n;
  return absl::StrFormat("rpc %s = queue %s + engine %s (per timed batch: %s) + other %s",
                         per(a.rpc, b.rpc), per(a.queue, b.queue),
                         per(a.batch, b.batch), stages, FormatSeconds(other));
}

}  // namespace hisa
