// Where a hisa_server's time per Select message goes, from two scrapes of
// its /metrics (hisa_loadgen prints it per phase):
//
//   ASSIGN_OR_RETURN(std::string text, hisa::HttpGet(port, "/metrics"));
//   ASSIGN_OR_RETURN(hisa::ServerCounters before, hisa::ParseServerCounters(text));
//   ... the phase ...
//   std::cout << hisa::ServerBreakdown(before, after);
#ifndef HISA_BENCH_LOADGEN_SERVER_BREAKDOWN_H_
#define HISA_BENCH_LOADGEN_SERVER_BREAKDOWN_H_

#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace hisa {

// The server's Select histograms (sums in seconds, and counts). Only HISA
// Selects move them.
struct ServerCounters {
  double messages = 0;  // Select RPCs (one per message on a stream)
  double rpc = 0;       // read to reply ready
  double queue = 0;     // waiting for the batcher
  double batch = 0;     // Engine::Select of the batches
  double stage[kNumSelectStages] = {};  // kSelectStageNames order
  // Batches that timed each stage: the CUDA backend times its GPU stages
  // on one batch in 16 (deploy/README.md).
  double stage_count[kNumSelectStages] = {};
};

// The counters in a /metrics body; NOT_FOUND when one is missing.
absl::StatusOr<ServerCounters> ParseServerCounters(const std::string& text);

// "rpc X = queue Q + engine E (per timed batch: prepare .. top-k ..) +
// other O": means per message between two scrapes, except the stages: means
// over the batches that timed them ("-": none did). Empty when no message
// came between them.
std::string ServerBreakdown(const ServerCounters& a, const ServerCounters& b);

}  // namespace hisa

#endif  // HISA_BENCH_LOADGEN_SERVER_BREAKDOWN_H_
