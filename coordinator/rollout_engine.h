#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/rollout_plan.h"
#include "coordinator/wave_analysis.h"
#include "core/clock.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// What the engine asks of the world. Calls happen on the engine's thread and
// must not block: the outcome of a deploy or a rollback comes back later as
// an event (on_host_deployed, on_host_rolled_back).
struct RolloutEffects {
  std::function<void(const tern::v1::Rollout& r, const std::string& host, const tern::v1::ReleaseRef& release,
                     uint32_t weight)>
      deploy;
  std::function<void(const tern::v1::Rollout& r, const std::string& host)> rollback;
  // Every transition: persist the rollout, then publish the event.
  std::function<void(const tern::v1::Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message)>
      changed;
  // A wave's gate webhook is to be asked whether wave `wave` (0-based) may
  // start; the answer comes back as on_gate_answer. Unset: no gate is asked
  // (and a gated wave waits until it is answered).
  std::function<void(const tern::v1::Rollout& r, uint32_t wave, const std::string& webhook)> ask_gate = nullptr;
};

enum class RolloutCommand { kPause, kResume, kPromote, kAbort, kRollback };
const char* to_string(RolloutCommand c);

// The fleet rollout state machine. Single-threaded (the coordinator's event
// loop) and fed by events: agents' results, host health and connectivity,
// timer ticks and operator commands; time comes from the injected clock, so
// tests drive it with a FakeClock.
//
// A rollout runs its waves in order. In a wave it deploys to at most
// max_parallel hosts at once; when every host of the wave has finished it
// bakes, then waits at a manual gate if the wave has one, then moves on.
// A host that fails its stage, turns unhealthy while on the new release, or
// whose agent is gone counts against the failure budget; over budget the
// rollout rolls back (every host on the new release flips back, in
// parallel; unreachable ones when they return) or pauses, as the spec says.
// No step waits without a deadline: a host that does not answer within the
// progress deadline is counted as gone.
//
// Operator commands carry the rollout's generation; a stale one is refused
// with FAILED_PRECONDITION and changes nothing. The generation rises with
// every operator command and phase change. Repeating a command that already
// holds (pause a paused rollout) succeeds without change.
class RolloutEngine {
 public:
  RolloutEngine(const Clock& clock, RolloutEffects effects);

  // Starts a rollout over the planned waves. FAILED_PRECONDITION if the
  // service already has an active rollout.
  absl::StatusOr<tern::v1::Rollout> start(const std::string& id, const tern::v1::RolloutSpec& spec,
                                          const RolloutPlanResult& plan, const tern::v1::ReleaseRef& release,
                                          const tern::v1::ReleaseRef& previous,
                                          const std::map<std::string, std::string>& previous_versions = {},
                                          const tern::v1::ServiceAnalysis& analysis_metrics = {});
  // After a coordinator restart: takes back a persisted rollout. Hosts that
  // were mid-deploy are asked again (the agent answers at once if it already
  // runs the release); nothing already finished is redone.
  // `samples` (host, sample), in the order the analysis took them: the
  // current wave's journaled counts, so its test goes on where it was.
  void restore(const tern::v1::Rollout& rollout,
               const std::vector<std::pair<std::string, tern::v1::AnalysisSample>>& samples = {});

  // Agent results.
  void on_host_deployed(const std::string& rollout_id, const std::string& host, bool ok,
                        tern::v1::HostRolloutState failure, const std::string& message);
  void on_host_rolled_back(const std::string& rollout_id, const std::string& host, bool ok,
                           const std::string& message);
  // Health and connectivity of a host, whatever rollout it is in.
  void on_host_unhealthy(const std::string& service, const std::string& host, const std::string& message);
  void on_host_gone(const std::string& host, const std::string& message);
  void on_host_back(const std::string& host);
  // An operator changed `host` by hand (a forced host deploy or rollback)
  // while rollout `id` is active: the host is marked drifted and the event
  // says what was done. NOT_FOUND when the rollout does not hold the host.
  absl::Status on_host_changed_by_hand(const std::string& id, const std::string& host, const std::string& what);
  // Timers: bake ends, progress deadlines, analysis verdicts.
  void tick();
  // The answer of wave `wave`'s gate webhook: allowed deploys the wave; not
  // allowed pauses the rollout (never rolls it back) with `message`. An
  // answer the rollout no longer waits for is dropped.
  void on_gate_answer(const std::string& id, uint32_t wave, bool allowed, const std::string& message);

  // One interval of a canary's counts from `host`'s agent. Counted when the
  // host is on the canary in the wave being analyzed (or whose verdict still
  // stands while the wave holds); a host whose own counts FAIL is failed and
  // flipped back at once. What it did, for the caller's journal.
  WaveAnalysis::Taken on_sample(const std::string& host, const tern::v1::AnalysisSample& sample);
  // Moves the current wave's analysis horizon `by` further (an inconclusive
  // wave that paused runs on). FAILED_PRECONDITION when the wave is not
  // being analyzed or the generation is stale.
  // `host`'s own test in the current wave's analysis, per metric; NOT_FOUND
  // when the wave is not analyzed or the host has no counts in it.
  absl::StatusOr<std::vector<tern::v1::MetricVerdict>> host_analysis(const std::string& id,
                                                                     const std::string& host) const;
  absl::StatusOr<tern::v1::Rollout> extend_analysis(const std::string& id, uint64_t generation, Millis by,
                                                    const std::string& reason);

