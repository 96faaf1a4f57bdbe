#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/port_mapper.h"
#include "core/metrics.h"
#include "tern/v1/agent_state.pb.h"

namespace tern {

// The public-port routes one service's state asks for: every port of the
// spec to the active slot's port (its weight) and the rest to the other slot.
std::vector<PortRoute> routes_for(const tern::v1::ServiceState& state);

// A service's new connections per slot, summed over all its public ports
// (PortMapper::connection_counts of its routes). `counted` is false when no
// count names one of its slots.
struct SlotConnections {
  uint64_t blue = 0, green = 0;
  bool counted = false;
  uint64_t of(tern::v1::SlotColor c) const { return c == tern::v1::SLOT_COLOR_GREEN ? green : blue; }
};
SlotConnections slot_connections(const tern::v1::ServiceSpec& spec, const std::vector<BackendConnections>& counts);

// Shares one PortMapper between the services of a host: each service sets
// its own routes, and the whole desired mapping goes to the mapper in one
// apply. Thread-safe.
class TrafficMap {
 public:
  explicit TrafficMap(PortMapper* mapper) : mapper_(mapper) {}
  // Where each applied change's time in the kernel (one transaction) goes.
  void set_swap_histogram(Metrics::Histogram* h) { swap_seconds_ = h; }

  // Replaces the service's routes (empty: unmap it). On failure the previous
  // routes stay recorded and in force.
  absl::Status set_routes(const std::string& service, std::vector<PortRoute> routes);
  // Re-creates the agent's rules if someone removed them; true if it did.
  absl::StatusOr<bool> reconcile();
  DesiredMapping desired() const;
  // The service's backends and the new connections each was sent (see
  // PortMapper::connection_counts).
  absl::StatusOr<std::vector<BackendConnections>> connection_counts(const std::string& service);

 private:
  DesiredMapping build() const;

  mutable std::mutex mu_;
  PortMapper* mapper_;
  std::map<std::string, std::vector<PortRoute>> routes_;
  Metrics::Histogram* swap_seconds_ = nullptr;
};

}  // namespace tern
