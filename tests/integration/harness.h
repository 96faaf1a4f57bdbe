#pragma once

// Helpers for tests that run the real tern binaries on loopback, on top of
// the unit tests' support (tests/support/): temp dirs, commands, HTTP.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "tests/support/command.h"
#include "tests/support/eventually.h"
#include "tests/support/http.h"
#include "tests/support/temp_dir.h"

namespace tern::testing {

// A child process with stdout and stderr in `log_path`. Killed (SIGKILL) on
// destruction if still running.
class Process {
 public:
  Process(const std::string& exe, const std::vector<std::string>& args, const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits for exit and returns the exit code (128 + signal when killed).
  int wait();
  bool running();
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  bool reaped_ = false;
  int status_ = 0;
};

// An address from a daemon's --ready-file JSON, by key ("grpc", "metrics");
// empty when the key is absent.
std::string ready_address(const std::string& ready_json, const std::string& key);

}  // namespace tern::testing
