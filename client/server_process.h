// Runs a server binary (hisa_server, or any binary with the same --listen /
// --port_file flags) as a child process on an ephemeral loopback port, for
// load generators, demos and end-to-end tests.
//
//   hisa::ServerProcessOptions opts;
//   opts.binary = "build/server/hisa_server";
//   opts.args = {"--backend=cpu"};
//   ASSIGN_OR_RETURN(auto server, hisa::ServerProcess::Start(opts));
//   auto client = hisa::HisaClient::Create(server->target());
//   ...
//   RETURN_IF_ERROR(server->Stop());   // also done by the destructor
//
// Start passes --listen=<host>:0 and --port_file=<temp dir>/port, then waits
// until the server has written its bound ports there ("grpc_port=N" and
// "metrics_port=M" lines, or a bare port number; the port must read the same
// twice, 20 ms apart, so a half-written file is never taken). Pass
// "--metrics_listen=127.0.0.1:0" in args to keep parallel servers apart. The
// child's stdout and stderr go to log_path(). Start fails with UNAVAILABLE
// (and the log's tail) when the child exits first, DEADLINE_EXCEEDED after
// start_timeout. Stop sends SIGTERM (a graceful drain), waits up to `grace`,
// then SIGKILL; it returns INTERNAL when the exit was not clean (the log is
// kept then; after a clean exit the temp dir is removed). Terminate (SIGTERM)
// and WaitExit (no signal) return the exit code (128 + signal for a signal
// death) and keep the temp dir and log, for tests that inspect them; past
// their timeout the server is SIGKILLed and they return DEADLINE_EXCEEDED.
// Thread safety: none; one owner.
#ifndef HISA_CLIENT_SERVER_PROCESS_H_
#define HISA_CLIENT_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace hisa {

struct ServerProcessOptions {
  std::string binary;
  // Extra flags, e.g. {"--backend=cpu", "--memory_budget=8GiB"}.
  std::vector<std::string> args;
  std::string host = "127.0.0.1";
  absl::Duration start_timeout = absl::Seconds(60);
  // SIGKILL the server when the thread that called Start exits (Linux
  // PR_SET_PDEATHSIG), so a crashed test or tool leaves no server behind.
  // Call Start from a thread that lives as long as the server should.
  bool kill_with_parent = true;
};

class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const ServerProcessOptions& options);
  ~ServerProcess();

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  absl::Status Stop(absl::Duration grace = absl::Seconds(15));
  absl::StatusOr<int> Terminate(absl::Duration timeout);
  absl::StatusOr<int> WaitExit(absl::Duration timeout);
  bool running() const { return pid_ > 0; }

  // "host:port" of the running server.
  const std::string& target() const { return target_; }
  int port() const { return port_; }
  // The metrics port the server reported; 0 when it reported none.
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // The temp dir holding the port file and the log.
  const std::string& dir() const { return dir_; }
  // Everything the child wrote to stdout and stderr so far.
  std::string log() const;
  // The last `max_bytes` of the child's log.
  std::string LogTail(size_t max_bytes = 4096) const;

 private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string target_;
  std::string dir_;
  std::string log_path_;
};

}  // namespace hisa

#endif  // HISA_CLIENT_SERVER_PROCESS_H_
