#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/clock.h"
#include "coordinator/host_commands.h"
#include "coordinator/host_registry.h"
#include "coordinator/service_control.h"
#include "coordinator/service_store.h"
#include "tern/v1/agent.pb.h"

namespace tern {

// How a host's reported status of a service differs from what the
// coordinator last ordered there (`version` at `weight`): "" when the
// ordered release is active, healthy and at that weight; otherwise what the
// host does instead ("runs 1.0, not 2.0").
std::string drift(const tern::v1::ServiceStatus& reported, const std::string& version, uint32_t weight);

// The service catalogue: the specs (versioned by a generation), the
// artifacts that are their releases, and what each host's agent last said it
// runs. Keeps every matching connected host on the newest spec: a host gets
// a spec when it says hello, when the spec changes, and before any deploy.
//
// Not thread-safe: owned by the coordinator's event loop.
class ServiceCatalog final : public ServiceControl {
 public:
  ServiceCatalog(const Clock& clock, ServiceStore& store, const HostRegistry& registry, HostCommands& commands)
      : clock_(clock), store_(store), registry_(registry), commands_(commands) {}

  // Reads the services from the store.
  absl::Status load();

  // ServiceControl.
  absl::StatusOr<tern::v1::ApplyServiceResponse> apply_service(const tern::v1::ApplyServiceRequest& req) override;
  absl::StatusOr<tern::v1::ServiceRecord> get_service(const std::string& name) override;
  std::vector<tern::v1::ServiceRecord> list_services() override;
  absl::Status delete_service(const std::string& name) override;
  absl::StatusOr<tern::v1::Artifact> register_artifact(const tern::v1::Artifact& artifact,
                                                       const std::string& file_name) override;
  absl::StatusOr<std::vector<tern::v1::Artifact>> list_artifacts(const std::string& service) override;

  // The service, or null.
  const tern::v1::ServiceRecord* find(const std::string& name) const;
  // What agents are sent to run `version` of `service`: the stored
  // artifact's reference. NOT_FOUND, saying how to push it, when there is none.
  absl::StatusOr<tern::v1::ReleaseRef> release(const std::string& service, const std::string& version);
  // The host is known, selected by the service, and connected.
  absl::Status check_host_for(const std::string& host_id, const tern::v1::ServiceRecord& svc) const;
  // Sends the spec to the host if the service selects it, unless the host
  // already runs this generation.
  void push_spec(const std::string& host_id, const tern::v1::ServiceRecord& svc);

  // What the host's agent reports. A hello replaces everything known about
  // the host and pushes the specs it lacks; a status updates one service.
  void on_hello(const std::string& host_id, const tern::v1::Hello& hello);
  // The host's whole state (a hello's or a heartbeat's): replaces what it reported before.
  void on_report(const std::string& host_id,
                 const google::protobuf::RepeatedPtrField<tern::v1::ServiceStatus>& services);
  void on_status(const std::string& host_id, const tern::v1::ServiceStatus& status);
  // Each with what the coordinator wants there and the drift from it.
  std::vector<tern::v1::ServiceStatus> host_services(const std::string& host_id) const;

  // What the host should run of `service` from now on (a deploy or rollback
  // was ordered); persisted, so a restart still knows.
  void set_desired(const std::string& host_id, const std::string& service, const std::string& version,
                   uint32_t weight);

 private:
  const Clock& clock_;
  ServiceStore& store_;
  const HostRegistry& registry_;
  HostCommands& commands_;
  std::map<std::string, tern::v1::ServiceRecord> services_;
  std::map<std::string, std::map<std::string, tern::v1::ServiceStatus>> host_services_;
  // Records `status` in one host's `known` statuses, within bounds.
  void keep_status(std::map<std::string, tern::v1::ServiceStatus>& known, const tern::v1::ServiceStatus& status) const;
  std::map<std::string, std::map<std::string, ServiceStore::Desired>> desired_;  // by host, then service
};

}  // namespace tern
