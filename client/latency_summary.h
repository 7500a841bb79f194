// Percentile summary of latency samples, shared by the CLI, the demo and the
// load generator so they report the same statistics the same way.
//
//   std::vector<double> seconds = ...;        // one sample per message
//   hisa::LatencySummary s = hisa::Summarize(seconds);
//   std::cout << hisa::FormatSeconds(s.p50);  // "152.3 us"
//
// Percentiles use the nearest-rank definition on the sorted samples (p-th
// percentile = the ceil(p/100 * n)-th smallest), so p99.9 of fewer than 1000
// samples is the maximum; `count` is reported alongside so readers can judge.
// All values in seconds. An empty input gives all zeros. Thread-safe (pure).
#ifndef HISA_CLIENT_LATENCY_SUMMARY_H_
#define HISA_CLIENT_LATENCY_SUMMARY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace hisa {

struct LatencySummary {
  int64_t count = 0;
  double mean = 0;
  double min = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double p999 = 0;
  double max = 0;
};

// Takes the samples by value (it sorts them).
LatencySummary Summarize(std::vector<double> seconds);

// Nearest-rank percentile of already sorted samples; 0 when empty.
double PercentileOfSorted(const std::vector<double>& sorted, double percent);

// "850 ns", "152.3 us", "12.41 ms", "3.20 s".
std::string FormatSeconds(double seconds);

}  // namespace hisa

#endif  // HISA_CLIENT_LATENCY_SUMMARY_H_
