// The whole HISA server in one object: engine, executor, Select batcher,
// gRPC server (HisaIndex service, standard health service, reflection),
// Prometheus endpoint and the TTL sweeper. main.cc maps flags onto
// ServerOptions; tests may embed it the same way.
//
//   hisa::ServerOptions options;
//   options.listen = "127.0.0.1:0";
//   ASSIGN_OR_RETURN(std::unique_ptr<hisa::HisaServer> server,
//                    hisa::HisaServer::Start(options));
//   int port = server->port();          // the port gRPC bound
//   ...
//   server->Shutdown(absl::Seconds(30));  // drain, then stop
//
// Contracts:
//   Start validates the options (INVALID_ARGUMENT naming the bad one),
//   builds the engine (or takes the given one), binds every listener
//   (UNAVAILABLE when one cannot be bound) and serves before returning.
//   Shutdown(grace) drains: the health service reports NOT_SERVING, new
//   HisaIndex RPCs get UNAVAILABLE (the listeners stay open meanwhile, so
//   clients see that rather than a refused connection), open streams answer
//   what they have read and end. Once no RPC is left, or at `grace`,
//   grpc::Server::Shutdown runs (cancelling what is still open; it also
//   waits, ~5 s, for idle client connections to close after its GOAWAY).
//   Then it stops the batcher, executor, sweeper and metrics endpoint
//   (civetweb takes ~1 s). Blocking and idempotent; the destructor calls
//   Shutdown(absl::ZeroDuration()) if needed.
// Thread safety: Shutdown may be called from any thread, once or more; the
// accessors are safe at any time before destruction.
#ifndef HISA_SERVER_HISA_SERVER_H_
#define HISA_SERVER_HISA_SERVER_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kernels/engine.h"
#include "server/executor.h"
#include "server/hisa_service.h"
#include "server/select_batcher.h"
#include "server/service_metrics.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace hisa {

inline constexpr char kServerVersion[] = "0.1.0";

// ServerOptions::executor_idle_spin's default with the cuda backend: longer
// than the gap between a ping-pong client's messages (~100-200 us), so the
// next one still finds a polling thread.
inline constexpr absl::Duration kGpuIdleSpin = absl::Microseconds(500);

struct ServerOptions {
  // TCP listener ("host:port"; port 0 picks a free one); "" for none.
  std::string listen = "0.0.0.0:50051";
  // Extra unix-domain listener for co-located frontends: a path or
  // "unix:path"; "" for none.
  std::string unix_socket;
  // Prometheus /metrics endpoint ("host:port", port 0 allowed); "" for none.
  std::string metrics_listen = "0.0.0.0:9464";
  EngineOptions engine;
  // Executor threads that run engine calls.
  int executor_threads = 4;
  // How long an idle executor thread polls for work before it sleeps
  // (Executor's idle_spin): a lone Select then starts at once instead of
  // after a thread wake-up. nullopt: kGpuIdleSpin with the cuda backend
  // (its host cores idle while the GPU works), none with the cpu backend
  // (whose cores compute the selections).
  std::optional<absl::Duration> executor_idle_spin;
  // gRPC max receive message size.
  int64_t max_message_bytes = int64_t{64} << 20;
  int max_rows_per_message = 4096;
  SelectBatcherOptions batch;
  // How often the sweeper calls Engine::ExpireIdle.
  absl::Duration ttl_sweep_interval = absl::Seconds(1);
};

// INVALID_ARGUMENT naming the first bad option, else OK.
absl::Status ValidateServerOptions(const ServerOptions& options);

class HisaServer {
 public:
  static absl::StatusOr<std::unique_ptr<HisaServer>> Start(
      ServerOptions options);
  // With an engine built by the caller (options.engine is then ignored).
  static absl::StatusOr<std::unique_ptr<HisaServer>> Start(
      ServerOptions options, std::unique_ptr<Engine> engine);
  ~HisaServer();

  HisaServer(const HisaServer&) = delete;
  HisaServer& operator=(const HisaServer&) = delete;

  void Shutdown(absl::Duration grace);

  // The bound TCP port (0 without a TCP listener).
  int port() const { return port_; }
  // The bound metrics port (0 without a metrics endpoint).
  int metrics_port() const { return metrics_port_; }
  Engine* engine() const { return engine_.get(); }
  ServiceMetrics* metrics() const { return metrics_.get(); }
  const ServerOptions& options() const { return options_; }

 private:
  HisaServer(ServerOptions options, std::unique_ptr<Engine> engine);
  absl::Status Init();
  void SweepLoop();

  const ServerOptions options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<SelectBatcher> batcher_;
  std::unique_ptr<HisaService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::thread sweeper_;
  std::mutex sweeper_mu_;
  std::condition_variable sweeper_cv_;
  bool stop_sweeper_ ABSL_GUARDED_BY(sweeper_mu_) = false;
  int port_ = 0;
  int metrics_port_ = 0;

  std::mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace hisa

#endif  // HISA_SERVER_HISA_SERVER_H_
