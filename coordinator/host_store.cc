#include "coordinator/host_store.h"

#include "absl/strings/str_cat.h"
#include "core/words.h"

namespace tern {

tern::v1::HostState to_proto(HostState s) {
  switch (s) {
    case HostState::kConnected: return tern::v1::HOST_STATE_CONNECTED;
    case HostState::kDisconnected: return tern::v1::HOST_STATE_DISCONNECTED;
    case HostState::kUnreachable: return tern::v1::HOST_STATE_UNREACHABLE;
  }
  return tern::v1::HOST_STATE_UNSPECIFIED;
}

const char* host_state_name(HostState s) { return word(to_proto(s)); }

namespace {

HostState parse_state(const std::string& s) {
  if (s == "connected") return HostState::kConnected;
  if (s == "unreachable") return HostState::kUnreachable;
  return HostState::kDisconnected;
}

constexpr int kSchemaVersion = 2;  // 2: services and artifacts (ServiceStore)
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
  host_id TEXT PRIMARY KEY,
  agent_version TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL,
  state_since_ms INTEGER NOT NULL,
  connect_count INTEGER NOT NULL DEFAULT 0,
  peer TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS host_labels (
  host_id TEXT NOT NULL REFERENCES hosts(host_id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (host_id, key)
);
CREATE TABLE IF NOT EXISTS host_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host_id TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS host_events_by_host ON host_events(host_id, id);
CREATE TABLE IF NOT EXISTS host_cordons (
  host_id TEXT PRIMARY KEY,
  reason TEXT NOT NULL DEFAULT ''
);
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<HostStore>> HostStore::open(Database& db) {
  int have = db.user_version();
  if (have > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database ", db.path(), " has schema version ", have, ", newer than this coordinator understands (",
        kSchemaVersion, "); run a newer tern-coordinator or restore an older database"));
  }
  if (auto st = db.transaction([&] {
        if (auto s = db.exec(kSchema); !s.ok()) return s;
        return db.set_user_version(kSchemaVersion);
      });
      !st.ok()) {
    return st;
  }
  return std::unique_ptr<HostStore>(new HostStore(db));
}

absl::StatusOr<std::vector<HostRecord>> HostStore::load_all() {
  auto q = db_.prepare(
      "SELECT host_id, agent_version, state, first_seen_ms, last_seen_ms, state_since_ms, connect_count, peer "
      "FROM hosts ORDER BY host_id");
  if (!q.ok()) return q.status();
  std::vector<HostRecord> out;
  while (q->step()) {
    HostRecord h;
    h.host_id = q->text_at(0);
    h.agent_version = q->text_at(1);
    h.state = parse_state(q->text_at(2));
    h.first_seen = from_unix_millis(q->int_at(3));
    h.last_seen = from_unix_millis(q->int_at(4));
    h.state_since = from_unix_millis(q->int_at(5));
    h.connect_count = static_cast<uint64_t>(q->int_at(6));
    h.peer = q->text_at(7);
    out.push_back(std::move(h));
  }
  if (!q->status().ok()) return q->status();
  auto l = db_.prepare("SELECT host_id, key, value FROM host_labels ORDER BY host_id");
  if (!l.ok()) return l.status();
  size_t i = 0;
  while (l->step()) {
    std::string id = l->text_at(0);
    while (i < out.size() && out[i].host_id < id) ++i;
    if (i < out.size() && out[i].host_id == id) out[i].labels[l->text_at(1)] = l->text_at(2);
  }
  if (!l->status().ok()) return l->status();
  auto c = db_.prepare("SELECT host_id, reason FROM host_cordons");
  if (!c.ok()) return c.status();
  std::map<std::string, std::string> cordons;
  while (c->step()) cordons[c->text_at(0)] = c->text_at(1);
  if (!c->status().ok()) return c->status();
  for (auto& h : out) {
    if (auto it = cordons.find(h.host_id); it != cordons.end()) h.cordoned = true, h.cordon_reason = it->second;
  }
  return out;
}

absl::Status HostStore::write_host(const HostRecord& h) {
  auto up = db_.prepare(
      "INSERT INTO hosts (host_id, agent_version, state, first_seen_ms, last_seen_ms, state_since_ms, "
      "connect_count, peer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
      "ON CONFLICT(host_id) DO UPDATE SET agent_version=?2, state=?3, first_seen_ms=?4, last_seen_ms=?5, "
      "state_since_ms=?6, connect_count=?7, peer=?8");
  if (!up.ok()) return up.status();
  up->bind(1, h.host_id)
      .bind(2, h.agent_version)
      .bind(3, host_state_name(h.state))
      .bind(4, to_unix_millis(h.first_seen))
      .bind(5, to_unix_millis(h.last_seen))
      .bind(6, to_unix_millis(h.state_since))
      .bind(7, static_cast<int64_t>(h.connect_count))
      .bind(8, h.peer);
  if (auto st = up->run(); !st.ok()) return st;
  auto del = db_.prepare("DELETE FROM host_labels WHERE host_id = ?1");
  if (!del.ok()) return del.status();
  if (auto st = del->bind(1, h.host_id).run(); !st.ok()) return st;
  auto ins = db_.prepare("INSERT INTO host_labels (host_id, key, value) VALUES (?1, ?2, ?3)");
  if (!ins.ok()) return ins.status();
  for (const auto& [k, v] : h.labels) {
    ins->reset();
    if (auto st = ins->bind(1, h.host_id).bind(2, k).bind(3, v).run(); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status HostStore::save(const HostRecord& host, const HostEventRecord* event) {
  return db_.transaction([&]() -> absl::Status {
    if (auto st = write_host(host); !st.ok()) return st;
    auto del = db_.prepare("DELETE FROM host_cordons WHERE host_id = ?1");
    if (!del.ok()) return del.status();
    if (auto st = del->bind(1, host.host_id).run(); !st.ok()) return st;
    if (host.cordoned) {
      auto ins = db_.prepare("INSERT INTO host_cordons (host_id, reason) VALUES (?1, ?2)");
      if (!ins.ok()) return ins.status();
      if (auto st = ins->bind(1, host.host_id).bind(2, host.cordon_reason).run(); !st.ok()) return st;
    }
    if (event == nullptr) return absl::OkStatus();
    auto ev = db_.prepare("INSERT INTO host_events (host_id, time_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)");
    if (!ev.ok()) return ev.status();
    return ev->bind(1, event->host_id).bind(2, to_unix_millis(event->time)).bind(3, event->kind)
        .bind(4, event->detail).run();
  });
}

absl::Status HostStore::save_last_seen(const std::vector<std::pair<std::string, TimePoint>>& seen) {
  if (seen.empty()) return absl::OkStatus();
  return db_.transaction([&]() -> absl::Status {
    auto up = db_.prepare("UPDATE hosts SET last_seen_ms = ?2 WHERE host_id = ?1");
    if (!up.ok()) return up.status();
    for (const auto& [id, t] : seen) {
      up->reset();
      if (auto st = up->bind(1, id).bind(2, to_unix_millis(t)).run(); !st.ok()) return st;
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<HostEventRecord>> HostStore::history(const std::string& host_id, uint32_t limit) {
  auto q = db_.prepare(
      "SELECT host_id, time_ms, kind, detail FROM (SELECT * FROM host_events WHERE host_id = ?1 "
      "ORDER BY id DESC LIMIT ?2) ORDER BY id");
  if (!q.ok()) return q.status();
  // 100 unless asked; never more than 1,000 in one answer.
  q->bind(1, host_id).bind(2, static_cast<int64_t>(limit == 0 ? 100 : std::min<uint32_t>(limit, 1000)));
  std::vector<HostEventRecord> out;
  while (q->step()) {
    out.push_back({q->text_at(0), from_unix_millis(q->int_at(1)), q->text_at(2), q->text_at(3)});
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::StatusOr<uint64_t> HostStore::next_epoch() {
  uint64_t epoch = 0;
  auto st = db_.transaction([&]() -> absl::Status {
    auto q = db_.prepare("SELECT value FROM meta WHERE key = 'epoch'");
    if (!q.ok()) return q.status();
    if (q->step()) epoch = std::stoull(q->text_at(0));
    ++epoch;
    auto up = db_.prepare("INSERT INTO meta (key, value) VALUES ('epoch', ?1) "
                          "ON CONFLICT(key) DO UPDATE SET value = ?1");
    if (!up.ok()) return up.status();
    return up->bind(1, std::to_string(epoch)).run();
  });
  if (!st.ok()) return st;
  return epoch;
}

}  // namespace tern
