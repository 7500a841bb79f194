// Starts the real hisa_server binary for integration tests: on loopback,
// ephemeral ports (read back from --port_file), stderr captured to a log, and
// always killed by the destructor (and by the kernel if the test dies:
// PR_SET_PDEATHSIG).
//
//   absl::StatusOr<std::unique_ptr<hisa::testing::ServerProcess>> server =
//       hisa::testing::ServerProcess::Start({"--idle_ttl=500ms"});
//   ASSERT_TRUE(server.ok()) << server.status();
//   auto channel = grpc::CreateChannel((*server)->address(), ...);
//   ...
//   EXPECT_EQ((*server)->Terminate(absl::Seconds(20)).value_or(-1), 0);
//
// Contracts:
//   Start runs HisaServerBinary() with --listen=127.0.0.1:0,
//   --metrics_listen=127.0.0.1:0, --backend=cpu, --threads=2,
//   --backend_threads=2, --port_file=<tmp> and then `flags` (later flags
//   win), and returns once the port file exists (DEADLINE_EXCEEDED after
//   `timeout`; INTERNAL with the log if the server exits first).
//   Terminate sends SIGTERM and waits; WaitExit only waits. Both return the
//   exit code (128 + signal for a signal death) or DEADLINE_EXCEEDED, after
//   which the process is SIGKILLed. The destructor SIGKILLs a live server.
// Not thread-safe; one object per server.
#ifndef HISA_TESTS_SERVICE_SERVER_PROCESS_H_
#define HISA_TESTS_SERVICE_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace hisa::testing {

// The server binary: $HISA_SERVER_BINARY, else the path CMake compiled in.
std::string HisaServerBinary();

// A fresh directory under $TMPDIR (or /tmp), removed by the caller if wanted.
std::string MakeTempDir(const std::string& prefix);

class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& flags,
      absl::Duration timeout = absl::Seconds(60));
  ~ServerProcess();

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // "127.0.0.1:<port>".
  std::string address() const;
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  // What the server wrote to stdout and stderr so far.
  std::string log() const;

  absl::StatusOr<int> Terminate(absl::Duration timeout);
  absl::StatusOr<int> WaitExit(absl::Duration timeout);
  bool running() const { return pid_ > 0; }

 private:
  ServerProcess() = default;
  void Kill();

  pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string dir_;
  std::string log_path_;
};

}  // namespace hisa::testing

#endif  // HISA_TESTS_SERVICE_SERVER_PROCESS_H_
