#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "core/metrics.h"
#include "coordinator/admin_service.h"
#include "coordinator/agent_stream.h"
#include "coordinator/artifact_store.h"
#include "coordinator/audit_trail.h"
#include "coordinator/auth.h"
#include "coordinator/config.h"
#include "coordinator/database.h"
#include "coordinator/fleet.h"
#include "coordinator/fleet_service.h"
#include "coordinator/host_commands.h"
#include "coordinator/host_registry.h"
#include "coordinator/host_store.h"
#include "coordinator/rollout_driver.h"
#include "coordinator/rollout_service.h"
#include "coordinator/rollout_store.h"
#include "coordinator/dashboard.h"
#include "coordinator/webhook_gate.h"
#include "coordinator/webhook_sender.h"
#include "coordinator/service_catalog.h"
#include "coordinator/service_service.h"
#include "coordinator/service_store.h"

namespace tern {

// The coordinator process minus flag parsing: opens the database, wires the
// registry, host commands, service catalogue and rollout driver to one event
// loop that owns all their state, and serves them over gRPC and /metrics.
//
// Itself it keeps the agent sessions: every stream must say hello first,
// naming the host its certificate is for; a newer stream from the same host
// supersedes the older one; it routes what agents send to the registry, the
// catalogue, the commands and the rollouts.
//
// start() and shutdown() are called from the owner's thread; the stream
// callbacks from gRPC threads (they only post to the loop).
class Coordinator final : public AgentStreamListener {
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
  // The pings also stop when the gRPC server no longer accepts connections
  // (gRPC 1.51's listener stops for good after the descriptor table ran
  // out): a thread dials the coordinator afresh and asks grpc.health.v1
  // every period/2; once such a check has succeeded, a ping needs one
  // within the last 3 periods. If none ever succeeds (a certificate
  // without a name for the local address), the pings depend on the loop
  // alone and the log says why.
  void add_liveness_ping(std::chrono::milliseconds period, std::function<void()> ping);
  // Returns once the event loop has run everything posted to it before the
  // call, the work of the stream callbacks below included. For tests and
  // fuzzers that drive those callbacks directly. After start(); never from
  // the loop thread.
  void drain();

  // AgentStreamListener (gRPC threads).
  void on_agent_stream_open(const std::shared_ptr<AgentSession>& session) override;
  void on_agent_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                        tern::v1::AgentMessage msg) override;
  void on_agent_stream_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) override;

 private:
  DashboardData dashboard_data();
  // tern_service_hosts_drifted, on each scrape (read on the loop).
  void export_drift();
  struct SessionInfo {
    std::shared_ptr<AgentSession> session;
    std::string host_id;  // empty until hello
    // Event rate limit (take_event_token).
    double event_tokens = 0;
    TimePoint refilled{};
    int64_t events_dropped = 0;
  };
  // False when the stream is over its event rate: the event is dropped,
  // counted, logged once per stream; far over it, the stream is closed.
  bool take_event_token(SessionInfo& info);
  // Lets the host fetch the artifacts a command sent to it names.
  void grant_artifacts(const std::string& host, const tern::v1::CoordinatorMessage& msg);
  absl::Status open_state();
  // Drops audit and host-history rows past their retention (config).
  void prune_history();
  // The gRPC server with every service, the audit interceptor and the
  // agents' keepalive rules; binds config_.listen.
  absl::Status start_server(std::shared_ptr<grpc::ServerCredentials> creds);

  // Loop thread only.
  void handle_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                      const tern::v1::AgentMessage& msg);
  void handle_hello(SessionInfo& info, const std::string& peer, const tern::v1::Hello& hello);
  void handle_event(uint64_t session, const std::string& host_id, const tern::v1::AgentEvent& event);
  void handle_done(const std::shared_ptr<AgentSession>& session, const std::string& reason);

  CoordinatorConfig config_;
  const Clock& clock_;
  Metrics metrics_;
  Metrics::Value& messages_in_;
  Metrics::Value& messages_out_;
  Metrics::Value& agents_connected_;
  Metrics::Value& streams_opened_;
  Metrics::Value& events_dropped_;

  EventLoop loop_{"coordinator"};
  std::unordered_map<uint64_t, SessionInfo> sessions_;  // loop thread only
  ArtifactGrants grants_;

  // State, in the order it is opened; all of it owned by the loop.
  std::unique_ptr<DatabaseLock> db_lock_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<HostStore> host_store_;
  std::unique_ptr<ServiceStore> service_store_;
  std::unique_ptr<RolloutStore> rollout_store_;
  std::unique_ptr<AdminStore> admin_store_;
  std::unique_ptr<AuditTrail> audit_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<HostRegistry> registry_;
  std::unique_ptr<HostCommands> commands_;
  std::unique_ptr<ServiceCatalog> catalog_;
  std::unique_ptr<RolloutDriver> rollouts_;
  // Null without webhooks in the config; its own thread and connection.
  std::unique_ptr<WebhookSender> webhooks_;
  // The same webhooks as wave gates (null without webhooks); destroyed
  // before the driver its answers go to.
  std::unique_ptr<WebhookGates> gates_;
  std::unique_ptr<Fleet> fleet_;

  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<AgentServiceImpl> agent_service_;
  std::unique_ptr<FleetServiceImpl> fleet_service_;
  std::unique_ptr<ServiceServiceImpl> service_service_;
  std::unique_ptr<RolloutServiceImpl> rollout_service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  MetricsHttpServer metrics_server_{metrics_};
  // The loop runs and may be asked for the dashboard's reads.
  std::atomic<bool> loop_ready_{false};
  std::string grpc_address_;
  // For the liveness check: how to dial ourselves, and when it last worked.
  std::shared_ptr<grpc::ChannelCredentials> self_creds_;
  std::string self_name_;
  std::atomic<int64_t> accepted_at_ms_{0};
  std::atomic<bool> accept_checked_{false};
  std::thread accept_prober_;
  std::atomic<bool> stop_prober_{false};
  std::string metrics_address_;
  uint64_t epoch_ = 0;
  TimePoint started_{};
  std::atomic<bool> shut_down_{false};
};

}  // namespace tern
