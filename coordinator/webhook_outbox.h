#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/database.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// The webhook deliveries owed, one row per (event, webhook), in the
// coordinator's SQLite database (table webhook_deliveries).
//
// Rows are added by add(), called inside the transaction that journals the
// event (RolloutStore::record_batch), so an event is recorded with its
// deliveries or not at all: a kill -9 neither loses a delivery nor invents
// one. Each row keeps the body it will send, so every attempt sends the same
// bytes under the same id. A row is pending until delivered() or given_up()
// settles it; after a restart the pending ones are sent again, the settled
// ones never.
//
// Same thread rules as Database: one instance per connection. The event loop
// adds rows through its connection; the sender reads and settles them
// through one of its own (SQLite in WAL mode lets the two run side by side).
class WebhookOutbox {
 public:
  // Which webhook takes which events.
  struct Route {
    std::string webhook;
    std::set<tern::v1::RolloutEventKind> events;
  };
  // Creates the table if needed.
  static absl::StatusOr<std::unique_ptr<WebhookOutbox>> open(Database& db, std::vector<Route> routes = {});

  // One row per route that takes `kind`, for the event the journal just
  // numbered `sequence`. Call inside the journal's transaction. Returns how
  // many rows it added.
  absl::StatusOr<int> add(tern::v1::RolloutEventKind kind, const tern::v1::Rollout& summary,
                          const std::string& message, int64_t time_ms, uint64_t sequence);

  struct Delivery {
    int64_t row = 0;
    std::string webhook;
    std::string delivery_id;
    std::string body;
    int64_t created_ms = 0;
    int64_t attempts = 0;
  };
  // The oldest pending delivery of `webhook`, if any.
  absl::StatusOr<std::optional<Delivery>> next(const std::string& webhook);
  // Every webhook name with pending rows, and how many.
  absl::StatusOr<std::map<std::string, int64_t>> pending();
  // Settles a row: the receiver took it.
  absl::Status delivered(int64_t row, int64_t now_ms);
  // An attempt failed; the row stays pending.
  absl::Status attempt_failed(int64_t row, const std::string& error);
  // Settles a row without delivery (too old, or its webhook is gone).
  absl::Status given_up(int64_t row, const std::string& error, int64_t now_ms);
  // Deletes settled rows settled before `before_ms`; returns how many went.
  absl::StatusOr<int64_t> prune(int64_t before_ms);

 private:
  WebhookOutbox(Database& db, std::vector<Route> routes) : db_(db), routes_(std::move(routes)) {}
  Database& db_;
  std::vector<Route> routes_;
};

}  // namespace tern
