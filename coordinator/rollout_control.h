#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/rollout_engine.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// What RolloutService asks of the coordinator. Every method runs on the
// coordinator's event-loop thread, as do the watchers' callbacks.
class RolloutControl {
 public:
  virtual ~RolloutControl() = default;
  virtual absl::StatusOr<tern::v1::RolloutPlan> plan_rollout(const tern::v1::RolloutSpec& spec) = 0;
  virtual absl::StatusOr<tern::v1::Rollout> start_rollout(const tern::v1::RolloutSpec& spec) = 0;
  virtual absl::StatusOr<tern::v1::Rollout> get_rollout(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::Rollout>> list_rollouts(const std::string& service,
                                                                       bool active_only) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::RolloutEvent>> rollout_events(const std::string& id,
                                                                             uint64_t after_sequence) = 0;
  virtual absl::StatusOr<tern::v1::Rollout> rollout_command(const std::string& id, uint64_t generation,
                                                            RolloutCommand cmd, const std::string& reason) = 0;
  // Live events of one rollout; returns a token for unwatch().
  virtual uint64_t watch(const std::string& id, std::function<void(const tern::v1::RolloutEvent&)> fn) = 0;
  virtual void unwatch(uint64_t token) = 0;
  // The current wave's analysis and, with `replay`, every analyzed wave's
  // verdicts recomputed from the stored counts (replay_wave).
  virtual absl::StatusOr<tern::v1::RolloutAnalysisReport> rollout_analysis(const std::string& id, bool replay,
                                                                           const std::string& host) = 0;
  // The current wave's analysis runs `by` longer (RolloutEngine::extend_analysis).
  virtual absl::StatusOr<tern::v1::Rollout> extend_rollout(const std::string& id, uint64_t generation, Millis by,
                                                           const std::string& reason) = 0;
};

}  // namespace tern
