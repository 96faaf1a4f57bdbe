#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/database.h"
#include "core/clock.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// A rollout without its per-host list: what events, lists and the summary
// row carry (a rollout of 10,000 hosts is megabytes; its summary is not).
tern::v1::Rollout rollout_summary(const tern::v1::Rollout& r);

// Rollouts and their event journal in the coordinator's SQLite database.
// Transitions are written in transactions that hold the events and the
// rollouts' state after them, so a restart resumes from exactly the last
// step written.
//
// A rollout is stored as its summary (JSON, readable with sqlite3) plus one
// row per host (binary HostProgress), so a batch writes only the hosts that
// changed in it: one agent's answer costs one small row, not the whole
// rollout. (Rows written before the split carry their hosts inline in the
// summary; they are read as they are and split on their next write.)
// Same thread rules as Database.
class RolloutStore {
 public:
  static absl::StatusOr<std::unique_ptr<RolloutStore>> open(Database& db);

  // One journal entry: an event and the rollout's summary (no per-host
  // list) as it stood after it.
  struct Event {
    tern::v1::Rollout summary;
    tern::v1::RolloutEventKind kind = tern::v1::ROLLOUT_EVENT_KIND_UNSPECIFIED;  // stored as its word
    std::string message;
    int64_t time_ms = 0;
  };
  // A rollout's state to write: its summary always, and the hosts at
  // `hosts` (positions in rollout->hosts()), or every host when `all_hosts`.
  struct RolloutWrite {
    const tern::v1::Rollout* rollout = nullptr;
    std::vector<int> hosts;
    bool all_hosts = false;
  };
  // Many events and the rollouts' state after them, in one transaction;
  // returns the events' sequences, in order. Each rollout's summary is
  // written once however many events there are, and only its changed hosts.
  // One interval of a canary's counts that a rollout's analysis took, so a
  // restarted coordinator resumes the same test (and it can be replayed).
  struct SampleRow {
    std::string rollout_id;
    uint32_t wave = 0;
    std::string host;
    int64_t time_ms = 0;
    tern::v1::AnalysisSample sample;
  };
  // `also`, when set, runs inside the same transaction for each event once
  // the journal has numbered it (the webhook outbox adds its rows there); an
  // error from it rolls the whole batch back.
  using AlsoRecord = std::function<absl::Status(const Event& event, uint64_t sequence)>;
  absl::StatusOr<std::vector<uint64_t>> record_batch(const std::vector<Event>& events,
                                                     const std::vector<RolloutWrite>& rollouts, int64_t time_ms,
                                                     const std::vector<SampleRow>& samples = {},
                                                     const AlsoRecord& also = nullptr);
  // The samples a rollout's wave took, in the order it took them.
  absl::StatusOr<std::vector<SampleRow>> samples(const std::string& rollout_id, uint32_t wave);
  // Deletes settled rollouts' samples older than `max_age`, then the oldest
  // of theirs beyond `max_rows` rows in all (0 turns a limit off); an
  // unsettled rollout's are kept. Returns how many went.
  absl::StatusOr<int64_t> prune_samples(Millis max_age, int64_t max_rows, int64_t now_ms);
  // Every rollout not yet settled, with its hosts: not in a final phase, or
  // still owing a host that was away its rollback (the `terminal` column
  // means settled).
  absl::StatusOr<std::vector<tern::v1::Rollout>> load_active();
  // One rollout with its hosts; NOT_FOUND if there is none.
  absl::StatusOr<tern::v1::Rollout> get(const std::string& id);
  // Newest first, as summaries: without the per-host list (get() has it).
  absl::StatusOr<std::vector<tern::v1::Rollout>> list(const std::string& service, uint32_t limit);
  absl::StatusOr<std::vector<tern::v1::RolloutEvent>> events(const std::string& rollout_id, uint64_t after_sequence);
  // The next rollout number, for ids like "web-7".
  absl::StatusOr<uint64_t> next_number();

 private:
  explicit RolloutStore(Database& db) : db_(db) {}
  // Fills in the hosts of a rollout read as a summary.
  absl::Status load_hosts(tern::v1::Rollout& r);
  Database& db_;
};

}  // namespace tern
