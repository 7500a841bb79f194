// hisa_demo: the README quick start's client. It plays a small disaggregated
// serving workload against a running server:
//   - creates --requests requests of --layers layers (fp8 keys, D = 128),
//   - prefills each layer with --prefill topic-structured tokens (chunked
//     Append on one stream),
//   - runs --decode_steps decode steps: per layer, append one token to every
//     request, then one batched Select message with one row per request
//     (HISA), plus the same rows in DENSE mode to measure agreement,
//   - prints example selections, latency percentiles, HISA vs DENSE recall,
//     the server's memory use, and where the metrics are.
//
//   hisa_server --listen=127.0.0.1:50051 --metrics_listen=127.0.0.1:9464 &
//   hisa_demo --target=127.0.0.1:50051
//   hisa_demo --server_binary=build/server/hisa_server   # starts its own
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/hisa_client.h"
#include "client/latency_summary.h"
#include "client/server_process.h"
#include "client/synthetic_workload.h"
#include "kernels/status_macros.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server address.");
ABSL_FLAG(std::string, server_binary, "",
          "Start this server binary on an ephemeral port instead of --target.");
ABSL_FLAG(std::vector<std::string>, server_args, {"--backend=auto"},
          "Flags for --server_binary (comma-separated).");
ABSL_FLAG(int, requests, 4, "Concurrent requests (sequences).");
ABSL_FLAG(int, layers, 8, "Layers per request.");
ABSL_FLAG(int64_t, prefill, 12288,
          "Prefill tokens per layer (> m * B = 8192 so HISA prunes blocks).");
ABSL_FLAG(int, decode_steps, 16, "Decode steps after the prefill.");
ABSL_FLAG(int, heads, 64, "Query heads H.");
ABSL_FLAG(int, k, 2048, "Top-k.");
ABSL_FLAG(int, m, 64, "HISA block budget.");
ABSL_FLAG(uint64_t, seed, 2026, "Workload seed.");
ABSL_FLAG(std::string, metrics_url, "http://127.0.0.1:9464/metrics",
          "Where the server exports Prometheus metrics (printed at the end).");
ABSL_FLAG(bool, keep, false, "Keep the requests (no Release) at the end.");

