#pragma once

// Helpers for tests that run the real tern binaries on loopback.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "tests/support/eventually.h"

namespace tern::testing {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

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

struct CommandResult {
  int code = -1;
  std::string out;
  std::string err;
};
// Runs a program (looked up in PATH unless it has a '/') to completion with
// its output captured.
CommandResult run(const std::string& exe, const std::vector<std::string>& args);
inline CommandResult run_cmd(const std::vector<std::string>& argv) {
  return run(argv.front(), std::vector<std::string>(argv.begin() + 1, argv.end()));
}

std::string read_file(const std::string& path);
// An address from a daemon's --ready-file JSON, by key ("grpc", "metrics");
// empty when the key is absent.
std::string ready_address(const std::string& ready_json, const std::string& key);
// GET over plain HTTP; empty on failure.
std::string http_get(const std::string& host_port, const std::string& path);

}  // namespace tern::testing
