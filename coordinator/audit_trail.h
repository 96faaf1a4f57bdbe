#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "tern/v1/admin.pb.h"

namespace tern {

class AdminStore;
class Database;

// How long the audit trail and host histories keep their rows: whichever
// limit is reached first. Zero turns a limit off.
struct Retention {
  Millis max_age{0};
  int64_t max_rows = 0;
};

// Deletes rows of `table` older than `max_age` (by `time_col`, unix ms) and
// all but the newest `max_rows` (by `id_col`); returns how many went.
absl::StatusOr<int64_t> prune_table(Database& db, const std::string& table, const std::string& id_col,
                                    const std::string& time_col, const Retention& keep, int64_t now_ms);

// A request as the audit trail stores it: one line of at most `max_chars`,
// with secrets replaced by "<redacted>" (environment values, tokens,
// secrets, passwords, signatures) and bytes fields by their length.
std::string audit_request_text(const google::protobuf::Message& request, std::size_t max_chars = 256);

// The coordinator's audit trail, on its event loop. Calls by someone who
// proved who they are are recorded, allowed or refused, in batches (one
// transaction per flush, so a burst of calls never makes the loop wait on
// one fsync each). Calls nobody authenticated are counted (a metric, and a
// log line at most every `log_every` with the busiest peers), never stored:
// whoever can reach the port cannot fill the disk.
class AuditTrail {
 public:
  AuditTrail(AdminStore& store, Metrics& metrics, const Clock& clock, Millis log_every = Millis(10'000));

  void record(tern::v1::AuditEntry e);
  void refused_unauthenticated(const std::string& peer, const std::string& method);
  // Writes what is queued; called on a timer and at shutdown.
  void flush();

  std::size_t queued() const { return queue_.size(); }

 private:
  AdminStore& store_;
  const Clock& clock_;
  Millis log_every_;
  std::vector<tern::v1::AuditEntry> queue_;
  Metrics::Value& unauthenticated_;
  Metrics::Value& dropped_;
  // Since the last log line: refusals per peer (capped), and in all.
  std::map<std::string, int64_t> by_peer_;
  int64_t since_log_ = 0;
  TimePoint last_log_{};
};

}  // namespace tern
