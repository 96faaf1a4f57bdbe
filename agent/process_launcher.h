#pragma once

#include <signal.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/cgroups.h"

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
  // The slot's cgroup (SlotCgroups::slot_name), where the process starts
  // before it execs when the launcher puts slots in cgroups; and its limits,
  // which a launcher that cannot enforce them refuses.
  std::string cgroup;
  CgroupLimits limits;
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

  // A slot as a whole: its process `h` (pid 0: none recorded) and what else
  // runs in its cgroup (LaunchSpec::cgroup). Without cgroups, the process
  // group is all there is, and these fall back to it.

  // How slots run here: "cgroup v2 at ..." or "process groups (why)".
  virtual std::string placement() const { return "process groups"; }
  // `sig` to the slot's process group and to every process in its cgroup.
  virtual void signal_slot(const ProcessHandle& h, const std::string& cgroup, int sig) {
    (void)cgroup;
    signal_group(h, sig);
  }
  // True when the slot's process has ended and nothing is left in its cgroup.
  virtual bool slot_ended(const ProcessHandle& h, const std::string& cgroup) {
    (void)cgroup;
    return h.pid <= 0 || poll(h).has_value();
  }
  // SIGKILL to the process group, and every process in the cgroup killed.
  virtual void kill_slot(const ProcessHandle& h, const std::string& cgroup) {
    (void)cgroup;
    signal_group(h, SIGKILL);
  }
  // Kills whatever runs in a slot's cgroup (a slot with no recorded process,
  // or about to start afresh); how many processes there were.
  virtual int kill_leftovers(const std::string& cgroup) {
    (void)cgroup;
    return 0;
  }
  // Removes a slot's cgroup once it is empty.
  virtual void release(const std::string& cgroup) { (void)cgroup; }
  // After an agent restart, for an adopted slot: its limits set again, and
  // its processes (its session) moved into its cgroup when they run outside
  // it (slots started before the host used cgroups). How many were moved.
  virtual absl::StatusOr<int> adopt(const ProcessHandle& h, const std::string& cgroup, const CgroupLimits& limits) {
    (void)h, (void)cgroup, (void)limits;
    return 0;
  }
  // What the slot's processes use: its cgroup's, else its session's.
  virtual std::optional<ResourceUsage> usage(const ProcessHandle& h, const std::string& cgroup) {
    (void)h, (void)cgroup;
    return std::nullopt;
  }
  // The slot cgroups that exist, by name.
  virtual std::vector<std::string> slot_cgroups() { return {}; }
};

// `cgroups` null: slots are process groups, and `placement` says why.
std::unique_ptr<ProcessLauncher> make_system_process_launcher(std::shared_ptr<const SlotCgroups> cgroups = nullptr,
                                                              std::string placement = "process groups");

// Kernel start time of a pid (/proc/<pid>/stat field 22); nullopt if gone or a zombie.
std::optional<uint64_t> process_start_time(int64_t pid);

}  // namespace tern
