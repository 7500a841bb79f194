#include "client/latency_summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"

namespace hisa {

double PercentileOfSorted(const std::vector<double>& sorted, double percent) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(percent / 100.0 * static_cast<double>(sorted.size()));
  const size_t index =
      static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(sorted.size()))) - 1;
  return sorted[index];
}

LatencySummary Summarize(std::vector<double> seconds) {
  LatencySummary s;
  if (seconds.empty()) return s;
  std::sort(seconds.begin(), seconds.end());
  s.count = static_cast<int64_t>(seconds.size());
  s.mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) /
           static_cast<double>(seconds.size());
  s.min = seconds.front();
  s.max = seconds.back();
  s.p50 = PercentileOfSorted(seconds, 50);
  s.p90 = PercentileOfSorted(seconds, 90);
  s.p99 = PercentileOfSorted(seconds, 99);
  s.p999 = PercentileOfSorted(seconds, 99.9);
  return s;
}

std::string FormatSeconds(double seconds) {
  const double a = std::fabs(seconds);
  if (a < 1e-6) return absl::StrFormat("%.0f ns", seconds * 1e9);
  if (a < 1e-3) return absl::StrFormat("%.1f us", seconds * 1e6);
  if (a < 1.0) return absl::StrFormat("%.2f ms", seconds * 1e3);
  return absl::StrFormat("%.2f s", seconds);
}

}  // namespace hisa