namespace hisa {
namespace {

constexpr int kHeadDim = 128;
constexpr int kBlockSize = 128;

// |a ∩ b| / |b| over the non-padding entries (both ascending).
double Recall(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t i = 0, j = 0, hits = 0, size_b = 0;
  while (j < b.size() && b[j] >= 0) ++size_b, ++j;
  j = 0;
  while (i < a.size() && a[i] >= 0 && j < size_b) {
    if (a[i] == b[j]) {
      ++hits, ++i, ++j;
    } else if (a[i] < b[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return size_b == 0 ? 1.0 : static_cast<double>(hits) / static_cast<double>(size_b);
}

void PrintSelection(const std::string& label, const RowResult& r, int64_t t) {
  absl::flat_hash_set<int32_t> blocks;
  int count = 0;
  int in_sink = 0, in_local = 0;
  const int32_t own_block = static_cast<int32_t>(t / kBlockSize);
  for (int32_t p : r.positions) {
    if (p < 0) break;
    ++count;
    blocks.insert(p / kBlockSize);
    if (p / kBlockSize == 0) ++in_sink;
    if (p / kBlockSize == own_block) ++in_local;
  }
  std::vector<int32_t> head(r.positions.begin(),
                            r.positions.begin() + std::min(count, 10));
  std::vector<int32_t> tail(r.positions.begin() + std::max(0, count - 6),
                            r.positions.begin() + count);
  std::cout << absl::StrFormat(
      "  %-6s t=%d: %d positions in %d of %d blocks (%d in the sink block, %d "
      "in the local block)\n         %s ... %s\n",
      label, t, count, blocks.size(), own_block + 1, in_sink, in_local,
      absl::StrJoin(head, " "), absl::StrJoin(tail, " "));
}

void PrintLatency(const std::string& what, const std::vector<double>& samples) {
  const LatencySummary s = Summarize(samples);
  std::cout << absl::StrFormat("  %-34s n=%-4d p50 %-10s p99 %-10s max %s\n",
                               what, s.count, FormatSeconds(s.p50),
                               FormatSeconds(s.p99), FormatSeconds(s.max));
}

absl::Status RunDemo() {
  std::unique_ptr<ServerProcess> server;
  std::string target = absl::GetFlag(FLAGS_target);
  if (!absl::GetFlag(FLAGS_server_binary).empty()) {
    ServerProcessOptions opts;
    opts.binary = absl::GetFlag(FLAGS_server_binary);
    opts.args = absl::GetFlag(FLAGS_server_args);
    ASSIGN_OR_RETURN(server, ServerProcess::Start(opts));
    target = server->target();
    std::cout << "started " << opts.binary << " (pid " << server->pid()
              << ") on " << target << "\n";
  }
  ClientOptions options;
  options.wait_for_ready = true;
  options.deadline = absl::Seconds(120);
  ASSIGN_OR_RETURN(std::unique_ptr<HisaClient> client,
                   HisaClient::Create(target, options));
  ASSIGN_OR_RETURN(v1::GetInfoResponse info, client->GetInfo());
  std::cout << absl::StrFormat(
      "server %s at %s: backend %s (%s), budget %.0f MiB, idle TTL %.0f s\n",
      info.server().version(), target, info.server().backend(),
      info.server().device(), info.server().memory_budget_bytes() / 1048576.0,
      info.server().idle_ttl_seconds());

  const int num_requests = absl::GetFlag(FLAGS_requests);
  const int num_layers = absl::GetFlag(FLAGS_layers);
  const int64_t prefill = absl::GetFlag(FLAGS_prefill);
  const int heads = absl::GetFlag(FLAGS_heads);
  const int k = absl::GetFlag(FLAGS_k);
  const int m = absl::GetFlag(FLAGS_m);
  if (num_requests < 1 || num_layers < 1 || prefill < 1 || heads < 1) {
    return absl::InvalidArgumentError(
        "--requests, --layers, --prefill and --heads must be positive");
  }

  // 1. Requests.
  std::vector<std::string> ids;
  RequestConfig config;
  config.num_layers = num_layers;
  config.head_dim = kHeadDim;
  config.block_size = kBlockSize;
  config.key_format = KeyFormat::kFp8E4M3;
  for (int r = 0; r < num_requests; ++r) {
    ids.push_back(absl::StrCat("demo-", getpid(), "-", r));
    RETURN_IF_ERROR(client->CreateRequest(ids.back(), config));
  }
  std::cout << absl::StrFormat(
      "created %d requests x %d layers (D %d, B %d, fp8 keys: 132 B/token)\n",
      num_requests, num_layers, kHeadDim, kBlockSize);

  // Each (request, layer) has its own topic structure.
  WorkloadShape shape;
  shape.head_dim = kHeadDim;
  shape.num_heads = heads;
  std::vector<std::unique_ptr<SyntheticLayer>> workloads;
  for (int r = 0; r < num_requests; ++r) {
    for (int l = 0; l < num_layers; ++l) {
      workloads.push_back(std::make_unique<SyntheticLayer>(
          shape, absl::GetFlag(FLAGS_seed) * 7919 + r * 131 + l));
    }
  }
  auto workload = [&](int r, int l) -> SyntheticLayer& {
    return *workloads[static_cast<size_t>(r * num_layers + l)];
  };

  // 2. Prefill: every (request, layer) chunk pipelined on one Append stream.
  std::vector<EncodedRows> prefill_keys;
  std::vector<KeyChunk> chunks;
  for (int r = 0; r < num_requests; ++r) {
    for (int l = 0; l < num_layers; ++l) {
      prefill_keys.push_back(EncodeRows(KeyFormat::kFp8E4M3,
                                        workload(r, l).Keys(0, prefill), kHeadDim));
    }
  }
  for (int r = 0; r < num_requests; ++r) {
    for (int l = 0; l < num_layers; ++l) {
      const EncodedRows& keys = prefill_keys[static_cast<size_t>(r * num_layers + l)];
      KeyChunk chunk;
      chunk.request_id = ids[r];
      chunk.layer = l;
      chunk.first_position = 0;
      chunk.num_tokens = prefill;
      chunk.format = KeyFormat::kFp8E4M3;
      chunk.keys = absl::MakeConstSpan(keys.bytes);
      chunk.scales = absl::MakeConstSpan(keys.scales);
      chunks.push_back(chunk);
    }
  }
  absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(std::unique_ptr<AppendStream> appends, client->OpenAppendStream());
  RETURN_IF_ERROR(appends->Append(chunks).status());
  const double prefill_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double prefill_mib = static_cast<double>(prefill) * num_layers *
                             num_requests * 132.0 / 1048576.0;
  std::cout << absl::StrFormat(
      "prefill: %d tokens x %d layers x %d requests = %.1f MiB in %s (%.0f "
      "MiB/s, messages <= %d B)\n",
      prefill, num_layers, num_requests, prefill_mib,
      FormatSeconds(prefill_seconds), prefill_mib / prefill_seconds,
      appends->max_message_bytes());
  prefill_keys.clear();

  // 3. Decode steps.
  ASSIGN_OR_RETURN(std::unique_ptr<SelectStream> select, client->OpenSelectStream());
  std::vector<double> append_lat, hisa_lat, dense_lat, hisa_server, step_lat;
  std::vector<double> recalls;
  int identical = 0;
  std::vector<RowResult> example_hisa, example_dense;
  int64_t example_t = 0;
  const int steps = std::max(0, absl::GetFlag(FLAGS_decode_steps));
  for (int step = 0; step < steps; ++step) {
    const int64_t t = prefill + step;
    const absl::Time step_start = absl::Now();
    for (int l = 0; l < num_layers; ++l) {
      // The new token's key of every request, one Append message each.
      std::vector<EncodedRows> new_keys;
      std::vector<KeyChunk> token_chunks;
      for (int r = 0; r < num_requests; ++r) {
        new_keys.push_back(EncodeRows(KeyFormat::kFp8E4M3,
                                      workload(r, l).Keys(t, 1), kHeadDim));
      }
      for (int r = 0; r < num_requests; ++r) {
        KeyChunk c;
        c.request_id = ids[r];
        c.layer = l;
        c.first_position = t;
        c.num_tokens = 1;
        c.format = KeyFormat::kFp8E4M3;
        c.keys = absl::MakeConstSpan(new_keys[r].bytes);
        c.scales = absl::MakeConstSpan(new_keys[r].scales);
        token_chunks.push_back(c);
      }
      absl::Time t0 = absl::Now();
      RETURN_IF_ERROR(appends->Append(token_chunks).status());
      append_lat.push_back(absl::ToDoubleSeconds(absl::Now() - t0));

      // One batched message: one row per request.
      std::vector<EncodedRows> q(num_requests);
      std::vector<std::vector<float>> w(num_requests);
      std::vector<QueryRow> rows;
      for (int r = 0; r < num_requests; ++r) {
        std::vector<float> qf;
        workload(r, l).Query(t, &qf, &w[r]);
        q[r] = EncodeRows(KeyFormat::kFp8E4M3, qf, kHeadDim);
      }
      for (int r = 0; r < num_requests; ++r) {
        rows.push_back(MakeQueryRow(ids[r], l, t, heads, q[r], w[r],
                                    SelectMode::kHisa, k, m));
      }
      t0 = absl::Now();
      ASSIGN_OR_RETURN(SelectResult hisa, select->Select(rows));
      hisa_lat.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
      hisa_server.push_back(hisa.server_seconds);

      for (QueryRow& row : rows) row.mode = SelectMode::kDense;
      t0 = absl::Now();
      ASSIGN_OR_RETURN(SelectResult dense, select->Select(rows));
      dense_lat.push_back(absl::ToDoubleSeconds(absl::Now() - t0));

      for (int r = 0; r < num_requests; ++r) {
        RETURN_IF_ERROR(hisa.rows[r].status);
        RETURN_IF_ERROR(dense.rows[r].status);
        recalls.push_back(Recall(hisa.rows[r].positions, dense.rows[r].positions));
        if (hisa.rows[r].positions == dense.rows[r].positions) ++identical;
      }
      if (step == steps - 1 && l == 0) {
        example_hisa = hisa.rows;
        example_dense = dense.rows;
        example_t = t;
      }
    }
    step_lat.push_back(absl::ToDoubleSeconds(absl::Now() - step_start));
  }

  // 4. Report.
  if (steps > 0) {
    std::cout << absl::StrFormat(
        "\nexample selections (request %s, layer 0, last decode step; k %d, m "
        "%d, B %d):\n",
        ids[0], k, m, kBlockSize);
    PrintSelection("HISA", example_hisa[0], example_t);
    PrintSelection("DENSE", example_dense[0], example_t);

    std::cout << absl::StrFormat(
        "\nlatency (%d decode steps x %d layers, %d requests batched per "
        "message):\n",
        steps, num_layers, num_requests);
    PrintLatency(absl::StrCat("Append 1 token x ", num_requests, " requests"),
                 append_lat);
    PrintLatency(absl::StrCat("Select HISA, ", num_requests, " rows"), hisa_lat);
    PrintLatency("  of which server time", hisa_server);
    PrintLatency(absl::StrCat("Select DENSE, ", num_requests, " rows"), dense_lat);
    PrintLatency(absl::StrCat("decode step (", num_layers,
                              " layers, incl. DENSE check)"),
                 step_lat);

    double mean = 0, worst = 1;
    for (double r : recalls) {
      mean += r;
      worst = std::min(worst, r);
    }
    mean /= static_cast<double>(recalls.size());
    std::cout << absl::StrFormat(
        "\nHISA vs DENSE over %d rows at t >= %d (context > m*B = %d, so HISA "
        "keeps %d of %d+ blocks):\n  mean recall |HISA & DENSE| / |DENSE| "
        "%.4f, min %.4f; identical selections %d/%d\n",
        recalls.size(), prefill, m * kBlockSize, m,
        static_cast<int>(prefill / kBlockSize + 1), mean, worst, identical,
        recalls.size());
  }
  RETURN_IF_ERROR(select->Close());
  RETURN_IF_ERROR(appends->Close());

  ASSIGN_OR_RETURN(v1::GetInfoResponse after, client->GetInfo(ids));
  int64_t reserved = 0;
  for (const v1::RequestInfo& r : after.requests()) reserved += r.bytes_reserved();
  std::cout << absl::StrFormat(
      "\nserver memory: these requests %.1f MiB; in use %.1f MiB of %.1f MiB "
      "budget; %d live requests\n",
      reserved / 1048576.0, after.server().bytes_in_use() / 1048576.0,
      after.server().memory_budget_bytes() / 1048576.0,
      after.server().live_requests());
  if (!absl::GetFlag(FLAGS_keep)) {
    for (const std::string& id : ids) RETURN_IF_ERROR(client->Release(id).status());
    std::cout << "released " << ids.size() << " requests\n";
  }
  if (server != nullptr) {
    if (server->metrics_port() > 0) {
      std::cout << "metrics were at http://127.0.0.1:" << server->metrics_port()
                << "/metrics (this demo's own server, stopping now)\n";
    }
    return server->Stop();
  }
  std::cout << "metrics: " << absl::GetFlag(FLAGS_metrics_url)
            << "  (curl it, or point Prometheus/Grafana at it: deploy/)\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace hisa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "hisa_demo [--target=HOST:PORT | --server_binary=PATH]: a small decode "
      "workload against the HISA indexing service.");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = hisa::RunDemo();
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return 1;
  }
  return 0;
}
