#pragma once

#include <signal.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/health.h"
#include "agent/host_os.h"
#include "agent/process_launcher.h"
#include "agent/slot_templates.h"
#include "core/words.h"
#include "core/clock.h"
#include "tern/v1/agent_state.pb.h"
#include "tern/v1/common.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {

tern::v1::SlotColor other(tern::v1::SlotColor c);
// The slot's port for the spec's first port mapping (0 when it has none).
uint16_t slot_port(const tern::v1::ServiceSpec& spec, tern::v1::SlotColor color);

// What the supervisor keeps about a slot between operations, beside its
// recorded SlotState. Never persisted: after an agent restart it starts over.
struct SlotRuntime {
  // Steady-state health while the slot is up; null until its first check.
  std::unique_ptr<HealthTracker> tracker;
  TimePoint next_probe{};
  // A crashed slot waiting for its restart.
  std::optional<TimePoint> restart_at;
};

// A lifecycle hook to run about a slot (core/service_spec.h kHookNames).
struct HookCall {
  std::string name;  // "pre_traffic"
  tern::v1::Hook hook;
  // The release the hook runs from (its {release_dir}, {version},
  // TERN_RELEASE), unpacked in `dir`, and the one it replaces or returns from.
  tern::v1::ReleaseRef release;
  std::string dir;
  std::string previous_release;
  std::string rollout_id;
  uint32_t wave = 0;  // 1-based; 0: not part of a rollout
};

// What running a hook came to.
struct HookRun {
  bool passed = false;  // exited with status 0
  // Cut short because the owner shuts down (the hook was killed): neither
  // passed nor failed; recovery decides.
  bool interrupted = false;
  // "exited with status 3", "did not finish within 1m and was killed", ...
  std::string outcome;
  // The end of its output (at most kHookOutputBytes), lines " | "-joined,
  // valid UTF-8: fit for a one-line message.
  std::string output;
};

// How much of a hook's output is carried in its step's messages.
inline constexpr std::size_t kHookOutputBytes = 4096;

// One slot (blue or green) of one service: the mechanics of running a release
// there. How the release is launched (argv, environment, working dir, log
// file), the check that the slot's ports are free, the start, the probes until
// it is healthy, the drain and the stop.
//
// A Slot records nothing: the slot's SlotState lives in the supervisor's
// ServiceState, and the supervisor writes there what the Slot reports. Not
// thread-safe: the supervisor's thread owns it. Every wait goes through
// Deps::pause (host time, cut short by a shutdown) or HostOs::sleep_for.
class Slot {
 public:
  struct Deps {
    ProcessLauncher* launcher = nullptr;
    Prober* prober = nullptr;
    HostOs* os = nullptr;
    // The slot's output goes to <log_dir>/<service>-<color>.log.
    std::string log_dir;
    // Names the slot's processes <state_dir>/<service>/<color>
    // (LaunchSpec::slot_id) so that recovery finds them; empty: unnamed.
    std::string state_dir;
    // Waits up to `d` of host time; true when the owner is shutting down.
    std::function<bool(Millis d)> pause;
    // Who a spec without `user:` runs as; empty: the agent's own user.
    std::string default_user;
  };

  Slot(std::string service, tern::v1::SlotColor color, Deps deps);

