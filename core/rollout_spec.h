#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// Rollout specs: the YAML an operator writes for a fleet-wide rollout, and
// the checks every copy passes before a rollout starts.
//
//   service: web
//   release: 2.0                   # a version pushed with `ternctl artifact push`
//   selector: zone!=c              # narrows the service's own selector (optional)
//   waves:                         # cumulative: each wave brings the total up to its size
//     - {hosts: 1, bake: 1m}
//     - {percent: 10, bake: 5m, gate: manual}
//     - {percent: 50, bake: 5m}
//     - {percent: 100}
//   max_parallel: 10               # hosts deploying at once within a wave (0: all of the wave)
//   failure_budget: {max_failed_hosts: 2, max_failed_percent: 5, max_failed_per_wave: 1}
//   on_failure: rollback           # or pause
//   progress_deadline: 10m         # no step may take longer
//   spread_label: zone             # early waves take hosts across its values

absl::StatusOr<tern::v1::RolloutSpec> parse_rollout_spec(const std::string& yaml, const std::string& origin);
absl::StatusOr<tern::v1::RolloutSpec> load_rollout_spec_file(const std::string& path);

// The error names the field and the reason: "field waves[2].percent: 120 is not 1-100".
absl::Status validate_rollout_spec(const tern::v1::RolloutSpec& spec);
void apply_rollout_defaults(tern::v1::RolloutSpec& spec);

}  // namespace tern
