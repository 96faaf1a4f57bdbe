#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/database.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// Rollouts and their event journal in the coordinator's SQLite database.
// Each transition is one transaction: the rollout's new state and the event
// that describes it, so a restart resumes from exactly the last step taken.
// Same thread rules as Database.
class RolloutStore {
 public:
  static absl::StatusOr<std::unique_ptr<RolloutStore>> open(Database& db);

  // Saves the rollout and appends the event; returns the event's sequence.
  absl::StatusOr<uint64_t> record(const tern::v1::Rollout& rollout, const std::string& kind,
                                  const std::string& message, int64_t time_ms);
  // Every rollout not yet settled: not in a final phase, or still owing a
  // host that was away its rollback (the `terminal` column means settled).
  absl::StatusOr<std::vector<tern::v1::Rollout>> load_active();
  absl::StatusOr<std::vector<tern::v1::Rollout>> list(const std::string& service, uint32_t limit);
  absl::StatusOr<std::vector<tern::v1::RolloutEvent>> events(const std::string& rollout_id, uint64_t after_sequence);
  // The next rollout number, for ids like "web-7".
  absl::StatusOr<uint64_t> next_number();

 private:
  explicit RolloutStore(Database& db) : db_(db) {}
  Database& db_;
};

}  // namespace tern
