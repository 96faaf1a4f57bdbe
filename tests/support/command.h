#pragma once

#include <string>
#include <vector>

namespace tern::testing {

struct CommandResult {
  int code = -1;  // exit code, 128 + signal when killed
  std::string out;
  std::string err;
};

// Runs a program (looked up in PATH unless it has a '/') to completion with
// its output captured; argv, never a shell string.
CommandResult run(const std::string& exe, const std::vector<std::string>& args);
// The argv of a child process, built before fork() so that the child
// allocates nothing between fork and exec.
class ChildArgv {
 public:
  ChildArgv(const std::string& exe, const std::vector<std::string>& args);
  ChildArgv(const ChildArgv&) = delete;
  ChildArgv& operator=(const ChildArgv&) = delete;
  const char* exe() const { return store_.front().c_str(); }
  char* const* argv() const { return ptrs_.data(); }

 private:
  std::vector<std::string> store_;
  std::vector<char*> ptrs_;
};

// For a forked child: sends stdout to `out_fd` and stderr to `err_fd`, then
// execs (PATH lookup as above). Never returns; exits 127 when exec fails.
[[noreturn]] void exec_child(const ChildArgv& argv, int out_fd, int err_fd);

inline CommandResult run_cmd(const std::vector<std::string>& argv) {
  return run(argv.front(), std::vector<std::string>(argv.begin() + 1, argv.end()));
}

}  // namespace tern::testing
