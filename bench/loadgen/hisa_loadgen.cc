// hisa_loadgen: load generator for the HISA indexing service, with a plain
// gRPC echo of the same message sizes measured in the same run as baseline.
//
//   hisa_loadgen                                  # starts build's hisa_server
//   hisa_loadgen --server_binary=/path/hisa_server --server_args=--backend=cuda
//   hisa_loadgen --target=10.0.0.5:50051          # an already running server
//   hisa_loadgen --streams=1,4 --decode_rows=1,64 --prefill_rows=256
//                --results_md=bench/loadgen/RESULTS_loadgen.md   (one line)
//
// Workload (defaults = DeepSeek-V3.2 indexer shapes): R requests of one layer
// each, --context L tokens of fp8 keys (D = 128, 132 B/token) appended up
// front (the Append throughput is reported); then, per concurrency S in
// --streams, S client streams on one channel each send messages ping-pong
// (send, wait for the reply, repeat) for --seconds:
//   decode R:   one message = R rows from R different requests, t = L - 1,
//               H = 64 fp8 heads, k = 2048, m = 64 (B = 128 from the request);
//   prefill P:  one message = P rows of one request at t = L-P .. L-1.
// Alternating with the HISA rounds of each phase (--rounds), the same S
// streams send echo messages of the same serialized request size and ask for
// replies of the mean SelectResponse size, through the same client stream
// code (client/bidi_stream.h), to a hisa_echo_server process (or
// in-process); alternating keeps load from elsewhere on the machine from
// favouring either side.
//
// Reported per phase: messages, rows/s, latency p50/p99/p99.9, the server's
// own time per message (SelectResponse.server_seconds: read to reply ready,
// queueing and engine time included), the remainder (latency minus server
// time: transport, serialization, client decode), the echo's p50/p99/p99.9,
// and the ratios. When the load generator started the server, also where
// the server's time per message goes: the means over the phase of its own
// /metrics histograms (RPC, batch queue wait, engine batch and its stages).
// Then the three anchors: decode 1-row p50 vs echo p50 (target <= 1.3x),
// 64-row p50 vs 1-row p50 (target <= 3x), compact position bytes vs raw
// int32 (target <= 1/3).
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/loadgen/echo.grpc.pb.h"
#include "bench/loadgen/echo_service.h"
#include "bench/loadgen/server_breakdown.h"
#include "client/bidi_stream.h"
#include "client/hisa_client.h"
#include "client/latency_summary.h"
#include "client/metrics_scrape.h"
#include "client/server_process.h"
#include "client/synthetic_workload.h"
#include "kernels/backend.h"
#include "kernels/status_macros.h"

#ifndef HISA_SERVER_BINARY
#define HISA_SERVER_BINARY ""
#endif
#ifndef HISA_ECHO_SERVER_BINARY
#define HISA_ECHO_SERVER_BINARY ""
#endif

ABSL_FLAG(std::string, target, "",
          "A running server (host:port or unix:/path); empty = start "
          "--server_binary on an ephemeral loopback port.");
ABSL_FLAG(std::string, server_binary, HISA_SERVER_BINARY,
          "hisa_server to start when --target is empty.");
ABSL_FLAG(std::vector<std::string>, server_args,
          std::vector<std::string>({"--backend=auto", "--metrics_listen=127.0.0.1:0"}),
          "Flags for --server_binary (comma-separated).");
ABSL_FLAG(std::string, echo_binary, HISA_ECHO_SERVER_BINARY,
          "hisa_echo_server for the baseline (its own process).");
ABSL_FLAG(bool, echo_in_process, false,
          "Serve the echo baseline inside this process instead.");
ABSL_FLAG(std::vector<std::string>, streams, std::vector<std::string>({"1", "4"}),
          "Concurrent streams; each value is a separate set of phases.");
ABSL_FLAG(std::vector<std::string>, decode_rows,
          std::vector<std::string>({"1", "64"}),
          "Rows per decode message (one row per request).");
