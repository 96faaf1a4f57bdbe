#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/label_selector.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

struct PlanHost {
  std::string host_id;
  Labels labels;
};

struct WavePlan {
  std::vector<std::string> host_ids;
};

struct RolloutPlanResult {
  std::vector<WavePlan> waves;
  std::vector<std::string> warnings;
};

// How many hosts the waves have covered after each one, out of `total`.
// Sizes are cumulative targets: {hosts: 1}, {percent: 10}, {percent: 100}
// over 40 hosts gives 1, 4, 40. A percentage rounds up (at least one host),
// a target never shrinks, and the last wave always reaches `total`.
std::vector<uint32_t> wave_targets(const tern::v1::RolloutSpec& spec, uint32_t total);

// The order hosts are taken in: sorted by id, then, with a spread label,
// round-robin over its values (zone a, zone b, zone c, zone a, ...) so that
// the first waves span as many zones or racks as they can. Hosts without the
// label form one group of their own, taken last in each round.
std::vector<PlanHost> spread_order(std::vector<PlanHost> hosts, const std::string& label);

// Which hosts go in which wave. Pure: the caller passes the eligible hosts
// (selected by the service and the rollout). Waves that add no host are
// kept (they still bake and gate) and named in the warnings.
absl::StatusOr<RolloutPlanResult> plan_rollout(const tern::v1::RolloutSpec& spec, std::vector<PlanHost> eligible);

}  // namespace tern
