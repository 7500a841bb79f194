#include "server/hisa_server.h"

#include <exception>
#include <fstream>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "kernels/status_macros.h"
#include "prometheus/exposer.h"

namespace hisa {
namespace {

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(what);
}

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  const EngineOptions& engine = options.engine;
  if (options.listen.empty() && options.unix_socket.empty()) {
    return Invalid("no listener: set --listen and/or --unix_socket");
  }
  if (engine.memory_budget_bytes <= 0) {
    return Invalid(absl::StrCat("memory_budget must be positive, got ",
                                engine.memory_budget_bytes));
  }
  if (engine.idle_ttl <= absl::ZeroDuration()) {
    return Invalid(absl::StrCat("idle_ttl must be positive (or inf), got ",
                                absl::FormatDuration(engine.idle_ttl)));
  }
  if (engine.max_requests < 1) {
    return Invalid(absl::StrCat("max_requests must be >= 1, got ",
                                engine.max_requests));
  }
  if (engine.max_layers < 1) {
    return Invalid(
        absl::StrCat("max_layers must be >= 1, got ", engine.max_layers));
  }
  if (engine.max_heads < 1 || engine.max_heads > kMaxHeads) {
    return Invalid(absl::StrCat("max_heads must be in [1, ", kMaxHeads,
                                "], got ", engine.max_heads));
  }
  if (engine.num_threads < 0) {
    return Invalid(absl::StrCat("backend_threads must be >= 0, got ",
                                engine.num_threads));
  }
  if (options.executor_threads < 1 || options.executor_threads > 256) {
    return Invalid(absl::StrCat("threads must be in [1, 256], got ",
                                options.executor_threads));
  }
  if (options.executor_idle_spin.has_value() &&
      (*options.executor_idle_spin < absl::ZeroDuration() ||
       *options.executor_idle_spin > absl::Milliseconds(10))) {
    return Invalid(absl::StrCat(
        "executor_spin must be 'auto' or a duration in [0, 10ms], got ",
        absl::FormatDuration(*options.executor_idle_spin)));
  }
  if (options.max_message_bytes < 1024 ||
      options.max_message_bytes > std::numeric_limits<int>::max()) {
    return Invalid(absl::StrCat("max_message_bytes must be in [1K, ",
                                std::numeric_limits<int>::max(), "], got ",
                                options.max_message_bytes));
  }
  if (options.max_rows_per_message < 1) {
    return Invalid(absl::StrCat("max_rows_per_message must be >= 1, got ",
                                options.max_rows_per_message));
  }
  if (options.batch.max_rows < 1) {
    return Invalid(absl::StrCat("batch_max_rows must be >= 1, got ",
                                options.batch.max_rows));
  }
  if (options.batch.max_wait < absl::ZeroDuration()) {
    return Invalid(absl::StrCat("batch_max_wait must be >= 0, got ",
                                absl::FormatDuration(options.batch.max_wait)));
  }
  if (options.batch.max_concurrent_batches < 1) {
    return Invalid(absl::StrCat("batch_max_concurrent must be >= 1, got ",
                                options.batch.max_concurrent_batches));
  }
  if (options.ttl_sweep_interval <= absl::ZeroDuration() ||
      options.ttl_sweep_interval == absl::InfiniteDuration()) {
    return Invalid(
        absl::StrCat("ttl_sweep_interval must be positive and finite, got ",
                     absl::FormatDuration(options.ttl_sweep_interval)));
  }
  return absl::OkStatus();
}


absl::StatusOr<std::unique_ptr<HisaServer>> HisaServer::Start(
    ServerOptions options) {
  RETURN_IF_ERROR(ValidateServerOptions(options));
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                   Engine::Create(options.engine));
  return Start(std::move(options), std::move(engine));
}

absl::StatusOr<std::unique_ptr<HisaServer>> HisaServer::Start(
    ServerOptions options, std::unique_ptr<Engine> engine) {
  RETURN_IF_ERROR(ValidateServerOptions(options));
  if (engine == nullptr) return Invalid("no engine");
  std::unique_ptr<HisaServer> server(
      new HisaServer(std::move(options), std::move(engine)));
  RETURN_IF_ERROR(server->Init());
  return server;
}

