#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tern {

// Exit codes ternctl documents for scripts.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // the coordinator refused or the operation failed
  kExitUsage = 2,        // bad flags or arguments
  kExitUnavailable = 3,  // the coordinator could not be reached in time
  kExitNotFound = 4,     // the named host, service or rollout does not exist
  kExitNeedsOperator = 5,  // rollout watch: paused, or waiting at a manual gate
  kExitDenied = 6,       // not authenticated, or the caller's role does not allow it
  kExitTimeout = 7,      // --timeout (or a command's --wait) ran out; the coordinator was there
};

// Runs ternctl with `args` (without the program name). Output goes to `out`,
// the one-line error (if any) to `err`.
int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tern
