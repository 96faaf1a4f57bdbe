#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {

// What the coordinator's API services ask of the coordinator itself. Every
// method runs on the coordinator's event-loop thread, as do the callbacks.
class ControlPlane {
 public:
  virtual ~ControlPlane() = default;

  // Services.
  virtual absl::StatusOr<tern::v1::ApplyServiceResponse> apply_service(const tern::v1::ApplyServiceRequest& req) = 0;
  virtual absl::StatusOr<tern::v1::ServiceRecord> get_service(const std::string& name) = 0;
  virtual std::vector<tern::v1::ServiceRecord> list_services() = 0;
  virtual absl::Status delete_service(const std::string& name) = 0;
  // Records an uploaded blob as a version of a service.
  virtual absl::StatusOr<tern::v1::Artifact> register_artifact(const tern::v1::Artifact& artifact,
                                                               const std::string& file_name) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::Artifact>> list_artifacts(const std::string& service) = 0;

  // What the host's agent last reported about its services.
  virtual std::vector<tern::v1::ServiceStatus> host_services(const std::string& host_id) = 0;

  // One command on one host. `progress` gets the agent's steps; `done` is
  // called exactly once: with the agent's result, or a synthetic failure
  // when the agent goes away or the deadline passes first.
  struct CommandObserver {
    std::function<void(const tern::v1::AgentEvent&)> progress;
    std::function<void(const tern::v1::CommandResult&)> done;
  };
  virtual absl::Status deploy_host(const tern::v1::DeployHostRequest& req, CommandObserver observer) = 0;
  virtual absl::Status rollback_host(const tern::v1::RollbackHostRequest& req, CommandObserver observer) = 0;
};

}  // namespace tern
