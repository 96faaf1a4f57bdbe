#include "tests/support/command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "tests/support/temp_dir.h"

namespace tern::testing {

ChildArgv::ChildArgv(const std::string& exe, const std::vector<std::string>& args) : store_{exe} {
  store_.insert(store_.end(), args.begin(), args.end());
  for (auto& a : store_) ptrs_.push_back(a.data());
  ptrs_.push_back(nullptr);
}

void exec_child(const ChildArgv& argv, int out_fd, int err_fd) {
  dup2(out_fd, 1);
  dup2(err_fd, 2);
  execvp(argv.exe(), argv.argv());
  _exit(127);
}

CommandResult run(const std::string& exe, const std::vector<std::string>& args) {
  char out_tmpl[] = "/tmp/tern-run-out-XXXXXX";
  char err_tmpl[] = "/tmp/tern-run-err-XXXXXX";
  int out_fd = mkstemp(out_tmpl);
  int err_fd = mkstemp(err_tmpl);
  const ChildArgv argv(exe, args);
  pid_t pid = fork();
  if (pid == 0) exec_child(argv, out_fd, err_fd);
  close(out_fd);
  close(err_fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  CommandResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_tmpl);
  r.err = read_file(err_tmpl);
  unlink(out_tmpl);
  unlink(err_tmpl);
  return r;
}

}  // namespace tern::testing
