#pragma once

#include <chrono>
#include <functional>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <map>
#include <set>
#include <unordered_map>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "core/metrics.h"
#include "coordinator/admin_service.h"
#include "coordinator/auth.h"
#include "coordinator/agent_stream.h"
#include "coordinator/artifact_store.h"
#include "coordinator/control_plane.h"
#include "coordinator/config.h"
#include "coordinator/database.h"
#include "coordinator/fleet_service.h"
#include "coordinator/host_registry.h"
#include "coordinator/host_store.h"
#include "coordinator/rollout_engine.h"
#include "coordinator/rollout_service.h"
#include "coordinator/rollout_store.h"
#include "coordinator/service_service.h"
#include "coordinator/service_store.h"

namespace tern {

// The coordinator process minus flag parsing: database, registry, gRPC
// server and metrics endpoint, wired together. Agent-stream reactions post
// to one event loop that owns all mutable state.
class Coordinator final : public AgentStreamListener, public ControlPlane, public RolloutControl {
 public:
  Coordinator(CoordinatorConfig config, const Clock& clock);
  ~Coordinator() override;

  // Opens the database, loads the registry, binds the ports. Errors say which
  // of those failed and why.
  absl::Status start();
  // Stops accepting, ends agent streams, flushes state. Idempotent.
  void shutdown();

  // Valid after start(): the bound addresses (useful with port 0).
  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  uint64_t epoch() const { return epoch_; }
  // Calls `ping` every `period` from the event loop thread, the one that owns
  // all state: if the loop wedges, the pings stop (systemd's watchdog then
  // restarts the daemon and the journal resumes it). After start().
  void add_liveness_ping(std::chrono::milliseconds period, std::function<void()> ping);

  void on_agent_stream_open(const std::shared_ptr<AgentSession>& session) override;
  void on_agent_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                        tern::v1::AgentMessage msg) override;
  void on_agent_stream_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) override;

  // ControlPlane (event-loop thread).
  absl::StatusOr<tern::v1::ApplyServiceResponse> apply_service(const tern::v1::ApplyServiceRequest& req) override;
  absl::StatusOr<tern::v1::ServiceRecord> get_service(const std::string& name) override;
  std::vector<tern::v1::ServiceRecord> list_services() override;
  absl::Status delete_service(const std::string& name) override;
  absl::StatusOr<tern::v1::Artifact> register_artifact(const tern::v1::Artifact& artifact,
                                                       const std::string& file_name) override;
  absl::StatusOr<std::vector<tern::v1::Artifact>> list_artifacts(const std::string& service) override;
  std::vector<tern::v1::ServiceStatus> host_services(const std::string& host_id) override;
  absl::Status deploy_host(const tern::v1::DeployHostRequest& req, CommandObserver observer) override;
  absl::Status rollback_host(const tern::v1::RollbackHostRequest& req, CommandObserver observer) override;

  // RolloutControl (event-loop thread).
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

 private:
  struct SessionInfo {
    std::shared_ptr<AgentSession> session;
    std::string host_id;  // empty until hello
  };
  // Loop thread only.
  void handle_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                      const tern::v1::AgentMessage& msg);
  void handle_hello(SessionInfo& info, const std::string& peer, const tern::v1::Hello& hello);
  // The host is back (a hello, or heartbeats after a silence): sends what the
  // rollouts owe it.
  void host_returned(const std::string& host);
  void handle_done(const std::shared_ptr<AgentSession>& session, const std::string& reason);
  void handle_result(const std::string& host_id, const tern::v1::CommandResult& result);
  void handle_event(const std::string& host_id, const tern::v1::AgentEvent& event);
  // Sends a command to a connected host; loop thread.
  absl::Status send_command(const std::string& host_id, tern::v1::Command cmd, CommandObserver observer);
  // The host must be connected and selected by the service; returns its session.
  absl::Status check_host_for(const std::string& host_id, const tern::v1::ServiceRecord& svc);
  // Pushes the spec to the host unless it already runs this generation.
  void push_spec(const std::string& host_id, const tern::v1::ServiceRecord& svc, bool force);
  void fail_pending(uint64_t session_id, const std::string& why);

  // Rollouts: the engine's effects, and the hosts' side of them.
  RolloutEffects rollout_effects();
  void rollout_deploy(const tern::v1::Rollout& r, const std::string& host, const tern::v1::ReleaseRef& release,
                      uint32_t weight);
  void rollout_rollback(const tern::v1::Rollout& r, const std::string& host);
  void rollout_changed(const tern::v1::Rollout& r, const std::string& kind, const std::string& message);
  // Writes the queued rollout events (and each changed rollout once) in one
  // transaction, publishes them, then sends the commands they led to.
  void journal_answer(const std::string& rollout_id);
  void schedule_journal_flush();
  void flush_journal();
  absl::StatusOr<std::vector<PlanHost>> eligible_hosts(const tern::v1::ServiceRecord& svc,
                                                       const tern::v1::RolloutSpec& spec);
  void rollout_tick();

  struct Pending {
    std::string host_id;
    uint64_t session = 0;
    CommandObserver observer;
  };

  CoordinatorConfig config_;
  const Clock& clock_;
  Metrics metrics_;
  Metrics::Value& messages_in_;
  Metrics::Value& messages_out_;
  Metrics::Value& agents_connected_;
  Metrics::Value& streams_opened_;
  Metrics::Value& rollouts_active_;

  std::unique_ptr<Database> db_;
  std::unique_ptr<HostStore> store_;
  std::unique_ptr<HostRegistry> registry_;
  EventLoop loop_{"coordinator"};
  std::unordered_map<uint64_t, SessionInfo> sessions_;  // loop thread only

  std::unique_ptr<ServiceStore> service_store_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::map<std::string, tern::v1::ServiceRecord> services_;                              // loop thread
  std::map<std::string, std::map<std::string, tern::v1::ServiceStatus>> host_services_;  // loop thread
  std::map<uint64_t, Pending> pending_;                                                  // loop thread
  uint64_t command_seq_ = 0;
  std::unique_ptr<RolloutStore> rollout_store_;
  std::unique_ptr<RolloutEngine> engine_;  // loop thread
  struct Watcher {
    std::string rollout_id;
    std::function<void(const tern::v1::RolloutEvent&)> fn;
  };
  std::map<uint64_t, Watcher> watchers_;  // loop thread
  // The rollout journal's write-ahead queue (loop thread).
  std::vector<RolloutStore::Event> journal_;
  std::set<std::string> dirty_rollouts_;
  std::vector<std::function<void()>> deferred_effects_;
  bool flush_posted_ = false;
  uint64_t next_watcher_ = 1;
  // Deploys a rollout could not send because the host was away; sent on its hello.
  struct OwedDeploy {
    std::string rollout_id;
    tern::v1::ReleaseRef release;
    uint32_t weight = 100;
  };
  std::map<std::string, OwedDeploy> owed_deploys_;  // loop thread
  std::unique_ptr<AgentServiceImpl> agent_service_;
  std::unique_ptr<ServiceServiceImpl> service_service_;
  std::unique_ptr<RolloutServiceImpl> rollout_service_;
  std::unique_ptr<FleetServiceImpl> fleet_service_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<AdminStore> admin_store_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  MetricsHttpServer metrics_server_{metrics_};
  std::string grpc_address_;
  std::string metrics_address_;
  uint64_t epoch_ = 0;
  TimePoint started_{};
  std::atomic<bool> shut_down_{false};
};

}  // namespace tern