ABSL_FLAG(int, prefill_rows, 256, "Rows per prefill message; 0 skips prefill.");
ABSL_FLAG(int64_t, context, 4096, "Tokens per request (L).");
ABSL_FLAG(int, heads, 64, "Query heads H.");
ABSL_FLAG(int, head_dim, 128, "Head dimension D.");
ABSL_FLAG(int, block_size, 128, "HISA block size B.");
ABSL_FLAG(int, k, 2048, "Top-k.");
ABSL_FLAG(int, m, 64, "HISA block budget.");
ABSL_FLAG(std::string, mode, "hisa", "hisa | dense | auto.");
ABSL_FLAG(double, seconds, 3.0, "Measured seconds per phase (HISA; echo the same).");
ABSL_FLAG(int, rounds, 3,
          "Each phase alternates this many HISA and echo rounds of "
          "seconds/rounds each.");
ABSL_FLAG(int, warmup, 10, "Unmeasured messages per stream before a phase.");
ABSL_FLAG(uint64_t, seed, 7, "Workload seed.");
ABSL_FLAG(std::string, results_md, "",
          "Write the results as a markdown section to this file.");
ABSL_FLAG(bool, results_append, false,
          "Append the section to --results_md instead of replacing the file.");

namespace hisa {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::StatusOr<std::vector<int>> ParseInts(const std::vector<std::string>& in,
                                           const char* flag) {
  std::vector<int> out;
  for (const std::string& s : in) {
    int v = 0;
    if (!absl::SimpleAtoi(s, &v) || v < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", s, "' is not a positive integer"));
    }
    out.push_back(v);
  }
  return out;
}

struct PhaseResult {
  std::string shape;     // "decode" or "prefill"
  int rows = 0;          // rows per message
  int streams = 0;
  int64_t messages = 0;
  double seconds = 0;
  int64_t request_bytes = 0;
  double response_bytes = 0;
  double compact_bytes_per_row = 0;
  int64_t row_errors = 0;
  std::string first_error;
  LatencySummary latency;
  LatencySummary server;     // server_seconds
  LatencySummary remainder;  // latency - server_seconds, per message
  LatencySummary echo;
  int64_t echo_messages = 0;
  std::string server_breakdown;  // ServerBreakdown, when scraped
};

// The server's counters from its /metrics (server_breakdown.h).
absl::StatusOr<ServerCounters> ScrapeServer(int metrics_port) {
  ASSIGN_OR_RETURN(const std::string text, HttpGet(metrics_port, "/metrics"));
  return ParseServerCounters(text);
}

// Runs `body(stream_index, measure)` on `streams` threads: each first sends
// `warmup` unmeasured messages, then all start measuring together and stop
// after `seconds`. body returns false to stop its thread early.
template <typename Body>
double RunConcurrently(int streams, double seconds, const Body& body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start;
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] { body(s, ready, go, seconds); });
  }
  while (ready.load() < streams) std::this_thread::sleep_for(std::chrono::microseconds(200));
  start = Clock::now();
  go.store(true);
  for (std::thread& t : threads) t.join();
  return Since(start);
}

// One stream's messages and samples.
struct StreamWork {
  v1::SelectRequest request;
  std::vector<double> latency, server, remainder;
  double response_bytes_sum = 0;
  double compact_bytes_sum = 0;
  int64_t rows_ok = 0;
  int64_t row_errors = 0;
  std::string first_error;
  absl::Status status;
};

class LoadGen {
 public:
  LoadGen(std::unique_ptr<HisaClient> client,
          std::shared_ptr<grpc::Channel> echo_channel)
      : client_(std::move(client)),
        echo_stub_(bench::EchoBench::NewStub(echo_channel)) {}

