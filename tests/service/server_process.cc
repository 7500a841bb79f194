#include "tests/service/server_process.h"

#include <stdlib.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace hisa::testing {

std::string HisaServerBinary() {
  if (const char* env = std::getenv("HISA_SERVER_BINARY"); env && *env) {
    return env;
  }
  return HISA_SERVER_BINARY;
}

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/", prefix,
                                     "XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) return "/tmp";
  return pattern;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> StartServer(
    const std::vector<std::string>& flags, absl::Duration timeout) {
  ServerProcessOptions options;
  options.binary = HisaServerBinary();
  options.args = {"--metrics_listen=127.0.0.1:0", "--backend=cpu",
                  "--threads=2", "--backend_threads=2"};
  options.args.insert(options.args.end(), flags.begin(), flags.end());
  options.start_timeout = timeout;
  return ServerProcess::Start(options);
}

}  // namespace hisa::testing
