#pragma once

#include <chrono>
#include <functional>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "core/metrics.h"
#include "core/signing.h"
#include "agent/artifact_stager.h"
#include "agent/config.h"
#include "agent/coordinator_link.h"
#include "agent/health.h"
#include "agent/host_os.h"
#include "agent/port_mapper.h"
#include "agent/process_launcher.h"
#include "agent/service_supervisor.h"
#include "agent/state_store.h"
#include "agent/traffic.h"

namespace tern {

// The host's OS behind interfaces; the real ones by default, fakes in tests.
struct AgentHost {
  std::unique_ptr<PortMapper> mapper;
  std::unique_ptr<ProcessLauncher> launcher;
  std::unique_ptr<Prober> prober;
  std::unique_ptr<ArtifactFetcher> fetcher;      // releases without a URL: the coordinator's store
  std::unique_ptr<ArtifactFetcher> url_fetcher;  // releases with a URL
  std::unique_ptr<HostOs> os;                    // time, waits, ports and sockets
};

// The agent process minus flag parsing: identity, the coordinator link, one
// supervisor per service, the port mapping and the state file.
//
// start() restores the recorded state first (adopting running slots and
// re-applying the mapping) and only then dials the coordinator, so a restart
// never interrupts the apps. stop() leaves the slots running.
class Agent {
 public:
  Agent(AgentConfig config, std::string host_id);
  // With TLS to the coordinator (null: plaintext, `insecure`).
  void set_credentials(std::shared_ptr<grpc::ChannelCredentials> credentials) { credentials_ = std::move(credentials); }
  // For tests: the host's OS pieces supplied by the caller (null = real).
  Agent(AgentConfig config, std::string host_id, AgentHost host);
  ~Agent();

  absl::Status start();
  void stop();
  // Calls `ping` every `period` from the housekeeping thread, the one that
  // checks the port mapping: if it wedges, the pings stop. Before start().
  void set_liveness_ping(std::chrono::milliseconds period, std::function<void()> ping);
  const CoordinatorLink& link() const { return *link_; }
  // The bound /metrics address ("" when metrics_listen is empty).
  const std::string& metrics_address() const { return metrics_address_; }
  std::vector<tern::v1::ServiceStatus> services() const;

 private:
  tern::v1::Hello build_hello() const;
  void handle_command(const tern::v1::Command& cmd);
  // The agent's policy and trusted keys, checked before any command acts.
  absl::Status check_own_rules(const tern::v1::Command& cmd, const ServiceSupervisor* sup) const;
  void reply(const tern::v1::CommandResult& result);
  absl::Status persist();
  // Sends an event now if the link is up. Otherwise a progress event is
  // dropped (its command's result is lost with the stream anyway) and any
  // other waits in unsent_ until flush_unsent() (what recovery did, say,
  // which happens before the first connection).
  void send_event(const tern::v1::AgentEvent& e);
  // Sends the waiting events, each with its service's current status, once
  // the link is connected; from the housekeeping thread.
  void flush_unsent();
  ServiceSupervisor* add_supervisor(tern::v1::ServiceState state);
  // After recover(): kills slot processes (named under the state dir) of
  // services the state does not name at all.
  void stop_unknown_slot_processes();
  void housekeeping_loop();
  // Brings the per-slot cells of metrics_ up to date (on each scrape).
  void collect_metrics();
  // What each running slot uses, for the heartbeat: CPU share since the
  // previous call.
  std::vector<tern::v1::SlotUsage> slot_usage();
  // What one analysis interval counted, added to the agent's counters.
  void count_sample(const tern::v1::AnalysisSample& s);

  AgentConfig config_;
  std::string host_id_;
  AgentHost host_;
  std::unique_ptr<TrafficMap> traffic_;
  std::unique_ptr<ArtifactStager> stager_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<CoordinatorLink> link_;

  mutable std::mutex mu_;  // guards supervisors_, last_command_id_, max_epoch_, refused_specs_
  std::map<std::string, std::unique_ptr<ServiceSupervisor>> supervisors_;
  uint64_t last_command_id_ = 0;
  uint64_t max_epoch_ = 0;
  // Per service, why the newest spec the coordinator sent was refused.
  std::map<std::string, std::string> refused_specs_;

  std::mutex events_mu_;  // guards unsent_
  std::deque<tern::v1::AgentEvent> unsent_;  // oldest first, at most kMaxUnsentEvents

  std::mutex persist_mu_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread housekeeping_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  TrustedKeys trusted_;
  std::chrono::milliseconds ping_period_{0};
  std::function<void()> ping_;

  struct UsageSample {
    std::chrono::steady_clock::time_point at{};
    uint64_t cpu_usec = 0;
  };
  std::mutex usage_mu_;  // guards last_usage_
  std::map<std::string, UsageSample> last_usage_;  // by "<cgroup>/<pid>"

  Metrics metrics_;
  // Declared after metrics_: destroyed (stopped) before it.
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::string metrics_address_;
};

}  // namespace tern
