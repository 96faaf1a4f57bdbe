#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "agent/artifact_stager.h"
#include "agent/health.h"
#include "agent/host_os.h"
#include "agent/process_launcher.h"
#include "agent/canary_sampler.h"
#include "agent/slot.h"
#include "agent/traffic.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/agent_state.pb.h"

namespace tern {

// What a supervisor needs from the host and from the agent around it.
struct SupervisorDeps {
  ProcessLauncher* launcher = nullptr;
  Prober* prober = nullptr;
  ArtifactStager* stager = nullptr;
  TrafficMap* traffic = nullptr;
  // Time, waits and the host's sockets: the supervisor reads no other clock.
  HostOs* os = nullptr;
  // Writes the agent's whole state file; called after every state change and
  // before every action it announces. Must not call back into the supervisor.
  std::function<absl::Status()> persist;
  // Sends an event to the coordinator (best effort).
  std::function<void(const tern::v1::AgentEvent&)> emit;
  // Per-slot logs go to <log_dir>/<service>-<color>.log.
  std::string log_dir;
  // Slot processes are named <state_dir>/<service>/<color> (LaunchSpec::slot_id),
  // so that recover() finds the ones the state never recorded. Empty: unnamed.
  std::string state_dir;
  // How often (host time) an idle supervisor checks its processes.
  Millis monitor_interval{200};
  // Staged releases kept after a successful deploy besides those in use
  // (either slot's, last_good, previous_good); the rest are deleted. 0: none
  // are deleted.
  std::size_t keep_releases = 5;
  // Who a spec without `user:` runs as (run_as_user); empty: the agent.
  std::string default_user;
  // Sends one interval of a canary split's counts; false when it could not
  // be sent (not connected): the counts are kept and sent with the next.
  std::function<bool(const tern::v1::AnalysisSample&)> send_sample;
  // Reads a slot's metrics endpoint; empty: scrape_loopback with a 2s timeout.
  std::function<absl::StatusOr<std::string>(uint16_t port, const std::string& path)> scrape;
};

// One service on this host: its blue and green slots, the deploy sequence,
// rollback, crash restarts and steady-state health.
//
// The supervisor keeps the service's last known-good release (ServiceState
// last_good): the last one that was active at 100% and stayed healthy there
// for the health check's minimum healthy time. Rollback returns to it: a flip
// when it runs healthy in the idle slot, otherwise it is started there first.
// Traffic never moves onto a slot that is not healthy, by any command, and a
// deploy never stops the last known-good release to make room.
//
// After a successful deploy, old staged releases are deleted down to
// SupervisorDeps::keep_releases; what either slot holds (running, warm or
// stopped) and the last and previous known-good releases always stay.
//
// Operations (deploy, switch, rollback, stop, remove) run one at a time, in
// order, on the supervisor's own thread; submit() never blocks. Between
// operations the same thread watches the slots. The state it keeps is the
// intended state: it is updated and persisted before each action, so after a
// crash recover() can pick up where it stood.
class ServiceSupervisor {
 public:
  // How long a rollback waits for one of its hooks (pre_stop of the slot it
  // leaves, post_rollback) before killing it: a rollback is the way back to
  // safety and never waits on a hook for long.
  static constexpr Millis kRollbackHookWait{5'000};

  using Done = std::function<void(const tern::v1::CommandResult&)>;
  using Progress = std::function<void(const std::string&)>;

  ServiceSupervisor(tern::v1::ServiceState state, SupervisorDeps deps);
  ~ServiceSupervisor();

  // Adopts the slots the state names (same pid and start time), marks the
  // ones that are gone, stops the slot processes the launcher finds that the
  // state does not name (orphans: started, then the agent died before it
  // recorded them; they would hold the slot's port), and re-applies the
  // recorded mapping. A release a deploy or rollback was starting in the idle
  // slot (ServiceState starting_slot) is stopped, unless it is the last
  // known-good release or keep_warm is set and it was healthy; an
  // operation_interrupted event says what was done. Call once, before start().
  absl::Status recover();
  void start();
  // Stops the thread; slots keep running (an agent restart never stops them).
  void shutdown();

  // Queues a command. `done` is called exactly once, from the supervisor
  // thread (or immediately if the supervisor is shut down).
  void submit(tern::v1::Command cmd, Progress progress, Done done);

  tern::v1::ServiceState snapshot() const;
  tern::v1::ServiceStatus status() const;
  // True once a remove_service command completed; the owner then drops it.
  bool removed() const;

 private:
  struct Op {
    tern::v1::Command cmd;
    Progress progress;
    Done done;
  };

  void run();
  void stop_orphans();
  tern::v1::CommandResult execute(const Op& op);
  absl::Status deploy(const tern::v1::DeployRelease& d, const Progress& p);
  // Returns to `to_version` (empty: the last known-good release). A release
  // named and returned to becomes the last known-good one at once, and the
  // one rolled back from loses the title: a fleet rollback has judged it.
  absl::Status rollback(const std::string& to_version, const Progress& p);
  absl::Status return_to(const std::string& to_version, const Progress& p);
  void trust_returned_release(const tern::v1::ReleaseRef& from);
  absl::Status switch_traffic(tern::v1::SlotColor to, uint32_t weight, const Progress& p);
  // FAILED_PRECONDITION when a mapping with `to` active at `weight` would give
  // a slot that is not healthy more of the traffic than it has now.
  absl::Status check_healthy_targets(tern::v1::SlotColor to, uint32_t weight);
  // Brings `release` up in `color` (the idle slot): stage it (already staged:
  // at once; skipped when `dir` names its release dir), start, probe until
  // healthy; recorded as starting_slot meanwhile.
  absl::Status bring_up(tern::v1::SlotColor color, const tern::v1::ReleaseRef& release, std::string dir,
                        const Progress& p);
  // The release `version` as this host knows it (a slot's, last_good's or
  // previous_good's record), or a bare version; guarded by mu_.
  tern::v1::ReleaseRef known_release(const std::string& version);
  // Makes the active release last_good once it has been active at 100% and
  // healthy for the minimum healthy time; true when last_good changed.
  bool track_known_good();
  // The active slot `c` turned unhealthy or crashed: if it runs last_good,
  // previous_good takes the title back. Caller holds mu_.
  void demote_known_good(tern::v1::SlotColor c);
  // Undoes a start recover() finds in starting_slot; returns what it did.
  std::string undo_interrupted_start();
  // What recover() does about a hook (ServiceState hook) the agent was
  // killed in; returns what it did, for the interrupted event.
  std::string recover_hook();
  // Runs the spec's hook `name` about slot `about` from `release` (in
  // `dir`), when the spec has one; recorded in state_.hook meanwhile. OK when
  // it passed or failed with on_failure warn (reported through `p` and a
  // hook_failed event); FAILED_PRECONDITION with its output when it failed
  // with fail; ABORTED when the supervisor shut down meanwhile (the record
  // stays for recovery). On the rollback path it is waited for at most
  // kRollbackHookWait and counts as warn: nothing a hook says stops a rollback.
  absl::Status run_hook(const std::string& name, tern::v1::SlotColor about, const tern::v1::ReleaseRef& release,
                        const std::string& dir, const std::string& previous, const Progress& p);
  // Runs a hook recover() found interrupted and idempotent, again.
  void rerun_hook(const tern::v1::RunningHook& h);
  absl::Status stop_slot_op(tern::v1::SlotColor color, const Progress& p);
  // After a successful deploy: deletes staged releases beyond
  // deps_.keep_releases, never one a slot holds or a known-good one.
  void prune_releases(const Progress& p);
  absl::Status remove(const Progress& p);
  absl::Status apply_spec(const tern::v1::ApplyServiceSpec& a, const Progress& p);

  // A slot's steps, recorded in state_ around what its Slot does; called on
  // the supervisor thread.
  absl::Status start_slot(tern::v1::SlotColor color, const tern::v1::ReleaseRef& release, const std::string& dir,
                          const Progress& p);
  absl::Status wait_healthy(tern::v1::SlotColor color, const Progress& p);
  void stop_slot(tern::v1::SlotColor color, tern::v1::SlotPhase final_phase, const std::string& why);
  void drain(tern::v1::SlotColor color, const Progress& p);
  // A drained slot whose pre_stop hook failed (on_failure fail) stays up, idle.
  // The pre_stop hook about `color` before it is stopped outside a switch's
  // drain (an idle warm slot replaced or rolled over, a stop command, the
  // service removed), from the slot's own release; only for a slot that runs
  // healthy. What run_hook says (FAILED_PRECONDITION for a `fail` hook that
  // failed; the caller decides whether that holds the stop).
  absl::Status pre_stop_idle(tern::v1::SlotColor color, const Progress& p);
  void keep_after_failed_pre_stop(tern::v1::SlotColor color);
  // Resumes a drain recover() found interrupted, then stops the slot.
  void finish_drain(tern::v1::SlotColor color);
  absl::Status set_mapping(tern::v1::SlotColor active, uint32_t weight);
  void monitor();
  // While a deploy's canary split holds: every interval, one AnalysisSample.
  void sample_canary(TimePoint now);
  const Clock& clock() const { return deps_.os->clock(); }
  // Waits up to `d` for shutdown; true when the supervisor is stopping.
  bool pause(Millis d);

  // The slot's recorded state (guarded by mu_) and its mechanics.
  tern::v1::SlotState& recorded(tern::v1::SlotColor color);
  Slot& slot(tern::v1::SlotColor color);
  Slot::Deps slot_deps();
  uint16_t slot_port(tern::v1::SlotColor color) const;
  void save(const std::string& operation);
  void event(tern::v1::AgentEventKind kind, const std::string& message);
  ProcessHandle handle(const tern::v1::SlotState& s) const { return {s.pid(), s.start_time()}; }
  bool running(const tern::v1::SlotState& s) const;

  SupervisorDeps deps_;
  const std::string name_;
  mutable std::mutex mu_;  // guards state_ (written only by the supervisor thread)
  tern::v1::ServiceState state_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  bool stopping_ = false;
  bool removed_ = false;
  // While a deploy runs: the split its switch maps with (DeployRelease.split).
  std::optional<std::string> deploy_split_;
  std::thread thread_;
  // Used only by the supervisor thread (and recover(), before it starts).
  Slot blue_;
  Slot green_;
  // Since when the active slot's process (good_pid_) has been healthy at
  // 100%; never persisted, so after a restart the minimum healthy time
  // starts over.
  std::optional<TimePoint> good_since_;
  int64_t good_pid_ = 0;
  // A slot whose drain an agent restart interrupted (keep_warm off): the
  // supervisor's thread finishes the drain and stops it before anything else.
  tern::v1::SlotColor unfinished_drain_ = tern::v1::SLOT_COLOR_UNSPECIFIED;
  // The command being executed, as its hooks see it; supervisor thread only.
  struct HookContext {
    uint64_t command_id = 0;
    std::string rollout_id;
    uint32_t wave = 0;
    bool rolling_back = false;
  };
  HookContext hook_context_;
  // An idempotent post_switch or post_rollback hook an agent restart cut
  // off: the supervisor's thread runs it again before anything else.
  std::optional<tern::v1::RunningHook> rerun_;
  // A pre_stop hook an agent restart cut off that is not idempotent:
  // finish_drain() stops the slot without running it again.
  bool skip_pre_stop_ = false;
  // The canary split being sampled (state_.analysis()); supervisor thread only.
  struct Sampling {
    uint64_t split_id = 0;
    std::optional<CanarySampler> sampler;
    TimePoint next;
    std::vector<tern::v1::MetricCounts> pending;  // counts not yet sent
    uint32_t canary_exits = 0;
    // The mapper's running connection counts at the last sample (canary,
    // baseline), and those counted since but not yet sent.
    std::optional<std::pair<uint64_t, uint64_t>> connections_seen;
    std::optional<std::pair<uint64_t, uint64_t>> connections_pending;
  };
  // The running new-connection counts of the canary's and the baseline's
  // slots over all the service's ports, or nullopt when they cannot be read.
  std::optional<std::pair<uint64_t, uint64_t>> slot_connections(const tern::v1::ServiceSpec& spec,
                                                                tern::v1::SlotColor canary);
  Sampling sampling_;
};

}  // namespace tern