  absl::StatusOr<tern::v1::Rollout> command(const std::string& id, uint64_t generation, RolloutCommand cmd,
                                            const std::string& reason);

  const tern::v1::Rollout* find(const std::string& id) const;
  // One host's progress in a rollout, or null.
  const tern::v1::HostProgress* host(const std::string& rollout_id, const std::string& host) const;
  // The hosts of a rollout changed since the last call (positions in
  // hosts()), for a journal that writes only those; `all` after start and
  // restore. Cleared by the call.
  struct ChangedHosts {
    std::vector<int> positions;
    bool all = false;
  };
  ChangedHosts take_changed(const std::string& rollout_id);
  std::vector<const tern::v1::Rollout*> list() const;
  // The active rollout of a service, or null.
  const tern::v1::Rollout* active_for(const std::string& service) const;

  static bool is_terminal(tern::v1::RolloutPhase p);
  // Terminal and owing no host a rollback: nothing more will ever happen to
  // it. A rolled-back rollout with hosts away is terminal but not settled:
  // it is restored after a restart so they are still flipped when they
  // return.
  static bool is_settled(const tern::v1::Rollout& r);

 private:
  // What the engine keeps beside each rollout so that every agent answer
  // costs O(1), not a walk over the rollout's hosts: at 10,000 hosts the
  // walks made a rollout and a fleet rollback quadratic. Derived from the
  // rollout alone (rebuilt on start and restore); never persisted.
  struct Index {
    std::unordered_map<std::string, int> position;  // host id -> index in hosts()
    std::vector<std::vector<int>> wave_hosts;       // per wave: positions of its hosts, in order
    std::vector<uint32_t> waiting, deploying;       // per wave: hosts in that state
    std::size_t cursor = 0;  // into wave_hosts[current wave]: no waiting host before it
    std::set<std::string> flips_in_flight;          // rollbacks sent and not yet answered
    std::vector<int> changed;                       // positions changed since take_changed()
    std::vector<bool> is_changed;
    bool all_changed = true;
  };
  struct Entry {
    tern::v1::Rollout rollout;
    Index index;
    // The current wave's test, while its analysis holds; rebuilt from the
    // journaled samples after a restart.
    std::unique_ptr<WaveAnalysis> analysis;
  };

  tern::v1::Rollout* mutable_find(const std::string& id);
  Index& index_of(const tern::v1::Rollout& r);
  static void build_index(const tern::v1::Rollout& r, Index& ix);
  tern::v1::HostProgress* host_of(tern::v1::Rollout& r, const std::string& host);
  // Every change of a host's state goes through here, to keep the counts;
  // every other change to a host is marked with touch().
  void set_state(tern::v1::Rollout& r, tern::v1::HostProgress& h, tern::v1::HostRolloutState s);
  void touch(tern::v1::Rollout& r, const tern::v1::HostProgress& h);
  void set_phase(tern::v1::Rollout& r, tern::v1::RolloutPhase p, const std::string& message);
  void emit(tern::v1::Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message);
  // Moves the rollout as far as it can go now.
  void advance(tern::v1::Rollout& r);
  void dispatch(tern::v1::Rollout& r);
  // In the last wave: hosts of earlier waves that were given less traffic
  // than the last wave's weight are deployed again at it, so the rollout
  // ends with every host at the weight its last wave names. True while any
  // such raise is still to be answered.
  bool raise_earlier_waves(tern::v1::Rollout& r);
  void send_deploy(tern::v1::Rollout& r, tern::v1::HostProgress& h, uint32_t weight);
  void start_wave(tern::v1::Rollout& r, uint32_t wave);
  // The current wave's deploys begin (its gate, if any, allowed it).
  void deploy_wave(tern::v1::Rollout& r);
  void ask_gate(tern::v1::Rollout& r);
  void host_failed(tern::v1::Rollout& r, tern::v1::HostProgress& h, tern::v1::HostRolloutState state,
                   const std::string& message);
  bool over_budget(const tern::v1::Rollout& r) const;
  void on_budget_exceeded(tern::v1::Rollout& r, const std::string& why);
  void begin_rollback(tern::v1::Rollout& r, const std::string& why);
  void send_rollback(tern::v1::Rollout& r, tern::v1::HostProgress& h);
  void finish_rollback_if_done(tern::v1::Rollout& r);
  bool host_reachable(const std::string& host) const;
  // ANALYZING: from the wave's end of deploys; the horizon and the test.
  void begin_analysis(Entry& e);
  // A verdict for the current wave: PASS moves on, FAIL acts (on_fail),
  // INCONCLUSIVE at the horizon pauses; a FAIL after a PASS or while paused
  // or gated still acts.
  void judge(Entry& e);
  Entry* entry_of(const std::string& id);

  const Clock& clock_;
  RolloutEffects effects_;
  std::map<std::string, Entry> rollouts_;
  std::unordered_map<std::string, bool> gone_;  // hosts known to be unreachable
};

}  // namespace tern