HisaServer::HisaServer(ServerOptions options, std::unique_ptr<Engine> engine)
    : options_(std::move(options)), engine_(std::move(engine)) {}

HisaServer::~HisaServer() { Shutdown(absl::ZeroDuration()); }

absl::Status HisaServer::Init() {
  metrics_ = std::make_unique<ServiceMetrics>(engine_.get());
  const absl::Duration spin = options_.executor_idle_spin.value_or(
      engine_->backend_name() == "cuda" ? kGpuIdleSpin : absl::ZeroDuration());
  executor_ = std::make_unique<Executor>(options_.executor_threads, spin);
  batcher_ = std::make_unique<SelectBatcher>(engine_.get(), executor_.get(),
                                             options_.batch, metrics_.get());
  ServiceOptions service_options;
  service_options.max_rows_per_message = options_.max_rows_per_message;
  service_options.max_message_bytes = options_.max_message_bytes;
  service_options.version = kServerVersion;
  service_options.device = engine_->device_description();
  service_ = std::make_unique<HisaService>(engine_.get(), executor_.get(),
                                           batcher_.get(), metrics_.get(),
                                           std::move(service_options));

  if (!options_.metrics_listen.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_listen,
                                                       /*num_threads=*/2);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on '", options_.metrics_listen,
                       "': ", e.what()));
    }
    for (const auto& collectable : metrics_->collectables()) {
      exposer_->RegisterCollectable(collectable);
    }
    const std::vector<int> ports = exposer_->GetListeningPorts();
    metrics_port_ = ports.empty() ? 0 : ports.front();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!options_.listen.empty()) {
    builder.AddListeningPort(options_.listen,
                             grpc::InsecureServerCredentials(), &port_);
  }
  std::string unix_address;
  if (!options_.unix_socket.empty()) {
    unix_address = absl::StartsWith(options_.unix_socket, "unix:")
                       ? options_.unix_socket
                       : absl::StrCat("unix:", options_.unix_socket);
    builder.AddListeningPort(unix_address, grpc::InsecureServerCredentials());
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || (!options_.listen.empty() && port_ == 0)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot start the gRPC server on '", options_.listen, "'",
        unix_address.empty() ? "" : absl::StrCat(" and '", unix_address, "'"),
        " (address in use or not valid?)"));
  }
  if (grpc::HealthCheckServiceInterface* health =
          server_->GetHealthCheckService()) {
    health->SetServingStatus(v1::HisaIndex::service_full_name(), true);
  }
  sweeper_ = std::thread([this] { SweepLoop(); });
  return absl::OkStatus();
}

void HisaServer::SweepLoop() {
  std::unique_lock<std::mutex> lock(sweeper_mu_);
  const auto interval = absl::ToChronoNanoseconds(options_.ttl_sweep_interval);
  while (!sweeper_cv_.wait_for(lock, interval, [this] { return stop_sweeper_; })) {
    lock.unlock();
    engine_->ExpireIdle();
    lock.lock();
  }
}

void HisaServer::Shutdown(absl::Duration grace) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    if (grpc::HealthCheckServiceInterface* health =
            server_->GetHealthCheckService()) {
      health->SetServingStatus(false);
    }
  }
  const absl::Time deadline = absl::Now() + grace;
  if (service_ != nullptr) {
    // The server keeps accepting calls while the service drains, so that
    // they get the service's UNAVAILABLE rather than Shutdown's CANCELLED.
    service_->StartDrain();
    service_->WaitIdle(deadline);
  }
  if (server_ != nullptr) {
    // Returns once every RPC has finished; those still open at the deadline
    // are cancelled first.
    server_->Shutdown(absl::ToChronoTime(deadline));
  }
  if (batcher_ != nullptr) batcher_->Stop();
  if (executor_ != nullptr) executor_->Stop();
  if (sweeper_.joinable()) {
    {
      std::lock_guard<std::mutex> sweeper_lock(sweeper_mu_);
      stop_sweeper_ = true;
    }
    sweeper_cv_.notify_all();
    sweeper_.join();
  }
  exposer_.reset();
}

}  // namespace hisa
