#pragma once

// Running a helper program (nft, iptables-restore, conntrack, an exec health
// check) to completion from an argv vector: no shell, no system()/popen().

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"

namespace tern {

struct ExecResult {
  // The exit status when the program exited, -1 when a signal ended it.
  int exit_code = -1;
  // The signal that ended the program, 0 when it exited.
  int signal = 0;
  std::string out;
  std::string err;
  // True when out or err hit kMaxCommandOutput and the rest was dropped.
  bool truncated = false;

  bool success() const { return signal == 0 && exit_code == 0; }
};

// Each of stdout and stderr is captured up to this many bytes; the rest is
// read (so the program never blocks on a full pipe) and dropped.
inline constexpr size_t kMaxCommandOutput = 16 * 1024 * 1024;

// Runs argv[0] with the arguments argv, writes `stdin_data` to its stdin and
// then closes it, and captures stdout and stderr. argv[0] is looked up with
// find_executable() when it contains no '/'. Waits for the program to exit and
// reaps it.
//
// The child gets an empty signal mask and default signal dispositions (the
// caller's blocked SIGTERM/SIGINT are not inherited), its own process group,
// the caller's environment, and only fds 0-2 (every other fd is closed in it).
//
// A non-zero exit is not an error: it is reported in the result. Errors:
//   INVALID_ARGUMENT   argv is empty
//   NOT_FOUND          the program does not exist (ENOENT)
//   PERMISSION_DENIED  it cannot be executed (EACCES, EPERM)
//   DEADLINE_EXCEEDED  it ran longer than `timeout`; its process group was
//                      killed with SIGKILL and reaped; the message holds what
//                      it had printed on stderr
//   INTERNAL           pipe/spawn/poll failures
//
// Thread-safe. SIGPIPE is blocked on the calling thread while it runs, so a
// program that exits without reading its stdin does not kill the caller.
absl::StatusOr<ExecResult> run_command(const std::vector<std::string>& argv,
                                          const std::string& stdin_data = {},
                                          Millis timeout = Millis(10'000));

// The path of an executable file: `name` itself when it contains a '/',
// otherwise the first match in $PATH and then in /usr/local/sbin, /usr/sbin and
// /sbin (a non-root shell's PATH often lacks them, and the tools we drive live
// there). nullopt when there is none.
std::optional<std::string> find_executable(const std::string& name);

// One line for error messages: "`nft -f -` exited with status 1: Error: ..."
// (stderr, or stdout when stderr is empty, with newlines folded into "; ").
std::string describe_failure(const std::vector<std::string>& argv, const ExecResult& result);

}  // namespace tern