  absl::Status Setup(int num_requests) {
    const int64_t context = absl::GetFlag(FLAGS_context);
    WorkloadShape shape;
    shape.head_dim = absl::GetFlag(FLAGS_head_dim);
    shape.num_heads = absl::GetFlag(FLAGS_heads);
    RequestConfig config;
    config.num_layers = 1;
    config.head_dim = shape.head_dim;
    config.block_size = absl::GetFlag(FLAGS_block_size);
    config.key_format = KeyFormat::kFp8E4M3;
    std::vector<EncodedRows> keys;
    std::vector<KeyChunk> chunks;
    for (int r = 0; r < num_requests; ++r) {
      ids_.push_back(absl::StrCat("loadgen-", getpid(), "-", r));
      workloads_.push_back(std::make_unique<SyntheticLayer>(
          shape, absl::GetFlag(FLAGS_seed) * 1000 + r));
      RETURN_IF_ERROR(client_->CreateRequest(ids_.back(), config));
      keys.push_back(EncodeRows(KeyFormat::kFp8E4M3,
                                workloads_.back()->Keys(0, context), shape.head_dim));
    }
    for (int r = 0; r < num_requests; ++r) {
      KeyChunk c;
      c.request_id = ids_[r];
      c.layer = 0;
      c.first_position = 0;
      c.num_tokens = context;
      c.format = KeyFormat::kFp8E4M3;
      c.keys = absl::MakeConstSpan(keys[r].bytes);
      c.scales = absl::MakeConstSpan(keys[r].scales);
      chunks.push_back(c);
    }
    const Clock::time_point start = Clock::now();
    ASSIGN_OR_RETURN(std::vector<int64_t> lengths, client_->Append(chunks));
    append_seconds_ = Since(start);
    append_bytes_ = static_cast<double>(num_requests) * static_cast<double>(context) *
                    (shape.head_dim + 4);
    for (int64_t len : lengths) {
      if (len != context) {
        return absl::InternalError(absl::StrCat("layer length ", len,
                                                " after appending ", context));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Cleanup() {
    for (const std::string& id : ids_) RETURN_IF_ERROR(client_->Release(id).status());
    return absl::OkStatus();
  }

  // Builds stream s's message: decode rows from requests 0..rows-1, or
  // prefill rows of request 0.
  void BuildMessage(bool prefill, int rows, int s, v1::SelectRequest* out) {
    const int64_t context = absl::GetFlag(FLAGS_context);
    const int heads = absl::GetFlag(FLAGS_heads);
    out->Clear();
    std::vector<float> qf, w;
    for (int r = 0; r < rows; ++r) {
      const int request = prefill ? 0 : r;
      // Decode streams query slightly different positions so they do not
      // send identical messages.
      const int64_t t = prefill ? context - rows + r
                                : std::max<int64_t>(0, context - 1 - (s % 8));
      workloads_[request]->Query(t, &qf, &w);
      const EncodedRows q = EncodeRows(KeyFormat::kFp8E4M3, qf,
                                       absl::GetFlag(FLAGS_head_dim));
      QueryRow row = MakeQueryRow(ids_[request], 0, t, heads, q, w, mode_,
                                  absl::GetFlag(FLAGS_k), absl::GetFlag(FLAGS_m));
      ToProto(row, out->add_rows());
    }
  }

  // Alternates HISA and echo rounds (--rounds of --seconds / rounds each),
  // so that load from elsewhere on the machine affects both alike.
  absl::StatusOr<PhaseResult> RunPhase(bool prefill, int rows, int streams) {
    PhaseResult result;
    result.shape = prefill ? "prefill" : "decode";
    result.rows = rows;
    result.streams = streams;
    std::vector<StreamWork> work(streams);
    for (int s = 0; s < streams; ++s) BuildMessage(prefill, rows, s, &work[s].request);
    result.request_bytes = static_cast<int64_t>(work[0].request.ByteSizeLong());
    const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
    const double round_seconds = absl::GetFlag(FLAGS_seconds) / rounds;
    std::vector<double> echo_samples;
    bench::EchoRequest echo_request;
    for (int round = 0; round < rounds; ++round) {
      result.seconds += RunHisaRound(&work, round_seconds);
      for (const StreamWork& w : work) {
        if (!w.status.ok()) return w.status;
      }
      if (round == 0) {
        double response_sum = 0;
        int64_t messages = 0;
        for (const StreamWork& w : work) {
          response_sum += w.response_bytes_sum;
          messages += static_cast<int64_t>(w.latency.size());
        }
        if (messages == 0) return absl::InternalError("no Select completed in a round");
        echo_request = SizedEchoRequest(result.request_bytes,
                                        static_cast<int64_t>(response_sum / messages));
      }
      RETURN_IF_ERROR(RunEchoRound(echo_request, streams, round_seconds, &echo_samples));
    }

    std::vector<double> latency, server, remainder;
    double response_sum = 0, compact_sum = 0;
    for (const StreamWork& w : work) {
      latency.insert(latency.end(), w.latency.begin(), w.latency.end());
      server.insert(server.end(), w.server.begin(), w.server.end());
      remainder.insert(remainder.end(), w.remainder.begin(), w.remainder.end());
      response_sum += w.response_bytes_sum;
      compact_sum += w.compact_bytes_sum;
      result.row_errors += w.row_errors;
      if (result.first_error.empty()) result.first_error = w.first_error;
    }
    result.messages = static_cast<int64_t>(latency.size());
    result.response_bytes = response_sum / static_cast<double>(result.messages);
    result.compact_bytes_per_row =
        compact_sum / static_cast<double>(result.messages) / rows;
    result.latency = Summarize(std::move(latency));
    result.server = Summarize(std::move(server));
    result.remainder = Summarize(std::move(remainder));
    result.echo_messages = static_cast<int64_t>(echo_samples.size());
    result.echo = Summarize(std::move(echo_samples));
    return result;
  }

  double append_seconds() const { return append_seconds_; }
  double append_bytes() const { return append_bytes_; }
  void set_mode(SelectMode mode) { mode_ = mode; }

 private:
  using EchoStream = BidiStream<bench::EchoRequest, bench::EchoResponse>;

  // One round of Select ping-pong on every stream; samples accumulate in
  // `work`. Returns the measured wall time.
  double RunHisaRound(std::vector<StreamWork>* work, double seconds) {
    const int warmup = absl::GetFlag(FLAGS_warmup);
    return RunConcurrently(
        static_cast<int>(work->size()), seconds,
        [&](int s, std::atomic<int>& ready, std::atomic<bool>& go, double limit) {
          StreamWork& w = (*work)[s];
          absl::StatusOr<std::unique_ptr<SelectStream>> stream =
              client_->OpenSelectStream();
          bool alive = stream.ok();
          if (!alive) w.status = stream.status();
          auto one = [&](bool record) {
            const Clock::time_point t0 = Clock::now();
            absl::Status sent = (*stream)->Send(&w.request);
            absl::StatusOr<SelectResult> reply =
                sent.ok() ? (*stream)->Receive() : absl::StatusOr<SelectResult>(sent);
            const double elapsed = Since(t0);
            if (!reply.ok()) {
              w.status = reply.status();
              return false;
            }
            for (const RowResult& row : reply->rows) {
              if (row.status.ok()) {
                ++w.rows_ok;
              } else {
                if (w.row_errors++ == 0) w.first_error = row.status.ToString();
              }
            }
            if (record) {
              w.latency.push_back(elapsed);
              w.server.push_back(reply->server_seconds);
              w.remainder.push_back(elapsed - reply->server_seconds);
              w.response_bytes_sum += static_cast<double>(reply->response_bytes);
              w.compact_bytes_sum += static_cast<double>(reply->compact_position_bytes);
            }
            return true;
          };
          for (int i = 0; alive && i < warmup; ++i) alive = one(false);
          ready.fetch_add(1);
          while (!go.load()) std::this_thread::yield();
          const Clock::time_point start = Clock::now();
          while (alive && Since(start) < limit) alive = one(true);
          if (stream.ok()) (*stream)->Close().IgnoreError();
        });
  }

  // An echo request of `request_bytes` serialized bytes asking for a reply of
  // `response_bytes` (two passes settle the varint length prefixes).
  static bench::EchoRequest SizedEchoRequest(int64_t request_bytes,
                                             int64_t response_bytes) {
    bench::EchoRequest request;
    request.set_message_id(1);
    request.set_response_bytes(
        static_cast<uint32_t>(std::max<int64_t>(0, response_bytes - 8)));
    int64_t payload = std::max<int64_t>(0, request_bytes - 8);
    for (int pass = 0; pass < 2; ++pass) {
      request.set_payload(std::string(static_cast<size_t>(payload), 'q'));
      payload = std::max<int64_t>(
          0, payload + request_bytes - static_cast<int64_t>(request.ByteSizeLong()));
    }
    request.set_payload(std::string(static_cast<size_t>(payload), 'q'));
    bench::EchoResponse probe;
    probe.set_message_id(1);
    int64_t reply_payload = std::max<int64_t>(0, response_bytes - 8);
    for (int pass = 0; pass < 2; ++pass) {
      probe.set_payload(std::string(static_cast<size_t>(reply_payload), 'x'));
      reply_payload = std::max<int64_t>(
          0, reply_payload + response_bytes - static_cast<int64_t>(probe.ByteSizeLong()));
    }
    request.set_response_bytes(static_cast<uint32_t>(reply_payload));
    return request;
  }

  // One round of echo ping-pong with `request` on `streams` streams.
  absl::Status RunEchoRound(const bench::EchoRequest& request, int streams,
                            double seconds, std::vector<double>* out) {
    const int warmup = absl::GetFlag(FLAGS_warmup);
    std::vector<std::vector<double>> samples(streams);
    std::vector<absl::Status> statuses(streams);
    const absl::Duration op_timeout = client_->options().deadline;
    RunConcurrently(
        streams, seconds,
        [&](int s, std::atomic<int>& ready, std::atomic<bool>& go, double limit) {
          bench::EchoRequest mine = request;
          bench::EchoResponse reply;
          absl::StatusOr<std::unique_ptr<EchoStream>> stream = EchoStream::Open(
              [&](grpc::ClientContext* ctx, grpc::CompletionQueue* cq) {
                return echo_stub_->PrepareAsyncStream(ctx, cq);
              },
              absl::Hours(1), op_timeout);
          bool alive = stream.ok();
          if (!alive) statuses[s] = stream.status();
          uint64_t id = 0;
          auto one = [&](bool record) {
            const Clock::time_point t0 = Clock::now();
            mine.set_message_id(++id);
            absl::Status st = (*stream)->Write(mine);
            if (st.ok()) st = (*stream)->Read(&reply);
            const double elapsed = Since(t0);
            if (st.ok() && reply.message_id() != id) {
              st = absl::InternalError("echo out of order");
            }
            if (!st.ok()) {
              statuses[s] = st;
              return false;
            }
            if (record) samples[s].push_back(elapsed);
            return true;
          };
          for (int i = 0; alive && i < warmup; ++i) alive = one(false);
          ready.fetch_add(1);
          while (!go.load()) std::this_thread::yield();
          const Clock::time_point start = Clock::now();
          while (alive && Since(start) < limit) alive = one(true);
          if (stream.ok()) (*stream)->Close().IgnoreError();
        });
    for (int s = 0; s < streams; ++s) {
      if (!statuses[s].ok()) {
        return absl::Status(statuses[s].code(),
                            absl::StrCat("echo baseline: ", statuses[s].message()));
      }
      out->insert(out->end(), samples[s].begin(), samples[s].end());
    }
    return absl::OkStatus();
  }

  std::unique_ptr<HisaClient> client_;
  std::unique_ptr<bench::EchoBench::Stub> echo_stub_;
  std::vector<std::string> ids_;
  std::vector<std::unique_ptr<SyntheticLayer>> workloads_;
  SelectMode mode_ = SelectMode::kHisa;
  double append_seconds_ = 0;
  double append_bytes_ = 0;
};

std::string Us(double seconds) { return absl::StrFormat("%.0f", seconds * 1e6); }

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

// The 1-minute load average (other processes on a shared machine).
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "unknown" : one;
}

struct Anchor {
  std::string name;
  double value;
  double target;
  std::string note;
};

std::string Table(const std::vector<PhaseResult>& results) {
  std::string out =
      "| shape | streams | rows/msg | req B | resp B | msgs | rows/s | p50 us | "
      "p99 us | p99.9 us | server p50 us | rest p50 us | echo p50 us | echo "
      "p99 us | echo p99.9 us | p50 / echo | rest / echo |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      "---:|---:|\n";
  for (const PhaseResult& r : results) {
    absl::StrAppend(
        &out,
        absl::StrFormat(
            "| %s | %d | %d | %d | %.0f | %d | %.0f | %s | %s | %s | %s | %s | "
            "%s | %s | %s | %.2f | %.2f |\n",
            r.shape, r.streams, r.rows, r.request_bytes, r.response_bytes,
            r.messages, r.messages * r.rows / r.seconds, Us(r.latency.p50),
            Us(r.latency.p99), Us(r.latency.p999), Us(r.server.p50),
            Us(r.remainder.p50), Us(r.echo.p50), Us(r.echo.p99),
            Us(r.echo.p999), r.latency.p50 / r.echo.p50,
            r.remainder.p50 / r.echo.p50));
  }
  return out;
}

absl::Status Run(int argc, char** argv) {
  ASSIGN_OR_RETURN(std::vector<int> stream_counts,
                   ParseInts(absl::GetFlag(FLAGS_streams), "streams"));
  ASSIGN_OR_RETURN(std::vector<int> decode_rows,
                   ParseInts(absl::GetFlag(FLAGS_decode_rows), "decode_rows"));
  const int prefill_rows = absl::GetFlag(FLAGS_prefill_rows);
  const int64_t context = absl::GetFlag(FLAGS_context);
  if (prefill_rows > context) {
    return absl::InvalidArgumentError("--prefill_rows exceeds --context");
  }
  SelectMode mode = SelectMode::kHisa;
  if (absl::GetFlag(FLAGS_mode) == "dense") mode = SelectMode::kDense;
  else if (absl::GetFlag(FLAGS_mode) == "auto") mode = SelectMode::kAuto;
  else if (absl::GetFlag(FLAGS_mode) != "hisa") {
    return absl::InvalidArgumentError("--mode must be hisa, dense or auto");
  }

  // Servers.
  std::unique_ptr<ServerProcess> server;
  std::string target = absl::GetFlag(FLAGS_target);
  if (target.empty()) {
    ServerProcessOptions opts;
    opts.binary = absl::GetFlag(FLAGS_server_binary);
    opts.args = absl::GetFlag(FLAGS_server_args);
    ASSIGN_OR_RETURN(server, ServerProcess::Start(opts));
    target = server->target();
  }
  // The started server's metrics endpoint (0: none, or not ours).
  const int metrics_port = server != nullptr ? server->metrics_port() : 0;
  std::unique_ptr<ServerProcess> echo_process;
  std::unique_ptr<EchoServer> echo_in_process;
  std::string echo_target;
  std::string echo_where;
  if (absl::GetFlag(FLAGS_echo_in_process)) {
    ASSIGN_OR_RETURN(echo_in_process, EchoServer::Start("127.0.0.1:0"));
    echo_target = absl::StrCat("127.0.0.1:", echo_in_process->port());
    echo_where = "in-process callback server";
  } else {
    ServerProcessOptions opts;
    opts.binary = absl::GetFlag(FLAGS_echo_binary);
    ASSIGN_OR_RETURN(echo_process, ServerProcess::Start(opts));
    echo_target = echo_process->target();
    echo_where = "hisa_echo_server process (callback API)";
  }

  ClientOptions options;
  options.wait_for_ready = true;
  options.deadline = absl::Seconds(60);
  ASSIGN_OR_RETURN(std::unique_ptr<HisaClient> client,
                   HisaClient::Create(target, options));
  ASSIGN_OR_RETURN(v1::GetInfoResponse info, client->GetInfo());
  grpc::ChannelArguments echo_args;
  echo_args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::Channel> echo_channel = grpc::CreateCustomChannel(
      echo_target, grpc::InsecureChannelCredentials(), echo_args);

  const int num_requests = std::max(1, *std::max_element(decode_rows.begin(),
                                                         decode_rows.end()));
  LoadGen gen(std::move(client), echo_channel);
  gen.set_mode(mode);
  std::cout << absl::StrFormat(
      "server %s: backend %s (%s); echo: %s\nsetup: %d requests x %d fp8 "
      "tokens (D %d, B %d)...\n",
      target, info.server().backend(), info.server().device(), echo_where,
      num_requests, context, absl::GetFlag(FLAGS_head_dim),
      absl::GetFlag(FLAGS_block_size));
  RETURN_IF_ERROR(gen.Setup(num_requests));
  const double append_mibs = gen.append_bytes() / 1048576.0 / gen.append_seconds();
  std::cout << absl::StrFormat("append: %.1f MiB in %.2f s = %.0f MiB/s\n",
                               gen.append_bytes() / 1048576.0,
                               gen.append_seconds(), append_mibs);

  const std::string load_before = LoadAverage();
  std::vector<PhaseResult> results;
  for (int streams : stream_counts) {
    std::vector<std::pair<bool, int>> shapes;
    for (int rows : decode_rows) shapes.push_back({false, rows});
    if (prefill_rows > 0) shapes.push_back({true, prefill_rows});
    for (const auto& [prefill, rows] : shapes) {
      absl::StatusOr<ServerCounters> before = absl::UnavailableError("");
      if (metrics_port > 0) before = ScrapeServer(metrics_port);
      ASSIGN_OR_RETURN(PhaseResult r, gen.RunPhase(prefill, rows, streams));
      if (before.ok()) {
        absl::StatusOr<ServerCounters> after = ScrapeServer(metrics_port);
        if (after.ok()) r.server_breakdown = ServerBreakdown(*before, *after);
      }
      std::cout << absl::StrFormat(
          "%-7s S=%-2d R=%-4d %6d msgs  p50 %9s  p99 %9s  p99.9 %9s  server "
          "p50 %9s | echo p50 %9s  p99 %9s  | ratio %.2f%s\n",
          r.shape, r.streams, r.rows, r.messages, FormatSeconds(r.latency.p50),
          FormatSeconds(r.latency.p99), FormatSeconds(r.latency.p999),
          FormatSeconds(r.server.p50), FormatSeconds(r.echo.p50),
          FormatSeconds(r.echo.p99), r.latency.p50 / r.echo.p50,
          r.row_errors > 0 ? absl::StrCat("  ROW ERRORS ", r.row_errors, ": ",
                                          r.first_error)
                           : "");
      if (!r.server_breakdown.empty()) {
        std::cout << "  server per message: " << r.server_breakdown << "\n";
      }
      results.push_back(r);
    }
  }
  RETURN_IF_ERROR(gen.Cleanup());

  // Anchors, at the lowest concurrency.
  const int s0 = stream_counts.front();
  auto find = [&](const std::string& shape, int rows) -> const PhaseResult* {
    for (const PhaseResult& r : results) {
      if (r.shape == shape && r.rows == rows && r.streams == s0) return &r;
    }
    return nullptr;
  };
  std::vector<Anchor> anchors;
  const PhaseResult* one = find("decode", 1);
  const PhaseResult* many = find("decode", 64);
  if (one != nullptr) {
    anchors.push_back({"decode 1-row Select p50 / echo p50", one->latency.p50 / one->echo.p50,
                       1.3, absl::StrFormat("%s vs %s", FormatSeconds(one->latency.p50),
                                            FormatSeconds(one->echo.p50))});
    anchors.push_back({"  same, server time excluded ((latency - server_seconds) p50 / echo p50)",
                       one->remainder.p50 / one->echo.p50, 1.3,
                       absl::StrFormat("%s vs %s; server p50 %s",
                                       FormatSeconds(one->remainder.p50),
                                       FormatSeconds(one->echo.p50),
                                       FormatSeconds(one->server.p50))});
  }
  if (one != nullptr && many != nullptr) {
    anchors.push_back({"decode 64-row p50 / 1-row p50", many->latency.p50 / one->latency.p50,
                       3.0, absl::StrFormat("%s vs %s", FormatSeconds(many->latency.p50),
                                            FormatSeconds(one->latency.p50))});
  }
  {
    double compact = 0;
    int n = 0;
    for (const PhaseResult& r : results) {
      if (r.shape != "decode") continue;
      compact += r.compact_bytes_per_row;
      ++n;
    }
    compact /= std::max(1, n);
    const double raw = 4.0 * absl::GetFlag(FLAGS_k);
    anchors.push_back({"compact position bytes / raw int32 (decode rows)",
                       compact / raw, 1.0 / 3.0,
                       absl::StrFormat("%.0f B vs %.0f B per row", compact, raw)});
  }
  std::cout << "\n" << Table(results) << "\n";
  std::string anchor_text =
      "| anchor | measured | target | |\n|---|---:|---:|---|\n";
  for (const Anchor& a : anchors) {
    absl::StrAppend(&anchor_text,
                    absl::StrFormat("| %s | %.3f | <= %.3f | %s, %s |\n", a.name,
                                    a.value, a.target, a.note,
                                    a.value <= a.target ? "met" : "NOT met"));
  }
  std::cout << anchor_text;

  const std::string md_path = absl::GetFlag(FLAGS_results_md);
  if (!md_path.empty()) {
    std::vector<std::string> args(argv, argv + argc);
    utsname uts{};
    uname(&uts);
    std::ofstream md(md_path, absl::GetFlag(FLAGS_results_append)
                                  ? std::ios::app
                                  : std::ios::trunc);
    md << absl::StrFormat(
              "## Load generator: HISA service vs plain gRPC echo (loopback, "
              "L = %d)\n\n",
              context)
       << "Command: `" << absl::StrJoin(args, " ") << "`\n\n"
       << absl::StrFormat(
              "Machine: %s, %d hardware threads, %s. Server: backend %s (%s), "
              "started %s. Echo baseline: %s. Date: %s.\n\n",
              CpuModel(), static_cast<int>(std::thread::hardware_concurrency()),
              uts.release, info.server().backend(), info.server().device(),
              server != nullptr ? "by the load generator on an ephemeral port"
                                : absl::StrCat("separately at ", target),
              echo_where, absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(),
                                           absl::UTCTimeZone()))
       << absl::StrFormat(
              "Workload: %d requests x L = %d fp8 tokens (D %d, B %d); rows: "
              "H = %d fp8 heads, k = %d, m = %d, mode %s; decode rows at t = "
              "L-1 (one per request), prefill rows at t = L-P..L-1 of one "
              "request. Each stream sends ping-pong for %.1f s in %d rounds "
              "alternating with the echo, each after %d warm-up messages. "
              "Append (setup): %.0f MiB/s. 1-minute load average %s before "
              "the phases, %s after (client, servers and anything else on "
              "the machine share its cores).\n\n",
              num_requests, context, absl::GetFlag(FLAGS_head_dim),
              absl::GetFlag(FLAGS_block_size), absl::GetFlag(FLAGS_heads),
              absl::GetFlag(FLAGS_k), absl::GetFlag(FLAGS_m),
              absl::GetFlag(FLAGS_mode), absl::GetFlag(FLAGS_seconds),
              absl::GetFlag(FLAGS_rounds), absl::GetFlag(FLAGS_warmup), append_mibs,
              load_before, LoadAverage())
       << "Columns: latency is client-observed per message (send to decoded "
          "reply); `server` is SelectResponse.server_seconds (read to reply "
          "ready: queueing + engine); `rest` = latency - server per message "
          "(transport, serialization, decode); echo = the same request/response "
          "sizes through the echo service and the same client stream code.\n\n"
       << Table(results) << "\n";
    std::string breakdown;
    for (const PhaseResult& r : results) {
      if (r.server_breakdown.empty()) continue;
      absl::StrAppend(&breakdown, "- ", r.shape, " S=", r.streams, " R=", r.rows,
                      ": ", r.server_breakdown, "\n");
    }
    if (!breakdown.empty()) {
      md << "Server time per message, means over each phase from the "
            "server's /metrics (queue = waiting for the batcher; engine = "
            "Engine::Select; its stages are means over the batches that "
            "timed them; other = conversion, response encoding, "
            "hand-offs):\n\n"
         << breakdown << "\n";
    }
    md << anchor_text << "\n";
    std::cout << "wrote " << md_path << "\n";
  }
  if (server != nullptr) RETURN_IF_ERROR(server->Stop());
  if (echo_process != nullptr) RETURN_IF_ERROR(echo_process->Stop());
  return absl::OkStatus();
}

}  // namespace
}  // namespace hisa

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "hisa_loadgen: Select load against the HISA service with a same-size "
      "gRPC echo baseline; see the header of bench/loadgen/hisa_loadgen.cc.");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = hisa::Run(argc, argv);
  if (!status.ok()) {
    std::cerr << "hisa_loadgen: " << status << "\n";
    return 1;
  }
  return 0;
}
