#include "tests/service/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace hisa::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

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

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& flags, absl::Duration timeout) {
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->dir_ = MakeTempDir("hisa_server_");
  server->log_path_ = server->dir_ + "/server.log";
  const std::string port_file = server->dir_ + "/ports";

  std::vector<std::string> args = {
      HisaServerBinary(),        "--listen=127.0.0.1:0",
      "--metrics_listen=127.0.0.1:0", "--backend=cpu",
      "--threads=2",             "--backend_threads=2",
      "--port_file=" + port_file};
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: die with the test, log to a file, default signal handling.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int fd = open(server->log_path_.c_str(),
                        O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  server->pid_ = pid;

  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::ifstream in(port_file);
    if (in.good()) {
      for (absl::string_view line :
           absl::StrSplit(ReadFile(port_file), '\n', absl::SkipEmpty())) {
        std::pair<absl::string_view, absl::string_view> kv =
            absl::StrSplit(line, absl::MaxSplits('=', 1));
        int value = 0;
        if (!absl::SimpleAtoi(kv.second, &value)) continue;
        if (kv.first == "grpc_port") server->port_ = value;
        if (kv.first == "metrics_port") server->metrics_port_ = value;
      }
      if (server->port_ > 0) return server;
      return absl::InternalError(
          absl::StrCat("bad port file:\n", ReadFile(port_file)));
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      server->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("hisa_server exited with ", ExitCode(status),
                       " before serving:\n", server->log()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "hisa_server did not write its port file within ",
          absl::FormatDuration(timeout), ":\n", server->log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

ServerProcess::~ServerProcess() { Kill(); }

std::string ServerProcess::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::string ServerProcess::log() const { return ReadFile(log_path_); }

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("server not running");
  kill(pid_, SIGTERM);
  return WaitExit(timeout);
}

absl::StatusOr<int> ServerProcess::WaitExit(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("server not running");
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return ExitCode(status);
    }
    if (absl::Now() > deadline) {
      Kill();
      return absl::DeadlineExceededError(absl::StrCat(
          "hisa_server still running after ", absl::FormatDuration(timeout),
          "; killed"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace hisa::testing
