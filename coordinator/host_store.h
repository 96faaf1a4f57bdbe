#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/label_selector.h"
#include "coordinator/database.h"
#include "tern/v1/common.pb.h"

namespace tern {

enum class HostState { kConnected, kDisconnected, kUnreachable };
tern::v1::HostState to_proto(HostState s);
// Its word, as shown and as stored.
const char* host_state_name(HostState s);

// What the coordinator remembers about a host across restarts.
struct HostRecord {
  std::string host_id;
  Labels labels;
  std::string agent_version;
  HostState state = HostState::kDisconnected;
  TimePoint first_seen{};
  TimePoint last_seen{};
  TimePoint state_since{};
  uint64_t connect_count = 0;
  std::string peer;
  // Left out of new rollouts, and why.
  bool cordoned = false;
  std::string cordon_reason;
};

struct HostEventRecord {
  std::string host_id;
  TimePoint time{};
  std::string kind;
  std::string detail;
};

// Persistence of the host registry and its history in the coordinator's
// SQLite database. Same thread rules as Database.
class HostStore {
 public:
  // Creates or migrates the schema.
  static absl::StatusOr<std::unique_ptr<HostStore>> open(Database& db);

  absl::StatusOr<std::vector<HostRecord>> load_all();
  // Writes the record and, when `event` is non-empty, appends it to the
  // history, in one transaction.
  absl::Status save(const HostRecord& host, const HostEventRecord* event = nullptr);
  // Batch update of last_seen for hosts that only heartbeated.
  absl::Status save_last_seen(const std::vector<std::pair<std::string, TimePoint>>& seen);
  absl::StatusOr<std::vector<HostEventRecord>> history(const std::string& host_id, uint32_t limit);
  // Increments and returns the coordinator's epoch (once per start).
  absl::StatusOr<uint64_t> next_epoch();

 private:
  explicit HostStore(Database& db) : db_(db) {}
  absl::Status write_host(const HostRecord& host);
  Database& db_;
};

}  // namespace tern
