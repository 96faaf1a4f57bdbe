#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "core/metrics.h"
#include "coordinator/host_commands.h"
#include "coordinator/host_registry.h"
#include "coordinator/rollout_control.h"
#include "coordinator/rollout_engine.h"
#include "coordinator/prometheus_source.h"
#include "coordinator/rollout_plan.h"
#include "coordinator/rollout_store.h"
#include "coordinator/service_catalog.h"
#include "coordinator/webhook_gate.h"
#include "coordinator/webhook_outbox.h"

namespace tern {

// Drives the rollout engine against the fleet: turns its effects into agent
// commands, feeds the agents' answers back, journals every transition and
// publishes it to watchers and metrics.
//
// Write-ahead: the engine's transitions, and the hosts they changed, are
// queued and written to the journal in one transaction per loop turn; the
// commands they lead to go out only after that write. A restart therefore
// never finds a host deployed or flipped that its journal does not know it
// asked for, and resumes each rollout from its last recorded step. A failed
// journal write aborts the process (systemd restarts it).
//
// Not thread-safe: owned by the coordinator's event loop.
class RolloutDriver final : public RolloutControl {
 public:
  RolloutDriver(const Clock& clock, EventLoop& loop, const HostRegistry& registry, ServiceCatalog& catalog,
                HostCommands& commands, RolloutStore& store, Metrics& metrics);
  ~RolloutDriver() override;

  // The Prometheus server of rollouts whose analysis.source is prometheus:
  // every analysis interval the driver asks it, off the loop, for each host
  // on the canary, and feeds the answers to the engine as an agent's counts.
  void set_prometheus(std::unique_ptr<PrometheusSource> source);
  // Webhooks: every journal batch adds the deliveries its events owe to
  // `outbox` in the same transaction, then calls `committed` (which wakes
  // the sender) when it added any.
  void set_webhooks(std::unique_ptr<WebhookOutbox> outbox, std::function<void()> committed);

  // The gate webhooks waves may name (gate_webhook); null: none. Not owned.
  void set_gates(WebhookGates* gates) { gates_ = gates; }

  // Reads the rollouts that were not finished from the journal; resume()
  // then hands them back to the engine (on the loop, once hosts may dial in).
  absl::Status load();
  void resume();

  // The host is back (a hello, or heartbeats after a silence): sends what the
  // rollouts owe it.
  void host_returned(const std::string& host);
  // The host's active slot of `service` turned unhealthy or died.
  void host_unhealthy(const std::string& service, const std::string& host, const std::string& message);
  // Hosts past the grace count as gone; bakes and deadlines move on.
  void tick();

  // The rollout of `service` that holds `host` and is not finished, if any.
  const tern::v1::Rollout* active_rollout_with(const std::string& service, const std::string& host) const;
  // An operator changed `host` by hand (forced) during rollout `id`:
  // journaled, and the host is marked drifted there.
  void host_changed_by_hand(const std::string& id, const std::string& host, const std::string& what);

  // RolloutControl.
  absl::StatusOr<tern::v1::RolloutPlan> plan_rollout(const tern::v1::RolloutSpec& spec) override;
  absl::StatusOr<tern::v1::Rollout> start_rollout(const tern::v1::RolloutSpec& spec) override;
  absl::StatusOr<tern::v1::Rollout> get_rollout(const std::string& id) override;
  absl::StatusOr<std::vector<tern::v1::Rollout>> list_rollouts(const std::string& service, bool active_only) override;
  absl::StatusOr<std::vector<tern::v1::RolloutEvent>> rollout_events(const std::string& id,
                                                                     uint64_t after_sequence) override;
  absl::StatusOr<tern::v1::Rollout> rollout_command(const std::string& id, uint64_t generation, RolloutCommand cmd,
                                                    const std::string& reason) override;
  uint64_t watch(const std::string& id, std::function<void(const tern::v1::RolloutEvent&)> fn) override;
  void unwatch(uint64_t token) override;
  absl::StatusOr<tern::v1::Rollout> extend_rollout(const std::string& id, uint64_t generation, Millis by,
                                                   const std::string& reason) override;
  absl::StatusOr<tern::v1::RolloutAnalysisReport> rollout_analysis(const std::string& id, bool replay,
                                                                   const std::string& host) override;

  // One interval of a canary's counts from `host` (AgentMessage.sample).
  void on_sample(const std::string& host, const tern::v1::AnalysisSample& sample);

