#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/backoff.h"
#include "core/clock.h"
#include "agent/port_mapper.h"
#include "core/label_selector.h"

namespace tern {

// tern-agent settings, from /etc/tern/agent.yaml and flags.
struct AgentConfig {
  std::string coordinator = "127.0.0.1:7400";
  // Empty: read /etc/machine-id.
  std::string host_id;
  Labels labels;
  std::string state_dir = "/var/lib/tern";
  std::string log_level = "info";
  // Until the coordinator says otherwise in its HelloAck.
  Millis heartbeat_interval{5'000};
  BackoffPolicy reconnect;
  // nftables (default) or iptables, and the table / chain prefix the agent owns.
  PortMapperOptions port_mapper;
  // How often the agent checks that its rules are still in force.
  Millis reconcile_interval{5'000};
};

absl::StatusOr<AgentConfig> load_agent_config(const std::string& path);
absl::Status validate(const AgentConfig& cfg);

// The host id the agent reports: the configured one, else /etc/machine-id
// (`machine_id_path` is injectable for tests).
absl::StatusOr<std::string> resolve_host_id(const AgentConfig& cfg,
                                            const std::string& machine_id_path = "/etc/machine-id");

}  // namespace tern
