#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/fleet.pb.h"

namespace tern {

// What one command on one host reports. `progress` gets the agent's steps;
// `done` is called exactly once: with the agent's result, or a synthetic
// failure when the agent goes away or the deadline passes first.
struct CommandObserver {
  std::function<void(const tern::v1::AgentEvent&)> progress;
  std::function<void(const tern::v1::CommandResult&)> done;
};

// What FleetService asks of the coordinator: the hosts as the registry and
// their agents know them, and one-host operations. Every method runs on the
// coordinator's event-loop thread, as do the observer's callbacks.
class FleetControl {
 public:
  virtual ~FleetControl() = default;

  // Hosts the selector matches, each with what its agent last reported.
  virtual absl::StatusOr<std::vector<tern::v1::Host>> list_hosts(const std::string& selector) = 0;
  virtual absl::StatusOr<tern::v1::Host> get_host(const std::string& host_id) = 0;
  virtual absl::StatusOr<tern::v1::Host> cordon_host(const std::string& host_id, bool cordoned,
                                                     const std::string& reason, const std::string& by) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::HostEvent>> host_history(const std::string& host_id,
                                                                        uint32_t limit) = 0;
  virtual tern::v1::VersionInfo version() = 0;

  virtual absl::Status deploy_host(const tern::v1::DeployHostRequest& req, CommandObserver observer) = 0;
  virtual absl::Status rollback_host(const tern::v1::RollbackHostRequest& req, CommandObserver observer) = 0;
};

}  // namespace tern
