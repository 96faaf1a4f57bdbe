#include "coordinator/audit_trail.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "coordinator/admin_service.h"
#include "coordinator/database.h"
#include "core/status_fmt.h"
#include "core/words.h"

namespace tern {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Fields whose value never reaches the trail, whatever message holds them.
bool secret_field(const FieldDescriptor& f) {
  const std::string name = absl::AsciiStrToLower(f.name());
  for (const char* word : {"secret", "token", "password", "signature", "key"}) {
    if (name.find(word) != std::string::npos) return true;
  }
  return false;
}

void redact(Message& m) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_map()) {
      // env: {KEY: value} keeps its keys, loses its values.
      const FieldDescriptor* value = f->message_type()->map_value();
      if (absl::AsciiStrToLower(f->name()) == "env" || value->type() == FieldDescriptor::TYPE_BYTES) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) {
          Message* entry = r->MutableRepeatedMessage(&m, f, j);
          if (value->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
            entry->GetReflection()->SetString(entry, value, "<redacted>");
          }
        }
      }
      continue;
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) redact(*r->MutableRepeatedMessage(&m, f, j));
      } else if (r->HasField(m, f)) {
        redact(*r->MutableMessage(&m, f));
      }
      continue;
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_STRING || f->is_repeated()) continue;
    if (!r->HasField(m, f) && f->has_presence()) continue;
    const std::string v = r->GetString(m, f);
    if (v.empty()) continue;
    if (f->type() == FieldDescriptor::TYPE_BYTES) {
      r->SetString(&m, f, absl::StrCat("<", v.size(), " bytes>"));
    } else if (secret_field(*f)) {
      r->SetString(&m, f, "<redacted>");
    }
  }
}

}  // namespace

std::string audit_request_text(const Message& request, std::size_t max_chars) {
  std::unique_ptr<Message> copy(request.New());
  copy->CopyFrom(request);
  redact(*copy);
  std::string text = copy->ShortDebugString();
  if (text.size() > max_chars) text = text.substr(0, max_chars) + "...";
  return text;
}

absl::StatusOr<int64_t> prune_table(Database& db, const std::string& table, const std::string& id_col,
                                    const std::string& time_col, const Retention& keep, int64_t now_ms) {
  int64_t removed = 0;
  if (keep.max_age > Millis(0)) {
    auto q = db.prepare(absl::StrCat("DELETE FROM ", table, " WHERE ", time_col, " < ?1"));
    if (!q.ok()) return q.status();
    if (auto st = q->bind(1, now_ms - keep.max_age.count()).run(); !st.ok()) return st;
    removed += sqlite3_changes(db.raw());
  }
  if (keep.max_rows > 0) {
    auto q = db.prepare(absl::StrCat("DELETE FROM ", table, " WHERE ", id_col, " <= (SELECT ", id_col, " FROM ",
                                     table, " ORDER BY ", id_col, " DESC LIMIT 1 OFFSET ?1)"));
    if (!q.ok()) return q.status();
    if (auto st = q->bind(1, keep.max_rows).run(); !st.ok()) return st;
    removed += sqlite3_changes(db.raw());
  }
  return removed;
}

AuditTrail::AuditTrail(AdminStore& store, Metrics& metrics, const Clock& clock, Millis log_every)
    : store_(store),
      clock_(clock),
      log_every_(log_every),
      unauthenticated_(metrics.counter("tern_api_unauthenticated_calls_total",
                                       "Calls to audited methods refused before anyone was authenticated; "
                                       "counted, not stored in the audit trail.")),
      dropped_(metrics.counter("tern_audit_write_failures_total",
                               "Audit entries that could not be written to the database.")) {}

void AuditTrail::record(tern::v1::AuditEntry e) {
  spdlog::info("audit: {} ({}) {} -> {}", e.principal().name(), word(e.principal().role()), e.method(), e.code());
  queue_.push_back(std::move(e));
  if (queue_.size() >= 512) flush();
}

void AuditTrail::flush() {
  if (queue_.empty()) return;
  std::vector<tern::v1::AuditEntry> batch;
  batch.swap(queue_);
  if (auto st = store_.record_all(batch); !st.ok()) {
    dropped_.fetch_add(static_cast<int64_t>(batch.size()), std::memory_order_relaxed);
    spdlog::error("cannot record {} audit entries: {}", batch.size(), st.message());
  }
}

void AuditTrail::refused_unauthenticated(const std::string& peer, const std::string& method) {
  unauthenticated_.fetch_add(1, std::memory_order_relaxed);
  ++since_log_;
  constexpr std::size_t kMaxPeers = 1024;
  const std::string who = peer.empty() ? "a client refused at the TLS layer" : peer;
  if (by_peer_.size() < kMaxPeers || by_peer_.count(who) > 0) ++by_peer_[who];
  const TimePoint now = clock_.now();
  if (last_log_ != TimePoint{} && now - last_log_ < log_every_) return;
  std::vector<std::pair<int64_t, std::string>> top;
  for (const auto& [p, n] : by_peer_) top.emplace_back(n, p);
  std::sort(top.rbegin(), top.rend());
  std::string peers;
  for (std::size_t i = 0; i < top.size() && i < 3; ++i) {
    absl::StrAppend(&peers, i ? ", " : "", top[i].second, " (", top[i].first, ")");
  }
  spdlog::warn("refused {} unauthenticated call(s) since the last report (last: {} from {}); busiest peers: {}; "
               "not stored in the audit trail (tern_api_unauthenticated_calls_total counts them)",
               since_log_, method, peer, peers);
  since_log_ = 0;
  by_peer_.clear();
  last_log_ = now;
}

}  // namespace tern
