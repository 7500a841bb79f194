// Reading a server's Prometheus endpoint from tools and tests: one HTTP GET
// over loopback and the value of one sample.
//
//   ASSIGN_OR_RETURN(std::string text, hisa::HttpGet(metrics_port, "/metrics"));
//   ASSIGN_OR_RETURN(double n, hisa::MetricValue(
//       text, "hisa_rpc_duration_seconds_count{method=\"Select\"}"));
#ifndef HISA_CLIENT_METRICS_SCRAPE_H_
#define HISA_CLIENT_METRICS_SCRAPE_H_

#include <string>

#include "absl/status/statusor.h"

namespace hisa {

// Body of GET http://127.0.0.1:port/path (HTTP/1.0, loopback only, 10 s
// socket timeouts); UNAVAILABLE on a connection error or a non-200 reply.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// The value of the first sample line starting with `series` followed by a
// space (e.g. `hisa_open_streams{method="Select"}`), or NOT_FOUND.
absl::StatusOr<double> MetricValue(const std::string& text,
                                   const std::string& series);

}  // namespace hisa

#endif  // HISA_CLIENT_METRICS_SCRAPE_H_
