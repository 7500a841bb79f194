// hisa_server: the HISA indexing service (SPEC 5) over gRPC.
//
//   hisa_server --listen=0.0.0.0:50051 --backend=auto --memory_budget=64G
//               --idle_ttl=10m --metrics_listen=0.0.0.0:9464
//
// SIGTERM / SIGINT drain the server (health NOT_SERVING, new RPCs
// UNAVAILABLE, in-flight work completes; RPCs still open after
// --drain_timeout are cancelled), then it exits 0. With --port_file the bound
// ports are written, once serving, as "grpc_port=N\nmetrics_port=M\n" (the
// file appears atomically), which is how tests find a server started on
// port 0.
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/auto_duration_flag.h"
#include "server/byte_size_flag.h"
#include "server/hisa_server.h"
#include "server/malloc_tuning.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "TCP address to serve gRPC on (host:port; port 0 picks a free "
          "port); empty for none");
ABSL_FLAG(std::string, unix_socket, "",
          "additional unix-domain socket to serve on, for co-located "
          "frontends (a path or unix:path)");
ABSL_FLAG(std::string, backend, "auto", "compute backend: auto, cpu or cuda");
ABSL_FLAG(int32_t, cuda_device, 0, "CUDA device ordinal for the cuda backend");
ABSL_FLAG(hisa::ByteSize, memory_budget, hisa::ByteSize{int64_t{4} << 30},
          "byte budget for key caches (binary suffixes: 512M, 8G, 1.5T)");
ABSL_FLAG(absl::Duration, idle_ttl, absl::Minutes(10),
          "a request with no Append/Select for this long is removed "
          "(e.g. 30s, 10m; inf disables)");
ABSL_FLAG(absl::Duration, ttl_sweep_interval, absl::Seconds(1),
          "how often idle requests are looked for");
ABSL_FLAG(hisa::ByteSize, max_message_bytes, hisa::ByteSize{int64_t{64} << 20},
          "largest gRPC message accepted (larger: RESOURCE_EXHAUSTED)");
ABSL_FLAG(int32_t, max_rows_per_message, 4096,
          "most query rows in one SelectRequest (more: INVALID_ARGUMENT)");
ABSL_FLAG(int32_t, max_requests, 65536, "most live requests");
ABSL_FLAG(int32_t, max_layers, 256, "most layers per request");
ABSL_FLAG(int32_t, max_heads, 128, "most query heads per row (<= 128)");
ABSL_FLAG(int32_t, threads, 4,
          "executor threads that run engine calls for the RPCs");
ABSL_FLAG(hisa::AutoDuration, executor_spin, hisa::AutoDuration{},
          "how long an idle executor thread polls for work before it "
          "sleeps (one at a time; 0 sleeps at once), so a lone Select "
          "starts without waiting for a thread wake-up; auto: 500us with "
          "the cuda backend, 0 with the cpu backend");
ABSL_FLAG(int32_t, backend_threads, 0,
          "CPU backend worker threads; 0 = one per hardware thread");
ABSL_FLAG(int32_t, batch_max_rows, 1024,
          "most query rows merged into one engine Select batch");
ABSL_FLAG(absl::Duration, batch_max_wait, absl::Microseconds(500),
          "longest a Select message waits behind a running batch before it "
          "gets a batch of its own; a message reaching an idle engine never "
          "waits");
ABSL_FLAG(int32_t, batch_max_concurrent, 2,
          "most engine Select batches running at once");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9464",
          "address of the Prometheus /metrics endpoint; empty for none");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM, how long in-flight RPCs may take before they are "
          "cancelled");
ABSL_FLAG(std::string, port_file, "",
          "write 'grpc_port=N\\nmetrics_port=M\\n' here once serving");
ABSL_FLAG(hisa::ByteSize, malloc_retain, hisa::ByteSize{int64_t{1} << 30},
          "freed heap memory kept for reuse instead of being returned to "
          "the OS (glibc's M_TRIM_THRESHOLD; allocations under 32M come "
          "from the heap): each message's rows, results and encodings "
          "then reuse pages instead of faulting in fresh ones; 0 keeps "
          "glibc's defaults");

namespace {

hisa::ServerOptions OptionsFromFlags() {
  hisa::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.unix_socket = absl::GetFlag(FLAGS_unix_socket);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.engine.backend = absl::GetFlag(FLAGS_backend);
  options.engine.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  options.engine.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget).bytes;
  options.engine.idle_ttl = absl::GetFlag(FLAGS_idle_ttl);
  options.engine.max_requests = absl::GetFlag(FLAGS_max_requests);
  options.engine.max_layers = absl::GetFlag(FLAGS_max_layers);
  options.engine.max_heads = absl::GetFlag(FLAGS_max_heads);
  options.engine.num_threads = absl::GetFlag(FLAGS_backend_threads);
  options.executor_threads = absl::GetFlag(FLAGS_threads);
  options.executor_idle_spin = absl::GetFlag(FLAGS_executor_spin).value;
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes).bytes;
  options.max_rows_per_message = absl::GetFlag(FLAGS_max_rows_per_message);
  options.batch.max_rows = absl::GetFlag(FLAGS_batch_max_rows);
  options.batch.max_wait = absl::GetFlag(FLAGS_batch_max_wait);
  options.batch.max_concurrent_batches =
      absl::GetFlag(FLAGS_batch_max_concurrent);
  options.ttl_sweep_interval = absl::GetFlag(FLAGS_ttl_sweep_interval);
  return options;
}

// Writes the file next to its final name and renames it, so a reader never
// sees it half written.
bool WritePortFile(const std::string& path, int grpc_port, int metrics_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "grpc_port=" << grpc_port << "\nmetrics_port=" << metrics_port
        << "\n";
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "HISA indexing service: DSA indexer key caches and HISA/DENSE top-k "
      "selection over gRPC");
  absl::ParseCommandLine(argc, argv);
  hisa::RetainFreedMemory(absl::GetFlag(FLAGS_malloc_retain).bytes);

  // Block the shutdown signals in every thread (threads inherit the mask) and
  // take them synchronously with sigwait below: no async-signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const hisa::ServerOptions options = OptionsFromFlags();
  absl::StatusOr<std::unique_ptr<hisa::HisaServer>> server =
      hisa::HisaServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "hisa_server: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  const hisa::EngineStats stats = (*server)->engine()->Stats();
  std::fprintf(stderr,
               "hisa_server %s: backend %s, budget %lld bytes; gRPC on %s "
               "(port %d)%s; metrics on %s (port %d)\n",
               hisa::kServerVersion, stats.backend.c_str(),
               static_cast<long long>(stats.memory_budget_bytes),
               options.listen.c_str(), (*server)->port(),
               options.unix_socket.empty()
                   ? ""
                   : absl::StrCat(" and ", options.unix_socket).c_str(),
               options.metrics_listen.empty() ? "(none)"
                                              : options.metrics_listen.c_str(),
               (*server)->metrics_port());
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() &&
      !WritePortFile(port_file, (*server)->port(), (*server)->metrics_port())) {
    std::fprintf(stderr, "hisa_server: cannot write --port_file %s\n",
                 port_file.c_str());
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  const absl::Duration grace = absl::GetFlag(FLAGS_drain_timeout);
  std::fprintf(stderr, "hisa_server: %s received, draining (up to %s)\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT",
               absl::FormatDuration(grace).c_str());
  const absl::Time start = absl::Now();
  (*server)->Shutdown(grace);
  std::fprintf(stderr, "hisa_server: stopped after %s\n",
               absl::FormatDuration(absl::Now() - start).c_str());
  return 0;
}
