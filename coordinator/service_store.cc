#include "coordinator/service_store.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS services (
  name TEXT PRIMARY KEY,
  generation INTEGER NOT NULL,
  spec_json TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
  service TEXT NOT NULL,
  version TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  kind TEXT NOT NULL,
  file_name TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (service, version)
);
CREATE INDEX IF NOT EXISTS artifacts_by_sha ON artifacts(sha256);
CREATE TABLE IF NOT EXISTS desired (
  host_id TEXT NOT NULL,
  service TEXT NOT NULL,
  version TEXT NOT NULL,
  weight INTEGER NOT NULL,
  PRIMARY KEY (host_id, service)
);
CREATE TABLE IF NOT EXISTS artifact_urls (
  service TEXT NOT NULL,
  version TEXT NOT NULL,
  url TEXT NOT NULL,
  PRIMARY KEY (service, version)
);
CREATE TABLE IF NOT EXISTS artifact_signatures (
  service TEXT NOT NULL,
  version TEXT NOT NULL,
  signature_hex TEXT NOT NULL,
  PRIMARY KEY (service, version)
);
)sql";

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += digits[c >> 4], out += digits[c & 15];
  return out;
}
std::string from_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

tern::v1::Artifact artifact_row(Statement& q) {
  tern::v1::Artifact a;
  a.set_service(q.text_at(0));
  a.set_version(q.text_at(1));
  a.set_sha256(q.text_at(2));
  a.set_size(static_cast<uint64_t>(q.int_at(3)));
  a.set_kind(q.text_at(4));
  a.set_file_name(q.text_at(5));
  *a.mutable_created() = TimeUtil::MillisecondsToTimestamp(q.int_at(6));
  a.set_signature(from_hex(q.text_at(7)));
  a.set_url(q.text_at(8));
  return a;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServiceStore>> ServiceStore::open(Database& db) {
  if (auto st = db.exec(kSchema); !st.ok()) return st;
  return std::unique_ptr<ServiceStore>(new ServiceStore(db));
}

absl::StatusOr<std::vector<tern::v1::ServiceRecord>> ServiceStore::load_services() {
  auto q = db_.prepare("SELECT name, generation, spec_json, updated_ms FROM services ORDER BY name");
  if (!q.ok()) return q.status();
  std::vector<tern::v1::ServiceRecord> out;
  while (q->step()) {
    tern::v1::ServiceRecord r;
    auto st = google::protobuf::util::JsonStringToMessage(q->text_at(2), r.mutable_spec());
    if (!st.ok()) {
      return absl::DataLossError(absl::StrCat("stored spec of service ", q->text_at(0), " is unreadable: ", st.ToString()));
    }
    r.set_generation(static_cast<uint64_t>(q->int_at(1)));
    *r.mutable_updated() = TimeUtil::MillisecondsToTimestamp(q->int_at(3));
    out.push_back(std::move(r));
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::Status ServiceStore::save_service(const tern::v1::ServiceRecord& record) {
  std::string json;
  if (auto st = google::protobuf::util::MessageToJsonString(record.spec(), &json); !st.ok()) {
    return absl::InternalError(st.ToString());
  }
  auto q = db_.prepare(
      "INSERT INTO services (name, generation, spec_json, updated_ms) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT(name) DO UPDATE SET generation = ?2, spec_json = ?3, updated_ms = ?4");
  if (!q.ok()) return q.status();
  return q->bind(1, record.spec().name())
      .bind(2, static_cast<int64_t>(record.generation()))
      .bind(3, json)
      .bind(4, TimeUtil::TimestampToMilliseconds(record.updated()))
      .run();
}

absl::Status ServiceStore::delete_service(const std::string& name) {
  return db_.transaction([&]() -> absl::Status {
    for (const char* sql : {"DELETE FROM services WHERE name = ?1", "DELETE FROM desired WHERE service = ?1"}) {
      auto q = db_.prepare(sql);
      if (!q.ok()) return q.status();
      if (auto st = q->bind(1, name).run(); !st.ok()) return st;
    }
    return absl::OkStatus();
  });
}

absl::Status ServiceStore::save_desired(const Desired& d) {
  auto q = db_.prepare(
      "INSERT INTO desired (host_id, service, version, weight) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (host_id, service) DO UPDATE SET version = excluded.version, weight = excluded.weight");
  if (!q.ok()) return q.status();
  return q->bind(1, d.host_id).bind(2, d.service).bind(3, d.version).bind(4, static_cast<int64_t>(d.weight)).run();
}

absl::StatusOr<std::vector<ServiceStore::Desired>> ServiceStore::load_desired() {
  auto q = db_.prepare("SELECT host_id, service, version, weight FROM desired");
  if (!q.ok()) return q.status();
  std::vector<Desired> out;
  while (q->step()) {
    out.push_back({q->text_at(0), q->text_at(1), q->text_at(2), static_cast<uint32_t>(q->int_at(3))});
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::Status ServiceStore::save_artifact(const tern::v1::Artifact& a, const std::string& file_name) {
  return db_.transaction([&]() -> absl::Status {
    auto q = db_.prepare(
        "INSERT INTO artifacts (service, version, sha256, size, kind, file_name, created_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!q.ok()) return q.status();
    if (auto st = q->bind(1, a.service())
                      .bind(2, a.version())
                      .bind(3, a.sha256())
                      .bind(4, static_cast<int64_t>(a.size()))
                      .bind(5, a.kind())
                      .bind(6, file_name)
                      .bind(7, TimeUtil::TimestampToMilliseconds(a.created()))
                      .run();
        !st.ok()) {
      return st;
    }
    if (!a.url().empty()) {
      auto url = db_.prepare("INSERT INTO artifact_urls (service, version, url) VALUES (?1, ?2, ?3)");
      if (!url.ok()) return url.status();
      if (auto st = url->bind(1, a.service()).bind(2, a.version()).bind(3, a.url()).run(); !st.ok()) return st;
    }
    if (a.signature().empty()) return absl::OkStatus();
    auto sig = db_.prepare("INSERT INTO artifact_signatures (service, version, signature_hex) VALUES (?1, ?2, ?3)");
    if (!sig.ok()) return sig.status();
    return sig->bind(1, a.service()).bind(2, a.version()).bind(3, to_hex(a.signature())).run();
  });
}

absl::StatusOr<std::optional<std::pair<tern::v1::Artifact, std::string>>> ServiceStore::find_artifact(
    const std::string& service, const std::string& version) {
  auto q = db_.prepare(
      "SELECT a.service, a.version, a.sha256, a.size, a.kind, a.file_name, a.created_ms, "
      "COALESCE(s.signature_hex, ''), COALESCE(u.url, '') FROM artifacts a LEFT JOIN artifact_signatures s "
      "ON s.service = a.service AND s.version = a.version LEFT JOIN artifact_urls u "
      "ON u.service = a.service AND u.version = a.version WHERE a.service = ?1 AND a.version = ?2");
  if (!q.ok()) return q.status();
  q->bind(1, service).bind(2, version);
  if (!q->step()) {
    if (!q->status().ok()) return q->status();
    return std::nullopt;
  }
  return std::make_optional(std::make_pair(artifact_row(*q), q->text_at(5)));
}

absl::StatusOr<std::vector<tern::v1::Artifact>> ServiceStore::list_artifacts(const std::string& service) {
  auto q = db_.prepare(
      "SELECT a.service, a.version, a.sha256, a.size, a.kind, a.file_name, a.created_ms, "
      "COALESCE(s.signature_hex, ''), COALESCE(u.url, '') FROM artifacts a LEFT JOIN artifact_signatures s "
      "ON s.service = a.service AND s.version = a.version LEFT JOIN artifact_urls u "
      "ON u.service = a.service AND u.version = a.version WHERE ?1 = '' OR a.service = ?1 "
      "ORDER BY a.service, a.created_ms");
  if (!q.ok()) return q.status();
  q->bind(1, service);
  std::vector<tern::v1::Artifact> out;
  while (q->step()) out.push_back(artifact_row(*q));
  if (!q->status().ok()) return q->status();
  return out;
}

absl::StatusOr<bool> ServiceStore::has_blob(const std::string& sha256) {
  // A registered artifact's bytes are at its URL, not in the store.
  auto q = db_.prepare(
      "SELECT 1 FROM artifacts a WHERE a.sha256 = ?1 AND NOT EXISTS (SELECT 1 FROM artifact_urls u "
      "WHERE u.service = a.service AND u.version = a.version) LIMIT 1");
  if (!q.ok()) return q.status();
  q->bind(1, sha256);
  bool found = q->step();
  if (!q->status().ok()) return q->status();
  return found;
}

}  // namespace tern