  tern::v1::SlotColor color() const { return color_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& slot_id() const { return slot_id_; }
  // The last lines of the slot's log, " | "-joined, for an error message.
  std::string log_tail() const;

  // Where this slot's templates are rendered: <slot_id()>/rendered; empty
  // when the slot is unnamed (no state dir).
  const std::string& render_dir() const { return render_dir_; }
  // The slot's cgroup (SlotCgroups::slot_name): "<service>.<color>".
  const std::string& cgroup() const { return cgroup_; }
  // The spec's memory_max, cpu_max and tasks_max as cgroup limits.
  static CgroupLimits limits(const tern::v1::ServiceSpec& spec);

  // The placeholders of `release` (unpacked in `dir`) in this slot: {port},
  // {port:<name>}, {release_dir}, {render_dir}, {version}, {slot}, {service}.
  Placeholders placeholders(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                            const std::string& dir) const;
  // The process `release` (unpacked in `dir`) runs as in this slot: argv, the
  // spec's env values and working dir with placeholders() substituted
  // (text that names none stays as written; a bare argv[0] found in `dir`
  // runs from there); TERN_* and the spec's environment; output appended to
  // log_path(); named slot_id().
  LaunchSpec launch(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                    const std::string& dir) const;
  // Renders the spec's templates from `dir` into render_dir() for `as`
  // (launch()'s result: the files belong to its user), afresh; called before
  // every start. FAILED_PRECONDITION (or what the render gives) naming the
  // slot, the release, the template and what to do.
  absl::Status render(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release, const std::string& dir,
                      const LaunchSpec& as) const;
  // FAILED_PRECONDITION when another process holds one of the slot's ports.
  absl::Status check_ports(const tern::v1::ServiceSpec& spec, const std::string& version) const;
  // Starts the process; its steady-state health (runtime().tracker) starts over.
  absl::StatusOr<ProcessHandle> start(const LaunchSpec& launch);
  // Probes the started process until its health check passes. FAILED_PRECONDITION
  // with the reason when it exits first or misses its healthy deadline (the
  // caller stops it); ABORTED when the owner shuts down meanwhile.
  // Exec probes run as `as` says (the slot process's LaunchSpec).
  // `progress` (optional) hears how the probes go while it waits.
  absl::Status wait_healthy(const tern::v1::HealthCheck& check, uint16_t port, const ProcessHandle& h,
                            const std::string& version, const LaunchSpec& as,
                            const std::function<void(const std::string&)>& progress = {});
  static constexpr Millis kProbeReportEvery{5'000};
  // Tells the process that it is draining, as the spec asks: its
  // drain_signal to the process group, or its drain_command (run as
  // launch() would run the slot, waited for up to `limit`). Returns what
  // happened, for the progress log; empty when the spec asks for neither.
  std::string begin_drain(const tern::v1::ServiceSpec& spec, const tern::v1::ReleaseRef& release,
                          const std::string& dir, const ProcessHandle& h, Millis limit);
  // Runs `call`'s hook about this slot: argv with this slot's placeholders
  // for call.release (as launch() runs the slot: its user, confinement and
  // environment, plus TERN_HOOK, TERN_RELEASE, TERN_PREVIOUS_RELEASE,
  // TERN_ROLLOUT_ID and TERN_WAVE), named below slot_id() so that recovery
  // stops one an agent restart left running. Waits up to `limit`, then kills
  // its process group (a failure); a shutdown kills it too (interrupted).
  // `started` is told its handle once it runs. Its output is appended to
  // log_path() when it ends.
  HookRun run_hook(const tern::v1::ServiceSpec& spec, const HookCall& call, Millis limit,
                   const std::function<void(const ProcessHandle&)>& started);
  // Waits until none of `ports` has queued or open connections, or
  // `drain_time` passed; the sockets still open then (summed over the
  // ports). nullopt when cut short by a shutdown.
  std::optional<PortSockets> drain(const std::vector<uint16_t>& ports, Millis drain_time);
  // `signal` to the slot (its process group and everything in its cgroup),
  // up to `grace` for all of it to exit, then SIGKILL to the group and
  // cgroup.kill (and up to 5 s more); its cgroup is then removed. For pid 0,
  // only whatever is left in its cgroup is killed.
  void stop(const ProcessHandle& h, Millis grace, int signal = SIGTERM);

  SlotRuntime& runtime() { return runtime_; }

 private:
  const std::string service_;
  const tern::v1::SlotColor color_;
  Deps deps_;
  const std::string log_path_;
  const std::string slot_id_;
  const std::string render_dir_;
  const std::string cgroup_;
  SlotRuntime runtime_;
};

}  // namespace tern
