#include "coordinator/rollout_store.h"

#include "core/words.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "coordinator/rollout_engine.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

// `meta` is shared with HostStore (same definition); the rollout counter
// lives there.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
  id TEXT PRIMARY KEY,
  service TEXT NOT NULL,
  terminal INTEGER NOT NULL,
  rollout_json TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_by_service ON rollouts(service, created_ms);
CREATE TABLE IF NOT EXISTS rollout_events (
  sequence INTEGER PRIMARY KEY AUTOINCREMENT,
  rollout_id TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  kind TEXT NOT NULL,
  message TEXT NOT NULL,
  rollout_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_by_rollout ON rollout_events(rollout_id, sequence);
CREATE TABLE IF NOT EXISTS rollout_hosts (
  rollout_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  progress BLOB NOT NULL,
  PRIMARY KEY (rollout_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS analysis_samples (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  rollout_id TEXT NOT NULL,
  wave INTEGER NOT NULL,
  host TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  sample BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS analysis_samples_by_wave ON analysis_samples(rollout_id, wave, id);
)sql";

absl::StatusOr<std::string> to_json(const google::protobuf::Message& m) {
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out);
  if (!st.ok()) return absl::InternalError(st.ToString());
  return out;
}

absl::StatusOr<tern::v1::Rollout> from_json(const std::string& json) {
  tern::v1::Rollout r;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(json, &r, opts);
  if (!st.ok()) return absl::DataLossError(absl::StrCat("a stored rollout is unreadable: ", st.ToString()));
  return r;
}

}  // namespace

tern::v1::Rollout rollout_summary(const tern::v1::Rollout& r) {
  // Field by field: copying the whole message and clearing its hosts would
  // copy the hosts first. (A test checks this copies every field but hosts.)
  tern::v1::Rollout s;
  s.set_id(r.id());
  s.set_generation(r.generation());
  if (r.has_spec()) *s.mutable_spec() = r.spec();
  s.set_phase(r.phase());
  s.set_current_wave(r.current_wave());
  s.set_wave_step(r.wave_step());
  s.set_message(r.message());
  if (r.has_created()) *s.mutable_created() = r.created();
  if (r.has_updated()) *s.mutable_updated() = r.updated();
  if (r.has_previous_release()) *s.mutable_previous_release() = r.previous_release();
  if (r.has_step_started()) *s.mutable_step_started() = r.step_started();
  if (r.has_bake_until()) *s.mutable_bake_until() = r.bake_until();
  s.set_failed_hosts(r.failed_hosts());
  s.set_failed_in_wave(r.failed_in_wave());
  s.set_total_hosts(r.total_hosts());
  *s.mutable_warnings() = r.warnings();
  if (r.has_analysis()) *s.mutable_analysis() = r.analysis();
  if (r.has_analysis_metrics()) *s.mutable_analysis_metrics() = r.analysis_metrics();
  return s;
}

absl::StatusOr<std::unique_ptr<RolloutStore>> RolloutStore::open(Database& db) {
  if (auto st = db.exec(kSchema); !st.ok()) return st;
  // Events carry their rollout summary as binary protobuf in `summary`
  // (parsing thousands of JSON summaries made a watch's replay slow);
  // `rollout_json` stays for rows written before, and is '' after.
  auto cols = db.prepare("SELECT 1 FROM pragma_table_info('rollout_events') WHERE name = 'summary'");
  if (!cols.ok()) return cols.status();
  const bool has_summary = cols->step();
  if (!cols->status().ok()) return cols->status();
  if (!has_summary) {
    if (auto st = db.exec("ALTER TABLE rollout_events ADD COLUMN summary BLOB"); !st.ok()) return st;
  }
  return std::unique_ptr<RolloutStore>(new RolloutStore(db));
}

absl::StatusOr<std::vector<uint64_t>> RolloutStore::record_batch(const std::vector<Event>& events,
                                                                const std::vector<RolloutWrite>& rollouts,
                                                                int64_t time_ms,
                                                                const std::vector<SampleRow>& samples,
                                                                const AlsoRecord& also) {
  std::vector<uint64_t> seqs;
  auto st = db_.transaction([&]() -> absl::Status {
    auto up = db_.prepare(
        "INSERT INTO rollouts (id, service, terminal, rollout_json, created_ms, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(id) DO UPDATE SET terminal = ?3, rollout_json = ?4, "
        "updated_ms = ?5");
    if (!up.ok()) return up.status();
    auto host = db_.prepare("INSERT OR REPLACE INTO rollout_hosts (rollout_id, position, progress) VALUES (?1, ?2, ?3)");
    if (!host.ok()) return host.status();

    std::string bytes;
    for (const auto& w : rollouts) {
      const tern::v1::Rollout& r = *w.rollout;
      auto json = to_json(rollout_summary(r));
      if (!json.ok()) return json.status();
      up->reset();
      if (auto s = up->bind(1, r.id())
                       .bind(2, r.spec().service())
                       .bind(3, static_cast<int64_t>(RolloutEngine::is_settled(r)))
                       .bind(4, *json)
                       .bind(5, time_ms)
                       .run();
          !s.ok()) {
        return s;
      }
      auto write_host = [&](int pos) -> absl::Status {
        if (pos < 0 || pos >= r.hosts_size()) return absl::InternalError("a changed host outside the rollout");
        bytes.clear();
        if (!r.hosts(pos).SerializeToString(&bytes)) return absl::InternalError("cannot encode a host's progress");
        host->reset();
        return host->bind(1, r.id()).bind(2, static_cast<int64_t>(pos)).bind_blob(3, bytes).run();
      };
      if (w.all_hosts) {
        for (int pos = 0; pos < r.hosts_size(); ++pos) {
          if (auto s = write_host(pos); !s.ok()) return s;
        }
      } else {
        for (int pos : w.hosts) {
          if (auto s = write_host(pos); !s.ok()) return s;
        }
      }
    }
    auto ev = db_.prepare(
        "INSERT INTO rollout_events (rollout_id, time_ms, kind, message, rollout_json, summary) "
        "VALUES (?1, ?2, ?3, ?4, '', ?5)");
    if (!ev.ok()) return ev.status();
    for (const auto& e : events) {
      bytes.clear();
      if (!e.summary.SerializeToString(&bytes)) return absl::InternalError("cannot encode a rollout summary");
      ev->reset();
      if (auto s = ev->bind(1, e.summary.id()).bind(2, e.time_ms).bind(3, word(e.kind)).bind(4, e.message).bind_blob(5, bytes).run();
          !s.ok()) {
        return s;
      }
      seqs.push_back(static_cast<uint64_t>(sqlite3_last_insert_rowid(db_.raw())));
      if (also) {
        if (auto s = also(e, seqs.back()); !s.ok()) return s;
      }
    }
    if (samples.empty()) return absl::OkStatus();
    auto sm = db_.prepare(
        "INSERT INTO analysis_samples (rollout_id, wave, host, time_ms, sample) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!sm.ok()) return sm.status();
    for (const auto& row : samples) {
      bytes.clear();
      if (!row.sample.SerializeToString(&bytes)) return absl::InternalError("cannot encode an analysis sample");
      sm->reset();
      if (auto s = sm->bind(1, row.rollout_id)
                       .bind(2, static_cast<int64_t>(row.wave))
                       .bind(3, row.host)
                       .bind(4, row.time_ms)
                       .bind_blob(5, bytes)
                       .run();
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return seqs;
}

absl::StatusOr<std::vector<RolloutStore::SampleRow>> RolloutStore::samples(const std::string& rollout_id,
                                                                           uint32_t wave) {
  auto q = db_.prepare(
      "SELECT host, time_ms, sample FROM analysis_samples WHERE rollout_id = ?1 AND wave = ?2 ORDER BY id");
  if (!q.ok()) return q.status();
  q->bind(1, rollout_id).bind(2, static_cast<int64_t>(wave));
  std::vector<SampleRow> out;
  while (q->step()) {
    auto& row = out.emplace_back();
    row.rollout_id = rollout_id;
    row.wave = wave;
    row.host = q->text_at(0);
    row.time_ms = q->int_at(1);
    if (!row.sample.ParseFromString(q->blob_at(2))) {
      return absl::DataLossError(absl::StrCat("rollout ", rollout_id, ": an analysis sample is unreadable"));
    }
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::StatusOr<int64_t> RolloutStore::prune_samples(Millis max_age, int64_t max_rows, int64_t now_ms) {
  int64_t removed = 0;
  auto st = db_.transaction([&]() -> absl::Status {
    // Only settled rollouts' rows: an unsettled one may still resume from them.
    const char* settled = "rollout_id IN (SELECT id FROM rollouts WHERE terminal = 1)";
    if (max_age > Millis(0)) {
      auto q = db_.prepare(absl::StrCat("DELETE FROM analysis_samples WHERE time_ms < ?1 AND ", settled));
      if (!q.ok()) return q.status();
      if (auto s = q->bind(1, now_ms - max_age.count()).run(); !s.ok()) return s;
      removed += sqlite3_changes(db_.raw());
    }
    if (max_rows > 0) {
      auto q = db_.prepare(absl::StrCat(
          "DELETE FROM analysis_samples WHERE id <= (SELECT id FROM analysis_samples ORDER BY id DESC LIMIT 1 "
          "OFFSET ?1) AND ",
          settled));
      if (!q.ok()) return q.status();
      if (auto s = q->bind(1, max_rows).run(); !s.ok()) return s;
      removed += sqlite3_changes(db_.raw());
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return removed;
}

absl::Status RolloutStore::load_hosts(tern::v1::Rollout& r) {
  if (r.hosts_size() > 0) return absl::OkStatus();  // written before the split: hosts inline
  auto q = db_.prepare("SELECT position, progress FROM rollout_hosts WHERE rollout_id = ?1 ORDER BY position");
  if (!q.ok()) return q.status();
  q->bind(1, r.id());
  while (q->step()) {
    if (q->int_at(0) != r.hosts_size()) {
      return absl::DataLossError(absl::StrCat("rollout ", r.id(), ": host row ", q->int_at(0), " is missing"));
    }
    if (!r.add_hosts()->ParseFromString(q->blob_at(1))) {
      return absl::DataLossError(absl::StrCat("rollout ", r.id(), ": host row ", q->int_at(0), " is unreadable"));
    }
  }
  if (!q->status().ok()) return q->status();
  if (static_cast<uint32_t>(r.hosts_size()) != r.total_hosts()) {
    return absl::DataLossError(absl::StrCat("rollout ", r.id(), " has ", r.hosts_size(), " host rows of ",
                                            r.total_hosts()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<tern::v1::Rollout>> RolloutStore::load_active() {
  auto q = db_.prepare("SELECT rollout_json FROM rollouts WHERE terminal = 0 ORDER BY created_ms");
  if (!q.ok()) return q.status();
  std::vector<tern::v1::Rollout> out;
  while (q->step()) {
    auto r = from_json(q->text_at(0));
    if (!r.ok()) return r.status();
    out.push_back(*std::move(r));
  }
  if (!q->status().ok()) return q->status();
  for (auto& r : out) {
    if (auto st = load_hosts(r); !st.ok()) return st;
  }
  return out;
}

absl::StatusOr<tern::v1::Rollout> RolloutStore::get(const std::string& id) {
  auto q = db_.prepare("SELECT rollout_json FROM rollouts WHERE id = ?1");
  if (!q.ok()) return q.status();
  q->bind(1, id);
  if (!q->step()) {
    if (!q->status().ok()) return q->status();
    return absl::NotFoundError(absl::StrCat("no rollout \"", id, "\"; `ternctl rollout list` shows them"));
  }
  auto r = from_json(q->text_at(0));
  if (!r.ok()) return r.status();
  if (auto st = load_hosts(*r); !st.ok()) return st;
  return r;
}

absl::StatusOr<std::vector<tern::v1::Rollout>> RolloutStore::list(const std::string& service, uint32_t limit) {
  auto q = db_.prepare(
      "SELECT rollout_json FROM rollouts WHERE ?1 = '' OR service = ?1 ORDER BY created_ms DESC LIMIT ?2");
  if (!q.ok()) return q.status();
  q->bind(1, service).bind(2, static_cast<int64_t>(limit == 0 ? 50 : limit));
  std::vector<tern::v1::Rollout> out;
  while (q->step()) {
    auto r = from_json(q->text_at(0));
    if (!r.ok()) return r.status();
    r->clear_hosts();  // a row from before the split
    out.push_back(*std::move(r));
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::StatusOr<std::vector<tern::v1::RolloutEvent>> RolloutStore::events(const std::string& id, uint64_t after) {
  auto q = db_.prepare(
      "SELECT sequence, time_ms, kind, message, rollout_json, summary FROM rollout_events "
      "WHERE rollout_id = ?1 AND sequence > ?2 ORDER BY sequence");
  if (!q.ok()) return q.status();
  q->bind(1, id).bind(2, static_cast<int64_t>(after));
  std::vector<tern::v1::RolloutEvent> out;
  while (q->step()) {
    tern::v1::RolloutEvent e;
    e.set_sequence(static_cast<uint64_t>(q->int_at(0)));
    e.set_rollout_id(id);
    *e.mutable_time() = TimeUtil::MillisecondsToTimestamp(q->int_at(1));
    e.set_kind(rollout_event_kind(q->text_at(2)).value_or(tern::v1::ROLLOUT_EVENT_KIND_UNSPECIFIED));
    e.set_message(q->text_at(3));
    if (!q->null_at(5)) {
      if (!e.mutable_rollout()->ParseFromString(q->blob_at(5))) {
        return absl::DataLossError(absl::StrCat("rollout ", id, ": event ", e.sequence(), " is unreadable"));
      }
    } else {
      auto r = from_json(q->text_at(4));  // written before the binary column
      if (!r.ok()) return r.status();
      *e.mutable_rollout() = *std::move(r);
    }
    out.push_back(std::move(e));
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::StatusOr<uint64_t> RolloutStore::next_number() {
  uint64_t n = 0;
  auto st = db_.transaction([&]() -> absl::Status {
    auto q = db_.prepare("SELECT value FROM meta WHERE key = 'rollout_seq'");
    if (!q.ok()) return q.status();
    if (q->step()) n = std::stoull(q->text_at(0));
    ++n;
    auto up = db_.prepare(
        "INSERT INTO meta (key, value) VALUES ('rollout_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1");
    if (!up.ok()) return up.status();
    return up->bind(1, std::to_string(n)).run();
  });
  if (!st.ok()) return st;
  return n;
}

}  // namespace tern
