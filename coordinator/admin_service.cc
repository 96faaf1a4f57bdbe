#include "coordinator/admin_service.h"

#include "coordinator/serve.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "core/clock.h"
#include "core/grpc_status.h"
#include "core/label_selector.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS tokens (
  name TEXT PRIMARY KEY,
  role INTEGER NOT NULL,
  secret_sha256 TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
  sequence INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms INTEGER NOT NULL,
  entry_json TEXT NOT NULL
);
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<AdminStore>> AdminStore::open(Database& db) {
  if (auto st = db.exec(kSchema); !st.ok()) return st;
  return std::unique_ptr<AdminStore>(new AdminStore(db));
}

absl::StatusOr<std::vector<TokenRecord>> AdminStore::tokens() {
  auto q = db_.prepare("SELECT name, role, secret_sha256, created_ms, created_by, revoked FROM tokens ORDER BY name");
  if (!q.ok()) return q.status();
  std::vector<TokenRecord> out;
  while (q->step()) {
    TokenRecord t;
    t.info.set_name(q->text_at(0));
    t.info.set_role(static_cast<tern::v1::Role>(q->int_at(1)));
    t.secret_sha256 = q->text_at(2);
    *t.info.mutable_created() = TimeUtil::MillisecondsToTimestamp(q->int_at(3));
    t.info.set_created_by(q->text_at(4));
    t.info.set_revoked(q->int_at(5) != 0);
    out.push_back(std::move(t));
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::Status AdminStore::add_token(const TokenRecord& t, int64_t created_ms) {
  auto q = db_.prepare(
      "INSERT INTO tokens (name, role, secret_sha256, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!q.ok()) return q.status();
  return q->bind(1, t.info.name())
      .bind(2, static_cast<int64_t>(t.info.role()))
      .bind(3, t.secret_sha256)
      .bind(4, created_ms)
      .bind(5, t.info.created_by())
      .run();
}

absl::Status AdminStore::revoke_token(const std::string& name) {
  auto q = db_.prepare("UPDATE tokens SET revoked = 1 WHERE name = ?1");
  if (!q.ok()) return q.status();
  if (auto st = q->bind(1, name).run(); !st.ok()) return st;
  if (sqlite3_changes(db_.raw()) == 0) {
    return absl::NotFoundError(absl::StrCat("no token \"", name, "\"; `ternctl token list` shows them"));
  }
  return absl::OkStatus();
}

absl::Status AdminStore::record(const tern::v1::AuditEntry& e) {
  std::string json;
  if (auto st = google::protobuf::util::MessageToJsonString(e, &json); !st.ok()) return absl::InternalError(st.ToString());
  auto q = db_.prepare("INSERT INTO audit (time_ms, entry_json) VALUES (?1, ?2)");
  if (!q.ok()) return q.status();
  return q->bind(1, TimeUtil::TimestampToMilliseconds(e.time())).bind(2, json).run();
}

absl::Status AdminStore::record_all(const std::vector<tern::v1::AuditEntry>& entries) {
  return db_.transaction([&]() -> absl::Status {
    for (const auto& e : entries) {
      if (auto st = record(e); !st.ok()) return st;
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<tern::v1::AuditEntry>> AdminStore::audit(uint32_t limit) {
  auto q = db_.prepare("SELECT sequence, entry_json FROM audit ORDER BY sequence DESC LIMIT ?1");
  if (!q.ok()) return q.status();
  q->bind(1, static_cast<int64_t>(limit == 0 ? 100 : limit));
  std::vector<tern::v1::AuditEntry> out;
  while (q->step()) {
    tern::v1::AuditEntry e;
    if (!google::protobuf::util::JsonStringToMessage(q->text_at(1), &e).ok()) continue;
    e.set_sequence(static_cast<uint64_t>(q->int_at(0)));
    out.push_back(std::move(e));
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::Status AdminServiceImpl::refresh_tokens() {
  auto all = store_.tokens();
  if (!all.ok()) return all.status();
  auth_.set_tokens(*std::move(all));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminServiceImpl::WhoAmI(grpc::CallbackServerContext* ctx, const tern::v1::WhoAmIRequest*,
                                                   tern::v1::Principal* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kWhoAmI, [resp](const tern::v1::Principal& who) {
    *resp = who;
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::CreateToken(grpc::CallbackServerContext* ctx,
                                                        const tern::v1::CreateTokenRequest* req,
                                                        tern::v1::CreateTokenResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kCreateToken, [this, req, resp](const tern::v1::Principal& who) {
    const std::string& name = req->name();
    if (!is_valid_label_value(name) || name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token name \"", name, "\" must be 1-63 letters, digits, '-', '_', '.'"));
    }
    if (req->role() != tern::v1::ROLE_VIEWER && req->role() != tern::v1::ROLE_OPERATOR &&
        req->role() != tern::v1::ROLE_ADMIN) {
      return absl::InvalidArgumentError("a token's role is viewer, operator or admin");
    }
    auto [secret, hash] = Authenticator::new_secret();
    TokenRecord t;
    t.info.set_name(name);
    t.info.set_role(req->role());
    t.info.set_created_by(who.name());
    t.secret_sha256 = hash;
    const int64_t now = to_unix_millis(SystemClock::instance().now());
    *t.info.mutable_created() = TimeUtil::MillisecondsToTimestamp(now);
    if (auto st = store_.add_token(t, now); !st.ok()) {
      return absl::AlreadyExistsError(absl::StrCat("cannot create token \"", name,
                                                   "\": a token of that name exists (revoke it or pick another name)"));
    }
    if (auto st = refresh_tokens(); !st.ok()) return st;
    *resp->mutable_token() = t.info;
    resp->set_secret(secret);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RevokeToken(grpc::CallbackServerContext* ctx,
                                                        const tern::v1::RevokeTokenRequest* req,
                                                        tern::v1::RevokeTokenResponse*) {
  return serve_unary(ctx, auth_, loop_, Rpc::kRevokeToken, [this, req] {
    if (auto st = store_.revoke_token(req->name()); !st.ok()) return st;
    return refresh_tokens();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTokens(grpc::CallbackServerContext* ctx,
                                                       const tern::v1::ListTokensRequest*,
                                                       tern::v1::ListTokensResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListTokens, [this, resp]() -> absl::Status {
    auto all = store_.tokens();
    if (!all.ok()) return all.status();
    for (const auto& t : *all) *resp->add_tokens() = t.info;
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListAudit(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::ListAuditRequest* req,
                                                      tern::v1::ListAuditResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListAudit, [this, req, resp]() -> absl::Status {
    if (before_audit_read_) before_audit_read_();
    auto all = store_.audit(req->limit());
    if (!all.ok()) return all.status();
    for (auto& e : *all) *resp->add_entries() = std::move(e);
    return absl::OkStatus();
  });
}

}  // namespace tern
