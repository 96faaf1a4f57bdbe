#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

// What to run in a slot. argv is exec'd directly (never through a shell).
struct LaunchSpec {
  std::vector<std::string> argv;
  // The complete environment of the child (the agent's own is not inherited).
  std::map<std::string, std::string> env;
  std::string working_dir;  // empty: "/"
  std::string user;         // empty: the agent's user
  // stdout and stderr are appended here.
  std::string log_path;
  // Names the slot the process runs in, "<state dir>/<service>/<color>", so
  // that find_orphans() finds it after an agent restart even if its start
  // was never recorded. The system launcher puts it in the child's
  // environment as TERN_SLOT_ID. Empty: unnamed.
  std::string slot_id;
};

// A process the agent started, identified beyond its pid by its kernel start
// time so that a recycled pid is never taken for it.
struct ProcessHandle {
  int64_t pid = 0;
  uint64_t start_time = 0;
  friend bool operator==(const ProcessHandle&, const ProcessHandle&) = default;
};

struct ExitInfo {
  // "exited with status 1", "killed by signal 9", "gone (not a child)".
  std::string description;
  bool clean = false;  // exit status 0
};

// A running process that recovery found and the recorded state does not know.
struct Orphan {
  ProcessHandle handle;
  std::string slot_id;
};

// Starts and watches slot processes. Every process leads its own session and
// process group, so a stop reaches all its children. Thread-safe.
class ProcessLauncher {
 public:
  virtual ~ProcessLauncher() = default;
  virtual absl::StatusOr<ProcessHandle> start(const LaunchSpec& spec) = 0;
  // nullopt while the process runs; otherwise how it ended (reaped if it was
  // our child). Works for adopted processes too.
  virtual std::optional<ExitInfo> poll(const ProcessHandle& h) = 0;
  // Sends a signal to the process group. No-op when the process is gone.
  virtual void signal_group(const ProcessHandle& h, int sig) = 0;
  // After an agent restart: true when the recorded process is still the one
  // running under that pid (adopt it), false when it is gone or was recycled.
  virtual bool recover(const ProcessHandle& h) = 0;
  // After an agent restart, the other half of recovery (the contract of
  // Mesos' Launcher::recover): the processes this launcher can find whose
  // LaunchSpec::slot_id is `scope` or lies below it ("<scope>/...") and that
  // `known` does not name: started but never recorded, as when the agent
  // died between a start and its state write. Only the leader of each
  // process group is reported (signal_group() reaches the rest), and never a
  // descendant of a known process.
  virtual std::vector<Orphan> find_orphans(const std::string& scope, const std::vector<ProcessHandle>& known) = 0;
};

std::unique_ptr<ProcessLauncher> make_system_process_launcher();

// Kernel start time of a pid (/proc/<pid>/stat field 22); nullopt if gone or a zombie.
std::optional<uint64_t> process_start_time(int64_t pid);

}  // namespace tern
