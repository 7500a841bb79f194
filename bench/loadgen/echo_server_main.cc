// hisa_echo_server: the echo baseline (echo.proto) as its own process, so
// that hisa_loadgen compares two servers that each run in a process of their
// own over loopback.
//
//   hisa_echo_server --listen=127.0.0.1:0 --port_file=/tmp/echo.port
//
// --port_file gets "grpc_port=N\n" once serving (written to a temporary name
// and renamed, so readers never see half a file). SIGTERM / SIGINT stop it
// (exit 0).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "bench/loadgen/echo_service.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "host:port; port 0 picks one");
ABSL_FLAG(std::string, port_file, "", "write 'grpc_port=N' here once serving");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("gRPC echo baseline for hisa_loadgen");
  absl::ParseCommandLine(argc, argv);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = hisa::EchoServer::Start(absl::GetFlag(FLAGS_listen));
  if (!server.ok()) {
    std::fprintf(stderr, "hisa_echo_server: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << "grpc_port=" << (*server)->port() << "\n";
    }
    if (std::rename(tmp.c_str(), port_file.c_str()) != 0) {
      std::fprintf(stderr, "hisa_echo_server: cannot write %s\n",
                   port_file.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "hisa_echo_server: serving on port %d\n",
               (*server)->port());
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  (*server)->Shutdown();
  return 0;
}
