#include "coordinator/webhook_outbox.h"

#include "coordinator/webhook.h"

namespace tern {
namespace {

// state: 0 pending, 1 delivered, 2 given up.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  webhook TEXT NOT NULL,
  delivery_id TEXT NOT NULL,
  body TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  state INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  settled_ms INTEGER,
  UNIQUE (webhook, delivery_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries(webhook, state, id);
)sql";

constexpr int64_t kPending = 0;
constexpr int64_t kDelivered = 1;
constexpr int64_t kGivenUp = 2;

}  // namespace

absl::StatusOr<std::unique_ptr<WebhookOutbox>> WebhookOutbox::open(Database& db, std::vector<Route> routes) {
  if (auto st = db.exec(kSchema); !st.ok()) return st;
  return std::unique_ptr<WebhookOutbox>(new WebhookOutbox(db, std::move(routes)));
}

absl::StatusOr<int> WebhookOutbox::add(tern::v1::RolloutEventKind kind, const tern::v1::Rollout& summary,
                                       const std::string& message, int64_t time_ms, uint64_t sequence) {
  int added = 0;
  std::optional<Statement> insert;
  std::string id, body;
  for (const auto& route : routes_) {
    if (route.events.count(kind) == 0) continue;
    if (!insert) {
      // INSERT OR IGNORE: the same event twice (never expected) is one delivery.
      auto q = db_.prepare(
          "INSERT OR IGNORE INTO webhook_deliveries (webhook, delivery_id, body, created_ms) VALUES (?1, ?2, ?3, ?4)");
      if (!q.ok()) return q.status();
      insert.emplace(*std::move(q));
      id = webhook_delivery_id(summary.id(), sequence);
      body = webhook_payload(id, kind, summary, message, time_ms);
    }
    insert->reset();
    if (auto st = insert->bind(1, route.webhook).bind(2, id).bind(3, body).bind(4, time_ms).run(); !st.ok()) return st;
    ++added;
  }
  return added;
}

absl::StatusOr<std::optional<WebhookOutbox::Delivery>> WebhookOutbox::next(const std::string& webhook) {
  auto q = db_.prepare(
      "SELECT id, delivery_id, body, created_ms, attempts FROM webhook_deliveries WHERE webhook = ?1 AND state = ?2 "
      "ORDER BY id LIMIT 1");
  if (!q.ok()) return q.status();
  q->bind(1, webhook).bind(2, kPending);
  if (!q->step()) {
    if (!q->status().ok()) return q->status();
    return std::optional<Delivery>();
  }
  Delivery d;
  d.row = q->int_at(0);
  d.webhook = webhook;
  d.delivery_id = q->text_at(1);
  d.body = q->text_at(2);
  d.created_ms = q->int_at(3);
  d.attempts = q->int_at(4);
  return std::optional<Delivery>(std::move(d));
}

absl::StatusOr<std::map<std::string, int64_t>> WebhookOutbox::pending() {
  auto q = db_.prepare("SELECT webhook, COUNT(*) FROM webhook_deliveries WHERE state = ?1 GROUP BY webhook");
  if (!q.ok()) return q.status();
  q->bind(1, kPending);
  std::map<std::string, int64_t> out;
  while (q->step()) out[q->text_at(0)] = q->int_at(1);
  if (!q->status().ok()) return q->status();
  return out;
}

absl::Status WebhookOutbox::delivered(int64_t row, int64_t now_ms) {
  auto q = db_.prepare(
      "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1, last_error = '', settled_ms = ?3 "
      "WHERE id = ?1");
  if (!q.ok()) return q.status();
  return q->bind(1, row).bind(2, kDelivered).bind(3, now_ms).run();
}

absl::Status WebhookOutbox::attempt_failed(int64_t row, const std::string& error) {
  auto q = db_.prepare("UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1");
  if (!q.ok()) return q.status();
  return q->bind(1, row).bind(2, error).run();
}

absl::Status WebhookOutbox::given_up(int64_t row, const std::string& error, int64_t now_ms) {
  auto q = db_.prepare("UPDATE webhook_deliveries SET state = ?2, last_error = ?3, settled_ms = ?4 WHERE id = ?1");
  if (!q.ok()) return q.status();
  return q->bind(1, row).bind(2, kGivenUp).bind(3, error).bind(4, now_ms).run();
}

absl::StatusOr<int64_t> WebhookOutbox::prune(int64_t before_ms) {
  auto q = db_.prepare("DELETE FROM webhook_deliveries WHERE state != ?1 AND settled_ms < ?2");
  if (!q.ok()) return q.status();
  if (auto st = q->bind(1, kPending).bind(2, before_ms).run(); !st.ok()) return st;
  return static_cast<int64_t>(sqlite3_changes(db_.raw()));
}

}  // namespace tern
