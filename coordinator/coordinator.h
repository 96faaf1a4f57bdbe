#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "core/metrics.h"
#include "coordinator/agent_stream.h"
#include "coordinator/config.h"
#include "coordinator/database.h"
#include "coordinator/fleet_service.h"
#include "coordinator/host_registry.h"
#include "coordinator/host_store.h"

namespace tern {

// The coordinator process minus flag parsing: database, registry, gRPC
// server and metrics endpoint, wired together. Agent-stream reactions post
// to one event loop that owns all mutable state.
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

  void on_agent_stream_open(const std::shared_ptr<AgentSession>& session) override;
  void on_agent_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                        tern::v1::AgentMessage msg) override;
  void on_agent_stream_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) override;

 private:
  struct SessionInfo {
    std::shared_ptr<AgentSession> session;
    std::string host_id;  // empty until hello
  };
  // Loop thread only.
  void handle_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                      const tern::v1::AgentMessage& msg);
  void handle_hello(SessionInfo& info, const std::string& peer, const tern::v1::Hello& hello);
  void handle_done(const std::shared_ptr<AgentSession>& session, const std::string& reason);

  CoordinatorConfig config_;
  const Clock& clock_;
  Metrics metrics_;
  Metrics::Value& messages_in_;
  Metrics::Value& messages_out_;
  Metrics::Value& agents_connected_;
  Metrics::Value& streams_opened_;

  std::unique_ptr<Database> db_;
  std::unique_ptr<HostStore> store_;
  std::unique_ptr<HostRegistry> registry_;
  EventLoop loop_{"coordinator"};
  std::unordered_map<uint64_t, SessionInfo> sessions_;  // loop thread only

  std::unique_ptr<AgentServiceImpl> agent_service_;
  std::unique_ptr<FleetServiceImpl> fleet_service_;
  std::unique_ptr<grpc::Server> server_;
  MetricsHttpServer metrics_server_{metrics_};
  std::string grpc_address_;
  std::string metrics_address_;
  uint64_t epoch_ = 0;
  TimePoint started_{};
  std::atomic<bool> shut_down_{false};
};

}  // namespace tern
