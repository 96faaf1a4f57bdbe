#pragma once

#include <string>
#include <vector>

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

// The short form of a wave list, as `ternctl rollout start --waves` takes it:
// "1,10%,50%,100%", cumulative sizes separated by commas, each a host count
// or a percentage (digits only, no spaces). The waves carry only their size:
// bake, gate and weight are the caller's to set. This checks the syntax;
// whether a size is in range (hosts >= 1, percent 1-100) is
// validate_rollout_spec's rule, the same for this form and for YAML.
// Error: "\"x%\" is not a host count or a percentage (e.g. 1,10%,100%)".
absl::StatusOr<std::vector<tern::v1::Wave>> parse_wave_list(absl::string_view text);

}  // namespace tern
