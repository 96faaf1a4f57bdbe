#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

// What a slot's cgroup may use; 0 is no limit.
struct CgroupLimits {
  uint64_t memory_max = 0;    // bytes (memory.max)
  uint64_t cpu_quota_us = 0;  // µs of CPU per 100 ms period (cpu.max)
  uint32_t tasks_max = 0;     // pids.max
  bool any() const { return memory_max > 0 || cpu_quota_us > 0 || tasks_max > 0; }
};

// What the processes of a slot use.
struct ResourceUsage {
  uint64_t cpu_usec = 0;  // user + system since the slot started
  uint64_t memory_bytes = 0;
  uint32_t processes = 0;
};

// The cgroup v2 directory under which each slot gets a cgroup of its own,
// "<service>.<color>", so that stopping a slot reaches every process it
// started (a double fork or a setsid escapes a process group, never a
// cgroup: cgroup.kill ends them all), its limits hold for all of them, and
// what it uses can be read.
//
// The directory sits outside the agent's own systemd unit on purpose: slots
// outlive agent restarts, and systemd before v254 (no DelegateSubgroup=)
// cannot restart a unit whose delegated cgroup has controllers enabled for
// children that still hold processes (the new main process may not join a
// cgroup with controllers enabled below it). Like Docker's cgroupfs driver,
// the agent owns a top-level directory instead: /sys/fs/cgroup/tern by
// default. Thread-safe: every call reads or writes cgroupfs files only.
class SlotCgroups {
 public:
  // The agent's choice, from `cgroup_parent` in its config:
  //  - "off": process groups;
  //  - "auto" (the default): <cgroup2 mount>/tern on a host with cgroup v2
  //    only (Debian 12's default); process groups, saying why, on a host
  //    without cgroup v2, with a hybrid v1/v2 hierarchy, or where the
  //    directory cannot be made (not root, a read-only /sys/fs/cgroup);
  //  - an absolute path inside a cgroup2 mount: that directory (made if
  //    missing); an error when it cannot be used.
  // `placement` says which, for `host status`; `tree` is null for process
  // groups. `mountinfo` is injectable for tests.
  struct Choice {
    std::unique_ptr<SlotCgroups> tree;
    std::string placement;
  };
  static absl::StatusOr<Choice> choose(const std::string& setting,
                                       const std::string& mountinfo = "/proc/self/mountinfo");

  // Uses `parent` (inside a cgroup2 mount at `mount`) as it is: made if
  // missing, with memory, cpu and pids enabled for its children where the
  // hierarchy offers them.
  static absl::StatusOr<std::unique_ptr<SlotCgroups>> open(const std::string& mount, const std::string& parent);

  const std::string& parent() const { return parent_; }
  // Of memory, cpu and pids, those a slot's cgroup has.
  const std::set<std::string>& controllers() const { return controllers_; }
  // "cgroup v2 at /sys/fs/cgroup/tern (memory, cpu, pids)".
  std::string describe() const;

  // The cgroup of a slot: "<service>.<color>".
  static std::string slot_name(const std::string& service, const std::string& color);
  std::string path(const std::string& name) const { return parent_ + "/" + name; }

  // Makes the slot's cgroup if missing and sets its limits (unset ones back
  // to "max"). FAILED_PRECONDITION naming the missing controller when a
  // limit cannot be enforced here.
  absl::Status prepare(const std::string& name, const CgroupLimits& limits) const;
  // The processes in the slot's cgroup (empty when it does not exist).
  std::vector<int64_t> pids(const std::string& name) const;
  bool populated(const std::string& name) const { return !pids(name).empty(); }
  // True when `pid` is a member of the slot's cgroup.
  bool contains(const std::string& name, int64_t pid) const;
  // Moves `pid` (all its threads) into the slot's cgroup.
  absl::Status move(const std::string& name, int64_t pid) const;
  // `sig` to every process in the slot's cgroup.
  void signal(const std::string& name, int sig) const;
  // Kills every process in the slot's cgroup at once (cgroup.kill; on a
  // kernel before 5.14, SIGKILL to each until none is left).
  void kill(const std::string& name) const;
  // Removes the slot's cgroup if it is empty.
  void remove(const std::string& name) const;
  std::optional<ResourceUsage> usage(const std::string& name) const;
  // The slot cgroups under parent() (their names): only directories named
  // as slot_name() names them, so that a cgroup_parent given by mistake as
  // a directory of other cgroups (system.slice) never has those taken for
  // slots, or killed as unknown ones.
  std::vector<std::string> children() const;
  static bool is_slot_name(const std::string& name);

 private:
  SlotCgroups(std::string mount, std::string parent, std::set<std::string> controllers)
      : mount_(std::move(mount)), parent_(std::move(parent)), controllers_(std::move(controllers)) {}

  const std::string mount_;
  const std::string parent_;
  const std::set<std::string> controllers_;
};

// Resident memory (VmRSS) of a process in bytes; 0 when it is gone.
uint64_t process_rss_bytes(int64_t pid);

}  // namespace tern
