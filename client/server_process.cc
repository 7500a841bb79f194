#include "client/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace hisa {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The gRPC port in `path` ("grpc_port=N" lines as hisa_server writes them,
// or a bare number), or 0 while it is missing or incomplete. Sets
// *metrics_port from a "metrics_port=M" line when there is one.
int ReadPort(const std::string& path, int* metrics_port) {
  const std::string text = ReadFile(path);
  int port = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    int value = 0;
    if (absl::ConsumePrefix(&line, "grpc_port=")) {
      if (absl::SimpleAtoi(line, &value)) port = value;
    } else if (absl::ConsumePrefix(&line, "metrics_port=")) {
      if (absl::SimpleAtoi(line, &value)) *metrics_port = value;
    } else if (port == 0 && absl::SimpleAtoi(line, &value)) {
      port = value;
    }
  }
  return port > 0 && port < 65536 ? port : 0;
}

std::string ExitDescription(int wait_status) {
  if (WIFEXITED(wait_status)) {
    return absl::StrCat("exited with code ", WEXITSTATUS(wait_status));
  }
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(wait_status));
  }
  return absl::StrCat("ended with wait status ", wait_status);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const ServerProcessOptions& options) {
  if (options.binary.empty()) {
    return absl::InvalidArgumentError("no server binary given");
  }
  if (access(options.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "server binary '", options.binary, "' is not executable: ",
        std::strerror(errno)));
  }
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  char dir_template[] = "/tmp/hisa_server_XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(
        absl::StrCat("mkdtemp failed: ", std::strerror(errno)));
  }
  p->dir_ = dir_template;
  p->log_path_ = p->dir_ + "/server.log";
  const std::string port_file = p->dir_ + "/port";

  std::vector<std::string> argv_strings = {
      options.binary, absl::StrCat("--listen=", options.host, ":0"),
      absl::StrCat("--port_file=", port_file)};
  argv_strings.insert(argv_strings.end(), options.args.begin(),
                      options.args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  const std::string log_path = p->log_path_;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork failed: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    if (options.kill_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
    }
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      if (fd > STDERR_FILENO) close(fd);
    }
    // Default signal mask: the server waits for SIGTERM itself.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  p->pid_ = pid;

  const absl::Time deadline = absl::Now() + options.start_timeout;
  int last_port = 0;
  while (true) {
    int wait_status = 0;
    if (waitpid(p->pid_, &wait_status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      return absl::UnavailableError(absl::StrCat(
          "server ", ExitDescription(wait_status), " before listening; log ",
          p->log_path_, ":\n", p->LogTail()));
    }
    const int port = ReadPort(port_file, &p->metrics_port_);
    if (port != 0 && port == last_port) {
      p->port_ = port;
      break;
    }
    last_port = port;
    if (absl::Now() > deadline) {
      const std::string tail = p->LogTail();
      p->Stop(absl::Seconds(2)).IgnoreError();
      return absl::DeadlineExceededError(absl::StrCat(
          "server did not write its port to ", port_file, " within ",
          absl::FormatDuration(options.start_timeout), "; log:\n", tail));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  p->target_ = absl::StrCat(options.host, ":", p->port_);
  return p;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Stop().IgnoreError();
}

absl::StatusOr<int> ServerProcess::WaitExit(absl::Duration timeout) {
  if (pid_ <= 0) {
    return absl::FailedPreconditionError("server is not running");
  }
  const absl::Time deadline = absl::Now() + timeout;
  int wait_status = 0;
  while (waitpid(pid_, &wait_status, WNOHANG) != pid_) {
    if (absl::Now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &wait_status, 0);
      const pid_t pid = pid_;
      pid_ = -1;
      return absl::DeadlineExceededError(absl::StrCat(
          "server ", pid, " did not exit within ",
          absl::FormatDuration(timeout), "; killed"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

absl::StatusOr<int> ServerProcess::Terminate(absl::Duration timeout) {
  if (pid_ > 0) kill(pid_, SIGTERM);
  return WaitExit(timeout);
}

absl::Status ServerProcess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return absl::OkStatus();
  const pid_t pid = pid_;
  absl::StatusOr<int> code = Terminate(grace);
  if (!code.ok()) {
    return absl::InternalError(
        absl::StrCat(code.status().message(), " after SIGTERM"));
  }
  if (*code != 0) {
    return absl::InternalError(absl::StrCat("server ", pid, " exited with ",
                                            *code, " after SIGTERM; log ",
                                            log_path_));
  }
  // A clean exit leaves nothing worth keeping.
  unlink((dir_ + "/port").c_str());
  unlink(log_path_.c_str());
  rmdir(dir_.c_str());
  return absl::OkStatus();
}

std::string ServerProcess::log() const { return ReadFile(log_path_); }

std::string ServerProcess::LogTail(size_t max_bytes) const {
  const std::string log = ReadFile(log_path_);
  return log.size() > max_bytes ? log.substr(log.size() - max_bytes) : log;
}

}  // namespace hisa
