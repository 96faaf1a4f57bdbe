#include "tests/integration/harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace tern::testing {

// fork/exec directly: the harness needs exact control of signals and reaping,
// which is what the tests are about.
Process::Process(const std::string& exe, const std::vector<std::string>& args, const std::string& log_path)
    : log_path_(log_path) {
  const ChildArgv argv(exe, args);
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = fork();
  if (pid_ == 0) exec_child(argv, fd, fd);
  close(fd);
}

Process::~Process() {
  if (running()) {
    kill(pid_, SIGKILL);
  }
  wait();
}

void Process::signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

int Process::wait() {
  if (!reaped_ && pid_ > 0) {
    while (waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

bool Process::running() {
  if (reaped_ || pid_ <= 0) return false;
  pid_t r = waitpid(pid_, &status_, WNOHANG);
  if (r == pid_) reaped_ = true;
  return !reaped_;
}

std::string Process::log() const { return read_file(log_path_); }

std::string ready_address(const std::string& ready_json, const std::string& key) {
  const std::string prefix = "\"" + key + "\": \"";
  const auto k = ready_json.find(prefix);
  if (k == std::string::npos) return "";
  const auto start = k + prefix.size();
  return ready_json.substr(start, ready_json.find('"', start) - start);
}

}  // namespace tern::testing
