#include "coordinator/admin_service.h"

#include "coordinator/serve.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/ascii.h"
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
CREATE TABLE IF NOT EXISTS token_meta (
  name TEXT PRIMARY KEY,
  expires_ms INTEGER NOT NULL DEFAULT 0,
  last_used_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS denied_certs (
  serial TEXT NOT NULL DEFAULT '',
  common_name TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  PRIMARY KEY (serial, common_name)
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
  auto q = db_.prepare(
      "SELECT t.name, t.role, t.secret_sha256, t.created_ms, t.created_by, t.revoked, COALESCE(m.expires_ms, 0), "
      "COALESCE(m.last_used_ms, 0) FROM tokens t LEFT JOIN token_meta m ON m.name = t.name ORDER BY t.name");
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
    if (q->int_at(6) > 0) *t.info.mutable_expires() = TimeUtil::MillisecondsToTimestamp(q->int_at(6));
    if (q->int_at(7) > 0) *t.info.mutable_last_used() = TimeUtil::MillisecondsToTimestamp(q->int_at(7));
    out.push_back(std::move(t));
  }
  if (!q->status().ok()) return q->status();
  return out;
}

absl::Status AdminStore::add_token(const TokenRecord& t, int64_t created_ms) {
  return db_.transaction([&]() -> absl::Status {
    auto q = db_.prepare(
        "INSERT INTO tokens (name, role, secret_sha256, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!q.ok()) return q.status();
    if (auto st = q->bind(1, t.info.name())
                      .bind(2, static_cast<int64_t>(t.info.role()))
                      .bind(3, t.secret_sha256)
                      .bind(4, created_ms)
                      .bind(5, t.info.created_by())
                      .run();
        !st.ok()) {
      return st;
    }
    auto m = db_.prepare("INSERT OR REPLACE INTO token_meta (name, expires_ms, last_used_ms) VALUES (?1, ?2, 0)");
    if (!m.ok()) return m.status();
    const int64_t expires = t.info.has_expires() ? TimeUtil::TimestampToMilliseconds(t.info.expires()) : 0;
    return m->bind(1, t.info.name()).bind(2, expires).run();
  });
}

absl::Status AdminStore::touch_tokens(const std::map<std::string, int64_t>& last_used) {
  if (last_used.empty()) return absl::OkStatus();
  return db_.transaction([&]() -> absl::Status {
    for (const auto& [name, ms] : last_used) {
      auto q = db_.prepare(
          "INSERT INTO token_meta (name, expires_ms, last_used_ms) VALUES (?1, 0, ?2) "
          "ON CONFLICT (name) DO UPDATE SET last_used_ms = MAX(last_used_ms, excluded.last_used_ms)");
      if (!q.ok()) return q.status();
      if (auto st = q->bind(1, name).bind(2, ms).run(); !st.ok()) return st;
    }
    return absl::OkStatus();
  });
}

absl::Status AdminStore::deny(const tern::v1::DeniedCertificate& d) {
  auto q = db_.prepare(
      "INSERT OR REPLACE INTO denied_certs (serial, common_name, reason, created_ms, created_by) "
      "VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!q.ok()) return q.status();
  return q->bind(1, d.serial())
      .bind(2, d.common_name())
      .bind(3, d.reason())
      .bind(4, TimeUtil::TimestampToMilliseconds(d.created()))
      .bind(5, d.created_by())
      .run();
}

absl::Status AdminStore::allow(const std::string& serial, const std::string& common_name) {
  auto q = db_.prepare("DELETE FROM denied_certs WHERE serial = ?1 AND common_name = ?2");
  if (!q.ok()) return q.status();
  if (auto st = q->bind(1, serial).bind(2, common_name).run(); !st.ok()) return st;
  if (sqlite3_changes(db_.raw()) == 0) {
    return absl::NotFoundError("no such denied certificate; `ternctl cert denied` lists them");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<tern::v1::DeniedCertificate>> AdminStore::denied() {
  auto q = db_.prepare(
      "SELECT serial, common_name, reason, created_ms, created_by FROM denied_certs ORDER BY created_ms");
  if (!q.ok()) return q.status();
  std::vector<tern::v1::DeniedCertificate> out;
  while (q->step()) {
    auto& d = out.emplace_back();
    d.set_serial(q->text_at(0));
    d.set_common_name(q->text_at(1));
    d.set_reason(q->text_at(2));
    *d.mutable_created() = TimeUtil::MillisecondsToTimestamp(q->int_at(3));
    d.set_created_by(q->text_at(4));
  }
  if (!q->status().ok()) return q->status();
  return out;
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

absl::Status AdminServiceImpl::refresh_denied() {
  auto all = store_.denied();
  if (!all.ok()) return all.status();
  auth_.set_denied(*all);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminServiceImpl::DenyCertificate(grpc::CallbackServerContext* ctx,
                                                            const tern::v1::DenyCertificateRequest* req,
                                                            tern::v1::DeniedCertificate* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kDenyCertificate, [this, req, resp](const tern::v1::Principal& who) {
    if (req->serial().empty() == req->common_name().empty()) {
      return absl::InvalidArgumentError("name exactly one of the certificate's serial or its common name (CN)");
    }
    tern::v1::DeniedCertificate d;
    d.set_serial(absl::AsciiStrToLower(req->serial()));
    d.set_common_name(req->common_name());
    if (!d.serial().empty() && (d.serial().size() > 64 || d.serial().find_first_not_of("0123456789abcdef:") !=
                                                               std::string::npos)) {
      return absl::InvalidArgumentError("a serial is hex, as `openssl x509 -noout -serial` prints it");
    }
    d.set_serial(absl::StrReplaceAll(d.serial(), {{":", ""}}));
    while (d.serial().size() > 1 && d.serial()[0] == '0') d.set_serial(d.serial().substr(1));
    d.set_reason(req->reason().substr(0, 200));
    *d.mutable_created() = TimeUtil::MillisecondsToTimestamp(to_unix_millis(SystemClock::instance().now()));
    d.set_created_by(who.name());
    if (auto st = store_.deny(d); !st.ok()) return st;
    if (auto st = refresh_denied(); !st.ok()) return st;
    if (on_denied_) on_denied_(d);
    *resp = d;
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::AllowCertificate(grpc::CallbackServerContext* ctx,
                                                             const tern::v1::AllowCertificateRequest* req,
                                                             tern::v1::AllowCertificateResponse*) {
  return serve_unary(ctx, auth_, loop_, Rpc::kAllowCertificate, [this, req] {
    std::string serial = absl::StrReplaceAll(absl::AsciiStrToLower(req->serial()), {{":", ""}});
    while (serial.size() > 1 && serial[0] == '0') serial = serial.substr(1);
    if (auto st = store_.allow(serial, req->common_name()); !st.ok()) return st;
    return refresh_denied();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListDeniedCertificates(grpc::CallbackServerContext* ctx,
                                                                   const tern::v1::ListDeniedCertificatesRequest*,
                                                                   tern::v1::ListDeniedCertificatesResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListDeniedCertificates, [this, resp]() -> absl::Status {
    auto all = store_.denied();
    if (!all.ok()) return all.status();
    for (auto& d : *all) *resp->add_denied() = std::move(d);
    return absl::OkStatus();
  });
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
    constexpr int64_t kDay = 24LL * 3600 * 1000;
    const int64_t ttl = req->has_ttl() ? TimeUtil::DurationToMilliseconds(req->ttl()) : 90 * kDay;
    if (ttl <= 0 || ttl > 3 * 366 * kDay) {
      return absl::InvalidArgumentError("a token's ttl is more than 0 and at most 3 years");
    }
    auto [secret, hash] = Authenticator::new_secret();
    TokenRecord t;
    t.info.set_name(name);
    t.info.set_role(req->role());
    t.info.set_created_by(who.name());
    t.secret_sha256 = hash;
    const int64_t now = to_unix_millis(SystemClock::instance().now());
    *t.info.mutable_created() = TimeUtil::MillisecondsToTimestamp(now);
    *t.info.mutable_expires() = TimeUtil::MillisecondsToTimestamp(now + ttl);
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
    if (auto st = store_.touch_tokens(auth_.take_last_used()); !st.ok()) return st;
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