 private:
  RolloutEffects effects();
  // The hosts' side of the engine's effects.
  void deploy(const tern::v1::Rollout& r, const std::string& host, const tern::v1::ReleaseRef& release,
              uint32_t weight);
  void rollback(const tern::v1::Rollout& r, const std::string& host);
  // A rollback's answer; one naming a release counts only when the host's
  // status shows it active, healthy and at 100%.
  void rolled_back(const std::string& id, const std::string& host, const std::string& to_version,
                   const tern::v1::CommandResult& res);
  void changed(const tern::v1::Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message);
  // What an agent's answer changed is journaled even when it raised no event.
  void journal_answer(const std::string& rollout_id);
  void schedule_flush();
  // Writes the queued events (and each changed rollout once) in one
  // transaction, publishes them, then sends the commands they led to.
  void flush();
  void publish(std::vector<RolloutStore::Event> events, const std::vector<uint64_t>& sequences);
  void count_active();
  Metrics::Value& analysis_verdict(const std::string& verdict);
  Metrics::Value& event_counter(tern::v1::RolloutEventKind kind);
  Metrics::Histogram& rollout_duration(tern::v1::RolloutPhase outcome);
  Metrics::Histogram& deploy_duration(bool ok);
  // The per-service gauges of a rollout's latest summary.
  void export_service(const tern::v1::Rollout& r, int64_t now_ms);
  void export_analysis();
  absl::StatusOr<std::vector<PlanHost>> eligible_hosts(const tern::v1::ServiceRecord& svc,
                                                       const tern::v1::RolloutSpec& spec);
  bool unreachable(const std::string& host) const;
  // The cordoned hosts the last eligible_hosts() left out, as a plan warning.
  void warn_cordoned(std::vector<std::string>& warnings) const;
  // INVALID_ARGUMENT for a wave whose gate_webhook is not configured.
  absl::Status check_gates(const tern::v1::RolloutSpec& spec) const;

  const Clock& clock_;
  EventLoop& loop_;
  const HostRegistry& registry_;
  ServiceCatalog& catalog_;
  HostCommands& commands_;
  RolloutStore& store_;
  Metrics& metrics_;
  Metrics::Value& rollouts_active_;
  std::unique_ptr<RolloutEngine> engine_;
  std::vector<tern::v1::Rollout> to_resume_;

  // The journal's write-ahead queue.
  std::vector<RolloutStore::Event> journal_;
  std::set<std::string> dirty_rollouts_;
  std::vector<std::function<void()>> deferred_effects_;
  std::vector<RolloutStore::SampleRow> samples_;  // taken by an analysis, to journal
  bool flush_posted_ = false;
  std::unique_ptr<WebhookOutbox> webhooks_;
  std::function<void()> webhooks_committed_;
  WebhookGates* gates_ = nullptr;
  std::vector<std::string> last_cordoned_;  // of the last eligible_hosts()

  struct Watcher {
    std::string rollout_id;
    std::function<void(const tern::v1::RolloutEvent&)> fn;
  };
  std::map<uint64_t, Watcher> watchers_;
  uint64_t next_watcher_ = 1;

  // Deploys a rollout could not send because the host was away; sent on its hello.
  struct OwedDeploy {
    std::string rollout_id;
    tern::v1::ReleaseRef release;
    uint32_t weight = 100;
  };
  std::map<std::string, OwedDeploy> owed_deploys_;

  // The Prometheus source: one batch of queries in flight at a time, on
  // its own thread; the answers come back to the loop as samples.
  struct PromAsk {
    std::string host;
    tern::v1::AnalysisSample sample;  // everything but the metrics
    std::map<std::string, std::string> canary_vars, baseline_vars;
  };
  void ask_prometheus();
  void prometheus_worker();
  std::unique_ptr<PrometheusSource> prometheus_;
  std::map<std::string, TimePoint> prometheus_next_;  // rollout id -> next ask
  std::thread prometheus_thread_;
  std::mutex prometheus_mu_;
  std::condition_variable prometheus_cv_;
  std::optional<std::pair<tern::v1::ServiceAnalysis, std::vector<PromAsk>>> prometheus_batch_;  // guarded
  bool prometheus_busy_ = false;  // loop thread only
  bool prometheus_stop_ = false;  // guarded
};

}  // namespace tern
