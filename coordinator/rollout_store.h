#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/database.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// Rollouts and their event journal in the coordinator's SQLite database.
// Transitions are written in transactions that hold the events and the
// rollouts' state after them, so a restart resumes from exactly the last
// step written.
// Same thread rules as Database.
class RolloutStore {
 public:
  static absl::StatusOr<std::unique_ptr<RolloutStore>> open(Database& db);

  // One journal entry: an event and the rollout's summary (no per-host
  // list) as it stood after it.
  struct Event {
    tern::v1::Rollout summary;
    std::string kind;
    std::string message;
    int64_t time_ms = 0;
  };
  // Many events and the rollouts' full state after them, in one
  // transaction; returns the events' sequences, in order. The full state is
  // written once per rollout however many events there are: with 10,000
  // hosts a rollout is megabytes, an event a few hundred bytes.
  absl::StatusOr<std::vector<uint64_t>> record_batch(const std::vector<Event>& events,
                                                     const std::vector<const tern::v1::Rollout*>& rollouts,
                                                     int64_t time_ms);
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
