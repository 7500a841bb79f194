// Starts the real hisa_server binary for integration tests, through the one
// launcher the project has (client/server_process.h): loopback, ephemeral
// ports read back from --port_file, output captured to a log, killed with
// the test (PR_SET_PDEATHSIG).
//
//   absl::StatusOr<std::unique_ptr<hisa::ServerProcess>> server =
//       hisa::testing::StartServer({"--idle_ttl=500ms"});
//   ASSERT_TRUE(server.ok()) << server.status();
//   auto channel = grpc::CreateChannel((*server)->target(), ...);
//   ...
//   EXPECT_EQ((*server)->Terminate(absl::Seconds(20)).value_or(-1), 0);
//
// StartServer runs HisaServerBinary() with --metrics_listen=127.0.0.1:0,
// --backend=cpu, --threads=2, --backend_threads=2 and then `flags` (later
// flags win); see ServerProcess for the rest.
#ifndef HISA_TESTS_SERVICE_SERVER_PROCESS_H_
#define HISA_TESTS_SERVICE_SERVER_PROCESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/server_process.h"

namespace hisa::testing {

// The server binary: $HISA_SERVER_BINARY, else the path CMake compiled in.
std::string HisaServerBinary();

// A fresh directory under $TMPDIR (or /tmp), removed by the caller if wanted.
std::string MakeTempDir(const std::string& prefix);

absl::StatusOr<std::unique_ptr<ServerProcess>> StartServer(
    const std::vector<std::string>& flags,
    absl::Duration timeout = absl::Seconds(60));

}  // namespace hisa::testing

#endif  // HISA_TESTS_SERVICE_SERVER_PROCESS_H_
