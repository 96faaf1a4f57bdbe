#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"
#include "coordinator/fleet_control.h"
#include "coordinator/host_commands.h"
#include "coordinator/host_registry.h"
#include "coordinator/host_store.h"
#include "coordinator/rollout_driver.h"
#include "coordinator/service_catalog.h"

namespace tern {

// The fleet as FleetService shows it: each host as the registry knows it
// with what its agent last reported, its history, and one-host deploys and
// rollbacks (the newest spec first, then the command on the same stream).
// A host in an active rollout of the service is left to the rollout unless
// the operator forces it.
//
// Not thread-safe: owned by the coordinator's event loop.
class Fleet final : public FleetControl {
 public:
  Fleet(HostRegistry& registry, HostStore& store, ServiceCatalog& catalog, HostCommands& commands,
        RolloutDriver& rollouts, uint64_t epoch, TimePoint started)
      : registry_(registry),
        store_(store),
        catalog_(catalog),
        commands_(commands),
        rollouts_(rollouts),
        epoch_(epoch),
        started_(started) {}

  absl::StatusOr<std::vector<tern::v1::Host>> list_hosts(const std::string& selector) override;
  absl::StatusOr<tern::v1::Host> get_host(const std::string& host_id) override;
  absl::StatusOr<tern::v1::Host> cordon_host(const std::string& host_id, bool cordoned, const std::string& reason,
                                             const std::string& by) override;
  absl::StatusOr<std::vector<tern::v1::HostEvent>> host_history(const std::string& host_id, uint32_t limit) override;
  tern::v1::VersionInfo version() override;
  absl::Status deploy_host(const tern::v1::DeployHostRequest& req, CommandObserver observer) override;
  absl::Status rollback_host(const tern::v1::RollbackHostRequest& req, CommandObserver observer) override;

 private:
  tern::v1::Host host_view(const HostRegistry::Entry& entry) const;
  // A host in an active rollout of the service is the rollout's: changed by
  // hand only with `force`, which the rollout records. FAILED_PRECONDITION
  // naming the rollout otherwise.
  absl::Status check_not_in_rollout(const std::string& host, const std::string& service, bool force,
                                    const std::string& what);

  HostRegistry& registry_;
  HostStore& store_;
  ServiceCatalog& catalog_;
  HostCommands& commands_;
  RolloutDriver& rollouts_;
  const uint64_t epoch_;
  const TimePoint started_;
};

}  // namespace tern
